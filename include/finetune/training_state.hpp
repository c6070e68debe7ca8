// finetune: fine-tuning techniques for LibTorch, header-only.
// SPDX-License-Identifier: MIT
//
// TrainingState: everything a run needs to continue after a kill, in one
// atomically written file, and the one call per optimizer step that keeps the
// counters of every technique in step with each other.
//
//   finetune::TrainingState state;
//   state.add("model", *model).add("optimizer", optimizer).add("scheduler", scheduler)
//        .add("swa", swa, *model, [&] { return scheduler.averaging(); })
//        .add("evaluator", evaluator).add("shuffle", shuffle_generator);
//   if (resuming) state.load(dir + "/state.pt");     // any order of add(), same result
//   for (; state.position().epoch < epochs; state.end_epoch()) {
//     for (batch from state.position().batch) {
//       ... loss.backward(); state.next_batch();
//       if (accumulated) {
//         const bool taken = finetune::step_if_finite(optimizer);   // or scaler.step(optimizer)
//         if (state.optimizer_step(taken) && evaluator.step(rmse)) stop;
//         optimizer.zero_grad();
//       }
//       if (time to save) state.save(dir + "/state.pt");
//     }
//     evaluator.end_epoch(rmse);
//   }
//
// What a state holds: each registered part under its name (modules' tensors,
// optimizers' state and every param group's options, schedulers, averagers,
// evaluators, gradual unfreezing, the user's generators, anything else through
// a save/load pair), the default CPU generator and every CUDA generator, and
// the loop position (epoch, batch in epoch, optimizer steps taken and skipped).
// See docs/resuming.md and docs/accumulation.md.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <mutex>
#include <sstream>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include <torch/cuda.h>
#include <torch/nn/module.h>
#include <torch/optim/adagrad.h>
#include <torch/optim/adam.h>
#include <torch/optim/adamw.h>
#include <torch/optim/optimizer.h>
#include <torch/optim/rmsprop.h>
#include <torch/optim/sgd.h>
#include <torch/serialize/archive.h>
#include <torch/types.h>

#include "finetune/compat.hpp"
#include "finetune/grad_scaler.hpp"
#include "finetune/periodic_evaluator.hpp"
#include "finetune/scheduler.hpp"
#include "finetune/swa.hpp"
#include "finetune/unfreezing.hpp"

namespace finetune {

/// Where the loop is. The loop moves it through TrainingState's
/// next_batch(), optimizer_step() and end_epoch(), and reads it on resume.
struct LoopPosition {
  int64_t epoch = 0;           ///< current epoch, from 0
  int64_t batch = 0;           ///< batches of this epoch consumed (the next batch's index)
  int64_t optimizer_step = 0;  ///< optimizer steps taken
  int64_t skipped_steps = 0;   ///< optimizer steps skipped (non-finite gradients)
};

/// Options of TrainingState.
struct TrainingStateOptions {
  /// false: save() writes nothing (a data-parallel rank other than the one
  /// that writes). Default true.
  TORCH_ARG(bool, writer) = true;
  /// Save and restore the default CPU generator and every CUDA device's
  /// default generator (dropout masks, torch::randperm without a generator).
  /// Default true.
  TORCH_ARG(bool, global_generators) = true;
};

/// One training run's resumable state. Non-owning: every registered part
/// must outlive this object. Not copyable.
class TrainingState {
 public:
  using SaveFn = std::function<void(torch::serialize::OutputArchive&)>;
  using LoadFn = std::function<void(torch::serialize::InputArchive&)>;

  explicit TrainingState(TrainingStateOptions options = {}) : options_(options) {}
  TrainingState(const TrainingState&) = delete;
  TrainingState& operator=(const TrainingState&) = delete;

  /// Registers a part under `name` (letters, digits, '_' and '-'; unique).
  /// Throws std::invalid_argument on a bad or repeated name.
  TrainingState& add(const std::string& name, torch::nn::Module& module);
  TrainingState& add(const std::string& name, torch::optim::Optimizer& optimizer);
  /// optimizer_step(true) steps it.
  TrainingState& add(const std::string& name, Scheduler& scheduler);
  /// optimizer_step(true) updates it from `model` when `when()` is true
  /// (always when `when` is empty), e.g. `[&] { return scheduler.averaging(); }`.
  TrainingState& add(const std::string& name, SWAWrapper& averager, const torch::nn::Module& model,
                     std::function<bool()> when = {});
  /// The loop steps the evaluator itself (it needs the evaluation
  /// callables): once per optimizer_step() that returned true.
  TrainingState& add(const std::string& name, PeriodicEvaluator& evaluator);
  /// optimizer_step(true) calls its step(), end_epoch() its epoch_end().
  TrainingState& add(const std::string& name, GradualUnfreezing& unfreezing);
  /// A generator of the user's (e.g. the one that shuffles the data).
  TrainingState& add(const std::string& name, at::Generator generator);
  /// A loss scaler: its scale and growth tracker (save() right after a
  /// step, as always: GradScaler refuses to save mid-iteration). Pass its
  /// step()'s verdict to optimizer_step().
  TrainingState& add(const std::string& name, GradScaler& scaler);
  /// Anything else: `save` writes into, `load` reads from the part's own
  /// archive. `load` should throw std::invalid_argument and change nothing
  /// on a state it cannot use.
  TrainingState& add(const std::string& name, SaveFn save, LoadFn load);

