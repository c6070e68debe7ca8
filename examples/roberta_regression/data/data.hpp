// The example's data: CommonLit-shaped CSV files (RFC 4180, plain or gzip).
// Example code, not library API. The CSV reader is hand-written (about 60
// lines): Debian has no maintained C++ CSV package, and RFC 4180 is small.
#pragma once

#include <zlib.h>

#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

namespace roberta_regression {

/// One row of a CommonLit-shaped file.
struct CommonLitRow {
  std::string id, excerpt, address;  ///< address: the group column ("" when absent)
  double target = 0.0, standard_error = 0.0;
  int64_t line = 0;  ///< first line of the record in the file (1-based)
};

struct CommonLitData {
  std::string path;
  std::vector<CommonLitRow> rows;
  bool has_address = false;  ///< the file has an `address` column (the embedded data)
  int64_t dropped = 0;       ///< rows with target 0 and standard_error 0 (dropped, as the article)
};

/// Records of a CSV text: fields split on commas, "quoted" fields may hold
/// commas, doubled quotes and line breaks (RFC 4180); CRLF or LF line ends; a
/// UTF-8 byte-order mark is skipped. `lines[i]` is record i's first line.
/// Throws std::invalid_argument naming `source` and the line for an
/// unterminated quote or text after a closing quote.
std::vector<std::vector<std::string>> parse_csv(const std::string& text, const std::string& source,
                                                std::vector<int64_t>* lines = nullptr);

/// Whole file as bytes; `.gz` files are decompressed (zlib). Throws
/// std::invalid_argument naming the file when it cannot be read.
std::string read_text_file(const std::string& path);

/// Reads a CommonLit `train.csv`-shaped file: columns id, excerpt, target,
/// standard_error required (others ignored; `address` kept when present).
/// Drops the rows with target 0 and standard_error 0. Errors name the file and
/// line: a missing column, a row with another number of fields, a target or
/// standard_error that is not a finite number, an empty excerpt, no rows.
CommonLitData read_commonlit_csv(const std::string& path);

/// read_commonlit_csv() of a file's contents in memory; `source` names it in
/// errors.
CommonLitData parse_commonlit_csv(const std::string& text, const std::string& source);

// --- implementation -----------------------------------------------------------

inline std::vector<std::vector<std::string>> parse_csv(const std::string& text,
                                                       const std::string& source,
                                                       std::vector<int64_t>* lines) {
  std::vector<std::vector<std::string>> records;
  std::vector<std::string> record;
  std::string field;
  size_t i = text.compare(0, 3, "\xEF\xBB\xBF") == 0 ? 3 : 0;
  int64_t line = 1, record_line = 1;
  bool field_started = false;
  auto end_record = [&] {
    record.push_back(std::move(field));
    field.clear();
    records.push_back(std::move(record));
    record.clear();
    if (lines) lines->push_back(record_line);
    field_started = false;
  };
  while (i < text.size()) {
    const char c = text[i];
    if (c == '"' && !field_started && field.empty()) {  // a quoted field
      const int64_t opened = line;
      ++i;
      while (true) {
        if (i >= text.size())
          throw std::invalid_argument(source + ":" + std::to_string(opened) +
                                      ": unterminated quoted field");
        if (text[i] == '"') {
          if (i + 1 < text.size() && text[i + 1] == '"') {
            field += '"';
            i += 2;
            continue;
          }
          ++i;
          break;
        }
        if (text[i] == '\n') ++line;
        field += text[i++];
      }
      field_started = true;
      if (i < text.size() && text[i] != ',' && text[i] != '\n' && text[i] != '\r')
        throw std::invalid_argument(source + ":" + std::to_string(line) +
                                    ": text after a closing quote");
      continue;
    }
    if (c == ',') {
      record.push_back(std::move(field));
      field.clear();
      field_started = false;
      ++i;
    } else if (c == '\r' && i + 1 < text.size() && text[i + 1] == '\n') {
      end_record();
      i += 2;
      record_line = ++line;
    } else if (c == '\n') {
      end_record();
      ++i;
      record_line = ++line;
    } else {
      field += c;
      field_started = true;
      ++i;
    }
  }
  if (field_started || !field.empty() || !record.empty()) end_record();
  return records;
}

inline std::string read_text_file(const std::string& path) {
  gzFile file = gzopen(path.c_str(), "rb");  // reads plain files as they are
  if (file == nullptr) throw std::invalid_argument(path + ": cannot open");
  std::string out;
  char buffer[1 << 16];
  int n;
  while ((n = gzread(file, buffer, sizeof(buffer))) > 0) out.append(buffer, static_cast<size_t>(n));
  int error = Z_OK;
  const char* message = gzerror(file, &error);
  const std::string why = message ? message : "";
  gzclose(file);
  if (n < 0 || (error != Z_OK && error != Z_STREAM_END))
    throw std::invalid_argument(path + ": read error (" + why + ")");
  return out;
}

inline CommonLitData read_commonlit_csv(const std::string& path) {
  return parse_commonlit_csv(read_text_file(path), path);
}

inline CommonLitData parse_commonlit_csv(const std::string& text, const std::string& path) {
  std::vector<int64_t> lines;
  const auto records = parse_csv(text, path, &lines);
  if (records.empty()) throw std::invalid_argument(path + ": empty file, no header");
  std::map<std::string, size_t> column;
  for (size_t c = 0; c < records[0].size(); ++c) column[records[0][c]] = c;
  for (const char* required : {"id", "excerpt", "target", "standard_error"})
    if (!column.count(required))
      throw std::invalid_argument(path + ":1: missing column \"" + required + "\"");
  CommonLitData data;
  data.path = path;
  data.has_address = column.count("address") > 0;
  auto number = [&](const std::string& text, const char* name, int64_t line) {
    char* end = nullptr;
    errno = 0;
    const double v = std::strtod(text.c_str(), &end);
    if (text.empty() || end != text.c_str() + text.size() || errno == ERANGE || !std::isfinite(v))
      throw std::invalid_argument(path + ":" + std::to_string(line) + ": " + name +
                                  " is not a number: \"" + text + "\"");
    return v;
  };
  for (size_t r = 1; r < records.size(); ++r) {
    const auto& fields = records[r];
    const int64_t line = lines[r];
    if (fields.size() == 1 && fields[0].empty()) continue;  // a blank line
    if (fields.size() != records[0].size())
      throw std::invalid_argument(path + ":" + std::to_string(line) + ": " +
                                  std::to_string(fields.size()) + " fields, the header has " +
                                  std::to_string(records[0].size()));
    CommonLitRow row;
    row.line = line;
    row.id = fields[column["id"]];
    row.excerpt = fields[column["excerpt"]];
    if (row.excerpt.find_first_not_of(" \t\r\n") == std::string::npos)
      throw std::invalid_argument(path + ":" + std::to_string(line) + ": empty excerpt (id \"" +
                                  row.id + "\")");
    row.target = number(fields[column["target"]], "target", line);
    row.standard_error = number(fields[column["standard_error"]], "standard_error", line);
    if (data.has_address) row.address = fields[column["address"]];
    // The article drops CommonLit's reference row (target 0, standard error 0).
    if (row.target == 0.0 && row.standard_error == 0.0) {
      ++data.dropped;
      continue;
    }
    data.rows.push_back(std::move(row));
  }
  if (data.rows.empty()) throw std::invalid_argument(path + ": no data rows");
  return data;
}

}  // namespace roberta_regression
