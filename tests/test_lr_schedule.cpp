// LR schedules against Hugging Face's own schedule functions stepped by
// PyTorch's LambdaLR on the article's LLRD groups (golden files from
// tests/reference/ref_lr_schedule.py): every group's lr at every step.
#include <torch/torch.h>

#include <cmath>
#include <functional>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "catch.hpp"
#include "finetune/layerwise_lr.hpp"
#include "finetune/lr_schedule.hpp"
#include "golden.hpp"
#include "test_helpers.hpp"

namespace {

using finetune::LayerwiseLRGroups;
using finetune::LayerwiseLROptions;
using finetune::LLRDMode;
using finetune::LRSchedule;
using nlohmann::json;

torch::OrderedDict<std::string, torch::Tensor> roberta12_params() {
  static const json groups = finetune_test::load_golden_json("layerwise_lr_groups.json");
  torch::OrderedDict<std::string, torch::Tensor> params;
  for (const auto& p : groups.at("roberta12").at("params")) {
    params.insert(p.at(0).get<std::string>(),
                  torch::zeros({p.at(1).get<int64_t>()}).requires_grad_(true));
  }
  return params;
}

// The article's optimizer for one LLRD mode, as the oracle built it.
std::unique_ptr<torch::optim::AdamW> make_optimizer(const std::string& mode, double defaults_lr) {
  LayerwiseLROptions options =
      mode == "layerwise" ? LayerwiseLROptions::article_layerwise()
      : mode == "grouped" ? LayerwiseLROptions::article_grouped()
                          : LayerwiseLROptions(1e-6).mode(LLRDMode::none).weight_decay(0.0);
  LayerwiseLRGroups<torch::optim::AdamWOptions> groups(roberta12_params(), options);
  auto optimizer = std::make_unique<torch::optim::AdamW>(groups.param_groups(),
                                                         torch::optim::AdamWOptions(defaults_lr));
  groups.apply_to(*optimizer);
  return optimizer;
}

std::unique_ptr<LRSchedule> make_schedule(const json& g, torch::optim::Optimizer& optimizer) {
  const std::string shape = g.at("schedule");
  const int64_t w = g.at("num_warmup_steps"), n = g.at("num_training_steps");
  const json& kw = g.at("kwargs");
  if (shape == "linear") {
    return std::make_unique<finetune::WarmupLinearSchedule>(
        optimizer, finetune::WarmupLinearScheduleOptions(w, n));
  }
  if (shape == "cosine" || shape == "cosine_min_lr") {
    finetune::WarmupCosineScheduleOptions o(w, n);
    if (kw.contains("num_cycles")) o.num_cycles(kw.at("num_cycles").get<double>());
    if (kw.contains("min_lr_rate")) o.min_lr_rate(kw.at("min_lr_rate").get<double>());
    return std::make_unique<finetune::WarmupCosineSchedule>(optimizer, o);
  }
  if (shape == "constant") {
    return std::make_unique<finetune::WarmupConstantSchedule>(
        optimizer, finetune::WarmupConstantScheduleOptions(w));
  }
  if (shape == "polynomial") {
    return std::make_unique<finetune::WarmupPolynomialSchedule>(
        optimizer, finetune::WarmupPolynomialScheduleOptions(w, n)
                       .power(kw.at("power").get<double>())
                       .lr_end(kw.at("lr_end").get<double>()));
  }
  if (shape == "inverse_sqrt") {
    finetune::InverseSqrtScheduleOptions o(w);
    if (kw.contains("timescale")) o.timescale(kw.at("timescale").get<int64_t>());
    return std::make_unique<finetune::InverseSqrtSchedule>(optimizer, o);
  }
  throw std::runtime_error("unknown schedule " + shape);
}

struct Agreement {
  double max_rel = 0.0;
  int64_t compared = 0, exact = 0;
};

// Compares the optimizer's lrs with golden row `step`.
void compare_row(const json& g, const torch::optim::Optimizer& optimizer,
                 const LRSchedule& schedule, int64_t step, Agreement& a) {
  const auto& row = g.at("lrs").at(static_cast<size_t>(step));
  const auto& index = g.at("group_lr_index");
  const auto last = schedule.get_last_lr();
  for (size_t i = 0; i < optimizer.param_groups().size(); ++i) {
    const double want = row.at(index.at(i).get<size_t>()).get<double>();
    const double got = optimizer.param_groups()[i].options().get_lr();
    const double rel = want == 0.0 ? std::abs(got) : std::abs(got - want) / std::abs(want);
    a.max_rel = std::max(a.max_rel, rel);
    a.exact += got == want;
    a.compared += 1;
    if (last[i] != got) a.max_rel = 1.0;  // get_last_lr must be what was set
  }
}

const char* const kCases[] = {
    "linear_none_w0",        "linear_none_w50",          "linear_layerwise_w0",
    "linear_layerwise_w50",  "linear_grouped_w0",        "linear_grouped_w50",
    "cosine_grouped_w50",    "cosine_none_w0_c2",        "cosine_min_lr_grouped_w50",
    "constant_grouped_w50",  "constant_none_w0",         "polynomial_layerwise_w50",
    "polynomial_grouped_w0", "inverse_sqrt_grouped_w50", "inverse_sqrt_none_w0_t10",
    "inverse_sqrt_none_w0",
};

}  // namespace