  LoopPosition& position() { return position_; }
  const LoopPosition& position() const { return position_; }

  /// Counts one batch of the current epoch as consumed.
  void next_batch() { ++position_.batch; }
  /// Call after every optimizer step attempt: `taken` false when it was
  /// skipped (non-finite gradients; a loss scaler's verdict). A taken step
  /// is counted and steps every registered scheduler, gradual unfreezing and
  /// averager (when due); a skipped one is counted as skipped and moves
  /// nothing else. Returns `taken`: step the evaluator only then.
  bool optimizer_step(bool taken);
  /// Ends the epoch: epoch + 1, batch 0, and every registered gradual
  /// unfreezing's epoch_end(). Throws std::logic_error when a registered
  /// evaluator counted another number of steps than optimizer_step() did.
  void end_epoch();

  /// Writes the state to `path` atomically (atomic_write_text: the old file
  /// or the new one, never a torn one). Returns false (and writes nothing)
  /// when options().writer() is false. Throws std::logic_error when an
  /// evaluator's step count disagrees with the position (a step counted
  /// twice or a skipped step evaluated), std::runtime_error on I/O errors.
  bool save(const std::string& path) const;
  void save(torch::serialize::OutputArchive& archive) const;

  /// Restores a state written by save() into the registered parts, in a
  /// fixed order whatever the order of add() and whatever was loaded before.
  /// Throws std::invalid_argument naming the file and the part when the
  /// file is missing, truncated or not a training state, when it lacks a
  /// registered part or has one this state lacks, when a module's tensors
  /// (names, shapes, dtypes) or an optimizer's groups differ, or the CUDA
  /// generators differ in number, or an averager's tensors or options differ.
  /// All of these are checked before anything is changed. A part's own load
  /// that fails after that (a scheduler saved with other options, an
  /// optimizer state LibTorch cannot read, a generator state of another
  /// kind, an evaluator whose history file was cut) puts the schedulers,
  /// unfreezings, generators, custom parts and optimizers back; nothing else
  /// has been touched then.
  void load(const std::string& path);
  void load(torch::serialize::InputArchive& archive);
  /// Whether `path` exists (a state to resume from).
  static bool exists(const std::string& path) { return std::filesystem::exists(path); }

  const TrainingStateOptions& options() const { return options_; }

 private:
  enum class Kind {
    module,
    optimizer,
    scheduler,
    averager,
    evaluator,
    unfreezing,
    generator,
    custom
  };
  struct Part {
    Kind kind;
    std::string name;
    SaveFn save;
    LoadFn load;
    std::function<void(torch::serialize::InputArchive&)> check;  // may be empty
    // Optimizers: takes a snapshot and returns what puts it back (may be empty).
    std::function<std::function<void()>()> keep;
  };
  static const char* kind_name(Kind kind);
  std::string part_list() const;
  Part& add_part(Kind kind, const std::string& name, SaveFn save, LoadFn load);
  void check_counts() const;

