// FusedAdamW (include/finetune/fused_adamw.hpp): ATen's fused AdamW kernel
// behind torch::optim::AdamW's interface.
#include <torch/torch.h>

#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <type_traits>
#include <vector>

#include "catch.hpp"
#include "finetune/fused_adamw.hpp"
#include "golden.hpp"

namespace {

torch::Tensor tensor_of(const nlohmann::json& values, const nlohmann::json& shape) {
  const auto v = values.get<std::vector<double>>();
  return torch::tensor(v, torch::TensorOptions().dtype(torch::kFloat64))
      .reshape(shape.get<std::vector<int64_t>>());
}

double max_abs_difference(const torch::Tensor& a, const torch::Tensor& b) {
  return (a - b).abs().max().item<double>();
}

torch::optim::AdamWOptions& options_of(torch::optim::Optimizer& optimizer, std::size_t group) {
  return static_cast<torch::optim::AdamWOptions&>(optimizer.param_groups()[group].options());
}

template <typename Optimizer>
torch::optim::AdamWParamState& state_of(Optimizer& optimizer, const torch::Tensor& p) {
  using Key = typename std::decay_t<decltype(optimizer.state())>::key_type;
  return static_cast<torch::optim::AdamWParamState&>(
      *optimizer.state().at(finetune::compat::optimizer_state_key<Key>(p)));
}

}  // namespace

TEST_CASE("FusedAdamW steps as torch.optim.AdamW(fused=True) does", "[fused_adamw]") {
  // Two groups (one with amsgrad), learning rates changed mid-run, a
  // parameter without a gradient on some steps; float64 (tests/reference/
  // ref_fused_adamw.py).
  const auto golden = finetune_test::load_golden_json("fused_adamw.json");
  INFO("the fused kernel runs: " << finetune::FusedAdamW::fused());
  std::map<std::string, torch::Tensor> params;
  for (const auto& [name, shape] : golden["shapes"].items()) {
    params[name] = tensor_of(golden["initial"][name], shape).requires_grad_(true);
  }
  std::vector<torch::optim::OptimizerParamGroup> groups;
  for (const auto& g : golden["groups"]) {
    std::vector<torch::Tensor> members;
    for (const auto& name : g["names"]) members.push_back(params.at(name.get<std::string>()));
    auto options = std::make_unique<torch::optim::AdamWOptions>(g["lr"].get<double>());
    options->betas({g["betas"][0].get<double>(), g["betas"][1].get<double>()})
        .eps(g["eps"].get<double>())
        .weight_decay(g["weight_decay"].get<double>())
        .amsgrad(g["amsgrad"].get<bool>());
    groups.emplace_back(members, std::move(options));
  }
  finetune::FusedAdamW optimizer(std::move(groups));

  int steps = 0;
  for (const auto& step : golden["steps"]) {
    INFO("step " << step["step"].get<int>());
    for (std::size_t g = 0; g < 2; ++g) options_of(optimizer, g).lr(step["lrs"][g].get<double>());
    for (auto& [name, p] : params) {
      p.mutable_grad() = step["grads"].contains(name)
                             ? tensor_of(step["grads"][name], golden["shapes"][name])
                             : torch::Tensor();
    }
    optimizer.step();
    for (auto& [name, p] : params) {
      INFO(name);
      CHECK(max_abs_difference(p, tensor_of(step["params"][name], golden["shapes"][name])) < 1e-9);
    }
    ++steps;
  }
  CHECK(steps == 8);
  for (auto& [name, p] : params) {
    INFO(name);
    const auto& expected = golden["state"][name];
    auto& state = state_of(optimizer, p);
    CHECK(state.step() == expected["step"].get<int64_t>());  // 6 for "skipped", 8 otherwise
    const auto& shape = golden["shapes"][name];
    CHECK(max_abs_difference(state.exp_avg(), tensor_of(expected["exp_avg"], shape)) < 1e-9);
    CHECK(max_abs_difference(state.exp_avg_sq(), tensor_of(expected["exp_avg_sq"], shape)) < 1e-9);
    CHECK(state.max_exp_avg_sq().defined() == expected.contains("max_exp_avg_sq"));
    if (expected.contains("max_exp_avg_sq")) {
      CHECK(max_abs_difference(state.max_exp_avg_sq(),
                               tensor_of(expected["max_exp_avg_sq"], shape)) < 1e-9);
    }
  }
}

