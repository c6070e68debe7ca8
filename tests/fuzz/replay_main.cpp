// finetune: fine-tuning techniques for LibTorch, header-only.
// SPDX-License-Identifier: MIT
//
// Runs LLVMFuzzerTestOneInput over every file of a corpus directory, without
// libFuzzer (any compiler). Fails when an exception other than
// std::invalid_argument escapes (the entry point swallows only that one) or
// when the directory holds no files.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: " << argv[0] << " CORPUS_DIR\n";
    return 2;
  }
  std::vector<std::filesystem::path> files;
  for (const auto& entry : std::filesystem::directory_iterator(argv[1])) {
    if (entry.is_regular_file()) files.push_back(entry.path());
  }
  std::sort(files.begin(), files.end());
  int failures = 0;
  for (const auto& path : files) {
    std::ifstream in(path, std::ios::binary);
    const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    try {
      LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
    } catch (const std::exception& e) {
      std::cerr << path << ": escaped " << e.what() << "\n";
      ++failures;
    } catch (...) {
      std::cerr << path << ": escaped a non-std exception\n";
      ++failures;
    }
  }
  std::cout << "replayed " << files.size() << " corpus file(s), " << failures << " failure(s)\n";
  return files.empty() || failures > 0 ? 1 : 0;
}
