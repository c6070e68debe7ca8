// finetune: fine-tuning techniques for LibTorch, header-only.
// SPDX-License-Identifier: MIT
//
// Learning-rate warm-up and decay: one mechanism, LRSchedule, that scales
// every optimizer group's own initial lr by a factor f(step), so it composes
// with layer-wise LR groups and with any optimizer. The shapes are exactly
// Hugging Face transformers' schedules (transformers/optimization.py:
// get_linear_schedule_with_warmup and siblings), stepped like PyTorch's
// LambdaLR: after construction every group's lr is f(0) * initial lr; each
// step() advances one step and sets f(step) * initial lr. Warm-up keeps the
// first updates of a freshly initialised head from wrecking the pretrained
// weights (Devlin et al. 2019; Mosbach et al. 2021, "On the Stability of
// Fine-tuning BERT").
//
//   torch::optim::AdamW optimizer(groups, torch::optim::AdamWOptions(3.5e-6));
//   finetune::WarmupLinearSchedule schedule(
//       optimizer, finetune::WarmupLinearScheduleOptions(/*num_warmup_steps=*/50, total_steps));
//   for (...) { loss.backward(); optimizer.step(); schedule.step(); }
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <torch/arg.h>
#include <torch/optim/optimizer.h>
#include <torch/serialize/archive.h>
#include <torch/types.h>

#include "finetune/compat.hpp"
#include "finetune/scheduler.hpp"

namespace finetune {

/// The mechanism: lr of group g at step s = initial_lr[g] * factor(s), like
/// torch.optim.lr_scheduler.LambdaLR with one function for all groups. A
/// Scheduler (scheduler.hpp: counting, adoption of new groups, save/load).
class LRSchedule : public Scheduler {
 public:
  /// Factor of the initial lr at a step (step 0 = before the first step()).
  using Factor = std::function<double(int64_t step)>;

  /// `optimizer`: non-owning; must outlive the schedule. Records every
  /// group's current lr as its initial lr and sets it to factor(0) * initial
  /// lr. Throws std::invalid_argument if the optimizer has no groups or
  /// `factor` is empty.
  LRSchedule(torch::optim::Optimizer& optimizer, Factor factor);

  /// Advances one step and sets every group's lr to factor(step) * initial
  /// lr. Call after each optimizer step that was taken. A group added to the
  /// optimizer since the last call is adopted first: its initial lr is the
  /// lr it has now (the one it was added with). No allocation otherwise.
  void step() override;
  /// Steps taken since construction (LambdaLR's last_epoch).
  int64_t step_count() const noexcept override { return step_; }
  /// factor(step_count()).
  double last_factor() const noexcept { return factor_value_; }
  /// Factor at any step, without changing anything.
  double factor_at(int64_t step) const { return factor_(step); }
  /// The lrs this schedule last set, one per group (LambdaLR.get_last_lr()).
  std::vector<double> get_last_lr() const override;
  /// Initial lrs, one per group.
  const std::vector<double>& initial_lrs() const noexcept { return initial_lrs_; }

  /// Writes step count and initial lrs.
  void save(torch::serialize::OutputArchive& archive) const override;
  /// Restores step count and initial lrs, then sets the lrs of that step, so
  /// a resumed run continues the same curve. Throws std::invalid_argument,
  /// naming the key, for an archive without LRSchedule's keys, with values of
  /// the wrong type, a negative step, a non-finite or negative lr, or a number
  /// of groups other than the optimizer's; the schedule and the optimizer's
  /// lrs are then unchanged.
  void load(torch::serialize::InputArchive& archive) override;

 private:
  void apply();

  torch::optim::Optimizer& optimizer_;
  Factor factor_;
  std::vector<double> initial_lrs_;
  int64_t step_ = 0;
  double factor_value_ = 0.0;
};

/// Linear warm-up from 0 to the initial lr over num_warmup_steps, then
/// linear decay to 0 at num_training_steps (0 afterwards); HF
/// get_linear_schedule_with_warmup.
struct WarmupLinearScheduleOptions {
  /// Both arguments are required (see the fields).
  WarmupLinearScheduleOptions(int64_t num_warmup_steps, int64_t num_training_steps);
  /// Warm-up steps, >= 0 and <= num_training_steps.
  TORCH_ARG(int64_t, num_warmup_steps);
  /// Total training steps, > 0.
  TORCH_ARG(int64_t, num_training_steps);

