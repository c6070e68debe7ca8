// finetune: fine-tuning techniques for LibTorch, header-only.
// SPDX-License-Identifier: MIT
//
// roberta_regression example: reading and writing the safetensors format
// (https://github.com/huggingface/safetensors), the weights format of Hugging
// Face checkpoints. Example code, not library API. The writer produces the
// bytes Python's `safetensors.torch.save_file` (0.8) produces for the same
// tensors; the reader checks what the Rust `safetensors` crate checks, and a
// little more (see docs/safetensors.md and tests/test_roberta_safetensors.cpp).
//
// File layout: 8-byte little-endian u64 N, N bytes of JSON header, data buffer.
// Header: {"__metadata__": {str: str}, name: {"dtype": "F32", "shape": [..],
// "data_offsets": [begin, end]}, ...}; offsets are relative to the buffer.
#pragma once

#include <torch/torch.h>

#include <nlohmann/json.hpp>

#include <finetune/periodic_evaluator.hpp>  // atomic_write_text

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <map>
#include <memory>
#include <set>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#if defined(__BYTE_ORDER__) && defined(__ORDER_LITTLE_ENDIAN__)
static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "safetensors.hpp assumes a little-endian host (the format is little-endian)");
#endif

namespace roberta_regression {

/// Named tensors in file order (for a file read: header order, which for files
/// written by safetensors is data-offset order).
using NamedTensors = std::vector<std::pair<std::string, torch::Tensor>>;

/// The content of a safetensors file: tensors (CPU, owning their memory, the
/// stored dtype) and the "__metadata__" string map (empty when absent).
struct SafetensorsFile {
  NamedTensors tensors;
  std::map<std::string, std::string> metadata;
};

/// One parsed header entry; `begin`/`end` are byte offsets into the data buffer.
struct SafetensorsEntry {
  std::string name;
  std::string dtype;              // "F32", ...
  torch::ScalarType scalar_type;  // the matching torch dtype
  std::vector<int64_t> shape;
  uint64_t begin = 0, end = 0;
};

/// A parsed and validated header. `data_start` = 8 + N, the byte position of the
/// data buffer in the file; `entries` are in header order.
struct SafetensorsHeader {
  std::vector<SafetensorsEntry> entries;
  std::map<std::string, std::string> metadata;
  uint64_t data_start = 0;
  uint64_t data_size = 0;
};

/// Largest header accepted, as the Rust crate (MAX_HEADER_SIZE).
constexpr uint64_t kSafetensorsMaxHeaderSize = 100000000;

/// Parses and validates the header of an in-memory safetensors file of `size`
/// bytes. `source` names the file in error messages. Throws
/// std::invalid_argument (naming source and key) on anything malformed; never
/// reads outside [data, data + size). Checks: size >= 8; N <= 100 MB and
/// 8 + N <= size; header is a JSON object with no duplicate keys; each entry
/// is an object with exactly dtype (a supported string), shape (array of
/// non-negative integers) and data_offsets (2 non-negative integers,
/// begin <= end); end - begin == numel * itemsize (overflow-checked); sorted by
/// offset the entries tile the data buffer exactly from 0 to its end (no
/// overlap, no gap, nothing after: what the Rust crate requires);
/// "__metadata__" is an object of strings (or null: none).
SafetensorsHeader parse_safetensors_header(const uint8_t* data, size_t size,
                                           const std::string& source);

/// Parses a whole in-memory safetensors file (header checks above, plus BOOL
/// bytes must be 0 or 1) into owning CPU tensors.
SafetensorsFile parse_safetensors(const uint8_t* data, size_t size, const std::string& source);

/// Reads a safetensors file (memory-mapped, read-only). Tensors are CPU tensors
/// of the stored dtype that own their memory (copied out of the mapping).
/// Supported dtypes: F64 F32 F16 BF16 I64 I32 I16 I8 U8 BOOL; others (F8_*,
/// U16, U32, U64, ...) throw std::invalid_argument naming file, key, dtype.
SafetensorsFile read_safetensors(const std::string& path);

/// Writes `tensors` as Python's `safetensors.torch.save_file(tensors, path,
/// metadata)` does: entries sorted by dtype (largest alignment first, the Rust
/// crate's Dtype order) then name; header padded with spaces to a multiple of 8;
/// data contiguous, little-endian. Tensors on any device are copied to CPU.
/// `metadata` is written as "__metadata__" (keys sorted; omitted when empty, as
/// save_file with metadata=None). Atomic and durable through
/// finetune::atomic_write_text (`path.tmp-XXXXXX`, every write checked, fsync,
/// rename, folder fsync). Throws std::invalid_argument on an undefined tensor,
/// an unsupported dtype or a duplicate name; std::runtime_error naming the
/// file on I/O errors (a full disk included: `path` keeps its old contents).
void write_safetensors(const std::string& path, const NamedTensors& tensors,
                       const std::map<std::string, std::string>& metadata = {});

/// Serialises to bytes (what write_safetensors writes).
std::string serialize_safetensors(const NamedTensors& tensors,
                                  const std::map<std::string, std::string>& metadata = {});

// ---------------------------------------------------------------------------
// Definitions.

namespace safetensors_detail {

struct DtypeInfo {
  const char* name;
  torch::ScalarType type;
  size_t itemsize;
  int rank;  // position in the Rust crate's `enum Dtype` (sort order of the writer)
};

// The Rust crate's Dtype enum order (BOOL < U8 < I8 < F8_E5M2 < F8_E4M3 < I16 <
// U16 < F16 < BF16 < I32 < U32 < F32 < F64 < I64 < U64); only ranks matter.
inline const std::vector<DtypeInfo>& dtype_table() {
  static const std::vector<DtypeInfo> table = {
      {"BOOL", torch::kBool, 1, 0}, {"U8", torch::kByte, 1, 1},    {"I8", torch::kChar, 1, 2},
      {"I16", torch::kShort, 2, 5}, {"F16", torch::kHalf, 2, 7},   {"BF16", torch::kBFloat16, 2, 8},
      {"I32", torch::kInt, 4, 9},   {"F32", torch::kFloat, 4, 11}, {"F64", torch::kDouble, 8, 12},
      {"I64", torch::kLong, 8, 13},
  };
  return table;
}

inline const DtypeInfo* find_dtype(const std::string& name) {
  for (const auto& d : dtype_table()) {
    if (name == d.name) return &d;
  }
  return nullptr;
}

inline const DtypeInfo* find_dtype(torch::ScalarType type) {
  for (const auto& d : dtype_table()) {
    if (type == d.type) return &d;
  }
  return nullptr;
}

[[noreturn]] inline void fail(const std::string& source, const std::string& what) {
  throw std::invalid_argument("safetensors file '" + source + "': " + what);
}

[[noreturn]] inline void fail_key(const std::string& source, const std::string& key,
                                  const std::string& what) {
  throw std::invalid_argument("safetensors file '" + source + "', key '" + key + "': " + what);
}

// Thrown from the parser callback; turned into invalid_argument by the caller.
struct ParseAbort {
  std::string message;
};

// A non-negative integer JSON value (json's unsigned or non-negative signed).
inline bool as_u64(const nlohmann::ordered_json& v, uint64_t& out) {
  if (v.is_number_unsigned()) {
    out = v.get<uint64_t>();
    return true;
  }
  if (v.is_number_integer()) {
    const int64_t s = v.get<int64_t>();
    if (s < 0) return false;
    out = static_cast<uint64_t>(s);
    return true;
  }
  return false;
}

inline std::string json_string(const std::string& s) {
  // Escapes like serde_json: \" \\ \b \f \n \r \t, other controls \u00xx, the
  // rest (UTF-8) as is. Invalid UTF-8 is an error.
  try {
    return nlohmann::json(s).dump(-1, ' ', false, nlohmann::json::error_handler_t::strict);
  } catch (const nlohmann::json::exception&) {
    throw std::invalid_argument("safetensors: name or metadata is not valid UTF-8: '" + s + "'");
  }
}

}  // namespace safetensors_detail

inline SafetensorsHeader parse_safetensors_header(const uint8_t* data, size_t size,
                                                  const std::string& source) {
  namespace d = safetensors_detail;
  using ojson = nlohmann::ordered_json;
  if (data == nullptr && size != 0) d::fail(source, "null data");
  if (size < 8)
    d::fail(source,
            "file has " + std::to_string(size) + " bytes, fewer than the 8-byte header length");
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | data[i];
  if (n > kSafetensorsMaxHeaderSize) {
    d::fail(source, "header length " + std::to_string(n) + " exceeds the 100 MB limit");
  }
  if (n > static_cast<uint64_t>(size) - 8) {
    d::fail(source, "header length " + std::to_string(n) + " exceeds the file size " +
                        std::to_string(size) + " minus 8");
  }
  const char* begin = reinterpret_cast<const char*>(data + 8);
  const char* end = begin + n;
  // nlohmann's lexer takes a NUL byte for the end of input, which would accept
  // "{}\0garbage"; JSON text never contains a raw NUL.
  if (n > 0 && std::memchr(begin, 0, static_cast<size_t>(n)) != nullptr) {
    d::fail(source, "header contains a NUL byte (not valid JSON)");
  }

  // Duplicate keys: nlohmann keeps the last silently, so track the keys of each
  // open object in the parser callback. A valid header nests at most 3 deep
  // (object > entry > shape array); deeper input is rejected before it is built.
  std::vector<std::set<std::string>> open_objects;
  const ojson::parser_callback_t check = [&](int depth, ojson::parse_event_t event, ojson& parsed) {
    switch (event) {
      case ojson::parse_event_t::object_start:
      case ojson::parse_event_t::array_start:
        if (depth >= 3) throw d::ParseAbort{"header nests deeper than a safetensors header can"};
        if (event == ojson::parse_event_t::object_start) open_objects.emplace_back();
        break;
      case ojson::parse_event_t::object_end:
        if (!open_objects.empty()) open_objects.pop_back();
        break;
      case ojson::parse_event_t::key: {
        const std::string& key = parsed.get_ref<const std::string&>();
        if (open_objects.empty() || !open_objects.back().insert(key).second) {
          throw d::ParseAbort{"duplicate key '" + key + "' in the header"};
        }
        break;
      }
      default:
        break;
    }
    return true;
  };
  ojson header;
  try {
    header = ojson::parse(begin, end, check, /*allow_exceptions=*/true, /*ignore_comments=*/false);
  } catch (const d::ParseAbort& e) {
    d::fail(source, e.message);
  } catch (const nlohmann::json::exception& e) {
    d::fail(source, std::string("header is not valid JSON: ") + e.what());
  }
  if (!header.is_object()) d::fail(source, "header is not a JSON object");

  SafetensorsHeader out;
  out.data_start = 8 + n;
  out.data_size = static_cast<uint64_t>(size) - out.data_start;
  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& key = it.key();
    const ojson& value = it.value();
    if (key == "__metadata__") {
      if (value.is_null()) continue;  // the Rust crate reads null as "no metadata"
      if (!value.is_object()) d::fail_key(source, key, "__metadata__ is not an object");
      for (auto m = value.begin(); m != value.end(); ++m) {
        if (!m.value().is_string())
          d::fail_key(source, key, "metadata value of '" + m.key() + "' is not a string");
        out.metadata.emplace(m.key(), m.value().get<std::string>());
      }
      continue;
    }
    if (!value.is_object()) d::fail_key(source, key, "entry is not an object");
    for (auto f = value.begin(); f != value.end(); ++f) {
      if (f.key() != "dtype" && f.key() != "shape" && f.key() != "data_offsets") {
        d::fail_key(source, key, "unexpected field '" + f.key() + "'");
      }
    }
    for (const char* field : {"dtype", "shape", "data_offsets"}) {
      if (!value.contains(field))
        d::fail_key(source, key, std::string("missing field '") + field + "'");
    }
    SafetensorsEntry e;
    e.name = key;
    const ojson& dtype = value["dtype"];
    if (!dtype.is_string()) d::fail_key(source, key, "dtype is not a string");
    e.dtype = dtype.get<std::string>();
    const d::DtypeInfo* info = d::find_dtype(e.dtype);
    if (info == nullptr) {
      d::fail_key(source, key,
                  "unsupported dtype '" + e.dtype +
                      "' (supported: F64 F32 F16 BF16 I64 I32 I16 I8 U8 BOOL)");
    }
    e.scalar_type = info->type;
    const ojson& shape = value["shape"];
    if (!shape.is_array()) d::fail_key(source, key, "shape is not an array");
    uint64_t numel = 1;
    bool overflow = false;
    for (const auto& dim : shape) {
      uint64_t v = 0;
      if (!d::as_u64(dim, v))
        d::fail_key(source, key, "shape has an element that is not a non-negative integer");
      if (v > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
        d::fail_key(source, key, "shape dimension " + std::to_string(v) + " is too large");
      }
      e.shape.push_back(static_cast<int64_t>(v));
      // Overflow as the Rust crate counts it (checked_mul in order).
      if (!overflow && v != 0 && numel > std::numeric_limits<uint64_t>::max() / v) overflow = true;
      if (!overflow) numel *= v;
    }
    if (overflow || numel > std::numeric_limits<uint64_t>::max() / info->itemsize ||
        numel > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      d::fail_key(source, key, "shape's element count overflows");
    }
    const uint64_t nbytes = numel * info->itemsize;
    const ojson& offsets = value["data_offsets"];
    if (!offsets.is_array() || offsets.size() != 2 || !d::as_u64(offsets[0], e.begin) ||
        !d::as_u64(offsets[1], e.end)) {
      d::fail_key(source, key, "data_offsets is not an array of 2 non-negative integers");
    }
    if (e.begin > e.end) {
      d::fail_key(
          source, key,
          "data_offsets begin " + std::to_string(e.begin) + " > end " + std::to_string(e.end));
    }
    if (e.end > out.data_size) {
      d::fail_key(source, key,
                  "data_offsets end " + std::to_string(e.end) + " is past the data buffer (" +
                      std::to_string(out.data_size) + " bytes)");
    }
    if (e.end - e.begin != nbytes) {
      d::fail_key(source, key,
                  "data_offsets span " + std::to_string(e.end - e.begin) + " bytes but dtype " +
                      e.dtype + " and shape need " + std::to_string(nbytes));
    }
    out.entries.push_back(std::move(e));
  }

