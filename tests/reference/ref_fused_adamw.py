#!/usr/bin/env python3
"""Oracle for include/finetune/fused_adamw.hpp (FusedAdamW).

torch.optim.AdamW(fused=True) runs ATen's fused AdamW kernel, the one
FusedAdamW calls from C++. Two parameter groups over four float64 tensors
(float64, so that the CPU's vector width, FMA or not, moves no digit the
test reads at 1e-9):

  group 0: lr 1e-2, betas (0.9, 0.999), eps 1e-8, weight_decay 0.01
  group 1: lr 3e-3, betas (0.8, 0.99), eps 1e-6, weight_decay 0.1, amsgrad

Eight steps. Before steps 3 and 6 the groups' learning rates are changed (as
a schedule does), and on steps 2 and 5 the tensor "skipped" gets no gradient
(it is skipped, as AdamW skips it). The gradients come from a seeded
generator and are stored in the golden; so are the parameters after every
step and the state (step, exp_avg, exp_avg_sq, max_exp_avg_sq) at the end.

Writes tests/golden/fused_adamw.json.
"""
import argparse
import json
from pathlib import Path

import torch

torch.set_num_threads(1)

SHAPES = {"w": [4, 3], "b": [5], "skipped": [2, 2], "v": [3]}
GROUPS = [
    {"names": ["w", "b"], "lr": 1e-2, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.01,
     "amsgrad": False},
    {"names": ["skipped", "v"], "lr": 3e-3, "betas": (0.8, 0.99), "eps": 1e-6,
     "weight_decay": 0.1, "amsgrad": True},
]
STEPS = 8
LR_CHANGES = {3: [5e-3, 2e-3], 6: [1e-3, 4e-3]}  # before that step: each group's lr
NO_GRAD = {2: "skipped", 5: "skipped"}


def flat(t):
    return [float(v) for v in t.detach().reshape(-1).tolist()]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    gen = torch.Generator().manual_seed(20261201)
    params = {n: torch.randn(s, generator=gen, dtype=torch.float64).requires_grad_(True)
              for n, s in SHAPES.items()}
    initial = {n: flat(p) for n, p in params.items()}
    optimizer = torch.optim.AdamW(
        [{"params": [params[n] for n in g["names"]],
          **{k: v for k, v in g.items() if k != "names"}} for g in GROUPS],
        fused=True)
    steps = []
    for step in range(1, STEPS + 1):
        if step in LR_CHANGES:
            for group, lr in zip(optimizer.param_groups, LR_CHANGES[step]):
                group["lr"] = lr
        grads = {}
        for n, p in params.items():
            g = torch.randn(SHAPES[n], generator=gen, dtype=torch.float64)
            if NO_GRAD.get(step) == n:
                p.grad = None
                continue
            p.grad = g
            grads[n] = flat(g)
        optimizer.step()
        steps.append({"step": step, "lrs": [g["lr"] for g in optimizer.param_groups],
                      "grads": grads, "params": {n: flat(p) for n, p in params.items()}})
    state = {}
    for n, p in params.items():
        s = optimizer.state[p]
        state[n] = {"step": int(s["step"].item()), "exp_avg": flat(s["exp_avg"]),
                    "exp_avg_sq": flat(s["exp_avg_sq"])}
        if "max_exp_avg_sq" in s:
            state[n]["max_exp_avg_sq"] = flat(s["max_exp_avg_sq"])
    golden = {
        "torch": torch.__version__.split("+")[0],
        "shapes": SHAPES,
        "groups": [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()}
                   for g in GROUPS],
        "initial": initial, "steps": steps, "state": state,
    }
    Path(args.out, "fused_adamw.json").write_text(json.dumps(golden, indent=1) + "\n")


if __name__ == "__main__":
    main()
