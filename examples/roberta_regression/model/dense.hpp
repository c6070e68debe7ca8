// The fp32 matrix products of the model's linear layers, and which library
// runs them on this CPU. Example code, not library API.
//
// ATen's linear sends fp32 products to the build's BLAS: MKL in the PyPI
// wheel. MKL picks its kernels by CPU vendor as well as by instruction set:
// on an AMD EPYC with AVX-512 (Zen 5, measured 2026-12-02) it runs its AVX2
// "zen" sgemm kernel, about 180 GFLOP/s on 2 cores, while oneDNN, which picks
// by instruction set only, runs the same products with AVX-512 at about
// 390 GFLOP/s. On an Intel CPU with AVX-512 MKL runs its AVX-512 kernels, and
// on an AVX2-only CPU both libraries have AVX2 kernels only. So the choice is
// made once per process, from the CPU:
//
//   oneDNN  when the CPU is not Intel's, ATen's CPU capability is AVX-512 and
//           this LibTorch has oneDNN's linear (mkldnn::_linear_pointwise,
//           PyTorch 2.x wheels; not Debian's 1.13);
//   ATen    otherwise (what PyTorch itself runs).
//
// FINETUNE_DENSE_BACKEND=aten|onednn|auto overrides the choice for a process;
// set_dense_backend() for the rest of it (tests, benchmarks). The two give
// the same products up to fp32 rounding: they sum in a different order.
#pragma once

#include <torch/torch.h>

#include <finetune/compat.hpp>

#include <atomic>
#include <cstdlib>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

namespace roberta_regression {

enum class DenseBackend { aten, onednn };

namespace detail {

/// oneDNN's fp32 linear as a registered operator, or nullptr when this
/// LibTorch has none (found through the dispatcher, so that nothing here
/// depends on the operator's C++ signature, which changed between releases).
inline const c10::OperatorHandle* onednn_linear_op() {
  static const std::optional<c10::OperatorHandle> op = [] {
    auto found = c10::Dispatcher::singleton().findOp({"mkldnn::_linear_pointwise", ""});
    return found ? std::optional<c10::OperatorHandle>(*found) : std::nullopt;
  }();
  return op ? &*op : nullptr;
}

/// Why oneDNN cannot be chosen here, for every error and skip that says so.
inline std::string onednn_missing() {
  return "this LibTorch (" + std::string(finetune::compat::torch_version()) +
         ") has no oneDNN linear (mkldnn::_linear_pointwise)";
}

/// x [*, in] times w [out, in] transposed, plus b [out] when defined, by
/// oneDNN; x and w may be strided views (a transposed operand costs no copy).
inline torch::Tensor onednn_linear(const torch::Tensor& x, const torch::Tensor& w,
                                   const torch::Tensor& b) {
  torch::jit::Stack stack;
  stack.reserve(6);
  stack.emplace_back(x);
  stack.emplace_back(w);
  stack.emplace_back(b.defined() ? c10::IValue(b) : c10::IValue());
  stack.emplace_back(std::string("none"));  // no fused activation
  stack.emplace_back(c10::List<c10::optional<at::Scalar>>());
  stack.emplace_back(c10::IValue());  // algorithm: none
  onednn_linear_op()->callBoxed(&stack);
  return stack.back().toTensor();
}

/// linear through onednn_linear, forward and backward: the input's gradient
/// is grad · w, the weight's grad^T · x, both oneDNN products of transposed
/// views; the bias's is grad summed over the rows. `b` must be defined (an
/// autograd Function takes no undefined tensor): dense_linear passes zeros.
struct OneDnnLinear : torch::autograd::Function<OneDnnLinear> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x,
                               const torch::Tensor& w, const torch::Tensor& b) {
    ctx->save_for_backward({x, w});
    return onednn_linear(x, w, b);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const auto& x = saved[0];
    const auto& w = saved[1];
    const auto grad = grads[0].reshape({-1, grads[0].size(-1)});  // [rows, out]
    torch::Tensor dx, dw, db;
    if (ctx->needs_input_grad(0)) dx = onednn_linear(grad, w.t(), {}).view(x.sizes());
    if (ctx->needs_input_grad(1)) dw = onednn_linear(grad.t(), x.reshape({-1, x.size(-1)}).t(), {});
    if (ctx->needs_input_grad(2)) db = grad.sum(0);
    return {dx, dw, db};
  }
};

