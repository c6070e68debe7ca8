// swa.hpp against torch.optim.swa_utils (goldens from tests/reference/ref_swa.py):
// AveragedModel (SWA and EMA, with and without use_buffers), update_bn, SWALR
// and SWALR after a linear warm-up schedule; plus resume, the swap-in guard
// and the error paths.
#include <finetune/swa.hpp>

#include <torch/torch.h>

#include <algorithm>
#include <functional>
#include <memory>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "catch.hpp"
#include "golden.hpp"

using Catch::Matchers::WithinAbs;
using Catch::Matchers::WithinRel;
using finetune::AnnealStrategy;
using finetune::SWALR;
using finetune::SWALROptions;
using finetune::SWAOptions;
using finetune::SWAWrapper;
using nlohmann::json;

using finetune_test::HasSubstring;

namespace {

torch::nn::Sequential make_model() {
  return torch::nn::Sequential(torch::nn::Linear(4, 6),
                               torch::nn::LayerNorm(torch::nn::LayerNormOptions({6})),
                               torch::nn::BatchNorm1d(6), torch::nn::Linear(6, 3));
}

std::vector<std::pair<std::string, torch::Tensor>> all_tensors(const torch::nn::Module& m) {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for (const auto& p : m.named_parameters()) out.emplace_back(p.key(), p.value());
  for (const auto& b : m.named_buffers()) out.emplace_back(b.key(), b.value());
  return out;
}

torch::Tensor from_json(const json& values, const torch::Tensor& like) {
  std::vector<double> v = values.get<std::vector<double>>();
  return torch::tensor(v, torch::kDouble).to(like.scalar_type()).reshape(like.sizes());
}

// Loads a golden state (name -> flat values) into the module's tensors.
void load_state(torch::nn::Module& m, const json& state) {
  torch::NoGradGuard no_grad;
  const auto tensors = all_tensors(m);
  REQUIRE(tensors.size() == state.size());
  for (const auto& [name, t] : tensors) {
    REQUIRE(state.contains(name));
    t.copy_(from_json(state.at(name), t));
  }
}

// Every averaged tensor equals the golden state to 1e-6 (integers exactly).
void check_state(const std::vector<std::pair<std::string, torch::Tensor>>& actual,
                 const json& expected) {
  REQUIRE(actual.size() == expected.size());
  for (const auto& [name, t] : actual) {
    INFO("tensor " << name);
    const auto want = expected.at(name).get<std::vector<double>>();
    const auto flat = t.to(torch::kCPU, torch::kDouble).contiguous().reshape({-1});
    REQUIRE(static_cast<size_t>(flat.numel()) == want.size());
    const double* got = flat.data_ptr<double>();
    for (size_t i = 0; i < want.size(); ++i) {
      if (t.is_floating_point()) {
        CHECK_THAT(got[i], WithinAbs(want[i], 1e-6));
      } else {
        CHECK(got[i] == want[i]);
      }
    }
  }
}

// Feeds the golden states to `swa` through `model`; after each update the
// averages equal the golden case's (and n_averaged at the end).
void follow_golden(torch::nn::Module& model, SWAWrapper& swa, const json& steps, const json& c) {
  for (size_t k = 0; k < steps.size(); ++k) {
    INFO("after update " << k + 1);
    load_state(model, steps[k]);
    swa.update(model);
    check_state(swa.named_averages(), c.at("after")[k]);
  }
  CHECK(swa.n_averaged() == c.at("n_averaged").get<int64_t>());
}

std::vector<torch::Tensor> snapshot(const torch::nn::Module& m) {
  std::vector<torch::Tensor> out;
  for (const auto& [name, t] : all_tensors(m)) out.push_back(t.detach().clone());
  return out;
}

bool identical(const torch::nn::Module& m, const std::vector<torch::Tensor>& before) {
  const auto now = all_tensors(m);
  if (now.size() != before.size()) return false;
  for (size_t i = 0; i < now.size(); ++i) {
    if (!torch::equal(now[i].second, before[i])) return false;
  }
  return true;
}

SWAOptions options_of(const json& c) {
  SWAOptions o;
  o.use_buffers(c.at("use_buffers").get<bool>());
  if (!c.at("decay").is_null()) o.ema_decay(c.at("decay").get<double>());
  return o;
}

torch::optim::SGD make_sgd(const std::vector<double>& lrs, std::vector<torch::Tensor>& params) {
  std::vector<torch::optim::OptimizerParamGroup> groups;
  for (double lr : lrs) {
    params.push_back(torch::zeros({1}, torch::requires_grad()));
    groups.emplace_back(std::vector<torch::Tensor>{params.back()},
                        std::make_unique<torch::optim::SGDOptions>(lr));
  }
  return torch::optim::SGD(groups, torch::optim::SGDOptions(1.0));
}

std::vector<double> lrs_of(torch::optim::Optimizer& opt) {
  std::vector<double> out;
  for (auto& g : opt.param_groups()) out.push_back(g.options().get_lr());
  return out;
}

void check_lrs(const std::vector<double>& got, const json& want) {
  const auto w = want.get<std::vector<double>>();
  REQUIRE(got.size() == w.size());
  for (size_t i = 0; i < w.size(); ++i) {
    // Same double arithmetic in the same order as Python: far below 1e-6.
    CHECK_THAT(got[i], WithinRel(w[i], 1e-12) || WithinAbs(w[i], 1e-18));
  }
}

SWALROptions swalr_options_of(const json& c) {
  SWALROptions o = c.at("swa_lr").is_array()
                       ? SWALROptions(c.at("swa_lr").get<std::vector<double>>())
                       : SWALROptions(c.at("swa_lr").get<double>());
  o.anneal_epochs(c.at("anneal_epochs").get<int64_t>());
  o.anneal_strategy(c.at("anneal_strategy").get<std::string>() == "cos" ? AnnealStrategy::cos
                                                                        : AnnealStrategy::linear);
  return o;
}

}  // namespace

