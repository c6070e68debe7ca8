// finetune: fine-tuning techniques for LibTorch, header-only.
// SPDX-License-Identifier: MIT
//
// libFuzzer entry point for the example's CSV reader
// (examples/roberta_regression/data/data.hpp): the RFC 4180 records and the
// CommonLit-shaped rows read from them. The contract: any bytes either parse
// or throw std::invalid_argument; parsed records have one first line each,
// in order; rows read have finite numbers, a non-empty excerpt, and a line
// inside the file. See docs/fuzzing.md.
#include "data/data.hpp"
#include "fuzz_check.hpp"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  const auto newlines = static_cast<int64_t>(std::count(text.begin(), text.end(), '\n'));
  try {
    std::vector<int64_t> lines;
    const auto records = roberta_regression::parse_csv(text, "fuzz.csv", &lines);
    FUZZ_CHECK(lines.size() == records.size(), "one first line per record");
    FUZZ_CHECK(std::is_sorted(lines.begin(), lines.end()), "records' lines in order");
    for (const int64_t line : lines)
      FUZZ_CHECK(line >= 1 && line <= newlines + 1, "a record's line outside the text");
  } catch (const std::invalid_argument&) {
    return 0;
  }
  try {
    const auto csv = roberta_regression::parse_commonlit_csv(text, "fuzz.csv");
    FUZZ_CHECK(!csv.rows.empty(), "read with no rows");
    for (const auto& row : csv.rows) {
      FUZZ_CHECK(std::isfinite(row.target) && std::isfinite(row.standard_error),
                 "a number that is not finite");
      FUZZ_CHECK(row.excerpt.find_first_not_of(" \t\r\n") != std::string::npos, "empty excerpt");
      FUZZ_CHECK(row.line >= 2 && row.line <= newlines + 1, "a row's line outside the file");
    }
  } catch (const std::invalid_argument&) {
  }
  return 0;
}
