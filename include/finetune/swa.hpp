// finetune: fine-tuning techniques for LibTorch, header-only.
// SPDX-License-Identifier: MIT
//
// Stochastic Weight Averaging (Izmailov et al., "Averaging Weights Leads to
// Wider Optima and Better Generalization", UAI 2018) and its exponential
// sibling (EMA), with the semantics of torch.optim.swa_utils:
//
//   SWAWrapper  AveragedModel: an averaged copy of a module's parameters (and
//               buffers), equal weights (SWA) or exponential (EMA); swap_in()
//               puts the averages into the live module for evaluation/saving
//               and always restores the training weights.
//   update_bn   recompute BatchNorm running statistics (cumulative average).
//   SWALR       anneal every param group's lr to swa_lr, then hold it.
//   SWAScheduler  a schedule (e.g. warm-up and linear decay) until the SWA
//               start, SWALR after it: the article's composition, one
//               Scheduler, so the loop has one scheduler.step().
//
// The user's loop stays the user's: call scheduler.step() after each
// optimizer step taken, and swa.update(*model) when scheduler.averaging()
// says the step belongs to the SWA phase (see docs/swa.md).
#pragma once

#include <finetune/compat.hpp>
#include <finetune/scheduler.hpp>

#include <c10/core/Event.h>
#include <c10/core/StreamGuard.h>
#include <c10/core/impl/VirtualGuardImpl.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <unordered_set>
#include <utility>
#include <vector>

namespace finetune {

// ===========================================================================
// Declarations
// ===========================================================================

/// Options of SWAWrapper. Python: torch.optim.swa_utils.AveragedModel kwargs.
struct SWAOptions {
  /// nullopt (default): equally weighted running average (SWA),
  /// avg += (p - avg) / (n_averaged + 1). A value d in [0, 1]: exponential
  /// moving average, avg = d * avg + (1 - d) * p, as
  /// get_ema_multi_avg_fn(d). Either way the first update() copies.
  TORCH_ARG(c10::optional<double>, ema_decay) = c10::nullopt;
  /// false (default): buffers are not averaged; the averaged copy's buffers
  /// follow the model's at every update() (run update_bn afterwards for
  /// BatchNorm). true: buffers are averaged like parameters (integer buffers
  /// such as num_batches_tracked with PyTorch's truncating arithmetic).
  TORCH_ARG(bool, use_buffers) = false;
  /// Where the averages live; nullopt (default): on each tensor's device at
  /// construction. E.g. torch::kCPU for the averages of CUDA parameters: the
  /// copies to the host then run on a side stream into pinned memory and
  /// update() does not wait for them (see SWAWrapper); swap_in() copies the
  /// averages in.
  TORCH_ARG(c10::optional<torch::Device>, device) = c10::nullopt;
  /// The dtype of the averages of floating tensors (parameters, and buffers
  /// when use_buffers). nullopt (default): float32 for bfloat16 and float16
  /// tensors, the tensor's own dtype otherwise; in bfloat16 an EMA step of
  /// (1 - 0.999) * (p - avg) rounds away once it is below the average's
  /// last bit. Integer tensors and the buffers that are copied, not
  /// averaged, keep their own dtype. Must be a floating dtype.
  TORCH_ARG(c10::optional<torch::Dtype>, average_dtype) = c10::nullopt;

 public:
  SWAOptions() = default;
};

namespace detail {
struct SWAState;
}  // namespace detail

/// Running average (SWA) or exponential moving average (EMA) of a module's
/// parameters and buffers: one averager, two weightings (the weight of the
/// new value is 1/(n+1) or 1-decay), one fused multi-tensor lerp per
/// (device, dtype) group, no host-device synchronisation per update.
///
/// Construction records the module's tensors (names, shapes, dtypes, devices)
/// and allocates nothing: the averages are allocated at the first update(),
/// directly where they live (SWAOptions::device) and in their dtype
/// (SWAOptions::average_dtype: float32 for bf16/fp16 tensors by default). It
/// keeps no reference to the module: every call takes the module again and
/// checks that it has the same tensors (names, shapes, dtypes) in the same
/// order.
///
/// Averages on the host of CUDA tensors (SWAOptions::device(torch::kCPU)):
/// update() orders a copy of the module's tensors into pinned host memory on
/// a side stream (after the work queued so far on the current stream; later
/// work on the current stream waits for it on the device, not the host) and
/// returns; the averaging of those copies on the host happens at the next
/// call that needs the averages (update, swap_in, named_averages, save,
/// load), by which time the copies are normally done. Host memory: the
/// averages and one pinned copy of the tensors in the averages' dtype (the
/// cast of bf16/fp16 tensors runs on the device, before the copy).
///
/// Move-safe: the state lives behind a shared pointer that a SwapGuard
/// shares, so moving (or destroying) the wrapper while a guard is alive
/// leaves the guard working. A moved-from wrapper throws std::logic_error
/// from every member but the destructor and assignment.
class SWAWrapper {
 public:
  class SwapGuard;

  /// Records `module`'s parameters and buffers (shared tensors once);
  /// allocates nothing. Throws std::invalid_argument for an ema_decay
  /// outside [0, 1] or an average_dtype that is not floating.
  explicit SWAWrapper(const torch::nn::Module& module, SWAOptions options = {});

  SWAWrapper(const SWAWrapper&) = delete;
  SWAWrapper& operator=(const SWAWrapper&) = delete;
  SWAWrapper(SWAWrapper&&) noexcept = default;
  SWAWrapper& operator=(SWAWrapper&&) noexcept = default;

  /// AveragedModel.update_parameters(module): the first call allocates the
  /// averages and copies the module's tensors in, later calls average them
  /// in; without use_buffers the buffers are copied every time. Call after
  /// optimizer.step().
  void update(const torch::nn::Module& module);

  /// Puts the averaged parameters and buffers into `module` until the
  /// returned guard is destroyed or restore()d, also when an exception
  /// unwinds: a zero-copy storage swap where an average has the tensor's
  /// device and dtype, otherwise a copy cast to the tensor's device and dtype
  /// (the training storage is kept aside, untouched). While swapped in,
  /// evaluate, save (torch::save) or run update_bn; changes made to the
  /// module's tensors (update_bn's statistics) stay in the averages (a copied
  /// one is written back, cast, when its values changed). Do not step the
  /// optimizer or update() while a guard is alive. Throws
  /// std::invalid_argument before the first update() (nothing averaged).
  [[nodiscard]] SwapGuard swap_in(torch::nn::Module& module);