TEST_CASE("SWAWrapper matches AveragedModel (SWA and EMA, with/without buffers)", "[swa]") {
  const json g = finetune_test::load_golden_json("swa_average.json");
  const auto& steps = g.at("steps");
  for (const auto& c : g.at("cases")) {
    DYNAMIC_SECTION(c.at("mode").get<std::string>() << " decay=" << c.at("decay").dump()
                                                    << " use_buffers=" << c.at("use_buffers")) {
      auto model = make_model();
      load_state(*model, g.at("initial"));
      SWAWrapper swa(*model, options_of(c));
      CHECK(swa.n_averaged() == 0);
      follow_golden(*model, swa, steps, c);
    }
  }
}

TEST_CASE("update_bn matches PyTorch and restores momenta and mode", "[swa]") {
  const json g = finetune_test::load_golden_json("swa_average.json");
  const json& bn_golden = g.at("update_bn");
  auto model = make_model();
  load_state(*model, g.at("initial"));
  SWAWrapper swa(*model);
  for (const auto& s : g.at("steps")) {
    load_state(*model, s);
    swa.update(*model);
  }
  const auto training = snapshot(*model);
  std::vector<torch::Tensor> batches;
  const auto shape = bn_golden.at("batch_shape").get<std::vector<int64_t>>();
  for (const auto& b : bn_golden.at("batches")) {
    batches.push_back(from_json(b, torch::empty(shape)));
  }
  auto bn = model[2]->as<torch::nn::BatchNorm1d>();
  REQUIRE(bn != nullptr);
  bn->options.momentum(0.3);
  model->eval();
  {
    auto guard = swa.swap_in(*model);
    finetune::update_bn(*model, batches, [&](const torch::Tensor& x) { model->forward(x); });
    CHECK(bn->options.momentum().has_value());
    CHECK(bn->options.momentum().value() == 0.3);
    CHECK_FALSE(model->is_training());
    CHECK_FALSE(bn->is_training());
    check_state({{"running_mean", bn->running_mean}, {"running_var", bn->running_var}},
                {{"running_mean", bn_golden.at("running_mean")},
                 {"running_var", bn_golden.at("running_var")}});
    CHECK(bn->num_batches_tracked.item<int64_t>() ==
          bn_golden.at("num_batches_tracked").get<int64_t>());
    torch::NoGradGuard no_grad;
    const auto probe =
        from_json(bn_golden.at("probe"),
                  torch::empty(bn_golden.at("probe_shape").get<std::vector<int64_t>>()));
    check_state({{"out", model->forward(probe)}}, {{"out", bn_golden.at("probe_output")}});
  }
  // The training weights are back, the recomputed statistics stay averaged.
  CHECK(identical(*model, training));
  for (const auto& [name, t] : swa.named_averages()) {
    if (name == "2.running_mean") {
      check_state({{name, t}}, {{name, bn_golden.at("running_mean")}});
    }
  }
}

TEST_CASE("update_bn: no BatchNorm is a no-op; an exception restores the state", "[swa]") {
  SECTION("no BatchNorm") {
    torch::nn::Sequential model(torch::nn::Linear(3, 2),
                                torch::nn::LayerNorm(torch::nn::LayerNormOptions({2})));
    model->eval();
    bool called = false;
    finetune::update_bn(*model, [&] { called = true; });
    CHECK_FALSE(called);
    CHECK_FALSE(model->is_training());
  }
  SECTION("exception in the forward pass: the module is as before the call") {
    auto model = make_model();
    auto bn = model[2]->as<torch::nn::BatchNorm1d>();
    bn->options.momentum(0.25);
    {
      torch::NoGradGuard no_grad;
      bn->running_mean.uniform_(-1.0, 1.0);
      bn->running_var.uniform_(0.5, 2.0);
      bn->num_batches_tracked.fill_(9);
    }
    const auto mean = bn->running_mean.clone();
    const auto var = bn->running_var.clone();
    const auto count = bn->num_batches_tracked.clone();
    model->eval();
    model[0]->train();  // a submodule in a mode of its own
    REQUIRE_THROWS_AS(finetune::update_bn(*model,
                                          [&] {
                                            CHECK_FALSE(bn->options.momentum().has_value());
                                            CHECK(model->is_training());
                                            // One batch goes through, then the data fails.
                                            model->forward(torch::randn({5, 4}));
                                            CHECK(bn->num_batches_tracked.item<int64_t>() == 1);
                                            throw std::runtime_error("data error");
                                          }),
                      std::runtime_error);
    CHECK(bn->options.momentum().value() == 0.25);
    CHECK_FALSE(model->is_training());
    CHECK_FALSE(bn->is_training());
    CHECK(model[0]->is_training());
    CHECK_FALSE(model[1]->is_training());
    CHECK(torch::equal(bn->running_mean, mean));
    CHECK(torch::equal(bn->running_var, var));
    CHECK(torch::equal(bn->num_batches_tracked, count));
  }
  SECTION("exception inside swap_in: the averaged statistics are as before") {
    auto model = make_model();
    SWAWrapper swa(*model);
    swa.update(*model);
    const auto before = snapshot(*model);
    std::vector<torch::Tensor> averages;
    for (const auto& [name, t] : swa.named_averages()) averages.push_back(t.clone());
    {
      auto guard = swa.swap_in(*model);
      REQUIRE_THROWS_AS(finetune::update_bn(*model,
                                            [&] {
                                              model->forward(torch::randn({5, 4}));
                                              throw std::runtime_error("data error");
                                            }),
                        std::runtime_error);
    }
    CHECK(identical(*model, before));
    const auto after = swa.named_averages();
    REQUIRE(after.size() == averages.size());
    for (size_t i = 0; i < after.size(); ++i) {
      INFO(after[i].first);
      CHECK(torch::equal(after[i].second, averages[i]));
    }
  }
  SECTION("a bare BatchNorm module (the root itself)") {
    torch::nn::BatchNorm1d bn(3);
    {
      torch::NoGradGuard no_grad;
      bn->running_mean.fill_(5.0);
    }
    const auto x = torch::arange(12, torch::kFloat).reshape({4, 3});
    finetune::update_bn(*bn, [&] { bn->forward(x); });
    // Statistics were reset and accumulated from the one batch only.
    CHECK(torch::allclose(bn->running_mean, x.mean(0)));
    CHECK(bn->num_batches_tracked.item<int64_t>() == 1);
  }
}

