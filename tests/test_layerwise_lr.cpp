// Layer-wise LR groups against the article's own group-building code
// (tests/reference/ref_lr_schedule.py runs the notebook's functions on a real
// transformers.RobertaModel and dumps membership, lr and weight decay).
#include <torch/torch.h>

#include <algorithm>
#include <map>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "catch.hpp"
#include "finetune/layerwise_lr.hpp"
#include "golden.hpp"
#include "test_helpers.hpp"

namespace {

using finetune::LayerId;
using finetune::LayerwiseLRGroups;
using finetune::LayerwiseLROptions;
using finetune::LLRDMode;
using Params = torch::OrderedDict<std::string, torch::Tensor>;
using nlohmann::json;

const json& golden() {
  static const json g = finetune_test::load_golden_json("layerwise_lr_groups.json");
  return g;
}

// The model's named parameters as in Python (names and sizes).
Params params_of(const json& model) {
  Params params;
  for (const auto& p : model.at("params")) {
    params.insert(p.at(0).get<std::string>(),
                  torch::zeros({p.at(1).get<int64_t>()}).requires_grad_(true));
  }
  return params;
}

// name -> (lr, weight decay) over a list of golden groups.
std::map<std::string, std::pair<double, double>> per_param(const json& groups) {
  std::map<std::string, std::pair<double, double>> out;
  for (const auto& g : groups)
    for (const auto& n : g.at("params"))
      out[n.get<std::string>()] = {g.at("lr").get<double>(), g.at("weight_decay").get<double>()};
  return out;
}

template <typename O>
void require_same_groups(const LayerwiseLRGroups<O>& ours, const json& theirs) {
  REQUIRE(ours.size() == theirs.size());
  for (size_t g = 0; g < ours.size(); ++g) {
    INFO("group " << g << " (" << ours.groups()[g].label << ")");
    const auto& info = ours.groups()[g];
    CHECK(info.parameter_names == theirs[g].at("params").get<std::vector<std::string>>());
    CHECK(info.lr == theirs[g].at("lr").get<double>());  // bit-identical
    CHECK(info.weight_decay == theirs[g].at("weight_decay").get<double>());
  }
}

template <typename O>
void require_same_per_param(const LayerwiseLRGroups<O>& ours, const json& theirs,
                            size_t expected_params) {
  const auto want = per_param(theirs);
  size_t seen = 0;
  for (const auto& g : ours.groups()) {
    for (const auto& name : g.parameter_names) {
      INFO(name << " in group " << g.label);
      REQUIRE(want.count(name) == 1);
      CHECK(g.lr == want.at(name).first);
      CHECK(g.weight_decay == want.at(name).second);
      ++seen;
    }
  }
  CHECK(seen == expected_params);
}

}  // namespace

using finetune_test::contains;
using finetune_test::invalid_argument_message;

TEST_CASE("layer-wise LLRD reproduces the notebook's groups, lrs and weight decay",
          "[layerwise_lr]") {
  for (const char* model : {"roberta12", "roberta4", "roberta6"}) {
    INFO(model);
    const auto& m = golden().at(model);
    LayerwiseLRGroups<> ours(params_of(m), LayerwiseLROptions::article_layerwise());
    CHECK(ours.num_layers() == m.at("num_layers").get<int64_t>());
    require_same_groups(ours, m.at("layerwise"));
  }
}

TEST_CASE("grouped LLRD, one group per parameter, reproduces the notebook", "[layerwise_lr]") {
  for (const char* model : {"roberta12", "roberta4", "roberta6"}) {
    INFO(model);
    const auto& m = golden().at(model);
    LayerwiseLRGroups<> ours(params_of(m), LayerwiseLROptions::article_grouped());
    require_same_groups(ours, m.at("grouped"));
  }
}

