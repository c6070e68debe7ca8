// The example's RoBERTa against Hugging Face transformers: checkpoints saved by
// `save_pretrained` load unchanged and give HF's outputs
// (golden: tests/reference/ref_roberta_model.py).
#include <torch/torch.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <utility>
#include <vector>

#include "catch.hpp"
#include "golden.hpp"
#include "model/roberta_model.hpp"
#include "test_config.hpp"
#include "test_helpers.hpp"

namespace {

namespace fs = std::filesystem;
using namespace roberta_regression;

fs::path golden_dir(const std::string& name) {
  return fs::path(finetune_test::kGoldenDir) / "roberta_model" / name;
}

torch::Tensor tensor_of(const SafetensorsFile& file, const std::string& name) {
  for (const auto& [key, tensor] : file.tensors)
    if (key == name) return tensor;
  FAIL("no tensor " << name);
  return {};
}

double max_abs_diff(const torch::Tensor& a, const torch::Tensor& b) {
  return (a.to(torch::kCPU, torch::kFloat64) - b.to(torch::kFloat64)).abs().max().item<double>();
}

const std::vector<std::string> kModels = {"tiny_2x32_h2", "tiny_3x40_h4", "tiny_2x36_h3"};
constexpr double kTolerance = 1e-5;

std::vector<torch::Device> devices() {
  std::vector<torch::Device> d{torch::kCPU};
  if (torch::cuda::is_available()) d.emplace_back(torch::kCUDA);
  return d;
}

/// The backends of the linear layers that this LibTorch has (model/dense.hpp).
std::vector<DenseBackend> dense_backends() {
  std::vector<DenseBackend> b{DenseBackend::aten};
  if (roberta_regression::detail::onednn_linear_op()) b.push_back(DenseBackend::onednn);
  return b;
}

/// Restores the process's backend when a test case that set one ends.
struct DenseBackendRestore {
  DenseBackend was = dense_backend();
  ~DenseBackendRestore() { set_dense_backend(was); }
};

}  // namespace

TEST_CASE("RobertaModel gives transformers' outputs on its saved checkpoints", "[roberta][model]") {
  DenseBackendRestore restore;
  for (const auto backend : dense_backends())
    for (const auto& name : kModels) {
      for (const auto& device : devices()) {
        set_dense_backend(backend);
        INFO(name << " on " << device << ", linear layers by " << to_string(backend));
        const auto dir = golden_dir(name);
        const RobertaConfig config = load_config_dir(dir.string());
        RobertaModel model(config);
        const LoadReport report =
            load_safetensors_weights(*model, (dir / "model.safetensors").string());
        CHECK(report.missing.empty());
        CHECK(report.unexpected.empty());
        CHECK(report.loaded.size() == model->parameters().size());
        model->to(device);
        model->eval();
        const auto inputs = read_safetensors((dir / "inputs.safetensors").string());
        const auto expected = read_safetensors((dir / "expected.safetensors").string());
        torch::NoGradGuard no_grad;
        const auto out = model->forward(tensor_of(inputs, "input_ids").to(device),
                                        tensor_of(inputs, "attention_mask").to(device));
        const double hidden_diff =
            max_abs_diff(out.last_hidden_state, tensor_of(expected, "last_hidden_state"));
        const double pooler_diff =
            max_abs_diff(out.pooler_output, tensor_of(expected, "pooler_output"));
        WARN(name << " on " << device << " (" << to_string(backend)
                  << "): max |diff| last_hidden_state " << hidden_diff << ", pooler_output "
                  << pooler_diff);
        CHECK(hidden_diff < kTolerance);
        CHECK(pooler_diff < kTolerance);
      }
    }
}

TEST_CASE("parameter names are Hugging Face's state-dict keys", "[roberta][model]") {
  for (const auto& name : kModels) {
    const auto dir = golden_dir(name);
    RobertaModel model(load_config_dir(dir.string()));
    std::vector<std::string> ours, theirs;
    for (const auto& p : model->named_parameters()) ours.push_back(p.key());
    for (const auto& entry : read_safetensors((dir / "model.safetensors").string()).tensors)
      theirs.push_back(entry.first);
    std::sort(ours.begin(), ours.end());
    std::sort(theirs.begin(), theirs.end());
    CHECK(ours == theirs);
  }
}

