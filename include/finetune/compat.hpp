// finetune: fine-tuning techniques for LibTorch, header-only.
// SPDX-License-Identifier: MIT
//
// The one place where LibTorch versions differ for us (1.13 from Debian, 2.x
// from the PyPI wheel). Every technique header may include this file and
// nothing else from finetune; copy it along with any single header you take.
#pragma once

#include <ATen/ATen.h>
#include <torch/version.h>

#include <cstddef>
#include <stdexcept>

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
