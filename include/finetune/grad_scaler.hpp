// finetune: fine-tuning techniques for LibTorch, header-only.
// SPDX-License-Identifier: MIT
//
// GradScaler: dynamic loss scaling for float16 mixed precision, what
// torch.amp.GradScaler does in Python (LibTorch's C++ API has none). The loss
// is multiplied by a large scale before backward() so that small float16
// gradients do not flush to zero; step() divides the gradients by it again,
// skips the optimizer step when any of them overflowed (inf or NaN), and
// update() halves the scale after an overflow and doubles it after
// growth_interval steps without one (Micikevicius et al. 2018, "Mixed
// Precision Training").
//
//   finetune::GradScaler scaler;                       // fp32 master weights
//   {
//     finetune::compat::AutocastGuard autocast(torch::kCUDA, torch::kHalf);
//     loss = loss_fn(model->forward(x), y);
//   }
//   scaler.scale(loss).backward();
//   scaler.unscale_(optimizer);                        // optional: to clip
//   const bool taken = scaler.step(optimizer);         // false: inf/NaN, skipped
//   scaler.update();
//   optimizer.zero_grad();
//   if (state.optimizer_step(taken)) evaluator.step(...);   // a skip moves nothing
//
// The bookkeeping (which optimizer was unscaled or stepped in this
// iteration, the found-inf flags per device, when the scale is created) is
// Python's GradScaler's, written again here. The arithmetic is ATen's own
// kernels (at::_amp_foreach_non_finite_check_and_unscale_,
// at::_amp_update_scale_), the ones Python calls; on a LibTorch without CPU
// kernels for them (1.13), compat.hpp computes the same bits.
//
// Host synchronisation: one per step(), to read the found-inf flag (as
// Python's step() does with .item()); scale(), unscale_() and update() queue
// device work only. get_scale(), growth_tracker() and save() read the device
// (call them rarely); on CPU none of this costs anything.
#pragma once

#include <cmath>
#include <cstdint>
#include <map>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <torch/arg.h>
#include <torch/optim/optimizer.h>
#include <torch/serialize/archive.h>
#include <torch/types.h>

#include "finetune/compat.hpp"

namespace finetune {

/// Options of GradScaler, with torch.amp.GradScaler's names and defaults.
struct GradScalerOptions {
  /// The scale the first scale() multiplies by. Default 2^16.
  TORCH_ARG(double, init_scale) = 65536.0;
  /// The scale is multiplied by this after growth_interval steps in a row
  /// without inf/NaN gradients. > 1. Default 2.
  TORCH_ARG(double, growth_factor) = 2.0;
  /// The scale is multiplied by this after a step with inf/NaN gradients.
  /// In (0, 1). Default 0.5.
  TORCH_ARG(double, backoff_factor) = 0.5;
  /// Steps without inf/NaN gradients before the scale grows. >= 1.
  /// Default 2000.
  TORCH_ARG(int64_t, growth_interval) = 2000;
  /// false: scale() returns the loss as it is, step() always steps, update()
  /// does nothing (one loop for every precision). Default true.
  TORCH_ARG(bool, enabled) = true;

 public:
  /// Throws std::invalid_argument naming the option out of range.
  void validate() const;
};

/// Dynamic loss scaling for float16 training with float32 master weights
/// (torch.amp.GradScaler). Holds no reference to any optimizer: the
/// per-iteration bookkeeping is keyed by the optimizer's address and cleared
/// by update(). Copyable and movable.
class GradScaler {
 public:
  explicit GradScaler(GradScalerOptions options = {});

  /// loss * scale. The first call creates the scale (float) and the growth
  /// tracker (int) on `loss`'s device; later calls copy the scale to another
  /// device when `loss` is elsewhere. Disabled: `loss` itself.
  torch::Tensor scale(const torch::Tensor& loss);

  /// Divides `optimizer`'s gradients by the scale in place and records
  /// whether any is inf or NaN: call it to clip or inspect true gradients
  /// between backward() and step() (step() calls it otherwise). At most once
  /// per optimizer per iteration, before step(): std::logic_error otherwise,
  /// and when scale() was never called. std::invalid_argument for a float16
  /// gradient: the parameters (master weights) must be float32; autocast
  /// runs the float16 part. No host synchronisation.
  void unscale_(torch::optim::Optimizer& optimizer);