  TrainingStateOptions options_;
  LoopPosition position_;
  std::vector<Part> parts_;
  std::vector<Scheduler*> schedulers_;
  std::vector<GradualUnfreezing*> unfreezings_;
  std::vector<PeriodicEvaluator*> evaluators_;
  struct Averaging {
    SWAWrapper* averager;
    const torch::nn::Module* model;
    std::function<bool()> when;
  };
  std::vector<Averaging> averagers_;
};

/// Takes `optimizer`'s step when every gradient is finite; otherwise zeroes
/// the gradients and skips it, as a loss scaler does on an overflow. Returns
/// whether the step was taken: pass it to TrainingState::optimizer_step. One
/// host-device synchronisation per call (the verdict is needed on the host).
bool step_if_finite(torch::optim::Optimizer& optimizer);

// ===========================================================================
// Definitions
// ===========================================================================

namespace detail {

[[noreturn]] inline void bad_state(const std::string& what) {
  throw std::invalid_argument("finetune: TrainingState: " + what);
}

inline void check_part_name(const std::string& name) {
  if (name.empty()) bad_state("a part needs a name");
  for (char c : name) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '_' || c == '-';
    if (!ok) {
      bad_state("part name '" + name + "': use letters, digits, '_' and '-' only");
    }
  }
}

// Every tensor a module owns, parameters then buffers, by dotted name.
inline std::vector<std::pair<std::string, torch::Tensor>> state_tensors(
    const torch::nn::Module& module) {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for (const auto& p : module.named_parameters(/*recurse=*/true))
    out.emplace_back(p.key(), p.value());
  for (const auto& b : module.named_buffers(/*recurse=*/true)) {
    if (b.value().defined()) out.emplace_back(b.key(), b.value());
  }
  return out;
}

// The names of named tensors, one per line: what a module part saves as
// "names", and what SWAWrapper saves as "swa_names" for its averages.
inline std::string joined_names(const std::vector<std::pair<std::string, torch::Tensor>>& tensors) {
  std::string out;
  for (const auto& named : tensors) out += named.first + "\n";
  return out;
}

inline std::string describe_tensor(const torch::Tensor& t) {
  std::ostringstream out;
  out << t.sizes() << " " << c10::toString(t.scalar_type());
  return out.str();
}

// The layout of an optimizer: its groups and each parameter's shape and dtype.
inline std::string optimizer_layout(const torch::optim::Optimizer& optimizer) {
  std::ostringstream out;
  const auto& groups = optimizer.param_groups();
  for (size_t g = 0; g < groups.size(); ++g) {
    out << "group " << g << ":";
    for (const auto& p : groups[g].params()) out << " " << describe_tensor(p);
    out << "\n";
  }
  return out.str();
}

inline c10::IValue state_value(torch::serialize::InputArchive& archive, const std::string& key,
                               const std::string& where) {
  c10::IValue value;
  bool found = false;
  try {
    found = archive.try_read(key, value);
  } catch (const c10::Error& e) {
    bad_state(where + ": cannot read '" + key + "': " + e.what_without_backtrace());
  }
  if (!found) bad_state(where + ": no '" + key + "'");
  return value;
}

inline int64_t state_int(torch::serialize::InputArchive& archive, const std::string& key,
                         const std::string& where, int64_t min) {
  const c10::IValue v = state_value(archive, key, where);
  if (!v.isInt()) bad_state(where + ": '" + key + "' is a " + v.tagKind() + ", not an int");
  if (v.toInt() < min) {
    bad_state(where + ": '" + key + "' is " + std::to_string(v.toInt()) + ", less than " +
              std::to_string(min));
  }
  return v.toInt();
}

inline std::string state_string(torch::serialize::InputArchive& archive, const std::string& key,
                                const std::string& where) {
  const c10::IValue v = state_value(archive, key, where);
  if (!v.isString()) bad_state(where + ": '" + key + "' is a " + v.tagKind() + ", not a string");
  return v.toStringRef();
}

inline torch::Tensor state_tensor_at(torch::serialize::InputArchive& archive,
                                     const std::string& key, const std::string& where) {
  const c10::IValue v = state_value(archive, key, where);
  if (!v.isTensor()) bad_state(where + ": '" + key + "' is a " + v.tagKind() + ", not a tensor");
  return v.toTensor();
}

inline void restore_generator(at::Generator& generator, const torch::Tensor& state,
                              const std::string& where) {
  std::lock_guard<std::mutex> lock(generator.mutex());
  try {
    generator.set_state(state);
  } catch (const c10::Error& e) {
    bad_state(where + ": not a generator state of this kind: " + e.what_without_backtrace());
  }
}

inline torch::Tensor generator_state(const at::Generator& generator) {
  at::Generator g = generator;
  std::lock_guard<std::mutex> lock(g.mutex());
  return g.get_state();
}

// The default generators this process has: the CPU one, then one per CUDA device.
inline std::vector<at::Generator> default_generators() {
  std::vector<at::Generator> out{at::globalContext().defaultGenerator(at::kCPU)};
  if (torch::cuda::is_available()) {
    const auto count = static_cast<c10::DeviceIndex>(torch::cuda::device_count());
    for (c10::DeviceIndex i = 0; i < count; ++i)
      out.push_back(at::globalContext().defaultGenerator(at::Device(at::kCUDA, i)));
  }
  return out;
}

// "t<i>": the key of a module's i-th tensor (built in two steps: GCC 12
// warns, wrongly, about `detail::tensor_key(i)` here).
inline std::string tensor_key(size_t i) {
  std::string key = std::to_string(i);
  key.insert(key.begin(), 't');
  return key;
}

// LibTorch's optimizers load a per-parameter state without checking it
// against the parameter: a tensor of another shape or dtype, or one missing
// (left undefined), makes the next step() throw. Checked after the load for
// LibTorch's optimizers (LBFGS keeps no per-parameter state of this kind).
template <typename State, typename Options>
bool check_param_state(const torch::optim::OptimizerParamState& state,
                       const torch::optim::OptimizerOptions& options, const torch::Tensor& param,
                       const std::string& where) {
  const auto* typed = dynamic_cast<const State*>(&state);
  const auto* opts = dynamic_cast<const Options*>(&options);
  if (typed == nullptr || opts == nullptr) return false;
  auto need = [&](const char* name, const torch::Tensor& t) {
    if (!t.defined()) bad_state(where + ": a parameter's state has no '" + name + "'");
    if (t.sizes() != param.sizes() || t.scalar_type() != param.scalar_type()) {
      bad_state(where + ": the state '" + name + "' of a parameter " + describe_tensor(param) +
                " is saved as " + describe_tensor(t));
    }
  };
  if constexpr (std::is_same_v<State, torch::optim::AdamParamState> ||
                std::is_same_v<State, torch::optim::AdamWParamState>) {
    need("exp_avg", typed->exp_avg());
    need("exp_avg_sq", typed->exp_avg_sq());
    if (opts->amsgrad()) need("max_exp_avg_sq", typed->max_exp_avg_sq());
  } else if constexpr (std::is_same_v<State, torch::optim::SGDParamState>) {
    need("momentum_buffer", typed->momentum_buffer());
  } else if constexpr (std::is_same_v<State, torch::optim::RMSpropParamState>) {
    need("square_avg", typed->square_avg());
    if (opts->momentum() > 0) need("momentum_buffer", typed->momentum_buffer());
    if (opts->centered()) need("grad_avg", typed->grad_avg());
  } else {
    need("sum", typed->sum());
  }
  return true;
}

inline void check_loaded_optimizer(const torch::optim::Optimizer& optimizer,
                                   const std::string& where) {
  using namespace torch::optim;
  const auto& states = optimizer.state();
  using Key = typename std::decay_t<decltype(states)>::key_type;
  for (const auto& group : optimizer.param_groups()) {
    for (const auto& param : group.params()) {
      const auto it = states.find(compat::optimizer_state_key<Key>(param));
      if (it == states.end()) continue;
      const auto& state = *it->second;
      const auto& options = group.options();
      const bool known =
          check_param_state<AdamWParamState, AdamWOptions>(state, options, param, where) ||
          check_param_state<AdamParamState, AdamOptions>(state, options, param, where) ||
          check_param_state<SGDParamState, SGDOptions>(state, options, param, where) ||
          check_param_state<RMSpropParamState, RMSpropOptions>(state, options, param, where) ||
          check_param_state<AdagradParamState, AdagradOptions>(state, options, param, where);
      (void)known;  // another optimizer's state: not checked
    }
  }
}

// The optimizer's per-parameter state and group options, to put back when
// Optimizer::load fails halfway (it replaces state entries, never changes
// their tensors, so a shallow copy is enough).
inline std::function<void()> keep_optimizer(torch::optim::Optimizer& optimizer) {
  using StateMap = std::decay_t<decltype(optimizer.state())>;
  struct Kept {
    StateMap state;
    std::vector<std::unique_ptr<torch::optim::OptimizerOptions>> options;
  };
  auto kept = std::make_shared<Kept>();
  for (const auto& [key, value] : optimizer.state()) kept->state.emplace(key, value->clone());
  for (const auto& group : optimizer.param_groups())
    kept->options.push_back(group.options().clone());
  torch::optim::Optimizer* o = &optimizer;
  return [o, kept] {
    o->state().clear();
    for (auto& [key, value] : kept->state) o->state().emplace(key, value->clone());
    auto& groups = o->param_groups();
    for (size_t g = 0; g < groups.size() && g < kept->options.size(); ++g)
      groups[g].set_options(kept->options[g]->clone());
  };
}

constexpr const char* kStateFormat = "finetune-training-state";
constexpr int64_t kStateVersion = 1;

}  // namespace detail

