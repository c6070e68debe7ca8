// TrainingState (training_state.hpp): a run with every technique on
// (layer-wise groups, warm-up -> SWALR, SWA, frequent evaluation, gradual
// unfreezing), dropout, shuffling and gradient accumulation, saved at many
// points, "killed", rebuilt from scratch and resumed, ends bit for bit where
// the uninterrupted run ends. Bad states are refused and change nothing;
// skipped steps move nothing.
#include <torch/torch.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "catch.hpp"
#include "finetune/lr_schedule.hpp"
#include "finetune/training_state.hpp"
#include "test_config.hpp"
#include "test_helpers.hpp"

namespace {

using finetune::TrainingState;
using finetune_test::TempDir;
namespace fs = std::filesystem;

struct NetImpl : torch::nn::Module {
  explicit NetImpl(int64_t hidden = 8) {
    a = register_module("a", torch::nn::Linear(4, hidden));
    drop = register_module("drop", torch::nn::Dropout(0.3));
    b = register_module("b", torch::nn::Linear(hidden, 1));
  }
  torch::Tensor forward(const torch::Tensor& x) {
    return b->forward(drop->forward(torch::relu(a->forward(x)))).squeeze(1);
  }
  torch::nn::Linear a{nullptr}, b{nullptr};
  torch::nn::Dropout drop{nullptr};
};
TORCH_MODULE(Net);

// The run's fixed shape: 40 rows, batches of 4, K = 2 batches per optimizer
// step (5 steps per epoch), 6 epochs = 30 optimizer steps; SWA from step 16.
constexpr int64_t kRows = 40, kBatch = 4, kAccum = 2, kEpochs = 6;
constexpr int64_t kBatches = kRows / kBatch;
constexpr int64_t kSteps = kEpochs * kBatches / kAccum;
constexpr int64_t kSwaStart = 15;

struct Data {
  torch::Tensor x, y, val_x, val_y;
  Data() {
    auto g = at::detail::createCPUGenerator(7);
    x = torch::randn({kRows, 4}, g);
    y = x.sum(1) * 0.5 + torch::randn({kRows}, g) * 0.1;
    val_x = torch::randn({12, 4}, g);
    val_y = val_x.sum(1) * 0.5;
  }
};

struct Outcome {
  std::vector<torch::Tensor> weights, averages;
  std::vector<std::vector<double>> lrs;  // per optimizer step taken, lrs it trained with
  std::string history;
  finetune::LoopPosition position;
  bool finished = false;
};

// One process of the run. It builds everything (scrambling the global
// generator first, as a fresh process would differ), resumes from `state`
// when it exists, trains, saves the state after optimizer step `save_at`,
// and "is killed" `run_on` steps later: returns without finishing.
struct RunPlan {
  explicit RunPlan(std::string d, std::optional<int64_t> save = std::nullopt, int64_t on = 0)
      : dir(std::move(d)), save_at(save), run_on(on) {}
  std::string dir;
  std::optional<int64_t> save_at;
  int64_t run_on = 0;
  bool reversed_registration = false;
  std::optional<int64_t> nan_at_attempt;  // inject a NaN gradient at this step attempt
};

Outcome run(const Data& data, const RunPlan& plan) {
  const std::string state_path = plan.dir + "/state.pt";
  const bool resume = TrainingState::exists(state_path);
  torch::manual_seed(3377);  // the run's seed, as the program sets it
  Net model;
  model->train();
  std::vector<torch::optim::OptimizerParamGroup> groups;
  groups.emplace_back(model->a->parameters(), std::make_unique<torch::optim::AdamWOptions>(2e-2));
  groups.emplace_back(model->b->parameters(), std::make_unique<torch::optim::AdamWOptions>(5e-2));
  torch::optim::AdamW optimizer(groups, torch::optim::AdamWOptions(1e-2));
  finetune::SWAScheduler scheduler(
      optimizer,
      std::make_unique<finetune::WarmupLinearSchedule>(
          optimizer, finetune::WarmupLinearScheduleOptions(3, kSteps)),
      finetune::SWASchedulerOptions(kSwaStart, finetune::SWALROptions(4e-3).anneal_epochs(4)));
  finetune::SWAWrapper swa(*model);
  finetune::GradualUnfreezing unfreezing(
      {model->a.ptr()}, finetune::GradualUnfreezingOptions(5).unit(finetune::UnfreezeUnit::steps));
  finetune::PeriodicEvaluator evaluator(
      finetune::PeriodicEvaluatorOptions(plan.dir).eval_every(2).eval_every_from_epoch(1).patience(
          1000),
      *model, [](const std::string&) {});
  auto shuffle = at::detail::createCPUGenerator(11);
  torch::Tensor order = torch::randperm(kRows, shuffle);
  Outcome out;

  TrainingState state;
  std::vector<std::function<void()>> registrations = {
      [&] { state.add("model", *model); },
      [&] { state.add("optimizer", optimizer); },
      [&] { state.add("scheduler", scheduler); },
      [&] { state.add("swa", swa, *model, [&] { return scheduler.averaging(); }); },
      [&] { state.add("unfreezing", unfreezing); },
      [&] { state.add("evaluator", evaluator); },
      [&] { state.add("shuffle", shuffle); },
      [&] {
        state.add(
            "loop",
            [&](torch::serialize::OutputArchive& a) {
              a.write("order", order);
              std::vector<double> flat;
              for (const auto& row : out.lrs) flat.insert(flat.end(), row.begin(), row.end());
              a.write("lrs", torch::tensor(flat, torch::kDouble));
            },
            [&](torch::serialize::InputArchive& a) {
              torch::Tensor lrs;
              a.read("order", order);
              a.read("lrs", lrs);
              out.lrs.clear();
              for (int64_t i = 0; i + 1 < lrs.numel(); i += 2)
                out.lrs.push_back({lrs[i].item<double>(), lrs[i + 1].item<double>()});
            });
      }};
  if (plan.reversed_registration) std::reverse(registrations.begin(), registrations.end());
  for (auto& r : registrations) r();
  if (resume) state.load(state_path);

  auto rmse = [&] {
    torch::NoGradGuard no_grad;
    model->eval();
    const double v = torch::mse_loss(model->forward(data.val_x), data.val_y).sqrt().item<double>();
    model->train();
    return v;
  };
  auto averaged_rmse = [&] {
    auto guard = swa.swap_in(*model);
    return rmse();
  };
  auto save_averaged = [&](const std::string& path) {
    auto guard = swa.swap_in(*model);
    finetune::PeriodicEvaluator::module_saver (*model)(path);
  };
  auto lrs_now = [&] {
    return std::vector<double>{optimizer.param_groups()[0].options().get_lr(),
                               optimizer.param_groups()[1].options().get_lr()};
  };
  int64_t attempts = state.position().optimizer_step + state.position().skipped_steps;
  auto& pos = state.position();
  for (; pos.epoch < kEpochs; state.end_epoch()) {
    if (pos.batch == 0) order = torch::randperm(kRows, shuffle);
    while (pos.batch < kBatches) {
      const auto rows = order.slice(0, pos.batch * kBatch, (pos.batch + 1) * kBatch);
      const auto loss = torch::mse_loss(model->forward(data.x.index_select(0, rows)),
                                        data.y.index_select(0, rows));
      (loss / kAccum).backward();
      state.next_batch();
      if (pos.batch % kAccum != 0) continue;
      if (plan.nan_at_attempt && *plan.nan_at_attempt == attempts)
        model->b->weight.mutable_grad().fill_(std::nan(""));
      ++attempts;
      const auto used = lrs_now();
      const bool taken = finetune::step_if_finite(optimizer);
      optimizer.zero_grad();
      if (taken) out.lrs.push_back(used);
      if (state.optimizer_step(taken)) {
        if (scheduler.averaging()) {
          evaluator.step(rmse, averaged_rmse, save_averaged);
        } else {
          evaluator.step(rmse);
        }
      }
      if (plan.save_at && pos.optimizer_step == *plan.save_at && taken) state.save(state_path);
      if (plan.save_at && pos.optimizer_step == *plan.save_at + plan.run_on && plan.run_on > 0)
        return out;  // "killed"
    }
    if (scheduler.averaging()) {
      evaluator.end_epoch(rmse, averaged_rmse, save_averaged);
    } else {
      evaluator.end_epoch(rmse);
    }
  }
  out.finished = true;
  for (const auto& t : model->parameters()) out.weights.push_back(t.detach().clone());
  for (const auto& [name, t] : swa.named_averages()) out.averages.push_back(t.clone());
  std::ifstream in(evaluator.history_path());
  out.history.assign(std::istreambuf_iterator<char>(in), {});
  out.position = pos;
  return out;
}

// Copies `in` into `out`, sub-archives too; `edit(path, out)` may write a
// key itself (or leave it out): it returns true when it did.
using Edit = std::function<bool(const std::string& path, torch::serialize::OutputArchive& out)>;
void copy_archive(torch::serialize::InputArchive& in, torch::serialize::OutputArchive& out,
                  const std::string& prefix, const Edit& edit) {
  for (const auto& key : in.keys()) {
    if (key == "training") continue;  // every archive's own attribute
    const std::string path = prefix + key;
    if (edit(path, out)) continue;
    c10::IValue value;
    torch::serialize::InputArchive sub;
    in.try_read(key, value);
    if (value.isObject() && in.try_read(key, sub)) {
      torch::serialize::OutputArchive copy;
      copy_archive(sub, copy, path + "/", edit);
      out.write(key, copy);
    } else if (value.isTensor()) {
      out.write(key, value.toTensor(), /*is_buffer=*/true);  // read alike either way
    } else {
      out.write(key, value);
    }
  }
}

// The state file at `path` with one edit, at `path`.edited.
std::string edited(const std::string& path, const Edit& edit) {
  torch::serialize::InputArchive in;
  in.load_from(path);
  torch::serialize::OutputArchive out;
  copy_archive(in, out, "", edit);
  out.save_to(path + ".edited");
  return path + ".edited";
}

}  // namespace