TEST_CASE("SWALR matches torch.optim.swa_utils.SWALR", "[swa][swalr]") {
  const json g = finetune_test::load_golden_json("swa_lr.json");
  for (const auto& c : g.at("swalr")) {
    DYNAMIC_SECTION(c.at("anneal_strategy").get<std::string>()
                    << " anneal_epochs=" << c.at("anneal_epochs") << " swa_lr=" << c.at("swa_lr")) {
      std::vector<torch::Tensor> params;
      auto start = c.at("start_lr").get<std::vector<double>>();
      auto opt = make_sgd(start, params);
      SWALR swalr(opt, swalr_options_of(c));
      const auto& want = c.at("lr");
      check_lrs(lrs_of(opt), want[0]);
      check_lrs(swalr.get_last_lr(), want[0]);
      for (size_t k = 1; k < want.size(); ++k) {
        INFO("step " << k);
        swalr.step();
        check_lrs(lrs_of(opt), want[k]);
      }
    }
  }
}

TEST_CASE("SWALR takes over from a linear warm-up schedule as in the article", "[swa][swalr]") {
  const json c = finetune_test::load_golden_json("swa_lr.json").at("composition");
  const auto base = c.at("base_lr").get<std::vector<double>>();
  const int64_t warmup = c.at("num_warmup_steps").get<int64_t>();
  const int64_t total = c.at("num_training_steps").get<int64_t>();
  std::vector<torch::Tensor> params;
  auto opt = make_sgd(base, params);
  // Stand-in for the warm-up schedule (finetune/lr_schedule.hpp is not used
  // here so that swa.hpp is tested alone): Hugging Face's linear lambda.
  int64_t last_epoch = 0;
  auto schedule_set = [&] {
    const double f =
        last_epoch < warmup
            ? static_cast<double>(last_epoch) / static_cast<double>(std::max<int64_t>(1, warmup))
            : std::max(0.0, static_cast<double>(total - last_epoch) /
                                static_cast<double>(std::max<int64_t>(1, total - warmup)));
    for (size_t i = 0; i < base.size(); ++i) opt.param_groups()[i].options().set_lr(base[i] * f);
  };
  schedule_set();  // LambdaLR's construction step
  SWALR swalr(opt, SWALROptions(c.at("swa_lr").get<double>())
                       .anneal_epochs(c.at("anneal_epochs").get<int64_t>())
                       .anneal_strategy(AnnealStrategy::cos));
  check_lrs(lrs_of(opt), c.at("after_construction"));
  const int64_t swa_start = c.at("swa_start").get<int64_t>();
  for (int64_t step = 0; step < c.at("steps").get<int64_t>(); ++step) {
    INFO("step " << step);
    check_lrs(lrs_of(opt), c.at("lr_used")[step]);
    if (step >= swa_start) {
      swalr.step();
    } else {
      ++last_epoch;
      schedule_set();
    }
  }
  check_lrs(lrs_of(opt), c.at("final_lr"));
}

TEST_CASE("SWALR save/load continues the trajectory exactly", "[swa][swalr]") {
  const json g = finetune_test::load_golden_json("swa_lr.json");
  const json* chosen = nullptr;
  for (const auto& c : g.at("swalr")) {
    if (c.at("anneal_epochs") == 10 && c.at("anneal_strategy") == "cos" &&
        c.at("swa_lr").is_array()) {
      chosen = &c;
    }
  }
  REQUIRE(chosen != nullptr);
  const auto& c = *chosen;
  const auto start = c.at("start_lr").get<std::vector<double>>();
  std::vector<torch::Tensor> params_a, params_b;
  auto opt = make_sgd(start, params_a);
  SWALR swalr(opt, swalr_options_of(c));
  for (int k = 0; k < 4; ++k) swalr.step();
  std::stringstream opt_stream, sched_stream;
  {
    torch::serialize::OutputArchive a;
    opt.save(a);
    a.save_to(opt_stream);
    torch::serialize::OutputArchive b;
    swalr.save(b);
    b.save_to(sched_stream);
  }
  // A fresh run: other start lrs and options, then the saved state.
  auto opt2 = make_sgd({1.0, 1.0, 1.0}, params_b);
  SWALR resumed(opt2, SWALROptions(0.5).anneal_epochs(2).anneal_strategy(AnnealStrategy::linear));
  {
    torch::serialize::InputArchive a;
    a.load_from(opt_stream);
    opt2.load(a);
    torch::serialize::InputArchive b;
    b.load_from(sched_stream);
    resumed.load(b);
  }
  CHECK(resumed.step_count() == swalr.step_count());
  CHECK(resumed.options().anneal_epochs() == 10);
  check_lrs(lrs_of(opt2), c.at("lr")[4]);
  for (size_t k = 5; k < c.at("lr").size(); ++k) {
    resumed.step();
    check_lrs(lrs_of(opt2), c.at("lr")[k]);
  }
}

TEST_CASE("SWAWrapper save/load resumes the average exactly", "[swa]") {
  const json g = finetune_test::load_golden_json("swa_average.json");
  const auto& steps = g.at("steps");
  for (const auto& c : g.at("cases")) {
    DYNAMIC_SECTION(c.at("mode").get<std::string>() << " decay=" << c.at("decay").dump()
                                                    << " use_buffers=" << c.at("use_buffers")) {
      auto model = make_model();
      load_state(*model, g.at("initial"));
      SWAWrapper swa(*model, options_of(c));
      for (size_t k = 0; k < 3; ++k) {
        load_state(*model, steps[k]);
        swa.update(*model);
      }
      std::stringstream stream;
      {
        torch::serialize::OutputArchive archive;
        swa.save(archive);
        archive.save_to(stream);
      }
      auto fresh = make_model();  // different random weights
      SWAWrapper resumed(*fresh, options_of(c));
      {
        torch::serialize::InputArchive archive;
        archive.load_from(stream);
        resumed.load(archive);
      }
      CHECK(resumed.n_averaged() == 3);
      check_state(resumed.named_averages(), c.at("after")[2]);
      for (size_t k = 3; k < steps.size(); ++k) {
        load_state(*fresh, steps[k]);
        resumed.update(*fresh);
        check_state(resumed.named_averages(), c.at("after")[k]);
      }
    }
  }
  SECTION("options or module that differ are rejected") {
    auto model = make_model();
    SWAWrapper swa(*model, SWAOptions().ema_decay(0.9));
    swa.update(*model);
    std::stringstream stream;
    torch::serialize::OutputArchive archive;
    swa.save(archive);
    archive.save_to(stream);
    const std::string bytes = stream.str();
    auto load_into = [&](SWAWrapper& target) {
      std::stringstream in(bytes);
      torch::serialize::InputArchive a;
      a.load_from(in);
      target.load(a);
    };
    SWAWrapper plain(*model);
    REQUIRE_THROWS_WITH(load_into(plain), HasSubstring("ema_decay=0.9"));
    torch::nn::Sequential other(torch::nn::Linear(4, 6));
    SWAWrapper smaller(*other, SWAOptions().ema_decay(0.9));
    REQUIRE_THROWS_AS(load_into(smaller), std::invalid_argument);
  }
}