inline const char* TrainingState::kind_name(Kind kind) {
  switch (kind) {
    case Kind::module:
      return "module";
    case Kind::optimizer:
      return "optimizer";
    case Kind::scheduler:
      return "scheduler";
    case Kind::averager:
      return "averager";
    case Kind::evaluator:
      return "evaluator";
    case Kind::unfreezing:
      return "unfreezing";
    case Kind::generator:
      return "generator";
    case Kind::custom:
      return "custom";
  }
  return "?";
}

// "kind name" lines sorted by name: the same whatever the order of add().
inline std::string TrainingState::part_list() const {
  std::vector<std::string> lines;
  for (const auto& p : parts_) lines.push_back(p.name + " (" + kind_name(p.kind) + ")\n");
  std::sort(lines.begin(), lines.end());
  std::string out;
  for (const auto& line : lines) out += line;
  return out;
}

inline TrainingState::Part& TrainingState::add_part(Kind kind, const std::string& name, SaveFn save,
                                                    LoadFn load) {
  detail::check_part_name(name);
  for (const auto& p : parts_) {
    if (p.name == name) detail::bad_state("two parts named '" + name + "'");
  }
  if (!save || !load)
    detail::bad_state("part '" + name + "' needs both a save and a load function");
  parts_.push_back(Part{kind, name, std::move(save), std::move(load), {}, {}});
  return parts_.back();
}