  /// How many states have been averaged (AveragedModel.n_averaged).
  int64_t n_averaged() const;
  /// True while a SwapGuard holds the averages in a module.
  bool swapped_in() const;
  const SWAOptions& options() const;
  /// The averaged tensors by name (parameters first, then buffers), in the
  /// averages' dtype and device. Before the first update() (nothing
  /// allocated): zero placeholders of the averages' shapes and dtypes on the
  /// CPU, one element each (expanded). While swapped in, the tensors swapped
  /// zero-copy hold the training weights instead.
  std::vector<std::pair<std::string, torch::Tensor>> named_averages() const;

  /// Saves n_averaged, the options and the averages (in their dtype). Before
  /// the first update(): n_averaged 0 and the placeholders of
  /// named_averages() (one element each), which load() leaves unallocated.
  void save(torch::serialize::OutputArchive& archive) const;
  /// Loads what save() wrote: into the averages where they live (allocated
  /// there if needed), or, for a state saved before the first update,
  /// back to nothing allocated. Throws std::invalid_argument (nothing
  /// changed) when the options or the tensors (names, shapes, dtypes) differ.
  void load(torch::serialize::InputArchive& archive);

 private:
  detail::SWAState& state() const;
  std::shared_ptr<detail::SWAState> state_;
};

/// Restores the training weights into the module when destroyed (RAII).
/// Move-only; a moved-from guard does nothing. Shares the wrapper's state, so
/// it outlives a move or the destruction of the wrapper.
class SWAWrapper::SwapGuard {
 public:
  SwapGuard(SwapGuard&& other) noexcept = default;
  SwapGuard& operator=(SwapGuard&&) = delete;
  SwapGuard(const SwapGuard&) = delete;
  SwapGuard& operator=(const SwapGuard&) = delete;
  ~SwapGuard() { restore(); }
  /// Puts the training weights back now; later calls do nothing.
  void restore() noexcept;

 private:
  friend class SWAWrapper;
  SwapGuard(std::shared_ptr<detail::SWAState> state, std::vector<torch::Tensor> live)
      : state_(std::move(state)), live_(std::move(live)) {}
  std::shared_ptr<detail::SWAState> state_;
  std::vector<torch::Tensor> live_;  // the module's own tensors
};

/// torch.optim.swa_utils.update_bn: resets the running statistics of every
/// BatchNorm{1,2,3}d in `module`, sets their momentum to nullopt (cumulative
/// average over the batches), puts `module` in training mode and calls
/// `run_batches` (which feeds the data through the module); then restores the
/// momenta and the training mode. Strong guarantee: when `run_batches` throws,
/// the running statistics (running_mean, running_var, num_batches_tracked)
/// are restored too, so the module is as before the call. No BatchNorm:
/// no-op, `run_batches` is not called. Typically inside swa.swap_in(module).
void update_bn(torch::nn::Module& module, const std::function<void()>& run_batches);

/// update_bn over a range: calls forward(batch) for each batch in `batches`,
/// any range, const or not (a std::vector, a LibTorch DataLoader, whose
/// begin()/end() are non-const).
template <typename Batches, typename Forward>
void update_bn(torch::nn::Module& module, Batches&& batches, Forward&& forward);

/// Annealing shape of SWALR. Python: anneal_strategy="cos" | "linear".
enum class AnnealStrategy { cos, linear };

/// Options of SWALR. Python: torch.optim.swa_utils.SWALR kwargs.
struct SWALROptions {
  /// One swa_lr for all param groups.
  /* implicit */ SWALROptions(double swa_lr) : swa_lr_{swa_lr} {}
  /// One swa_lr per param group (or a single value for all).
  /* implicit */ SWALROptions(std::vector<double> swa_lr) : swa_lr_(std::move(swa_lr)) {}
  /// The learning rate(s) to anneal to and hold; required.
  TORCH_ARG(std::vector<double>, swa_lr);
  /// Number of step() calls the annealing takes (Python counts "epochs";
  /// the article steps once per batch). 0: swa_lr at once. Default 10.
  TORCH_ARG(int64_t, anneal_epochs) = 10;
  /// cos (default): alpha = (1 - cos(pi t)) / 2; linear: alpha = t.
  TORCH_ARG(AnnealStrategy, anneal_strategy) = AnnealStrategy::cos;
};

/// torch.optim.swa_utils.SWALR on a non-owning torch::optim::Optimizer&
/// (through OptimizerOptions::get_lr/set_lr, so any optimizer and any param
/// groups). Construction performs PyTorch's initial step (it leaves the lrs
/// unchanged unless anneal_epochs is 0). Each later step() moves each
/// group's lr from its current value towards swa_lr by PyTorch's ratio
/// formula, with PyTorch's float arithmetic in PyTorch's order, so the lrs
/// equal Python's. To run another schedule before it, use SWAScheduler
/// rather than two schedulers.
class SWALR : public Scheduler {
 public:
  /// Throws std::invalid_argument for a negative anneal_epochs, a non-finite
  /// or negative swa_lr, or a swa_lr list whose length is neither 1 nor the
  /// number of param groups.
  SWALR(torch::optim::Optimizer& optimizer, SWALROptions options);

  /// Sets the next lr of every param group. Call after each optimizer step
  /// taken. A group added since the last call anneals from the lr it was
  /// added with (needs a single swa_lr, or one per group).
  void step() override;
  /// The lrs set by the last step (or by construction).
  std::vector<double> get_last_lr() const override { return last_lr_; }
  /// step() calls since construction (Scheduler's counting: 0 after it;
  /// Python's _step_count is this + 1).
  int64_t step_count() const override { return step_count_ - 1; }
  const SWALROptions& options() const { return options_; }

  /// Saves the step count, the options and the lrs set last.
  void save(torch::serialize::OutputArchive& archive) const override;
  /// Restores what save() wrote and sets each group's lr to the one this
  /// scheduler set last; the next step() continues the trajectory exactly,
  /// whether the optimizer was loaded before or after. Throws
  /// std::invalid_argument (nothing changed) on a state it cannot use.
  void load(torch::serialize::InputArchive& archive) override;

  /// Throws std::invalid_argument unless `options` suit an optimizer with
  /// `groups` param groups (the constructor's checks).
  static void validate(const SWALROptions& options, size_t groups);

 private:
  double swa_lr_of(size_t group) const;
  double anneal(double t) const;