  // As the Rust crate: sorted by offsets, the entries must tile the buffer
  // [0, data_size) exactly (no overlap, no hole, nothing after the last).
  std::vector<const SafetensorsEntry*> by_offset;
  by_offset.reserve(out.entries.size());
  for (const auto& e : out.entries) by_offset.push_back(&e);
  std::stable_sort(by_offset.begin(), by_offset.end(),
                   [](const SafetensorsEntry* a, const SafetensorsEntry* b) {
                     return a->begin != b->begin ? a->begin < b->begin : a->end < b->end;
                   });
  uint64_t expected = 0;
  for (const SafetensorsEntry* e : by_offset) {
    if (e->begin < expected) {
      d::fail_key(source, e->name,
                  "data_offsets [" + std::to_string(e->begin) + ", " + std::to_string(e->end) +
                      ") overlap another tensor");
    }
    if (e->begin > expected) {
      d::fail_key(source, e->name,
                  "data_offsets begin " + std::to_string(e->begin) +
                      " leaves a hole in the data buffer after byte " + std::to_string(expected));
    }
    expected = e->end;
  }
  if (expected != out.data_size) {
    d::fail(source, "data buffer has " + std::to_string(out.data_size) +
                        " bytes but the tensors cover " + std::to_string(expected));
  }
  return out;
}

