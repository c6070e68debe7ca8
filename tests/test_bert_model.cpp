// The example's BERT (RobertaModel with config.model_type "bert") against
// Hugging Face transformers' BertModel: checkpoints saved by `save_pretrained`
// load unchanged and give HF's outputs on edge batches (golden:
// tests/reference/ref_bert_model.py, computed there in float64 and stored as
// float32; HF's own float32 run is within 1.7e-6 of it).
#include <torch/torch.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "catch.hpp"
#include "model/roberta_model.hpp"
#include "test_config.hpp"
#include "test_helpers.hpp"

namespace {

namespace fs = std::filesystem;
using namespace roberta_regression;
using finetune_test::invalid_argument_message;

fs::path golden_dir(const std::string& name) {
  return fs::path(finetune_test::kGoldenDir) / "bert_model" / name;
}

torch::Tensor tensor_of(const SafetensorsFile& file, const std::string& name) {
  for (const auto& [key, tensor] : file.tensors)
    if (key == name) return tensor;
  return {};
}

double max_abs_diff(const torch::Tensor& a, const torch::Tensor& b) {
  return (a.to(torch::kCPU, torch::kFloat64) - b.to(torch::kFloat64)).abs().max().item<double>();
}

/// The batch names of an inputs.safetensors ("<batch>.input_ids", ...).
std::set<std::string> batch_names(const SafetensorsFile& inputs) {
  std::set<std::string> names;
  for (const auto& [key, tensor] : inputs.tensors) names.insert(key.substr(0, key.find('.')));
  return names;
}

const std::vector<std::string> kModels = {"bert_2x32_h2", "bert_3x40_h4_pad3", "bert_1x36_h3"};
constexpr double kTolerance = 1e-5;

std::vector<torch::Device> devices() {
  std::vector<torch::Device> d{torch::kCPU};
  if (torch::cuda::is_available()) d.emplace_back(torch::kCUDA);
  return d;
}

std::string write(const fs::path& path, const std::string& text) {
  std::ofstream(path) << text;
  return path.string();
}

}  // namespace

TEST_CASE("RobertaModel with a bert config gives BertModel's outputs", "[bert][model]") {
  double worst_hidden = 0.0, worst_pooler = 0.0;
  for (const auto& name : kModels) {
    const auto dir = golden_dir(name);
    const RobertaConfig config = load_config_dir(dir.string());
    REQUIRE(config.is_bert());
    const auto inputs = read_safetensors((dir / "inputs.safetensors").string());
    const auto expected = read_safetensors((dir / "expected.safetensors").string());
    const auto batches = batch_names(inputs);
    REQUIRE(batches.size() >= 4);
    for (const auto& device : devices()) {
      RobertaModel model(config);
      const LoadReport report =
          load_safetensors_weights(*model, (dir / "model.safetensors").string());
      INFO(name << ": " << report.summary());
      CHECK(report.missing.empty());
      CHECK(report.unexpected.empty());
      CHECK(report.loaded.size() == model->parameters().size());
      model->to(device);
      model->eval();
      torch::NoGradGuard no_grad;
      for (const auto& batch : batches) {
        INFO(name << " batch " << batch << " on " << device);
        const auto ids = tensor_of(inputs, batch + ".input_ids");
        const auto mask = tensor_of(inputs, batch + ".attention_mask");
        auto types = tensor_of(inputs, batch + ".token_type_ids");
        REQUIRE(ids.defined());
        REQUIRE(mask.defined());
        if (types.defined()) types = types.to(device);
        const auto out = model->forward(ids.to(device), mask.to(device), types);
        const auto want_hidden = tensor_of(expected, batch + ".last_hidden_state");
        const auto want_pooler = tensor_of(expected, batch + ".pooler_output");
        REQUIRE(want_hidden.defined());
        REQUIRE(want_pooler.defined());
        REQUIRE(out.last_hidden_state.sizes() == want_hidden.sizes());
        const double hidden = max_abs_diff(out.last_hidden_state, want_hidden);
        const double pooler = max_abs_diff(out.pooler_output, want_pooler);
        worst_hidden = std::max(worst_hidden, hidden);
        worst_pooler = std::max(worst_pooler, pooler);
        CHECK(hidden < kTolerance);
        CHECK(pooler < kTolerance);
      }
    }
  }
  WARN("bert tiny configs, all batches: max |diff| last_hidden_state "
       << worst_hidden << ", pooler_output " << worst_pooler);
}