using finetune_test::contains;
using finetune_test::invalid_argument_message;

TEST_CASE("every schedule, LLRD mode and warm-up matches HF + LambdaLR at every step",
          "[lr_schedule]") {
  int64_t all = 0, all_exact = 0;
  for (const char* name : kCases) {
    const json g = finetune_test::load_golden_json(std::string("lr_schedule_") + name + ".json");
    INFO(name);
    auto optimizer = make_optimizer(g.at("llrd"), g.at("defaults_lr"));
    REQUIRE(optimizer->param_groups().size() == g.at("num_groups").get<size_t>());
    auto schedule = make_schedule(g, *optimizer);
    // The groups start where the oracle's did (initial_lr), bit for bit.
    for (size_t i = 0; i < schedule->initial_lrs().size(); ++i) {
      CHECK(schedule->initial_lrs()[i] ==
            g.at("initial_lrs").at(g.at("group_lr_index").at(i).get<size_t>()).get<double>());
    }
    Agreement a;
    const int64_t steps = static_cast<int64_t>(g.at("lrs").size());
    for (int64_t step = 0; step < steps; ++step) {
      REQUIRE(schedule->step_count() == step);
      compare_row(g, *optimizer, *schedule, step, a);
      schedule->step();
    }
    INFO("compared " << a.compared << " lrs, " << a.exact
                     << " bit-identical, max relative difference " << a.max_rel);
    CHECK(a.compared == steps * static_cast<int64_t>(optimizer->param_groups().size()));
    CHECK(a.max_rel <= 1e-12);
    all += a.compared;
    all_exact += a.exact;
  }
  // Not a requirement (another libm may differ in the last bit), but worth seeing.
  WARN(all_exact << " of " << all << " scheduled lrs are bit-identical to PyTorch + HF");
}

TEST_CASE("save/load: a resumed run continues the same curve", "[lr_schedule]") {
  const json g = finetune_test::load_golden_json("lr_schedule_linear_layerwise_w50.json");
  const int64_t stop = 120, steps = static_cast<int64_t>(g.at("lrs").size());
  std::stringstream buffer;
  {
    auto optimizer = make_optimizer("layerwise", 3.5e-6);
    auto schedule = make_schedule(g, *optimizer);
    for (int64_t s = 0; s < stop; ++s) schedule->step();
    torch::serialize::OutputArchive archive;
    schedule->save(archive);
    archive.save_to(buffer);
  }
  // A fresh process: new groups, and (as after loading an optimizer
  // checkpoint) the groups' lrs already moved away from their initial values.
  auto optimizer = make_optimizer("layerwise", 3.5e-6);
  for (auto& group : optimizer->param_groups())
    group.options().set_lr(group.options().get_lr() * 0.37);
  auto schedule = make_schedule(g, *optimizer);
  torch::serialize::InputArchive archive;
  archive.load_from(buffer);
  schedule->load(archive);
  REQUIRE(schedule->step_count() == stop);
  Agreement a;
  for (int64_t step = stop; step < steps; ++step) {
    compare_row(g, *optimizer, *schedule, step, a);
    schedule->step();
  }
  CHECK(a.compared == (steps - stop) * 28);
  CHECK(a.max_rel <= 1e-12);

  // An archive for another number of groups is refused.
  auto other = make_optimizer("grouped", 1e-6);
  finetune::WarmupLinearSchedule wrong(*other, finetune::WarmupLinearScheduleOptions(0, 10));
  buffer.clear();
  buffer.seekg(0);
  torch::serialize::InputArchive again;
  again.load_from(buffer);
  CHECK(contains(invalid_argument_message([&] { wrong.load(again); }),
                 "holds 28 initial lrs but the optimizer has 201"));
}

