// finetune: fine-tuning techniques for LibTorch, header-only.
// SPDX-License-Identifier: MIT
//
// The one place where LibTorch versions differ for us (1.13 from Debian, 2.x
// from the PyPI wheel). Every technique header may include this file and
// nothing else from finetune; copy it along with any single header you take.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Version.h>
#include <ATen/autocast_mode.h>
#include <torch/version.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <sstream>
#include <stdexcept>
#include <string>
#include <type_traits>

/// True when the LibTorch being compiled against is at least major.minor.
#define FINETUNE_TORCH_AT_LEAST(major, minor) \
  (TORCH_VERSION_MAJOR > (major) ||           \
   (TORCH_VERSION_MAJOR == (major) && TORCH_VERSION_MINOR >= (minor)))

// Declared here so that compat::C10dBackend needs none of c10d's headers;
// distributed.hpp includes them.
namespace c10d {
class Backend;
class ProcessGroup;
}  // namespace c10d

namespace finetune {
namespace compat {

/// "major.minor.patch" of the LibTorch headers in use.
inline const char* torch_version() { return TORCH_VERSION; }

/// self[i] += weight * (end[i] - self[i]) for every i, in place (at::lerp).
/// at::_foreach_lerp_ (one fused multi-tensor kernel) arrived in PyTorch 2.0;
/// on 1.13 this falls back on one Tensor::lerp_ per tensor, the same formula
/// element by element. Used by swa.hpp.
inline void foreach_lerp_(at::TensorList self, at::TensorList end, double weight) {
#if FINETUNE_TORCH_AT_LEAST(2, 0)
  at::_foreach_lerp_(self, end, weight);
#else
  for (std::size_t i = 0; i < self.size(); ++i) {
    // TensorList holds const Tensor&; lerp_ writes the shared TensorImpl.
    at::Tensor target = self[i];
    target.lerp_(end[i], weight);
  }
#endif
}

/// Whether at::scaled_dot_product_attention (fused attention kernels) exists:
/// PyTorch 2.0 and later.
constexpr bool kHasScaledDotProductAttention = FINETUNE_TORCH_AT_LEAST(2, 0);

/// at::scaled_dot_product_attention(q, k, v, mask, dropout_p); check
/// kHasScaledDotProductAttention first: on 1.13 this throws std::logic_error.
/// Used by the RoBERTa example.
inline at::Tensor scaled_dot_product_attention(const at::Tensor& q, const at::Tensor& k,
                                               const at::Tensor& v, const at::Tensor& mask,
                                               double dropout_p) {
#if FINETUNE_TORCH_AT_LEAST(2, 0)
  return at::scaled_dot_product_attention(q, k, v, mask, dropout_p);
#else
  (void)q, (void)k, (void)v, (void)mask, (void)dropout_p;
  throw std::logic_error("scaled_dot_product_attention needs LibTorch 2.0 or later");
#endif
}

/// c10d's process-group base class, the one ProcessGroupGloo and
/// ProcessGroupNCCL derive from: c10d::Backend since PyTorch 2.0,
/// c10d::ProcessGroup before. Used by distributed.hpp.
#if FINETUNE_TORCH_AT_LEAST(2, 0)
using C10dBackend = c10d::Backend;
#else
using C10dBackend = c10d::ProcessGroup;
#endif

/// Whether ATen has CPU kernels for _amp_foreach_non_finite_check_and_unscale_
/// and _amp_update_scale_ (PyTorch 2.3, with torch.amp.GradScaler("cpu"));
/// before, only CUDA ones (Debian's 1.13).
constexpr bool kHasCpuAmpKernels = FINETUNE_TORCH_AT_LEAST(2, 3);

/// at::_amp_foreach_non_finite_check_and_unscale_(grads, found_inf, inv_scale):
/// found_inf (a float 0-dim tensor on the gradients' device) becomes 1 when a
/// gradient holds an inf or NaN, and every gradient is multiplied by
/// inv_scale in place. ATen's kernel where it has one; for CPU tensors on a
/// LibTorch without CPU kernels, the same arithmetic with tensor operations
/// (each element times inv_scale in the gradient's dtype, as ATen's CPU kernel
/// computes for float and double: the same bits). Used by grad_scaler.hpp.
inline void amp_foreach_non_finite_check_and_unscale_(at::TensorList grads, at::Tensor& found_inf,
                                                      const at::Tensor& inv_scale) {
  if (kHasCpuAmpKernels || !found_inf.device().is_cpu()) {
    at::_amp_foreach_non_finite_check_and_unscale_(grads, found_inf, inv_scale);
    return;
  }
  for (const at::Tensor& g : grads) {
    at::Tensor grad = g;  // TensorList holds const Tensor&; mul_ writes the shared TensorImpl
    found_inf.masked_fill_(at::logical_not(at::isfinite(grad).all()), 1.0);
    // ATen's kernel computes in float for reduced types (bf16): so does this.
    if (grad.scalar_type() == at::kBFloat16 || grad.scalar_type() == at::kHalf) {
      grad.copy_(grad.to(at::kFloat).mul_(inv_scale));
    } else {
      grad.mul_(inv_scale.to(grad.scalar_type()));
    }
  }
}

/// at::_amp_update_scale_(scale, growth_tracker, found_inf, growth_factor,
/// backoff_factor, growth_interval): scale (float) and growth_tracker (int)
/// are 0-dim tensors updated in place, as torch.amp.GradScaler.update() does:
/// found_inf nonzero: scale *= backoff_factor, tracker = 0; otherwise tracker
/// + 1, and when it reaches growth_interval: scale *= growth_factor (kept
/// only when finite), tracker = 0. The products are taken in double and
/// rounded to float, like ATen's kernels. ATen's kernel where it has one; on
/// CPU without one, the same on the host (the tensors are in host memory).
inline void amp_update_scale_(at::Tensor& scale, at::Tensor& growth_tracker,
                              const at::Tensor& found_inf, double growth_factor,
                              double backoff_factor, int64_t growth_interval) {
  if (kHasCpuAmpKernels || !scale.device().is_cpu()) {
    at::_amp_update_scale_(scale, growth_tracker, found_inf, growth_factor, backoff_factor,
                           growth_interval);
    return;
  }
  float* s = scale.data_ptr<float>();
  int32_t* tracker = growth_tracker.data_ptr<int32_t>();
  if (found_inf.item<float>() != 0.0f) {
    *s = static_cast<float>(static_cast<double>(*s) * backoff_factor);
    *tracker = 0;
    return;
  }
  const int64_t successful = static_cast<int64_t>(*tracker) + 1;
  if (successful == growth_interval) {
    const float grown = static_cast<float>(static_cast<double>(*s) * growth_factor);
    if (std::isfinite(grown)) *s = grown;
    *tracker = 0;
  } else {
    *tracker = static_cast<int32_t>(successful);
  }
}

/// Turns LibTorch's autocast on for `device_type` (kCPU or kCUDA) with
/// `dtype` while it lives, and puts the previous setting back (and empties
/// autocast's cast cache when the outermost guard ends), like Python's
/// `with torch.autocast(device_type, dtype, enabled=enabled):` (`enabled`
/// false: autocast off inside, e.g. a float32 run of the same loop). The C++
/// calls were renamed in PyTorch 2.3 (set_autocast_enabled(device, on));
/// 1.13 has per-device ones. Used by grad_scaler.hpp and your loop.
/// Throws std::invalid_argument for another device type.
class AutocastGuard {
 public:
  AutocastGuard(c10::DeviceType device_type, at::ScalarType dtype, bool enabled = true)
      : device_type_(device_type) {
    if (device_type != c10::DeviceType::CPU && device_type != c10::DeviceType::CUDA) {
      throw std::invalid_argument(std::string("finetune: autocast on ") +
                                  c10::DeviceTypeName(device_type) + ": only cpu and cuda");
    }
    was_enabled_ = is_enabled(device_type);
    was_dtype_ = get_dtype(device_type);
    // Off: the dtype stays as it was (CPU autocast takes only reduced types).
    // The dtype first: LibTorch 1.13 refuses some (CPU float16) with a
    // c10::Error, which then leaves autocast as it was.
    set(device_type, enabled, enabled ? dtype : was_dtype_);
    at::autocast::increment_nesting();
  }
  ~AutocastGuard() {
    if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
    set(device_type_, was_enabled_, was_dtype_);
  }
  AutocastGuard(const AutocastGuard&) = delete;
  AutocastGuard& operator=(const AutocastGuard&) = delete;