TEST_CASE("grouped LLRD, one group per set, gives every parameter the notebook's lr",
          "[layerwise_lr]") {
  for (const char* model : {"roberta12", "roberta4", "roberta6"}) {
    INFO(model);
    const auto& m = golden().at(model);
    LayerwiseLRGroups<> ours(params_of(m),
                             LayerwiseLROptions::article_grouped().per_parameter(false));
    require_same_per_param(ours, m.at("grouped"), m.at("params").size());
    // head, three sets, each split into no-decay and decay groups
    REQUIRE(ours.size() == 8);
    CHECK(ours.groups()[0].label == "head");
    CHECK(ours.groups()[7].label.rfind("embeddings, layer", 0) == 0);
  }
  const auto& m = golden().at("roberta12");
  LayerwiseLRGroups<> ours(params_of(m),
                           LayerwiseLROptions::article_grouped().per_parameter(false));
  CHECK(ours.groups()[2].label == "layers 8-11");
  CHECK(ours.groups()[4].label == "layers 4-7");
  CHECK(ours.groups()[6].label == "embeddings, layers 0-3");
}

TEST_CASE("explicit group_starts: a 4/4/4 split written out equals the default", "[layerwise_lr]") {
  const auto& m = golden().at("roberta12");
  LayerwiseLRGroups<> ours(
      params_of(m),
      LayerwiseLROptions::article_grouped().per_parameter(false).group_starts({0, 4, 8}));
  require_same_per_param(ours, m.at("grouped"), m.at("params").size());
}

TEST_CASE("mode none: one group of every parameter", "[layerwise_lr]") {
  const auto& m = golden().at("roberta12");
  LayerwiseLRGroups<> ours(params_of(m),
                           LayerwiseLROptions(1e-6).mode(LLRDMode::none).weight_decay(0.0));
  require_same_groups(ours, m.at("none"));
  // With weight decay: the same parameters, split into no-decay / decay.
  LayerwiseLRGroups<> split(params_of(m), LayerwiseLROptions(1e-6).mode(LLRDMode::none));
  REQUIRE(split.size() == 2);
  CHECK(split.groups()[0].weight_decay == 0.0);
  CHECK(split.groups()[1].weight_decay == 0.01);
  CHECK(split.groups()[0].parameter_names.size() + split.groups()[1].parameter_names.size() ==
        m.at("params").size());
  // Mode none consults no layer rule: any names work.
  Params odd;
  odd.insert("anything.weight", torch::zeros({2}, torch::requires_grad()));
  CHECK(LayerwiseLRGroups<>(odd, LayerwiseLROptions().mode(LLRDMode::none)).size() == 1);
}

TEST_CASE("frozen parameters are skipped and do not shift the layer count", "[layerwise_lr]") {
  const auto& m = golden().at("roberta12");
  Params params = params_of(m);
  size_t frozen = 0;
  for (auto& item : params) {
    if (contains(item.key(), "embeddings") || contains(item.key(), "encoder.layer.11.")) {
      item.value().requires_grad_(false);
      ++frozen;
    }
  }
  LayerwiseLRGroups<> ours(params, LayerwiseLROptions::article_layerwise());
  CHECK(ours.num_layers() == 12);
  for (const auto& g : ours.groups())
    for (const auto& n : g.parameter_names)
      CHECK_FALSE((contains(n, "embeddings") || contains(n, "layer.11.")));
  require_same_per_param(ours, m.at("layerwise"), m.at("params").size() - frozen);
}

TEST_CASE("an unmatched parameter is an error naming it, or goes to the catch-all group",
          "[layerwise_lr]") {
  const auto& m = golden().at("roberta12");
  Params params = params_of(m);
  params.insert("attention_head.weight", torch::zeros({3}, torch::requires_grad()));
  params.insert("attention_head.bias", torch::zeros({1}, torch::requires_grad()));
  const std::string message = invalid_argument_message(
      [&] { LayerwiseLRGroups<> g(params, LayerwiseLROptions::article_layerwise()); });
  CHECK(contains(message, "'attention_head.weight'"));
  CHECK(contains(message, "catch_all"));

  LayerwiseLRGroups<> ours(
      params, LayerwiseLROptions::article_layerwise().catch_all(true).catch_all_lr(5e-6));
  REQUIRE(ours.size() == 30);
  const auto& nd = ours.groups()[28];
  const auto& d = ours.groups()[29];
  CHECK(nd.label == "catch-all");
  CHECK(nd.parameter_names == std::vector<std::string>{"attention_head.bias"});
  CHECK(d.parameter_names == std::vector<std::string>{"attention_head.weight"});
  CHECK(nd.lr == 5e-6);
  CHECK(nd.weight_decay == 0.0);
  CHECK(d.weight_decay == 0.01);
  // Everything else as in the notebook.
  const auto& theirs = m.at("layerwise");
  for (size_t g = 0; g < 28; ++g) {
    CHECK(ours.groups()[g].parameter_names ==
          theirs[g].at("params").get<std::vector<std::string>>());
  }
}

