// ModelTokenizer: the tokenizer a model folder ships, chosen by its
// config.json's model_type: RoBERTa's byte-level BPE (vocab.json, merges.txt)
// or BERT's WordPiece (vocab.txt, tokenizer_config.json). What the trainer,
// `tokenize` and `train` hold, so neither needs to know the family.
// Example code, not library API.
#pragma once

#include <filesystem>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

#include "text/tokenizer.hpp"
#include "text/wordpiece.hpp"

namespace roberta_regression {

/// The tokenizer of one model family; encode() as both tokenizers define it
/// (`<s> .. </s>` or `[CLS] .. [SEP]`, truncated and padded to max_length > 0).
class ModelTokenizer {
 public:
  /// Reads DIR's tokenizer files for `model_type` ("roberta" or "bert", as
  /// RobertaConfig::model_type). Errors name the file, as the tokenizers' own.
  static ModelTokenizer from_model_dir(const std::string& dir, const std::string& model_type) {
    namespace fs = std::filesystem;
    if (model_type == "bert") return ModelTokenizer(WordPieceTokenizer::from_model_dir(dir));
    if (model_type == "roberta")
      return ModelTokenizer(RobertaTokenizer((fs::path(dir) / "vocab.json").string(),
                                             (fs::path(dir) / "merges.txt").string()));
    throw std::invalid_argument(dir + ": no tokenizer for model_type \"" + model_type + "\"");
  }

  explicit ModelTokenizer(RobertaTokenizer bpe) : impl_(std::move(bpe)) {}
  explicit ModelTokenizer(WordPieceTokenizer wordpiece) : impl_(std::move(wordpiece)) {}

  Encoding encode(std::string_view text, int64_t max_length = 0) {
    return std::visit([&](auto& t) { return t.encode(text, max_length); }, impl_);
  }
  int64_t vocab_size() const {
    return std::visit([](const auto& t) { return t.vocab_size(); }, impl_);
  }
  int64_t pad_token_id() const {
    return std::visit([](const auto& t) { return t.pad_token_id(); }, impl_);
  }
  /// The file that holds the vocabulary, for error messages.
  const char* vocab_file() const { return is_wordpiece() ? "vocab.txt" : "vocab.json"; }
  bool is_wordpiece() const { return std::holds_alternative<WordPieceTokenizer>(impl_); }

 private:
  std::variant<RobertaTokenizer, WordPieceTokenizer> impl_;
};

}  // namespace roberta_regression