TEST_CASE("BERT's positions: 0..T-1 in every row, up to max_position_embeddings", "[bert][model]") {
  const auto dir = golden_dir("bert_3x40_h4_pad3");
  const RobertaConfig config = load_config_dir(dir.string());
  RobertaModel model(config);
  load_safetensors_weights(*model, (dir / "model.safetensors").string());
  model->eval();
  torch::NoGradGuard no_grad;
  // The full-length batch passes (the parity test compares it); one more token throws.
  const auto too_long = torch::full({1, config.max_position_embeddings + 1}, 5, torch::kInt64);
  CHECK_THAT(
      invalid_argument_message([&] { model->forward(too_long, torch::ones_like(too_long)); }),
      finetune_test::HasSubstring("exceed max_position_embeddings"));
  // The same model read as RoBERTa (positions counted from pad_token_id + 1)
  // gives other outputs: the golden tells the two families apart.
  RobertaConfig as_roberta = config;
  as_roberta.model_type = "roberta";
  RobertaModel roberta(as_roberta);
  load_safetensors_weights(*roberta, (dir / "model.safetensors").string());
  roberta->eval();
  const auto inputs = read_safetensors((dir / "inputs.safetensors").string());
  const auto expected = read_safetensors((dir / "expected.safetensors").string());
  const auto ids = tensor_of(inputs, "padded.input_ids"),
             mask = tensor_of(inputs, "padded.attention_mask");
  CHECK(max_abs_diff(roberta->forward(ids, mask).last_hidden_state,
                     tensor_of(expected, "padded.last_hidden_state")) > 1e-2);
  // BERT's position table has no padding row: pad_token_id's row is a real
  // position (HF: nn.Embedding without padding_idx), unlike word_embeddings.
  CHECK_FALSE(model->embeddings->position_embeddings->options.padding_idx().has_value());
  CHECK(model->embeddings->word_embeddings->options.padding_idx() == config.pad_token_id);
}

TEST_CASE("a bert config.json: HF BertConfig's defaults, written back as bert", "[bert][config]") {
  std::ifstream in(golden_dir("bert_defaults.json"));
  const auto hf = nlohmann::json::parse(in);
  const RobertaConfig c = RobertaConfig::from_json({{"model_type", "bert"}}, "config.json");
  CHECK(c.model_type == hf.at("model_type").get<std::string>());
  CHECK(c.vocab_size == hf.at("vocab_size").get<int64_t>());
  CHECK(c.hidden_size == hf.at("hidden_size").get<int64_t>());
  CHECK(c.num_hidden_layers == hf.at("num_hidden_layers").get<int64_t>());
  CHECK(c.num_attention_heads == hf.at("num_attention_heads").get<int64_t>());
  CHECK(c.intermediate_size == hf.at("intermediate_size").get<int64_t>());
  CHECK(c.max_position_embeddings == hf.at("max_position_embeddings").get<int64_t>());
  CHECK(c.type_vocab_size == hf.at("type_vocab_size").get<int64_t>());
  CHECK(c.pad_token_id == hf.at("pad_token_id").get<int64_t>());
  CHECK(c.layer_norm_eps == hf.at("layer_norm_eps").get<double>());
  CHECK(c.hidden_dropout_prob == hf.at("hidden_dropout_prob").get<double>());
  CHECK(c.attention_probs_dropout_prob == hf.at("attention_probs_dropout_prob").get<double>());
  CHECK(c.initializer_range == hf.at("initializer_range").get<double>());
  CHECK(c.hidden_act == hf.at("hidden_act").get<std::string>());

  // HF's saved configs carry "bos_token_id": null; written back: bert, BertModel.
  const RobertaConfig saved = load_config_dir(golden_dir("bert_2x32_h2").string());
  const auto j = saved.to_json();
  CHECK(j.at("model_type") == "bert");
  CHECK(j.at("architectures") == nlohmann::json::array({"BertModel"}));
  CHECK(RobertaConfig::from_json(j, "written").to_json() == j);
  // A config without model_type stays RoBERTa, as before.
  CHECK(RobertaConfig::from_json(nlohmann::json::object(), "config.json").model_type == "roberta");
  CHECK(RobertaConfig{}.to_json().at("model_type") == "roberta");
}

TEST_CASE("a config.json with an unknown model_type names the file and the key", "[bert][config]") {
  finetune_test::TempDir tmp;
  const auto path = write(fs::path(tmp.path) / "config.json", R"({"model_type": "gpt2"})");
  const auto message = invalid_argument_message([&] { RobertaConfig::from_json_file(path); });
  CHECK_THAT(message, finetune_test::HasSubstring(path + ": key \"model_type\" must be "
                                                         "\"roberta\" or \"bert\", got \"gpt2\""));
  CHECK_THAT(
      invalid_argument_message([&] {
        RobertaConfig::from_json_file(write(fs::path(tmp.path) / "b.json", R"({"model_type": 3})"));
      }),
      finetune_test::HasSubstring("b.json: key \"model_type\""));
}

