// The example's --precision fp32|bf16|fp16 (trainer.hpp, cmd_train.hpp):
// bfloat16 autocast on the CPU trains and its first loss is the float32
// run's within bfloat16's rounding; a low-precision run stopped and resumed
// ends where the uninterrupted one ends (fp16: with its GradScaler, and a
// skipped step that moves nothing); bad combinations are refused up front
// with the flag named. What this LibTorch cannot run (fp16 on the CPU in
// Debian's 1.13) is skipped visibly, after checking the refusal.
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include "catch.hpp"
#include "roberta_paths.hpp"
#include "roberta_runs.hpp"
#include "test_config.hpp"
#include "test_helpers.hpp"
#include "training/trainer.hpp"

using namespace roberta_regression;
namespace fs = std::filesystem;
using finetune_test::contains;
using finetune_test::TempDir;

namespace {

std::string demo_model() { return std::string(kAssetsDir) + "/demo-model"; }

/// Whether this LibTorch runs CPU autocast in `dtype` (else: why not).
std::string cpu_autocast_refusal(torch::Dtype dtype) {
  try {
    finetune::check_autocast_supported(c10::DeviceType::CPU, dtype);
  } catch (const std::invalid_argument& e) {
    return e.what();
  }
  return "";
}

/// The demo model on 80 CSV rows (2 folds, fold 0: 40 training rows):
/// batches of 4, 24 tokens, 3 epochs = 30 steps.
struct Setup {
  TempDir tmp;
  TrainSettings s;
  ModelFiles files;
  EncodedDataset data;
  Setup() {
    s.data = finetune_test::write_passages_csv(tmp.file("train.csv"), 80);
    s.model_dir = demo_model();
    s.folds = 2;
    s.fold = 0;
    s.epochs = 3;
    s.batch_size = 4;
    s.max_length = 24;
    s.lr_scale = 100.0;
    s.llrd = finetune::LLRDMode::layerwise;
    s.warmup_steps = 2;
    s.eval_every = 3;
    s.eval_every_from_epoch = 0;
    s.out_dir = tmp.file("run");
    files = load_model_files(s.model_dir, s.max_length);
    data = load_dataset(s, *files.tokenizer);
  }
};

FoldCallbacks silent() {
  FoldCallbacks c;
  c.log = [](const std::string&) {};
  return c;
}

/// What a run ends with: the result and every parameter after the last step taken.
struct Run {
  FoldResult result;
  std::vector<torch::Tensor> weights;
  bool float32_weights = true;
};

/// Trains fold 0; `stop_after` > 0: Ctrl-C after that many steps taken (the
/// state is saved, as the CLI's handler makes it). `inject_inf_at`: attempts
/// whose gradients get an inf (fp16: those steps are skipped).
Run train(const TrainSettings& s, const Setup& setup, int64_t stop_after = 0,
          std::vector<int64_t> inject_inf_at = {}) {
  Run run;
  FoldCallbacks c = silent();
  c.after_step = [&](int64_t step, bool, const torch::nn::Module& m) {
    run.weights.clear();
    for (const auto& p : m.parameters()) {
      run.weights.push_back(p.detach().clone());
      run.float32_weights = run.float32_weights && p.scalar_type() == torch::kFloat32;
    }
    if (stop_after > 0 && step == stop_after) interrupt_requested() = true;
  };
  c.before_step = [&](int64_t attempt, torch::nn::Module& m) {
    for (int64_t a : inject_inf_at)
      if (a == attempt) {
        torch::NoGradGuard no_grad;
        m.parameters().front().mutable_grad().view(-1)[0] = std::numeric_limits<float>::infinity();
      }
  };
  interrupt_requested() = false;
  run.result = train_fold(s, setup.files, setup.data, 0, c);
  interrupt_requested() = false;
  return run;
}

double largest_difference(const std::vector<torch::Tensor>& a,
                          const std::vector<torch::Tensor>& b) {
  REQUIRE(a.size() == b.size());
  REQUIRE(!a.empty());
  double worst = 0.0;
  for (size_t i = 0; i < a.size(); ++i)
    worst = std::max(worst, (a[i] - b[i]).abs().max().item<double>());
  return worst;
}

/// Runs uninterrupted, then stopped after `stop_after` steps and resumed:
/// the two must end with the same bits, lr log, curve and step counts.
void check_resume(TrainSettings s, const Setup& setup, const std::vector<int64_t>& inject) {
  s.out_dir = setup.tmp.file("whole_" + s.precision);
  const Run whole = train(s, setup, 0, inject);
  s.out_dir = setup.tmp.file("resumed_" + s.precision);
  s.save_state_every = 4;
  const Run first = train(s, setup, /*stop_after=*/7, inject);
  REQUIRE(first.result.interrupted);
  REQUIRE(fs::exists(state_path(s, 0)));
  s.resume = true;
  const Run rest = train(s, setup, 0, inject);
  CHECK(rest.result.resumed);
  CHECK(rest.result.steps == whole.result.steps);
  CHECK(rest.result.skipped_steps == whole.result.skipped_steps);
  CHECK(rest.result.lrs == whole.result.lrs);
  REQUIRE(rest.result.curve.size() == whole.result.curve.size());
  for (size_t i = 0; i < whole.result.curve.size(); ++i) {
    CHECK(rest.result.curve[i].step == whole.result.curve[i].step);
    CHECK(rest.result.curve[i].val_rmse == whole.result.curve[i].val_rmse);
  }
  CHECK(largest_difference(rest.weights, whole.weights) == 0.0);
}

}  // namespace