inline TrainingState& TrainingState::add(const std::string& name, torch::nn::Module& module) {
  torch::nn::Module* m = &module;
  const std::string where = "part '" + name + "' (module)";
  Part& part = add_part(
      Kind::module, name,
      [m](torch::serialize::OutputArchive& a) {
        const auto tensors = detail::state_tensors(*m);
        a.write("names", c10::IValue(detail::joined_names(tensors)));
        for (size_t i = 0; i < tensors.size(); ++i)
          a.write(detail::tensor_key(i), tensors[i].second, /*is_buffer=*/true);
      },
      [m, where](torch::serialize::InputArchive& a) {
        torch::NoGradGuard no_grad;
        const auto tensors = detail::state_tensors(*m);
        for (size_t i = 0; i < tensors.size(); ++i) {
          tensors[i].second.copy_(detail::state_tensor_at(a, detail::tensor_key(i), where));
        }
      });
  part.check = [m, where](torch::serialize::InputArchive& a) {
    const auto tensors = detail::state_tensors(*m);
    if (detail::state_string(a, "names", where) != detail::joined_names(tensors)) {
      detail::bad_state(where +
                        ": the saved tensors are not this model's (names differ: "
                        "another model, or another configuration of it)");
    }
    for (size_t i = 0; i < tensors.size(); ++i) {
      const torch::Tensor saved = detail::state_tensor_at(a, detail::tensor_key(i), where);
      const torch::Tensor& mine = tensors[i].second;
      if (saved.sizes() != mine.sizes() || saved.scalar_type() != mine.scalar_type()) {
        detail::bad_state(where + ": '" + tensors[i].first + "' is saved as " +
                          detail::describe_tensor(saved) + ", the model has " +
                          detail::describe_tensor(mine));
      }
    }
  };
  return *this;
}

inline TrainingState& TrainingState::add(const std::string& name,
                                         torch::optim::Optimizer& optimizer) {
  torch::optim::Optimizer* o = &optimizer;
  const std::string where = "part '" + name + "' (optimizer)";
  Part& part = add_part(
      Kind::optimizer, name,
      [o](torch::serialize::OutputArchive& a) {
        a.write("layout", c10::IValue(detail::optimizer_layout(*o)));
        torch::serialize::OutputArchive state;
        o->save(state);
        a.write("state", state);
        // Every group's options (lr, betas, weight decay...): LibTorch 1.13's
        // Optimizer::load does not restore them.
        const auto& groups = o->param_groups();
        for (size_t g = 0; g < groups.size(); ++g) {
          torch::serialize::OutputArchive options;
          groups[g].options().serialize(options);
          a.write("options_" + std::to_string(g), options);
        }
      },
      [o, where](torch::serialize::InputArchive& a) {
        torch::serialize::InputArchive state;
        try {
          a.read("state", state);
          o->load(state);
          auto& groups = o->param_groups();
          for (size_t g = 0; g < groups.size(); ++g) {
            torch::serialize::InputArchive options;
            a.read("options_" + std::to_string(g), options);
            groups[g].options().serialize(options);
          }
        } catch (const c10::Error& e) {
          detail::bad_state(where + ": " + e.what_without_backtrace());
        } catch (const std::exception& e) {  // std::stoull of a saved key, ...
          detail::bad_state(where + ": " + e.what());
        }
        detail::check_loaded_optimizer(*o, where);
      });
  part.check = [o, where](torch::serialize::InputArchive& a) {
    const std::string saved = detail::state_string(a, "layout", where);
    const std::string mine = detail::optimizer_layout(*o);
    if (saved != mine) {
      detail::bad_state(where + ": saved for another layout of param groups.\nSaved:\n" + saved +
                        "This optimizer:\n" + mine);
    }
  };
  part.keep = [o] { return detail::keep_optimizer(*o); };
  return *this;
}