  /// Unscales (unless unscale_() did) and takes `optimizer.step()` when no
  /// gradient held an inf or NaN; otherwise leaves the parameters and the
  /// optimizer's state untouched. Returns whether it stepped (also
  /// last_step_skipped()): pass it on (TrainingState::optimizer_step), so
  /// that a skipped step moves no schedule, averager or evaluator. One host
  /// synchronisation (the verdict). std::logic_error when called twice for
  /// one optimizer in an iteration, or when it has no gradient at all.
  /// Disabled: optimizer.step(), returns true.
  bool step(torch::optim::Optimizer& optimizer);

  /// Ends the iteration: the scale backs off when any optimizer stepped
  /// since the last update() saw an inf/NaN, grows after growth_interval
  /// clean iterations in a row (kept when finite); then the per-optimizer
  /// bookkeeping starts afresh. std::logic_error when no unscale_()/step()
  /// came before it. Disabled: nothing.
  void update();
  /// Sets the scale to `new_scale` (the growth tracker is unchanged) and
  /// starts the next iteration. std::invalid_argument when not positive and
  /// finite.
  void update(double new_scale);

  /// Whether the last step() skipped its optimizer step. False before any.
  bool last_step_skipped() const { return last_step_skipped_; }
  /// The current scale (init_scale before the first scale(); 1 when
  /// disabled). Reads the device.
  double get_scale() const;
  /// Clean iterations in a row since the scale last changed (0 when
  /// disabled). Reads the device.
  int64_t growth_tracker() const;
  /// The scale tensor (float, 0-dim, on the first loss's device); undefined
  /// before the first scale() and when disabled.
  const torch::Tensor& scale_tensor() const { return scale_; }
  bool is_enabled() const { return options_.enabled(); }
  const GradScalerOptions& options() const { return options_; }

  /// Writes the scale, the growth tracker and the options under flat keys
  /// "grad_scaler_*" (so that the state can share an archive), like
  /// Python's state_dict(). Call it between update() and the next scale():
  /// std::logic_error in the middle of an iteration.
  void save(torch::serialize::OutputArchive& archive) const;
  /// Restores what save() wrote: scale, growth tracker and the factors and
  /// interval (as Python's load_state_dict() does). Throws
  /// std::invalid_argument naming the key on a missing or malformed key, or
  /// a state from a disabled scaler; nothing changes then. Disabled: nothing.
  void load(torch::serialize::InputArchive& archive);

 private:
  enum class Stage { ready, unscaled, stepped };
  struct OptimizerState {
    Stage stage = Stage::ready;
    // One flag per device that holds gradients of this optimizer.
    std::vector<std::pair<torch::Device, torch::Tensor>> found_inf;
  };
  void require_scale(const char* what) const;
  OptimizerState& state_of(const torch::optim::Optimizer& optimizer);
  void unscale_grads(torch::optim::Optimizer& optimizer, OptimizerState& state);

