// finetune: fine-tuning techniques for LibTorch, header-only.
// SPDX-License-Identifier: MIT
//
// roberta_regression example: RoBERTa's byte-level BPE tokenizer (GPT-2's),
// read from a Hugging Face style vocab.json + merges.txt. Example code, not
// library API. It gives the ids Hugging Face's RobertaTokenizerFast (Rust
// `tokenizers`) gives for the same files: see docs/tokenizer.md and
// tests/test_roberta_tokenizer.cpp.
#pragma once

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <functional>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace roberta_regression {

/// One encoded text: `<s> tokens </s>`, then `<pad>` up to max_length when
/// one was asked for. attention_mask is 1 for real tokens, 0 for padding.
struct Encoding {
  std::vector<int64_t> input_ids;
  std::vector<int64_t> attention_mask;
};

/// Options of RobertaTokenizer (names as Hugging Face's kwargs).
struct RobertaTokenizerOptions {
  /// Put a space in front of text that does not start with one, so the first
  /// word is encoded like any other (default false, as RobertaTokenizer).
  bool add_prefix_space = false;
  /// Most words remembered with their BPE ids (default 10000, as `tokenizers`);
  /// once full, new words are encoded but not remembered.
  size_t cache_capacity = 10000;
};

/// Byte-level BPE tokenizer of RoBERTa/GPT-2.
///
/// Text is UTF-8. Bytes that are not valid UTF-8 are replaced by U+FFFD, one
/// per maximal invalid subsequence, exactly as Python's
/// `bytes.decode("utf-8", errors="replace")` does, so the result equals
/// encoding that Python string. The special tokens' strings (`<s>`, `<pad>`,
/// `</s>`, `<unk>`, `<mask>`) inside the text become those tokens, as in
/// Hugging Face's default (split_special_tokens=False). The rest is split by
/// GPT-2's pattern, each piece's bytes are mapped to GPT-2's byte characters
/// and merged by merges.txt rank.
///
/// Not thread-safe: encoding updates a word cache and reuses PCRE2 match
/// data. Use one tokenizer per thread.
class RobertaTokenizer {
 public:
  /// Reads vocab.json (object token -> id) and merges.txt ("a b" per line,
  /// optional "#version" lines). Throws std::invalid_argument naming the file
  /// and line or key when they are malformed: not JSON, a merge line without
  /// exactly two tokens, a merge of tokens missing from the vocabulary, an id
  /// used twice, a byte without its token, or a missing special token.
  RobertaTokenizer(const std::string& vocab_path, const std::string& merges_path,
                   RobertaTokenizerOptions options = {});

  /// The same from the two files' contents in memory; `vocab_name` and
  /// `merges_name` stand for the files in error messages.
  static RobertaTokenizer from_text(const std::string& vocab_json, const std::string& merges_txt,
                                    RobertaTokenizerOptions options = {},
                                    const std::string& vocab_name = "vocab.json",
                                    const std::string& merges_name = "merges.txt");

  RobertaTokenizer(RobertaTokenizer&&) = default;
  RobertaTokenizer& operator=(RobertaTokenizer&&) = default;
  RobertaTokenizer(const RobertaTokenizer&) = delete;
  RobertaTokenizer& operator=(const RobertaTokenizer&) = delete;

  /// The BPE ids of `text`, without `<s>`/`</s>`.
  std::vector<int64_t> tokenize(std::string_view text);

  /// `<s> tokenize(text) </s>`. With max_length > 0 (at least 2), as Hugging
  /// Face's `truncation=True, padding="max_length"`: the tokens are cut on the
  /// right to max_length - 2 and `<pad>` fills up to max_length. max_length 0
  /// (default): neither truncation nor padding.
  Encoding encode(std::string_view text, int64_t max_length = 0);

  /// Text of `ids` (byte characters back to bytes, invalid UTF-8 replaced by
  /// U+FFFD, as `tokenizers`' ByteLevel decoder). skip_special_tokens (default
  /// false) drops the five special tokens. An id outside the vocabulary throws
  /// std::invalid_argument.
  std::string decode(const std::vector<int64_t>& ids, bool skip_special_tokens = false) const;

  int64_t bos_token_id() const { return bos_id_; }
  int64_t pad_token_id() const { return pad_id_; }
  int64_t eos_token_id() const { return eos_id_; }
  int64_t unk_token_id() const { return unk_id_; }
  int64_t mask_token_id() const { return mask_id_; }
  /// Number of entries of vocab.json.
  int64_t vocab_size() const { return static_cast<int64_t>(id_to_token_.size()); }
  /// Id of a token string; throws std::invalid_argument when absent.
  int64_t token_to_id(const std::string& token) const;
  const RobertaTokenizerOptions& options() const { return options_; }

 private:
  struct Merge {
    int32_t rank;
    int32_t new_id;
  };
  struct CodeDeleter {
    void operator()(pcre2_code* p) const { pcre2_code_free(p); }
  };
  struct MatchDataDeleter {
    void operator()(pcre2_match_data* p) const { pcre2_match_data_free(p); }
  };

  explicit RobertaTokenizer(RobertaTokenizerOptions options) : options_(options) {}
  void load_vocab(std::istream& in, const std::string& path);
  void load_merges(std::istream& in, const std::string& path);
  void compile_pattern();
  void encode_segment(std::string_view segment, std::vector<int64_t>& out);
  void encode_word(std::string_view word, std::vector<int64_t>& out);
  void bpe(std::string_view word, std::vector<int32_t>& out);
  static uint64_t pair_key(int32_t a, int32_t b) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
  }

  RobertaTokenizerOptions options_;
  std::unordered_map<std::string, int32_t> token_to_id_;
  std::vector<std::string> id_to_token_;
  std::unordered_map<uint64_t, Merge> merges_;
  std::array<int32_t, 256> byte_ids_{};
  std::array<std::string, 256> byte_chars_;           // GPT-2's bytes_to_unicode, UTF-8
  std::unordered_map<uint32_t, uint8_t> char_bytes_;  // its inverse
  std::vector<std::pair<std::string, int32_t>> specials_;
  std::vector<bool> is_special_;
  int32_t bos_id_ = 0, pad_id_ = 0, eos_id_ = 0, unk_id_ = 0, mask_id_ = 0;
  std::unique_ptr<pcre2_code, CodeDeleter> pattern_;
  std::unique_ptr<pcre2_match_data, MatchDataDeleter> match_data_;
  std::unordered_map<std::string, std::vector<int32_t>> cache_;
};

