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
#include "test_helpers.hpp"

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

TEST_CASE("ReinitTopLayers checks every module before its first write", "[reinit]") {
  // The pooler comes first in the order of writes and the bad module last:
  // a lazy check would have re-initialized the pooler (and more) already.
  Stack stack(3, 64);
  auto pooler_before = [&] {
    return std::vector<torch::Tensor>{stack.pooler->weight.clone(), stack.pooler->bias.clone()};
  }();
  auto lower_before = [&] {
    std::vector<torch::Tensor> out;
    for (size_t i = 0; i < 2; ++i)
      for (const auto& p : stack.list->ptr(i)->parameters()) out.push_back(p.clone());
    return out;
  }();
  auto untouched = [&] {
    CHECK(torch::equal(stack.pooler->weight, pooler_before[0]));
    CHECK(torch::equal(stack.pooler->bias, pooler_before[1]));
    size_t k = 0;
    for (size_t i = 0; i < 2; ++i)
      for (const auto& p : stack.list->ptr(i)->parameters())
        CHECK(torch::equal(p, lower_before[k++]));
  };
  // One weight of the top block elsewhere (the member the re-initialization
  // writes; Module::to cannot move a CPU module to the meta device).
  const auto top = stack.list->ptr<BlockImpl>(2);
  const auto query_before = top->attention[0]->as<torch::nn::Linear>()->weight.clone();
  SECTION("a generator of another device type than a top-block weight") {
    top->up->weight = torch::empty({256, 64}, torch::Device(torch::kMeta));
    const std::string message = finetune_test::invalid_argument_message(
        [&] { ReinitTopLayers(2)(stack.list, stack.extra(), at::detail::createCPUGenerator(1)); });
    CHECK_THAT(message, HasSubstring("the generator is on cpu but 'layer.2.up' is on meta"));
  }
  SECTION("an integer weight") {
    top->up->weight = torch::zeros({256, 64}, torch::kLong);
    const std::string message = finetune_test::invalid_argument_message(
        [&] { ReinitTopLayers(ReinitTopLayersOptions(2).seed(1))(stack.list, stack.extra()); });
    CHECK_THAT(message, HasSubstring("'layer.2.up' has dtype Long"));
    CHECK(torch::equal(top->up->weight, torch::zeros({256, 64}, torch::kLong)));
  }
  SECTION("an Embedding whose padding_idx is out of range") {
    const auto up_before = top->up->weight.clone();
    top->table->options.padding_idx(4096);
    const std::string message = finetune_test::invalid_argument_message([&] {
      ReinitTopLayers(ReinitTopLayersOptions(2).reinit_embeddings(true).seed(1))(stack.list,
                                                                                 stack.extra());
    });
    CHECK_THAT(message, HasSubstring("'layer.2.table' has padding_idx 4096 but 512 rows"));
    CHECK(torch::equal(top->up->weight, up_before));
  }
  untouched();
  CHECK(torch::equal(top->attention[0]->as<torch::nn::Linear>()->weight, query_before));
}

