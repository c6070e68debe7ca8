// reinit.hpp: the re-initialized blocks follow Hugging Face's init scheme
// (statistics on large layers, exact ones/zeros), lower blocks stay
// bit-identical, seeds reproduce, bad input throws.
#include <finetune/reinit.hpp>

#include <torch/torch.h>

#include <cmath>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

#include "catch.hpp"
#include "golden.hpp"

using Catch::Matchers::WithinAbs;
using Catch::Matchers::WithinRel;
using finetune::ReinitTopLayers;
using finetune::ReinitTopLayersOptions;

using finetune_test::HasSubstring;

namespace {

// A transformer-like block: attention projection, LayerNorm, a feed-forward
// pair (one Linear without bias), an Embedding and a Conv1d (not handled).
struct BlockImpl : torch::nn::Module {
  explicit BlockImpl(int64_t h, int64_t num_embeddings = 512) {
    attention = register_module("attention", torch::nn::Sequential());
    attention->push_back("query", torch::nn::Linear(h, h));
    attention->push_back("LayerNorm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({h})));
    up = register_module("up", torch::nn::Linear(h, 4 * h));
    down =
        register_module("down", torch::nn::Linear(torch::nn::LinearOptions(4 * h, h).bias(false)));
    norm = register_module("LayerNorm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({h})));
    table = register_module(
        "table",
        torch::nn::Embedding(torch::nn::EmbeddingOptions(num_embeddings, h).padding_idx(1)));
    conv = register_module("conv", torch::nn::Conv1d(torch::nn::Conv1dOptions(2, 2, 1)));
    // Pretrained-looking values everywhere: nothing equals its init already.
    torch::NoGradGuard no_grad;
    for (auto& p : parameters()) p.uniform_(-0.5, 0.5).add_(3.0);
  }
  torch::nn::Sequential attention{nullptr};
  torch::nn::Linear up{nullptr}, down{nullptr};
  torch::nn::LayerNorm norm{nullptr};
  torch::nn::Embedding table{nullptr};
  torch::nn::Conv1d conv{nullptr};
};
TORCH_MODULE(Block);

struct Stack {
  explicit Stack(int64_t layers, int64_t h = 64, torch::Dtype dtype = torch::kFloat) {
    for (int64_t i = 0; i < layers; ++i) list->push_back(Block(h));
    list->to(dtype);
    pooler->to(dtype);
    torch::NoGradGuard no_grad;
    for (auto& p : pooler->parameters()) p.fill_(7.0);
  }
  torch::nn::ModuleList list;
  torch::nn::Linear pooler{64, 64};
  ReinitTopLayers::NamedModules extra() const { return {{"pooler", pooler.ptr()}}; }
  std::vector<torch::Tensor> snapshot() const {
    std::vector<torch::Tensor> out;
    for (const auto& p : list->parameters()) out.push_back(p.detach().clone());
    for (const auto& p : pooler->parameters()) out.push_back(p.detach().clone());
    return out;
  }
};

void check_normal(const torch::Tensor& w, double std) {
  const auto x = w.to(torch::kDouble);
  const double n = static_cast<double>(x.numel());
  // Sample mean of N(0, std) has sd std/sqrt(n); sample sd has sd ~ std/sqrt(2n).
  CHECK_THAT(x.mean().item<double>(), WithinAbs(0.0, 6.0 * std / std::sqrt(n)));
  CHECK_THAT(x.std().item<double>(), WithinAbs(std, 6.0 * std / std::sqrt(2.0 * n)));
}

bool all_equal(const torch::Tensor& t, double v) { return (t == v).all().item<bool>(); }

}  // namespace

TEST_CASE("ReinitTopLayers re-initializes the top n blocks and the pooler", "[reinit]") {
  Stack stack(6, 64);
  const auto before = stack.snapshot();
  std::vector<torch::Tensor> untouched_before;  // Embedding and Conv1d of the top blocks
  for (size_t i = 4; i < 6; ++i) {
    auto block = stack.list->ptr<BlockImpl>(i);
    for (const auto& t : {block->table->weight, block->conv->weight, block->conv->bias}) {
      untouched_before.push_back(t.clone());
    }
  }
  ReinitTopLayers reinit(ReinitTopLayersOptions(2).initializer_range(0.02).seed(11));
  const auto report = reinit(stack.list, stack.extra());

  for (size_t i = 4; i < 6; ++i) {
    INFO("layer " << i);
    auto block = stack.list->ptr<BlockImpl>(i);
    check_normal(block->up->weight, 0.02);  // 16384 elements
    check_normal(block->down->weight, 0.02);
    check_normal(block->attention[0]->as<torch::nn::Linear>()->weight, 0.02);
    CHECK(all_equal(block->up->bias, 0.0));
    CHECK_FALSE(block->down->bias.defined());
    CHECK(all_equal(block->norm->weight, 1.0));
    CHECK(all_equal(block->norm->bias, 0.0));
    auto ln = block->attention[1]->as<torch::nn::LayerNorm>();
    CHECK(all_equal(ln->weight, 1.0));
    CHECK(all_equal(ln->bias, 0.0));
  }
  // Embedding (reinit_embeddings = false) and Conv1d untouched, bit for bit.
  size_t u = 0;
  for (size_t i = 4; i < 6; ++i) {
    auto block = stack.list->ptr<BlockImpl>(i);
    for (const auto& t : {block->table->weight, block->conv->weight, block->conv->bias}) {
      CHECK(torch::equal(t, untouched_before[u++]));
    }
  }
  check_normal(stack.pooler->weight, 0.02);
  CHECK(all_equal(stack.pooler->bias, 0.0));

  // Lower layers bit-identical.
  size_t k = 0;
  for (size_t i = 0; i < 4; ++i) {
    for (const auto& p : stack.list->ptr(i)->parameters()) CHECK(torch::equal(p, before[k++]));
  }

  // The report: pooler first, then layer 5, then layer 4, children before parents.
  CHECK(report.layer_indices == std::vector<int64_t>{5, 4});
  CHECK(report.linear == 1 + 2 * 3);
  CHECK(report.layer_norm == 2 * 2);
  CHECK(report.embedding == 0);
  REQUIRE(report.reset.size() == 11);
  CHECK(report.reset[0].path == "pooler");
  CHECK(report.reset[1].path == "layer.5.attention.query");
  CHECK(report.reset[2].path == "layer.5.attention.LayerNorm");
  CHECK(report.reset[3].path == "layer.5.up");
  CHECK(report.reset[3].kind == "Linear");
  CHECK(report.reset[3].elements == 64 * 256 + 256);
  CHECK(report.reset[4].path == "layer.5.down");
  CHECK(report.reset[5].path == "layer.5.LayerNorm");
  CHECK(report.reset[6].path == "layer.4.attention.query");
  CHECK(report.skipped ==
        std::vector<std::string>{"layer.5.table", "layer.5.conv", "layer.4.table", "layer.4.conv"});
  int64_t elements = 0;
  for (const auto& e : report.reset) elements += e.elements;
  CHECK(report.elements == elements);
  CHECK_THAT(report.str(), HasSubstring("re-initialized 7 Linear, 4 LayerNorm, 0 Embedding"));
  CHECK_THAT(report.str(), HasSubstring("layer.4.conv (skipped"));
}

TEST_CASE("ReinitTopLayers: statistics on a large layer and other dtypes", "[reinit]") {
  SECTION("float, initializer_range 0.05, 1024x4096") {
    std::vector<std::shared_ptr<torch::nn::Module>> layers{
        std::make_shared<torch::nn::LinearImpl>(1024, 4096)};
    ReinitTopLayers(ReinitTopLayersOptions(1).initializer_range(0.05).seed(3))(layers);
    auto linear = std::dynamic_pointer_cast<torch::nn::LinearImpl>(layers[0]);
    check_normal(linear->weight, 0.05);
    CHECK(all_equal(linear->bias, 0.0));
    CHECK(linear->weight.requires_grad());  // still a trainable parameter
  }
  SECTION("double parameters stay double") {
    Stack stack(2, 64, torch::kDouble);
    ReinitTopLayers(ReinitTopLayersOptions(1).seed(5))(stack.list);
    auto block = stack.list->ptr<BlockImpl>(1);
    CHECK(block->up->weight.scalar_type() == torch::kDouble);
    check_normal(block->up->weight, 0.02);
  }
  SECTION("embeddings on request, padding row zero") {
    Stack stack(3, 64);
    const auto report =
        ReinitTopLayers(ReinitTopLayersOptions(1).reinit_embeddings(true).seed(9))(stack.list);
    auto table = stack.list->ptr<BlockImpl>(2)->table->weight;
    CHECK(all_equal(table[1], 0.0));
    check_normal(torch::cat({table.slice(0, 0, 1), table.slice(0, 2)}), 0.02);
    CHECK(report.embedding == 1);
    CHECK(stack.list->ptr<BlockImpl>(1)->table->weight.min().item<double>() >= 2.5);
  }
  SECTION("a vector of shared_ptr<BlockImpl> and of holders") {
    Stack stack(3, 64);
    std::vector<std::shared_ptr<BlockImpl>> impls;
    std::vector<Block> holders;
    for (size_t i = 0; i < 3; ++i) {
      impls.push_back(stack.list->ptr<BlockImpl>(i));
      holders.emplace_back(stack.list->ptr<BlockImpl>(i));
    }
    CHECK(ReinitTopLayers(ReinitTopLayersOptions(1).seed(1))(impls).linear == 3);
    CHECK(ReinitTopLayers(ReinitTopLayersOptions(3).seed(1))(holders).linear == 9);
  }
}

TEST_CASE("ReinitTopLayers is reproducible and leaves the global RNG alone", "[reinit]") {
  // Returns re-initialized tensors only (each Stack draws its own
  // "pretrained" values from the global RNG): the pooler's weight and the top
  // block's feed-forward weight.
  auto run = [](ReinitTopLayersOptions options, at::Generator gen = {}) {
    Stack stack(3, 64);
    const ReinitTopLayers reinit(options);
    reinit(stack.list, stack.extra(), gen);
    return std::vector<torch::Tensor>{stack.pooler->weight.clone(),
                                      stack.list->ptr<BlockImpl>(2)->up->weight.clone()};
  };
  const auto a = run(ReinitTopLayersOptions(2).seed(42));
  const auto b = run(ReinitTopLayersOptions(2).seed(42));
  const auto c = run(ReinitTopLayersOptions(2).seed(43));
  const auto d = run(ReinitTopLayersOptions(2), at::detail::createCPUGenerator(42));
  for (size_t i = 0; i < a.size(); ++i) {
    INFO("tensor " << i);
    CHECK(torch::equal(a[i], b[i]));
    CHECK(torch::equal(a[i], d[i]));
    CHECK_FALSE(torch::equal(a[i], c[i]));
  }

  torch::manual_seed(7);
  const auto expected = torch::rand({4});
  Stack stack(2, 64);
  torch::manual_seed(7);
  ReinitTopLayers(ReinitTopLayersOptions(2).seed(1))(stack.list, stack.extra());
  CHECK(torch::equal(torch::rand({4}), expected));
}

TEST_CASE("ReinitTopLayers: n = 0 is a no-op; bad input throws", "[reinit]") {
  Stack stack(6, 64);
  const auto before = stack.snapshot();
  const auto report = ReinitTopLayers(ReinitTopLayersOptions(0).seed(1))(stack.list, stack.extra());
  const auto after = stack.snapshot();
  for (size_t i = 0; i < before.size(); ++i) CHECK(torch::equal(before[i], after[i]));
  CHECK(report.reset.empty());
  CHECK(report.elements == 0);

  REQUIRE_THROWS_WITH(ReinitTopLayers(7)(stack.list),
                      HasSubstring("n = 7 but the layer stack has only 6 layers"));
  REQUIRE_THROWS_AS(ReinitTopLayers(-1), std::invalid_argument);
  REQUIRE_THROWS_WITH(ReinitTopLayers(ReinitTopLayersOptions(1).initializer_range(-0.02)),
                      HasSubstring("initializer_range must be finite and >= 0"));
  REQUIRE_THROWS_AS(ReinitTopLayers(ReinitTopLayersOptions(1).initializer_range(NAN)),
                    std::invalid_argument);
  REQUIRE_THROWS_AS(ReinitTopLayers(1)(stack.list, {{"pooler", nullptr}}), std::invalid_argument);
  const auto unchanged = stack.snapshot();
  for (size_t i = 0; i < before.size(); ++i) CHECK(torch::equal(before[i], unchanged[i]));
}

TEST_CASE("ReinitTopLayers runs on the parameters' device", "[reinit][cuda]") {
  if (!torch::cuda::is_available()) {
    SUCCEED("no CUDA device: skipped");
    return;
  }
  Stack stack(2, 64);
  stack.list->to(torch::kCUDA);
  const auto report = ReinitTopLayers(ReinitTopLayersOptions(1).seed(3))(stack.list);
  auto block = stack.list->ptr<BlockImpl>(1);
  CHECK(block->up->weight.device().is_cuda());
  check_normal(block->up->weight.cpu(), 0.02);
  CHECK(all_equal(block->norm->weight.cpu(), 1.0));
  REQUIRE_THROWS_AS(ReinitTopLayers(1)(stack.list, {}, at::detail::createCPUGenerator(1)),
                    std::invalid_argument);
}

TEST_CASE("ReinitTopLayers draws what the article's notebook draws (seeded generator)",
          "[reinit]") {
  // tests/reference/ref_swa.py: the notebook's _do_reinit (pooler, then
  // layer[-1], layer[-2] through Module.apply) plus HF's Embedding init, with
  // torch.Generator().manual_seed(seed) on the CPU.
  const auto g = finetune_test::load_golden_json("swa_reinit.json");
  const int64_t h = g.at("hidden").get<int64_t>();
  torch::nn::ModuleList list;
  for (int64_t i = 0; i < g.at("layers").get<int64_t>(); ++i) {
    list->push_back(Block(h, g.at("num_embeddings").get<int64_t>()));
  }
  torch::nn::Linear pooler(h, h);
  const auto report =
      ReinitTopLayers(ReinitTopLayersOptions(g.at("n").get<int64_t>())
                          .initializer_range(g.at("initializer_range").get<double>())
                          .reinit_embeddings(true)
                          .seed(g.at("seed").get<uint64_t>()))(list, {{"pooler", pooler.ptr()}});
  std::map<std::string, torch::Tensor> actual;
  for (const auto& p : pooler->named_parameters()) actual["pooler." + p.key()] = p.value();
  for (size_t i = 0; i < list->size(); ++i) {
    for (const auto& p : list->ptr(i)->named_parameters()) {
      actual["layer." + std::to_string(i) + "." + p.key()] = p.value();
    }
  }
  const auto& after = g.at("after");
  REQUIRE(after.size() == 2 + 2 * 10);
  for (const auto& item : after.items()) {
    INFO(item.key());
    REQUIRE(actual.count(item.key()) == 1);
    const auto& t = actual.at(item.key());
    const auto want = torch::tensor(item.value().get<std::vector<double>>(), torch::kDouble);
    // The same CPU kernels consume the same Mersenne-Twister stream: equal.
    CHECK(torch::equal(t.to(torch::kDouble).reshape({-1}), want));
  }
  CHECK(report.embedding == 2);
}
