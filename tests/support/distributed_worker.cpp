// One rank of the data-parallel scenarios of tests/test_distributed.cpp. The
// test starts it as several real processes with torchrun's variables (RANK,
// WORLD_SIZE, MASTER_ADDR, MASTER_PORT), or as one process without them, as
// a user's program is started.
//
//   distributed_worker train OUT_DIR [BATCHES...]
//       docs/distributed.md's loop: a small regression net trained with
//       AdamW, SWA and a PeriodicEvaluator (every step, patience 2) over
//       global batches of the given sizes (default 16 16 13 16 16 1, then 16s
//       up to 40 batches):
//       every rank takes its shard_range of each batch and of the validation
//       rows. The ranks start from different seeds; broadcast_module makes
//       them equal. Every rank prints whether the replicas and the SWA
//       averages are identical, and where its evaluator stopped; rank 0 (the
//       only rank of one process) writes best.pt, history.csv, final.pt and
//       averages.pt into OUT_DIR.
//   distributed_worker overlap OUT_DIR plain|accumulate|unfreeze
//       The same net and batches with a GradientReducer (the all-reduce
//       overlapped with backward) and AdamW alone: plain; two micro-batches
//       per step (prepare() before the second); the first layer frozen for
//       the first 10 steps. Prints whether the replicas are identical and how
//       many buckets backward launched in the last step; rank 0 writes
//       final.pt into OUT_DIR.
//   distributed_worker values
//       Prints all_reduce_sum, broadcast_value and any results.
//   distributed_worker grads
//       A parameter no rank touches stays undefined; one that rank 0 alone
//       touches is summed; prints what it sees.
//   distributed_worker mismatch
//       Rank 1 changes one element after the broadcast: identical() says 0.
//   distributed_worker die RANK
//       Rank RANK exits with status 9 after the first collective; the others
//       call barrier(), print the DistributedError and exit with status 3.
#include <finetune/distributed.hpp>
#include <finetune/periodic_evaluator.hpp>
#include <finetune/swa.hpp>

#include <torch/torch.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <string>
#include <vector>