TEST_CASE("swap_in: evaluate and save the averages, training weights always come back", "[swa]") {
  auto model = make_model();
  torch::optim::SGD opt(model->parameters(), torch::optim::SGDOptions(0.1));
  SWAWrapper swa(*model);
  const auto x = torch::randn({8, 4});
  for (int k = 0; k < 3; ++k) {
    opt.zero_grad();
    model->forward(x).pow(2).sum().backward();
    opt.step();
    swa.update(*model);
  }
  const auto training = snapshot(*model);
  const auto* weight_impl = model[0]->as<torch::nn::Linear>()->weight.unsafeGetTensorImpl();
  std::vector<torch::Tensor> averages;
  for (const auto& [name, t] : swa.named_averages()) averages.push_back(t.clone());
  REQUIRE_FALSE(identical(*model, averages));

  SECTION("the guard swaps in, and back when it goes out of scope") {
    std::stringstream saved;
    {
      auto guard = swa.swap_in(*model);
      CHECK(swa.swapped_in());
      CHECK(identical(*model, averages));
      // The module's own tensors (and member handles) now carry the averages.
      CHECK(model[0]->as<torch::nn::Linear>()->weight.unsafeGetTensorImpl() == weight_impl);
      CHECK(torch::equal(model[0]->as<torch::nn::Linear>()->weight, averages[0]));
      torch::save(model, saved);
      REQUIRE_THROWS_AS(swa.update(*model), std::invalid_argument);
      REQUIRE_THROWS_AS(swa.swap_in(*model), std::invalid_argument);
    }
    CHECK_FALSE(swa.swapped_in());
    CHECK(identical(*model, training));
    // Averaging into the swapped-back storage leaves the parameter's autograd
    // version counter alone (no false "modified by an inplace operation").
    const auto& weight = model[0]->as<torch::nn::Linear>()->weight;
    const auto version = weight._version();
    swa.update(*model);
    CHECK(weight._version() == version);
    auto reloaded = make_model();
    torch::load(reloaded, saved);
    CHECK(identical(*reloaded, averages));
    // Training goes on with the same parameters the optimizer holds.
    opt.zero_grad();
    model->forward(x).pow(2).sum().backward();
    opt.step();
    CHECK_FALSE(identical(*model, training));
  }
  SECTION("an exception thrown while swapped in still restores") {
    try {
      auto guard = swa.swap_in(*model);
      throw std::runtime_error("evaluation failed");
    } catch (const std::runtime_error&) {
    }
    CHECK_FALSE(swa.swapped_in());
    CHECK(identical(*model, training));
    for (size_t i = 0; i < averages.size(); ++i) {
      CHECK(torch::equal(swa.named_averages()[i].second, averages[i]));
    }
  }
  SECTION("restore() early, moved guards restore once") {
    auto guard = swa.swap_in(*model);
    auto moved = std::move(guard);
    moved.restore();
    CHECK(identical(*model, training));
    moved.restore();
    CHECK(identical(*model, training));
  }
}

TEST_CASE("SWAWrapper and SWALR reject bad input", "[swa]") {
  auto model = make_model();
  REQUIRE_THROWS_WITH(SWAWrapper(*model, SWAOptions().ema_decay(1.5)),
                      HasSubstring("ema_decay must be in [0, 1], got 1.5"));
  REQUIRE_THROWS_AS(SWAWrapper(*model, SWAOptions().ema_decay(-0.1)), std::invalid_argument);
  SWAWrapper swa(*model);
  torch::nn::Sequential other(torch::nn::Linear(4, 6),
                              torch::nn::LayerNorm(torch::nn::LayerNormOptions({6})));
  REQUIRE_THROWS_WITH(swa.update(*other), HasSubstring("the module has 4 parameters and buffers"));
  torch::nn::Sequential wider(torch::nn::Linear(4, 7),
                              torch::nn::LayerNorm(torch::nn::LayerNormOptions({6})),
                              torch::nn::BatchNorm1d(6), torch::nn::Linear(6, 3));
  REQUIRE_THROWS_WITH(swa.update(*wider), HasSubstring("'0.weight' is [7, 4]"));
  auto doubled = make_model();
  doubled->to(torch::kDouble);
  REQUIRE_THROWS_AS(swa.swap_in(*doubled), std::invalid_argument);
  CHECK(swa.n_averaged() == 0);

  std::vector<torch::Tensor> params;
  auto opt = make_sgd({0.1, 0.2}, params);
  REQUIRE_THROWS_WITH(SWALR(opt, SWALROptions(std::vector<double>{0.1, 0.2, 0.3})),
                      HasSubstring("expected 1 or 2 values for swa_lr"));
  REQUIRE_THROWS_WITH(SWALR(opt, SWALROptions(0.1).anneal_epochs(-1)), HasSubstring("got -1"));
  REQUIRE_THROWS_AS(SWALR(opt, SWALROptions(-0.1)), std::invalid_argument);
  REQUIRE_THROWS_AS(SWALR(opt, SWALROptions(std::nan(""))), std::invalid_argument);
}

