// finetune: fine-tuning techniques for LibTorch, header-only.
// SPDX-License-Identifier: MIT
//
// Shared by fuzz_evaluator_state.cpp and fuzz_evaluator_history.cpp: a
// scratch folder for the evaluator's files (on /dev/shm when there is one, so
// the evaluator's fsyncs cost nothing), file helpers, and an archive's round
// trip through the bytes torch::save writes.
#pragma once

#include <torch/torch.h>
#include <finetune/periodic_evaluator.hpp>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <sstream>
#include <stdexcept>
#include <string>

namespace fuzz {

/// A folder of its own for this process, emptied by every call.
inline std::string fresh_folder() {
  static const std::string root = [] {
    const std::string base = std::filesystem::is_directory("/dev/shm") ? "/dev/shm" : "/tmp";
    std::string pattern = base + "/finetune-fuzz-XXXXXX";
    if (mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
    return pattern;
  }();
  for (const auto& entry : std::filesystem::directory_iterator(root))
    std::filesystem::remove_all(entry.path());
  return root;
}

inline void write_file(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary);
  out << bytes;
  if (!out.flush()) throw std::runtime_error(path + ": write failed");
}

inline std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

/// `archive` as torch::save writes it, read back as torch::load reads it.
inline void round_trip(torch::serialize::OutputArchive& archive,
                       torch::serialize::InputArchive& into) {
  std::ostringstream bytes;
  archive.save_to(bytes);
  const std::string s = bytes.str();
  into.load_from(s.data(), s.size());
}

}  // namespace fuzz
