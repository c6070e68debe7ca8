// The data-parallel training step (issue #19's figures): one plain step of the
// example's RoBERTa regressor (forward, backward, gradient all-reduce, AdamW)
// over a global batch that the ranks split with finetune::shard_range.
//
// Started as one process (no torchrun variables: the distributed layer is
// inactive) or by torchrun, as a user's program is:
//   distributed_step --shape demo|base [--steps N] [--warmup N]
//                    [--device cpu|cuda] [--threads T] [--overlap] [--json FILE]
//   torchrun --no-python --nproc-per-node 2 distributed_step ...
// Rank 0 prints, and writes to FILE, one JSON object: the median step time,
// the median exposed communication (the time from the end of backward to the
// reduced gradients: all of all_reduce_gradients, or GradientReducer's
// finish() with --overlap, where backward already launched the buckets), the
// bytes all-reduced per step and rows per second. scripts/bench_distributed.sh runs
// the comparisons and bench/report_distributed.py makes the table.
#include <finetune/distributed.hpp>

#include <torch/cuda.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include "model/roberta_model.hpp"
#include "roberta_shapes.hpp"

namespace {

using roberta_regression::RobertaConfig;
using roberta_regression::RobertaRegressor;

struct Args {
  std::string shape = "demo", device = "cpu", json;
  int steps = 20, warmup = 2, threads = 1;
  bool overlap = false;
};

Args parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string k = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) throw std::invalid_argument("distributed_step: " + k + " needs a value");
      return argv[++i];
    };
    if (k == "--shape")
      a.shape = value();
    else if (k == "--steps")
      a.steps = std::stoi(value());
    else if (k == "--warmup")
      a.warmup = std::stoi(value());
    else if (k == "--device")
      a.device = value();
    else if (k == "--threads")
      a.threads = std::stoi(value());
    else if (k == "--overlap")
      a.overlap = true;
    else if (k == "--json")
      a.json = value();
    else
      throw std::invalid_argument("distributed_step: unknown argument " + k);
  }
  if (a.shape != "demo" && a.shape != "base") throw std::invalid_argument("--shape demo|base");
  if (a.steps < 1 || a.warmup < 0 || a.threads < 1) throw std::invalid_argument("bad counts");
  return a;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.size() % 2 ? v[v.size() / 2] : 0.5 * (v[v.size() / 2 - 1] + v[v.size() / 2]);
}

}  // namespace

int main(int argc, char** argv) try {
  const Args args = parse(argc, argv);
  torch::set_num_threads(args.threads);
  auto dist = finetune::Distributed::from_env(torch::Device(args.device));
  const torch::Device device = dist.active() ? dist.device() : torch::Device(args.device);
  const bool cuda = device.is_cuda();
  auto sync = [&] {
    if (cuda) torch::cuda::synchronize(device.index());
  };

  // The same shapes as bench_roberta_training (figure 6).
  const finetune_bench::Shape shape =
      args.shape == "demo" ? finetune_bench::demo_shape() : finetune_bench::base_shape();
  const RobertaConfig& config = shape.config;
  const int64_t batch = shape.batch, tokens = shape.tokens;
  torch::manual_seed(0);
  RobertaRegressor model(config);
  model->to(device);
  model->train();
  dist.broadcast_module(*model);
  torch::optim::AdamW optimizer(model->parameters(), torch::optim::AdamWOptions(1e-5));

  const auto ids = torch::randint(5, config.vocab_size, {batch, tokens}, torch::kInt64).to(device);
  const auto mask = torch::ones({batch, tokens}, torch::kInt64).to(device);
  const auto target = torch::randn({batch}).to(device);
  const auto [begin, end] = finetune::shard_range(batch, dist.rank(), dist.world_size());
  const auto rows = torch::indexing::Slice(begin, end);
  const auto my_ids = ids.index({rows}), my_mask = mask.index({rows}),
             my_target = target.index({rows});

  finetune::GradientReducer reducer(dist, model->parameters());
  std::vector<double> step_s, reduce_s;
  int64_t bytes = 0;
  using clock = std::chrono::steady_clock;
  for (int s = 0; s < args.warmup + args.steps; ++s) {
    sync();
    const auto t0 = clock::now();
    optimizer.zero_grad();
    if (args.overlap) reducer.prepare();
    const auto loss = (model->forward(my_ids, my_mask) - my_target).pow(2).sum() / double(batch);
    loss.backward();
    sync();
    const auto t1 = clock::now();
    if (args.overlap) {
      reducer.finish(1.0);
    } else {
      dist.all_reduce_gradients(model->parameters(), 1.0);
    }
    sync();
    const auto t2 = clock::now();
    optimizer.step();
    sync();
    const auto t3 = clock::now();
    bytes = args.overlap ? reducer.last_reduced_bytes() : dist.last_reduced_bytes();
    if (s >= args.warmup) {
      step_s.push_back(std::chrono::duration<double>(t3 - t0).count());
      reduce_s.push_back(std::chrono::duration<double>(t2 - t1).count());
    }
  }
  // The ranks' medians, averaged (the all-reduce keeps the ranks in step).
  auto sums = dist.all_reduce_sum(std::vector<double>{median(step_s), median(reduce_s)});
  if (dist.is_writer()) {
    char text[512];
    std::snprintf(
        text, sizeof(text),
        "{\"shape\": \"%s\", \"device\": \"%s\", \"world_size\": %lld, \"active\": %s, "
        "\"backend\": \"%s\", \"threads\": %d, \"overlap\": %s, \"steps\": %d, \"step_s\": %.6g, "
        "\"reduce_s\": %.6g, \"reduced_bytes\": %lld, \"rows_per_s\": %.6g}",
        args.shape.c_str(), device.str().c_str(), static_cast<long long>(dist.world_size()),
        dist.active() ? "true" : "false", dist.backend_name().c_str(), args.threads,
        args.overlap ? "true" : "false", args.steps, sums[0] / dist.world_size(),
        sums[1] / dist.world_size(), static_cast<long long>(bytes),
        batch / (sums[0] / dist.world_size()));
    std::cout << text << std::endl;
    if (!args.json.empty()) std::ofstream(args.json) << text << "\n";
  }
  return 0;
} catch (const std::exception& e) {
  std::cerr << "distributed_step: " << e.what() << std::endl;
  return 1;
}