  GradScalerOptions options_;
  double init_scale_;
  int64_t init_growth_tracker_ = 0;
  torch::Tensor scale_;           // float32, 0-dim, created by the first scale()
  torch::Tensor growth_tracker_;  // int32, 0-dim, beside scale_
  std::map<const torch::optim::Optimizer*, OptimizerState> per_optimizer_;
  bool last_step_skipped_ = false;
};

/// torch::save(scaler, path) / torch::load(scaler, path).
inline torch::serialize::OutputArchive& operator<<(torch::serialize::OutputArchive& archive,
                                                   const GradScaler& scaler) {
  scaler.save(archive);
  return archive;
}
inline torch::serialize::InputArchive& operator>>(torch::serialize::InputArchive& archive,
                                                  GradScaler& scaler) {
  scaler.load(archive);
  return archive;
}

/// Throws std::invalid_argument, up front, when this LibTorch cannot run
/// autocast in `dtype` on `device_type`: float16 on the CPU with Debian's
/// LibTorch 1.13 (its CPU autocast takes only bfloat16, and it has no
/// float16 CPU matrix product), or any autocast whose product does not come
/// out in `dtype`. Tries one 2x2 matrix product under autocast; float32
/// always passes. CUDA on a machine without CUDA: std::invalid_argument too.
/// Call it before training: the error then names the precision, not a
/// kernel deep in the first forward pass.
void check_autocast_supported(c10::DeviceType device_type, at::ScalarType dtype);

// ===========================================================================
// Definitions
// ===========================================================================

inline void GradScalerOptions::validate() const {
  auto bad = [](const std::string& what) {
    throw std::invalid_argument("finetune: GradScalerOptions: " + what);
  };
  if (!(init_scale() > 0.0) || !std::isfinite(init_scale()))
    bad("init_scale must be positive and finite, got " + std::to_string(init_scale()));
  if (!(growth_factor() > 1.0) || !std::isfinite(growth_factor()))
    bad("growth_factor must be > 1, got " + std::to_string(growth_factor()));
  if (!(backoff_factor() > 0.0 && backoff_factor() < 1.0))
    bad("backoff_factor must be in (0, 1), got " + std::to_string(backoff_factor()));
  if (growth_interval() < 1 || growth_interval() > INT32_MAX)
    bad("growth_interval must be in [1, 2^31), got " + std::to_string(growth_interval()));
}

inline GradScaler::GradScaler(GradScalerOptions options)
    : options_(options), init_scale_(options.init_scale()) {
  if (options_.enabled()) options_.validate();
}

inline void GradScaler::require_scale(const char* what) const {
  if (!scale_.defined()) {
    throw std::logic_error(std::string("finetune: GradScaler::") + what +
                           " before any scale(): scale the loss with scaler.scale(loss) "
                           "before backward()");
  }
}

inline GradScaler::OptimizerState& GradScaler::state_of(const torch::optim::Optimizer& optimizer) {
  return per_optimizer_[&optimizer];
}

inline torch::Tensor GradScaler::scale(const torch::Tensor& loss) {
  if (!options_.enabled()) return loss;
  if (!scale_.defined()) {
    const auto on = torch::TensorOptions().device(loss.device());
    scale_ = torch::full({}, init_scale_, on.dtype(torch::kFloat));
    growth_tracker_ =
        torch::full({}, static_cast<int32_t>(init_growth_tracker_), on.dtype(torch::kInt));
  }
  return loss * scale_.to(loss.device(), /*non_blocking=*/true);
}

inline void GradScaler::unscale_grads(torch::optim::Optimizer& optimizer, OptimizerState& state) {
  // Python's inverse: in double, rounded to float.
  const torch::Tensor inv_scale = scale_.to(torch::kDouble).reciprocal().to(torch::kFloat);
  // Gradients by device and dtype, in the order of the param groups.
  std::vector<std::pair<torch::Device, std::map<at::ScalarType, std::vector<torch::Tensor>>>>
      by_device;
  torch::NoGradGuard no_grad;
  for (const auto& group : optimizer.param_groups()) {
    for (const auto& p : group.params()) {
      const torch::Tensor& grad = p.grad();
      if (!grad.defined()) continue;
      if (grad.scalar_type() == torch::kHalf) {
        throw std::invalid_argument(
            "finetune: GradScaler: a float16 gradient (parameter of shape " + c10::str(p.sizes()) +
            "): keep the parameters (master weights) in float32 and run the float16 part "
            "under autocast (compat::AutocastGuard)");
      }
      if (grad.is_sparse()) {
        throw std::invalid_argument("finetune: GradScaler: sparse gradients are not supported");
      }
      auto it = by_device.begin();
      while (it != by_device.end() && it->first != grad.device()) ++it;
      if (it == by_device.end()) {
        by_device.emplace_back(grad.device(),
                               std::map<at::ScalarType, std::vector<torch::Tensor>>{});
        it = by_device.end() - 1;
      }
      it->second[grad.scalar_type()].push_back(grad);
    }
  }
  state.found_inf.clear();
  for (auto& [device, by_dtype] : by_device) {
    torch::Tensor found_inf =
        torch::zeros({}, torch::TensorOptions().dtype(torch::kFloat).device(device));
    const torch::Tensor inv = inv_scale.to(device, /*non_blocking=*/true);
    for (auto& entry : by_dtype) {
      compat::amp_foreach_non_finite_check_and_unscale_(entry.second, found_inf, inv);
    }
    state.found_inf.emplace_back(device, found_inf);
  }
}

inline void GradScaler::unscale_(torch::optim::Optimizer& optimizer) {
  if (!options_.enabled()) return;
  require_scale("unscale_()");
  OptimizerState& state = state_of(optimizer);
  if (state.stage == Stage::unscaled) {
    throw std::logic_error(
        "finetune: GradScaler::unscale_() has already been called on this optimizer since the "
        "last update()");
  }
  if (state.stage == Stage::stepped) {
    throw std::logic_error("finetune: GradScaler::unscale_() is being called after step()");
  }
  unscale_grads(optimizer, state);
  state.stage = Stage::unscaled;
}

inline bool GradScaler::step(torch::optim::Optimizer& optimizer) {
  if (!options_.enabled()) {
    optimizer.step();
    last_step_skipped_ = false;
    return true;
  }
  require_scale("step()");
  OptimizerState& state = state_of(optimizer);
  if (state.stage == Stage::stepped) {
    throw std::logic_error(
        "finetune: GradScaler::step() has already been called for this optimizer since the last "
        "update()");
  }
  if (state.stage == Stage::ready) unscale_(optimizer);
  if (state.found_inf.empty()) {
    throw std::logic_error(
        "finetune: GradScaler::step(): this optimizer has no gradients (no inf checks were "
        "recorded)");
  }
  // The one host synchronisation: the sum of the per-device flags.
  torch::Tensor any = state.found_inf.front().second;
  for (size_t i = 1; i < state.found_inf.size(); ++i)
    any = any + state.found_inf[i].second.to(any.device());
  const bool skipped = any.item<float>() != 0.0f;
  if (!skipped) optimizer.step();
  state.stage = Stage::stepped;
  last_step_skipped_ = skipped;
  return !skipped;
}

inline void GradScaler::update() {
  if (!options_.enabled()) return;
  require_scale("update()");
  torch::Tensor found_inf;
  for (const auto& entry : per_optimizer_) {
    for (const auto& [device, flag] : entry.second.found_inf) {
      const torch::Tensor f = flag.to(scale_.device(), /*non_blocking=*/true);
      found_inf = found_inf.defined() ? found_inf + f : f.clone();
    }
  }
  if (!found_inf.defined()) {
    throw std::logic_error(
        "finetune: GradScaler::update(): no unscale_() or step() since the last update()");
  }
  compat::amp_update_scale_(scale_, growth_tracker_, found_inf, options_.growth_factor(),
                            options_.backoff_factor(), options_.growth_interval());
  per_optimizer_.clear();
}

inline void GradScaler::update(double new_scale) {
  if (!options_.enabled()) return;
  require_scale("update(new_scale)");
  if (!(new_scale > 0.0) || !std::isfinite(new_scale)) {
    throw std::invalid_argument(
        "finetune: GradScaler::update: new_scale must be positive and "
        "finite, got " +
        std::to_string(new_scale));
  }
  scale_.fill_(new_scale);
  per_optimizer_.clear();
}

inline double GradScaler::get_scale() const {
  if (!options_.enabled()) return 1.0;
  return scale_.defined() ? scale_.item<float>() : init_scale_;
}

inline int64_t GradScaler::growth_tracker() const {
  if (!options_.enabled()) return 0;
  return growth_tracker_.defined() ? growth_tracker_.item<int32_t>() : init_growth_tracker_;
}

inline void GradScaler::save(torch::serialize::OutputArchive& archive) const {
  if (!per_optimizer_.empty()) {
    throw std::logic_error(
        "finetune: GradScaler::save in the middle of an iteration: save after update()");
  }
  auto write = [&](const std::string& key, torch::Tensor value) {
    archive.write("grad_scaler_" + key, value);
  };
  const auto f64 = torch::TensorOptions().dtype(torch::kDouble);
  const auto i64 = torch::TensorOptions().dtype(torch::kLong);
  write("enabled", torch::full({}, options_.enabled() ? 1 : 0, i64));
  write("scale", torch::full({}, get_scale(), f64));
  write("growth_tracker", torch::full({}, growth_tracker(), i64));
  write("growth_factor", torch::full({}, options_.growth_factor(), f64));
  write("backoff_factor", torch::full({}, options_.backoff_factor(), f64));
  write("growth_interval", torch::full({}, options_.growth_interval(), i64));
}

inline void GradScaler::load(torch::serialize::InputArchive& archive) {
  if (!options_.enabled()) return;
  auto fail = [](const std::string& key, const std::string& what) {
    return std::invalid_argument("finetune: GradScaler::load: key 'grad_scaler_" + key + "' " +
                                 what);
  };
  auto read = [&](const std::string& key, bool integral) {
    torch::Tensor t;
    bool found = false;
    try {
      found = archive.try_read("grad_scaler_" + key, t);
    } catch (const c10::Error& e) {
      throw fail(key, std::string("cannot be read: ") + e.what_without_backtrace());
    }
    if (!found) throw fail(key, "missing from the archive");
    if (t.numel() != 1) throw fail(key, "holds " + std::to_string(t.numel()) + " elements, not 1");
    if (t.scalar_type() != (integral ? torch::kLong : torch::kDouble))
      throw fail(key, std::string("is not a ") + (integral ? "int64" : "float64") + " tensor");
    return t.to(torch::kCPU);
  };
  if (read("enabled", true).item<int64_t>() != 1) {
    throw fail("enabled", "is 0: the state was saved from a disabled scaler");
  }
  GradScalerOptions loaded = options_;
  loaded.growth_factor(read("growth_factor", false).item<double>())
      .backoff_factor(read("backoff_factor", false).item<double>())
      .growth_interval(read("growth_interval", true).item<int64_t>())
      .init_scale(read("scale", false).item<double>());
  try {
    loaded.validate();
  } catch (const std::invalid_argument& e) {
    throw std::invalid_argument(std::string("finetune: GradScaler::load: the saved state: ") +
                                e.what());
  }
  const int64_t tracker = read("growth_tracker", true).item<int64_t>();
  if (tracker < 0 || tracker >= loaded.growth_interval())
    throw fail("growth_tracker",
               "is " + std::to_string(tracker) + ", outside [0, growth_interval)");
  const double scale = loaded.init_scale();
  if (static_cast<double>(static_cast<float>(scale)) != scale)
    throw fail("scale", "is not a float32 value");
  loaded.init_scale(options_.init_scale());  // the options keep the user's first scale
  options_ = loaded;
  init_scale_ = scale;
  init_growth_tracker_ = tracker;
  if (scale_.defined()) {
    scale_.fill_(scale);
    growth_tracker_.fill_(tracker);
  }
  per_optimizer_.clear();
}

inline void check_autocast_supported(c10::DeviceType device_type, at::ScalarType dtype) {
  if (dtype == at::kFloat) return;
  const std::string what = std::string("finetune: autocast in ") + c10::toString(dtype) + " on " +
                           c10::DeviceTypeName(device_type, /*lower_case=*/true);
  if (dtype != at::kHalf && dtype != at::kBFloat16)
    throw std::invalid_argument(what + ": only float16 and bfloat16 are low precisions");
  if (device_type == c10::DeviceType::CUDA && !at::hasCUDA())
    throw std::invalid_argument(what + ": this machine has no CUDA device");
  torch::Tensor product;
  try {
    const auto on = torch::TensorOptions().device(device_type);
    const torch::Tensor a = torch::ones({2, 2}, on);
    compat::AutocastGuard autocast(device_type, dtype);
    product = torch::mm(a, a);
  } catch (const std::invalid_argument&) {
    throw;
  } catch (const std::exception& e) {
    throw std::invalid_argument(what + " is not supported by this LibTorch (" +
                                compat::torch_version() + "): " + e.what());
  }
  if (product.scalar_type() != dtype) {
    throw std::invalid_argument(what + " is not supported by this LibTorch (" +
                                compat::torch_version() + "): autocast computes in " +
                                c10::toString(product.scalar_type()));
  }
}

}  // namespace finetune
