// finetune: fine-tuning techniques for LibTorch, header-only.
// SPDX-License-Identifier: MIT
//
// The one interface of every learning-rate scheduler in finetune: LRSchedule
// and its Hugging Face shapes (lr_schedule.hpp), SWALR and the composed
// warm-up-then-SWALR SWAScheduler (swa.hpp). A loop holds a Scheduler& and
// calls step() once per optimizer step that was taken, whatever the schedule.
//
// Counting, once for all schedulers:
//   - step_count() is the number of step() calls since construction (or since
//     the step the loaded state was saved at): 0 right after construction.
//     Call step() after each optimizer step that was taken, and only then: a
//     step a loss scaler skipped is not a step (see docs/accumulation.md).
//   - After construction and after every step(), each param group's lr is the
//     one the next optimizer step trains with; get_last_lr() returns those,
//     one per group (PyTorch's LRScheduler.get_last_lr()).
//   - Param groups added to the optimizer after construction are adopted at
//     the next step(): their initial lr is the lr they had when added.
//   - save() writes everything the schedule needs to continue; load() restores
//     it and sets every group's lr to the value of the saved step, whatever was
//     loaded before or after it (the lr is the schedule's, not the optimizer's).
#pragma once

#include <cstdint>
#include <vector>

#include <torch/serialize/archive.h>

namespace finetune {

/// Abstract learning-rate scheduler over a torch::optim::Optimizer's groups.
class Scheduler {
 public:
  virtual ~Scheduler() = default;

  /// Advances one optimizer step and sets every group's lr for the next one.
  virtual void step() = 0;
  /// step() calls since construction; 0 right after it.
  virtual int64_t step_count() const = 0;
  /// The lrs this scheduler set last, one per param group.
  virtual std::vector<double> get_last_lr() const = 0;

  /// Writes the scheduler's state.
  virtual void save(torch::serialize::OutputArchive& archive) const = 0;
  /// Restores what save() wrote and sets the lrs of that step. Throws
  /// std::invalid_argument, naming the key, on a state it cannot use; the
  /// scheduler and the optimizer's lrs are then unchanged.
  virtual void load(torch::serialize::InputArchive& archive) = 0;

 protected:
  Scheduler() = default;
  Scheduler(const Scheduler&) = default;
  Scheduler& operator=(const Scheduler&) = default;
};

}  // namespace finetune
