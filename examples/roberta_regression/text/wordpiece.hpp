// finetune: fine-tuning techniques for LibTorch, header-only.
// SPDX-License-Identifier: MIT
//
// roberta_regression example: BERT's WordPiece tokenizer, read from a
// vocab.txt (one token per line, the line number is the id). Example code, not
// library API. It gives the ids Hugging Face's BertTokenizerFast (Rust
// `tokenizers`: BertNormalizer, BertPreTokenizer, WordPiece, [CLS] ... [SEP])
// gives for the same vocabulary and settings: see docs/tokenizer.md and
// tests/test_bert_tokenizer.cpp. Unicode data (categories, White_Space, NFD,
// lower-casing) comes from ICU.
#pragma once

#include <unicode/uchar.h>
#include <unicode/unorm2.h>
#include <unicode/ustring.h>
#include <unicode/utf16.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdint>
#include <fstream>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "text/tokenizer.hpp"  // Encoding, detail: UTF-8 helpers, wrap_and_pad

namespace roberta_regression {

#define ROBERTA_WORDPIECE_ARG(T, name)                     \
 public:                                                   \
  auto name(const T& new_value)->decltype(*this) {         \
    this->name##_ = new_value;                             \
    return *this;                                          \
  }                                                        \
  const T& name() const noexcept { return this->name##_; } \
                                                           \
 private:                                                  \
  T name##_

/// Options of WordPieceTokenizer; names and defaults as Hugging Face's
/// BertTokenizerFast kwargs (bert-base-uncased's settings). Chained setters.
struct WordPieceTokenizerOptions {
  /// Lower-case the text (do_lower_case; default true).
  ROBERTA_WORDPIECE_ARG(bool, lowercase) = true;
  /// Remove accents: NFD, then drop non-spacing marks. nullopt (default):
  /// the value of lowercase, as BertNormalizer does.
  ROBERTA_WORDPIECE_ARG(std::optional<bool>, strip_accents) = std::nullopt;
  /// Put spaces around CJK ideographs so that each is a word (default true).
  ROBERTA_WORDPIECE_ARG(bool, tokenize_chinese_chars) = true;
  /// Drop NUL, U+FFFD and control characters, turn whitespace into ' '
  /// (BertNormalizer's clean_text; default true).
  ROBERTA_WORDPIECE_ARG(bool, clean_text) = true;
  /// A word of more characters becomes [UNK] as a whole (default 100).
  ROBERTA_WORDPIECE_ARG(int64_t, max_input_chars_per_word) = 100;
  /// Prefix of a piece that continues a word (default "##").
  ROBERTA_WORDPIECE_ARG(std::string, continuing_subword_prefix) = "##";
  ROBERTA_WORDPIECE_ARG(std::string, unk_token) = "[UNK]";
  ROBERTA_WORDPIECE_ARG(std::string, cls_token) = "[CLS]";
  ROBERTA_WORDPIECE_ARG(std::string, sep_token) = "[SEP]";
  ROBERTA_WORDPIECE_ARG(std::string, pad_token) = "[PAD]";
  ROBERTA_WORDPIECE_ARG(std::string, mask_token) = "[MASK]";

 public:
  /// strip_accents with its default resolved.
  bool strips_accents() const { return strip_accents_.value_or(lowercase_); }
};

#undef ROBERTA_WORDPIECE_ARG

/// BERT's WordPiece tokenizer, equal to Hugging Face's BertTokenizerFast.
///
/// Text is UTF-8; bytes that are not are replaced by U+FFFD (one per maximal
/// invalid subsequence, as Python's errors="replace"), which clean_text then
/// drops. The special tokens' strings in the raw text become those tokens.
/// Between them: normalization (clean_text, CJK spacing, accent stripping,
/// lower-casing, in BertNormalizer's order), splitting on whitespace and
/// around each punctuation character, and greedy longest-match-first
/// WordPiece per word ([UNK] for a word no pieces spell, or one longer than
/// max_input_chars_per_word characters).
///
/// Const and thread-safe once constructed.
class WordPieceTokenizer {
 public:
  /// Reads vocab.txt. Throws std::runtime_error naming the file when it cannot
  /// be read, std::invalid_argument naming the file (and line) for an empty
  /// line, a token listed twice or a missing special token.
  explicit WordPieceTokenizer(const std::string& vocab_path,
                              WordPieceTokenizerOptions options = {});

  /// The same from the file's contents; `vocab_name` stands for the file in
  /// error messages.
  static WordPieceTokenizer from_text(const std::string& vocab_txt,
                                      WordPieceTokenizerOptions options = {},
                                      const std::string& vocab_name = "vocab.txt");

  /// Reads DIR/vocab.txt and, when DIR/tokenizer_config.json exists, its
  /// do_lower_case, strip_accents (null or a bool) and tokenize_chinese_chars
  /// (absent keys keep `options`' values). A key of the wrong type throws
  /// std::invalid_argument naming the file and key.
  static WordPieceTokenizer from_model_dir(const std::string& dir,
                                           WordPieceTokenizerOptions options = {});

  /// BertNormalizer's output for `text` (UTF-8; invalid bytes replaced first).
  std::string normalize(std::string_view text) const;

  /// The WordPiece ids of `text`, without [CLS]/[SEP].
  std::vector<int64_t> tokenize(std::string_view text) const;

  /// `[CLS] tokenize(text) [SEP]`. With max_length > 0 (at least 2), as Hugging
  /// Face's `truncation=True, padding="max_length"`: cut on the right to
  /// max_length - 2 tokens, then [PAD] up to max_length. max_length 0
  /// (default): neither truncation nor padding.
  Encoding encode(std::string_view text, int64_t max_length = 0) const;

  int64_t cls_token_id() const { return cls_id_; }
  int64_t sep_token_id() const { return sep_id_; }
  int64_t pad_token_id() const { return pad_id_; }
  int64_t unk_token_id() const { return unk_id_; }
  int64_t mask_token_id() const { return mask_id_; }
  /// Number of lines of vocab.txt.
  int64_t vocab_size() const { return static_cast<int64_t>(id_to_token_.size()); }
  /// Id of a token string; throws std::invalid_argument when absent.
  int64_t token_to_id(const std::string& token) const;
  /// Token string of an id; throws std::invalid_argument outside the vocabulary.
  const std::string& id_to_token(int64_t id) const;
  const WordPieceTokenizerOptions& options() const { return options_; }

  /// The character classes BertNormalizer and BertPreTokenizer use, by code
  /// point (see docs/tokenizer.md for where each comes from).
  static bool is_control(uint32_t cp);
  static bool is_whitespace(uint32_t cp);
  static bool is_punctuation(uint32_t cp);
  static bool is_chinese_char(uint32_t cp);
  static bool is_nonspacing_mark(uint32_t cp);

 private:
  explicit WordPieceTokenizer(WordPieceTokenizerOptions options) : options_(std::move(options)) {}
  void load_vocab(std::istream& in, const std::string& name);
  void normalize_segment(std::string_view segment, std::u32string& out) const;
  void encode_segment(std::string_view segment, std::vector<int64_t>& out) const;
  void encode_word(const std::u32string& chars, size_t begin, size_t end,
                   std::vector<int64_t>& out) const;

  WordPieceTokenizerOptions options_;
  std::unordered_map<std::string, int32_t> token_to_id_;
  std::vector<std::string> id_to_token_;
  std::vector<std::pair<std::string, int32_t>> specials_;
  int32_t cls_id_ = 0, sep_id_ = 0, pad_id_ = 0, unk_id_ = 0, mask_id_ = 0;
};

namespace detail {

/// Whether `cp` is not a character assigned after Unicode 8.0 (ICU's
/// u_charAge; unassigned code points have age 0.0).
inline bool assigned_by_unicode8(uint32_t cp) {
  UVersionInfo age;
  u_charAge(static_cast<UChar32>(cp), age);
  return age[0] < 8 || (age[0] == 8 && age[1] == 0);
}

/// General category of `cp` as the Unicode 8.0 tables of the Rust crate
/// `unicode_categories`, which `tokenizers` uses for is_control,
/// is_punctuation and is_mark_nonspacing: ICU's category for characters
/// assigned by Unicode 8.0 (u_charAge), unassigned for later ones, except the
/// six characters whose category Unicode changed since 8.0.
inline int8_t unicode8_category(uint32_t cp) {
  switch (cp) {    // categories in Unicode 8.0 where they differ from today's
    case 0x166D:   // CANADIAN SYLLABICS CHI SIGN: Po, So since Unicode 12
    case 0x111C9:  // SHARADA SANDHI MARK: Po, Mn since Unicode 13
      return U_OTHER_PUNCTUATION;
    case 0x1734:  // HANUNOO SIGN PAMUDPOD: Mn, Mc since Unicode 14
      return U_NON_SPACING_MARK;
    case 0x1885:  // MONGOLIAN LETTER ALI GALI BALUDA: Lo, Mn since Unicode 9
    case 0x1886:  // MONGOLIAN LETTER ALI GALI THREE BALUDA
      return U_OTHER_LETTER;
    case 0xA9BD:  // JAVANESE CONSONANT SIGN KERET: Mc, Mn since Unicode 12
      return U_COMBINING_SPACING_MARK;
    default:
      break;
  }
  if (!assigned_by_unicode8(cp)) return U_UNASSIGNED;
  return u_charType(static_cast<UChar32>(cp));
}

/// `cp` lower-cased as Rust's char::to_lowercase: the full, context-free
/// mapping (U+0130 gives "i\u0307"; a capital sigma always gives U+03C3).
inline void append_lowercase(uint32_t cp, std::u32string& out) {
  if (cp < 0x80) {
    out += (cp >= 'A' && cp <= 'Z') ? cp + 32 : cp;
    return;
  }
  // One code point alone: ICU's context-dependent rules (final sigma) never
  // apply, which is what a per-character mapping does.
  UChar src[2], dst[8];
  int32_t src_len = 0;
  UBool error = false;
  U16_APPEND(src, src_len, 2, static_cast<UChar32>(cp), error);
  UErrorCode status = U_ZERO_ERROR;
  const int32_t n = u_strToLower(dst, 8, src, src_len, "", &status);
  if (error || U_FAILURE(status) || n > 8) {
    out += cp;
    return;
  }
  for (int32_t i = 0; i < n;) {
    UChar32 c;
    U16_NEXT(dst, i, n, c);
    out += static_cast<char32_t>(c);
  }
}

/// NFD of `text` (ICU's Normalizer2).
inline std::u32string icu_nfd(const std::u32string& text) {
  UErrorCode status = U_ZERO_ERROR;
  const UNormalizer2* normalizer = unorm2_getNFDInstance(&status);
  if (U_FAILURE(status)) throw std::runtime_error("ICU: no NFD normalizer");
  std::vector<UChar> src;
  src.reserve(text.size() + 8);
  for (const char32_t cp : text) {
    if (cp < 0x10000) {
      src.push_back(static_cast<UChar>(cp));
    } else {
      src.push_back(static_cast<UChar>(U16_LEAD(cp)));
      src.push_back(static_cast<UChar>(U16_TRAIL(cp)));
    }
  }
  const auto src_len = static_cast<int32_t>(src.size());
  // Every NFD expansion is at most 4 UTF-16 units per unit for BMP code
  // points (Unicode's stability policy bounds it at 3x); retry once if not.
  std::vector<UChar> dst(static_cast<size_t>(src_len) * 4 + 16);
  int32_t n = unorm2_normalize(normalizer, src.data(), src_len, dst.data(),
                               static_cast<int32_t>(dst.size()), &status);
  if (status == U_BUFFER_OVERFLOW_ERROR) {
    status = U_ZERO_ERROR;
    dst.resize(static_cast<size_t>(n));
    n = unorm2_normalize(normalizer, src.data(), src_len, dst.data(), n, &status);
  }
  if (U_FAILURE(status)) throw std::runtime_error("ICU: NFD failed");
  std::u32string out;
  out.reserve(static_cast<size_t>(n));
  for (int32_t i = 0; i < n;) {
    UChar32 c;
    U16_NEXT(dst.data(), i, n, c);
    out += static_cast<char32_t>(c);
  }
  return out;
}

/// NFD as `tokenizers`' normalization tables (crate
/// unicode-normalization-alignments) do it: they predate the characters
/// assigned after Unicode 8.0 (U+11938 of Unicode 13 is not decomposed), which
/// are left as they are and, as starters, bound the runs ICU normalizes.
inline std::u32string nfd(const std::u32string& text) {
  std::u32string out, run;
  out.reserve(text.size() + 8);
  for (const char32_t cp : text) {
    if (cp < 0x80 || assigned_by_unicode8(cp)) {
      run += cp;
      continue;
    }
    if (!run.empty()) out += icu_nfd(run);
    run.clear();
    out += cp;
  }
  if (!run.empty()) out += icu_nfd(run);
  return out;
}

inline void append_utf8(const std::u32string& chars, size_t begin, size_t end, std::string& out) {
  for (size_t i = begin; i < end; ++i) out += utf8(chars[i]);
}

}  // namespace detail

// ---------------------------------------------------------------------------
// Definitions.

inline bool WordPieceTokenizer::is_control(uint32_t cp) {
  if (cp == '\t' || cp == '\n' || cp == '\r') return false;  // whitespace to BERT
  const int8_t t = detail::unicode8_category(cp);
  return t == U_CONTROL_CHAR || t == U_FORMAT_CHAR || t == U_PRIVATE_USE_CHAR || t == U_SURROGATE;
}

inline bool WordPieceTokenizer::is_whitespace(uint32_t cp) {
  // Rust's char::is_whitespace: the White_Space property.
  return u_hasBinaryProperty(static_cast<UChar32>(cp), UCHAR_WHITE_SPACE) != 0;
}

inline bool WordPieceTokenizer::is_punctuation(uint32_t cp) {
  // Rust's char::is_ascii_punctuation (symbols such as $ + < = > ^ ` | ~
  // included), or a Unicode 8.0 P* category.
  if (cp < 0x80) {
    return (cp >= 0x21 && cp <= 0x2F) || (cp >= 0x3A && cp <= 0x40) || (cp >= 0x5B && cp <= 0x60) ||
           (cp >= 0x7B && cp <= 0x7E);
  }
  switch (detail::unicode8_category(cp)) {
    case U_CONNECTOR_PUNCTUATION:
    case U_DASH_PUNCTUATION:
    case U_START_PUNCTUATION:
    case U_END_PUNCTUATION:
    case U_INITIAL_PUNCTUATION:
    case U_FINAL_PUNCTUATION:
    case U_OTHER_PUNCTUATION:
      return true;
    default:
      return false;
  }
}

inline bool WordPieceTokenizer::is_chinese_char(uint32_t cp) {
  // BERT's own definition (the CJK Unified Ideographs blocks and extensions
  // A-E, and the compatibility ideographs), not a Unicode property.
  return (cp >= 0x4E00 && cp <= 0x9FFF) || (cp >= 0x3400 && cp <= 0x4DBF) ||
         (cp >= 0x20000 && cp <= 0x2A6DF) || (cp >= 0x2A700 && cp <= 0x2B73F) ||
         (cp >= 0x2B740 && cp <= 0x2B81F) || (cp >= 0x2B920 && cp <= 0x2CEAF) ||
         (cp >= 0xF900 && cp <= 0xFAFF) || (cp >= 0x2F800 && cp <= 0x2FA1F);
}

inline bool WordPieceTokenizer::is_nonspacing_mark(uint32_t cp) {
  return detail::unicode8_category(cp) == U_NON_SPACING_MARK;
}

inline WordPieceTokenizer::WordPieceTokenizer(const std::string& vocab_path,
                                              WordPieceTokenizerOptions options)
    : options_(std::move(options)) {
  std::ifstream in(vocab_path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot open vocabulary file '" + vocab_path + "'");
  load_vocab(in, vocab_path);
}

inline WordPieceTokenizer WordPieceTokenizer::from_text(const std::string& vocab_txt,
                                                        WordPieceTokenizerOptions options,
                                                        const std::string& vocab_name) {
  WordPieceTokenizer tokenizer(std::move(options));
  std::istringstream in(vocab_txt);
  tokenizer.load_vocab(in, vocab_name);
  return tokenizer;
}

inline WordPieceTokenizer WordPieceTokenizer::from_model_dir(const std::string& dir,
                                                             WordPieceTokenizerOptions options) {
  const std::string config_path = dir + "/tokenizer_config.json";
  std::ifstream config_file(config_path, std::ios::binary);
  if (config_file) {
    nlohmann::json config;
    try {
      config = nlohmann::json::parse(config_file);
    } catch (const nlohmann::json::exception& e) {
      throw std::invalid_argument(config_path + ": not valid JSON: " + e.what());
    }
    if (!config.is_object()) throw std::invalid_argument(config_path + ": expected a JSON object");
    auto flag = [&](const char* key) -> std::optional<bool> {
      if (!config.contains(key)) return std::nullopt;
      const auto& value = config.at(key);
      if (!value.is_boolean()) {
        throw std::invalid_argument(config_path + ": key '" + key + "' must be true or false");
      }
      return value.get<bool>();
    };
    if (const auto v = flag("do_lower_case")) options.lowercase(*v);
    if (const auto v = flag("tokenize_chinese_chars")) options.tokenize_chinese_chars(*v);
    if (config.contains("strip_accents")) {
      const auto& value = config.at("strip_accents");
      if (value.is_null()) {
        options.strip_accents(std::nullopt);
      } else if (value.is_boolean()) {
        options.strip_accents(value.get<bool>());
      } else {
        throw std::invalid_argument(config_path +
                                    ": key 'strip_accents' must be null, true or false");
      }
    }
  }
  return WordPieceTokenizer(dir + "/vocab.txt", std::move(options));
}

inline void WordPieceTokenizer::load_vocab(std::istream& in, const std::string& name) {
  if (options_.max_input_chars_per_word() < 0) {
    throw std::invalid_argument("max_input_chars_per_word must be >= 0, got " +
                                std::to_string(options_.max_input_chars_per_word()));
  }
  std::string line;
  int64_t number = 0;
  while (std::getline(in, line)) {
    ++number;
    if (!line.empty() && line.back() == '\r') line.pop_back();  // CRLF files
    const auto where = [&] { return name + " line " + std::to_string(number) + ": "; };
    if (line.empty()) throw std::invalid_argument(where() + "empty token");
    if (number > (int64_t{1} << 24)) throw std::invalid_argument(where() + "too many tokens");
    const auto [it, inserted] =
        token_to_id_.emplace(line, static_cast<int32_t>(id_to_token_.size()));
    if (!inserted) {
      throw std::invalid_argument(where() + "token '" + line + "' already on line " +
                                  std::to_string(it->second + 1));
    }
    id_to_token_.push_back(line);
  }
  if (in.bad()) throw std::runtime_error("error reading vocabulary file '" + name + "'");
  auto special = [&](const std::string& token, const char* what) {
    const auto it = token_to_id_.find(token);
    if (it == token_to_id_.end()) {
      throw std::invalid_argument(name + ": missing the " + what + " token '" + token + "'");
    }
    specials_.emplace_back(token, it->second);
    return it->second;
  };
  unk_id_ = special(options_.unk_token(), "unknown");
  cls_id_ = special(options_.cls_token(), "classifier");
  sep_id_ = special(options_.sep_token(), "separator");
  pad_id_ = special(options_.pad_token(), "padding");
  mask_id_ = special(options_.mask_token(), "mask");
  // Leftmost match; among specials starting at the same place the longest
  // (as `tokenizers`' added vocabulary).
  std::stable_sort(specials_.begin(), specials_.end(),
                   [](const auto& a, const auto& b) { return a.first.size() > b.first.size(); });
}

inline int64_t WordPieceTokenizer::token_to_id(const std::string& token) const {
  const auto it = token_to_id_.find(token);
  if (it == token_to_id_.end()) {
    throw std::invalid_argument("token '" + token + "' is not in the vocabulary");
  }
  return it->second;
}

inline const std::string& WordPieceTokenizer::id_to_token(int64_t id) const {
  if (id < 0 || id >= vocab_size()) {
    throw std::invalid_argument("id " + std::to_string(id) + " outside the vocabulary (0.." +
                                std::to_string(vocab_size() - 1) + ")");
  }
  return id_to_token_[static_cast<size_t>(id)];
}

inline void WordPieceTokenizer::normalize_segment(std::string_view segment,
                                                  std::u32string& out) const {
  std::u32string chars;
  chars.reserve(segment.size());
  for (size_t i = 0; i < segment.size();) {
    const uint32_t cp = detail::next_code_point(segment, i);
    if (options_.clean_text()) {
      if (cp == 0 || cp == 0xFFFD || is_control(cp)) continue;
      if (is_whitespace(cp)) {
        chars += U' ';
        continue;
      }
    }
    if (options_.tokenize_chinese_chars() && is_chinese_char(cp)) {
      chars += U' ';
      chars += static_cast<char32_t>(cp);
      chars += U' ';
      continue;
    }
    chars += static_cast<char32_t>(cp);
  }
  if (options_.strips_accents()) {
    std::u32string decomposed = detail::nfd(chars);
    chars.clear();
    for (const char32_t cp : decomposed) {
      if (!is_nonspacing_mark(cp)) chars += cp;
    }
  }
  if (options_.lowercase()) {
    for (const char32_t cp : chars) detail::append_lowercase(cp, out);
  } else {
    out += chars;
  }
}

inline std::string WordPieceTokenizer::normalize(std::string_view text) const {
  std::string replaced;
  if (detail::replace_invalid_utf8(text, replaced)) text = replaced;
  std::u32string chars;
  normalize_segment(text, chars);
  std::string out;
  detail::append_utf8(chars, 0, chars.size(), out);
  return out;
}

inline std::vector<int64_t> WordPieceTokenizer::tokenize(std::string_view text) const {
  // Special tokens are matched in the raw text, not normalized (`tokenizers`'
  // added tokens with normalized=false).
  return detail::tokenize_text(text, specials_,
                               [this](std::string_view segment, std::vector<int64_t>& out) {
                                 encode_segment(segment, out);
                               });
}

inline void WordPieceTokenizer::encode_segment(std::string_view segment,
                                               std::vector<int64_t>& out) const {
  if (segment.empty()) return;
  std::u32string chars;
  normalize_segment(segment, chars);
  // BertPreTokenizer: whitespace separates words and is dropped; each
  // punctuation character is a word of its own.
  size_t word_start = 0;
  for (size_t i = 0; i < chars.size(); ++i) {
    const uint32_t cp = chars[i];
    if (is_whitespace(cp)) {
      encode_word(chars, word_start, i, out);
      word_start = i + 1;
    } else if (is_punctuation(cp)) {
      encode_word(chars, word_start, i, out);
      encode_word(chars, i, i + 1, out);
      word_start = i + 1;
    }
  }
  encode_word(chars, word_start, chars.size(), out);
}

inline void WordPieceTokenizer::encode_word(const std::u32string& chars, size_t begin, size_t end,
                                            std::vector<int64_t>& out) const {
  if (begin >= end) return;
  if (static_cast<int64_t>(end - begin) > options_.max_input_chars_per_word()) {
    out.push_back(unk_id_);
    return;
  }
  // Greedy longest match first, the pieces after the first with the prefix.
  const size_t mark = out.size();
  std::string piece;
  for (size_t start = begin; start < end;) {
    size_t stop = end;
    int32_t found = -1;
    for (; stop > start; --stop) {
      piece.clear();
      if (start > begin) piece = options_.continuing_subword_prefix();
      detail::append_utf8(chars, start, stop, piece);
      const auto it = token_to_id_.find(piece);
      if (it != token_to_id_.end()) {
        found = it->second;
        break;
      }
    }
    if (found < 0) {  // no piece fits: the whole word is unknown
      out.resize(mark);
      out.push_back(unk_id_);
      return;
    }
    out.push_back(found);
    start = stop;
  }
}

inline Encoding WordPieceTokenizer::encode(std::string_view text, int64_t max_length) const {
  detail::check_max_length(max_length, "[CLS] and [SEP]");
  return detail::wrap_and_pad(tokenize(text), max_length, cls_id_, sep_id_, pad_id_);
}

}  // namespace roberta_regression