namespace detail {

/// `text` with every maximal invalid UTF-8 subsequence replaced by U+FFFD
/// (Unicode's "maximal subpart" practice, which Python and Rust follow).
/// Returns false and leaves `out` untouched when `text` is already valid.
inline bool replace_invalid_utf8(std::string_view text, std::string& out) {
  auto sequence_length = [](const unsigned char* s, size_t n, size_t i, size_t& valid) -> bool {
    // Returns true for a valid sequence at i (length in `valid`); otherwise
    // `valid` is the length of the maximal invalid subpart (at least 1).
    const unsigned char c = s[i];
    if (c < 0x80) {
      valid = 1;
      return true;
    }
    size_t need = 0;
    unsigned char lo = 0x80, hi = 0xBF;  // range of the first continuation byte
    if (c >= 0xC2 && c <= 0xDF) {
      need = 1;
    } else if (c == 0xE0) {
      need = 2;
      lo = 0xA0;
    } else if ((c >= 0xE1 && c <= 0xEC) || c == 0xEE || c == 0xEF) {
      need = 2;
    } else if (c == 0xED) {
      need = 2;
      hi = 0x9F;
    } else if (c == 0xF0) {
      need = 3;
      lo = 0x90;
    } else if (c >= 0xF1 && c <= 0xF3) {
      need = 3;
    } else if (c == 0xF4) {
      need = 3;
      hi = 0x8F;
    } else {
      valid = 1;
      return false;
    }
    for (size_t k = 1; k <= need; ++k) {
      const unsigned char lo_k = k == 1 ? lo : 0x80, hi_k = k == 1 ? hi : 0xBF;
      if (i + k >= n || s[i + k] < lo_k || s[i + k] > hi_k) {
        valid = k;
        return false;
      }
    }
    valid = need + 1;
    return true;
  };
  const auto* s = reinterpret_cast<const unsigned char*>(text.data());
  const size_t n = text.size();
  size_t i = 0, length = 0;
  while (i < n && sequence_length(s, n, i, length)) i += length;
  if (i == n) return false;
  out.assign(text.data(), i);
  while (i < n) {
    if (sequence_length(s, n, i, length)) {
      out.append(text.data() + i, length);
    } else {
      out.append("\xEF\xBF\xBD");
    }
    i += length;
  }
  return true;
}

/// UTF-8 of one code point (< 0x110000).
inline std::string utf8(uint32_t cp) {
  std::string s;
  if (cp < 0x80) {
    s += static_cast<char>(cp);
  } else if (cp < 0x800) {
    s += static_cast<char>(0xC0 | (cp >> 6));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    s += static_cast<char>(0xE0 | (cp >> 12));
    s += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    s += static_cast<char>(0xF0 | (cp >> 18));
    s += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    s += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  }
  return s;
}

/// Decodes the code point at s[i] of valid UTF-8 and advances i.
inline uint32_t next_code_point(std::string_view s, size_t& i) {
  const auto c = static_cast<unsigned char>(s[i]);
  const size_t len = c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
  uint32_t cp = len == 1 ? c : len == 2 ? (c & 0x1F) : len == 3 ? (c & 0x0F) : (c & 0x07);
  for (size_t k = 1; k < len && i + k < s.size(); ++k) {
    cp = (cp << 6) | (static_cast<unsigned char>(s[i + k]) & 0x3F);
  }
  i += len;
  return cp;
}

/// GPT-2's bytes_to_unicode: printable Latin-1 bytes map to themselves, the
/// other 68 bytes to U+0100 and up, in byte order.
inline std::array<uint32_t, 256> bytes_to_unicode() {
  std::array<uint32_t, 256> table{};
  uint32_t next = 256;
  for (uint32_t b = 0; b < 256; ++b) {
    const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
    table[b] = printable ? b : next++;
  }
  return table;
}

/// GPT-2's pre-tokenization pattern. \s and \S are spelled out as Unicode's
/// White_Space property, which is what Oniguruma (Rust `tokenizers`) and
/// Python's `regex` use; PCRE2's \s under UCP would also take U+180E.
inline const char* pretokenize_pattern() {
#define ROBERTA_WS       \
  "\\t\\n\\x{0B}\\f\\r " \
  "\\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}\\x{202F}\\x{205F}\\x{3000}"
  return "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^" ROBERTA_WS
         "\\p{L}\\p{N}]+"
         "|[" ROBERTA_WS "]+(?![^" ROBERTA_WS "])|[" ROBERTA_WS "]+";
#undef ROBERTA_WS
}

/// Calls segment(stretch) for each stretch of `text` between occurrences of
/// the special tokens' strings (possibly empty) and special(id) for each
/// occurrence, in text order: the leftmost occurrence, and at one place the
/// first of `specials` that matches.
template <typename Segment, typename Special>
inline void split_on_specials(std::string_view text,
                              const std::vector<std::pair<std::string, int32_t>>& specials,
                              Segment&& segment, Special&& special) {
  std::array<bool, 256> starts{};  // first bytes of the specials
  for (const auto& s : specials) {
    if (!s.first.empty()) starts[static_cast<unsigned char>(s.first[0])] = true;
  }
  size_t start = 0;
  for (size_t pos = 0; pos < text.size();) {
    const std::pair<std::string, int32_t>* hit = nullptr;
    if (starts[static_cast<unsigned char>(text[pos])]) {
      for (const auto& s : specials) {
        if (!s.first.empty() && text.compare(pos, s.first.size(), s.first) == 0) {
          hit = &s;
          break;
        }
      }
    }
    if (hit == nullptr) {
      ++pos;
      continue;
    }
    segment(text.substr(start, pos - start));
    special(hit->second);
    pos += hit->first.size();
    start = pos;
  }
  segment(text.substr(start));
}

/// The ids of `text` (invalid UTF-8 replaced by U+FFFD first): the special
/// tokens' strings are found in the raw text first, as `tokenizers`' added
/// vocabulary (never normalized), and encode(stretch, out) appends the ids of
/// each stretch between them. Shared by both tokenizers.
template <typename EncodeSegment>
inline std::vector<int64_t> tokenize_text(
    std::string_view text, const std::vector<std::pair<std::string, int32_t>>& specials,
    EncodeSegment&& encode) {
  std::string replaced;
  if (replace_invalid_utf8(text, replaced)) text = replaced;
  std::vector<int64_t> out;
  out.reserve(text.size() / 3 + 4);
  split_on_specials(
      text, specials, [&](std::string_view segment) { encode(segment, out); },
      [&](int32_t id) { out.push_back(id); });
  return out;
}

/// Throws std::invalid_argument unless max_length is 0 or at least 2
/// (`specials` names the two tokens it must leave room for).
inline void check_max_length(int64_t max_length, const char* specials) {
  if (max_length < 0 || max_length == 1) {
    throw std::invalid_argument(
        std::string("max_length must be 0 (no truncation or padding) or at least 2 (room for ") +
        specials + "), got " + std::to_string(max_length));
  }
}

/// `first tokens last`, with max_length > 0 as Hugging Face's
/// `truncation=True, padding="max_length"`: the tokens cut on the right to
/// max_length - 2, then `pad` up to max_length; the mask 1 on the real tokens.
inline Encoding wrap_and_pad(std::vector<int64_t> tokens, int64_t max_length, int64_t first,
                             int64_t last, int64_t pad) {
  if (max_length > 0 && static_cast<int64_t>(tokens.size()) > max_length - 2) {
    tokens.resize(static_cast<size_t>(max_length - 2));
  }
  Encoding e;
  const size_t length = tokens.size() + 2;
  const size_t total = max_length > 0 ? static_cast<size_t>(max_length) : length;
  e.input_ids.reserve(total);
  e.input_ids.push_back(first);
  e.input_ids.insert(e.input_ids.end(), tokens.begin(), tokens.end());
  e.input_ids.push_back(last);
  e.input_ids.resize(total, pad);
  e.attention_mask.assign(total, 0);
  std::fill(e.attention_mask.begin(),
            e.attention_mask.begin() + static_cast<std::ptrdiff_t>(length), 1);
  return e;
}

}  // namespace detail

