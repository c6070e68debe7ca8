// finetune: fine-tuning techniques for LibTorch, header-only.
// SPDX-License-Identifier: MIT
//
// libFuzzer entry point for the safetensors parser of the RoBERTa example
// (examples/roberta_regression/model/safetensors.hpp). The contract under test: any
// byte string either parses or throws std::invalid_argument; anything else
// (another exception, a crash, a sanitizer report) is a bug. Built as the
// fuzzer with -DFINETUNE_BUILD_FUZZERS=ON and clang (see docs/safetensors.md);
// always built into the corpus replay test `safetensors_fuzz_replay`.
#include "model/safetensors.hpp"

#include <cstddef>
#include <cstdint>
#include <stdexcept>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const roberta_regression::SafetensorsFile file =
        roberta_regression::parse_safetensors(data, size, "fuzz-input");
    // A parsed file must serialise again (names are valid UTF-8, dtypes
    // supported, sizes consistent).
    (void)roberta_regression::serialize_safetensors(file.tensors, file.metadata);
  } catch (const std::invalid_argument&) {
    // Rejected input: the expected outcome for malformed bytes.
  }
  return 0;
}