TEST_CASE("a RobertaForMaskedLM checkpoint loads HF's way", "[roberta][model]") {
  const auto dir = golden_dir("mlm_2x32_h2");
  const auto weights = (dir / "model.safetensors").string();
  const RobertaConfig config = load_config_dir(dir.string());
  const auto inputs = read_safetensors((dir / "inputs.safetensors").string());
  const auto ids = tensor_of(inputs, "input_ids"), mask = tensor_of(inputs, "attention_mask");
  torch::NoGradGuard no_grad;

  SECTION("into RobertaForMaskedLM: same logits, tied decoder") {
    RobertaForMaskedLM mlm(config);
    const auto report = load_safetensors_weights(*mlm, weights);
    CHECK(report.missing.empty());
    CHECK(report.unexpected.empty());
    mlm->eval();
    const auto expected = read_safetensors((dir / "expected.safetensors").string());
    CHECK(max_abs_diff(mlm->forward(ids, mask), tensor_of(expected, "logits")) < kTolerance);
  }
  SECTION("into RobertaModel: the roberta. prefix stripped, lm_head unexpected, pooler missing") {
    RobertaModel model(config);
    const auto report = load_safetensors_weights(*model, weights);
    CHECK(report.missing == std::vector<std::string>{"pooler.dense.weight", "pooler.dense.bias"});
    CHECK(report.unexpected.size() == 5);  // lm_head.{bias, dense.*, layer_norm.*}
    for (const auto& key : report.unexpected) CHECK(key.rfind("lm_head.", 0) == 0);
    CHECK_THAT(report.summary(), finetune_test::HasSubstring("pooler.dense.weight"));
  }
}

TEST_CASE("RobertaRegressor is the notebook's head on the pooler output", "[roberta][model]") {
  // tests/reference/ref_roberta_regressor.py: the article's MyModel (HF's
  // RobertaModel + nn.Linear(hidden, 1) on pooler_output) on given weights.
  const auto dir = golden_dir("regressor_2x24_h3");
  const RobertaConfig config = load_config_dir(dir.string());
  RobertaRegressor regressor(config);
  const auto report = load_safetensors_weights(*regressor, (dir / "model.safetensors").string());
  CHECK(report.missing.empty());
  CHECK(report.unexpected.empty());
  CHECK(report.loaded.size() == regressor->parameters().size());
  regressor->eval();
  const auto inputs = read_safetensors((dir / "inputs.safetensors").string());
  const auto expected =
      tensor_of(read_safetensors((dir / "expected.safetensors").string()), "predictions");
  torch::NoGradGuard no_grad;
  const auto predictions =
      regressor->forward(tensor_of(inputs, "input_ids"), tensor_of(inputs, "attention_mask"));
  REQUIRE(predictions.sizes() == expected.sizes());
  CHECK(max_abs_diff(predictions, expected) < kTolerance);
  // Exposed for the techniques: the layer stack and the pooler.
  CHECK(regressor->roberta->layers()->size() == 2);
  CHECK(regressor->roberta->pooler_dense());
}

TEST_CASE("RobertaRegressor takes a RobertaModel checkpoint under roberta.", "[roberta][model]") {
  const auto dir = golden_dir("tiny_2x32_h2");
  RobertaRegressor regressor(load_config_dir(dir.string()));
  const auto report = load_safetensors_weights(*regressor, (dir / "model.safetensors").string());
  CHECK(report.missing == std::vector<std::string>{"regressor.weight", "regressor.bias"});
  CHECK(report.unexpected.empty());
  // The encoder's weights are the checkpoint's, under roberta.
  const auto file = read_safetensors((dir / "model.safetensors").string());
  for (const auto& p : regressor->roberta->named_parameters()) {
    INFO(p.key());
    CHECK(torch::equal(p.value(), tensor_of(file, p.key())));
  }
}