TEST_CASE("every trainable parameter lands in exactly one group; tied weights once",
          "[layerwise_lr]") {
  const auto& m = golden().at("roberta12");
  Params params = params_of(m);
  // Tie the regressor weight to the word embeddings (one tensor, two names).
  params.insert("regressor.tied.weight", params["roberta_model.embeddings.word_embeddings.weight"]);
  for (auto options :
       {LayerwiseLROptions::article_layerwise(), LayerwiseLROptions::article_grouped(),
        LayerwiseLROptions::article_grouped().per_parameter(false),
        LayerwiseLROptions().mode(LLRDMode::none)}) {
    LayerwiseLRGroups<> ours(params, options);
    std::map<const void*, int> count;
    std::map<std::string, int> names;
    for (const auto& group : ours.param_groups())
      for (const auto& p : group.params()) ++count[p.unsafeGetTensorImpl()];
    for (const auto& g : ours.groups())
      for (const auto& n : g.parameter_names) ++names[n];
    CHECK(count.size() == m.at("params").size());
    for (const auto& c : count) CHECK(c.second == 1);
    CHECK(names.count("regressor.tied.weight") == 0);
  }
}

TEST_CASE("custom layer rules: prefixes, regex and a callback fit other transformers",
          "[layerwise_lr]") {
  // The RoBERTa parameters renamed GPT-2 style; same blocks, so same lrs.
  const auto& m = golden().at("roberta12");
  const auto want = per_param(m.at("layerwise"));
  Params gpt;
  std::map<std::string, std::string> original;
  for (const auto& p : m.at("params")) {
    std::string name = p.at(0).get<std::string>();
    std::string renamed = name;
    const std::string layer = "roberta_model.encoder.layer.";
    if (renamed.rfind(layer, 0) == 0) renamed = "transformer.h." + renamed.substr(layer.size());
    const std::string emb = "roberta_model.embeddings.";
    if (renamed.rfind(emb, 0) == 0) renamed = "transformer.wte_block." + renamed.substr(emb.size());
    const std::string pool = "roberta_model.pooler.";
    if (renamed.rfind(pool, 0) == 0) renamed = "lm_head.pool." + renamed.substr(pool.size());
    if (renamed.rfind("regressor.", 0) == 0) renamed = "lm_head." + renamed.substr(10);
    gpt.insert(renamed, torch::zeros({p.at(1).get<int64_t>()}, torch::requires_grad()));
    original[renamed] = name;
  }
  auto check = [&](const LayerwiseLRGroups<>& ours) {
    size_t seen = 0;
    for (const auto& g : ours.groups()) {
      for (const auto& n : g.parameter_names) {
        INFO(n);
        CHECK(g.lr == want.at(original.at(n)).first);
        CHECK(g.weight_decay == want.at(original.at(n)).second);
        ++seen;
      }
    }
    CHECK(seen == m.at("params").size());
  };
  SECTION("regex rules") {
    check(LayerwiseLRGroups<>(gpt, LayerwiseLROptions::article_layerwise()
                                       .layer_pattern(R"((?:^|\.)h\.(\d+)\.)")
                                       .embeddings_patterns({R"(^transformer\.wte_block\.)"})
                                       .head_patterns({R"(^lm_head\.)"})));
  }
  SECTION("callback") {
    auto assign = [](const std::string& name) {
      if (name.rfind("transformer.h.", 0) == 0) return LayerId::layer(std::stoll(name.substr(14)));
      if (name.rfind("transformer.wte_block.", 0) == 0) return LayerId::embeddings();
      if (name.rfind("lm_head.", 0) == 0) return LayerId::head();
      return LayerId::unmatched();
    };
    check(LayerwiseLRGroups<>(gpt, LayerwiseLROptions::article_layerwise().assign(assign)));
  }
  SECTION("the default rules tolerate any model prefix") {
    Params prefixed;
    for (const auto& p : m.at("params")) {
      std::string name = p.at(0).get<std::string>();
      if (name.rfind("roberta_model.", 0) == 0) name = "roberta." + name.substr(14);
      prefixed.insert(name, torch::zeros({1}, torch::requires_grad()));
    }
    LayerwiseLRGroups<> ours(prefixed, LayerwiseLROptions::article_layerwise());
    CHECK(ours.size() == 28);
    CHECK(ours.num_layers() == 12);
  }
}