  torch::optim::Optimizer& optimizer_;
  SWALROptions options_;
  int64_t step_count_ = 0;  // Python's _step_count
  std::vector<double> last_lr_;
};

/// Options of SWAScheduler.
struct SWASchedulerOptions {
  /// `swa_start`: see the field; `swalr`: SWALR's options (swa_lr, anneal).
  SWASchedulerOptions(int64_t swa_start, SWALROptions swalr)
      : swa_start_(swa_start), swalr_(std::move(swalr)) {}
  /// Optimizer steps run by the first schedule, >= 0; the step after them
  /// is the first of the SWA phase (SWALR steps, the average is updated).
  /// The notebook: the first batch of the SWA start epoch, i.e.
  /// swa_start_epoch * optimizer steps per epoch.
  TORCH_ARG(int64_t, swa_start);
  /// The SWALR that takes over.
  TORCH_ARG(SWALROptions, swalr);
};

/// The article's composition as one Scheduler: `before` (typically a
/// WarmupLinearSchedule) for the first swa_start optimizer steps, then SWALR,
/// which anneals from the lr `before` reached. Equal, step for step, to the
/// notebook's loop that builds both and calls one or the other (golden
/// swa_lr.json "composition").
///
///   finetune::SWAScheduler scheduler(
///       optimizer,
///       std::make_unique<finetune::WarmupLinearSchedule>(optimizer, warmup_options),
///       finetune::SWASchedulerOptions(swa_start, finetune::SWALROptions(2e-6).anneal_epochs(10)));
///   ... optimizer.step(); scheduler.step(); if (scheduler.averaging()) swa.update(*model);
///
/// save()/load() cover both phases: a run resumed before, at or after the
/// SWA start continues with the uninterrupted run's lrs.
class SWAScheduler : public Scheduler {
 public:
  /// `before` must schedule `optimizer` (non-owning; it must outlive this).
  /// Throws std::invalid_argument on a null `before`, a negative swa_start or
  /// SWALR options that do not suit the optimizer.
  SWAScheduler(torch::optim::Optimizer& optimizer, std::unique_ptr<Scheduler> before,
               SWASchedulerOptions options);

  /// Steps `before` for steps 1..swa_start, SWALR from step swa_start + 1 on.
  void step() override;
  int64_t step_count() const override { return step_count_; }
  std::vector<double> get_last_lr() const override;
  /// Whether the optimizer step just counted by step() belongs to the SWA
  /// phase (step_count() > swa_start): update the average when it does.
  bool averaging() const { return step_count_ > options_.swa_start(); }
  /// The first schedule (its own counters stop at swa_start).
  const Scheduler& before() const { return *before_; }
  /// The SWALR once the SWA phase began; null before.
  const SWALR* swalr() const { return swalr_.get(); }
  const SWASchedulerOptions& options() const { return options_; }

  void save(torch::serialize::OutputArchive& archive) const override;
  /// Restores both phases' state and sets the lrs of the saved step. Throws
  /// std::invalid_argument (nothing changed) for a state saved with another
  /// swa_start or SWALR options, or any part it cannot use.
  void load(torch::serialize::InputArchive& archive) override;

 private:
  torch::optim::Optimizer& optimizer_;
  std::unique_ptr<Scheduler> before_;
  SWASchedulerOptions options_;
  std::unique_ptr<SWALR> swalr_;
  int64_t step_count_ = 0;
};

// ===========================================================================
// Definitions
// ===========================================================================

namespace detail {
inline std::string swa_shape(const torch::Tensor& t) {
  std::ostringstream out;
  out << t.sizes();
  return out.str();
}
inline std::string swa_shape(c10::IntArrayRef sizes) {
  std::ostringstream out;
  out << sizes;
  return out.str();
}
inline void swa_check_decay(const c10::optional<double>& decay) {
  if (decay && !(*decay >= 0.0 && *decay <= 1.0)) {
    throw std::invalid_argument("SWAOptions: ema_decay must be in [0, 1], got " +
                                std::to_string(*decay));
  }
}

// What SWAWrapper holds, behind a shared pointer that SwapGuards share.
struct SWAState {
  // One tensor of the module, as recorded at construction.
  struct Slot {
    std::string name;
    std::vector<int64_t> sizes;
    c10::ScalarType dtype;      // the module's
    c10::ScalarType avg_dtype;  // the average's
    torch::Device device;       // where the average lives
    bool averaged;              // false: a buffer copied, not averaged
  };
  // Averages of one device and dtype: one fused kernel each.
  struct Group {
    std::vector<size_t> index;
    bool floating;  // lerp; integer tensors use PyTorch's truncating formula
  };
  // Copies ordered on a side stream into pinned host memory, averaged in at
  // the next flush() with the weight of the update that ordered them.
  struct Pending {
    std::vector<size_t> index;
    int64_t n = 0;  // n_averaged before that update
    std::vector<c10::Stream> streams;
  };

  SWAOptions options;
  std::vector<Slot> slots;
  std::vector<Group> groups;
  std::vector<torch::Tensor> averages;  // empty until the first update()
  std::vector<torch::Tensor> staging;   // pinned host copies (offload), in avg_dtype
  std::vector<std::pair<c10::DeviceIndex, c10::Stream>> side_streams;
  c10::optional<Pending> pending;
  int64_t n_averaged = 0;
  bool swapped_in = false;
  // While swapped in: per slot, the training storage kept aside for a copied
  // average (undefined where the swap is zero-copy).
  std::vector<torch::Tensor> held;

  bool allocated() const { return !averages.empty(); }

  ~SWAState() {
    try {
      if (pending) {
        for (const auto& s : pending->streams) s.synchronize();
      }
    } catch (...) {
      // Nothing to report from a destructor; the pinned memory's allocator
      // keeps its blocks until the copies that use them are done.
    }
  }

  // All or nothing: an allocation that fails (out of memory) leaves none.
  void allocate() {
    if (allocated()) return;
    std::vector<torch::Tensor> fresh;
    fresh.reserve(slots.size());
    for (const auto& s : slots) {
      fresh.push_back(
          torch::empty(s.sizes, torch::TensorOptions().dtype(s.avg_dtype).device(s.device)));
    }
    averages = std::move(fresh);
  }

  c10::Stream side_stream(const torch::Device& device) {
    for (const auto& [index, stream] : side_streams) {
      if (index == device.index()) return stream;
    }
    c10::impl::VirtualGuardImpl impl(device.type());
    side_streams.emplace_back(device.index(), impl.getStreamFromGlobalPool(device));
    return side_streams.back().second;
  }