TEST_CASE("save_pretrained round-trips, also through Hugging Face", "[roberta][model]") {
  const auto dir = golden_dir("tiny_3x40_h4");
  const RobertaConfig config = load_config_dir(dir.string());
  RobertaModel model(config);
  load_safetensors_weights(*model, (dir / "model.safetensors").string());
  model->eval();
  finetune_test::TempDir tmp;
  const auto saved = fs::path(tmp.path) / "saved";
  save_pretrained(*model, config, saved.string());

  RobertaModel reloaded(load_config_dir(saved.string()));
  const auto report = load_safetensors_weights(*reloaded, (saved / "model.safetensors").string());
  CHECK(report.missing.empty());
  reloaded->eval();
  const auto inputs = read_safetensors((dir / "inputs.safetensors").string());
  const auto ids = tensor_of(inputs, "input_ids"), mask = tensor_of(inputs, "attention_mask");
  torch::NoGradGuard no_grad;
  CHECK(torch::equal(model->forward(ids, mask).last_hidden_state,
                     reloaded->forward(ids, mask).last_hidden_state));

  // `make test` always has the venv: without it this check fails, never passes unseen.
  {
    INFO("FINETUNE_PYTHON (the venv's Python with transformers) is not set: run scripts/setup.sh");
    REQUIRE_FALSE(std::string(finetune_test::kPython).empty());
  }
  const std::string command =
      std::string(finetune_test::kPython) + " " + finetune_test::kSourceDir +
      "/tests/reference/check_roberta_save.py " + saved.string() + " " +
      (dir / "inputs.safetensors").string() + " " + (dir / "expected.safetensors").string();
  CHECK(std::system(command.c_str()) == 0);
}

TEST_CASE("oneDNN's linear layers are ATen's up to fp32 rounding, gradients included",
          "[roberta][model][onednn]") {
  if (!roberta_regression::detail::onednn_linear_op()) {
    finetune_test::skip(roberta_regression::detail::onednn_missing());
    return;
  }
  DenseBackendRestore restore;
  torch::manual_seed(21);
  const auto w0 = torch::randn({48, 40}), b0 = torch::randn({48});
  // A [B, T, in] input, a transposed (strided) one, and no bias.
  const std::vector<std::pair<torch::Tensor, bool>> cases = {{torch::randn({3, 7, 40}), true},
                                                             {torch::randn({40, 9}).t(), true},
                                                             {torch::randn({5, 40}), false}};
  for (const auto& [x0, with_bias] : cases) {
    INFO("input " << x0.sizes() << (x0.is_contiguous() ? "" : ", strided")
                  << (with_bias ? "" : ", no bias"));
    std::vector<torch::Tensor> out, grads;
    for (const auto backend : {DenseBackend::aten, DenseBackend::onednn}) {
      set_dense_backend(backend);
      const auto x = x0.clone().requires_grad_(), w = w0.clone().requires_grad_(),
                 b = with_bias ? b0.clone().requires_grad_() : torch::Tensor();
      const auto y = dense_linear(x, w, b);
      // A weighted sum, so that every output element's gradient differs.
      (y * torch::linspace(-1, 1, y.numel()).view(y.sizes())).sum().backward();
      out.push_back(y.detach());
      grads.push_back(x.grad());
      grads.push_back(w.grad());
      grads.push_back(with_bias ? b.grad() : torch::zeros({1}));
    }
    CHECK(out[0].sizes() == out[1].sizes());
    CHECK(torch::allclose(out[1], out[0], 1e-5, 1e-5));
    for (int i = 0; i < 3; ++i) {
      INFO("gradient " << i << " (x, w, b)");
      CHECK(torch::allclose(grads[3 + i], grads[i], 1e-5, 1e-5));
    }
  }
  // Under autocast, and for other dtypes, ATen's linear runs (autocast casts it).
  set_dense_backend(DenseBackend::onednn);
  const auto x16 = torch::randn({4, 40}).to(torch::kBFloat16);
  CHECK(dense_linear(x16, w0.to(torch::kBFloat16), b0.to(torch::kBFloat16)).scalar_type() ==
        torch::kBFloat16);
}

