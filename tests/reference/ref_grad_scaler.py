#!/usr/bin/env python3
"""Oracle for include/finetune/grad_scaler.hpp (GradScaler).

torch.amp.GradScaler("cpu") drives real optimizers (torch.optim.SGD and
AdamW, single-tensor code path) over float32 parameters. The loss is linear
in the weights, sum over parameters of (w * x).sum(), so every scaled gradient
is exactly scale * x (float32), whatever LibTorch computes it: the test
replays the same x and must see the same bits. Some steps inject an inf or a
NaN into x, or a finite 1e38 that overflows only once multiplied by the scale
(a float16-style overflow); a skipped step must leave the weights and the
optimizer's state untouched, and update() must back off.

Scenarios (one golden each, tests/golden/grad_scaler_<name>.json):
  sgd             one SGD (momentum, weight decay) with two param groups;
                  default factors, growth_interval 3: several growths and
                  backoffs over 24 steps.
  two_optimizers  AdamW (two groups) and SGD sharing one scaler; odd factors
                  (init 1000.5, growth 1.7, backoff 0.3: the products are
                  rounded to float32), growth_interval 2; unscale_() called
                  explicitly before AdamW's step on odd steps; an injection
                  in one optimizer's gradients skips that optimizer only.

Per step the golden holds x (inf/NaN as the strings "inf", "-inf", "nan"),
whether each optimizer's step was skipped, the scale and growth tracker after
update(), and every parameter after the step.
"""
import argparse
import json
import math
from pathlib import Path

import torch

torch.set_num_threads(1)

STEPS = 24
SHAPES = {"a": [5], "b": [2, 3], "c": [4]}


def encode(v: float):
    if math.isnan(v):
        return "nan"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return v


def flat(t: torch.Tensor):
    return [encode(float(v)) for v in t.detach().reshape(-1).tolist()]


def make_params(gen):
    return {name: torch.randn(shape, generator=gen).requires_grad_(True)
            for name, shape in SHAPES.items()}


def make_x(gen, step, injections):
    xs = {name: torch.randn(shape, generator=gen) for name, shape in SHAPES.items()}
    for at, name, index, value in injections:
        if at == step:
            xs[name].view(-1)[index] = value
    return xs


def run(name, options, build_optimizers, injections, explicit_unscale, seed):
    gen = torch.Generator().manual_seed(seed)
    params = make_params(gen)
    initial = {n: flat(p) for n, p in params.items()}
    optimizers = build_optimizers(params)
    scaler = torch.amp.GradScaler("cpu", **options)
    steps = []
    for step in range(STEPS):
        xs = make_x(gen, step, injections)
        for opt, _ in optimizers:
            opt.zero_grad()
        loss = sum((params[n] * xs[n]).sum() for n in SHAPES)
        scaler.scale(loss).backward()
        skipped = []
        for index, (opt, _) in enumerate(optimizers):
            if explicit_unscale and index == 0 and step % 2 == 1:
                scaler.unscale_(opt)
            scaler.step(opt)
            found = sum(v.item() for v in scaler._found_inf_per_device(opt).values())
            skipped.append(found > 0)
        scaler.update()
        steps.append({
            "x": {n: flat(x) for n, x in xs.items()},
            "skipped": skipped,
            "scale": scaler.get_scale(),
            "growth_tracker": scaler._get_growth_tracker(),
            "weights": {n: flat(p) for n, p in params.items()},
        })
    return {
        "name": name,
        "options": options,
        "optimizers": [spec for _, spec in optimizers],
        "explicit_unscale": explicit_unscale,
        "shapes": SHAPES,
        "initial": initial,
        "steps": steps,
    }


def sgd_scenario():
    def build(params):
        groups = [{"params": [params["a"], params["b"]], "names": ["a", "b"], "lr": 0.1},
                  {"params": [params["c"]], "names": ["c"], "lr": 0.05}]
        opt = torch.optim.SGD([{k: v for k, v in g.items() if k != "names"} for g in groups],
                              lr=0.1, momentum=0.9, weight_decay=0.01, foreach=False)
        spec = {"kind": "sgd", "momentum": 0.9, "weight_decay": 0.01,
                "groups": [{"names": g["names"], "lr": g["lr"]} for g in groups]}
        return [(opt, spec)]

    injections = [(2, "a", 1, float("inf")), (3, "b", 4, 1e38), (4, "c", 0, float("nan")),
                  (11, "b", 0, float("-inf")), (12, "a", 3, 1e38), (19, "c", 2, float("nan"))]
    options = {"init_scale": 2.0 ** 16, "growth_factor": 2.0, "backoff_factor": 0.5,
               "growth_interval": 3}
    return run("sgd", options, build, injections, explicit_unscale=False, seed=11)


def two_optimizers_scenario():
    def build(params):
        adamw_groups = [{"params": [params["a"]], "names": ["a"], "lr": 1e-2},
                        {"params": [params["b"]], "names": ["b"], "lr": 5e-3}]
        adamw = torch.optim.AdamW([{k: v for k, v in g.items() if k != "names"}
                                   for g in adamw_groups],
                                  lr=1e-2, weight_decay=0.01, foreach=False)
        sgd = torch.optim.SGD([params["c"]], lr=0.05, momentum=0.5, foreach=False)
        return [(adamw, {"kind": "adamw", "weight_decay": 0.01,
                         "groups": [{"names": g["names"], "lr": g["lr"]} for g in adamw_groups]}),
                (sgd, {"kind": "sgd", "momentum": 0.5, "weight_decay": 0.0,
                       "groups": [{"names": ["c"], "lr": 0.05}]})]

    injections = [(1, "a", 0, float("nan")), (3, "c", 1, float("inf")), (6, "b", 2, 1e38),
                  (7, "c", 3, 1e38), (14, "a", 4, float("-inf")), (15, "c", 0, float("nan")),
                  (20, "b", 5, float("inf"))]
    options = {"init_scale": 1000.5, "growth_factor": 1.7, "backoff_factor": 0.3,
               "growth_interval": 2}
    return run("two_optimizers", options, build, injections, explicit_unscale=True, seed=12)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    out = parser.parse_args().out
    out.mkdir(parents=True, exist_ok=True)
    for golden in (sgd_scenario(), two_optimizers_scenario()):
        with open(out / f"grad_scaler_{golden['name']}.json", "w") as f:
            json.dump(golden, f, allow_nan=False)
            f.write("\n")


if __name__ == "__main__":
    main()