TEST_CASE("load: a bad archive throws std::invalid_argument naming the key, state unchanged",
          "[lr_schedule]") {
  auto p = torch::zeros({2}, torch::requires_grad());
  auto q = torch::zeros({3}, torch::requires_grad());
  torch::optim::SGD sgd(
      {torch::optim::OptimizerParamGroup({p}),
       torch::optim::OptimizerParamGroup({q}, std::make_unique<torch::optim::SGDOptions>(0.25))},
      torch::optim::SGDOptions(0.5));
  finetune::WarmupLinearSchedule schedule(sgd, finetune::WarmupLinearScheduleOptions(4, 20));
  for (int i = 0; i < 6; ++i) schedule.step();
  const auto lrs = [&] {
    std::vector<double> out;
    for (const auto& g : sgd.param_groups()) out.push_back(g.options().get_lr());
    return out;
  };
  const auto step_before = schedule.step_count();
  const auto initial_before = schedule.initial_lrs();
  const auto last_before = schedule.get_last_lr();
  const auto lrs_before = lrs();
  REQUIRE(lrs_before == last_before);

  // An archive holding what `write` put there (a fresh process's view of it).
  auto archive_of = [](const std::function<void(torch::serialize::OutputArchive&)>& write) {
    torch::serialize::OutputArchive out;
    write(out);
    std::stringstream buffer;
    out.save_to(buffer);
    auto in = std::make_shared<torch::serialize::InputArchive>();
    in->load_from(buffer);
    return in;
  };
  const auto steps = torch::tensor(int64_t{3}, torch::kInt64);
  const auto two_lrs = torch::tensor(std::vector<double>{0.5, 0.25}, torch::kFloat64);
  auto message = [&](const std::function<void(torch::serialize::OutputArchive&)>& write) {
    auto archive = archive_of(write);
    return invalid_argument_message([&] { schedule.load(*archive); });
  };
  using Out = torch::serialize::OutputArchive;
  CHECK(contains(message([](Out&) {}), "the archive has no tensor 'lr_schedule/step'"));
  CHECK(contains(message([&](Out& a) { a.write("lr_schedule/step", steps); }),
                 "the archive has no tensor 'lr_schedule/initial_lrs'"));
  CHECK(contains(message([&](Out& a) {
                   a.write("lr_schedule/step", c10::IValue(std::string("three")));
                   a.write("lr_schedule/initial_lrs", two_lrs);
                 }),
                 "no tensor 'lr_schedule/step'"));
  CHECK(contains(message([&](Out& a) {
                   a.write("lr_schedule/step", torch::tensor(2.5));
                   a.write("lr_schedule/initial_lrs", two_lrs);
                 }),
                 "lr_schedule/step is not one integer step count >= 0"));
  CHECK(contains(message([&](Out& a) {
                   a.write("lr_schedule/step", torch::tensor(int64_t{-1}, torch::kInt64));
                   a.write("lr_schedule/initial_lrs", two_lrs);
                 }),
                 "lr_schedule/step is not one integer step count >= 0"));
  CHECK(contains(message([&](Out& a) {
                   a.write("lr_schedule/step", steps);
                   a.write("lr_schedule/initial_lrs", torch::tensor({1, 2}, torch::kInt64));
                 }),
                 "lr_schedule/initial_lrs has dtype Long"));
  CHECK(contains(message([&](Out& a) {
                   a.write("lr_schedule/step", steps);
                   a.write("lr_schedule/initial_lrs",
                           torch::tensor(std::vector<double>{0.5, std::nan("")}, torch::kFloat64));
                 }),
                 "lr_schedule/initial_lrs[1] = nan is not a finite lr >= 0"));
  CHECK(contains(message([&](Out& a) {
                   a.write("lr_schedule/step", steps);
                   a.write("lr_schedule/initial_lrs", torch::tensor(std::vector<double>{0.5}));
                 }),
                 "archive holds 1 initial lrs but the optimizer has 2"));
  // After every failure: the same step, initial lrs and optimizer lrs.
  CHECK(schedule.step_count() == step_before);
  CHECK(schedule.initial_lrs() == initial_before);
  CHECK(schedule.get_last_lr() == last_before);
  CHECK(lrs() == lrs_before);
  // And a good archive still loads into it and sets the lrs of its step.
  auto saved = archive_of([&](Out& a) { schedule.save(a); });
  for (auto& g : sgd.param_groups()) g.options().set_lr(0.0);
  schedule.load(*saved);
  CHECK(lrs() == lrs_before);

  // A factor that throws while loading: the schedule is not half-loaded either.
  finetune::LRSchedule picky(sgd, [](int64_t step) {
    if (step == 3) throw std::invalid_argument("factor: no step 3");
    return 1.0;
  });
  const auto picky_lrs = lrs();
  auto good = archive_of([&](Out& a) {
    a.write("lr_schedule/step", steps);
    a.write("lr_schedule/initial_lrs", two_lrs);
  });
  CHECK(contains(invalid_argument_message([&] { picky.load(*good); }), "factor: no step 3"));
  CHECK(picky.step_count() == 0);
  CHECK(picky.initial_lrs() == picky_lrs);
  CHECK(lrs() == picky_lrs);
}