TEST_CASE(
    "a run killed after any saved step and resumed ends bit for bit like the uninterrupted run",
    "[training_state][resume]") {
  const Data data;
  TempDir whole_dir;
  const Outcome whole = run(data, RunPlan{whole_dir.path});
  REQUIRE(whole.finished);
  REQUIRE(whole.position.optimizer_step == kSteps);
  REQUIRE(whole.lrs.size() == static_cast<size_t>(kSteps));
  REQUIRE(!whole.history.empty());

  // Before the SWA start, at it, inside the anneal, after it, at an epoch's
  // last step (saved before end_epoch), and in both registration orders.
  for (int64_t at : {1, 4, 5, 9, 15, 16, 17, 19, 20, 24, 29, 30}) {
    for (const bool reversed : {false, true}) {
      INFO("saved after optimizer step " << at << (reversed ? ", parts added in reverse" : ""));
      TempDir dir;
      const Outcome killed = run(data, RunPlan{dir.path, at, /*run_on=*/at < kSteps ? 1 : 0});
      REQUIRE(fs::exists(dir.file("state.pt")));
      RunPlan resume{dir.path};
      resume.reversed_registration = reversed;
      const Outcome resumed = run(data, resume);
      REQUIRE(resumed.finished);
      CHECK(resumed.position.optimizer_step == kSteps);
      CHECK(resumed.position.epoch == kEpochs);
      CHECK(resumed.lrs == whole.lrs);
      CHECK(resumed.history == whole.history);
      REQUIRE(resumed.weights.size() == whole.weights.size());
      for (size_t i = 0; i < whole.weights.size(); ++i)
        CHECK(torch::equal(resumed.weights[i], whole.weights[i]));
      REQUIRE(resumed.averages.size() == whole.averages.size());
      for (size_t i = 0; i < whole.averages.size(); ++i)
        CHECK(torch::equal(resumed.averages[i], whole.averages[i]));
    }
  }
}