namespace {
struct TinyEncoder : torch::nn::Module {
  TinyEncoder() {
    for (int i = 0; i < 3; ++i) layer->push_back(torch::nn::Linear(2, 2));
    register_module("layer", layer);
  }
  torch::nn::ModuleList layer;
};
struct TinyModel : torch::nn::Module {
  TinyModel() {
    register_module("embeddings", embeddings);
    register_module("encoder", encoder);
    register_module("regressor", regressor);
  }
  torch::nn::Embedding embeddings{5, 2};
  std::shared_ptr<TinyEncoder> encoder = std::make_shared<TinyEncoder>();
  torch::nn::Linear regressor{2, 1};
};
}  // namespace

namespace {
// Requires optimizer group g to hold exactly the golden group's parameters
// (by name, in order) and returns its options, cast to O.
template <typename O>
const O& golden_group(const torch::optim::Optimizer& optimizer, const Params& params,
                      const json& theirs, size_t g) {
  const auto& group = optimizer.param_groups()[g];
  const auto names = theirs[g].at("params").get<std::vector<std::string>>();
  REQUIRE(group.params().size() == names.size());
  for (size_t i = 0; i < names.size(); ++i) {
    INFO(names[i]);
    REQUIRE(group.params()[i].unsafeGetTensorImpl() == params[names[i]].unsafeGetTensorImpl());
  }
  return static_cast<const O&>(group.options());
}
}  // namespace

TEST_CASE("groups feed a user's AdamW, SGD or Adam; options carry over", "[layerwise_lr]") {
  // The optimizer's groups hold the notebook's lr and weight decay (the
  // oracle's), with the user's other options.
  const auto& m = golden().at("roberta4");
  const Params params = params_of(m);
  LayerwiseLRGroups<torch::optim::AdamWOptions> llrd(
      params, LayerwiseLROptions::article_layerwise(),
      torch::optim::AdamWOptions().betas({0.8, 0.9}).eps(1e-7));
  torch::optim::AdamW adamw(llrd.param_groups(), torch::optim::AdamWOptions(1e-3));
  llrd.apply_to(adamw);
  const auto& layerwise = m.at("layerwise");
  REQUIRE(adamw.param_groups().size() == layerwise.size());
  for (size_t g = 0; g < layerwise.size(); ++g) {
    INFO("group " << g);
    const auto& o = golden_group<torch::optim::AdamWOptions>(adamw, params, layerwise, g);
    CHECK(o.lr() == layerwise[g].at("lr").get<double>());
    CHECK(o.weight_decay() == layerwise[g].at("weight_decay").get<double>());
    CHECK(std::get<0>(o.betas()) == 0.8);
    CHECK(std::get<1>(o.betas()) == 0.9);
    CHECK(o.eps() == 1e-7);
  }

  LayerwiseLRGroups<torch::optim::SGDOptions> sgd_groups(
      params, LayerwiseLROptions::article_grouped(), torch::optim::SGDOptions(0.1).momentum(0.9));
  torch::optim::SGD sgd(sgd_groups.param_groups(), torch::optim::SGDOptions(0.1));
  sgd_groups.apply_to(sgd);
  const auto& grouped = m.at("grouped");
  REQUIRE(sgd.param_groups().size() == grouped.size());
  for (size_t g = 0; g < grouped.size(); ++g) {
    INFO("group " << g);
    const auto& o = golden_group<torch::optim::SGDOptions>(sgd, params, grouped, g);
    CHECK(o.lr() == grouped[g].at("lr").get<double>());
    CHECK(o.weight_decay() == grouped[g].at("weight_decay").get<double>());
    CHECK(o.momentum() == 0.9);
  }

  // A module: the layer stack is found, head first, embeddings last.
  TinyModel model;
  auto options = LayerwiseLROptions(1e-3).decay(0.5).head_lr(2e-3);
  LayerwiseLRGroups<torch::optim::AdamWOptions> tiny(model, options);
  REQUIRE(tiny.num_layers() == 3);
  CHECK(tiny.groups().front().label == "head");
  CHECK(tiny.groups().front().lr == 2e-3);
  CHECK(tiny.groups().back().label == "embeddings");
  CHECK(tiny.groups().back().parameter_names == std::vector<std::string>{"embeddings.weight"});
  // An options type without weight decay accepts only weight_decay 0.
  CHECK(contains(invalid_argument_message([&] {
                   LayerwiseLRGroups<torch::optim::LBFGSOptions> g(model, options,
                                                                   torch::optim::LBFGSOptions(1.0));
                 }),
                 "weight_decay"));
  LayerwiseLRGroups<torch::optim::LBFGSOptions> lbfgs(
      model, LayerwiseLROptions(options).weight_decay(0.0), torch::optim::LBFGSOptions(1.0));
  CHECK(lbfgs.size() == 5);
  // One training step runs with the groups and moves the parameters.
  torch::optim::AdamW tiny_adamw(tiny.param_groups(), torch::optim::AdamWOptions(1e-3));
  tiny.apply_to(tiny_adamw);
  const auto before = model.regressor->weight.clone();
  auto loss = model.regressor(model.embeddings(torch::tensor({1, 2}, torch::kLong))).sum();
  loss.backward();
  tiny_adamw.step();
  CHECK_FALSE(torch::equal(model.regressor->weight, before));
}

