// main() of every benchmark executable: LibTorch's thread count first (all
// cores, or FINETUNE_BENCH_THREADS), then Google Benchmark as usual.
#include <benchmark/benchmark.h>

#include "bench_common.hpp"

int main(int argc, char** argv) {
  finetune_bench::set_threads();
  benchmark::AddCustomContext("torch_threads", std::to_string(finetune_bench::bench_threads()));
  benchmark::AddCustomContext("torch_version", TORCH_VERSION);
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
