// Reading the committed golden files that tests/reference/*.py write.
#pragma once

#include <fstream>
#include <stdexcept>
#include <string>

#include <nlohmann/json.hpp>

#include "test_config.hpp"

namespace finetune_test {

/// Full path of a file in tests/golden/.
inline std::string golden_path(const std::string& name) {
  // Appended piecewise: `std::string(a) + "/" + b` trips a false GCC 12
  // -Warray-bounds at -O3 (C++20), which -Werror turns into an error.
  std::string path(kGoldenDir);
  path += '/';
  path += name;
  return path;
}

/// Parses tests/golden/<name> as JSON; a missing file names the script to run.
inline nlohmann::json load_golden_json(const std::string& name) {
  std::ifstream in(golden_path(name));
  if (!in) {
    throw std::runtime_error("missing golden file " + golden_path(name) +
                             " (regenerate with `make goldens`)");
  }
  return nlohmann::json::parse(in);
}

}  // namespace finetune_test