 public:
};

/// Linear warm-up, then cosine decay over num_cycles waves; HF
/// get_cosine_schedule_with_warmup (min_lr_rate 0) and
/// get_cosine_with_min_lr_schedule_with_warmup(min_lr_rate).
struct WarmupCosineScheduleOptions {
  WarmupCosineScheduleOptions(int64_t num_warmup_steps, int64_t num_training_steps);
  /// Warm-up steps, >= 0 and <= num_training_steps.
  TORCH_ARG(int64_t, num_warmup_steps);
  /// Total training steps, > 0.
  TORCH_ARG(int64_t, num_training_steps);
  /// Number of cosine waves, > 0. Default 0.5 (half a cosine, max to 0).
  TORCH_ARG(double, num_cycles) = 0.5;
  /// Floor as a fraction of the initial lr, in [0, 1]. Default 0.
  TORCH_ARG(double, min_lr_rate) = 0.0;

 public:
};

/// Linear warm-up, then constant; HF get_constant_schedule_with_warmup.
struct WarmupConstantScheduleOptions {
  explicit WarmupConstantScheduleOptions(int64_t num_warmup_steps);
  /// Warm-up steps, >= 0.
  TORCH_ARG(int64_t, num_warmup_steps);

 public:
};

/// Linear warm-up, then polynomial decay from lr_init to lr_end, where
/// lr_init is the optimizer's default lr (optimizer.defaults().get_lr()),
/// exactly as HF get_polynomial_decay_schedule_with_warmup: a group whose
/// initial lr differs from lr_init is scaled by the same factor.
struct WarmupPolynomialScheduleOptions {
  WarmupPolynomialScheduleOptions(int64_t num_warmup_steps, int64_t num_training_steps);
  /// Warm-up steps, >= 0 and < num_training_steps.
  TORCH_ARG(int64_t, num_warmup_steps);
  /// Total training steps, > 0.
  TORCH_ARG(int64_t, num_training_steps);
  /// Final lr, >= 0 and < lr_init. Default 1e-7.
  TORCH_ARG(double, lr_end) = 1e-7;
  /// Power of the decay, > 0. Default 1.0 (linear).
  TORCH_ARG(double, power) = 1.0;

 public:
};

/// Linear warm-up, then 1 / sqrt((step + timescale - num_warmup_steps) /
/// timescale); HF get_inverse_sqrt_schedule.
struct InverseSqrtScheduleOptions {
  explicit InverseSqrtScheduleOptions(int64_t num_warmup_steps);
  /// Warm-up steps, >= 0.
  TORCH_ARG(int64_t, num_warmup_steps);
  /// Time scale, > 0; 0 means num_warmup_steps, or 10000 if that is 0.
  /// Default 0.
  TORCH_ARG(int64_t, timescale) = 0;