/// The CPU's vendor string from cpuid ("GenuineIntel", "AuthenticAMD"), or
/// "" off x86.
inline std::string cpu_vendor() {
#if defined(__x86_64__) || defined(__i386__)
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  if (!__get_cpuid(0, &eax, &ebx, &ecx, &edx)) return "";
  char vendor[13] = {};
  const unsigned parts[3] = {ebx, edx, ecx};
  for (int i = 0; i < 12; ++i) vendor[i] = static_cast<char>(parts[i / 4] >> (8 * (i % 4)));
  return vendor;
#else
  return "";
#endif
}

/// The rule of this header's comment, with FINETUNE_DENSE_BACKEND first.
inline DenseBackend choose_dense_backend() {
  const char* env = std::getenv("FINETUNE_DENSE_BACKEND");
  const std::string forced = env ? env : "auto";
  if (forced == "aten") return DenseBackend::aten;
  if (forced == "onednn") {
    if (!onednn_linear_op())
      throw std::invalid_argument("FINETUNE_DENSE_BACKEND=onednn: " + onednn_missing());
    return DenseBackend::onednn;
  }
  if (forced != "auto")
    throw std::invalid_argument("FINETUNE_DENSE_BACKEND='" + forced +
                                "': expected aten, onednn or auto");
  const bool mkl_holds_back = cpu_vendor() != "GenuineIntel" &&
                              finetune::compat::aten_cpu_capability().rfind("AVX512", 0) == 0;
  return mkl_holds_back && onednn_linear_op() ? DenseBackend::onednn : DenseBackend::aten;
}

/// -1 until first asked, then the backend as an int.
inline std::atomic<int>& dense_backend_slot() {
  static std::atomic<int> slot{-1};
  return slot;
}
}  // namespace detail

/// The library that runs the model's fp32 linear layers on the CPU in this
/// process (chosen at the first call; see the header's comment).
inline DenseBackend dense_backend() {
  auto& slot = detail::dense_backend_slot();
  int chosen = slot.load();
  if (chosen < 0) {
    chosen = static_cast<int>(detail::choose_dense_backend());
    slot.store(chosen);
  }
  return static_cast<DenseBackend>(chosen);
}

/// Chooses the backend for the rest of the process. oneDNN where this
/// LibTorch lacks it is a std::invalid_argument.
inline void set_dense_backend(DenseBackend backend) {
  if (backend == DenseBackend::onednn && !detail::onednn_linear_op())
    throw std::invalid_argument("set_dense_backend(onednn): " + detail::onednn_missing());
  detail::dense_backend_slot().store(static_cast<int>(backend));
}

inline const char* to_string(DenseBackend backend) {
  return backend == DenseBackend::onednn ? "oneDNN" : "ATen";
}

/// x · w^T + b as ATen's linear computes it, by the chosen backend for fp32
/// CPU tensors outside autocast, by ATen's linear for everything else.
inline torch::Tensor dense_linear(const torch::Tensor& x, const torch::Tensor& w,
                                  const torch::Tensor& b) {
  if (x.is_cpu() && x.scalar_type() == torch::kFloat && w.scalar_type() == torch::kFloat &&
      !finetune::compat::AutocastGuard::is_enabled(c10::DeviceType::CPU) &&
      dense_backend() == DenseBackend::onednn)
    return detail::OneDnnLinear::apply(x, w, b.defined() ? b : torch::zeros({w.size(0)}));
  return torch::linear(x, w, b);
}

}  // namespace roberta_regression