TEST_CASE("apply_to pins each group's options against LibTorch 2.x's merge with defaults",
          "[layerwise_lr]") {
  // LibTorch 2.x replaces a group's option that equals the options type's
  // constructor default (AdamW: lr 1e-3, weight_decay 0.01) by the
  // optimizer's own (here 2e-5 and 0); apply_to puts the group's back.
  const auto& m = golden().at("roberta12");
  const Params params = params_of(m);
  SECTION("the notebook's groups: weight decay 0.01 stays 0.01") {
    LayerwiseLRGroups<> llrd(params, LayerwiseLROptions::article_layerwise());
    torch::optim::AdamW adamw(llrd.param_groups(),
                              torch::optim::AdamWOptions(2e-5).weight_decay(0.0));
    llrd.apply_to(adamw);
    const auto& theirs = m.at("layerwise");
    REQUIRE(adamw.param_groups().size() == theirs.size());
    size_t decayed = 0;
    for (size_t g = 0; g < theirs.size(); ++g) {
      INFO("group " << g);
      const auto& o = golden_group<torch::optim::AdamWOptions>(adamw, params, theirs, g);
      CHECK(o.lr() == theirs[g].at("lr").get<double>());
      CHECK(o.weight_decay() == theirs[g].at("weight_decay").get<double>());
      decayed += theirs[g].at("weight_decay").get<double>() == 0.01;
    }
    CHECK(decayed == theirs.size() / 2);
  }
  SECTION("an lr equal to AdamW's default 1e-3 stays 1e-3") {
    LayerwiseLRGroups<> llrd(params, LayerwiseLROptions(1e-3).mode(LLRDMode::none));
    torch::optim::AdamW adamw(llrd.param_groups(),
                              torch::optim::AdamWOptions(2e-5).weight_decay(0.0));
    llrd.apply_to(adamw);
    REQUIRE(adamw.param_groups().size() == 2);
    for (size_t g = 0; g < 2; ++g) {
      const auto& o =
          static_cast<const torch::optim::AdamWOptions&>(adamw.param_groups()[g].options());
      CHECK(o.lr() == 1e-3);
      CHECK(o.weight_decay() == (g == 0 ? 0.0 : 0.01));  // no decay, then decay
    }
  }
  // Another optimizer's groups or options type are refused.
  LayerwiseLRGroups<> llrd(params, LayerwiseLROptions::article_layerwise());
  torch::optim::AdamW adamw(llrd.param_groups(), torch::optim::AdamWOptions(2e-5));
  LayerwiseLRGroups<> other(params, LayerwiseLROptions::article_grouped());
  CHECK(contains(invalid_argument_message([&] { other.apply_to(adamw); }),
                 "the optimizer has 28 parameter groups"));
  const auto groups = llrd.param_groups();
  std::vector<torch::optim::OptimizerParamGroup> swapped;
  for (size_t g = 0; g < groups.size(); ++g) swapped.push_back(groups[g == 4 ? 6 : g == 6 ? 4 : g]);
  torch::optim::AdamW reordered(swapped, torch::optim::AdamWOptions(2e-5));
  CHECK(contains(invalid_argument_message([&] { llrd.apply_to(reordered); }),
                 "optimizer group 4 does not hold"));
  torch::optim::SGD sgd(llrd.param_groups(), torch::optim::SGDOptions(0.1));
  CHECK(contains(invalid_argument_message([&] { llrd.apply_to(sgd); }),
                 "not of this object's options type"));
}