TEST_CASE("ReinitTopLayers runs on the parameters' device", "[reinit][cuda]") {
  if (!torch::cuda::is_available()) {
    finetune_test::skip("no CUDA device: ReinitTopLayers on CUDA parameters not run");
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

namespace {

using Children = std::vector<std::pair<std::string, std::shared_ptr<torch::nn::Module>>>;

// A module of named children in the given (registration) order.
std::shared_ptr<torch::nn::Module> node(const Children& children) {
  return torch::nn::ModuleDict(children).ptr();
}

// The C++ twins of transformers' RobertaLayer, RobertaPooler and
// RobertaEmbeddings: the same children, names and registration order.
struct HfRoberta {
  explicit HfRoberta(const nlohmann::json& c) {
    using namespace torch::nn;
    const int64_t h = c.at("hidden_size"), inner = c.at("intermediate_size");
    const int64_t pad = c.at("pad_token_id");
    auto ln = [&] { return LayerNorm(LayerNormOptions({h})).ptr(); };
    auto dropout = [] { return Dropout(0.1).ptr(); };
    for (int64_t i = 0; i < c.at("num_hidden_layers").get<int64_t>(); ++i) {
      layers.push_back(node({{"attention", node({{"self", node({{"query", Linear(h, h).ptr()},
                                                                {"key", Linear(h, h).ptr()},
                                                                {"value", Linear(h, h).ptr()},
                                                                {"dropout", dropout()}})},
                                                 {"output", node({{"dense", Linear(h, h).ptr()},
                                                                  {"LayerNorm", ln()},
                                                                  {"dropout", dropout()}})}})},
                             {"intermediate", node({{"dense", Linear(h, inner).ptr()},
                                                    {"intermediate_act_fn", GELU().ptr()}})},
                             {"output", node({{"dense", Linear(inner, h).ptr()},
                                              {"LayerNorm", ln()},
                                              {"dropout", dropout()}})}}));
    }
    pooler = node({{"dense", Linear(h, h).ptr()}, {"activation", Tanh().ptr()}});
    embeddings = node(
        {{"word_embeddings",
          Embedding(EmbeddingOptions(c.at("vocab_size"), h).padding_idx(pad)).ptr()},
         {"token_type_embeddings", Embedding(c.at("type_vocab_size").get<int64_t>(), h).ptr()},
         {"LayerNorm", ln()},
         {"dropout", dropout()},
         {"position_embeddings",
          Embedding(EmbeddingOptions(c.at("max_position_embeddings"), h).padding_idx(pad)).ptr()}});
    // float64 as in the oracle, "pretrained" values everywhere.
    for (auto* m : all()) m->to(torch::kDouble);
    torch::NoGradGuard no_grad;
    for (auto* m : all())
      for (auto& p : m->parameters()) p.uniform_(-0.5, 0.5).add_(3.0);
  }
  std::vector<torch::nn::Module*> all() const {
    std::vector<torch::nn::Module*> out{pooler.get(), embeddings.get()};
    for (const auto& l : layers) out.push_back(l.get());
    return out;
  }
  std::vector<std::shared_ptr<torch::nn::Module>> layers;
  std::shared_ptr<torch::nn::Module> pooler, embeddings;
};

nlohmann::json structure(const torch::nn::Module& m) {
  nlohmann::json out = nlohmann::json::array();
  for (const auto& p : m.named_parameters()) out.push_back({p.key(), p.value().sizes().vec()});
  return out;
}

}  // namespace

TEST_CASE("ReinitTopLayers equals Hugging Face's _init_weights on real RoBERTa modules",
          "[reinit]") {
  // tests/reference/ref_reinit.py: RobertaPreTrainedModel._init_weights applied
  // as the article's notebook applies its re-initialization (extra modules,
  // then layer[-1], layer[-2], ... through Module.apply) to a (float64)
  // RobertaModel's own RobertaPooler / RobertaEmbeddings / RobertaLayer, after
  // torch.manual_seed(seed).
  const auto g = finetune_test::load_golden_json("reinit_roberta.json");
  const auto& config = g.at("config");
  {
    HfRoberta twin(config);
    INFO("the C++ twins have the transformers modules' parameters");
    CHECK(structure(*twin.layers[0]) == g.at("structure").at("layer"));
    CHECK(structure(*twin.pooler) == g.at("structure").at("pooler"));
    CHECK(structure(*twin.embeddings) == g.at("structure").at("embeddings"));
  }
  REQUIRE(g.at("cases").size() == 2);
  for (const auto& c : g.at("cases")) {
    const std::string name = c.at("name");
    INFO("case " << name);
    HfRoberta twin(config);
    ReinitTopLayers::NamedModules extra;
    for (const auto& e : c.at("extra")) {
      const std::string module = e;
      extra.emplace_back(module, module == "pooler" ? twin.pooler : twin.embeddings);
    }
    const auto report =
        ReinitTopLayers(ReinitTopLayersOptions(c.at("n").get<int64_t>())
                            .initializer_range(c.at("initializer_range").get<double>())
                            .reinit_embeddings(c.at("reinit_embeddings").get<bool>())
                            .seed(c.at("seed").get<uint64_t>()))(twin.layers, extra);

    // The modules HF changed, in HF's order, are the ones reported reset.
    std::vector<std::vector<std::string>> order;
    for (const auto& e : report.reset) order.push_back({e.path, e.kind});
    CHECK(order == c.at("order").get<std::vector<std::vector<std::string>>>());
    CHECK(report.skipped.empty());

    std::map<std::string, torch::Tensor> ours;
    for (const auto& [prefix, module] : extra)
      for (const auto& p : module->named_parameters()) ours[prefix + "." + p.key()] = p.value();
    for (size_t i = 0; i < twin.layers.size(); ++i)
      for (const auto& p : twin.layers[i]->named_parameters())
        ours["layer." + std::to_string(i) + "." + p.key()] = p.value();
    const auto& after = c.at("after");
    CHECK(after.size() > 0);
    for (const auto& item : after.items()) {
      INFO(item.key());
      REQUIRE(ours.count(item.key()) == 1);
      const auto want = torch::tensor(item.value().get<std::vector<double>>(), torch::kDouble);
      // The same kernels consume the same Mersenne-Twister stream: equal
      // (the golden holds the float64 values rounded to float32).
      const auto& t = ours.at(item.key());
      REQUIRE(t.scalar_type() == torch::kDouble);
      CHECK(torch::equal(t.to(torch::kFloat).to(torch::kDouble).reshape({-1}), want));
    }
  }
}
