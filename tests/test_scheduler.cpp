// The one Scheduler interface (scheduler.hpp) and the composed
// warm-up-then-SWALR SWAScheduler (swa.hpp): the article's composition
// against PyTorch + Hugging Face (golden swa_lr.json "composition", written by
// tests/reference/ref_swa.py), resumes at every step in either load order,
// and param groups added after construction.
#include <torch/torch.h>

#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "catch.hpp"
#include "finetune/lr_schedule.hpp"
#include "finetune/scheduler.hpp"
#include "finetune/swa.hpp"
#include "golden.hpp"
#include "test_helpers.hpp"

namespace {

using Catch::Matchers::WithinAbs;
using Catch::Matchers::WithinRel;
using finetune::Scheduler;
using finetune::SWALROptions;
using finetune::SWAScheduler;
using finetune::SWASchedulerOptions;
using nlohmann::json;

// The oracle's optimizer: one SGD group of one parameter per lr.
struct Sgd {
  std::vector<torch::Tensor> params;
  std::unique_ptr<torch::optim::SGD> opt;
  explicit Sgd(const std::vector<double>& lrs) {
    std::vector<torch::optim::OptimizerParamGroup> groups;
    for (double lr : lrs) {
      params.push_back(torch::zeros({1}, torch::requires_grad()));
      groups.emplace_back(std::vector<torch::Tensor>{params.back()},
                          std::make_unique<torch::optim::SGDOptions>(lr));
    }
    opt = std::make_unique<torch::optim::SGD>(groups, torch::optim::SGDOptions(1.0));
  }
  // One real optimizer step (a gradient of 1), so that a save holds state.
  void step() {
    for (auto& p : params) p.mutable_grad() = torch::ones_like(p);
    opt->step();
  }
  std::vector<double> lrs() const {
    std::vector<double> out;
    for (const auto& g : opt->param_groups()) out.push_back(g.options().get_lr());
    return out;
  }
};

void check_lrs(const std::vector<double>& got, const json& want) {
  const auto w = want.get<std::vector<double>>();
  REQUIRE(got.size() == w.size());
  for (size_t i = 0; i < w.size(); ++i)
    CHECK_THAT(got[i], WithinRel(w[i], 1e-12) || WithinAbs(w[i], 1e-18));
}

const json& composition() {
  static const json c = finetune_test::load_golden_json("swa_lr.json").at("composition");
  return c;
}

// The notebook's composition as one scheduler.
std::unique_ptr<SWAScheduler> make_scheduler(torch::optim::Optimizer& opt) {
  const json& c = composition();
  return std::make_unique<SWAScheduler>(
      opt,
      std::make_unique<finetune::WarmupLinearSchedule>(
          opt, finetune::WarmupLinearScheduleOptions(c.at("num_warmup_steps").get<int64_t>(),
                                                     c.at("num_training_steps").get<int64_t>())),
      SWASchedulerOptions(c.at("swa_start").get<int64_t>(),
                          SWALROptions(c.at("swa_lr").get<double>())
                              .anneal_epochs(c.at("anneal_epochs").get<int64_t>())
                              .anneal_strategy(finetune::AnnealStrategy::cos)));
}

std::string save_to_string(const std::function<void(torch::serialize::OutputArchive&)>& save) {
  torch::serialize::OutputArchive archive;
  save(archive);
  std::ostringstream out;
  archive.save_to(out);
  return out.str();
}

void load_from_string(const std::string& bytes,
                      const std::function<void(torch::serialize::InputArchive&)>& load) {
  std::istringstream in(bytes);
  torch::serialize::InputArchive archive;
  archive.load_from(in);
  load(archive);
}

}  // namespace

TEST_CASE("SWAScheduler is the notebook's warm-up -> SWALR composition (PyTorch + HF)",
          "[scheduler][swa]") {
  const json& c = composition();
  Sgd sgd(c.at("base_lr").get<std::vector<double>>());
  auto scheduler = make_scheduler(*sgd.opt);
  Scheduler& s = *scheduler;  // the loop sees one interface
  check_lrs(sgd.lrs(), c.at("after_construction"));
  CHECK(s.step_count() == 0);
  const int64_t swa_start = c.at("swa_start").get<int64_t>();
  for (int64_t step = 0; step < c.at("steps").get<int64_t>(); ++step) {
    INFO("step " << step);
    check_lrs(sgd.lrs(), c.at("lr_used")[step]);
    sgd.step();
    s.step();
    CHECK(s.step_count() == step + 1);
    CHECK(scheduler->averaging() == (step >= swa_start));  // the notebook's `step >= swa_start`
    CHECK(s.get_last_lr() == sgd.lrs());
  }
  check_lrs(sgd.lrs(), c.at("final_lr"));
}

