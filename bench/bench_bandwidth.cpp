// Figure 1: the machine's memory-bandwidth ceiling for fp32 tensors of 125M
// elements (roberta-base's size): copy (read 1, write 1) and add (read 2,
// write 1), through LibTorch and through a plain parallel loop.
#include <benchmark/benchmark.h>
#include <torch/torch.h>

#include "bench_common.hpp"

namespace {

using finetune_bench::kBandwidthElements;

void set_bytes(benchmark::State& state, int64_t tensors_touched) {
  state.SetBytesProcessed(state.iterations() * kBandwidthElements * tensors_touched *
                          static_cast<int64_t>(sizeof(float)));
}

void BM_TorchCopy(benchmark::State& state) {
  auto src = torch::rand({kBandwidthElements});
  auto dst = torch::empty_like(src);
  for (auto _ : state) {
    dst.copy_(src);
    benchmark::DoNotOptimize(dst.data_ptr());
  }
  set_bytes(state, 2);
}

void BM_TorchAdd(benchmark::State& state) {
  auto a = torch::rand({kBandwidthElements});
  auto b = torch::rand({kBandwidthElements});
  auto c = torch::empty_like(a);
  for (auto _ : state) {
    at::add_out(c, a, b);
    benchmark::DoNotOptimize(c.data_ptr());
  }
  set_bytes(state, 3);
}

// The same two kernels as one pass of plain C++ over at::parallel_for chunks:
// what the hardware gives without any framework overhead.
void BM_LoopCopy(benchmark::State& state) {
  auto src = torch::rand({kBandwidthElements});
  auto dst = torch::empty_like(src);
  const float* s = src.data_ptr<float>();
  float* d = dst.data_ptr<float>();
  for (auto _ : state) {
    at::parallel_for(0, kBandwidthElements, 1 << 16, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) d[i] = s[i];
    });
    benchmark::ClobberMemory();
  }
  set_bytes(state, 2);
}

void BM_LoopAdd(benchmark::State& state) {
  auto a = torch::rand({kBandwidthElements});
  auto b = torch::rand({kBandwidthElements});
  auto c = torch::empty_like(a);
  const float* pa = a.data_ptr<float>();
  const float* pb = b.data_ptr<float>();
  float* pc = c.data_ptr<float>();
  for (auto _ : state) {
    at::parallel_for(0, kBandwidthElements, 1 << 16, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) pc[i] = pa[i] + pb[i];
    });
    benchmark::ClobberMemory();
  }
  set_bytes(state, 3);
}

}  // namespace

BENCHMARK(BM_TorchCopy)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_TorchAdd)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_LoopCopy)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_LoopAdd)->Unit(benchmark::kMillisecond)->UseRealTime();