// ---------------------------------------------------------------------------
// Definitions.

inline RobertaTokenizer::RobertaTokenizer(const std::string& vocab_path,
                                          const std::string& merges_path,
                                          RobertaTokenizerOptions options)
    : options_(options) {
  std::ifstream vocab(vocab_path, std::ios::binary);
  if (!vocab) throw std::invalid_argument("cannot open vocabulary file '" + vocab_path + "'");
  load_vocab(vocab, vocab_path);
  std::ifstream merges(merges_path, std::ios::binary);
  if (!merges) throw std::invalid_argument("cannot open merges file '" + merges_path + "'");
  load_merges(merges, merges_path);
  compile_pattern();
}

inline RobertaTokenizer RobertaTokenizer::from_text(const std::string& vocab_json,
                                                    const std::string& merges_txt,
                                                    RobertaTokenizerOptions options,
                                                    const std::string& vocab_name,
                                                    const std::string& merges_name) {
  RobertaTokenizer tokenizer(options);
  std::istringstream vocab(vocab_json), merges(merges_txt);
  tokenizer.load_vocab(vocab, vocab_name);
  tokenizer.load_merges(merges, merges_name);
  tokenizer.compile_pattern();
  return tokenizer;
}

inline void RobertaTokenizer::load_vocab(std::istream& in, const std::string& path) {
  nlohmann::json vocab;
  try {
    vocab = nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    throw std::invalid_argument(path + ": not valid JSON: " + e.what());
  }
  if (!vocab.is_object() || vocab.empty()) {
    throw std::invalid_argument(path + ": expected a JSON object token -> id");
  }
  constexpr int64_t kMaxVocab = 1 << 24;
  id_to_token_.assign(std::min<size_t>(vocab.size(), kMaxVocab), std::string());
  std::vector<bool> used(id_to_token_.size(), false);
  for (const auto& [token, value] : vocab.items()) {
    if (!value.is_number_integer()) {
      throw std::invalid_argument(path + ": key '" + token + "': id is not an integer");
    }
    const auto id = value.get<int64_t>();
    if (id < 0 || id >= static_cast<int64_t>(id_to_token_.size())) {
      throw std::invalid_argument(path + ": key '" + token + "': id " + std::to_string(id) +
                                  " outside 0.." + std::to_string(id_to_token_.size() - 1) +
                                  " (ids must number the entries without gaps)");
    }
    if (used[static_cast<size_t>(id)]) {
      throw std::invalid_argument(path + ": key '" + token + "': id " + std::to_string(id) +
                                  " already used by '" + id_to_token_[static_cast<size_t>(id)] +
                                  "'");
    }
    used[static_cast<size_t>(id)] = true;
    id_to_token_[static_cast<size_t>(id)] = token;
    token_to_id_.emplace(token, static_cast<int32_t>(id));
  }
  const auto table = detail::bytes_to_unicode();
  for (size_t b = 0; b < 256; ++b) {
    byte_chars_[b] = detail::utf8(table[b]);
    char_bytes_.emplace(table[b], static_cast<uint8_t>(b));
    const auto it = token_to_id_.find(byte_chars_[b]);
    if (it == token_to_id_.end()) {
      throw std::invalid_argument(path + ": no token '" + byte_chars_[b] + "' for byte " +
                                  std::to_string(b) + " (not a byte-level BPE vocabulary)");
    }
    byte_ids_[b] = it->second;
  }
  auto special = [&](const char* name) {
    const auto it = token_to_id_.find(name);
    if (it == token_to_id_.end()) {
      throw std::invalid_argument(path + ": missing special token key '" + std::string(name) + "'");
    }
    specials_.emplace_back(name, it->second);
    return it->second;
  };
  bos_id_ = special("<s>");
  pad_id_ = special("<pad>");
  eos_id_ = special("</s>");
  unk_id_ = special("<unk>");
  mask_id_ = special("<mask>");
  is_special_.assign(id_to_token_.size(), false);
  for (const auto& s : specials_) is_special_[static_cast<size_t>(s.second)] = true;
}

