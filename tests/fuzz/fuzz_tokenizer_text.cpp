// finetune: fine-tuning techniques for LibTorch, header-only.
// SPDX-License-Identifier: MIT
//
// libFuzzer entry point for the text the RoBERTa tokenizer encodes, with the
// example's demo vocabulary (assets/demo-bpe: 4,000 tokens and their merges,
// deeper merges than fuzz_tokenizer's small vocabularies reach). The
// contract: any bytes encode without an exception, every id is in the
// vocabulary, decoding the ids gives the text back (invalid UTF-8 replaced by
// U+FFFD), and both add_prefix_space settings agree on text that starts with
// a space. See docs/fuzzing.md.
#include "fuzz_check.hpp"
#include "roberta_paths.hpp"
#include "text/tokenizer.hpp"

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using roberta_regression::RobertaTokenizer;
  using roberta_regression::RobertaTokenizerOptions;
  static const std::string dir = std::string(roberta_regression::kAssetsDir) + "/demo-bpe/";
  static RobertaTokenizer plain(dir + "vocab.json", dir + "merges.txt");
  static RobertaTokenizer prefixed(dir + "vocab.json", dir + "merges.txt",
                                   RobertaTokenizerOptions{true, 10000});
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  const std::vector<int64_t> ids = plain.tokenize(text);
  for (const int64_t id : ids)
    FUZZ_CHECK(id >= 0 && id < plain.vocab_size(), "id outside the vocabulary");
  std::string expected;
  if (!roberta_regression::detail::replace_invalid_utf8(text, expected)) expected = text;
  FUZZ_CHECK(plain.decode(ids) == expected, "decode(tokenize(text)) != text");
  if (!text.empty() && text.front() == ' ' && text.find('<') == std::string_view::npos)
    FUZZ_CHECK(prefixed.tokenize(text) == ids, "add_prefix_space changed text with a space");
  return 0;
}