inline TrainingState& TrainingState::add(const std::string& name, Scheduler& scheduler) {
  Scheduler* s = &scheduler;
  add_part(
      Kind::scheduler, name, [s](torch::serialize::OutputArchive& a) { s->save(a); },
      [s](torch::serialize::InputArchive& a) { s->load(a); });
  schedulers_.push_back(s);
  return *this;
}

inline TrainingState& TrainingState::add(const std::string& name, SWAWrapper& averager,
                                         const torch::nn::Module& model,
                                         std::function<bool()> when) {
  SWAWrapper* s = &averager;
  const std::string where = "part '" + name + "' (averager)";
  Part& part = add_part(
      Kind::averager, name, [s](torch::serialize::OutputArchive& a) { s->save(a); },
      [s](torch::serialize::InputArchive& a) { s->load(a); });
  // What SWAWrapper::load checks first, checked before anything is loaded.
  part.check = [s, where](torch::serialize::InputArchive& a) {
    if (detail::state_string(a, "swa_names", where) != detail::joined_names(s->named_averages())) {
      detail::bad_state(where + ": the saved averages are not this model's (names differ)");
    }
    const c10::IValue decay = detail::state_value(a, "swa_ema_decay", where);
    const c10::IValue buffers = detail::state_value(a, "swa_use_buffers", where);
    if (!decay.isDouble() || !buffers.isBool() ||
        decay.toDouble() != s->options().ema_decay().value_or(-1.0) ||
        buffers.toBool() != s->options().use_buffers()) {
      detail::bad_state(where + ": saved with other SWAOptions (ema_decay, use_buffers)");
    }
    const auto averages = s->named_averages();
    for (size_t i = 0; i < averages.size(); ++i) {
      const torch::Tensor saved =
          detail::state_tensor_at(a, "swa_average_" + std::to_string(i), where);
      const torch::Tensor& mine = averages[i].second;
      if (saved.sizes() != mine.sizes() || saved.scalar_type() != mine.scalar_type()) {
        detail::bad_state(where + ": the average of '" + averages[i].first + "' is saved as " +
                          detail::describe_tensor(saved) + ", this averager has " +
                          detail::describe_tensor(mine));
      }
    }
    detail::state_int(a, "swa_n_averaged", where, 0);
  };
  averagers_.push_back(Averaging{s, &model, std::move(when)});
  return *this;
}

inline TrainingState& TrainingState::add(const std::string& name, PeriodicEvaluator& evaluator) {
  PeriodicEvaluator* e = &evaluator;
  add_part(
      Kind::evaluator, name, [e](torch::serialize::OutputArchive& a) { e->save(a); },
      [e](torch::serialize::InputArchive& a) { e->load(a); });
  evaluators_.push_back(e);
  return *this;
}

inline TrainingState& TrainingState::add(const std::string& name, GradualUnfreezing& unfreezing) {
  GradualUnfreezing* u = &unfreezing;
  add_part(
      Kind::unfreezing, name, [u](torch::serialize::OutputArchive& a) { u->save(a); },
      [u](torch::serialize::InputArchive& a) { u->load(a); });
  unfreezings_.push_back(u);
  return *this;
}

inline TrainingState& TrainingState::add(const std::string& name, at::Generator generator) {
  const std::string where = "part '" + name + "' (generator)";
  add_part(
      Kind::generator, name,
      [generator](torch::serialize::OutputArchive& a) {
        a.write("state", detail::generator_state(generator), /*is_buffer=*/true);
      },
      [generator, where](torch::serialize::InputArchive& a) mutable {
        detail::restore_generator(generator, detail::state_tensor_at(a, "state", where), where);
      });
  return *this;
}

inline TrainingState& TrainingState::add(const std::string& name, GradScaler& scaler) {
  GradScaler* s = &scaler;
  // A small part: snapshotted and put back when a later part fails to load.
  add_part(
      Kind::custom, name, [s](torch::serialize::OutputArchive& a) { s->save(a); },
      [s](torch::serialize::InputArchive& a) { s->load(a); });
  return *this;
}

inline TrainingState& TrainingState::add(const std::string& name, SaveFn save, LoadFn load) {
  add_part(Kind::custom, name, std::move(save), std::move(load));
  return *this;
}