TEST_CASE("a state the run cannot use is refused with the reason, and nothing changes",
          "[training_state]") {
  const Data data;
  TempDir dir;
  run(data, RunPlan{dir.path, /*save_at=*/17, /*run_on=*/1});
  const std::string path = dir.file("state.pt");

  // A fresh set of parts to load into, and what they hold before.
  torch::manual_seed(1);
  Net model;
  std::vector<torch::optim::OptimizerParamGroup> groups;
  groups.emplace_back(model->a->parameters(), std::make_unique<torch::optim::AdamWOptions>(2e-2));
  groups.emplace_back(model->b->parameters(), std::make_unique<torch::optim::AdamWOptions>(5e-2));
  torch::optim::AdamW optimizer(groups, torch::optim::AdamWOptions(1e-2));
  auto make_scheduler = [&](int64_t swa_start) {
    return std::make_unique<finetune::SWAScheduler>(
        optimizer,
        std::make_unique<finetune::WarmupLinearSchedule>(
            optimizer, finetune::WarmupLinearScheduleOptions(3, kSteps)),
        finetune::SWASchedulerOptions(swa_start, finetune::SWALROptions(4e-3).anneal_epochs(4)));
  };
  auto snapshot = [&] {
    std::vector<torch::Tensor> out;
    for (const auto& p : model->parameters()) out.push_back(p.detach().clone());
    return out;
  };
  const auto weights = snapshot();
  auto unchanged = [&](const std::vector<torch::Tensor>& before) {
    const auto now = snapshot();
    for (size_t i = 0; i < now.size(); ++i)
      if (!torch::equal(now[i], before[i])) return false;
    return true;
  };
  auto lrs = [&] {
    return std::vector<double>{optimizer.param_groups()[0].options().get_lr(),
                               optimizer.param_groups()[1].options().get_lr()};
  };

  SECTION("the parts this run registered must be the saved ones") {
    TrainingState state;
    state.add("model", *model).add("optimizer", optimizer);
    CHECK_THROWS_WITH(state.load(path), Catch::Matchers::Contains("other parts than this run"));
    CHECK(unchanged(weights));
  }
  SECTION("a state a part cannot use after the first checks: every part is put back") {
    // All but the first were found by tests/fuzz/fuzz_training_state.cpp:
    // they failed only after the modules (or the schedulers) were loaded.
    struct Case {
      const char* what;
      Edit edit;
      const char* message;
      int64_t swa_start = kSwaStart;
    };
    const std::vector<Case> cases = {
        {"a scheduler saved with another swa_start",
         [](const std::string&, torch::serialize::OutputArchive&) { return false; },
         "swa_start 15, this scheduler has 16", kSwaStart + 1},
        {"the optimizer's LibTorch state missing",
         [](const std::string& p, torch::serialize::OutputArchive&) {
           return p == "part_optimizer/state";
         },
         "part 'optimizer' (optimizer)"},
        {"an optimizer option of another type",
         [](const std::string& p, torch::serialize::OutputArchive& out) {
           if (p != "part_optimizer/options_1/lr") return false;
           out.write("lr", c10::IValue(std::string("0.1")));
           return true;
         },
         "part 'optimizer' (optimizer)"},
        {"an optimizer state tensor missing",
         [](const std::string& p, torch::serialize::OutputArchive&) {
           return p.size() >= 11 && p.compare(p.size() - 11, 11, "/exp_avg_sq") == 0;
         },
         "a parameter's state has no 'exp_avg_sq'"},
        {"an optimizer state tensor of another shape",
         [](const std::string& p, torch::serialize::OutputArchive& out) {
           if (p.size() < 8 || p.compare(p.size() - 8, 8, "/exp_avg") != 0) return false;
           out.write("exp_avg", torch::zeros({3}), /*is_buffer=*/true);
           return true;
         },
         "the state 'exp_avg' of a parameter"},
        {"an average of another shape",
         [](const std::string& p, torch::serialize::OutputArchive& out) {
           if (p != "part_swa/swa_average_1") return false;
           out.write("swa_average_1", torch::zeros({3}), /*is_buffer=*/true);
           return true;
         },
         "part 'swa' (averager): the average of 'a.bias' is saved as [3]"},
        {"a negative n_averaged",
         [](const std::string& p, torch::serialize::OutputArchive& out) {
           if (p != "part_swa/swa_n_averaged") return false;
           out.write("swa_n_averaged", c10::IValue(int64_t{-1}));
           return true;
         },
         "'swa_n_averaged' is -1"},
        {"a default generator's state cut",
         [](const std::string& p, torch::serialize::OutputArchive& out) {
           if (p != "generator_0") return false;
           out.write("generator_0", torch::zeros({10}, torch::kByte), /*is_buffer=*/true);
           return true;
         },
         "not a generator state of this kind"},
    };
    for (const auto& c : cases) {
      INFO(c.what);
      auto scheduler = make_scheduler(c.swa_start);
      finetune::SWAWrapper swa(*model);
      finetune::GradualUnfreezing unfreezing(
          {model->a.ptr()},
          finetune::GradualUnfreezingOptions(5).unit(finetune::UnfreezeUnit::steps));
      finetune::PeriodicEvaluator evaluator(finetune::PeriodicEvaluatorOptions(dir.path), *model,
                                            [](const std::string&) {});
      auto shuffle = at::detail::createCPUGenerator(11);
      const auto shuffle_state = shuffle.get_state();
      const auto global_state = at::globalContext().defaultGenerator(at::kCPU).get_state();
      TrainingState state;
      state.add("model", *model).add("optimizer", optimizer).add("scheduler", *scheduler);
      state.add("swa", swa, *model).add("unfreezing", unfreezing).add("evaluator", evaluator);
      state.add("shuffle", shuffle);
      torch::Tensor order = torch::arange(kRows);
      state.add(
          "loop", [&](torch::serialize::OutputArchive& a) { a.write("order", order); },
          [&](torch::serialize::InputArchive& a) { a.read("order", order); });
      const auto before = lrs();
      CHECK_THROWS_WITH(state.load(edited(path, c.edit)), Catch::Matchers::Contains(c.message));
      CHECK(unchanged(weights));
      CHECK(lrs() == before);
      CHECK(optimizer.state().empty());
      CHECK(scheduler->step_count() == 0);
      CHECK(torch::equal(shuffle.get_state(), shuffle_state));  // put back
      CHECK(unfreezing.step_count() == 0);
      CHECK(torch::equal(order, torch::arange(kRows)));
      CHECK(torch::equal(at::globalContext().defaultGenerator(at::kCPU).get_state(), global_state));
      CHECK(evaluator.global_step() == 0);
      CHECK(swa.n_averaged() == 0);
      CHECK(state.position().optimizer_step == 0);
    }
  }
  SECTION("a file LibTorch's reader fails on with another exception than c10::Error") {
    // tests/fuzz/corpus/training_state/crash-reader-out-of-range: a mode
    // byte, then a state file on which the reader throws std::out_of_range.
    std::string bytes;
    {
      std::ifstream in(std::string(finetune_test::kSourceDir) +
                           "/tests/fuzz/corpus/training_state/crash-reader-out-of-range",
                       std::ios::binary);
      bytes.assign(std::istreambuf_iterator<char>(in), {});
    }
    REQUIRE(bytes.size() > 1);
    std::ofstream(dir.file("corrupt.pt"), std::ios::binary) << bytes.substr(1);
    TrainingState state;
    state.add("model", *model);
    CHECK_THROWS_WITH(
        state.load(dir.file("corrupt.pt")),
        Catch::Matchers::Contains("corrupt.pt") && Catch::Matchers::Contains("cannot read"));
    CHECK(unchanged(weights));
  }
  SECTION("another model, another optimizer layout") {
    Net wider(9);
    TrainingState other_model;
    finetune::SWAWrapper swa(*wider);
    auto scheduler = make_scheduler(kSwaStart);
    // The parts list must match first: register the same names and kinds.
    std::vector<torch::optim::OptimizerParamGroup> wide_groups;
    wide_groups.emplace_back(wider->parameters(),
                             std::make_unique<torch::optim::AdamWOptions>(1e-2));
    torch::optim::AdamW one_group(wide_groups, torch::optim::AdamWOptions(1e-2));
    TempDir other_dir;
    finetune::PeriodicEvaluator evaluator(finetune::PeriodicEvaluatorOptions(other_dir.path),
                                          *wider, [](const std::string&) {});
    finetune::GradualUnfreezing unfreezing({wider->a.ptr()});
    auto shuffle = at::detail::createCPUGenerator(11);
    auto noop_save = [](torch::serialize::OutputArchive&) {};
    auto noop_load = [](torch::serialize::InputArchive&) {};
    other_model.add("model", *wider).add("optimizer", optimizer).add("scheduler", *scheduler);
    other_model.add("swa", swa, *wider).add("unfreezing", unfreezing).add("evaluator", evaluator);
    other_model.add("shuffle", shuffle).add("loop", noop_save, noop_load);
    std::vector<torch::Tensor> wider_before;
    for (const auto& p : wider->parameters()) wider_before.push_back(p.detach().clone());
    CHECK_THROWS_WITH(
        other_model.load(path),
        Catch::Matchers::Contains("part 'model' (module): 'a.weight' is saved as [8, 4]"));
    for (size_t i = 0; i < wider_before.size(); ++i)
      CHECK(torch::equal(wider->parameters()[i], wider_before[i]));

    TrainingState other_layout;
    other_layout.add("model", *model).add("optimizer", one_group).add("scheduler", *scheduler);
    finetune::SWAWrapper swa_same(*model);
    other_layout.add("swa", swa_same, *model).add("unfreezing", unfreezing);
    other_layout.add("evaluator", evaluator)
        .add("shuffle", shuffle)
        .add("loop", noop_save, noop_load);
    CHECK_THROWS_WITH(other_layout.load(path),
                      Catch::Matchers::Contains("part 'optimizer' (optimizer): saved for another "
                                                "layout of param groups"));
    CHECK(unchanged(weights));
  }
  SECTION("a truncated file, a missing file, a file that is not a state") {
    TrainingState state;
    state.add("model", *model);
    std::string bytes;
    {
      std::ifstream in(path, std::ios::binary);
      bytes.assign(std::istreambuf_iterator<char>(in), {});
    }
    for (size_t keep : {size_t{0}, size_t{100}, bytes.size() / 2, bytes.size() - 1}) {
      INFO("first " << keep << " bytes");
      const std::string cut = dir.file("cut.pt");
      std::ofstream(cut, std::ios::binary) << bytes.substr(0, keep);
      CHECK_THROWS_WITH(state.load(cut), Catch::Matchers::Contains("cut.pt") &&
                                             Catch::Matchers::Contains("cannot read"));
      CHECK(unchanged(weights));
    }
    CHECK_THROWS_WITH(state.load(dir.file("nothing.pt")),
                      Catch::Matchers::Contains("no training state at"));
    torch::save(torch::zeros({2}), dir.file("tensor.pt"));
    CHECK_THROWS_AS(state.load(dir.file("tensor.pt")), std::invalid_argument);
    CHECK(unchanged(weights));
  }
}