TEST_CASE("step semantics: factor(0) after construction, one factor per step", "[lr_schedule]") {
  auto p = torch::zeros({2}, torch::requires_grad());
  torch::optim::SGD sgd({p}, torch::optim::SGDOptions(0.5));
  LRSchedule custom(sgd, [](int64_t step) { return 1.0 / static_cast<double>(step + 2); });
  CHECK(sgd.param_groups()[0].options().get_lr() == 0.25);
  CHECK(custom.last_factor() == 0.5);
  custom.step();
  CHECK(custom.step_count() == 1);
  CHECK(sgd.param_groups()[0].options().get_lr() == 0.5 / 3.0);
  CHECK(custom.get_last_lr() == std::vector<double>{0.5 / 3.0});
  CHECK(custom.initial_lrs() == std::vector<double>{0.5});
  CHECK(custom.factor_at(8) == 0.1);
  // A group added later (gradual unfreezing) is adopted at the next step with
  // the lr it was added with (here the optimizer's default, 0.5).
  sgd.add_param_group(
      torch::optim::OptimizerParamGroup({torch::zeros({1}, torch::requires_grad())}));
  custom.step();
  CHECK(custom.initial_lrs() == std::vector<double>{0.5, 0.5});
  CHECK(custom.get_last_lr() == std::vector<double>{0.5 / 4.0, 0.5 / 4.0});
  CHECK(sgd.param_groups()[1].options().get_lr() == 0.5 / 4.0);
}

TEST_CASE("bad input throws std::invalid_argument saying what is wrong", "[lr_schedule]") {
  auto p = torch::zeros({2}, torch::requires_grad());
  torch::optim::AdamW opt({p}, torch::optim::AdamWOptions(1e-3));
  using namespace finetune;
  auto linear = [&](int64_t w, int64_t n) {
    return invalid_argument_message(
        [&] { WarmupLinearSchedule s(opt, WarmupLinearScheduleOptions(w, n)); });
  };
  CHECK(contains(linear(-1, 10), "num_warmup_steps must be >= 0, got -1"));
  CHECK(contains(linear(0, 0), "num_training_steps must be > 0, got 0"));
  CHECK(contains(linear(0, -5), "num_training_steps must be > 0, got -5"));
  CHECK(contains(linear(11, 10), "num_warmup_steps (11) must be at most num_training_steps (10)"));
  CHECK(contains(linear(11, 10), "WarmupLinearSchedule"));
  auto cosine = [&](WarmupCosineScheduleOptions o) {
    return invalid_argument_message([&] { WarmupCosineSchedule s(opt, o); });
  };
  CHECK(contains(cosine(WarmupCosineScheduleOptions(0, 10).num_cycles(0.0)),
                 "num_cycles must be finite and > 0"));
  CHECK(contains(cosine(WarmupCosineScheduleOptions(0, 10).num_cycles(-1.0)),
                 "num_cycles must be finite and > 0, got -1"));
  CHECK(contains(cosine(WarmupCosineScheduleOptions(0, 10).min_lr_rate(1.5)),
                 "min_lr_rate must be in [0, 1]"));
  CHECK(
      contains(cosine(WarmupCosineScheduleOptions(20, 10)), "must be at most num_training_steps"));
  auto poly = [&](WarmupPolynomialScheduleOptions o) {
    return invalid_argument_message([&] { WarmupPolynomialSchedule s(opt, o); });
  };
  CHECK(contains(poly(WarmupPolynomialScheduleOptions(10, 10)),
                 "must be less than num_training_steps"));
  CHECK(contains(poly(WarmupPolynomialScheduleOptions(0, 10).power(0.0)),
                 "power must be finite and > 0"));
  CHECK(contains(poly(WarmupPolynomialScheduleOptions(0, 10).power(std::nan(""))),
                 "power must be finite and > 0, got nan"));
  CHECK(contains(poly(WarmupPolynomialScheduleOptions(0, 10).lr_end(1e-3)),
                 "must be smaller than the optimizer's default lr (0.001"));
  CHECK(contains(invalid_argument_message(
                     [&] { WarmupConstantSchedule s(opt, WarmupConstantScheduleOptions(-3)); }),
                 "num_warmup_steps must be >= 0, got -3"));
  CHECK(contains(
      invalid_argument_message([&] { InverseSqrtSchedule s(opt, InverseSqrtScheduleOptions(-1)); }),
      "num_warmup_steps must be >= 0"));
  CHECK(contains(invalid_argument_message([&] {
                   InverseSqrtSchedule s(opt, InverseSqrtScheduleOptions(5).timescale(-2));
                 }),
                 "timescale must be > 0"));
  CHECK(contains(invalid_argument_message([&] { LRSchedule s(opt, LRSchedule::Factor()); }),
                 "empty factor"));
  // An optimizer without groups.
  torch::optim::SGD empty(std::vector<torch::optim::OptimizerParamGroup>{},
                          torch::optim::SGDOptions(0.1));
  CHECK(contains(invalid_argument_message(
                     [&] { WarmupLinearSchedule s(empty, WarmupLinearScheduleOptions(0, 10)); }),
                 "no parameter groups"));
  // Bad options leave the optimizer untouched.
  CHECK(opt.param_groups()[0].options().get_lr() == 1e-3);
}