inline SafetensorsFile parse_safetensors(const uint8_t* data, size_t size,
                                         const std::string& source) {
  namespace d = safetensors_detail;
  SafetensorsHeader header = parse_safetensors_header(data, size, source);
  SafetensorsFile out;
  out.metadata = std::move(header.metadata);
  out.tensors.reserve(header.entries.size());
  const uint8_t* buffer = data + header.data_start;
  for (const SafetensorsEntry& e : header.entries) {
    const uint8_t* src = buffer + e.begin;
    const size_t nbytes = static_cast<size_t>(e.end - e.begin);
    if (e.scalar_type == torch::kBool) {
      for (size_t i = 0; i < nbytes; ++i) {
        if (src[i] > 1)
          d::fail_key(source, e.name, "BOOL tensor holds a byte that is neither 0 nor 1");
      }
    }
    torch::Tensor t =
        torch::empty(e.shape, torch::TensorOptions().dtype(e.scalar_type).device(torch::kCPU));
    if (nbytes > 0) std::memcpy(t.data_ptr(), src, nbytes);
    out.tensors.emplace_back(e.name, std::move(t));
  }
  return out;
}

inline SafetensorsFile read_safetensors(const std::string& path) {
  namespace d = safetensors_detail;
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) d::fail(path, std::string("cannot open: ") + std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    d::fail(path, std::string("cannot stat: ") + std::strerror(err));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    d::fail(path, "not a regular file");
  }
  const size_t size = static_cast<size_t>(st.st_size);
  if (size < 8) {
    ::close(fd);
    d::fail(path,
            "file has " + std::to_string(size) + " bytes, fewer than the 8-byte header length");
  }
  void* map = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
  const int map_err = errno;
  ::close(fd);  // the mapping stays valid
  if (map == MAP_FAILED) d::fail(path, std::string("cannot mmap: ") + std::strerror(map_err));
  struct Unmap {
    void* p;
    size_t n;
    ~Unmap() { ::munmap(p, n); }
  } unmap{map, size};
  return parse_safetensors(static_cast<const uint8_t*>(map), size, path);
}