TEST_CASE("FINETUNE_DENSE_BACKEND chooses the linear layers' library, or names what is wrong",
          "[roberta][model]") {
  const char* was = std::getenv("FINETUNE_DENSE_BACKEND");
  const std::string saved = was ? was : "";
  ::setenv("FINETUNE_DENSE_BACKEND", "aten", 1);
  CHECK(roberta_regression::detail::choose_dense_backend() == DenseBackend::aten);
  ::setenv("FINETUNE_DENSE_BACKEND", "mkl", 1);
  CHECK_THROWS_WITH(roberta_regression::detail::choose_dense_backend(),
                    "FINETUNE_DENSE_BACKEND='mkl': expected aten, onednn or auto");
  ::setenv("FINETUNE_DENSE_BACKEND", "onednn", 1);
  if (roberta_regression::detail::onednn_linear_op())
    CHECK(roberta_regression::detail::choose_dense_backend() == DenseBackend::onednn);
  else
    CHECK_THROWS_AS(roberta_regression::detail::choose_dense_backend(), std::invalid_argument);
  if (was)
    ::setenv("FINETUNE_DENSE_BACKEND", saved.c_str(), 1);
  else
    ::unsetenv("FINETUNE_DENSE_BACKEND");
  // auto: oneDNN exactly where MKL holds a non-Intel AVX-512 CPU back.
  const bool expect_onednn = roberta_regression::detail::cpu_vendor() != "GenuineIntel" &&
                             finetune::compat::aten_cpu_capability().rfind("AVX512", 0) == 0 &&
                             roberta_regression::detail::onednn_linear_op();
  WARN("CPU vendor '" << roberta_regression::detail::cpu_vendor() << "', ATen capability '"
                      << finetune::compat::aten_cpu_capability() << "': linear layers by "
                      << (expect_onednn ? "oneDNN" : "ATen"));
  if (!was)
    CHECK((roberta_regression::detail::choose_dense_backend() == DenseBackend::onednn) ==
          expect_onednn);
}

TEST_CASE("dropout is active in training mode only", "[roberta][model]") {
  const auto dir = golden_dir("tiny_2x32_h2");
  RobertaModel model(load_config_dir(dir.string()));
  const auto inputs = read_safetensors((dir / "inputs.safetensors").string());
  const auto ids = tensor_of(inputs, "input_ids"), mask = tensor_of(inputs, "attention_mask");
  torch::NoGradGuard no_grad;
  model->train();
  CHECK_FALSE(torch::equal(model->forward(ids, mask).last_hidden_state,
                           model->forward(ids, mask).last_hidden_state));
  model->eval();
  CHECK(torch::equal(model->forward(ids, mask).last_hidden_state,
                     model->forward(ids, mask).last_hidden_state));
}

TEST_CASE("the model's dropout keeps 1 - p of the elements, scaled as at::dropout scales them",
          "[roberta][model]") {
  torch::manual_seed(11);
  const double p = 0.1;
  const int64_t n = 1 << 20;
  const auto x = torch::rand({n}) + 0.5;  // no zeros: a zero output is a dropped element
  // at::dropout is the oracle for the scale: its kept elements are x * s.
  const auto reference = torch::dropout(x, p, true);
  const auto scale = (reference / x).max();
  for (const auto& device : devices()) {
    INFO("on " << device);
    const auto xd = x.to(device).requires_grad_();
    const auto y = roberta_regression::detail::dropout(xd, p, true);
    const auto kept = y.ne(0);
    // The kept fraction is Binomial(n, 1 - p) / n: 6 standard deviations.
    const double sigma = std::sqrt(p * (1 - p) / static_cast<double>(n));
    CHECK(std::abs(kept.to(torch::kFloat64).mean().item<double>() - (1 - p)) < 6 * sigma);
    CHECK(torch::allclose((y.masked_select(kept) / xd.masked_select(kept)).cpu(),
                          scale.expand({kept.sum().item<int64_t>()})));
    // The gradient is the same mask and scale.
    y.sum().backward();
    CHECK(torch::allclose(xd.grad(), y.detach() / xd.detach()));
    // Two draws differ; evaluation mode is the identity.
    CHECK_FALSE(torch::equal(y, roberta_regression::detail::dropout(xd, p, true)));
    CHECK(roberta_regression::detail::dropout(xd, p, false).is_same(xd));
  }
}