namespace {
// The archive written by `save`, copied key by key (`keys`, then
// "<prefix>0", "<prefix>1", ... while present) with `key` replaced by `value`.
template <typename Saver>
torch::serialize::InputArchive with_key(const Saver& save, std::vector<std::string> keys,
                                        const std::string& prefix, const std::string& key,
                                        const c10::IValue& value) {
  torch::serialize::OutputArchive out;
  save(out);
  std::stringstream first;
  out.save_to(first);
  torch::serialize::InputArchive saved;
  saved.load_from(first);
  c10::IValue probe;
  for (int i = 0; !prefix.empty() && saved.try_read(prefix + std::to_string(i), probe); ++i) {
    keys.push_back(prefix + std::to_string(i));
  }
  torch::serialize::OutputArchive copy;
  for (const auto& k : keys) {
    c10::IValue v;
    REQUIRE(saved.try_read(k, v));
    copy.write(k, k == key ? value : v);
  }
  std::stringstream second;
  copy.save_to(second);
  torch::serialize::InputArchive in;
  in.load_from(second);
  return in;
}
}  // namespace

TEST_CASE("SWAWrapper and SWALR load: a key of the wrong type is std::invalid_argument naming it",
          "[swa]") {
  auto model = make_model();
  SWAWrapper swa(*model);
  swa.update(*model);
  const auto before = snapshot(*model);
  auto save_swa = [&](torch::serialize::OutputArchive& a) { swa.save(a); };
  const std::vector<std::pair<std::string, c10::IValue>> bad_swa = {
      {"swa_ema_decay", c10::IValue(std::string("0.9"))},
      {"swa_use_buffers", c10::IValue(int64_t{1})},
      {"swa_names", c10::IValue(2.5)},
      {"swa_n_averaged", c10::IValue(1.0)},
      {"swa_average_0", c10::IValue(int64_t{3})},
  };
  {  // the copy itself is a valid archive
    SWAWrapper target(*model);
    auto archive =
        with_key(save_swa, {"swa_n_averaged", "swa_ema_decay", "swa_use_buffers", "swa_names"},
                 "swa_average_", "", c10::IValue());
    target.load(archive);
    CHECK(target.n_averaged() == 1);
  }
  for (const auto& [key, value] : bad_swa) {
    INFO(key);
    SWAWrapper target(*model);
    const std::vector<std::string> keys = {"swa_n_averaged", "swa_ema_decay", "swa_use_buffers",
                                           "swa_names"};
    auto archive = with_key(save_swa, keys, "swa_average_", key, value);
    REQUIRE_THROWS_AS(target.load(archive), std::invalid_argument);
    auto again = with_key(save_swa, keys, "swa_average_", key, value);
    REQUIRE_THROWS_WITH(target.load(again), HasSubstring("key '" + key + "' holds a"));
    CHECK(target.n_averaged() == 0);  // nothing loaded
  }

  std::vector<torch::Tensor> params;
  auto opt = make_sgd({0.1, 0.2}, params);
  SWALR swalr(opt, SWALROptions(0.05).anneal_epochs(3));
  swalr.step();
  auto save_swalr = [&](torch::serialize::OutputArchive& a) { swalr.save(a); };
  const std::vector<std::pair<std::string, c10::IValue>> bad_swalr = {
      {"swalr_step_count", c10::IValue(2.0)},
      {"swalr_anneal_epochs", c10::IValue(std::string("3"))},
      {"swalr_anneal_strategy", c10::IValue(int64_t{0})},
      {"swalr_swa_lr", c10::IValue(0.05)},
      {"swalr_last_lr", c10::IValue(std::vector<int64_t>{1, 2})},
  };
  for (const auto& [key, value] : bad_swalr) {
    INFO(key);
    std::vector<torch::Tensor> other_params;
    auto other = make_sgd({0.1, 0.2}, other_params);
    SWALR target(other, SWALROptions(0.05).anneal_epochs(3));
    const auto lrs = target.get_last_lr();
    auto archive = with_key(save_swalr,
                            {"swalr_step_count", "swalr_anneal_epochs", "swalr_anneal_strategy",
                             "swalr_swa_lr", "swalr_last_lr"},
                            "", key, value);
    REQUIRE_THROWS_WITH(target.load(archive), HasSubstring("key '" + key + "' holds a"));
    CHECK(target.step_count() == 0);  // Scheduler counting: none taken
    CHECK(target.get_last_lr() == lrs);
  }
  CHECK(identical(*model, before));
}

TEST_CASE("EMA weights: decay 0 follows the model, decay 1 keeps the first state", "[swa]") {
  auto model = make_model();
  SWAWrapper follow(*model, SWAOptions().ema_decay(0.0));
  SWAWrapper keep(*model, SWAOptions().ema_decay(1.0));
  follow.update(*model);
  keep.update(*model);
  const auto first = snapshot(*model);
  {
    torch::NoGradGuard no_grad;
    for (auto& p : model->parameters()) p.add_(1.0);
  }
  follow.update(*model);
  keep.update(*model);
  const auto now = snapshot(*model);
  const auto params = model->parameters().size();
  for (size_t i = 0; i < params; ++i) {
    CHECK(torch::equal(follow.named_averages()[i].second, now[i]));
    CHECK(torch::equal(keep.named_averages()[i].second, first[i]));
  }
}

// ---------------------------------------------------------------------------
// Precision: float32 averages of bfloat16 tensors
// ---------------------------------------------------------------------------

namespace {
// The module's floating tensors in bf16 (Module::to(dtype) would convert the
// integer num_batches_tracked as well, unlike PyTorch's).
void to_bf16(torch::nn::Module& m) {
  torch::NoGradGuard no_grad;
  for (auto& p : m.parameters()) p.set_data(p.to(torch::kBFloat16));
  for (auto& b : m.buffers()) {
    if (b.is_floating_point()) b.set_data(b.to(torch::kBFloat16));
  }
}
}  // namespace