namespace {

finetune::Distributed join() {
  const char* timeout = std::getenv("TEST_DIST_TIMEOUT_MS");
  return finetune::Distributed::from_env(
      torch::kCPU, finetune::DistributedOptions()
                       .timeout(std::chrono::milliseconds(timeout ? std::atoi(timeout) : 20000))
                       .bucket_bytes(64));  // several buckets even for a small model
}

// A regression net and the rows it learns: the same on every rank (seeded).
struct Data {
  torch::Tensor x, y, val_x, val_y;
  std::vector<int64_t> batches;  // global batch sizes
};

Data make_data(std::vector<int64_t> batches) {
  if (batches.empty()) {
    batches = {16, 16, 13, 16, 16, 1};
    batches.resize(40, 16);
  }
  int64_t rows = 0;
  for (auto n : batches) rows += n;
  auto g = at::detail::createCPUGenerator(7);
  Data d;
  d.x = torch::randn({rows, 6}, g);
  d.y = d.x.sum(1, true).sin() + 0.1 * torch::randn({rows, 1}, g);
  d.val_x = torch::randn({37, 6}, g);  // 37 rows: uneven shards
  d.val_y = d.val_x.sum(1, true).sin();
  d.batches = batches;
  return d;
}

int train(finetune::Distributed& dist, const std::string& out_dir, std::vector<int64_t> batches) {
  const Data data = make_data(std::move(batches));
  const auto& x = data.x;
  const auto& y = data.y;
  const auto& val_x = data.val_x;
  const auto& val_y = data.val_y;
  const int64_t steps = static_cast<int64_t>(data.batches.size());
  std::vector<int64_t> first_row{0};
  for (auto n : data.batches) first_row.push_back(first_row.back() + n);
  using finetune::PeriodicEvaluator;
  using torch::indexing::Slice;

  torch::manual_seed(100 + dist.rank());  // different on every rank until the broadcast
  torch::nn::Sequential model(torch::nn::Linear(6, 8), torch::nn::Tanh(), torch::nn::Linear(8, 1));
  std::cout << "identical " << dist.identical(model->parameters()) << std::endl;
  // --- docs/distributed.md: begin ---
  dist.broadcast_module(*model);  // rank 0's initial weights (a random head, re-init) everywhere
  torch::optim::AdamW optimizer(model->parameters(), torch::optim::AdamWOptions(5e-2));
  finetune::SWAWrapper swa(*model);
  PeriodicEvaluator evaluator(finetune::PeriodicEvaluatorOptions(out_dir)
                                  .eval_every(1)
                                  .eval_every_from_epoch(0)
                                  .patience(2)
                                  .writer(dist.is_writer()),  // one rank writes files
                              *model, PeriodicEvaluator::LogFn());
  // The whole validation set's RMSE from every rank's shard: sums and counts
  // are all-reduced; broadcast_value makes it the same bits on every rank, so
  // every rank's evaluator takes the same decisions.
  auto rmse = [&] {
    torch::NoGradGuard no_grad;
    const auto [begin, end] = finetune::shard_range(val_x.size(0), dist.rank(), dist.world_size());
    const auto error =
        model->forward(val_x.index({Slice(begin, end)})) - val_y.index({Slice(begin, end)});
    const auto sums = dist.all_reduce_sum(
        std::vector<double>{error.pow(2).sum().item<double>(), static_cast<double>(end - begin)});
    return dist.broadcast_value(std::sqrt(sums[0] / sums[1]));
  };
  for (int64_t step = 0; step < steps; ++step) {
    const int64_t n = data.batches[step];  // the global batch: the same rows on every rank
    const auto [begin, end] = finetune::shard_range(n, dist.rank(), dist.world_size());
    const auto rows = Slice(first_row[step] + begin, first_row[step] + end);
    optimizer.zero_grad();
    if (end > begin) {  // a rank may have no row of a small last batch
      // Divided by the global batch's rows: the gradients' sum over ranks is
      // then the gradient of the whole batch's mean loss.
      const auto loss =
          (model->forward(x.index({rows})) - y.index({rows})).pow(2).sum() / double(n);
      loss.backward();
    }
    dist.all_reduce_gradients(model->parameters(), /*divisor=*/1.0);
    optimizer.step();
    swa.update(*model);  // identical on every rank: same weights, same arithmetic
    if (evaluator.step(/*epoch=*/0, step, steps, rmse)) break;
  }
  // --- docs/distributed.md: end ---
  std::vector<torch::Tensor> averages;
  for (const auto& [name, tensor] : swa.named_averages()) averages.push_back(tensor);
  std::cout << "identical " << dist.identical(model->parameters()) << std::endl;
  std::cout << "averages identical " << dist.identical(averages) << std::endl;
  std::printf("stopped %d at step %lld after %lld evaluations, best %.17g\n",
              int(evaluator.should_stop()), static_cast<long long>(evaluator.global_step()),
              static_cast<long long>(evaluator.num_evaluations()), evaluator.best());
  if (dist.is_writer()) {
    torch::save(model->parameters(), out_dir + "/final.pt");
    torch::save(averages, out_dir + "/averages.pt");
  }
  return 0;
}

int overlap(finetune::Distributed& dist, const std::string& out_dir, const std::string& mode) {
  const Data data = make_data({});
  std::vector<int64_t> first_row{0};
  for (auto n : data.batches) first_row.push_back(first_row.back() + n);
  const bool accumulate = mode == "accumulate", unfreeze = mode == "unfreeze";
  using torch::indexing::Slice;
  torch::manual_seed(100 + dist.rank());
  torch::nn::Sequential model(torch::nn::Linear(6, 8), torch::nn::Tanh(), torch::nn::Linear(8, 1));
  dist.broadcast_module(*model);
  torch::optim::AdamW optimizer(model->parameters(), torch::optim::AdamWOptions(5e-2));
  auto first_layer = model->ptr(0)->parameters();
  // --- docs/distributed.md overlap: begin ---
  finetune::GradientReducer reducer(dist, model->parameters());
  for (std::size_t step = 0; step < data.batches.size(); ++step) {
    const int64_t n = data.batches[step];
    const auto [begin, end] = finetune::shard_range(n, dist.rank(), dist.world_size());
    for (auto& p : first_layer) p.set_requires_grad(!unfreeze || step >= 10);
    optimizer.zero_grad();
    const int micro_batches = accumulate ? 2 : 1;  // this rank's rows in 1 or 2 pieces
    for (int m = 0; m < micro_batches; ++m) {
      const auto [from, to] = finetune::shard_range(end - begin, m, micro_batches);
      if (m == micro_batches - 1) reducer.prepare();  // this backward ends the step
      if (to == from) continue;                       // no rows here: no backward
      const auto rows = Slice(first_row[step] + begin + from, first_row[step] + begin + to);
      const auto loss =
          (model->forward(data.x.index({rows})) - data.y.index({rows})).pow(2).sum() / double(n);
      loss.backward();
    }
    reducer.finish(/*divisor=*/1.0);  // waits for the buckets backward launched
    optimizer.step();
  }
  // --- docs/distributed.md overlap: end ---
  std::cout << "identical " << dist.identical(model->parameters()) << std::endl;
  std::printf("launched %lld of %lld\n",
              static_cast<long long>(reducer.last_launched_in_backward()),
              static_cast<long long>(reducer.last_buckets()));
  if (dist.is_writer()) torch::save(model->parameters(), out_dir + "/final.pt");
  return 0;
}

int values(finetune::Distributed& dist) {
  const auto r = static_cast<double>(dist.rank());
  const auto sums = dist.all_reduce_sum(std::vector<double>{1.0, r, 0.1 * (r + 1)});
  std::printf("sums %.17g %.17g %.17g\n", sums[0], sums[1], sums[2]);
  std::printf("broadcast %.17g\n", dist.broadcast_value(10.0 + r));
  std::printf("any_last %d any_none %d\n", int(dist.any(dist.rank() == dist.world_size() - 1)),
              int(dist.any(false)));
  const auto t = dist.all_reduce_sum(torch::full({2}, r + 1.0));
  std::printf("tensor %.17g %.17g\n", t[0].item<double>(), t[1].item<double>());
  return 0;
}

int grads(finetune::Distributed& dist) {
  auto used = torch::ones({3}, torch::requires_grad());
  auto rank0_only = torch::ones({2}, torch::requires_grad());
  auto unused = torch::ones({2}, torch::requires_grad());
  auto loss = used.sum() * (dist.rank() + 1.0);
  if (dist.rank() == 0) loss = loss + rank0_only.sum() * 5.0;
  loss.backward();
  dist.all_reduce_gradients({used, rank0_only, unused}, 1.0);
  std::printf("used %g rank0_only %g unused_defined %d bytes %lld\n", used.grad()[0].item<double>(),
              rank0_only.grad()[0].item<double>(), int(unused.grad().defined()),
              static_cast<long long>(dist.last_reduced_bytes()));
  // The same through a GradientReducer, twice (the second step reuses the
  // buckets); `frozen` does not require grad and is left alone.
  auto frozen = torch::ones({2});
  frozen.mutable_grad() = torch::full({2}, 7.0);
  finetune::GradientReducer reducer(dist, {used, rank0_only, unused, frozen});
  // Misuse is refused on every rank alike (and leaves the ranks in step);
  // the loop below clears the gradients this leaves.
  try {
    reducer.finish(1.0);
  } catch (const std::logic_error& e) {
    std::printf("refused: %s\n", e.what());
  }
  reducer.prepare();
  try {
    reducer.prepare();
  } catch (const std::logic_error& e) {
    std::printf("refused: %s\n", e.what());
  }
  reducer.finish(1.0);
  for (int step = 0; step < 2; ++step) {
    for (auto* p : {&used, &rank0_only, &unused}) p->mutable_grad() = torch::Tensor();
    reducer.prepare();
    auto again = used.sum() * (dist.rank() + 1.0);
    if (dist.rank() == 0) again = again + rank0_only.sum() * 5.0;
    again.backward();
    reducer.finish(1.0);
  }
  std::printf("overlap used %g rank0_only %g unused_defined %d frozen %g bytes %lld\n",
              used.grad()[0].item<double>(), rank0_only.grad()[0].item<double>(),
              int(unused.grad().defined()), frozen.grad()[0].item<double>(),
              static_cast<long long>(reducer.last_reduced_bytes()));
  return 0;
}

int mismatch(finetune::Distributed& dist) {
  torch::manual_seed(3);
  torch::nn::Linear model(4, 4);
  dist.broadcast_module(*model);
  std::cout << "identical " << dist.identical(model->parameters()) << std::endl;
  if (dist.rank() == 1) {
    torch::NoGradGuard no_grad;
    model->weight[0][0].add_(1e-7);  // one element, one ulp or so
  }
  std::cout << "identical " << dist.identical(model->parameters()) << std::endl;
  return 0;
}

int die(finetune::Distributed& dist, int64_t victim) {
  dist.barrier();
  if (dist.rank() == victim) std::_Exit(9);
  try {
    for (int i = 0; i < 1000; ++i) dist.barrier();
    std::cerr << "no error after the rank died" << std::endl;
    return 1;
  } catch (const finetune::DistributedError& e) {
    std::cerr << "error: " << e.what() << std::endl;
    return 3;
  }
}

}  // namespace

int main(int argc, char** argv) {
  torch::set_num_threads(1);
  if (argc < 2) {
    std::cerr << "usage: distributed_worker train|overlap|values|grads|mismatch|die ..."
              << std::endl;
    return 2;
  }
  const std::string what = argv[1];
  try {
    auto dist = join();
    if (what == "train" && argc >= 3) {
      std::vector<int64_t> batches;
      for (int i = 3; i < argc; ++i) batches.push_back(std::atoll(argv[i]));
      return train(dist, argv[2], batches);
    }
    if (what == "overlap" && argc == 4) return overlap(dist, argv[2], argv[3]);
    if (what == "values") return values(dist);
    if (what == "grads") return grads(dist);
    if (what == "mismatch") return mismatch(dist);
    if (what == "die" && argc == 3) return die(dist, std::atoll(argv[2]));
    std::cerr << "distributed_worker: bad arguments" << std::endl;
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << std::endl;
    return 4;
  }
}