  static bool is_enabled(c10::DeviceType device_type) {
#if FINETUNE_TORCH_AT_LEAST(2, 3)
    return at::autocast::is_autocast_enabled(device_type);
#else
    return device_type == c10::DeviceType::CPU ? at::autocast::is_cpu_enabled()
                                               : at::autocast::is_enabled();
#endif
  }

 private:
  static at::ScalarType get_dtype(c10::DeviceType device_type) {
#if FINETUNE_TORCH_AT_LEAST(2, 3)
    return at::autocast::get_autocast_dtype(device_type);
#else
    return device_type == c10::DeviceType::CPU ? at::autocast::get_autocast_cpu_dtype()
                                               : at::autocast::get_autocast_gpu_dtype();
#endif
  }
  static void set(c10::DeviceType device_type, bool enabled, at::ScalarType dtype) {
#if FINETUNE_TORCH_AT_LEAST(2, 3)
    at::autocast::set_autocast_dtype(device_type, dtype);
    at::autocast::set_autocast_enabled(device_type, enabled);
#else
    if (device_type == c10::DeviceType::CPU) {
      at::autocast::set_autocast_cpu_dtype(dtype);
      at::autocast::set_cpu_enabled(enabled);
    } else {
      at::autocast::set_autocast_gpu_dtype(dtype);
      at::autocast::set_enabled(enabled);
    }
#endif
  }

