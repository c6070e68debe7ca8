// finetune: fine-tuning techniques for LibTorch, header-only.
// SPDX-License-Identifier: MIT
//
// libFuzzer entry point for the RoBERTa tokenizer's three inputs
// (examples/roberta_regression/text/tokenizer.hpp): a vocab.json, a merges.txt and
// a text, as one input `vocab.json \0 merges.txt \0 text` (a missing part is
// empty). The contract under test: the files either load or throw
// std::invalid_argument; a loaded tokenizer encodes any bytes without an
// exception, every id is in the vocabulary, decoding the ids gives the text
// back (invalid UTF-8 replaced by U+FFFD), and encode(text, max_length) has
// max_length ids. See docs/fuzzing.md.
#include "fuzz_check.hpp"
#include "text/tokenizer.hpp"

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  const size_t first = std::min(input.find('\0'), input.size());
  const std::string_view rest = input.substr(std::min(first + 1, input.size()));
  const size_t second = std::min(rest.find('\0'), rest.size());
  const std::string vocab(input.substr(0, first)), merges(rest.substr(0, second));
  const std::string_view text = rest.substr(std::min(second + 1, rest.size()));

  using roberta_regression::RobertaTokenizer;
  std::optional<RobertaTokenizer> tokenizer;
  try {
    tokenizer.emplace(RobertaTokenizer::from_text(vocab, merges));
  } catch (const std::invalid_argument&) {
    return 0;  // rejected files: the expected outcome for malformed ones
  }
  // From here on no exception is expected: one escaping is a finding.
  const std::vector<int64_t> ids = tokenizer->tokenize(text);
  for (const int64_t id : ids)
    FUZZ_CHECK(id >= 0 && id < tokenizer->vocab_size(), "id outside the vocabulary");
  std::string expected;
  if (!roberta_regression::detail::replace_invalid_utf8(text, expected)) expected = text;
  FUZZ_CHECK(tokenizer->decode(ids) == expected, "decode(tokenize(text)) != text");
  const int64_t max_length = 2 + static_cast<int64_t>(size % 7);
  const auto encoding = tokenizer->encode(text, max_length);
  FUZZ_CHECK(static_cast<int64_t>(encoding.input_ids.size()) == max_length &&
                 encoding.attention_mask.size() == encoding.input_ids.size(),
             "encode(text, max_length) is not max_length long");
  return 0;
}