TEST_CASE("--precision bf16 trains on the CPU, its first loss within bfloat16's rounding of fp32's",
          "[roberta][precision]") {
  const std::string refusal = cpu_autocast_refusal(torch::kBFloat16);
  Setup setup;
  TrainSettings s = setup.s;
  s.dropout = 0.0;  // the first loss of both runs from the same weights and rows
  s.precision = "bf16";
  if (!refusal.empty()) {
    const auto message = finetune_test::invalid_argument_message(
        [&] { train_fold(s, setup.files, setup.data, 0, silent()); });
    CHECK(contains(message, "--precision bf16 --device cpu"));
    finetune_test::skip("bfloat16 autocast on the CPU: " + refusal);
    return;
  }
  auto traced = [&](const std::string& precision) {
    TrainSettings t = s;
    t.precision = precision;
    t.out_dir = setup.tmp.file("run_" + precision);
    t.trace_dir = setup.tmp.file("trace_" + precision);
    const Run run = train(t, setup);
    const auto trace =
        nlohmann::json::parse(finetune_test::read_file(t.trace_dir + "/fold0/trace.json"));
    return std::make_pair(run, trace["losses"].get<std::vector<double>>());
  };
  const auto [fp32, fp32_losses] = traced("fp32");
  const auto [bf16, bf16_losses] = traced("bf16");
  REQUIRE(fp32_losses.size() == 30);
  REQUIRE(bf16_losses.size() == 30);
  // The same weights and rows, bfloat16 products (8 significant bits):
  // close, and not the same number (autocast did run).
  INFO("first loss: fp32 " << fp32_losses[0] << ", bf16 " << bf16_losses[0]);
  CHECK(bf16_losses[0] != fp32_losses[0]);
  CHECK(std::abs(bf16_losses[0] - fp32_losses[0]) <= 2e-2 * std::abs(fp32_losses[0]));
  // It learns: the last epoch's losses below the first epoch's, and the
  // master weights stay float32.
  double first = 0.0, last = 0.0;
  for (size_t i = 0; i < 10; ++i) {
    first += bf16_losses[i];
    last += bf16_losses[20 + i];
  }
  CHECK(last < first);
  CHECK(bf16.result.steps == 30);
  CHECK(bf16.result.skipped_steps == 0);
  CHECK(bf16.float32_weights);
  CHECK(std::isfinite(bf16.result.best_rmse));
  CHECK(largest_difference(bf16.weights, fp32.weights) > 0.0);
}

TEST_CASE("a bf16 run stopped and resumed ends bit for bit where the whole run ends",
          "[roberta][precision][resume]") {
  const std::string refusal = cpu_autocast_refusal(torch::kBFloat16);
  if (!refusal.empty()) {
    finetune_test::skip("bfloat16 autocast on the CPU: " + refusal);
    return;
  }
  Setup setup;
  TrainSettings s = setup.s;
  s.precision = "bf16";
  s.swa_lr = 2e-6;
  s.swa_start_epoch = 1;
  s.swa_anneal_steps = 3;
  check_resume(s, setup, {});
}