TEST_CASE("every scheduler counts alike: 0 steps after construction, one per step()",
          "[scheduler]") {
  Sgd sgd({0.1, 0.2});
  std::vector<std::unique_ptr<Scheduler>> all;
  all.push_back(std::make_unique<finetune::WarmupLinearSchedule>(
      *sgd.opt, finetune::WarmupLinearScheduleOptions(2, 10)));
  all.push_back(std::make_unique<finetune::SWALR>(*sgd.opt, SWALROptions(0.05).anneal_epochs(3)));
  all.push_back(make_scheduler(*sgd.opt));
  for (auto& s : all) {
    CHECK(s->step_count() == 0);
    s->step();
    s->step();
    CHECK(s->step_count() == 2);
    CHECK(s->get_last_lr() == sgd.lrs());
  }
}

TEST_CASE("a run resumed at any step continues with the uninterrupted run's lrs, in any load order",
          "[scheduler][swa][resume]") {
  const json& c = composition();
  const auto base = c.at("base_lr").get<std::vector<double>>();
  const int64_t steps = c.at("steps").get<int64_t>();  // past swa_start + anneal_epochs
  REQUIRE(steps > c.at("swa_start").get<int64_t>() + c.at("anneal_epochs").get<int64_t>());

  // The uninterrupted run: the lrs each step trained with.
  std::vector<std::vector<double>> want;
  {
    Sgd sgd(base);
    auto s = make_scheduler(*sgd.opt);
    for (int64_t step = 0; step <= steps; ++step) {
      want.push_back(sgd.lrs());
      sgd.step();
      s->step();
    }
  }
  for (int64_t at = 0; at <= steps; ++at) {
    for (const bool optimizer_first : {true, false}) {
      INFO("saved after " << at << " steps; optimizer loaded "
                          << (optimizer_first ? "first" : "last"));
      Sgd sgd(base);
      auto s = make_scheduler(*sgd.opt);
      for (int64_t step = 0; step < at; ++step) {
        sgd.step();
        s->step();
      }
      const std::string opt_state = save_to_string([&](auto& a) { sgd.opt->save(a); });
      const std::string sched_state = save_to_string([&](auto& a) { s->save(a); });

      // A fresh process: built as at the start (lrs of step 0), then loaded.
      Sgd fresh(base);
      auto resumed = make_scheduler(*fresh.opt);
      auto load_optimizer = [&] {
        load_from_string(opt_state, [&](auto& a) { fresh.opt->load(a); });
      };
      auto load_scheduler = [&] {
        load_from_string(sched_state, [&](auto& a) { resumed->load(a); });
      };
      if (optimizer_first) {
        load_optimizer();
        load_scheduler();
      } else {
        load_scheduler();
        load_optimizer();
      }
      CHECK(resumed->step_count() == at);
      for (int64_t step = at; step <= steps; ++step) {
        INFO("step " << step);
        REQUIRE(fresh.lrs() == want[static_cast<size_t>(step)]);  // bit for bit
        fresh.step();
        resumed->step();
      }
    }
  }
}

