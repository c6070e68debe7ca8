// Figure 1: the machine's memory-bandwidth ceiling for fp32 tensors of 125M
// elements (roberta-base's size): copy, add and in-place add, through LibTorch
// and through a plain loop split across the threads. Figure 8's compute
// ceiling: fp32 matrix products of 2048² and 4096² (at::mm_out, the BLAS the
// build uses), whose FLOP/s bound what a training step can reach.
//
// Bytes count the memory traffic really caused, so that figures compare: a
// store to a line not read before costs a read for ownership too (+1), except
// in memcpy, which streams large copies past the cache. The in-place add
// (read a and b, write a) is the access pattern of an SWA update.
#include <benchmark/benchmark.h>
#include <torch/torch.h>

#include "bench_common.hpp"

namespace {

using finetune_bench::kBandwidthElements;

void set_bytes(benchmark::State& state, int64_t transfers_per_element) {
  state.SetBytesProcessed(state.iterations() * kBandwidthElements * transfers_per_element *
                          static_cast<int64_t>(sizeof(float)));
}

void BM_TorchCopy(benchmark::State& state) {
  auto src = torch::rand({kBandwidthElements});
  auto dst = torch::empty_like(src);
  for (auto _ : state) {
    dst.copy_(src);
    benchmark::DoNotOptimize(dst.data_ptr());
  }
  set_bytes(state, 2);  // read src, stream dst
}

void BM_TorchAdd(benchmark::State& state) {
  auto a = torch::rand({kBandwidthElements});
  auto b = torch::rand({kBandwidthElements});
  auto c = torch::empty_like(a);
  for (auto _ : state) {
    at::add_out(c, a, b);
    benchmark::DoNotOptimize(c.data_ptr());
  }
  set_bytes(state, 4);  // read a, b; read for ownership and write c
}

void BM_TorchAddInplace(benchmark::State& state) {
  auto a = torch::rand({kBandwidthElements});
  auto b = torch::rand({kBandwidthElements});
  for (auto _ : state) {
    a.add_(b);
    benchmark::DoNotOptimize(a.data_ptr());
  }
  set_bytes(state, 3);  // read a, b; write a
}

// The same two kernels as one pass of plain C++ split across the threads:
// what the hardware gives without any framework overhead.
void BM_LoopCopy(benchmark::State& state) {
  auto src = torch::rand({kBandwidthElements});
  auto dst = torch::empty_like(src);
  const float* s = src.data_ptr<float>();
  float* d = dst.data_ptr<float>();
  for (auto _ : state) {
    finetune_bench::parallel_chunks(kBandwidthElements, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) d[i] = s[i];
    });
    benchmark::ClobberMemory();
  }
  set_bytes(state, 3);  // read s; read for ownership and write d
}

void BM_LoopAdd(benchmark::State& state) {
  auto a = torch::rand({kBandwidthElements});
  auto b = torch::rand({kBandwidthElements});
  auto c = torch::empty_like(a);
  const float* pa = a.data_ptr<float>();
  const float* pb = b.data_ptr<float>();
  float* pc = c.data_ptr<float>();
  for (auto _ : state) {
    finetune_bench::parallel_chunks(kBandwidthElements, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) pc[i] = pa[i] + pb[i];
    });
    benchmark::ClobberMemory();
  }
  set_bytes(state, 4);  // read a, b; read for ownership and write c
}

// n x n times n x n: 2 n³ floating-point operations per product. fp32 (the
// ceiling of figure 8) and bf16 (of figure 9: this CPU's bf16 dot products,
// native on AVX512_BF16/AMX, emulated through fp32 elsewhere).
void matmul_peak(benchmark::State& state, torch::Dtype dtype) {
  const int64_t n = state.range(0);
  auto a = torch::rand({n, n}).to(dtype);
  auto b = torch::rand({n, n}).to(dtype);
  auto c = torch::empty({n, n}, dtype);
  at::mm_out(c, a, b);  // warm-up: BLAS's buffers and threads
  for (auto _ : state) {
    at::mm_out(c, a, b);
    benchmark::DoNotOptimize(c.data_ptr());
  }
  state.counters["flop_per_s"] = benchmark::Counter(2.0 * double(n) * double(n) * double(n),
                                                    benchmark::Counter::kIsIterationInvariantRate);
}

void BM_MatmulPeak(benchmark::State& state) { matmul_peak(state, torch::kFloat); }
void BM_MatmulPeakBf16(benchmark::State& state) { matmul_peak(state, torch::kBFloat16); }

}  // namespace

BENCHMARK(BM_TorchCopy)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_TorchAdd)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_TorchAddInplace)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_LoopCopy)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_LoopAdd)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_MatmulPeak)->Arg(2048)->Arg(4096)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_MatmulPeakBf16)->Arg(2048)->Arg(4096)->Unit(benchmark::kMillisecond)->UseRealTime();
