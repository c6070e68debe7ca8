#!/usr/bin/env python3
"""finetune::GradScaler against torch.amp.GradScaler on a device, in one process.

Not a golden writer (regenerate.py runs ref_*.py only): a check for a machine
with a GPU, where the C++ tests' [cuda] cases need a build with Catch2. The
C++ side (include/finetune/grad_scaler.hpp) is compiled with
torch.utils.cpp_extension.load_inline against this Python's LibTorch, so both
sides call the same kernels.

The loop, on both sides: float32 master weights W (8x8) and b (8), the loss
under autocast (float16 on CUDA, bfloat16 on CPU) of mm(x, W) + b summed in
float32; x has rows of 400 on some steps, which overflow float16 once the
loss is scaled (a natural overflow, not an injected inf), and a NaN on one
step. SGD with momentum. Compared per step: skipped or not, scale, growth
tracker, and the weights, bit for bit.

  check_grad_scaler_cuda.py [--device cuda|cpu] [--steps N]
Prints a summary line and exits 1 on any difference.
"""
import argparse
import os
import sys
from pathlib import Path

import torch
from torch.utils.cpp_extension import load_inline

ROOT = Path(__file__).resolve().parents[2]

CPP = r'''
#include <torch/extension.h>
#include "finetune/grad_scaler.hpp"

// Returns [scales, trackers, skipped, W, b] after the run.
std::vector<torch::Tensor> replay(torch::Tensor W, torch::Tensor b, std::vector<torch::Tensor> xs,
                                  double init_scale, int64_t growth_interval, bool half) {
  pybind11::gil_scoped_release no_gil;  // backward() may not hold Python's lock
  W = W.clone().set_requires_grad(true);
  b = b.clone().set_requires_grad(true);
  torch::optim::SGD sgd({W, b}, torch::optim::SGDOptions(1e-3).momentum(0.9));
  finetune::GradScaler scaler(
      finetune::GradScalerOptions().init_scale(init_scale).growth_interval(growth_interval));
  const auto dtype = half ? torch::kHalf : torch::kBFloat16;
  std::vector<double> scales, trackers, skipped;
  for (const auto& x : xs) {
    sgd.zero_grad();
    torch::Tensor loss;
    {
      finetune::compat::AutocastGuard autocast(W.device().type(), dtype);
      loss = (torch::mm(x, W) + b).to(torch::kFloat).sum();
    }
    scaler.scale(loss).backward();
    const bool taken = scaler.step(sgd);
    scaler.update();
    skipped.push_back(taken ? 0.0 : 1.0);
    scales.push_back(scaler.get_scale());
    trackers.push_back(static_cast<double>(scaler.growth_tracker()));
  }
  auto t = [](const std::vector<double>& v) { return torch::tensor(v, torch::kDouble); };
  return {t(scales), t(trackers), t(skipped), W.detach(), b.detach()};
}
'''


def python_run(W, b, xs, init_scale, growth_interval, device):
    W = W.clone().requires_grad_(True)
    b = b.clone().requires_grad_(True)
    sgd = torch.optim.SGD([W, b], lr=1e-3, momentum=0.9, foreach=False)
    scaler = torch.amp.GradScaler(device, init_scale=init_scale, growth_interval=growth_interval)
    dtype = torch.float16 if device == "cuda" else torch.bfloat16
    scales, trackers, skipped = [], [], []
    for x in xs:
        sgd.zero_grad()
        with torch.autocast(device, dtype=dtype):
            loss = (torch.mm(x, W) + b).float().sum()
        scaler.scale(loss).backward()
        scaler.step(sgd)
        found = sum(v.item() for v in scaler._found_inf_per_device(sgd).values())
        scaler.update()
        skipped.append(1.0 if found > 0 else 0.0)
        scales.append(scaler.get_scale())
        trackers.append(float(scaler._get_growth_tracker()))
    t = lambda v: torch.tensor(v, dtype=torch.float64)
    return [t(scales), t(trackers), t(skipped), W.detach(), b.detach()]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--steps", type=int, default=40)
    args = parser.parse_args()
    ext = load_inline(name="finetune_grad_scaler_check", cpp_sources=[CPP], functions=["replay"],
                      extra_include_paths=[str(ROOT / "include")],
                      extra_cflags=["-O2"], verbose=False)
    gen = torch.Generator().manual_seed(5)
    W = torch.randn(8, 8, generator=gen).to(args.device)
    b = torch.randn(8, generator=gen).to(args.device)
    xs = []
    for step in range(args.steps):
        x = torch.randn(4, 8, generator=gen)
        if step % 7 == 3:
            x[1] = 400.0  # overflows float16 once scaled by 2^16
        if step == 20:
            x[0, 0] = float("nan")
        xs.append(x.to(args.device))
    init_scale, interval = 2.0 ** 16, 4
    mine = ext.replay(W, b, xs, init_scale, interval, args.device == "cuda")
    theirs = python_run(W, b, xs, init_scale, interval, args.device)
    names = ["scale", "growth_tracker", "skipped", "W", "b"]
    bad = [n for n, m, t in zip(names, mine, theirs) if not torch.equal(m.cpu(), t.cpu())]
    print(f"device {args.device} ({torch.cuda.get_device_name() if args.device == 'cuda' else 'cpu'}),"
          f" torch {torch.__version__}, {args.steps} steps, "
          f"{int(theirs[2].sum().item())} skipped (C++ {int(mine[2].sum().item())}), "
          f"final scale {theirs[0][-1].item()} (C++ {mine[0][-1].item()}), "
          f"W max |diff| {(mine[3] - theirs[3]).abs().max().item():.3g}")
    print("scales:", theirs[0].tolist())
    if bad:
        print("DIFFERENT:", ", ".join(bad))
        sys.exit(1)
    print("bit for bit equal: scale, growth tracker, skipped steps, weights")


if __name__ == "__main__":
    main()
