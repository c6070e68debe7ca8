// unfreezing.hpp: GradualUnfreezing with layer-wise LR groups that include the
// frozen parameters, against PyTorch (golden from tests/reference/ref_unfreezing.py:
// torch.optim.AdamW over the notebook's LLRD groups, blocks frozen by hand),
// plus the schedule by epochs, save/load and bad input.
#include <finetune/layerwise_lr.hpp>
#include <finetune/unfreezing.hpp>

#include <torch/torch.h>

#include <cstdint>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "catch.hpp"
#include "golden.hpp"

using finetune::GradualUnfreezing;
using finetune::GradualUnfreezingOptions;
using finetune::UnfreezeUnit;
using nlohmann::json;

namespace {

// The oracle's Model, same names and registration order.
struct LayerImpl : torch::nn::Module {
  explicit LayerImpl(int64_t h)
      : dense(register_module("dense", torch::nn::Linear(h, h))),
        LayerNorm(
            register_module("LayerNorm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({h})))) {}
  torch::Tensor forward(const torch::Tensor& x) { return LayerNorm(x + torch::tanh(dense(x))); }
  torch::nn::Linear dense;
  torch::nn::LayerNorm LayerNorm;  // NOLINT: HF's name
};
TORCH_MODULE(Layer);

struct EmbeddingsImpl : torch::nn::Module {
  EmbeddingsImpl(int64_t in, int64_t h)
      : dense(register_module("dense", torch::nn::Linear(in, h))) {}
  torch::nn::Linear dense;
};
TORCH_MODULE(Embeddings);

struct ModelImpl : torch::nn::Module {
  ModelImpl(int64_t in, int64_t h, int64_t layers)
      : embeddings(register_module("embeddings", Embeddings(in, h))),
        encoder(register_module("encoder", std::make_shared<torch::nn::Module>())),
        regressor(register_module("regressor", torch::nn::Linear(h, 1))) {
    for (int64_t i = 0; i < layers; ++i) layer->push_back(Layer(h));
    encoder->register_module("layer", layer);
  }
  torch::Tensor forward(torch::Tensor x) {
    x = embeddings->dense(x);
    for (const auto& l : *layer) x = l->as<LayerImpl>()->forward(x);
    return regressor(x).squeeze(-1);
  }
  /// Embeddings, then the layers: bottom to top.
  std::vector<std::shared_ptr<torch::nn::Module>> blocks() {
    std::vector<std::shared_ptr<torch::nn::Module>> b{embeddings.ptr()};
    for (const auto& l : *layer) b.push_back(l);
    return b;
  }
  Embeddings embeddings;
  std::shared_ptr<torch::nn::Module> encoder;
  torch::nn::ModuleList layer;
  torch::nn::Linear regressor;
};
TORCH_MODULE(Model);

torch::Tensor values(const json& v, const torch::Tensor& like) {
  return torch::tensor(v.get<std::vector<double>>(), torch::kDouble).reshape(like.sizes());
}

void load(Model& model, const json& state) {
  torch::NoGradGuard no_grad;
  REQUIRE(state.size() == model->named_parameters().size());
  for (auto& p : model->named_parameters()) {
    REQUIRE(state.contains(p.key()));
    p.value().copy_(values(state.at(p.key()), p.value()));
  }
}

int64_t trainable_blocks(Model& model) {
  int64_t n = 0;
  for (const auto& block : model->blocks()) {
    bool any = false, all = true;
    for (const auto& p : block->parameters()) {
      any = any || p.requires_grad();
      all = all && p.requires_grad();
    }
    REQUIRE(any == all);  // a block is frozen or trainable as a whole
    n += any ? 1 : 0;
  }
  return n;
}

}  // namespace

TEST_CASE("Gradual unfreezing with LLRD over frozen parameters trains as PyTorch does",
          "[unfreezing][golden]") {
  const json g = finetune_test::load_golden_json("unfreezing.json");
  const int64_t in = g.at("in"), h = g.at("hidden"), layers = g.at("layers"), batch = g.at("batch");
  const double scale = g.at("lr_scale");
  Model model(in, h, layers);
  model->to(torch::kDouble);
  load(model, g.at("initial"));

  GradualUnfreezing unfreezing(
      model->blocks(),
      GradualUnfreezingOptions(g.at("every").get<int64_t>()).unit(UnfreezeUnit::steps));
  CHECK(unfreezing.unfrozen_blocks() == 0);
  CHECK(trainable_blocks(model) == 0);
  CHECK(model->regressor->weight.requires_grad());

  // The article's layer-wise rates, scaled as the oracle scales them; every
  // parameter has its group although the blocks are frozen.
  auto options = finetune::LayerwiseLROptions::article_layerwise();
  options.lr(options.lr() * scale).head_lr(*options.head_lr() * scale).include_frozen(true);
  finetune::LayerwiseLRGroups<torch::optim::AdamWOptions> llrd(*model, options);
  int64_t grouped = 0;
  for (const auto& group : llrd.groups())
    grouped += static_cast<int64_t>(group.parameter_names.size());
  CHECK(grouped == static_cast<int64_t>(model->parameters().size()));
  torch::optim::AdamW optimizer(llrd.param_groups(), torch::optim::AdamWOptions(3.5e-6 * scale));
  llrd.apply_to(optimizer);

  const auto& steps = g.at("after");
  for (size_t s = 0; s < steps.size(); ++s) {
    INFO("step " << s + 1);
    const auto& b = g.at("batches")[s];
    const auto x =
        torch::tensor(b.at("x").get<std::vector<double>>(), torch::kDouble).reshape({batch, in});
    const auto y = torch::tensor(b.at("y").get<std::vector<double>>(), torch::kDouble);
    optimizer.zero_grad();
    torch::mse_loss(model->forward(x), y).backward();
    optimizer.step();
    unfreezing.step();
    CHECK(unfreezing.unfrozen_blocks() == steps[s].at("unfrozen").get<int64_t>());
    CHECK(trainable_blocks(model) == unfreezing.unfrozen_blocks());
    for (const auto& p : model->named_parameters()) {
      INFO(p.key());
      const auto want = values(steps[s].at("weights").at(p.key()), p.value());
      CHECK((p.value() - want).abs().max().item<double>() < 1e-9);
    }
  }
  CHECK(unfreezing.done());
}

TEST_CASE("Gradual unfreezing by epochs, from a number of unfrozen blocks", "[unfreezing]") {
  Model model(3, 4, 3);
  model->embeddings->dense->bias.requires_grad_(false);  // frozen by the user for good
  GradualUnfreezing unfreezing(
      model->blocks(), GradualUnfreezingOptions(2).unit(UnfreezeUnit::epochs).start_unfrozen(1));
  CHECK(unfreezing.unfrozen_blocks() == 1);
  CHECK(model->layer[2]->parameters()[0].requires_grad());
  CHECK_FALSE(model->layer[1]->parameters()[0].requires_grad());
  for (int i = 0; i < 5; ++i) unfreezing.step();  // steps do not count in epoch mode
  CHECK(unfreezing.unfrozen_blocks() == 1);
  std::vector<int64_t> seen;
  for (int epoch = 0; epoch < 8; ++epoch) {
    unfreezing.epoch_end();
    seen.push_back(unfreezing.unfrozen_blocks());
  }
  CHECK(seen == std::vector<int64_t>{1, 2, 2, 3, 3, 4, 4, 4});
  CHECK(unfreezing.done());
  CHECK(model->embeddings->dense->weight.requires_grad());
  CHECK_FALSE(model->embeddings->dense->bias.requires_grad());  // stays frozen
}

TEST_CASE("Gradual unfreezing resumes from its saved counters", "[unfreezing]") {
  Model model(3, 4, 3);
  GradualUnfreezing first(model->blocks(), GradualUnfreezingOptions(2).unit(UnfreezeUnit::steps));
  for (int i = 0; i < 5; ++i) first.step();
  REQUIRE(first.unfrozen_blocks() == 2);
  std::stringstream buffer;
  {
    torch::serialize::OutputArchive archive;
    first.save(archive);
    archive.save_to(buffer);
  }
  Model fresh(3, 4, 3);
  GradualUnfreezing resumed(fresh->blocks(), GradualUnfreezingOptions(2).unit(UnfreezeUnit::steps));
  CHECK(trainable_blocks(fresh) == 0);
  torch::serialize::InputArchive archive;
  archive.load_from(buffer);
  resumed.load(archive);
  CHECK(resumed.unfrozen_blocks() == 2);
  CHECK(resumed.step_count() == 5);
  CHECK(trainable_blocks(fresh) == 2);
  resumed.step();
  first.step();
  CHECK(resumed.unfrozen_blocks() == first.unfrozen_blocks());
  CHECK(resumed.unfrozen_blocks() == 3);

  // Saved for 4 blocks, loaded into 3: refused, nothing changed.
  Model smaller(3, 4, 2);
  GradualUnfreezing other(smaller->blocks(), GradualUnfreezingOptions(2).unit(UnfreezeUnit::steps));
  std::stringstream again;
  {
    torch::serialize::OutputArchive out;
    first.save(out);
    out.save_to(again);
  }
  torch::serialize::InputArchive in;
  in.load_from(again);
  CHECK_THROWS_WITH(other.load(in),
                    finetune_test::HasSubstring("saved for 4 blocks, this one has 3"));
  CHECK(other.unfrozen_blocks() == 0);
  CHECK(trainable_blocks(smaller) == 0);
}

TEST_CASE("Gradual unfreezing rejects bad options before touching the model", "[unfreezing]") {
  Model model(3, 4, 3);
  auto blocks = model->blocks();
  using finetune_test::HasSubstring;
  CHECK_THROWS_WITH(GradualUnfreezing({}, GradualUnfreezingOptions(1)), HasSubstring("no blocks"));
  CHECK_THROWS_WITH(GradualUnfreezing(blocks, GradualUnfreezingOptions(0)),
                    HasSubstring("every must be >= 1, got 0"));
  CHECK_THROWS_WITH(GradualUnfreezing(blocks, GradualUnfreezingOptions(1).start_unfrozen(5)),
                    HasSubstring("start_unfrozen must be in [0, 4], got 5"));
  auto with_null = blocks;
  with_null[2] = nullptr;
  CHECK_THROWS_WITH(GradualUnfreezing(with_null, GradualUnfreezingOptions(1)),
                    HasSubstring("block 2 is null"));
  CHECK(trainable_blocks(model) == 4);  // untouched by the failed constructions
}