TEST_CASE("fp16: the GradScaler's skipped steps move nothing and a resumed run ends identically",
          "[roberta][precision][resume]") {
  const std::string refusal = cpu_autocast_refusal(torch::kFloat16);
  Setup setup;
  TrainSettings s = setup.s;
  s.precision = "fp16";
  if (!refusal.empty()) {
    const auto message = finetune_test::invalid_argument_message(
        [&] { train_fold(s, setup.files, setup.data, 0, silent()); });
    CHECK(contains(message, "--precision fp16 --device cpu"));
    CHECK(contains(message, "not supported by this LibTorch"));
    finetune_test::skip("float16 autocast on the CPU: " + refusal);
    return;
  }
  s.swa_lr = 2e-6;
  s.swa_start_epoch = 1;
  s.swa_anneal_steps = 3;
  SECTION("an inf gradient skips its step: no lr row, no schedule step, counted") {
    TrainSettings t = s;
    t.out_dir = setup.tmp.file("skips");
    const Run clean = train(t, setup);
    t.out_dir = setup.tmp.file("skips_injected");
    const Run injected = train(t, setup, 0, {3, 12, 13});
    // 30 attempts each; the injected ones (and any fp16 overflow) skipped.
    CHECK(clean.result.steps + clean.result.skipped_steps == 30);
    CHECK(injected.result.steps + injected.result.skipped_steps == 30);
    CHECK(injected.result.skipped_steps >= 3);
    CHECK(injected.result.lrs.size() == static_cast<size_t>(injected.result.steps));
    CHECK(clean.result.lrs.size() == static_cast<size_t>(clean.result.steps));
    // The schedule moved only on steps taken: step j's rates are the same
    // whichever attempts were skipped, so the shorter lr log is a prefix.
    const auto& shorter = injected.result.lrs.size() <= clean.result.lrs.size()
                              ? injected.result.lrs
                              : clean.result.lrs;
    const auto& longer = &shorter == &injected.result.lrs ? clean.result.lrs : injected.result.lrs;
    REQUIRE(!shorter.empty());
    CHECK(std::equal(shorter.begin(), shorter.end(), longer.begin()));
    CHECK(injected.float32_weights);
  }
  SECTION("stopped and resumed with --resume: the same bits, scale and skips") {
    check_resume(s, setup, {3, 12});
  }
}

TEST_CASE("--precision on the command line: refusals up front, the skip count printed",
          "[roberta][precision][cli]") {
  const std::string exe = finetune_test::kRobertaExe;
  REQUIRE(!exe.empty());
  REQUIRE(fs::exists(exe));
  TempDir tmp;
  const std::string csv = finetune_test::write_passages_csv(tmp.file("train.csv"), 40);
  // The command built piecewise: GCC 12's false -Warray-bounds on long concatenations.
  auto command_line = [&](const std::string& command, const std::string& extra) {
    std::string line = exe;
    line += " --threads 1 ";
    line += command;
    line += " --data ";
    line += finetune_test::quote(csv);
    line += " --model ";
    line += finetune_test::quote(demo_model());
    line += " --folds 2 --fold 0 --epochs 1 --batch-size 8 --max-length 16 ";
    line += extra;
    return line;
  };
  auto run = [&](const std::string& command, const std::string& extra) {
    std::string out = "--out ";
    out += finetune_test::quote(tmp.file(command));
    out += ' ';
    out += extra;
    return finetune_test::run_command(command_line(command, out));
  };
  SECTION("--notebook-exact is the notebook's float32 loop") {
    for (const std::string command : {"train", "table"}) {
      const auto r = run(command, "--precision bf16 --notebook-exact");
      INFO(r.output);
      CHECK(r.status == 1);
      CHECK(contains(r.output,
                     "--notebook-exact runs the notebook's float32 loop: drop "
                     "--precision bf16"));
      CHECK_FALSE(fs::exists(tmp.file(command + "/fold0/best.safetensors")));
    }
  }
  SECTION("an unknown precision") {
    const auto r = run("train", "--precision fp8");
    INFO(r.output);
    CHECK(r.status != 0);
    CHECK(contains(r.output, "--precision"));
    CHECK(contains(r.output, "fp8"));
  }
  SECTION("fp16: refused where this LibTorch has no CPU kernels, else the skips are printed") {
    const auto r = run("train", "--precision fp16");
    INFO(r.output);
    const std::string refusal = cpu_autocast_refusal(torch::kFloat16);
    if (!refusal.empty()) {
      CHECK(r.status == 1);
      CHECK(contains(r.output, "--precision fp16 --device cpu: "));
      CHECK(contains(r.output, "not supported by this LibTorch"));
      CHECK_FALSE(fs::exists(tmp.file("train/fold0/best.safetensors")));
    } else {
      CHECK(r.status == 0);
      CHECK(contains(r.output, "fp16 autocast"));
      CHECK(contains(r.output, "skipped: inf/NaN fp16 gradients)"));
      const auto results =
          nlohmann::json::parse(finetune_test::read_file(tmp.file("train/results.json")));
      CHECK(results["precision"] == "fp16");
      CHECK(results["folds"][0]["skipped_steps"].get<int64_t>() >= 0);
    }
  }
  SECTION("a state saved in fp32 does not resume in bf16") {
    if (!cpu_autocast_refusal(torch::kBFloat16).empty()) {
      finetune_test::skip("bfloat16 autocast on the CPU: " +
                          cpu_autocast_refusal(torch::kBFloat16));
      return;
    }
    auto first = run("train", "--save-state-every 2");
    INFO(first.output);
    REQUIRE(first.status == 0);
    std::string resume = "--precision bf16 --resume ";
    resume += finetune_test::quote(tmp.file("train"));
    const auto r = finetune_test::run_command(command_line("train", resume));
    INFO(r.output);
    CHECK(r.status == 1);
    CHECK(contains(r.output, "precision=bf16"));
  }
}
