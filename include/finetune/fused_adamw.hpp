// finetune: fine-tuning techniques for LibTorch, header-only.
// SPDX-License-Identifier: MIT
//
// FusedAdamW: torch::optim::AdamW whose step() runs ATen's fused AdamW
// kernel, at::_fused_adamw_, the kernel behind torch.optim.AdamW(fused=True).
// torch::optim::AdamW makes about ten passes over memory per parameter
// tensor (weight decay, two moment updates, the square root, the bias
// corrections, the update). The fused kernel makes one.
//
// For roberta-base (125 M parameters) on 2 CPU threads that is 82 to 96 ms
// a step instead of 390 to 620 ms (docs/performance.md, figure 10).
//
// Everything else is AdamW's, inherited:
//   - the options (AdamWOptions) and the param groups;
//   - the per-parameter state (AdamWParamState), and so save/load and
//     TrainingState;
//   - LayerwiseLRGroups, the schedules and GradScaler, which work on any
//     AdamW unchanged.
// A checkpoint saved from torch::optim::AdamW loads into FusedAdamW, and
// the other way round.
//
// The results equal torch.optim.AdamW(fused=True)'s (tests/reference/
// ref_fused_adamw.py). They differ from torch::optim::AdamW's by rounding
// only: tests/test_fused_adamw.cpp holds the two within 1e-6 after six
// float32 steps.
//
// Without the kernel (LibTorch before 2.4, e.g. Debian's 1.13), step() is
// AdamW's own; fused() says which runs. Sparse gradients are refused, as by
// AdamW. Copy it along with compat.hpp.
#pragma once

#include "finetune/compat.hpp"

#include <torch/torch.h>

#include <algorithm>
#include <iterator>
#include <memory>
#include <stdexcept>
#include <tuple>
#include <utility>
#include <vector>

namespace finetune {

// ===========================================================================
// Declarations
// ===========================================================================

/// torch::optim::AdamW with ATen's fused kernel in step().
class FusedAdamW : public torch::optim::AdamW {
 public:
  using torch::optim::AdamW::AdamW;

  /// Whether step() runs the fused kernel (LibTorch 2.4 and later) rather
  /// than torch::optim::AdamW's step.
  static constexpr bool fused() { return compat::kHasFusedAdamW; }

  torch::Tensor step(LossClosure closure = nullptr) override;
};

// ===========================================================================
// Definitions
// ===========================================================================

inline torch::Tensor FusedAdamW::step(LossClosure closure) {
  if (!fused()) return torch::optim::AdamW::step(std::move(closure));
  torch::NoGradGuard no_grad;
  torch::Tensor loss;
  if (closure) {
    at::AutoGradMode enable_grad(true);
    loss = closure();
  }
  using Key = typename std::decay_t<decltype(state_)>::key_type;
  // One kernel call per (device, dtype, step count): the kernel takes one
  // device and dtype, and the step tensors are shared within a call.
  struct Call {
    torch::Device device;
    torch::ScalarType dtype;
    int64_t step;
    std::vector<torch::Tensor> params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs;
  };
  for (auto& group : param_groups_) {
    const auto& options = static_cast<const torch::optim::AdamWOptions&>(group.options());
    std::vector<Call> calls;
    for (auto& p : group.params()) {
      if (!p.grad().defined()) continue;
      auto grad = p.grad();
      TORCH_CHECK(!grad.is_sparse(),
                  "finetune: FusedAdamW does not support sparse gradients (nor does AdamW)");
      const Key key = compat::optimizer_state_key<Key>(p);
      auto found = state_.find(key);
      if (found == state_.end()) {
        auto fresh = std::make_unique<torch::optim::AdamWParamState>();
        fresh->step(0);
        fresh->exp_avg(torch::zeros_like(p, torch::MemoryFormat::Preserve));
        fresh->exp_avg_sq(torch::zeros_like(p, torch::MemoryFormat::Preserve));
        if (options.amsgrad()) {
          fresh->max_exp_avg_sq(torch::zeros_like(p, torch::MemoryFormat::Preserve));
        }
        found = state_.emplace(key, std::move(fresh)).first;
      }
      auto& state = static_cast<torch::optim::AdamWParamState&>(*found->second);
      if (options.amsgrad() && !state.max_exp_avg_sq().defined()) {
        state.max_exp_avg_sq(torch::zeros_like(p, torch::MemoryFormat::Preserve));
      }
      state.step(state.step() + 1);
      auto call = std::find_if(calls.begin(), calls.end(), [&](const Call& c) {
        return c.device == p.device() && c.dtype == p.scalar_type() && c.step == state.step();
      });
      if (call == calls.end()) {
        calls.push_back(Call{p.device(), p.scalar_type(), state.step(), {}, {}, {}, {}, {}});
        call = std::prev(calls.end());
      }
      call->params.push_back(p);
      call->grads.push_back(grad.is_contiguous() ? grad : grad.contiguous());
      call->exp_avgs.push_back(state.exp_avg());
      call->exp_avg_sqs.push_back(state.exp_avg_sq());
      if (options.amsgrad()) call->max_exp_avg_sqs.push_back(state.max_exp_avg_sq());
    }
    const auto& [beta1, beta2] = options.betas();
    for (auto& call : calls) {
      // PyTorch keeps fused steps as float32 tensors on the parameters'
      // device; the kernel reads them there (no host round trip).
      const auto step =
          torch::full({}, static_cast<double>(call.step),
                      torch::TensorOptions().dtype(torch::kFloat).device(call.device));
      const std::vector<torch::Tensor> steps(call.params.size(), step);
      compat::fused_adamw_(call.params, call.grads, call.exp_avgs, call.exp_avg_sqs,
                           call.max_exp_avg_sqs, steps, options.lr(), beta1, beta2,
                           options.weight_decay(), options.eps(), options.amsgrad());
    }
  }
  return loss;
}

}  // namespace finetune