TEST_CASE("a skipped optimizer step moves no schedule, no average and no evaluation",
          "[training_state][skipped]") {
  const Data data;
  TempDir clean_dir, skip_dir;
  const Outcome clean = run(data, RunPlan{clean_dir.path});
  RunPlan plan{skip_dir.path};
  plan.nan_at_attempt = 17;  // inside the SWA phase: the average must not take it
  const Outcome skipped = run(data, plan);
  REQUIRE(skipped.finished);
  CHECK(skipped.position.skipped_steps == 1);
  CHECK(skipped.position.optimizer_step == kSteps - 1);
  // The taken steps trained with the uninterrupted curve's lrs, in order: the
  // skipped attempt did not advance the schedule.
  REQUIRE(skipped.lrs.size() == clean.lrs.size() - 1);
  for (size_t i = 0; i < skipped.lrs.size(); ++i) CHECK(skipped.lrs[i] == clean.lrs[i]);
  // The evaluator counted taken steps only (TrainingState::save would throw
  // otherwise); its rows number the steps 1..29.
  CHECK(finetune_test::contains(skipped.history, ",29,raw,"));
  CHECK_FALSE(finetune_test::contains(skipped.history, ",30,raw,"));
}

TEST_CASE("step_if_finite skips and clears non-finite gradients, steps finite ones",
          "[training_state][skipped]") {
  auto w = torch::ones({3}, torch::requires_grad());
  torch::optim::SGD sgd({w}, torch::optim::SGDOptions(0.5));
  w.mutable_grad() = torch::tensor({1.0f, std::numeric_limits<float>::infinity(), 0.0f});
  CHECK_FALSE(finetune::step_if_finite(sgd));
  CHECK(torch::equal(w.detach(), torch::ones({3})));
  w.mutable_grad() = torch::tensor({1.0f, 1.0f, std::nanf("")});
  CHECK_FALSE(finetune::step_if_finite(sgd));
  w.mutable_grad() = torch::tensor({1.0f, 2.0f, 0.0f});
  CHECK(finetune::step_if_finite(sgd));
  CHECK(torch::allclose(w.detach(), torch::tensor({0.5f, 0.0f, 1.0f})));
}