  // The n_averaged-th update's arithmetic on the slots in `member`, with
  // source(i) the module's tensor i (any device and dtype: cast here, a
  // bounded number of bytes of temporaries at a time).
  template <typename Source>
  void apply(const std::vector<bool>& member, const Source& source, int64_t n) {
    for (size_t i = 0; i < slots.size(); ++i) {
      if (member[i] && (n == 0 || !slots[i].averaged)) averages[i].copy_(source(i));
    }
    if (n == 0) return;
    const auto& decay = options.ema_decay();
    // The one difference between SWA and EMA: the weight of the new value.
    const double weight = decay ? 1.0 - *decay : 1.0 / static_cast<double>(n + 1);
    constexpr int64_t kTemporaryBytes = int64_t{64} << 20;
    for (const auto& group : groups) {
      if (group.floating) {
        std::vector<torch::Tensor> avg, cur;
        int64_t temporary = 0;
        auto flush_chunk = [&] {
          if (!avg.empty()) compat::foreach_lerp_(avg, cur, weight);
          avg.clear();
          cur.clear();
          temporary = 0;
        };
        for (size_t i : group.index) {
          if (!member[i]) continue;
          torch::Tensor s = source(i);
          if (s.device() != averages[i].device() || s.scalar_type() != averages[i].scalar_type()) {
            s = s.to(averages[i].device(), averages[i].scalar_type());
            temporary += s.numel() * static_cast<int64_t>(s.element_size());
          }
          avg.push_back(averages[i]);
          cur.push_back(std::move(s));
          if (temporary > kTemporaryBytes) flush_chunk();
        }
        flush_chunk();
      } else {
        // Integer tensors (num_batches_tracked): PyTorch computes in floating
        // point and copy_ truncates; the same ops give the same numbers.
        for (size_t i : group.index) {
          if (!member[i]) continue;
          auto& a = averages[i];
          const auto p = source(i).to(a.device(), a.scalar_type());
          if (decay) {
            a.copy_(a.mul(*decay).add(p.mul(1.0 - *decay)));
          } else {
            a.copy_(a.add((p - a).div(n + 1)));
          }
        }
      }
    }
  }

  // Averages in the copies the last update() ordered (waiting for them if
  // they are still running).
  void flush() {
    if (!pending) return;
    Pending p = std::move(*pending);
    pending.reset();
    for (const auto& s : p.streams) s.synchronize();
    std::vector<bool> member(slots.size(), false);
    for (size_t i : p.index) member[i] = true;
    torch::NoGradGuard no_grad;
    apply(
        member, [&](size_t i) { return staging[i]; }, p.n);
  }

  void update(const std::vector<torch::Tensor>& tensors) {
    flush();
    torch::NoGradGuard no_grad;
    allocate();
    const int64_t n = n_averaged;
    // CUDA tensors with host averages: ordered now, averaged at the next flush.
    std::vector<bool> now(slots.size(), true);
    std::vector<size_t> later;
    for (size_t i = 0; i < slots.size(); ++i) {
      if (tensors[i].is_cuda() && averages[i].is_cpu()) {
        now[i] = false;
        later.push_back(i);
      }
    }
    apply(
        now, [&](size_t i) { return tensors[i]; }, n);
    if (!later.empty()) order_copies(tensors, later, n);
    ++n_averaged;
  }

