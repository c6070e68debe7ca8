// finetune: fine-tuning techniques for LibTorch, header-only.
// SPDX-License-Identifier: MIT
//
// Gradual unfreezing (Howard & Ruder 2018, "Universal Language Model
// Fine-tuning for Text Classification", section 3.3): the head trains from
// the start while the pretrained blocks stay frozen; then the top block is
// unfrozen, then the one below it, one more block every N epochs (ULMFiT:
// N = 1) or every N optimizer steps, until the whole stack trains. It is the
// usual companion of layer-wise learning rates: build the LLRD groups with
// `LayerwiseLROptions().include_frozen(true)` so that every block already has
// its group and rate, and unfreezing needs no new optimizer groups.
//
//   finetune::GradualUnfreezing unfreezing(
//       {model->embeddings.ptr(), layer[0], ..., layer[L-1]},   // bottom to top
//       finetune::GradualUnfreezingOptions(/*every=*/1).unit(finetune::UnfreezeUnit::epochs));
//   for (epoch ...) {
//     for (batch ...) { ...; optimizer.step(); unfreezing.step(); }
//     unfreezing.epoch_end();
//   }
//
// Freezing here is `requires_grad(false)`: no gradient is computed for a
// frozen block (backward stops below the lowest trainable block), and
// optimizers skip parameters without a gradient, as in PyTorch; a block's
// optimizer state starts when its first gradient arrives.
#pragma once

#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <torch/arg.h>
#include <torch/nn/module.h>
#include <torch/serialize/archive.h>
#include <torch/types.h>

#include "finetune/compat.hpp"

namespace finetune {

/// What GradualUnfreezingOptions::every counts.
enum class UnfreezeUnit {
  steps,   ///< optimizer steps taken (GradualUnfreezing::step calls)
  epochs,  ///< epochs (GradualUnfreezing::epoch_end calls)
};

/// Options of GradualUnfreezing.
struct GradualUnfreezingOptions {
  /// `every`: see the field.
  /* implicit */ GradualUnfreezingOptions(int64_t every = 1) : every_(every) {}  // NOLINT
  /// Steps or epochs between two unfreezings, >= 1 (ULMFiT: one epoch). Default 1.
  TORCH_ARG(int64_t, every);
  /// What `every` counts. Default epochs (ULMFiT).
  TORCH_ARG(UnfreezeUnit, unit) = UnfreezeUnit::epochs;
  /// Blocks that train from the start besides the head, counted from the
  /// top, in [0, number of blocks]. Default 0: the head alone first.
  TORCH_ARG(int64_t, start_unfrozen) = 0;
};

/// Freezes the blocks of a stack and unfreezes them from the top down as
/// training goes. It shares ownership of the blocks (shared pointers), so it
/// may outlive the caller's handles to them.
///
/// Only parameters that were trainable when the object was built are ever
/// made trainable again: a parameter the user froze for good stays frozen.
class GradualUnfreezing {
 public:
  /// `blocks`: the stack from the bottom (the embeddings, or layer 0) to the
  /// top layer; the head is not among them, it always trains. Freezes every
  /// block but the top `start_unfrozen`. Throws std::invalid_argument on no
  /// blocks, a null block, every < 1 or start_unfrozen out of range; nothing
  /// is changed then.
  GradualUnfreezing(std::vector<std::shared_ptr<torch::nn::Module>> blocks,
                    GradualUnfreezingOptions options = GradualUnfreezingOptions());

  /// After each optimizer step that was taken (not after a step that a loss
  /// scaler skipped). With unit steps, unfreezes the next block every
  /// `every` calls.
  void step();
  /// At the end of each epoch. With unit epochs, unfreezes the next block
  /// every `every` calls.
  void epoch_end();

  /// Blocks trainable now, counted from the top.
  int64_t unfrozen_blocks() const noexcept { return unfrozen_; }
  /// Number of blocks.
  int64_t num_blocks() const noexcept { return static_cast<int64_t>(blocks_.size()); }
  /// Whether every block trains.
  bool done() const noexcept { return unfrozen_ == num_blocks(); }
  /// step() calls so far.
  int64_t step_count() const noexcept { return steps_; }
  /// epoch_end() calls so far.
  int64_t epoch_count() const noexcept { return epochs_; }
  const GradualUnfreezingOptions& options() const noexcept { return options_; }

  /// Writes the counters and the number of blocks.
  void save(torch::serialize::OutputArchive& archive) const;
  /// Restores the counters and sets every block's trainability to match.
  /// Throws std::invalid_argument (nothing changed) on a missing key or a
  /// different number of blocks.
  void load(torch::serialize::InputArchive& archive);

 private:
  void apply();
  void advance(int64_t count);