inline void RobertaTokenizer::load_merges(std::istream& in, const std::string& path) {
  std::string line;
  int64_t number = 0;
  int32_t rank = 0;
  while (std::getline(in, line)) {
    ++number;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.rfind("#version", 0) == 0) continue;  // header, as `tokenizers` skips it
    const auto where = [&] { return path + " line " + std::to_string(number) + ": "; };
    const auto space = line.find(' ');
    if (space == std::string::npos || space == 0 || space + 1 == line.size() ||
        line.find(' ', space + 1) != std::string::npos) {
      throw std::invalid_argument(where() + "expected two tokens separated by one space, got '" +
                                  line + "'");
    }
    const std::string left = line.substr(0, space), right = line.substr(space + 1);
    const auto token_id = [&](const std::string& token, const char* what) {
      const auto it = token_to_id_.find(token);
      if (it == token_to_id_.end()) {
        throw std::invalid_argument(where() + what + " '" + token + "' is not in the vocabulary");
      }
      return it->second;
    };
    const int32_t a = token_id(left, "token");
    const int32_t b = token_id(right, "token");
    const int32_t merged = token_id(left + right, "merged token");
    // A repeated pair keeps its last rank, as `tokenizers` does.
    merges_[pair_key(a, b)] = Merge{rank++, merged};
  }
  if (in.bad()) throw std::invalid_argument("error reading merges file '" + path + "'");
}