  void order_copies(const std::vector<torch::Tensor>& tensors, const std::vector<size_t>& index,
                    int64_t n) {
    if (staging.empty()) staging.resize(slots.size());
    Pending p;
    p.index = index;
    p.n = n;
    std::vector<torch::Device> devices;
    for (size_t i : index) {
      if (std::find(devices.begin(), devices.end(), tensors[i].device()) == devices.end())
        devices.push_back(tensors[i].device());
    }
    for (const auto& device : devices) {
      c10::impl::VirtualGuardImpl impl(device.type());
      const c10::Stream current = impl.getStream(device);
      const c10::Stream side = side_stream(device);
      c10::Event ready(device.type());
      ready.record(current);  // the optimizer step's writes are done first
      ready.block(side);
      {
        c10::StreamGuard on_side(side);
        for (size_t i : index) {
          const auto& t = tensors[i];
          if (t.device() != device) continue;
          // In the average's dtype: the cast runs on the device (a temporary
          // of one tensor on the side stream), the host only averages.
          if (!staging[i].defined()) {
            staging[i] =
                torch::empty(slots[i].sizes,
                             torch::TensorOptions().dtype(slots[i].avg_dtype).pinned_memory(true));
          }
          staging[i].copy_(t, /*non_blocking=*/true);
        }
      }
      c10::Event done(device.type());
      done.record(side);
      done.block(current);  // the next step's writes wait for the copies, on the device
      p.streams.push_back(side);
    }
    pending = std::move(p);
  }
};
}  // namespace detail

inline detail::SWAState& SWAWrapper::state() const {
  if (!state_) throw std::logic_error("SWAWrapper: used after being moved from");
  return *state_;
}

inline int64_t SWAWrapper::n_averaged() const { return state().n_averaged; }
inline bool SWAWrapper::swapped_in() const { return state().swapped_in; }
inline const SWAOptions& SWAWrapper::options() const { return state().options; }

namespace detail {
// The module's parameters then buffers (a shared, tied tensor once).
inline std::vector<std::pair<std::string, torch::Tensor>> swa_collect(
    const torch::nn::Module& module, size_t* num_parameters = nullptr) {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  std::unordered_set<const void*> seen;
  auto add = [&](const std::string& name, const torch::Tensor& t) {
    if (!t.defined() || !seen.insert(t.unsafeGetTensorImpl()).second) return false;
    out.emplace_back(name, t);
    return true;
  };
  size_t parameters = 0;
  for (const auto& item : module.named_parameters(/*recurse=*/true)) {
    if (add(item.key(), item.value())) ++parameters;
  }
  for (const auto& item : module.named_buffers(/*recurse=*/true)) add(item.key(), item.value());
  if (num_parameters) *num_parameters = parameters;
  return out;
}

// The module's tensors, checked against the slots recorded at construction.
inline std::vector<torch::Tensor> swa_checked(const SWAState& state,
                                              const torch::nn::Module& module, const char* caller) {
  const auto named = swa_collect(module);
  const auto& slots = state.slots;
  if (named.size() != slots.size()) {
    throw std::invalid_argument(
        std::string(caller) + ": the module has " + std::to_string(named.size()) +
        " parameters and buffers, the averaged copy has " + std::to_string(slots.size()));
  }
  std::vector<torch::Tensor> out;
  out.reserve(named.size());
  for (size_t i = 0; i < slots.size(); ++i) {
    const auto& [name, t] = named[i];
    const auto& s = slots[i];
    if (name != s.name) {
      throw std::invalid_argument(std::string(caller) + ": tensor " + std::to_string(i) + " is '" +
                                  name + "' in the module but '" + s.name +
                                  "' in the averaged copy");
    }
    if (t.sizes() != c10::IntArrayRef(s.sizes) || t.scalar_type() != s.dtype) {
      throw std::invalid_argument(
          std::string(caller) + ": '" + s.name + "' is " + swa_shape(t) + " " +
          std::string(c10::toString(t.scalar_type())) + " in the module but " + swa_shape(s.sizes) +
          " " + std::string(c10::toString(s.dtype)) + " in the module the averager was built for");
    }
    out.push_back(t);
  }
  return out;
}
}  // namespace detail

inline SWAWrapper::SWAWrapper(const torch::nn::Module& module, SWAOptions options)
    : state_(std::make_shared<detail::SWAState>()) {
  detail::swa_check_decay(options.ema_decay());
  if (options.average_dtype() && !c10::isFloatingType(*options.average_dtype())) {
    throw std::invalid_argument("SWAOptions: average_dtype must be a floating dtype, got " +
                                std::string(c10::toString(*options.average_dtype())));
  }
  auto& s = *state_;
  s.options = std::move(options);
  size_t num_parameters = 0;
  const auto named = detail::swa_collect(module, &num_parameters);
  for (size_t i = 0; i < named.size(); ++i) {
    const auto& t = named[i].second;
    const bool averaged = i < num_parameters || s.options.use_buffers();
    c10::ScalarType avg_dtype = t.scalar_type();
    if (averaged && t.is_floating_point()) {
      if (s.options.average_dtype()) {
        avg_dtype = *s.options.average_dtype();
      } else if (avg_dtype == torch::kBFloat16 || avg_dtype == torch::kHalf) {
        avg_dtype = torch::kFloat;
      }
    }
    s.slots.push_back(detail::SWAState::Slot{named[i].first, t.sizes().vec(), t.scalar_type(),
                                             avg_dtype, s.options.device().value_or(t.device()),
                                             averaged});
  }
  // Fused kernels need one device and dtype per list: group once, here.
  for (size_t i = 0; i < s.slots.size(); ++i) {
    const auto& slot = s.slots[i];
    if (!slot.averaged) continue;
    const bool floating = c10::isFloatingType(slot.avg_dtype) || c10::isComplexType(slot.avg_dtype);
    auto same = std::find_if(s.groups.begin(), s.groups.end(), [&](const auto& g) {
      const auto& first = s.slots[g.index.front()];
      return first.device == slot.device && first.avg_dtype == slot.avg_dtype;
    });
    if (same == s.groups.end()) {
      s.groups.push_back(detail::SWAState::Group{{i}, floating});
    } else {
      same->index.push_back(i);
    }
  }
}

inline void SWAWrapper::update(const torch::nn::Module& module) {
  auto& s = state();
  if (s.swapped_in) {
    throw std::invalid_argument(
        "SWAWrapper::update: the averages are swapped into a module; "
        "destroy or restore() the SwapGuard first");
  }
  s.update(detail::swa_checked(s, module, "SWAWrapper::update"));
}

inline SWAWrapper::SwapGuard SWAWrapper::swap_in(torch::nn::Module& module) {
  auto& s = state();
  if (s.swapped_in) {
    throw std::invalid_argument("SWAWrapper::swap_in: the averages are already swapped in");
  }
  std::vector<torch::Tensor> live = detail::swa_checked(s, module, "SWAWrapper::swap_in");
  if (s.n_averaged == 0) {
    throw std::invalid_argument(
        "SWAWrapper::swap_in: nothing averaged yet (n_averaged 0); call update() first");
  }
  s.flush();
  torch::NoGradGuard no_grad;
  // The copies first (they may throw: out of memory), then the swaps.
  std::vector<torch::Tensor> in(live.size());
  for (size_t i = 0; i < live.size(); ++i) {
    const auto& a = s.averages[i];
    if (a.device() != live[i].device() || a.scalar_type() != live[i].scalar_type())
      in[i] = a.to(live[i].device(), live[i].scalar_type(), /*non_blocking=*/false,
                   /*copy=*/true);
  }
  s.held.assign(live.size(), torch::Tensor());
  for (size_t i = 0; i < live.size(); ++i) {
    // Exchange storages, not values: the module's tensor (same TensorImpl, so
    // optimizer state and member handles stay valid) now uses the average's
    // storage (or a copy of it) and we keep an alias of the training storage.
    // variable_data(), unlike detach(), gives the alias its own version
    // counter, so later in-place updates of the averages never touch the
    // parameter's.
    torch::Tensor training = live[i].variable_data();
    if (in[i].defined()) {
      live[i].set_data(in[i]);
      s.held[i] = training;
    } else {
      live[i].set_data(s.averages[i]);
      s.averages[i] = training;
    }
  }
  s.swapped_in = true;
  return SwapGuard(state_, std::move(live));
}

inline void SWAWrapper::SwapGuard::restore() noexcept {
  if (!state_) return;
  auto& s = *state_;
  try {
    torch::NoGradGuard no_grad;
    // A copied average whose values changed while swapped in (update_bn's
    // statistics) is written back; one host-device synchronisation for all.
    std::vector<size_t> copied;
    std::vector<torch::Tensor> changed;
    for (size_t i = 0; i < live_.size(); ++i) {
      if (!s.held[i].defined()) continue;
      const auto& a = s.averages[i];
      copied.push_back(i);
      changed.push_back(
          live_[i].ne(a.to(live_[i].device(), live_[i].scalar_type())).any().to(torch::kCPU));
    }
    if (!copied.empty()) {
      const auto flags = torch::stack(changed);
      const bool* flag = flags.data_ptr<bool>();
      for (size_t k = 0; k < copied.size(); ++k) {
        if (flag[k]) s.averages[copied[k]].copy_(live_[copied[k]]);
      }
    }
  } catch (...) {
    // Only the write-back of a changed copy can fail (out of memory); the
    // training weights are put back below all the same.
  }
  for (size_t i = 0; i < live_.size(); ++i) {
    try {
      torch::NoGradGuard no_grad;
      if (s.held[i].defined()) {
        live_[i].set_data(s.held[i]);
      } else {
        torch::Tensor averaged = live_[i].variable_data();
        live_[i].set_data(s.averages[i]);
        s.averages[i] = averaged;
      }
    } catch (...) {
      // set_data between tensors of one device and dtype does not throw.
    }
  }
  s.held.clear();
  s.swapped_in = false;
  state_.reset();
  live_.clear();
}

inline std::vector<std::pair<std::string, torch::Tensor>> SWAWrapper::named_averages() const {
  auto& s = state();
  s.flush();
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for (size_t i = 0; i < s.slots.size(); ++i) {
    const auto& slot = s.slots[i];
    out.emplace_back(
        slot.name,
        s.allocated()
            ? s.averages[i]
            : torch::zeros({}, torch::TensorOptions().dtype(slot.avg_dtype)).expand(slot.sizes));
  }
  return out;
}

namespace detail {
inline std::string swa_join(const std::vector<std::string>& names) {
  std::string out;
  for (const auto& n : names) out += n + "\n";
  return out;
}
inline c10::IValue swa_read(torch::serialize::InputArchive& archive, const std::string& key,
                            const char* who) {
  c10::IValue value;
  if (!archive.try_read(key, value)) {
    throw std::invalid_argument(std::string(who) + ": archive has no key '" + key + "'");
  }
  return value;
}
// The value of `key` as T, or std::invalid_argument naming the key when the
// archive holds another type there (IValue's own toX() would throw c10::Error).
template <typename T>
T swa_read_as(torch::serialize::InputArchive& archive, const std::string& key, const char* who) {
  const c10::IValue value = swa_read(archive, key, who);
  auto wrong = [&](const char* want) {
    return std::invalid_argument(std::string(who) + ": key '" + key + "' holds a " +
                                 value.tagKind() + ", expected " + want);
  };
  if constexpr (std::is_same_v<T, double>) {
    if (!value.isDouble()) throw wrong("a float");
    return value.toDouble();
  } else if constexpr (std::is_same_v<T, int64_t>) {
    if (!value.isInt()) throw wrong("an int");
    return value.toInt();
  } else if constexpr (std::is_same_v<T, bool>) {
    if (!value.isBool()) throw wrong("a bool");
    return value.toBool();
  } else if constexpr (std::is_same_v<T, std::string>) {
    if (!value.isString()) throw wrong("a string");
    return value.toStringRef();
  } else {
    static_assert(std::is_same_v<T, std::vector<double>>, "swa_read_as: unsupported type");
    if (!value.isDoubleList()) throw wrong("a list of floats");
    return value.toDoubleVector();
  }
}
}  // namespace detail

inline void SWAWrapper::save(torch::serialize::OutputArchive& archive) const {
  auto& s = state();
  if (s.swapped_in) {
    throw std::invalid_argument(
        "SWAWrapper::save: the averages are swapped in; save after "
        "the SwapGuard restored the training weights");
  }
  const auto averages = named_averages();  // flushes
  std::vector<std::string> names;
  for (const auto& slot : s.slots) names.push_back(slot.name);
  archive.write("swa_n_averaged", c10::IValue(s.n_averaged));
  // -1: no decay (SWA); a None attribute does not survive every LibTorch.
  archive.write("swa_ema_decay", c10::IValue(s.options.ema_decay().value_or(-1.0)));
  archive.write("swa_use_buffers", c10::IValue(s.options.use_buffers()));
  archive.write("swa_names", c10::IValue(detail::swa_join(names)));
  for (size_t i = 0; i < averages.size(); ++i) {
    archive.write("swa_average_" + std::to_string(i), averages[i].second, /*is_buffer=*/true);
  }
}

inline void SWAWrapper::load(torch::serialize::InputArchive& archive) {
  const char* who = "SWAWrapper::load";
  auto& s = state();
  if (s.swapped_in) {
    throw std::invalid_argument(std::string(who) + ": the averages are swapped in");
  }
  const auto& options = s.options;
  const double decay = detail::swa_read_as<double>(archive, "swa_ema_decay", who);
  const bool use_buffers = detail::swa_read_as<bool>(archive, "swa_use_buffers", who);
  if (decay != options.ema_decay().value_or(-1.0) || use_buffers != options.use_buffers()) {
    throw std::invalid_argument(
        std::string(who) + ": saved with ema_decay=" +
        (decay < 0.0 ? std::string("none (SWA)") : std::to_string(decay)) +
        " use_buffers=" + (use_buffers ? "true" : "false") + ", this wrapper has ema_decay=" +
        (options.ema_decay() ? std::to_string(*options.ema_decay()) : std::string("none (SWA)")) +
        " use_buffers=" + (options.use_buffers() ? "true" : "false"));
  }
  std::vector<std::string> mine;
  for (const auto& slot : s.slots) mine.push_back(slot.name);
  const std::string names = detail::swa_read_as<std::string>(archive, "swa_names", who);
  if (names != detail::swa_join(mine)) {
    throw std::invalid_argument(std::string(who) +
                                ": the saved tensors are not this module's; saved names:\n" +
                                names + "expected:\n" + detail::swa_join(mine));
  }
  std::vector<torch::Tensor> loaded(s.slots.size());
  for (size_t i = 0; i < s.slots.size(); ++i) {
    const auto& slot = s.slots[i];
    const std::string key = "swa_average_" + std::to_string(i);
    const c10::IValue value = detail::swa_read(archive, key, who);
    if (!value.isTensor()) {
      throw std::invalid_argument(std::string(who) + ": key '" + key + "' holds a " +
                                  value.tagKind() + ", expected a tensor");
    }
    loaded[i] = value.toTensor();
    if (loaded[i].sizes() != c10::IntArrayRef(slot.sizes) ||
        loaded[i].scalar_type() != slot.avg_dtype) {
      throw std::invalid_argument(
          std::string(who) + ": '" + slot.name + "' is saved as " + detail::swa_shape(loaded[i]) +
          " " + std::string(c10::toString(loaded[i].scalar_type())) + " but its average is " +
          detail::swa_shape(slot.sizes) + " " + std::string(c10::toString(slot.avg_dtype)) +
          " here (SWAOptions::average_dtype)");
    }
  }
  const int64_t n = detail::swa_read_as<int64_t>(archive, "swa_n_averaged", who);
  if (n < 0) {
    throw std::invalid_argument(std::string(who) + ": negative n_averaged " + std::to_string(n));
  }
  s.flush();  // copies still on their way belong to the state being replaced
  if (n == 0) {
    s.averages.clear();  // saved before the first update: nothing to keep
  } else {
    torch::NoGradGuard no_grad;
    s.allocate();
    for (size_t i = 0; i < s.averages.size(); ++i) s.averages[i].copy_(loaded[i]);
  }
  s.n_averaged = n;
}

namespace detail {
// update_bn's state change, undone on every exit path: the momenta and the
// training mode always; unless commit() was called, also the running
// statistics and each submodule's own training mode.
class BatchNormStatsScope {
 public:
  // Finds the BatchNorm modules and saves their state; changes nothing.
  explicit BatchNormStatsScope(torch::nn::Module& module) : module_(module) {
    auto visit = [&](torch::nn::Module& m) {
      if (auto* bn = dynamic_cast<torch::nn::BatchNorm1dImpl*>(&m)) return add(*bn);
      if (auto* bn = dynamic_cast<torch::nn::BatchNorm2dImpl*>(&m)) return add(*bn);
      if (auto* bn = dynamic_cast<torch::nn::BatchNorm3dImpl*>(&m)) return add(*bn);
    };
    visit(module);  // modules(include_self) would need a shared_ptr-owned root
    for (const auto& child : module.modules(/*include_self=*/false)) {
      visit(*child);
      modes_.emplace_back(child, child->is_training());
    }
    was_training_ = module.is_training();
  }
  bool empty() const { return saved_.empty(); }
  // Resets the statistics (a no-op without track_running_stats, as in
  // PyTorch), sets the momenta to nullopt (cumulative average) and puts the
  // module in training mode.
  void begin() {
    for (auto& s : saved_) s.begin();
    module_.train(true);
  }
  // Keeps the statistics computed since begin().
  void commit() { committed_ = true; }
  ~BatchNormStatsScope() {
    torch::NoGradGuard no_grad;
    for (auto& s : saved_) {
      try {
        if (!committed_) s.restore_statistics();
      } catch (...) {
        // copy_ between tensors of one shape, dtype and device does not throw.
      }
      s.restore_momentum();
    }
    // Success: train(was_training) as PyTorch; failure: every module's own mode.
    module_.train(was_training_);
    if (!committed_) {
      for (auto& [child, training] : modes_) child->train(training);
    }
  }
  BatchNormStatsScope(const BatchNormStatsScope&) = delete;
  BatchNormStatsScope& operator=(const BatchNormStatsScope&) = delete;

