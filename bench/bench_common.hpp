// Shared set-up for the C++ benchmarks: thread count and sizes, the same ones
// bench/pytorch_bench.py uses, so the two columns measure the same work.
#pragma once

#include <torch/torch.h>

#include <algorithm>
#include <cstdlib>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace finetune_bench {

/// fp32 elements of the bandwidth and SWA figures: roberta-base's parameter count.
inline constexpr int64_t kBandwidthElements = 125'000'000;

/// Intra-op threads: FINETUNE_BENCH_THREADS, else all cores (LibTorch's default is half).
inline int bench_threads() {
  if (const char* env = std::getenv("FINETUNE_BENCH_THREADS")) return std::max(1, std::atoi(env));
  return static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
}

inline void set_threads() { torch::set_num_threads(bench_threads()); }

/// Runs f(begin, end) over [0, n) split across bench_threads() std::threads.
/// The plain-loop baselines use this rather than at::parallel_for, whose
/// OpenMP backend is inlined into the caller and runs serially unless the
/// caller is itself compiled with -fopenmp.
template <typename F>
void parallel_chunks(int64_t n, const F& f) {
  const int64_t threads = bench_threads();
  const int64_t chunk = (n + threads - 1) / threads;
  std::vector<std::thread> workers;
  for (int64_t begin = chunk; begin < n; begin += chunk) {
    workers.emplace_back([&f, begin, end = std::min(n, begin + chunk)] { f(begin, end); });
  }
  f(0, std::min(n, chunk));
  for (auto& w : workers) w.join();
}

}  // namespace finetune_bench

namespace finetune_bench {

/// roberta-base's parameters under Hugging Face's names (RobertaModel plus the
/// article's `regressor`): 201 tensors, 124.6M fp32 elements.
inline std::vector<std::pair<std::string, std::vector<int64_t>>> roberta_base_shapes() {
  const int64_t d = 768, ff = 3072;
  std::vector<std::pair<std::string, std::vector<int64_t>>> shapes = {
      {"embeddings.word_embeddings.weight", {50265, d}},
      {"embeddings.position_embeddings.weight", {514, d}},
      {"embeddings.token_type_embeddings.weight", {1, d}},
      {"embeddings.LayerNorm.weight", {d}},
      {"embeddings.LayerNorm.bias", {d}}};
  for (int layer = 0; layer < 12; ++layer) {
    const std::string p = "encoder.layer." + std::to_string(layer) + ".";
    for (const char* m : {"attention.self.query", "attention.self.key", "attention.self.value",
                          "attention.output.dense"}) {
      shapes.push_back({p + m + ".weight", {d, d}});
      shapes.push_back({p + m + ".bias", {d}});
    }
    shapes.push_back({p + "attention.output.LayerNorm.weight", {d}});
    shapes.push_back({p + "attention.output.LayerNorm.bias", {d}});
    shapes.push_back({p + "intermediate.dense.weight", {ff, d}});
    shapes.push_back({p + "intermediate.dense.bias", {ff}});
    shapes.push_back({p + "output.dense.weight", {d, ff}});
    shapes.push_back({p + "output.dense.bias", {d}});
    shapes.push_back({p + "output.LayerNorm.weight", {d}});
    shapes.push_back({p + "output.LayerNorm.bias", {d}});
  }
  shapes.push_back({"pooler.dense.weight", {d, d}});
  shapes.push_back({"pooler.dense.bias", {d}});
  shapes.push_back({"regressor.weight", {1, d}});
  shapes.push_back({"regressor.bias", {1}});
  return shapes;
}

/// A module tree whose named_parameters() are `shapes` (dotted names become
/// nested submodules, as in a real model), filled with N(0, 0.02).
inline std::shared_ptr<torch::nn::Module> module_with_parameters(
    const std::vector<std::pair<std::string, std::vector<int64_t>>>& shapes) {
  auto root = std::make_shared<torch::nn::Module>();
  for (const auto& [name, shape] : shapes) {
    torch::nn::Module* parent = root.get();
    std::string rest = name;
    for (auto dot = rest.find('.'); dot != std::string::npos; dot = rest.find('.')) {
      const std::string child = rest.substr(0, dot);
      rest = rest.substr(dot + 1);
      auto children = parent->named_children();
      auto* found = children.find(child);
      parent = found ? found->get()
                     : parent->register_module(child, std::make_shared<torch::nn::Module>()).get();
    }
    parent->register_parameter(rest, torch::randn(shape) * 0.02);
  }
  return root;
}

}  // namespace finetune_bench
