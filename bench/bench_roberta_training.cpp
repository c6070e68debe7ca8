// Figures 6 and 7: one training step of the example's RoBERTa regressor.
//   6  forward + backward + AdamW (finetune::FusedAdamW, as the example uses;
//      PyTorch: torch.optim.AdamW's default) + schedule + SWA update, at the demo model's
//      shape and at roberta-base's shape (batch 8 x 256 tokens); the PyTorch
//      column runs the same step with transformers' RobertaModel.
//   7  the five techniques' share of a step: the plain step (one AdamW group,
//      nothing else) beside the full step, and the techniques' own calls
//      (schedule step, SWA update, evaluator hook) timed alone on the same model.
//   9  the plain step in bf16 under LibTorch's CPU autocast (the example's
//      --precision bf16: fp32 weights, bf16 matrix products), beside PyTorch's
//      torch.autocast("cpu", torch.bfloat16) step; FLOP/s against
//      BM_MatmulPeakBf16 (bench_bandwidth.cpp).
//   8  the fp32 product ceiling through oneDNN (BM_MatmulPeakOneDnn), beside
//      at::mm's (bench_bandwidth.cpp): report.py takes the better of the two.
//  11  dropout in training mode over one attention-probability tensor of
//      roberta-base at batch 8 x 256 ([8, 12, 256, 256], p = 0.1): the
//      example's detail::dropout (16-bit draws) beside torch.nn.functional.dropout
//      (bernoulli_ masks). Twelve of these per forward pass.
#include <benchmark/benchmark.h>
#include <torch/torch.h>
#include <finetune/finetune.hpp>

#include <filesystem>
#include <memory>

#include "bench_common.hpp"
#include "model/roberta_model.hpp"
#include "roberta_shapes.hpp"

namespace {

using finetune_bench::base_shape;
using finetune_bench::demo_shape;
using finetune_bench::Shape;
using finetune_bench::training_flops;
using roberta_regression::RobertaRegressor;

// Which library runs the model's fp32 linear layers in this process
// (model/dense.hpp): in the JSON's context, and in report.py's table.
const bool kDenseBackendInContext = [] {
  benchmark::AddCustomContext("dense_backend",
                              roberta_regression::to_string(roberta_regression::dense_backend()));
  return true;
}();

Shape shape_of(const benchmark::State& state) {
  return state.range(0) == 0 ? demo_shape() : base_shape();
}

// Everything a training step touches, built once per benchmark.
struct Step {
  explicit Step(const Shape& s, bool techniques) : model(s.config) {
    torch::manual_seed(0);
    ids = torch::randint(5, s.config.vocab_size, {s.batch, s.tokens}, torch::kInt64);
    mask = torch::ones({s.batch, s.tokens}, torch::kInt64);
    target = torch::randn({s.batch});
    model->train();
    if (techniques) {
      finetune::LayerwiseLRGroups<torch::optim::AdamWOptions> llrd(
          *model, finetune::LayerwiseLROptions::article_layerwise());
      optimizer = std::make_unique<finetune::FusedAdamW>(llrd.param_groups(),
                                                         torch::optim::AdamWOptions(3.5e-6));
      llrd.apply_to(*optimizer);
      schedule = std::make_unique<finetune::WarmupLinearSchedule>(
          *optimizer, finetune::WarmupLinearScheduleOptions(50, 1 << 30));
      swa = std::make_unique<finetune::SWAWrapper>(*model);
      swa->update(*model);
    } else {
      optimizer = std::make_unique<finetune::FusedAdamW>(model->parameters(),
                                                         torch::optim::AdamWOptions(1e-5));
    }
  }

  void plain() {
    const auto loss = torch::sqrt(torch::mse_loss(model->forward(ids, mask), target));
    optimizer->zero_grad();
    loss.backward();
    optimizer->step();
  }

  // The forward under autocast, the loss and everything after it in fp32.
  void plain_bf16() {
    torch::Tensor prediction;
    {
      finetune::compat::AutocastGuard autocast(torch::kCPU, torch::kBFloat16);
      prediction = model->forward(ids, mask);
    }
    const auto loss = torch::sqrt(torch::mse_loss(prediction.to(torch::kFloat), target));
    optimizer->zero_grad();
    loss.backward();
    optimizer->step();
  }