inline bool TrainingState::optimizer_step(bool taken) {
  if (!taken) {
    ++position_.skipped_steps;
    return false;
  }
  ++position_.optimizer_step;
  for (Scheduler* s : schedulers_) s->step();
  for (auto& a : averagers_) {
    if (!a.when || a.when()) a.averager->update(*a.model);
  }
  for (GradualUnfreezing* u : unfreezings_) {
    if (u->options().unit() == UnfreezeUnit::steps) u->step();
  }
  return true;
}

inline void TrainingState::check_counts() const {
  for (const PeriodicEvaluator* e : evaluators_) {
    if (!e->should_stop() && e->global_step() != position_.optimizer_step) {
      throw std::logic_error(
          "finetune: TrainingState: the evaluator counted " + std::to_string(e->global_step()) +
          " optimizer steps, the state " + std::to_string(position_.optimizer_step) +
          ": call evaluator.step() once for each optimizer_step() that returned true");
    }
  }
}

inline void TrainingState::end_epoch() {
  check_counts();
  ++position_.epoch;
  position_.batch = 0;
  for (GradualUnfreezing* u : unfreezings_) {
    if (u->options().unit() == UnfreezeUnit::epochs) u->epoch_end();
  }
}

inline void TrainingState::save(torch::serialize::OutputArchive& archive) const {
  check_counts();
  archive.write("format", c10::IValue(std::string(detail::kStateFormat)));
  archive.write("version", c10::IValue(detail::kStateVersion));
  archive.write("parts", c10::IValue(part_list()));
  for (const auto& p : parts_) {
    torch::serialize::OutputArchive sub;
    p.save(sub);
    archive.write("part_" + p.name, sub);
  }
  archive.write("position_epoch", c10::IValue(position_.epoch));
  archive.write("position_batch", c10::IValue(position_.batch));
  archive.write("position_optimizer_step", c10::IValue(position_.optimizer_step));
  archive.write("position_skipped_steps", c10::IValue(position_.skipped_steps));
  if (options_.global_generators()) {
    const auto generators = detail::default_generators();
    archive.write("generators", c10::IValue(static_cast<int64_t>(generators.size())));
    for (size_t i = 0; i < generators.size(); ++i) {
      archive.write("generator_" + std::to_string(i), detail::generator_state(generators[i]),
                    /*is_buffer=*/true);
    }
  }
}

inline bool TrainingState::save(const std::string& path) const {
  if (!options_.writer()) return false;
  torch::serialize::OutputArchive archive;
  save(archive);
  // In memory first: LibTorch's file writer ends the process when a write
  // fails (it throws from a destructor); atomic_write_text checks every write.
  std::ostringstream bytes;
  archive.save_to(bytes);
  atomic_write_text(path, bytes.str());
  return true;
}

inline void TrainingState::load(const std::string& path) {
  if (!std::filesystem::exists(path)) {
    throw std::invalid_argument("finetune: TrainingState: no training state at '" + path + "'");
  }
  torch::serialize::InputArchive archive;
  try {
    archive.load_from(path);
  } catch (const c10::Error& e) {
    throw std::invalid_argument(
        "finetune: TrainingState: cannot read '" + path +
        "' (truncated, or not a training state): " + e.what_without_backtrace());
  } catch (const std::exception& e) {  // LibTorch's reader: std::out_of_range on some bytes
    throw std::invalid_argument("finetune: TrainingState: cannot read '" + path +
                                "' (corrupt, or not a training state): " + e.what());
  }
  try {
    load(archive);
  } catch (const std::invalid_argument& e) {
    throw std::invalid_argument(path + ": " + e.what());
  }
}