 public:
};

/// LRSchedule with WarmupLinearScheduleOptions' shape.
class WarmupLinearSchedule : public LRSchedule {
 public:
  WarmupLinearSchedule(torch::optim::Optimizer& optimizer, WarmupLinearScheduleOptions options);
  /// The factor; throws std::invalid_argument on bad options.
  static Factor make_factor(const WarmupLinearScheduleOptions& options);
};

/// LRSchedule with WarmupCosineScheduleOptions' shape.
class WarmupCosineSchedule : public LRSchedule {
 public:
  WarmupCosineSchedule(torch::optim::Optimizer& optimizer, WarmupCosineScheduleOptions options);
  static Factor make_factor(const WarmupCosineScheduleOptions& options);
};

/// LRSchedule with WarmupConstantScheduleOptions' shape.
class WarmupConstantSchedule : public LRSchedule {
 public:
  WarmupConstantSchedule(torch::optim::Optimizer& optimizer, WarmupConstantScheduleOptions options);
  static Factor make_factor(const WarmupConstantScheduleOptions& options);
};

/// LRSchedule with WarmupPolynomialScheduleOptions' shape.
class WarmupPolynomialSchedule : public LRSchedule {
 public:
  WarmupPolynomialSchedule(torch::optim::Optimizer& optimizer,
                           WarmupPolynomialScheduleOptions options);
  /// `lr_init`: the optimizer's default lr.
  static Factor make_factor(const WarmupPolynomialScheduleOptions& options, double lr_init);
};

/// LRSchedule with InverseSqrtScheduleOptions' shape.
class InverseSqrtSchedule : public LRSchedule {
 public:
  InverseSqrtSchedule(torch::optim::Optimizer& optimizer, InverseSqrtScheduleOptions options);
  static Factor make_factor(const InverseSqrtScheduleOptions& options);
};

// ---------------------------------------------------------------------------
// Definitions. The factor arithmetic copies transformers/optimization.py
// operation by operation (Python int / int is a double division), so the
// lrs equal HF's bit for bit on the same libm.
// ---------------------------------------------------------------------------

inline LRSchedule::LRSchedule(torch::optim::Optimizer& optimizer, Factor factor)
    : optimizer_(optimizer), factor_(std::move(factor)) {
  if (!factor_) throw std::invalid_argument("LRSchedule: empty factor function");
  const auto& groups = optimizer_.param_groups();
  if (groups.empty())
    throw std::invalid_argument("LRSchedule: the optimizer has no parameter groups");
  initial_lrs_.reserve(groups.size());
  for (const auto& group : groups) initial_lrs_.push_back(group.options().get_lr());
  apply();
}

inline void LRSchedule::apply() {
  auto& groups = optimizer_.param_groups();
  if (groups.size() < initial_lrs_.size()) {
    throw std::invalid_argument("LRSchedule: the optimizer has " + std::to_string(groups.size()) +
                                " parameter groups but the schedule knows " +
                                std::to_string(initial_lrs_.size()) +
                                " (groups cannot be removed from a scheduled optimizer)");
  }
  // Groups added since (gradual unfreezing): their lr now is their initial lr.
  for (size_t g = initial_lrs_.size(); g < groups.size(); ++g)
    initial_lrs_.push_back(groups[g].options().get_lr());
  factor_value_ = factor_(step_);  // once per step, then one multiply per group
  for (size_t g = 0; g < groups.size(); ++g)
    groups[g].options().set_lr(initial_lrs_[g] * factor_value_);
}

inline void LRSchedule::step() {
  ++step_;
  apply();
}

inline std::vector<double> LRSchedule::get_last_lr() const {
  std::vector<double> lrs;
  lrs.reserve(initial_lrs_.size());
  for (double lr : initial_lrs_) lrs.push_back(lr * factor_value_);
  return lrs;
}

inline void LRSchedule::save(torch::serialize::OutputArchive& archive) const {
  archive.write("lr_schedule/step", torch::tensor(step_, torch::kInt64));
  archive.write("lr_schedule/initial_lrs",
                torch::tensor(initial_lrs_, torch::TensorOptions().dtype(torch::kFloat64)));
}

namespace detail {
// One tensor of the archive; a missing key, a value that is not a tensor or
// a c10::Error while reading becomes std::invalid_argument naming the key.
inline torch::Tensor read_schedule_tensor(torch::serialize::InputArchive& archive,
                                          const std::string& key) {
  torch::Tensor value;
  bool found = false;
  try {
    found = archive.try_read(key, value);  // false: no such key, or not a tensor
  } catch (const c10::Error& e) {
    throw std::invalid_argument("LRSchedule::load: cannot read '" + key +
                                "' from the archive: " + e.what_without_backtrace());
  }
  if (!found || !value.defined()) {
    throw std::invalid_argument("LRSchedule::load: the archive has no tensor '" + key +
                                "' (not written by LRSchedule::save?)");
  }
  return value;
}
}  // namespace detail

inline void LRSchedule::load(torch::serialize::InputArchive& archive) {
  // Read and check everything, compute the new factor, then commit: on any
  // error the schedule and the optimizer's lrs are left as they were.
  const torch::Tensor step = detail::read_schedule_tensor(archive, "lr_schedule/step");
  torch::Tensor initial = detail::read_schedule_tensor(archive, "lr_schedule/initial_lrs");
  if (step.numel() != 1 || !c10::isIntegralType(step.scalar_type(), /*includeBool=*/false) ||
      step.item<int64_t>() < 0) {
    throw std::invalid_argument(
        "LRSchedule::load: lr_schedule/step is not one integer step count >= 0");
  }
  if (!initial.is_floating_point()) {
    throw std::invalid_argument("LRSchedule::load: lr_schedule/initial_lrs has dtype " +
                                std::string(c10::toString(initial.scalar_type())) +
                                ", not floating point");
  }
  initial = initial.to(torch::kCPU, torch::kFloat64).contiguous();
  const auto count = static_cast<size_t>(initial.numel());
  if (initial.dim() != 1 || count != optimizer_.param_groups().size()) {
    throw std::invalid_argument(
        "LRSchedule::load: archive holds " + std::to_string(initial.numel()) +
        " initial lrs but the optimizer has " + std::to_string(optimizer_.param_groups().size()) +
        " parameter groups");
  }
  const double* data = initial.data_ptr<double>();
  std::vector<double> lrs(data, data + count);
  for (size_t g = 0; g < lrs.size(); ++g) {
    if (!std::isfinite(lrs[g]) || lrs[g] < 0.0) {
      throw std::invalid_argument("LRSchedule::load: lr_schedule/initial_lrs[" + std::to_string(g) +
                                  "] = " + std::to_string(lrs[g]) + " is not a finite lr >= 0");
    }
  }
  const int64_t new_step = step.item<int64_t>();
  const double factor = factor_(new_step);  // may throw: nothing changed yet
  step_ = new_step;
  initial_lrs_ = std::move(lrs);
  factor_value_ = factor;
  auto& groups = optimizer_.param_groups();
  for (size_t g = 0; g < groups.size(); ++g) groups[g].options().set_lr(initial_lrs_[g] * factor);
}

namespace detail {

[[noreturn]] inline void bad_schedule(const char* schedule, const std::string& what) {
  throw std::invalid_argument(std::string(schedule) + ": " + what);
}

inline void check_steps(const char* schedule, int64_t warmup, int64_t total, bool strict) {
  if (warmup < 0)
    bad_schedule(schedule, "num_warmup_steps must be >= 0, got " + std::to_string(warmup));
  if (total <= 0)
    bad_schedule(schedule, "num_training_steps must be > 0, got " + std::to_string(total));
  if (strict ? warmup >= total : warmup > total) {
    bad_schedule(schedule, "num_warmup_steps (" + std::to_string(warmup) + ") must be " +
                               (strict ? "less than" : "at most") + " num_training_steps (" +
                               std::to_string(total) + ")");
  }
}

// HF: float(current_step) / float(max(1, num_warmup_steps)).
inline double warmup_factor(int64_t step, int64_t warmup) {
  return static_cast<double>(step) / static_cast<double>(std::max<int64_t>(1, warmup));
}

inline std::string number(double value) {
  std::ostringstream out;
  out.precision(17);
  out << value;
  return out.str();
}

}  // namespace detail

inline WarmupLinearScheduleOptions::WarmupLinearScheduleOptions(int64_t num_warmup_steps,
                                                                int64_t num_training_steps)
    : num_warmup_steps_(num_warmup_steps), num_training_steps_(num_training_steps) {}

inline WarmupCosineScheduleOptions::WarmupCosineScheduleOptions(int64_t num_warmup_steps,
                                                                int64_t num_training_steps)
    : num_warmup_steps_(num_warmup_steps), num_training_steps_(num_training_steps) {}

inline WarmupConstantScheduleOptions::WarmupConstantScheduleOptions(int64_t num_warmup_steps)
    : num_warmup_steps_(num_warmup_steps) {}

inline WarmupPolynomialScheduleOptions::WarmupPolynomialScheduleOptions(int64_t num_warmup_steps,
                                                                        int64_t num_training_steps)
    : num_warmup_steps_(num_warmup_steps), num_training_steps_(num_training_steps) {}

inline InverseSqrtScheduleOptions::InverseSqrtScheduleOptions(int64_t num_warmup_steps)
    : num_warmup_steps_(num_warmup_steps) {}

inline LRSchedule::Factor WarmupLinearSchedule::make_factor(const WarmupLinearScheduleOptions& o) {
  const int64_t w = o.num_warmup_steps(), n = o.num_training_steps();
  detail::check_steps("WarmupLinearSchedule", w, n, /*strict=*/false);
  return [w, n](int64_t step) {
    if (step < w) return detail::warmup_factor(step, w);
    return std::max(
        0.0, static_cast<double>(n - step) / static_cast<double>(std::max<int64_t>(1, n - w)));
  };
}

inline WarmupLinearSchedule::WarmupLinearSchedule(torch::optim::Optimizer& optimizer,
                                                  WarmupLinearScheduleOptions options)
    : LRSchedule(optimizer, make_factor(options)) {}

inline LRSchedule::Factor WarmupCosineSchedule::make_factor(const WarmupCosineScheduleOptions& o) {
  const int64_t w = o.num_warmup_steps(), n = o.num_training_steps();
  const double cycles = o.num_cycles(), min_rate = o.min_lr_rate();
  detail::check_steps("WarmupCosineSchedule", w, n, /*strict=*/false);
  if (!std::isfinite(cycles) || cycles <= 0.0) {
    detail::bad_schedule("WarmupCosineSchedule",
                         "num_cycles must be finite and > 0, got " + detail::number(cycles));
  }
  if (!(min_rate >= 0.0 && min_rate <= 1.0)) {
    detail::bad_schedule("WarmupCosineSchedule",
                         "min_lr_rate must be in [0, 1], got " + detail::number(min_rate));
  }
  return [w, n, cycles, min_rate](int64_t step) {
    if (step < w) return detail::warmup_factor(step, w);
    const double progress =
        static_cast<double>(step - w) / static_cast<double>(std::max<int64_t>(1, n - w));
    // math.pi * float(num_cycles) * 2.0 * progress, left to right.
    double factor = 0.5 * (1.0 + std::cos(3.141592653589793 * cycles * 2.0 * progress));
    factor = factor * (1.0 - min_rate) + min_rate;
    return factor > 0.0 ? factor : 0.0;
  };
}

inline WarmupCosineSchedule::WarmupCosineSchedule(torch::optim::Optimizer& optimizer,
                                                  WarmupCosineScheduleOptions options)
    : LRSchedule(optimizer, make_factor(options)) {}

inline LRSchedule::Factor WarmupConstantSchedule::make_factor(
    const WarmupConstantScheduleOptions& o) {
  const int64_t w = o.num_warmup_steps();
  if (w < 0)
    detail::bad_schedule("WarmupConstantSchedule",
                         "num_warmup_steps must be >= 0, got " + std::to_string(w));
  return [w](int64_t step) { return step < w ? detail::warmup_factor(step, w) : 1.0; };
}

inline WarmupConstantSchedule::WarmupConstantSchedule(torch::optim::Optimizer& optimizer,
                                                      WarmupConstantScheduleOptions options)
    : LRSchedule(optimizer, make_factor(options)) {}

inline LRSchedule::Factor WarmupPolynomialSchedule::make_factor(
    const WarmupPolynomialScheduleOptions& o, double lr_init) {
  const int64_t w = o.num_warmup_steps(), n = o.num_training_steps();
  const double lr_end = o.lr_end(), power = o.power();
  const char* name = "WarmupPolynomialSchedule";
  detail::check_steps(name, w, n, /*strict=*/true);  // HF divides by n - w
  if (!std::isfinite(power) || power <= 0.0) {
    detail::bad_schedule(name, "power must be finite and > 0, got " + detail::number(power));
  }
  if (!std::isfinite(lr_end) || lr_end < 0.0) {
    detail::bad_schedule(name, "lr_end must be finite and >= 0, got " + detail::number(lr_end));
  }
  if (!std::isfinite(lr_init) || !(lr_init > lr_end)) {
    detail::bad_schedule(name, "lr_end (" + detail::number(lr_end) +
                                   ") must be smaller than the optimizer's default lr (" +
                                   detail::number(lr_init) + ")");
  }
  return [w, n, lr_end, power, lr_init](int64_t step) {
    if (step < w) return detail::warmup_factor(step, w);
    if (step > n) return lr_end / lr_init;
    const double lr_range = lr_init - lr_end;
    const double pct_remaining = 1.0 - static_cast<double>(step - w) / static_cast<double>(n - w);
    const double decay = lr_range * std::pow(pct_remaining, power) + lr_end;
    return decay / lr_init;
  };
}

inline WarmupPolynomialSchedule::WarmupPolynomialSchedule(torch::optim::Optimizer& optimizer,
                                                          WarmupPolynomialScheduleOptions options)
    : LRSchedule(optimizer, make_factor(options, optimizer.defaults().get_lr())) {}

inline LRSchedule::Factor InverseSqrtSchedule::make_factor(const InverseSqrtScheduleOptions& o) {
  const int64_t w = o.num_warmup_steps();
  if (w < 0)
    detail::bad_schedule("InverseSqrtSchedule",
                         "num_warmup_steps must be >= 0, got " + std::to_string(w));
  if (o.timescale() < 0) {
    detail::bad_schedule("InverseSqrtSchedule", "timescale must be > 0 (0 = default), got " +
                                                    std::to_string(o.timescale()));
  }
  // HF: timescale = num_warmup_steps or 10_000 when not given.
  const int64_t timescale = o.timescale() > 0 ? o.timescale() : (w > 0 ? w : 10000);
  return [w, timescale](int64_t step) {
    if (step < w) return detail::warmup_factor(step, w);
    const int64_t shift = timescale - w;
    return 1.0 / std::sqrt(static_cast<double>(step + shift) / static_cast<double>(timescale));
  };
}

inline InverseSqrtSchedule::InverseSqrtSchedule(torch::optim::Optimizer& optimizer,
                                                InverseSqrtScheduleOptions options)
    : LRSchedule(optimizer, make_factor(options)) {}

}  // namespace finetune