TEST_CASE("describe() lists every group with its block, size, lr and weight decay",
          "[layerwise_lr]") {
  const auto& m = golden().at("roberta12");
  LayerwiseLRGroups<> ours(params_of(m), LayerwiseLROptions::article_layerwise());
  const std::string text = ours.describe();
  CHECK(contains(text, "mode layerwise, 12 layers, 28 groups, 201 parameters"));
  CHECK(contains(text, "group 0: head, 2 params"));
  CHECK(contains(text, "group 27: embeddings, 3 params"));
  CHECK(std::count(text.begin(), text.end(), '\n') == 29);
  // Each group's line ends with the notebook's lr and weight decay (10 digits).
  std::istringstream lines(text);
  std::string line;
  std::getline(lines, line);  // the summary
  const auto& theirs = m.at("layerwise");
  for (size_t g = 0; g < theirs.size(); ++g) {
    REQUIRE(std::getline(lines, line));
    std::ostringstream want;
    want.precision(10);
    want << "lr " << theirs[g].at("lr").get<double>() << ", weight_decay "
         << theirs[g].at("weight_decay").get<double>();
    INFO(line);
    CHECK(line.rfind("  group " + std::to_string(g) + ": ", 0) == 0);
    CHECK(line.size() >= want.str().size());
    CHECK(line.substr(line.size() - std::min(line.size(), want.str().size())) == want.str());
  }
  std::ostringstream out;
  out << ours;
  CHECK(out.str() == text);
}

TEST_CASE("bad options throw std::invalid_argument saying what is wrong", "[layerwise_lr]") {
  const Params params = params_of(golden().at("roberta12"));
  auto message = [&](LayerwiseLROptions o) {
    return invalid_argument_message([&] { LayerwiseLRGroups<> g(params, o); });
  };
  CHECK(contains(message(LayerwiseLROptions(-1e-6)), "lr must be finite and >= 0"));
  CHECK(contains(message(LayerwiseLROptions().decay(0.0)), "decay must be finite and > 0"));
  CHECK(contains(message(LayerwiseLROptions().weight_decay(-0.1)),
                 "weight_decay must be finite and >= 0, got -0.1"));
  CHECK(contains(message(LayerwiseLROptions().layer_pattern(R"(layer\.\d+)")),
                 "exactly one capture group"));
  CHECK(contains(message(LayerwiseLROptions().head_patterns({"(pooler"})),
                 "not a valid ECMAScript regex"));
  CHECK(contains(message(LayerwiseLROptions().num_layers(6)),
                 "found layer index 11 but num_layers is 6"));
  CHECK(contains(message(LayerwiseLROptions().num_layers(-1)),
                 "num_layers must be >= 0 (0 = infer), got -1"));
  CHECK(contains(message(LayerwiseLROptions::article_grouped().group_starts({0, 4})),
                 "group_starts has 2"));
  CHECK(contains(message(LayerwiseLROptions::article_grouped().group_starts({0, 8, 4})),
                 "group_starts[2] = 4"));
  CHECK(contains(message(LayerwiseLROptions::article_grouped().group_starts({1, 4, 8})),
                 "group_starts[0] = 1"));
  CHECK(contains(message(LayerwiseLROptions::article_grouped().group_scales({})),
                 "group_scales is empty"));
  CHECK(contains(
      message(LayerwiseLROptions::article_grouped().group_scales(std::vector<double>(13, 1.0))),
      "splits 12 layers into 13 sets"));
  CHECK(contains(
      message(LayerwiseLROptions().assign([](const std::string&) { return LayerId::layer(-2); })),
      "negative layer index"));
  Params frozen;
  frozen.insert("encoder.layer.0.weight", torch::zeros({1}));
  CHECK(contains(invalid_argument_message([&] { LayerwiseLRGroups<> g(frozen); }),
                 "no trainable parameters"));
}