TEST_CASE("the model's dropout keeps 1 - p in bfloat16 too, and stays bfloat16",
          "[roberta][model]") {
  // A bfloat16 uniform draw has 8 random bits, so comparing it with p would
  // keep 1 - 26/256 = 0.898 for p = 0.1: 11.6 standard deviations off at this n.
  // The mask is drawn from 16-bit integers whatever x's dtype.
  torch::manual_seed(13);
  const double p = 0.1;
  const int64_t n = 1 << 22;
  const auto x = (torch::rand({n}) + 0.5).to(torch::kBFloat16);
  const auto y = roberta_regression::detail::dropout(x, p, true);
  CHECK(y.scalar_type() == torch::kBFloat16);
  const double sigma = std::sqrt(p * (1 - p) / static_cast<double>(n));
  CHECK(std::abs(y.ne(0).to(torch::kFloat64).mean().item<double>() - (1 - p)) < 4 * sigma);
}

TEST_CASE("the attention math path is SDPA's, dropout included", "[roberta][model]") {
  torch::manual_seed(12);
  const auto q = torch::randn({2, 3, 7, 8}), k = torch::randn({2, 3, 7, 8}),
             v = torch::randn({2, 3, 7, 8});
  auto keep = torch::ones({2, 1, 1, 7}, torch::kBool);
  keep.index_put_({1, 0, 0, torch::indexing::Slice(4)}, false);  // padding in sequence 1
  const auto no_dropout = roberta_regression::detail::attention(q, k, v, keep, 0.0);
  if (finetune::compat::kHasScaledDotProductAttention) {
    CHECK(torch::allclose(no_dropout,
                          finetune::compat::scaled_dot_product_attention(q, k, v, keep, 0.0), 1e-5,
                          1e-6));
  }
  // Dropout on the attention probabilities keeps the output's expectation:
  // the mean of 4,000 draws is within 5% of the output without dropout.
  auto sum = torch::zeros_like(no_dropout);
  const int draws = 4000;
  for (int i = 0; i < draws; ++i) sum += roberta_regression::detail::attention(q, k, v, keep, 0.1);
  const double spread = (sum / draws - no_dropout).abs().max().item<double>();
  WARN("max |mean of draws - no dropout| " << spread);
  CHECK(spread < 0.05 * no_dropout.abs().max().item<double>());
}

