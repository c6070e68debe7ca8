// finetune: fine-tuning techniques for LibTorch, header-only.
// SPDX-License-Identifier: MIT
//
// fuzz::Bytes: a fuzz input read front to back (fuzz_evaluator_state.cpp,
// fuzz_training_state.cpp): bytes, 8-byte little-endian words and the
// doubles with those bits; zeros once the input is used up.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

namespace fuzz {

struct Bytes {
  const uint8_t* data;
  size_t size;
  size_t pos = 0;
  bool done() const { return pos >= size; }
  uint8_t byte() { return pos < size ? data[pos++] : 0; }
  int64_t word() {
    uint64_t v = 0;
    for (int i = 0; i < 8; ++i) v |= static_cast<uint64_t>(byte()) << (8 * i);
    int64_t out;
    std::memcpy(&out, &v, sizeof(out));
    return out;
  }
  /// The next word's bits as a double (NaN, inf, subnormals...).
  double real() {
    const int64_t w = word();
    double d;
    std::memcpy(&d, &w, sizeof(d));
    return d;
  }
};

}  // namespace fuzz