TEST_CASE("FusedAdamW and torch::optim::AdamW load each other's checkpoints", "[fused_adamw]") {
  // float32, as models are trained: three steps with one optimizer, saved,
  // loaded into the other, three more; against six steps of AdamW alone.
  auto make_params = [] {
    auto g = at::detail::createCPUGenerator(11);
    return std::vector<torch::Tensor>{torch::randn({8, 5}, g).requires_grad_(true),
                                      torch::randn({5}, g).requires_grad_(true)};
  };
  auto gradient = [](int step, std::size_t i, const torch::Tensor& p) {
    auto g = at::detail::createCPUGenerator(100 + step * 10 + static_cast<int>(i));
    return torch::randn(p.sizes(), g);
  };
  const auto options = torch::optim::AdamWOptions(1e-2).weight_decay(0.05);
  auto run = [&](auto& optimizer, std::vector<torch::Tensor>& params, int from, int to) {
    for (int step = from; step < to; ++step) {
      for (std::size_t i = 0; i < params.size(); ++i) {
        params[i].mutable_grad() = gradient(step, i, params[i]);
      }
      optimizer.step();
    }
  };

  auto reference = make_params();
  torch::optim::AdamW plain(reference, options);
  run(plain, reference, 0, 6);

  for (bool fused_first : {true, false}) {
    INFO("saved by " << (fused_first ? "FusedAdamW" : "AdamW"));
    auto params = make_params();
    std::stringstream checkpoint;
    {
      std::unique_ptr<torch::optim::AdamW> first;
      if (fused_first) {
        first = std::make_unique<finetune::FusedAdamW>(params, options);
      } else {
        first = std::make_unique<torch::optim::AdamW>(params, options);
      }
      run(*first, params, 0, 3);
      torch::serialize::OutputArchive archive;
      first->save(archive);
      archive.save_to(checkpoint);
    }
    std::unique_ptr<torch::optim::AdamW> second;
    if (fused_first) {
      second = std::make_unique<torch::optim::AdamW>(params, options);
    } else {
      second = std::make_unique<finetune::FusedAdamW>(params, options);
    }
    torch::serialize::InputArchive archive;
    archive.load_from(checkpoint);
    second->load(archive);
    CHECK(state_of(*second, params[0]).step() == 3);
    run(*second, params, 3, 6);
    CHECK(state_of(*second, params[0]).step() == 6);
    for (std::size_t i = 0; i < params.size(); ++i) {
      // Rounding only: the update is 1e-2 per step, the parameters ~1.
      CHECK(max_abs_difference(params[i], reference[i]) < 1e-6);
    }
  }
}

TEST_CASE("FusedAdamW refuses sparse gradients, and leaves parameters without one alone",
          "[fused_adamw]") {
  auto used = torch::ones({3}, torch::requires_grad());
  auto untouched = torch::ones({2}, torch::requires_grad());
  finetune::FusedAdamW optimizer({used, untouched}, torch::optim::AdamWOptions(0.1));
  used.mutable_grad() = torch::ones({3});
  optimizer.step();
  CHECK(used[0].item<double>() < 1.0);
  CHECK(untouched[0].item<double>() == 1.0);
  CHECK(optimizer.state().size() == 1);
  used.mutable_grad() = torch::ones({3}).to_sparse();
  CHECK_THROWS_AS(optimizer.step(), c10::Error);
}