  std::vector<std::shared_ptr<torch::nn::Module>> blocks_;
  /// Per block, its parameters that were trainable at construction.
  std::vector<std::vector<torch::Tensor>> trainable_;
  GradualUnfreezingOptions options_;
  int64_t unfrozen_ = 0;
  int64_t steps_ = 0;
  int64_t epochs_ = 0;
};

// ===========================================================================
// Definitions
// ===========================================================================

inline GradualUnfreezing::GradualUnfreezing(std::vector<std::shared_ptr<torch::nn::Module>> blocks,
                                            GradualUnfreezingOptions options)
    : blocks_(std::move(blocks)), options_(std::move(options)) {
  if (blocks_.empty()) throw std::invalid_argument("GradualUnfreezing: no blocks given");
  for (size_t i = 0; i < blocks_.size(); ++i) {
    if (!blocks_[i]) {
      throw std::invalid_argument("GradualUnfreezing: block " + std::to_string(i) + " is null");
    }
  }
  if (options_.every() < 1) {
    throw std::invalid_argument("GradualUnfreezing: every must be >= 1, got " +
                                std::to_string(options_.every()));
  }
  if (options_.unit() != UnfreezeUnit::steps && options_.unit() != UnfreezeUnit::epochs) {
    throw std::invalid_argument("GradualUnfreezing: unit must be steps or epochs");
  }
  if (options_.start_unfrozen() < 0 || options_.start_unfrozen() > num_blocks()) {
    throw std::invalid_argument("GradualUnfreezing: start_unfrozen must be in [0, " +
                                std::to_string(num_blocks()) + "], got " +
                                std::to_string(options_.start_unfrozen()));
  }
  trainable_.reserve(blocks_.size());
  for (const auto& block : blocks_) {
    std::vector<torch::Tensor> params;
    for (const auto& p : block->parameters(/*recurse=*/true)) {
      if (p.requires_grad()) params.push_back(p);
    }
    trainable_.push_back(std::move(params));
  }
  unfrozen_ = options_.start_unfrozen();
  apply();
}

inline void GradualUnfreezing::apply() {
  const int64_t first_trainable = num_blocks() - unfrozen_;
  for (int64_t i = 0; i < num_blocks(); ++i) {
    for (auto& p : trainable_[static_cast<size_t>(i)]) p.requires_grad_(i >= first_trainable);
  }
}

inline void GradualUnfreezing::advance(int64_t count) {
  if (count % options_.every() == 0 && !done()) {
    ++unfrozen_;
    apply();
  }
}

inline void GradualUnfreezing::step() {
  ++steps_;
  if (options_.unit() == UnfreezeUnit::steps) advance(steps_);
}

inline void GradualUnfreezing::epoch_end() {
  ++epochs_;
  if (options_.unit() == UnfreezeUnit::epochs) advance(epochs_);
}

inline void GradualUnfreezing::save(torch::serialize::OutputArchive& archive) const {
  archive.write("gradual_unfreezing/num_blocks", torch::tensor(num_blocks(), torch::kInt64));
  archive.write("gradual_unfreezing/unfrozen", torch::tensor(unfrozen_, torch::kInt64));
  archive.write("gradual_unfreezing/steps", torch::tensor(steps_, torch::kInt64));
  archive.write("gradual_unfreezing/epochs", torch::tensor(epochs_, torch::kInt64));
}

inline void GradualUnfreezing::load(torch::serialize::InputArchive& archive) {
  auto read = [&](const char* key) {
    torch::Tensor t;
    try {
      archive.read(std::string("gradual_unfreezing/") + key, t);
    } catch (const c10::Error&) {
      throw std::invalid_argument(std::string("GradualUnfreezing::load: missing key "
                                              "'gradual_unfreezing/") +
                                  key + "'");
    }
    if (t.numel() != 1 || t.scalar_type() != torch::kInt64) {
      throw std::invalid_argument(std::string("GradualUnfreezing::load: key "
                                              "'gradual_unfreezing/") +
                                  key + "' is not one int64");
    }
    return t.item<int64_t>();
  };
  const int64_t blocks = read("num_blocks");
  const int64_t unfrozen = read("unfrozen");
  const int64_t steps = read("steps");
  const int64_t epochs = read("epochs");
  if (blocks != num_blocks()) {
    throw std::invalid_argument("GradualUnfreezing::load: saved for " + std::to_string(blocks) +
                                " blocks, this one has " + std::to_string(num_blocks()));
  }
  if (unfrozen < 0 || unfrozen > blocks || steps < 0 || epochs < 0) {
    throw std::invalid_argument("GradualUnfreezing::load: counters out of range");
  }
  unfrozen_ = unfrozen;
  steps_ = steps;
  epochs_ = epochs;
  apply();
}

}  // namespace finetune