inline std::string serialize_safetensors(const NamedTensors& tensors,
                                         const std::map<std::string, std::string>& metadata) {
  namespace d = safetensors_detail;
  struct Item {
    const std::string* name;
    const d::DtypeInfo* info;
    torch::Tensor cpu;
  };
  std::vector<Item> items;
  items.reserve(tensors.size());
  std::set<std::string> seen;
  for (const auto& [name, t] : tensors) {
    if (!seen.insert(name).second)
      throw std::invalid_argument("write_safetensors: duplicate tensor name '" + name + "'");
    if (name == "__metadata__")
      throw std::invalid_argument("write_safetensors: '__metadata__' is not a tensor name");
    if (!t.defined())
      throw std::invalid_argument("write_safetensors: tensor '" + name + "' is undefined");
    if (t.layout() != torch::kStrided) {
      throw std::invalid_argument("write_safetensors: tensor '" + name +
                                  "' is not dense (strided)");
    }
    const d::DtypeInfo* info = d::find_dtype(t.scalar_type());
    if (info == nullptr) {
      throw std::invalid_argument("write_safetensors: tensor '" + name +
                                  "' has unsupported dtype " +
                                  std::string(c10::toString(t.scalar_type())));
    }
    items.push_back({&name, info, t.detach().to(torch::kCPU).contiguous()});
  }
  // save_file's order: dtype descending in the Rust Dtype enum, then name
  // (bytewise; std::string compares as unsigned char like Rust's str).
  std::stable_sort(items.begin(), items.end(), [](const Item& a, const Item& b) {
    if (a.info->rank != b.info->rank) return a.info->rank > b.info->rank;
    return *a.name < *b.name;
  });

  std::string header = "{";
  bool first = true;
  if (!metadata.empty()) {
    header += "\"__metadata__\":{";
    bool first_m = true;
    for (const auto& [k, v] : metadata) {
      if (!first_m) header += ",";
      first_m = false;
      header += d::json_string(k) + ":" + d::json_string(v);
    }
    header += "}";
    first = false;
  }
  uint64_t offset = 0;
  for (const Item& item : items) {
    if (!first) header += ",";
    first = false;
    const uint64_t nbytes = static_cast<uint64_t>(item.cpu.numel()) * item.info->itemsize;
    header += d::json_string(*item.name) + ":{\"dtype\":\"" + item.info->name + "\",\"shape\":[";
    for (int64_t i = 0; i < item.cpu.dim(); ++i) {
      if (i > 0) header += ",";
      header += std::to_string(item.cpu.size(i));
    }
    header += "],\"data_offsets\":[" + std::to_string(offset) + "," +
              std::to_string(offset + nbytes) + "]}";
    offset += nbytes;
  }
  header += "}";
  header.append((8 - header.size() % 8) % 8, ' ');

  std::string out;
  out.reserve(8 + header.size() + offset);
  uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((n >> (8 * i)) & 0xff));
  out += header;
  for (const Item& item : items) {
    const size_t nbytes = static_cast<size_t>(item.cpu.numel()) * item.info->itemsize;
    if (nbytes > 0) out.append(static_cast<const char*>(item.cpu.data_ptr()), nbytes);
  }
  return out;
}

inline void write_safetensors(const std::string& path, const NamedTensors& tensors,
                              const std::map<std::string, std::string>& metadata) {
  // The library's one atomic writer: unique temporary name, every write
  // checked, fsync, rename, folder fsync.
  finetune::atomic_write_text(path, serialize_safetensors(tensors, metadata));
}

}  // namespace roberta_regression