TEST_CASE("an evaluator stepped for a skipped step is caught at the epoch's end",
          "[training_state][skipped]") {
  TempDir dir;
  Net model;
  finetune::PeriodicEvaluator evaluator(finetune::PeriodicEvaluatorOptions(dir.path), *model,
                                        [](const std::string&) {});
  TrainingState state;
  state.add("evaluator", evaluator);
  state.optimizer_step(false);
  evaluator.step([] { return 1.0; });  // wrong: that step was skipped
  CHECK_THROWS_WITH(state.end_epoch(), Catch::Matchers::Contains("the evaluator counted 1"));
  CHECK_THROWS_AS(state.save(dir.file("state.pt")), std::logic_error);
  CHECK_FALSE(fs::exists(dir.file("state.pt")));
}

TEST_CASE("part names are checked; a non-writer rank writes nothing", "[training_state]") {
  Net model;
  TrainingState state;
  CHECK_THROWS_WITH(state.add("a.b", *model), Catch::Matchers::Contains("letters, digits"));
  state.add("model", *model);
  CHECK_THROWS_WITH(state.add("model", *model), Catch::Matchers::Contains("two parts named"));
  TempDir dir;
  TrainingState reader(finetune::TrainingStateOptions().writer(false));
  reader.add("model", *model);
  CHECK_FALSE(reader.save(dir.file("state.pt")));
  CHECK_FALSE(fs::exists(dir.file("state.pt")));
}
