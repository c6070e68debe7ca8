// Figures 2-4: the cost of the techniques themselves, on roberta-base's
// parameter set (201 tensors, 124.6M fp32).
//   2  SWAWrapper::update() beside one fused single pass (the bandwidth floor);
//      on CUDA (skipped without a GPU): averages on the device against
//      averages offloaded to the host (pinned copies on a side stream)
//   3  one WarmupLinearSchedule step over 200 param groups
//   4  building the layer-wise LR groups for roberta-base's parameters
//  10  one AdamW step over the same parameters: torch::optim::AdamW against
//      finetune::FusedAdamW (ATen's fused kernel; AdamW's own step on 1.13)
#include <benchmark/benchmark.h>
#include <torch/torch.h>
#include <finetune/finetune.hpp>

#include <chrono>

#include "bench_common.hpp"

namespace {

std::shared_ptr<torch::nn::Module> roberta_base() {
  static auto model = finetune_bench::module_with_parameters(finetune_bench::roberta_base_shapes());
  return model;
}

int64_t numel(const torch::nn::Module& m) {
  int64_t n = 0;
  for (const auto& p : m.parameters()) n += p.numel();
  return n;
}

// Reads p and avg, writes avg: 12 bytes per element.
void set_swa_bytes(benchmark::State& state, int64_t elements) {
  state.SetBytesProcessed(state.iterations() * elements * 3 * static_cast<int64_t>(sizeof(float)));
}

void BM_SWAUpdate(benchmark::State& state) {
  auto model = roberta_base();
  finetune::SWAWrapper swa(*model);
  swa.update(*model);  // the first update copies; the rest average
  for (auto _ : state) swa.update(*model);
  set_swa_bytes(state, numel(*model));
}

// The floor SWAWrapper is measured against: avg += (p - avg) / (n + 1) in one
// pass over all elements of all tensors (each thread takes one contiguous
// slice of the concatenation), nothing else.
void BM_SWAFusedSinglePass(benchmark::State& state) {
  auto model = roberta_base();
  std::vector<torch::Tensor> params = model->parameters(), averages;
  std::vector<int64_t> offsets{0};  // offsets[t]: first element of tensor t
  for (const auto& p : params) {
    averages.push_back(p.detach().clone());
    offsets.push_back(offsets.back() + p.numel());
  }
  int64_t n = 1;
  for (auto _ : state) {
    const float w = 1.0f / static_cast<float>(n + 1);
    finetune_bench::parallel_chunks(offsets.back(), [&](int64_t begin, int64_t end) {
      for (size_t t = 0; t < params.size(); ++t) {
        const int64_t lo = std::max(begin, offsets[t]), hi = std::min(end, offsets[t + 1]);
        if (lo >= hi) continue;
        const float* p = params[t].data_ptr<float>() + (lo - offsets[t]);
        float* a = averages[t].data_ptr<float>() + (lo - offsets[t]);
        for (int64_t i = 0; i < hi - lo; ++i) a[i] += (p[i] - a[i]) * w;
      }
    });
    ++n;
    benchmark::ClobberMemory();
  }
  set_swa_bytes(state, numel(*model));
}

// SWAWrapper::update() of roberta-base's parameters on CUDA, averages on the
// device (range 0) or on the host (range 1), one device synchronisation per
// iteration; update_host_ms: the time update() itself keeps the host (the
// offloaded update returns once its copies are ordered, and averages the
// previous step's copies on the host). Meaningful on CUDA only.
void BM_SWAUpdateCuda(benchmark::State& state) {
  if (!torch::cuda::is_available()) {
    state.SkipWithError("no CUDA device");
    return;
  }
  const bool offload = state.range(0) != 0;
  auto model = finetune_bench::module_with_parameters(finetune_bench::roberta_base_shapes());
  model->to(torch::kCUDA);
  finetune::SWAOptions options;
  if (offload) options.device(torch::kCPU);
  finetune::SWAWrapper swa(*model, options);
  swa.update(*model);  // allocates and copies
  swa.update(*model);
  torch::cuda::synchronize();
  double host_seconds = 0.0;
  for (auto _ : state) {
    const auto start = std::chrono::steady_clock::now();
    swa.update(*model);
    host_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    torch::cuda::synchronize();
  }
  state.counters["update_host_ms"] =
      benchmark::Counter(1e3 * host_seconds / static_cast<double>(state.iterations()));
  set_swa_bytes(state, numel(*model));
}

// One optimizer step over roberta-base's parameters with gradients set:
// torch::optim::AdamW (range 0) or FusedAdamW (range 1). Moves at least
// param, grad, exp_avg and exp_avg_sq in and three of them out: 28 bytes per
// element at the floor.
void BM_AdamWStep(benchmark::State& state) {
  auto model = finetune_bench::module_with_parameters(finetune_bench::roberta_base_shapes());
  for (auto& p : model->parameters()) p.mutable_grad() = torch::randn_like(p) * 1e-3;
  const auto options = torch::optim::AdamWOptions(1e-5).weight_decay(0.01);
  std::unique_ptr<torch::optim::AdamW> optimizer;
  if (state.range(0) == 0) {
    optimizer = std::make_unique<torch::optim::AdamW>(model->parameters(), options);
  } else {
    optimizer = std::make_unique<finetune::FusedAdamW>(model->parameters(), options);
  }
  optimizer->step();  // allocates the state
  for (auto _ : state) optimizer->step();
  state.counters["fused_kernel"] = state.range(0) == 1 && finetune::FusedAdamW::fused() ? 1 : 0;
  state.SetBytesProcessed(state.iterations() * numel(*model) * 7 *
                          static_cast<int64_t>(sizeof(float)));
}

void BM_ScheduleStep200Groups(benchmark::State& state) {
  std::vector<torch::optim::OptimizerParamGroup> groups;
  for (int g = 0; g < 200; ++g) {
    groups.emplace_back(std::vector<torch::Tensor>{torch::zeros({1}, torch::requires_grad())},
                        std::make_unique<torch::optim::AdamWOptions>(1e-5 * (g + 1)));
  }
  torch::optim::AdamW optimizer(std::move(groups), torch::optim::AdamWOptions(1e-5));
  finetune::WarmupLinearSchedule schedule(optimizer,
                                          finetune::WarmupLinearScheduleOptions(50, 1 << 30));
  for (auto _ : state) schedule.step();
}

void BM_BuildLLRDGroupsRobertaBase(benchmark::State& state) {
  auto model = roberta_base();
  for (auto _ : state) {
    finetune::LayerwiseLRGroups<torch::optim::AdamWOptions> llrd(
        *model, finetune::LayerwiseLROptions::article_layerwise());
    benchmark::DoNotOptimize(llrd.size());
  }
}

}  // namespace

BENCHMARK(BM_SWAUpdate)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_SWAFusedSinglePass)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_SWAUpdateCuda)->Arg(0)->Arg(1)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_AdamWStep)->Arg(0)->Arg(1)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_ScheduleStep200Groups)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_BuildLLRDGroupsRobertaBase)->Unit(benchmark::kMicrosecond);