inline void RobertaTokenizer::compile_pattern() {
  int error = 0;
  PCRE2_SIZE offset = 0;
  const char* pattern = detail::pretokenize_pattern();
  pattern_.reset(pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern), PCRE2_ZERO_TERMINATED,
                               PCRE2_UTF | PCRE2_UCP, &error, &offset, nullptr));
  if (!pattern_) {
    PCRE2_UCHAR message[256];
    pcre2_get_error_message(error, message, sizeof(message));
    throw std::runtime_error(std::string("PCRE2 cannot compile the GPT-2 pattern: ") +
                             reinterpret_cast<const char*>(message));
  }
  // JIT when the library has it; the interpreter gives the same matches.
  pcre2_jit_compile(pattern_.get(), PCRE2_JIT_COMPLETE);
  match_data_.reset(pcre2_match_data_create_from_pattern(pattern_.get(), nullptr));
  if (!match_data_) throw std::runtime_error("PCRE2: out of memory for match data");
}

inline int64_t RobertaTokenizer::token_to_id(const std::string& token) const {
  const auto it = token_to_id_.find(token);
  if (it == token_to_id_.end()) {
    throw std::invalid_argument("token '" + token + "' is not in the vocabulary");
  }
  return it->second;
}

inline std::vector<int64_t> RobertaTokenizer::tokenize(std::string_view text) {
  return detail::tokenize_text(text, specials_,
                               [this](std::string_view segment, std::vector<int64_t>& out) {
                                 encode_segment(segment, out);
                               });
}