TEST_CASE("bert checkpoints load with a bert. prefix and HF's index buffers", "[bert][model]") {
  const auto dir = golden_dir("bert_2x32_h2");
  const RobertaConfig config = load_config_dir(dir.string());
  const auto original = read_safetensors((dir / "model.safetensors").string());
  // As BertForSequenceClassification saves it, with the position_ids buffer
  // that older checkpoints carry.
  NamedTensors prefixed;
  for (const auto& [key, tensor] : original.tensors) prefixed.emplace_back("bert." + key, tensor);
  prefixed.emplace_back("bert.embeddings.position_ids",
                        torch::arange(config.max_position_embeddings).unsqueeze(0));
  prefixed.emplace_back("classifier.weight", torch::zeros({2, config.hidden_size}));
  finetune_test::TempDir tmp;
  const auto path = (fs::path(tmp.path) / "model.safetensors").string();
  write_safetensors(path, prefixed);

  RobertaModel model(config);
  const LoadReport report = load_safetensors_weights(*model, path);
  INFO(report.summary());
  CHECK(report.missing.empty());
  CHECK(report.loaded.size() == model->parameters().size());
  CHECK(report.unexpected == std::vector<std::string>{"classifier.weight"});
  CHECK(report.buffers == std::vector<std::string>{"bert.embeddings.position_ids"});
  CHECK_THAT(report.summary(), finetune_test::HasSubstring("bert.embeddings.position_ids"));
  for (const auto& [key, tensor] : original.tensors)
    CHECK(torch::equal(model->named_parameters()[key], tensor));

  // The regressor ("roberta." submodule) takes the same file: only its head is missing.
  RobertaRegressor regressor(config);
  const LoadReport into_regressor = load_safetensors_weights(*regressor, path);
  CHECK(into_regressor.missing == std::vector<std::string>{"regressor.weight", "regressor.bias"});
  CHECK(into_regressor.loaded.size() == model->parameters().size());
}

TEST_CASE("forward --model DIR runs either family", "[bert][model][cli]") {
  const std::string exe = finetune_test::kRobertaExe;
  {
    INFO("the example's binary '" << exe << "' is missing (it is built with this test)");
    REQUIRE((!exe.empty() && fs::exists(exe)));
  }
  finetune_test::TempDir tmp;
  const auto dir = golden_dir("bert_3x40_h4_pad3");
  const auto inputs = read_safetensors((dir / "inputs.safetensors").string());
  const auto expected = read_safetensors((dir / "expected.safetensors").string());
  const auto in = (fs::path(tmp.path) / "in.safetensors").string();
  write_safetensors(in, {{"input_ids", tensor_of(inputs, "padded.input_ids")},
                         {"attention_mask", tensor_of(inputs, "padded.attention_mask")}});
  const auto out = (fs::path(tmp.path) / "out.safetensors").string();
  const auto r = finetune_test::run_command(exe + " --threads 1 forward --model " + dir.string() +
                                            " --inputs " + in + " --out " + out);
  INFO(r.output);
  REQUIRE(r.status == 0);
  const auto got = read_safetensors(out);
  CHECK(max_abs_diff(tensor_of(got, "last_hidden_state"),
                     tensor_of(expected, "padded.last_hidden_state")) < kTolerance);
  CHECK(max_abs_diff(tensor_of(got, "pooler_output"), tensor_of(expected, "padded.pooler_output")) <
        kTolerance);

  // RoBERTa's golden folder through --model too.
  const auto roberta = fs::path(finetune_test::kGoldenDir) / "roberta_model" / "tiny_2x32_h2";
  const auto r2 = finetune_test::run_command(
      exe + " --threads 1 forward --model " + roberta.string() + " --inputs " +
      (roberta / "inputs.safetensors").string() + " --out " + out);
  INFO(r2.output);
  REQUIRE(r2.status == 0);
  const auto roberta_expected = read_safetensors((roberta / "expected.safetensors").string());
  CHECK(max_abs_diff(tensor_of(read_safetensors(out), "last_hidden_state"),
                     tensor_of(roberta_expected, "last_hidden_state")) < kTolerance);

  // --model with --config or --weights: refused, saying why.
  const auto both = finetune_test::run_command(exe + " forward --model " + dir.string() +
                                               " --config " + (dir / "config.json").string() +
                                               " --inputs " + in + " --out " + out);
  INFO(both.output);
  CHECK(both.status != 0);
  CHECK_THAT(both.output, finetune_test::HasSubstring("--model"));
  CHECK_THAT(both.output, finetune_test::HasSubstring("--config"));
  // Neither: refused too.
  const auto neither =
      finetune_test::run_command(exe + " forward --inputs " + in + " --out " + out);
  INFO(neither.output);
  CHECK(neither.status != 0);
  CHECK_THAT(neither.output, finetune_test::HasSubstring("--model"));
}
