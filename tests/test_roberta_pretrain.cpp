// Masked-language-model pretraining of the example (pretrain.hpp): the
// windows (oracle: tests/reference/ref_roberta_pretrain.py), HF's 80/10/10
// masking rule, and a tiny run that learns.
#include <torch/torch.h>

#include <filesystem>
#include <string>
#include <vector>

#include "catch.hpp"
#include "golden.hpp"
#include "roberta_paths.hpp"
#include "test_helpers.hpp"
#include "training/pretrain.hpp"

using namespace roberta_regression;

namespace {
RobertaTokenizer demo_tokenizer() {
  // Appended piecewise: `std::string(a) + b` trips GCC 12's false -Warray-bounds.
  std::string vocab(kAssetsDir), merges(kAssetsDir);
  vocab += "/demo-bpe/vocab.json";
  merges += "/demo-bpe/merges.txt";
  return RobertaTokenizer(vocab, merges);
}
/// A [rows, columns] int64 tensor as nested vectors.
std::vector<std::vector<int64_t>> rows_of(const torch::Tensor& t) {
  std::vector<std::vector<int64_t>> rows;
  const auto c = t.contiguous();
  for (int64_t i = 0; i < c.size(0); ++i) {
    const int64_t* row = c[i].data_ptr<int64_t>();
    rows.emplace_back(row, row + c.size(1));
  }
  return rows;
}
const std::vector<std::string> kTexts = {
    "Fellow-Citizens of the Senate and House of Representatives: the state of the Union is strong.",
    "We must reduce the public debt, and the revenue of the Treasury has increased this year.",
    "Short."};
}  // namespace

TEST_CASE("pack_mlm_windows cuts each text as HF's tokenizer cuts overflowing tokens",
          "[roberta][pretrain]") {
  // tests/reference/ref_roberta_pretrain.py: RobertaTokenizerFast on the demo
  // BPE with truncation, return_overflowing_tokens, stride 0, padding to max_length.
  const auto golden = finetune_test::load_golden_json("roberta_pretrain_windows.json");
  const auto texts = golden.at("texts").get<std::vector<std::string>>();
  auto tok = demo_tokenizer();
  for (const auto& c : golden.at("cases")) {
    const int64_t max_length = c.at("max_length").get<int64_t>();
    INFO("max_length " << max_length);
    const auto [ids, mask] = pack_mlm_windows(tok, texts, max_length);
    CHECK(rows_of(ids) == c.at("input_ids").get<std::vector<std::vector<int64_t>>>());
    CHECK(rows_of(mask) == c.at("attention_mask").get<std::vector<std::vector<int64_t>>>());
  }
  using finetune_test::invalid_argument_message;
  CHECK_THAT(invalid_argument_message([&] { pack_mlm_windows(tok, texts, 2); }),
             finetune_test::HasSubstring("pretrain: --max-length must be at least 3"));
  CHECK_THAT(invalid_argument_message([&] { pack_mlm_windows(tok, {}, 8); }),
             finetune_test::HasSubstring("pretrain: no text to train on"));
}

TEST_CASE("mask_tokens follows HF's 15% / 80-10-10 rule", "[roberta][pretrain]") {
  auto tok = demo_tokenizer();
  auto ids = torch::randint(5, tok.vocab_size(), {400, 250}, torch::kInt64);
  ids.select(1, 0).fill_(tok.bos_token_id());
  ids.select(1, 200).fill_(tok.eos_token_id());
  auto mask = torch::ones_like(ids);
  mask.slice(1, 201).zero_();
  ids.slice(1, 201).fill_(tok.pad_token_id());
  auto generator = torch::make_generator<at::CPUGeneratorImpl>(7);
  const auto [masked, labels] = mask_tokens(ids, mask, tok, 0.15, generator);
  const auto chosen = labels != -100;
  const auto special = (ids == tok.bos_token_id()) | (ids == tok.eos_token_id()) | (mask == 0);
  CHECK_FALSE((chosen & special).any().item<bool>());
  CHECK(torch::equal(labels.masked_select(chosen), ids.masked_select(chosen)));
  CHECK(torch::equal(masked.masked_select(~chosen), ids.masked_select(~chosen)));
  const double eligible = (~special).sum().item<double>();  // 400 * 199
  const double n = chosen.sum().item<double>();
  CHECK_THAT(n / eligible, Catch::Matchers::WithinAbs(0.15, 0.005));
  const double to_mask = (chosen & (masked == tok.mask_token_id())).sum().item<double>();
  const double unchanged = (chosen & (masked == ids)).sum().item<double>();
  CHECK_THAT(to_mask / n, Catch::Matchers::WithinAbs(0.8, 0.015));
  CHECK_THAT(unchanged / n,
             Catch::Matchers::WithinAbs(0.1, 0.015));  // (plus random ids equal by chance)
  CHECK_THAT((n - to_mask - unchanged) / n, Catch::Matchers::WithinAbs(0.1, 0.015));
}

TEST_CASE("a tiny pretraining run learns and saves an HF-shaped checkpoint",
          "[roberta][pretrain]") {
  auto tok = demo_tokenizer();
  PretrainOptions o;
  o.hidden_size = 32;
  o.num_hidden_layers = 2;
  o.num_attention_heads = 2;
  o.intermediate_size = 64;
  o.max_length = 16;
  o.batch_size = 8;
  o.steps = 120;
  o.lr = 3e-3;
  o.log_every = 40;
  o.mask_probability = 0.3;
  std::vector<PretrainLogEntry> log;
  auto [model, config] = pretrain_mlm(tok, kTexts, o, torch::kCPU,
                                      [&](const PretrainLogEntry& e) { log.push_back(e); });
  REQUIRE(log.size() == 3);
  CHECK(log.back().step == 120);
  CHECK(log.back().loss < log.front().loss - 1.0);  // memorizes the three texts
  CHECK(config.vocab_size == 8192);
  CHECK(config.max_position_embeddings == 18);

  finetune_test::TempDir dir;
  save_pretrained(*model, config, dir.path);
  RobertaModel encoder(load_config_dir(dir.path));
  const auto report = load_safetensors_weights(
      *encoder, (std::filesystem::path(dir.path) / "model.safetensors").string());
  CHECK(report.missing == std::vector<std::string>{"pooler.dense.weight", "pooler.dense.bias"});
  CHECK(report.unexpected.size() == 5);  // lm_head.*
  CHECK_THAT(finetune_test::invalid_argument_message([&] {
               PretrainOptions bad = o;
               bad.mask_probability = 1.5;
               pretrain_mlm(tok, kTexts, bad, torch::kCPU, [](const PretrainLogEntry&) {});
             }),
             finetune_test::HasSubstring("pretrain: --mask-probability must lie in (0, 1)"));
}
