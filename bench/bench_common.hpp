// Shared set-up for the C++ benchmarks: thread count and sizes, the same ones
// bench/pytorch_bench.py uses, so the two columns measure the same work.
#pragma once

#include <torch/torch.h>

#include <cstdlib>
#include <string>
#include <algorithm>
#include <thread>

namespace finetune_bench {

/// fp32 elements of the bandwidth and SWA figures: roberta-base's parameter count.
inline constexpr int64_t kBandwidthElements = 125'000'000;

/// Intra-op threads: FINETUNE_BENCH_THREADS, else all cores (LibTorch's default is half).
inline int bench_threads() {
  if (const char* env = std::getenv("FINETUNE_BENCH_THREADS")) return std::max(1, std::atoi(env));
  return static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
}

inline void set_threads() { torch::set_num_threads(bench_threads()); }

}  // namespace finetune_bench