 private:
  // One BatchNorm: its live buffers and momentum, and copies of the buffers.
  struct Saved {
    std::function<void()> reset;
    std::function<void(c10::optional<double>)> set_momentum;
    c10::optional<double> momentum;
    std::vector<torch::Tensor> live, copies;  // running_mean, running_var, num_batches_tracked
    void begin() {
      reset();
      set_momentum(c10::nullopt);
    }
    void restore_statistics() {
      for (size_t i = 0; i < live.size(); ++i) live[i].copy_(copies[i]);
    }
    void restore_momentum() { set_momentum(momentum); }
  };
  template <typename BN>
  void add(BN& bn) {
    Saved s;
    s.reset = [&bn] { bn.reset_running_stats(); };
    s.set_momentum = [&bn](c10::optional<double> m) { bn.options.momentum(m); };
    s.momentum = bn.options.momentum();
    torch::NoGradGuard no_grad;
    for (const auto& t : {bn.running_mean, bn.running_var, bn.num_batches_tracked}) {
      if (!t.defined()) continue;
      s.live.push_back(t);
      s.copies.push_back(t.detach().clone());
    }
    saved_.push_back(std::move(s));
  }
  torch::nn::Module& module_;
  bool was_training_ = true;
  bool committed_ = false;
  std::vector<Saved> saved_;
  std::vector<std::pair<std::shared_ptr<torch::nn::Module>, bool>> modes_;  // submodules
};
}  // namespace detail

inline void update_bn(torch::nn::Module& module, const std::function<void()>& run_batches) {
  torch::NoGradGuard no_grad;
  detail::BatchNormStatsScope scope(module);  // saves; may throw before any change
  if (scope.empty()) return;
  scope.begin();
  run_batches();
  scope.commit();
}

template <typename Batches, typename Forward>
void update_bn(torch::nn::Module& module, Batches&& batches, Forward&& forward) {
  update_bn(module, std::function<void()>([&] {
              for (auto&& batch : batches) forward(batch);
            }));
}

inline void SWALR::validate(const SWALROptions& options, size_t groups) {
  const auto& lrs = options.swa_lr();
  if (lrs.size() != 1 && lrs.size() != groups) {
    throw std::invalid_argument("SWALR: expected 1 or " + std::to_string(groups) +
                                " values for swa_lr (one per param group), got " +
                                std::to_string(lrs.size()));
  }
  for (double lr : lrs) {
    if (!std::isfinite(lr) || lr < 0.0) {
      throw std::invalid_argument("SWALR: swa_lr must be finite and >= 0, got " +
                                  std::to_string(lr));
    }
  }
  if (options.anneal_epochs() < 0) {
    throw std::invalid_argument("SWALR: anneal_epochs must be equal or greater than 0, got " +
                                std::to_string(options.anneal_epochs()));
  }
}

inline SWALR::SWALR(torch::optim::Optimizer& optimizer, SWALROptions options)
    : optimizer_(optimizer), options_(std::move(options)) {
  validate(options_, optimizer_.param_groups().size());
  step();  // LRScheduler._initial_step: _step_count 0 -> 1
}

inline double SWALR::swa_lr_of(size_t group) const {
  const auto& lrs = options_.swa_lr();
  return lrs.size() == 1 ? lrs.front() : lrs[group];
}

inline double SWALR::anneal(double t) const {
  constexpr double kPi = 3.141592653589793;  // math.pi
  if (options_.anneal_strategy() == AnnealStrategy::linear) return t;
  return (1.0 - std::cos(kPi * t)) / 2.0;
}

inline void SWALR::step() {
  auto& groups = optimizer_.param_groups();
  const auto& lrs = options_.swa_lr();
  if (lrs.size() != 1 && lrs.size() != groups.size()) {
    throw std::invalid_argument("SWALR::step: the optimizer has " + std::to_string(groups.size()) +
                                " param groups but " + std::to_string(lrs.size()) +
                                " swa_lr values were given");
  }
  ++step_count_;
  // SWALR.get_lr, term by term in Python's order.
  int64_t step = step_count_ - 1;
  const int64_t epochs = options_.anneal_epochs();
  if (epochs == 0) step = std::max<int64_t>(1, step);
  const double span = static_cast<double>(std::max<int64_t>(1, epochs));
  const double prev_t = std::max(0.0, std::min(1.0, static_cast<double>(step - 1) / span));
  const double prev_alpha = anneal(prev_t);
  const double t = std::max(0.0, std::min(1.0, static_cast<double>(step) / span));
  const double alpha = anneal(t);
  const size_t known = step_count_ == 1 ? groups.size() : last_lr_.size();
  last_lr_.resize(groups.size(), 0.0);
  for (size_t g = 0; g < groups.size(); ++g) {
    const double swa_lr = swa_lr_of(g);
    const double lr = groups[g].options().get_lr();
    // _get_initial_lr: the lr the annealing started from, recovered from the
    // current one, so another schedule's changes before the switch count. A
    // group added since the last step anneals from the lr it was added with.
    const double prev_lr = g >= known          ? lr
                           : prev_alpha == 1.0 ? swa_lr
                                               : (lr - prev_alpha * swa_lr) / (1.0 - prev_alpha);
    const double next = swa_lr * alpha + prev_lr * (1.0 - alpha);
    groups[g].options().set_lr(next);
    last_lr_[g] = next;
  }
}

inline void SWALR::save(torch::serialize::OutputArchive& archive) const {
  archive.write("swalr_step_count", c10::IValue(step_count_));
  archive.write("swalr_anneal_epochs", c10::IValue(options_.anneal_epochs()));
  archive.write("swalr_anneal_strategy",
                c10::IValue(options_.anneal_strategy() == AnnealStrategy::cos ? "cos" : "linear"));
  archive.write("swalr_swa_lr", c10::IValue(options_.swa_lr()));
  archive.write("swalr_last_lr", c10::IValue(last_lr_));
}

inline void SWALR::load(torch::serialize::InputArchive& archive) {
  const char* who = "SWALR::load";
  SWALROptions loaded(detail::swa_read_as<std::vector<double>>(archive, "swalr_swa_lr", who));
  loaded.anneal_epochs(detail::swa_read_as<int64_t>(archive, "swalr_anneal_epochs", who));
  const std::string strategy =
      detail::swa_read_as<std::string>(archive, "swalr_anneal_strategy", who);
  if (strategy != "cos" && strategy != "linear") {
    throw std::invalid_argument(std::string(who) + ": unknown anneal_strategy '" + strategy + "'");
  }
  loaded.anneal_strategy(strategy == "cos" ? AnnealStrategy::cos : AnnealStrategy::linear);
  validate(loaded, optimizer_.param_groups().size());
  const int64_t count = detail::swa_read_as<int64_t>(archive, "swalr_step_count", who);
  if (count < 1) {
    throw std::invalid_argument(std::string(who) + ": step count must be >= 1, got " +
                                std::to_string(count));
  }
  auto last_lr = detail::swa_read_as<std::vector<double>>(archive, "swalr_last_lr", who);
  auto& groups = optimizer_.param_groups();
  if (last_lr.size() != groups.size()) {
    throw std::invalid_argument(std::string(who) + ": saved for " + std::to_string(last_lr.size()) +
                                " param groups, the optimizer has " +
                                std::to_string(groups.size()));
  }
  options_ = std::move(loaded);
  step_count_ = count;
  last_lr_ = std::move(last_lr);
  // LibTorch 1.13's Optimizer::load keeps the current param-group options, so
  // put back the lrs this scheduler set last (2.x restores the same values).
  for (size_t g = 0; g < groups.size(); ++g) groups[g].options().set_lr(last_lr_[g]);
}

inline SWAScheduler::SWAScheduler(torch::optim::Optimizer& optimizer,
                                  std::unique_ptr<Scheduler> before, SWASchedulerOptions options)
    : optimizer_(optimizer), before_(std::move(before)), options_(std::move(options)) {
  if (!before_) throw std::invalid_argument("SWAScheduler: the first schedule is null");
  if (options_.swa_start() < 0) {
    throw std::invalid_argument("SWAScheduler: swa_start must be >= 0, got " +
                                std::to_string(options_.swa_start()));
  }
  SWALR::validate(options_.swalr(), optimizer_.param_groups().size());
}

inline void SWAScheduler::step() {
  if (step_count_ < options_.swa_start()) {
    before_->step();
  } else {
    // The notebook builds SWALR with the other schedule, before training; it
    // only reads the lr it anneals from at its first step, so building it at
    // the switch gives the same lrs (and no construction-time surprise when
    // anneal_epochs is 0).
    if (!swalr_) swalr_ = std::make_unique<SWALR>(optimizer_, options_.swalr());
    swalr_->step();
  }
  ++step_count_;
}

inline std::vector<double> SWAScheduler::get_last_lr() const {
  return swalr_ ? swalr_->get_last_lr() : before_->get_last_lr();
}

inline void SWAScheduler::save(torch::serialize::OutputArchive& archive) const {
  archive.write("swa_scheduler_step_count", c10::IValue(step_count_));
  archive.write("swa_scheduler_swa_start", c10::IValue(options_.swa_start()));
  before_->save(archive);
  archive.write("swa_scheduler_has_swalr", c10::IValue(swalr_ != nullptr));
  if (swalr_) swalr_->save(archive);
}

inline void SWAScheduler::load(torch::serialize::InputArchive& archive) {
  const char* who = "SWAScheduler::load";
  const int64_t count = detail::swa_read_as<int64_t>(archive, "swa_scheduler_step_count", who);
  const int64_t start = detail::swa_read_as<int64_t>(archive, "swa_scheduler_swa_start", who);
  const bool has_swalr = detail::swa_read_as<bool>(archive, "swa_scheduler_has_swalr", who);
  if (start != options_.swa_start()) {
    throw std::invalid_argument(std::string(who) + ": the state was saved with swa_start " +
                                std::to_string(start) + ", this scheduler has " +
                                std::to_string(options_.swa_start()));
  }
  if (count < 0 || has_swalr != (count > start)) {
    throw std::invalid_argument(std::string(who) + ": inconsistent state: step count " +
                                std::to_string(count) + ", swa_start " + std::to_string(start) +
                                (has_swalr ? ", with" : ", without") + " SWALR state");
  }
  // Both parts are strong on their own; SWALR's construction and load may set
  // lrs, so the lrs are put back if anything after them fails.
  auto& groups = optimizer_.param_groups();
  std::vector<double> lrs;
  for (const auto& group : groups) lrs.push_back(group.options().get_lr());
  std::unique_ptr<SWALR> swalr;
  try {
    if (has_swalr) {
      swalr = std::make_unique<SWALR>(optimizer_, options_.swalr());
      swalr->load(archive);
      const SWALROptions& saved = swalr->options();
      const SWALROptions& mine = options_.swalr();
      if (saved.swa_lr() != mine.swa_lr() || saved.anneal_epochs() != mine.anneal_epochs() ||
          saved.anneal_strategy() != mine.anneal_strategy()) {
        throw std::invalid_argument(std::string(who) +
                                    ": the state was saved with other SWALR options "
                                    "(swa_lr, anneal_epochs or anneal_strategy)");
      }
    }
    before_->load(archive);  // sets the first schedule's lrs
  } catch (...) {
    for (size_t g = 0; g < groups.size() && g < lrs.size(); ++g) groups[g].options().set_lr(lrs[g]);
    throw;
  }
  swalr_ = std::move(swalr);
  step_count_ = count;
  if (swalr_) {
    const auto last = swalr_->get_last_lr();
    for (size_t g = 0; g < groups.size(); ++g) groups[g].options().set_lr(last[g]);
  }
}

}  // namespace finetune