  void full() {
    plain();
    schedule->step();
    swa->update(*model);
  }

  RobertaRegressor model;
  torch::Tensor ids, mask, target;
  std::unique_ptr<torch::optim::AdamW> optimizer;
  std::unique_ptr<finetune::WarmupLinearSchedule> schedule;
  std::unique_ptr<finetune::SWAWrapper> swa;
};

void BM_TrainingStepPlain(benchmark::State& state) {
  Step step(shape_of(state), false);
  step.plain();  // AdamW allocates its state on the first step
  for (auto _ : state) step.plain();
  state.counters["flop_per_step"] = training_flops(shape_of(state));
}

void BM_TrainingStepPlainBf16(benchmark::State& state) {
  try {
    finetune::check_autocast_supported(torch::kCPU, torch::kBFloat16);
  } catch (const std::invalid_argument& e) {
    state.SkipWithError(e.what());
    return;
  }
  Step step(shape_of(state), false);
  step.plain_bf16();
  for (auto _ : state) step.plain_bf16();
  state.counters["flop_per_step"] = training_flops(shape_of(state));
}

void BM_TrainingStepFull(benchmark::State& state) {
  Step step(shape_of(state), true);
  step.full();
  for (auto _ : state) step.full();
  state.counters["flop_per_step"] = training_flops(shape_of(state));
}

// The techniques' own per-step calls on the same model, without the step:
// one schedule step, one SWA update and one evaluator hook that does not
// evaluate (the batches between evaluations).
void BM_TechniquesPerStep(benchmark::State& state) {
  Step step(shape_of(state), true);
  const auto dir = std::filesystem::temp_directory_path() / "finetune_bench_evaluator";
  std::filesystem::create_directories(dir);
  finetune::PeriodicEvaluator evaluator(
      finetune::PeriodicEvaluatorOptions(dir.string()).eval_every(1 << 30), *step.model);
  int64_t i = 1;
  for (auto _ : state) {
    step.schedule->step();
    step.swa->update(*step.model);
    benchmark::DoNotOptimize(evaluator.step(2, i++, 1 << 30, [] { return 0.0; }));
  }
  std::filesystem::remove_all(dir);
}

// Figure 8's fp32 ceiling through oneDNN's linear (model/dense.hpp), beside
// BM_MatmulPeak's at::mm (bench_bandwidth.cpp): where MKL runs below the CPU's
// instruction set (an AMD CPU with AVX-512), the best product rate of this
// LibTorch is oneDNN's. n x n times n x n, 2 n³ operations per product.
void BM_MatmulPeakOneDnn(benchmark::State& state) {
  if (!roberta_regression::detail::onednn_linear_op()) {
    state.SkipWithError(roberta_regression::detail::onednn_missing().c_str());
    return;
  }
  const int64_t n = state.range(0);
  const auto a = torch::rand({n, n}), b = torch::rand({n, n});
  roberta_regression::detail::onednn_linear(a, b, {});  // warm-up
  for (auto _ : state) {
    auto c = roberta_regression::detail::onednn_linear(a, b, {});
    benchmark::DoNotOptimize(c.data_ptr());
  }
  state.counters["flop_per_s"] = benchmark::Counter(2.0 * double(n) * double(n) * double(n),
                                                    benchmark::Counter::kIsIterationInvariantRate);
}

void BM_DropoutAttention(benchmark::State& state) {
  torch::manual_seed(0);
  const auto x = torch::rand({8, 12, 256, 256});
  torch::Tensor y;
  for (auto _ : state) {
    y = roberta_regression::detail::dropout(x, 0.1, true);
    benchmark::DoNotOptimize(y.data_ptr());
  }
  state.SetBytesProcessed(state.iterations() * x.numel() * 4 * 2);
}

}  // namespace

// Arg 0: the demo's shape; arg 1: roberta-base at batch 8 x 256.
BENCHMARK(BM_TrainingStepPlain)->Arg(0)->Arg(1)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_TrainingStepPlainBf16)->Arg(0)->Arg(1)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_TrainingStepFull)->Arg(0)->Arg(1)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_TechniquesPerStep)->Arg(0)->Arg(1)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_DropoutAttention)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_MatmulPeakOneDnn)->Arg(2048)->Arg(4096)->Unit(benchmark::kMillisecond)->UseRealTime();