// The README snippet, compiled and run: LLRD groups + warm-up with a user's
// own AdamW and training loop.
TEST_CASE("README: layer-wise LR decay with linear warm-up in a user's loop", "[lr_schedule]") {
  torch::manual_seed(0);
  struct Net : torch::nn::Module {
    torch::nn::Embedding embeddings{register_module("embeddings", torch::nn::Embedding(10, 4))};
    torch::nn::ModuleList layers{register_module(
        "layers", torch::nn::ModuleList(torch::nn::Linear(4, 4), torch::nn::Linear(4, 4),
                                        torch::nn::Linear(4, 4)))};
    torch::nn::Linear regressor{register_module("regressor", torch::nn::Linear(4, 1))};
  } model;
  const int64_t total_steps = 20;

  // --- README snippet ---
  auto llrd = finetune::LayerwiseLRGroups<torch::optim::AdamWOptions>(
      model.named_parameters(),
      finetune::LayerwiseLROptions(3.5e-6)                // top layer
          .decay(0.9)                                     // x0.9 per layer down
          .head_lr(3.6e-6)                                // regressor
          .weight_decay(0.01)                             // not on biases / LayerNorm
          .layer_pattern(R"((?:^|\.)layers\.(\d+)\.)"));  // this model's layer names
  std::cout << llrd;                                      // group -> layers, lr, weight decay
  torch::optim::AdamW optimizer(llrd.param_groups(), torch::optim::AdamWOptions(3.5e-6));
  llrd.apply_to(optimizer);  // pin group options (LibTorch 2.x merges)
  finetune::WarmupLinearSchedule schedule(
      optimizer, finetune::WarmupLinearScheduleOptions(/*num_warmup_steps=*/5, total_steps));
  for (int64_t step = 0; step < total_steps; ++step) {
    auto x = torch::randint(0, 10, {8});
    auto h = model.embeddings(x);
    for (const auto& layer : *model.layers)
      h = torch::relu(layer->as<torch::nn::Linear>()->forward(h));
    auto loss = torch::mse_loss(model.regressor(h).squeeze(-1), torch::ones({8}));
    optimizer.zero_grad();
    loss.backward();
    optimizer.step();
    schedule.step();  // after optimizer.step(), like PyTorch
  }
  // --- end of snippet ---

  REQUIRE(llrd.num_layers() == 3);
  CHECK(llrd.groups().front().label == "head");
  CHECK(llrd.groups().back().label == "embeddings");
  CHECK(schedule.step_count() == total_steps);
  for (double lr : schedule.get_last_lr()) CHECK(lr == 0.0);  // linear decay ends at 0
}