TEST_CASE("SWAScheduler::load rejects another swa_start or SWALR and changes nothing",
          "[scheduler][swa]") {
  Sgd sgd({0.1, 0.2});
  auto opts = SWASchedulerOptions(2, SWALROptions(0.05).anneal_epochs(3));
  SWAScheduler s(*sgd.opt,
                 std::make_unique<finetune::WarmupConstantSchedule>(
                     *sgd.opt, finetune::WarmupConstantScheduleOptions(1)),
                 opts);
  for (int k = 0; k < 4; ++k) s.step();
  const std::string saved = save_to_string([&](auto& a) { s.save(a); });

  auto other = [&](SWASchedulerOptions o) {
    auto fresh = std::make_unique<Sgd>(std::vector<double>{0.1, 0.2});
    auto sched =
        std::make_unique<SWAScheduler>(*fresh->opt,
                                       std::make_unique<finetune::WarmupConstantSchedule>(
                                           *fresh->opt, finetune::WarmupConstantScheduleOptions(1)),
                                       o);
    return std::make_pair(std::move(fresh), std::move(sched));
  };
  {
    auto [fresh, sched] = other(SWASchedulerOptions(3, SWALROptions(0.05).anneal_epochs(3)));
    const auto lrs = fresh->lrs();
    CHECK_THROWS_WITH(load_from_string(saved, [&](auto& a) { sched->load(a); }),
                      Catch::Matchers::Contains("swa_start 2, this scheduler has 3"));
    CHECK(fresh->lrs() == lrs);
    CHECK(sched->step_count() == 0);
  }
  {
    auto [fresh, sched] = other(SWASchedulerOptions(2, SWALROptions(0.05).anneal_epochs(0)));
    const auto lrs = fresh->lrs();
    CHECK_THROWS_WITH(load_from_string(saved, [&](auto& a) { sched->load(a); }),
                      Catch::Matchers::Contains("other SWALR options"));
    CHECK(fresh->lrs() == lrs);
    CHECK(sched->swalr() == nullptr);
  }
  CHECK_THROWS_AS(SWAScheduler(*sgd.opt, nullptr, opts), std::invalid_argument);
  CHECK_THROWS_AS(SWAScheduler(*sgd.opt,
                               std::make_unique<finetune::WarmupConstantSchedule>(
                                   *sgd.opt, finetune::WarmupConstantScheduleOptions(1)),
                               SWASchedulerOptions(-1, SWALROptions(0.05))),
                  std::invalid_argument);
  CHECK_THROWS_AS(SWAScheduler(*sgd.opt,
                               std::make_unique<finetune::WarmupConstantSchedule>(
                                   *sgd.opt, finetune::WarmupConstantScheduleOptions(1)),
                               SWASchedulerOptions(1, SWALROptions({0.1, 0.2, 0.3}))),
                  std::invalid_argument);
}

TEST_CASE("a param group added later is adopted with the lr it was added with",
          "[scheduler][unfreezing]") {
  // The reference: the same curve for a group that was there from the start
  // with that lr (which test_lr_schedule checks against HF + LambdaLR).
  const std::vector<double> base = {0.1, 0.2};
  const double added_lr = 0.3;
  const int64_t add_at = 3;
  Sgd from_start({0.1, 0.2, added_lr});
  finetune::WarmupLinearSchedule reference(*from_start.opt,
                                           finetune::WarmupLinearScheduleOptions(2, 10));
  Sgd later(base);
  finetune::WarmupLinearSchedule schedule(*later.opt, finetune::WarmupLinearScheduleOptions(2, 10));
  for (int64_t step = 1; step <= 10; ++step) {
    if (step == add_at) {
      later.params.push_back(torch::zeros({1}, torch::requires_grad()));
      later.opt->add_param_group(torch::optim::OptimizerParamGroup(
          {later.params.back()}, std::make_unique<torch::optim::SGDOptions>(added_lr)));
    }
    later.step();
    from_start.step();
    schedule.step();
    reference.step();
    INFO("step " << step);
    if (step >= add_at) {
      CHECK(later.lrs() == from_start.lrs());
      CHECK(schedule.initial_lrs() == reference.initial_lrs());
    }
  }

  // SWALR: the new group anneals from the lr it was added with, like a group
  // that had that lr when the annealing began.
  Sgd swa_ref({0.1, 0.2, added_lr});
  finetune::SWALR swalr_ref(*swa_ref.opt, SWALROptions(0.05).anneal_epochs(4));
  Sgd swa_later(base);
  finetune::SWALR swalr(*swa_later.opt, SWALROptions(0.05).anneal_epochs(4));
  swa_later.params.push_back(torch::zeros({1}, torch::requires_grad()));
  swa_later.opt->add_param_group(torch::optim::OptimizerParamGroup(
      {swa_later.params.back()}, std::make_unique<torch::optim::SGDOptions>(added_lr)));
  for (int step = 0; step < 6; ++step) {
    swalr.step();
    swalr_ref.step();
    CHECK(swa_later.lrs() == swa_ref.lrs());
  }
  // Per-group swa_lr cannot guess the new group's target.
  Sgd per_group(base);
  finetune::SWALR strict(*per_group.opt, SWALROptions({0.05, 0.06}));
  per_group.params.push_back(torch::zeros({1}, torch::requires_grad()));
  per_group.opt->add_param_group(torch::optim::OptimizerParamGroup(
      {per_group.params.back()}, std::make_unique<torch::optim::SGDOptions>(0.3)));
  CHECK_THROWS_AS(strict.step(), std::invalid_argument);
}