inline void TrainingState::load(torch::serialize::InputArchive& archive) {
  // 1. Check everything that can be checked without changing anything.
  const std::string format = detail::state_string(archive, "format", "the file");
  if (format != detail::kStateFormat) {
    detail::bad_state("not a training state (format '" + format + "')");
  }
  const int64_t version = detail::state_int(archive, "version", "the file", 0);
  if (version != detail::kStateVersion) {
    detail::bad_state("state format version " + std::to_string(version) + ", this finetune reads " +
                      std::to_string(detail::kStateVersion));
  }
  const std::string mine = part_list();
  const std::string saved = detail::state_string(archive, "parts", "the file");
  if (saved != mine) {
    detail::bad_state("the state holds other parts than this run registered.\nSaved:\n" + saved +
                      "Registered:\n" + mine);
  }
  std::vector<torch::serialize::InputArchive> subs(parts_.size());
  for (size_t i = 0; i < parts_.size(); ++i) {
    bool found = false;
    try {
      found = archive.try_read("part_" + parts_[i].name, subs[i]);
    } catch (const c10::Error&) {
    }
    if (!found) detail::bad_state("part '" + parts_[i].name + "' is missing from the state");
    if (parts_[i].check) parts_[i].check(subs[i]);
  }
  LoopPosition position;
  position.epoch = detail::state_int(archive, "position_epoch", "the position", 0);
  position.batch = detail::state_int(archive, "position_batch", "the position", 0);
  position.optimizer_step =
      detail::state_int(archive, "position_optimizer_step", "the position", 0);
  position.skipped_steps = detail::state_int(archive, "position_skipped_steps", "the position", 0);
  std::vector<at::Generator> generators;
  std::vector<torch::Tensor> generator_states;
  if (options_.global_generators()) {
    generators = detail::default_generators();
    const int64_t count = detail::state_int(archive, "generators", "the file", 0);
    if (count != static_cast<int64_t>(generators.size())) {
      detail::bad_state("saved with " + std::to_string(count) +
                        " default generators (the CPU's and one per CUDA device), this process "
                        "has " +
                        std::to_string(generators.size()));
    }
    for (size_t i = 0; i < generators.size(); ++i) {
      generator_states.push_back(
          detail::state_tensor_at(archive, "generator_" + std::to_string(i), "the file"));
    }
  }

  // 2. Load, in a fixed order. First what can still fail on what the file
  // holds, each with a way back: the small parts (a snapshot each), the
  // default generators (their states), the optimizers (a shallow copy of
  // their state and options: Optimizer::load reads LibTorch's own keys, not
  // all checked above) and the evaluators (a history file that was cut). A
  // failure among them puts them all back before anything else is touched.
  // Then the averagers and modules, whose failures were checked for above.
  // Optimizers after schedulers: the lrs in force are the optimizer's own
  // saved ones (equal to the schedule's), and SWAScheduler reads them at its
  // switch.
  auto indices_of = [&](std::initializer_list<Kind> kinds) {
    std::vector<size_t> out;
    for (Kind k : kinds)
      for (size_t i = 0; i < parts_.size(); ++i)
        if (parts_[i].kind == k) out.push_back(i);
    return out;
  };
  const auto small = indices_of({Kind::scheduler, Kind::unfreezing, Kind::generator, Kind::custom});
  std::vector<std::string> snapshots;
  for (size_t i : small) {
    torch::serialize::OutputArchive snap;
    parts_[i].save(snap);
    std::ostringstream bytes;
    snap.save_to(bytes);
    snapshots.push_back(bytes.str());
  }
  std::vector<torch::Tensor> generators_before;
  for (const auto& g : generators) generators_before.push_back(detail::generator_state(g));
  std::vector<std::function<void()>> optimizers_back;
  for (size_t i : indices_of({Kind::optimizer}))
    if (parts_[i].keep) optimizers_back.push_back(parts_[i].keep());
  size_t loaded = 0;
  try {
    for (; loaded < small.size(); ++loaded) parts_[small[loaded]].load(subs[small[loaded]]);
    for (size_t i = 0; i < generators.size(); ++i) {
      detail::restore_generator(generators[i], generator_states[i], "the file");
    }
    for (size_t i : indices_of({Kind::optimizer})) parts_[i].load(subs[i]);
    for (size_t i : indices_of({Kind::evaluator})) parts_[i].load(subs[i]);
  } catch (...) {
    for (size_t k = 0; k < loaded; ++k) {
      std::istringstream bytes(snapshots[k]);
      torch::serialize::InputArchive snap;
      snap.load_from(bytes);
      parts_[small[k]].load(snap);
    }
    for (size_t i = 0; i < generators.size(); ++i) {
      detail::restore_generator(generators[i], generators_before[i], "the file");
    }
    for (auto& back : optimizers_back) back();  // last: their lrs as before
    throw;
  }
  for (size_t i : indices_of({Kind::averager, Kind::module})) parts_[i].load(subs[i]);
  position_ = position;
}

inline bool step_if_finite(torch::optim::Optimizer& optimizer) {
  std::vector<torch::Tensor> flags;  // one per gradient, on the first gradient's device
  for (const auto& group : optimizer.param_groups()) {
    for (const auto& p : group.params()) {
      if (!p.grad().defined()) continue;
      torch::Tensor finite = p.grad().isfinite().all();
      flags.push_back(flags.empty() ? finite : finite.to(flags.front().device()));
    }
  }
  if (!flags.empty() && !torch::stack(flags).all().item<bool>()) {
    optimizer.zero_grad();
    return false;
  }
  optimizer.step();
  return true;
}

}  // namespace finetune