  c10::DeviceType device_type_;
  bool was_enabled_ = false;
  at::ScalarType was_dtype_ = at::kFloat;
};

/// ATen's CPU capability, as torch.backends.cpu.get_cpu_capability() reports
/// it: "AVX512", "AVX2", "DEFAULT" and so on, lowered by ATEN_CPU_CAPABILITY.
/// "" before LibTorch 2.1, which does not export it.
inline std::string aten_cpu_capability() {
#if FINETUNE_TORCH_AT_LEAST(2, 1)
  return at::get_cpu_capability();
#else
  return "";
#endif
}

/// Whether ATen has _fused_adamw_ for CPU tensors (PyTorch 2.4; CUDA only
/// from 2.0 to 2.3, none in Debian's 1.13). fused_adamw.hpp falls back on
/// torch::optim::AdamW's own step without it.
constexpr bool kHasFusedAdamW = FINETUNE_TORCH_AT_LEAST(2, 4);

/// at::_fused_adamw_ (torch.optim.AdamW(fused=True)'s kernel) over tensors of
/// one device and dtype; `steps` are float32 0-dim tensors holding each
/// tensor's step count, already advanced. Check kHasFusedAdamW first: without
/// the kernel this throws std::logic_error. Used by fused_adamw.hpp.
inline void fused_adamw_(at::TensorList params, at::TensorList grads, at::TensorList exp_avgs,
                         at::TensorList exp_avg_sqs, at::TensorList max_exp_avg_sqs,
                         at::TensorList steps, double lr, double beta1, double beta2,
                         double weight_decay, double eps, bool amsgrad) {
#if FINETUNE_TORCH_AT_LEAST(2, 4)
  at::_fused_adamw_(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps, lr, beta1, beta2,
                    weight_decay, eps, amsgrad, /*maximize=*/false);
#else
  (void)params, (void)grads, (void)exp_avgs, (void)exp_avg_sqs, (void)max_exp_avg_sqs, (void)steps,
      (void)lr, (void)beta1, (void)beta2, (void)weight_decay, (void)eps, (void)amsgrad;
  throw std::logic_error("finetune: at::_fused_adamw_ needs LibTorch 2.4 or later");
#endif
}

/// The key torch::optim::Optimizer files a parameter's state under: its
/// TensorImpl's address (LibTorch 1.13: the address as text). `Key` is the
/// optimizer's state map's key_type.
template <typename Key>
Key optimizer_state_key(const at::Tensor& param) {
  if constexpr (std::is_same_v<Key, std::string>) {
    std::ostringstream text;
    text << param.unsafeGetTensorImpl();
    return text.str();
  } else {
    return param.unsafeGetTensorImpl();
  }
}

/// Releases an NCCL process group's communicators at the end of a run
/// (PyTorch's destroy_process_group): Backend::shutdown(), in PyTorch 2.4 and
/// later; 1.13 has no such call (nor, in Debian's CPU build, NCCL). A
/// template: C10dBackend is complete only where distributed.hpp included it.
template <typename Backend>
void shutdown_backend(Backend& backend) {
#if FINETUNE_TORCH_AT_LEAST(2, 4)
  backend.shutdown();
#else
  (void)backend;
#endif
}

}  // namespace compat
}  // namespace finetune
