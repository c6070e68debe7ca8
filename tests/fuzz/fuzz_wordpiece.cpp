// finetune: fine-tuning techniques for LibTorch, header-only.
// SPDX-License-Identifier: MIT
//
// libFuzzer entry point for the WordPiece tokenizer's two inputs
// (examples/roberta_regression/text/wordpiece.hpp): a vocab.txt and a text, as
// one input `options byte, vocab.txt \0 text` (a missing part is empty). The
// options byte picks lowercase, strip_accents (null/false/true),
// tokenize_chinese_chars and a small max_input_chars_per_word. The contract
// under test: the vocabulary either loads or throws std::invalid_argument; a
// loaded tokenizer encodes any bytes without an exception, every id is in the
// vocabulary, tokenize() is encode() without [CLS]/[SEP], and
// encode(text, max_length) has max_length ids whose mask is 1 on a prefix
// (ending in [SEP]) and 0 on [PAD]s after it. See docs/fuzzing.md.
#include "fuzz_check.hpp"
#include "text/wordpiece.hpp"

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const uint8_t flags = data[0];
  const std::string_view input(reinterpret_cast<const char*>(data) + 1, size - 1);
  const size_t split = std::min(input.find('\0'), input.size());
  const std::string vocab(input.substr(0, split));
  const std::string_view text = input.substr(std::min(split + 1, input.size()));

  using roberta_regression::WordPieceTokenizer;
  using roberta_regression::WordPieceTokenizerOptions;
  WordPieceTokenizerOptions options;
  options.lowercase((flags & 1) != 0).tokenize_chinese_chars((flags & 2) != 0);
  if ((flags & 12) == 4) options.strip_accents(false);
  if ((flags & 12) == 8) options.strip_accents(true);
  if ((flags & 16) != 0) options.max_input_chars_per_word(flags >> 5);  // 0..7
  std::optional<WordPieceTokenizer> tokenizer;
  try {
    tokenizer.emplace(WordPieceTokenizer::from_text(vocab, options));
  } catch (const std::invalid_argument&) {
    return 0;  // rejected vocabularies: the expected outcome for malformed ones
  }
  // From here on no exception is expected: one escaping is a finding.
  const std::vector<int64_t> ids = tokenizer->tokenize(text);
  for (const int64_t id : ids)
    FUZZ_CHECK(id >= 0 && id < tokenizer->vocab_size(), "id outside the vocabulary");
  const auto full = tokenizer->encode(text);
  FUZZ_CHECK(full.input_ids.size() == ids.size() + 2 &&
                 full.input_ids.front() == tokenizer->cls_token_id() &&
                 full.input_ids.back() == tokenizer->sep_token_id() &&
                 std::equal(ids.begin(), ids.end(), full.input_ids.begin() + 1),
             "encode(text) is not [CLS] tokenize(text) [SEP]");
  // (std::all_of, not == a vector of ones: GCC 12 -Wfree-nonheap-object misfires on that)
  FUZZ_CHECK(full.attention_mask.size() == full.input_ids.size() &&
                 std::all_of(full.attention_mask.begin(), full.attention_mask.end(),
                             [](int64_t m) { return m == 1; }),
             "encode(text) has a mask that is not all ones");
  const int64_t max_length = 2 + static_cast<int64_t>(size % 7);
  const auto fixed = tokenizer->encode(text, max_length);
  FUZZ_CHECK(static_cast<int64_t>(fixed.input_ids.size()) == max_length &&
                 fixed.attention_mask.size() == fixed.input_ids.size(),
             "encode(text, max_length) is not max_length long");
  const auto real = static_cast<size_t>(
      std::count(fixed.attention_mask.begin(), fixed.attention_mask.end(), int64_t{1}));
  FUZZ_CHECK(real >= 2 && real == std::min(ids.size() + 2, static_cast<size_t>(max_length)),
             "encode(text, max_length): wrong number of real tokens");
  for (size_t i = 0; i < fixed.input_ids.size(); ++i) {
    const bool is_real = i < real;
    FUZZ_CHECK(fixed.attention_mask[i] == (is_real ? 1 : 0), "mask is not ones then zeros");
    FUZZ_CHECK(is_real || fixed.input_ids[i] == tokenizer->pad_token_id(), "padding is not [PAD]");
    FUZZ_CHECK(!is_real || i + 1 < real || fixed.input_ids[i] == tokenizer->sep_token_id(),
               "the last real token is not [SEP]");
    FUZZ_CHECK(!is_real || i == 0 || i + 1 == real || fixed.input_ids[i] == ids[i - 1],
               "encode(text, max_length) is not a prefix of tokenize(text)");
  }
  return 0;
}