TEST_CASE("bad configs, weights and inputs are clear errors", "[roberta][model]") {
  finetune_test::TempDir tmp;
  const auto write = [&](const std::string& name, const std::string& text) {
    const auto path = (fs::path(tmp.path) / name).string();
    std::ofstream(path) << text;
    return path;
  };
  using finetune_test::invalid_argument_message;
  CHECK_THAT(
      invalid_argument_message([&] { RobertaConfig::from_json_file(write("a.json", "{oops")); }),
      finetune_test::HasSubstring("a.json: not valid JSON"));
  // A number beyond double's range (found by fuzz_roberta_config,
  // tests/fuzz/corpus/roberta_config/crash-number-overflow) is a clear error
  // too, not nlohmann's out_of_range.
  CHECK_THAT(invalid_argument_message([&] {
               RobertaConfig::from_json_file(write("e.json", R"({"layer_norm_eps": 1e999})"));
             }),
             finetune_test::HasSubstring("e.json: not valid JSON"));
  CHECK_THAT(invalid_argument_message([&] {
               RobertaConfig::from_json_file(write("b.json", R"({"hidden_size": "big"})"));
             }),
             finetune_test::HasSubstring("b.json: key \"hidden_size\" must be an integer"));
  CHECK_THAT(invalid_argument_message([&] {
               RobertaConfig::from_json_file(
                   write("c.json", R"({"hidden_size": 30, "num_attention_heads": 4})"));
             }),
             finetune_test::HasSubstring("not a multiple"));
  CHECK_THAT(invalid_argument_message([&] {
               RobertaConfig::from_json_file(write("d.json", R"({"hidden_act": "relu"})"));
             }),
             finetune_test::HasSubstring("hidden_act"));
  CHECK_THAT(
      invalid_argument_message([&] { RobertaConfig::from_json_file(write("none/x.json", "")); }),
      finetune_test::HasSubstring("cannot open"));

  // Weights whose shapes do not match the config: the key and both shapes.
  RobertaConfig other = load_config_dir(golden_dir("tiny_2x32_h2").string());
  other.intermediate_size = 65;
  RobertaModel model(other);
  const auto weights = (golden_dir("tiny_2x32_h2") / "model.safetensors").string();
  const auto message = invalid_argument_message([&] { load_safetensors_weights(*model, weights); });
  CHECK_THAT(message, finetune_test::HasSubstring(
                          "model.safetensors: tensor \"encoder.layer.0.intermediate.dense.weight\" "
                          "has shape [64, 32]"));
  CHECK_THAT(message, finetune_test::HasSubstring("[65, 32]"));

  // Inputs: rank, dtype, mask shape, too many tokens.
  RobertaModel good(load_config_dir(golden_dir("tiny_2x32_h2").string()));
  const auto ids = torch::ones({2, 5}, torch::kInt64);
  CHECK_THAT(invalid_argument_message([&] { good->forward(ids.view({-1}), ids.view({-1})); }),
             finetune_test::HasSubstring("input_ids must be int64 [batch, tokens]"));
  CHECK_THAT(invalid_argument_message([&] { good->forward(ids.to(torch::kInt32), ids); }),
             finetune_test::HasSubstring("input_ids must be int64"));
  CHECK_THAT(invalid_argument_message([&] { good->forward(ids, ids.slice(1, 0, 4)); }),
             finetune_test::HasSubstring("attention_mask must have input_ids' shape"));
  const auto long_ids = torch::ones({1, 39}, torch::kInt64);
  CHECK_THAT(invalid_argument_message([&] { good->forward(long_ids, long_ids); }),
             finetune_test::HasSubstring("exceed max_position_embeddings"));
}

TEST_CASE("the forward subcommand writes HF's outputs", "[roberta][model][cli]") {
  const std::string exe = finetune_test::kRobertaExe;
  {
    INFO("the example's binary '" << exe << "' is missing (it is built with this test)");
    REQUIRE((!exe.empty() && fs::exists(exe)));
  }
  const auto dir = golden_dir("tiny_3x40_h4");
  finetune_test::TempDir tmp;
  const auto out = fs::path(tmp.path) / "out.safetensors";
  const std::string command =
      exe + " --threads 1 forward --config " + (dir / "config.json").string() + " --weights " +
      (dir / "model.safetensors").string() + " --inputs " + (dir / "inputs.safetensors").string() +
      " --out " + out.string() + " > /dev/null 2>&1";
  REQUIRE(std::system(command.c_str()) == 0);
  const auto got = read_safetensors(out.string());
  const auto expected = read_safetensors((dir / "expected.safetensors").string());
  CHECK(max_abs_diff(tensor_of(got, "last_hidden_state"),
                     tensor_of(expected, "last_hidden_state")) < kTolerance);
  CHECK(max_abs_diff(tensor_of(got, "pooler_output"), tensor_of(expected, "pooler_output")) <
        kTolerance);

  // Inputs without attention_mask: non-zero exit, and the message says so.
  const auto bad = fs::path(tmp.path) / "bad.safetensors";
  write_safetensors(bad.string(), {{"input_ids", torch::ones({1, 4}, torch::kInt64)}});
  const auto r =
      finetune_test::run_command(exe + " forward --config " + (dir / "config.json").string() +
                                 " --weights " + (dir / "model.safetensors").string() +
                                 " --inputs " + bad.string() + " --out " + out.string());
  INFO(r.output);
  CHECK(r.status != 0);
  CHECK_THAT(r.output, finetune_test::HasSubstring(
                           bad.string() + ": needs tensors \"input_ids\" and \"attention_mask\""));
}