TEST_CASE("SWAWrapper on a bfloat16 model equals a float32 AveragedModel fed the bf16 weights",
          "[swa][bf16]") {
  const json base = finetune_test::load_golden_json("swa_average.json");
  const json g = finetune_test::load_golden_json("swa_bf16.json");
  const auto& steps = base.at("steps");
  for (const auto& c : g.at("cases")) {
    DYNAMIC_SECTION(c.at("mode").get<std::string>() << " decay=" << c.at("decay").dump()
                                                    << " use_buffers=" << c.at("use_buffers")) {
      auto model = make_model();
      to_bf16(*model);
      load_state(*model, base.at("initial"));
      SWAWrapper swa(*model, options_of(c));
      follow_golden(*model, swa, steps, c);
      // The default: float32 averages of bf16 parameters (and averaged buffers).
      for (const auto& [name, t] : swa.named_averages()) {
        INFO(name);
        const bool running = name.find("running_") != std::string::npos;
        const bool count = name.find("num_batches") != std::string::npos;
        const bool averaged = !running && !count;
        if (averaged) CHECK(t.scalar_type() == torch::kFloat);
        if (running) {  // copied (bf16) unless averaged
          CHECK(t.scalar_type() ==
                (c.at("use_buffers").get<bool>() ? torch::kFloat : torch::kBFloat16));
        }
        if (count) CHECK(t.scalar_type() == torch::kLong);
      }
      // swap_in gives the module bf16 tensors (the averages cast), and back exactly.
      const auto training = snapshot(*model);
      const auto averages = swa.named_averages();
      {
        auto guard = swa.swap_in(*model);
        const auto now = all_tensors(*model);
        for (size_t i = 0; i < now.size(); ++i) {
          INFO(now[i].first);
          CHECK(now[i].second.scalar_type() == training[i].scalar_type());
          CHECK(torch::equal(now[i].second, averages[i].second.to(training[i].scalar_type())));
        }
      }
      CHECK(identical(*model, training));
      const auto after = swa.named_averages();
      for (size_t i = 0; i < after.size(); ++i) {
        CHECK(torch::equal(after[i].second, averages[i].second));  // float32 bits kept
      }
    }
  }
}

namespace {
// A bf16 layer whose weights drift by `delta` per step from where they start;
// `swa` and the float64 reference average the same bf16 weights, the
// reference with avg = d * avg + (1 - d) * p (EMA) or avg += (p - avg)/(n+1).
double drift_error(const SWAOptions& options, int64_t steps) {
  torch::manual_seed(11);
  torch::nn::Linear layer(16, 16);
  to_bf16(*layer);
  const auto start = layer->weight.detach().to(torch::kDouble).clone();
  const double delta = 2e-3;
  SWAWrapper swa(*layer, options);
  torch::Tensor reference;
  for (int64_t k = 0; k < steps; ++k) {
    {
      torch::NoGradGuard no_grad;
      layer->weight.copy_(start + delta * static_cast<double>(k));
    }
    swa.update(*layer);
    const auto p = layer->weight.detach().to(torch::kDouble);
    if (k == 0) {
      reference = p.clone();
    } else if (options.ema_decay()) {
      reference = *options.ema_decay() * reference + (1.0 - *options.ema_decay()) * p;
    } else {
      reference = reference + (p - reference) / static_cast<double>(k + 1);
    }
  }
  const auto averaged = swa.named_averages()[0].second.to(torch::kDouble);
  return (averaged - reference).abs().max().item<double>();
}
}  // namespace

TEST_CASE("EMA and SWA of a drifting bf16 model follow the float64 average of its weights",
          "[swa][bf16]") {
  // 2000 steps of 2e-3: the weights move by 4, the EMA (0.999) by about 3.
  // In bf16 an EMA step of 1e-3 * (p - avg) is below the average's last bit.
  SECTION("EMA 0.999") { CHECK(drift_error(SWAOptions().ema_decay(0.999), 2000) < 1e-3); }
  SECTION("SWA") { CHECK(drift_error(SWAOptions(), 2000) < 1e-3); }
}

TEST_CASE("SWAOptions::average_dtype: float64 averages of a float32 model; bad dtypes refused",
          "[swa]") {
  const json g = finetune_test::load_golden_json("swa_average.json");
  const auto& c = g.at("cases").at(0);  // SWA, no buffers
  REQUIRE(c.at("decay").is_null());
  auto model = make_model();
  load_state(*model, g.at("initial"));
  SWAWrapper swa(*model, options_of(c).average_dtype(torch::kDouble));
  for (size_t k = 0; k < g.at("steps").size(); ++k) {
    load_state(*model, g.at("steps")[k]);
    swa.update(*model);
    check_state(swa.named_averages(), c.at("after")[k]);
  }
  CHECK(swa.named_averages()[0].second.scalar_type() == torch::kDouble);
  REQUIRE_THROWS_WITH(SWAWrapper(*model, SWAOptions().average_dtype(torch::kLong)),
                      HasSubstring("average_dtype must be a floating dtype, got Long"));
}

// ---------------------------------------------------------------------------
// Allocation at the first update; save/load before it
// ---------------------------------------------------------------------------

TEST_CASE("SWAWrapper allocates nothing before the first update; save/load work before it",
          "[swa]") {
  const json g = finetune_test::load_golden_json("swa_average.json");
  const auto& steps = g.at("steps");
  const auto& c = g.at("cases").at(2);  // EMA 0.9, no buffers
  auto model = make_model();
  load_state(*model, g.at("initial"));
  SWAWrapper swa(*model, options_of(c));
  // Placeholders: the averages' names, shapes and dtypes, one element of storage each.
  const auto placeholders = swa.named_averages();
  const auto live = all_tensors(*model);
  REQUIRE(placeholders.size() == live.size());
  for (size_t i = 0; i < live.size(); ++i) {
    INFO(live[i].first);
    CHECK(placeholders[i].first == live[i].first);
    CHECK(placeholders[i].second.sizes() == live[i].second.sizes());
    CHECK(placeholders[i].second.scalar_type() == live[i].second.scalar_type());
    CHECK(placeholders[i].second.storage().nbytes() ==
          static_cast<size_t>(placeholders[i].second.element_size()));
  }
  REQUIRE_THROWS_WITH(swa.swap_in(*model), HasSubstring("nothing averaged yet"));
  CHECK_FALSE(swa.swapped_in());

  auto save = [](const SWAWrapper& w) {
    std::stringstream stream;
    torch::serialize::OutputArchive archive;
    w.save(archive);
    archive.save_to(stream);
    return stream.str();
  };
  auto load = [](SWAWrapper& w, const std::string& bytes) {
    std::stringstream stream(bytes);
    torch::serialize::InputArchive archive;
    archive.load_from(stream);
    w.load(archive);
  };
  const std::string before = save(swa);
  // A state saved before the first update resumes as a fresh averager.
  auto other = make_model();
  SWAWrapper resumed(*other, options_of(c));
  load(resumed, before);
  CHECK(resumed.n_averaged() == 0);
  for (size_t k = 0; k < steps.size(); ++k) {
    load_state(*other, steps[k]);
    resumed.update(*other);
    check_state(resumed.named_averages(), c.at("after")[k]);
  }
  // Loading it into an averager that has averaged goes back to nothing averaged.
  load(resumed, before);
  CHECK(resumed.n_averaged() == 0);
  CHECK(resumed.named_averages()[0].second.storage().nbytes() ==
        static_cast<size_t>(resumed.named_averages()[0].second.element_size()));
  REQUIRE_THROWS_AS(resumed.swap_in(*other), std::invalid_argument);
  // And a state saved after updates loads into one that has not averaged yet.
  load_state(*model, steps[0]);
  swa.update(*model);
  load_state(*model, steps[1]);
  swa.update(*model);
  SWAWrapper late(*other, options_of(c));
  load(late, save(swa));
  CHECK(late.n_averaged() == 2);
  check_state(late.named_averages(), c.at("after")[1]);
  // A module without tensors: averaged (nothing) once, it can be swapped in.
  torch::nn::Sequential bare;
  SWAWrapper none(*bare);
  none.update(*bare);
  auto guard = none.swap_in(*bare);
  CHECK(none.swapped_in());
}