inline void RobertaTokenizer::encode_segment(std::string_view segment, std::vector<int64_t>& out) {
  if (segment.empty()) return;
  std::string prefixed;
  if (options_.add_prefix_space && segment.front() != ' ') {
    prefixed.reserve(segment.size() + 1);
    prefixed += ' ';
    prefixed.append(segment.data(), segment.size());
    segment = prefixed;
  }
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(segment.data());
  PCRE2_SIZE offset = 0;
  while (offset < segment.size()) {
    const int rc = pcre2_match(pattern_.get(), subject, segment.size(), offset, PCRE2_NO_UTF_CHECK,
                               match_data_.get(), nullptr);
    if (rc == PCRE2_ERROR_NOMATCH) break;  // cannot happen: the pattern covers every character
    if (rc < 0) throw std::runtime_error("PCRE2 match error " + std::to_string(rc));
    const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(match_data_.get());
    if (ovector[1] <= ovector[0]) break;  // no empty matches in this pattern; guard anyway
    encode_word(segment.substr(ovector[0], ovector[1] - ovector[0]), out);
    offset = ovector[1];
  }
}

inline void RobertaTokenizer::encode_word(std::string_view word, std::vector<int64_t>& out) {
  if (word.size() == 1) {
    out.push_back(byte_ids_[static_cast<unsigned char>(word[0])]);
    return;
  }
  // Cache keyed by the raw bytes; long words are not cached (as `tokenizers`).
  constexpr size_t kMaxCachedWord = 256;
  const bool cacheable = word.size() < kMaxCachedWord;
  std::string key;
  if (cacheable) {
    key.assign(word.data(), word.size());
    const auto it = cache_.find(key);
    if (it != cache_.end()) {
      out.insert(out.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  std::vector<int32_t> ids;
  bpe(word, ids);
  out.insert(out.end(), ids.begin(), ids.end());
  if (cacheable && cache_.size() < options_.cache_capacity)
    cache_.emplace(std::move(key), std::move(ids));
}

// Rank-ordered merging with a heap, as `tokenizers`' BPE::merge_word: always
// merge the adjacent pair of lowest rank, the leftmost among equals.
inline void RobertaTokenizer::bpe(std::string_view word, std::vector<int32_t>& out) {
  struct Symbol {
    int32_t id;
    int32_t prev;
    int32_t next;
    bool alive;
  };
  struct Candidate {
    int32_t rank;
    int32_t pos;
    int32_t new_id;
    bool operator>(const Candidate& o) const {
      return rank != o.rank ? rank > o.rank : pos > o.pos;
    }
  };
  const auto n = static_cast<int32_t>(word.size());
  std::vector<Symbol> symbols(static_cast<size_t>(n));
  for (int32_t i = 0; i < n; ++i) {
    symbols[static_cast<size_t>(i)] =
        Symbol{byte_ids_[static_cast<unsigned char>(word[static_cast<size_t>(i)])], i - 1,
               i + 1 < n ? i + 1 : -1, true};
  }
  std::vector<Candidate> heap;
  auto push = [&](int32_t pos) {
    const Symbol& left = symbols[static_cast<size_t>(pos)];
    if (left.next < 0) return;
    const auto it = merges_.find(pair_key(left.id, symbols[static_cast<size_t>(left.next)].id));
    if (it == merges_.end()) return;
    heap.push_back(Candidate{it->second.rank, pos, it->second.new_id});
    std::push_heap(heap.begin(), heap.end(), std::greater<Candidate>());
  };
  for (int32_t i = 0; i + 1 < n; ++i) push(i);
  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end(), std::greater<Candidate>());
    const Candidate top = heap.back();
    heap.pop_back();
    Symbol& left = symbols[static_cast<size_t>(top.pos)];
    if (!left.alive || left.next < 0) continue;
    Symbol& right = symbols[static_cast<size_t>(left.next)];
    const auto it = merges_.find(pair_key(left.id, right.id));
    if (it == merges_.end() || it->second.new_id != top.new_id) continue;  // stale entry
    left.id = top.new_id;
    right.alive = false;
    left.next = right.next;
    if (right.next >= 0) symbols[static_cast<size_t>(right.next)].prev = top.pos;
    if (left.prev >= 0) push(left.prev);
    push(top.pos);
  }
  for (int32_t i = 0; i >= 0; i = symbols[static_cast<size_t>(i)].next) {
    out.push_back(symbols[static_cast<size_t>(i)].id);
  }
}

inline Encoding RobertaTokenizer::encode(std::string_view text, int64_t max_length) {
  detail::check_max_length(max_length, "<s> and </s>");
  return detail::wrap_and_pad(tokenize(text), max_length, bos_id_, eos_id_, pad_id_);
}

inline std::string RobertaTokenizer::decode(const std::vector<int64_t>& ids,
                                            bool skip_special_tokens) const {
  std::string bytes;
  for (const int64_t id : ids) {
    if (id < 0 || id >= vocab_size()) {
      throw std::invalid_argument("decode: id " + std::to_string(id) +
                                  " outside the vocabulary (0.." +
                                  std::to_string(vocab_size() - 1) + ")");
    }
    if (skip_special_tokens && is_special_[static_cast<size_t>(id)]) continue;
    // Each character back to its byte; a token with a character that is not
    // a byte character goes out as it is (as `tokenizers`' ByteLevel decoder).
    const std::string& token = id_to_token_[static_cast<size_t>(id)];
    const size_t mark = bytes.size();
    bool all_bytes = true;
    for (size_t i = 0; i < token.size();) {
      const auto it = char_bytes_.find(detail::next_code_point(token, i));
      if (it == char_bytes_.end()) {
        all_bytes = false;
        break;
      }
      bytes += static_cast<char>(it->second);
    }
    if (!all_bytes) {
      bytes.resize(mark);
      bytes += token;
    }
  }
  std::string replaced;
  return detail::replace_invalid_utf8(bytes, replaced) ? replaced : bytes;
}

}  // namespace roberta_regression
