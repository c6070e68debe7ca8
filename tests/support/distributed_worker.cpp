// One rank of the data-parallel scenarios of tests/test_distributed.cpp. The
// test starts it as several real processes with torchrun's variables (RANK,
// WORLD_SIZE, MASTER_ADDR, MASTER_PORT), or as one process without them, as
// a user's program is started.
//
//   distributed_worker train OUT_FILE [BATCHES...]
//       A small regression model trained with AdamW over global batches of
//       the given sizes (default 16 16 13 1): every rank takes its
//       shard_range of each batch, its loss is the sum over its rows divided
//       by the global batch's rows, gradients are summed over ranks. The
//       ranks start from different seeds; broadcast_module makes them equal.
//       Rank 0 (the only rank in one process) saves the parameters to
//       OUT_FILE; every rank prints "identical <0|1>" before and after.
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

#include <torch/torch.h>

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

int train(finetune::Distributed& dist, const std::string& out, std::vector<int64_t> batches) {
  if (batches.empty()) batches = {16, 16, 13, 1};
  torch::manual_seed(100 + dist.rank());  // different on every rank until the broadcast
  torch::nn::Sequential model(torch::nn::Linear(6, 8), torch::nn::Tanh(), torch::nn::Linear(8, 1));
  std::cout << "identical " << dist.identical(model->parameters()) << std::endl;
  dist.broadcast_module(*model);
  std::cout << "identical " << dist.identical(model->parameters()) << std::endl;
  torch::optim::AdamW optimizer(model->parameters(), torch::optim::AdamWOptions(1e-2));
  auto data = torch::Generator(at::detail::createCPUGenerator(7));  // same rows on every rank
  for (int64_t n : batches) {
    const auto x = torch::randn({n, 6}, data);
    const auto y = torch::randn({n, 1}, data);
    const auto [begin, end] = finetune::shard_range(n, dist.rank(), dist.world_size());
    optimizer.zero_grad();
    if (end > begin) {
      const auto rows = torch::indexing::Slice(begin, end);
      const auto loss =
          (model->forward(x.index({rows})) - y.index({rows})).pow(2).sum() / double(n);
      loss.backward();
    }
    dist.all_reduce_gradients(model->parameters(), 1.0);
    optimizer.step();
  }
  std::cout << "identical " << dist.identical(model->parameters()) << std::endl;
  if (dist.is_writer()) torch::save(model->parameters(), out);
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
    std::cerr << "usage: distributed_worker train|values|grads|mismatch|die ..." << std::endl;
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