// ---------------------------------------------------------------------------
// Copy-in evaluation (averages of another dtype or device)
// ---------------------------------------------------------------------------

TEST_CASE("swap_in copies averages of another dtype in; only changed copies are written back",
          "[swa][bf16]") {
  auto model = make_model();
  to_bf16(*model);
  SWAWrapper swa(*model, SWAOptions().use_buffers(true));
  {
    torch::NoGradGuard no_grad;
    swa.update(*model);
    for (auto& p : model->parameters()) p.add_(torch::randn_like(p));
    swa.update(*model);  // float32 averages that bf16 cannot hold exactly
  }
  std::vector<torch::Tensor> averages;
  for (const auto& [name, t] : swa.named_averages()) averages.push_back(t.clone());
  REQUIRE_FALSE(torch::equal(averages[0], averages[0].to(torch::kBFloat16).to(torch::kFloat)));
  const auto training = snapshot(*model);
  auto bn = model[2]->as<torch::nn::BatchNorm1d>();
  const auto* weight_impl = model[0]->as<torch::nn::Linear>()->weight.unsafeGetTensorImpl();
  {
    auto guard = swa.swap_in(*model);
    CHECK(model[0]->as<torch::nn::Linear>()->weight.unsafeGetTensorImpl() == weight_impl);
    torch::NoGradGuard no_grad;
    bn->running_mean.fill_(3.0);  // e.g. update_bn's statistics
  }
  CHECK(identical(*model, training));
  const auto after = swa.named_averages();
  for (size_t i = 0; i < after.size(); ++i) {
    INFO(after[i].first);
    if (after[i].first == "2.running_mean") {
      CHECK(torch::equal(after[i].second, torch::full_like(averages[i], 3.0)));
    } else {
      CHECK(torch::equal(after[i].second, averages[i]));  // not rounded through bf16
    }
  }
}

// ---------------------------------------------------------------------------
// The guard and a moved or destroyed wrapper
// ---------------------------------------------------------------------------

TEST_CASE("SwapGuard survives moving and destroying its SWAWrapper", "[swa]") {
  auto model = make_model();
  SWAWrapper swa(*model);
  swa.update(*model);
  {
    torch::NoGradGuard no_grad;
    for (auto& p : model->parameters()) p.add_(1.0);
  }
  swa.update(*model);
  const auto training = snapshot(*model);
  std::vector<torch::Tensor> averages;
  for (const auto& [name, t] : swa.named_averages()) averages.push_back(t.clone());

  SECTION("moved while swapped in") {
    {
      auto guard = swa.swap_in(*model);
      SWAWrapper moved = std::move(swa);
      CHECK(moved.swapped_in());
      REQUIRE_THROWS_AS(swa.n_averaged(), std::logic_error);  // NOLINT(bugprone-use-after-move)
      std::vector<SWAWrapper> many;
      many.push_back(std::move(moved));
      for (int i = 0; i < 8; ++i) many.emplace_back(*model);  // reallocations move it again
      CHECK(identical(*model, averages));
      guard.restore();
      CHECK_FALSE(many.front().swapped_in());
      CHECK(identical(*model, training));
      const auto now = many.front().named_averages();
      for (size_t i = 0; i < now.size(); ++i) CHECK(torch::equal(now[i].second, averages[i]));
    }
    CHECK(identical(*model, training));
  }
  SECTION("destroyed while swapped in") {
    auto owner = std::make_unique<SWAWrapper>(std::move(swa));
    std::optional<SWAWrapper::SwapGuard> guard;
    guard.emplace(owner->swap_in(*model));
    owner.reset();
    CHECK(identical(*model, averages));
    guard.reset();
    CHECK(identical(*model, training));
  }
}

// ---------------------------------------------------------------------------
// update_bn over any range
// ---------------------------------------------------------------------------

namespace {
// A range with non-const begin()/end() only, as LibTorch's DataLoader.
struct MutableRange {
  std::vector<torch::Tensor> items;
  std::vector<torch::Tensor>::iterator begin() { return items.begin(); }
  std::vector<torch::Tensor>::iterator end() { return items.end(); }
};
}  // namespace

TEST_CASE("update_bn takes any range: const, non-const-only, temporaries, a DataLoader", "[swa]") {
  const json g = finetune_test::load_golden_json("swa_average.json");
  const json& bn_golden = g.at("update_bn");
  const auto shape = bn_golden.at("batch_shape").get<std::vector<int64_t>>();
  std::vector<torch::Tensor> batches;
  for (const auto& b : bn_golden.at("batches")) {
    batches.push_back(from_json(b, torch::empty(shape)));
  }
  // The golden's statistics come from the SWA model; here only the data path
  // matters, so every variant is compared with the vector overload's result.
  auto run = [&](const std::function<void(torch::nn::Sequential&)>& call) {
    auto model = make_model();
    load_state(*model, g.at("initial"));
    call(model);
    auto bn = model[2]->as<torch::nn::BatchNorm1d>();
    CHECK(bn->num_batches_tracked.item<int64_t>() == static_cast<int64_t>(batches.size()));
    return std::make_pair(bn->running_mean.clone(), bn->running_var.clone());
  };
  const auto want = run([&](torch::nn::Sequential& m) {
    finetune::update_bn(*m, [&] {
      for (const auto& x : batches) m->forward(x);
    });
  });
  auto same = [&](const std::pair<torch::Tensor, torch::Tensor>& got) {
    CHECK(torch::equal(got.first, want.first));
    CHECK(torch::equal(got.second, want.second));
  };
  const std::vector<torch::Tensor>& const_batches = batches;
  same(run([&](torch::nn::Sequential& m) {
    finetune::update_bn(*m, const_batches, [&](const torch::Tensor& x) { m->forward(x); });
  }));
  MutableRange mutable_range{batches};
  same(run([&](torch::nn::Sequential& m) {
    finetune::update_bn(*m, mutable_range, [&](torch::Tensor& x) { m->forward(x); });
  }));
  same(run([&](torch::nn::Sequential& m) {
    finetune::update_bn(*m, std::vector<torch::Tensor>(batches),
                        [&](const torch::Tensor& x) { m->forward(x); });
  }));
  // LibTorch's DataLoader: the rows of the batches in order, batches of their size.
  auto data = torch::data::datasets::TensorDataset(torch::cat(batches))
                  .map(torch::data::transforms::Stack<torch::data::TensorExample>());
  auto loader = torch::data::make_data_loader<torch::data::samplers::SequentialSampler>(
      std::move(data), torch::data::DataLoaderOptions(shape[0]));
  same(run([&](torch::nn::Sequential& m) {
    finetune::update_bn(*m, *loader, [&](auto& batch) { m->forward(batch.data); });
  }));
}

// ---------------------------------------------------------------------------
// CUDA: averages on the device, and offloaded to the host
// ---------------------------------------------------------------------------

TEST_CASE("SWAWrapper on CUDA matches AveragedModel, on the device and offloaded to the CPU",
          "[swa][cuda]") {
  if (!torch::cuda::is_available()) {
    finetune_test::skip("no CUDA device: SWAWrapper on CUDA parameters not run");
    return;
  }
  const json base = finetune_test::load_golden_json("swa_average.json");
  const json bf16 = finetune_test::load_golden_json("swa_bf16.json");
  const auto& steps = base.at("steps");
  for (const bool half : {false, true}) {
    const json& g = half ? bf16 : base;
    for (const auto& c : g.at("cases")) {
      for (const bool offload : {false, true}) {
        DYNAMIC_SECTION((half ? "bf16 " : "fp32 ")
                        << c.at("mode").get<std::string>() << " decay=" << c.at("decay").dump()
                        << " use_buffers=" << c.at("use_buffers")
                        << (offload ? " averages on the CPU" : " averages on CUDA")) {
          auto model = make_model();
          if (half) to_bf16(*model);
          model->to(torch::kCUDA);
          load_state(*model, base.at("initial"));
          SWAOptions options = options_of(c);
          if (offload) options.device(torch::kCPU);
          SWAWrapper swa(*model, options);
          follow_golden(*model, swa, steps, c);
          const auto averages = swa.named_averages();
          for (const auto& [name, t] : averages) CHECK(t.is_cuda() == !offload);
          // Evaluation: the averages copied (or swapped) in, the training weights back.
          const auto training = snapshot(*model);
          {
            auto guard = swa.swap_in(*model);
            const auto now = all_tensors(*model);
            for (size_t i = 0; i < now.size(); ++i) {
              INFO(now[i].first);
              CHECK(now[i].second.is_cuda());
              CHECK(torch::equal(now[i].second.cpu(),
                                 averages[i].second.to(torch::kCPU, training[i].scalar_type())));
            }
          }
          CHECK(identical(*model, training));
          // Save and load continue the trajectory.
          std::stringstream stream;
          {
            torch::serialize::OutputArchive archive;
            swa.save(archive);
            archive.save_to(stream);
          }
          SWAWrapper resumed(*model, options);
          torch::serialize::InputArchive archive;
          archive.load_from(stream);
          resumed.load(archive);
          check_state(resumed.named_averages(), c.at("after").back());
        }
      }
    }
  }
}

TEST_CASE("SWAWrapper offloaded to the CPU: update_bn inside swap_in on CUDA keeps its statistics",
          "[swa][cuda]") {
  if (!torch::cuda::is_available()) {
    finetune_test::skip("no CUDA device: update_bn with offloaded averages not run");
    return;
  }
  const json g = finetune_test::load_golden_json("swa_average.json");
  const json& bn_golden = g.at("update_bn");
  auto model = make_model();
  model->to(torch::kCUDA);
  load_state(*model, g.at("initial"));
  SWAWrapper swa(*model, SWAOptions().device(torch::kCPU));
  for (const auto& s : g.at("steps")) {
    load_state(*model, s);
    swa.update(*model);
  }
  std::vector<torch::Tensor> batches;
  const auto shape = bn_golden.at("batch_shape").get<std::vector<int64_t>>();
  for (const auto& b : bn_golden.at("batches")) {
    batches.push_back(from_json(b, torch::empty(shape)).to(torch::kCUDA));
  }
  auto bn = model[2]->as<torch::nn::BatchNorm1d>();
  bn->options.momentum(0.3);
  model->eval();
  const auto training = snapshot(*model);
  {
    auto guard = swa.swap_in(*model);
    finetune::update_bn(*model, batches, [&](const torch::Tensor& x) { model->forward(x); });
    check_state({{"running_mean", bn->running_mean}, {"running_var", bn->running_var}},
                {{"running_mean", bn_golden.at("running_mean")},
                 {"running_var", bn_golden.at("running_var")}});
  }
  CHECK(identical(*model, training));
  for (const auto& [name, t] : swa.named_averages()) {
    if (name == "2.running_mean") {
      CHECK(t.is_cpu());
      check_state({{name, t}}, {{name, bn_golden.at("running_mean")}});
    }
  }
}
