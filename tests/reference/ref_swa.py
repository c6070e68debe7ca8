#!/usr/bin/env python3
"""Oracle for include/finetune/swa.hpp: torch.optim.swa_utils (AveragedModel,
get_ema_multi_avg_fn, update_bn, SWALR) and its composition with Hugging Face's
linear warm-up schedule.

Writes into --out DIR:
  swa_average.json  initial weights, the parameter/buffer states fed to
                    update(), and the averaged states after every update for
                    SWA and EMA, with and without use_buffers; update_bn
                    batches and the BatchNorm statistics it produces.
  swa_bf16.json     the same states rounded to bfloat16 (as a bf16 model holds
                    them), fed as float32 to a float32 AveragedModel: SWA and
                    EMA 0.999, with and without use_buffers; what SWAWrapper's
                    float32 averages of a bf16 model must equal.
  swa_lr.json       SWALR learning-rate trajectories (cos/linear, several
                    anneal lengths, several param groups) and a warm-up ->
                    SWALR composition as in the article's notebook.
"""
import argparse
import copy
import json
from pathlib import Path

import torch
from torch.optim.swa_utils import SWALR, AveragedModel, get_ema_multi_avg_fn, update_bn
from transformers import get_linear_schedule_with_warmup

torch.set_num_threads(1)


def flat(t):
    return t.detach().reshape(-1).tolist()


def state(model):
    """Parameters then buffers, in registration order (LibTorch's order too)."""
    out = {name: flat(p) for name, p in model.named_parameters()}
    out.update({name: flat(b) for name, b in model.named_buffers()})
    return out


def make_model():
    return torch.nn.Sequential(
        torch.nn.Linear(4, 6),
        torch.nn.LayerNorm(6),
        torch.nn.BatchNorm1d(6),
        torch.nn.Linear(6, 3),
    )


def averages():
    torch.manual_seed(20240601)
    model = make_model()
    with torch.no_grad():  # LayerNorm's affine parameters away from 1/0 so they are not trivial
        model[1].weight.uniform_(0.5, 1.5)
        model[1].bias.uniform_(-0.5, 0.5)
        model[2].weight.uniform_(0.5, 1.5)
        model[2].bias.uniform_(-0.5, 0.5)
    initial = state(model)

    # The sequence of model states fed to update(): real SGD steps in training
    # mode, so BatchNorm's running statistics (buffers) move as well. They run
    # on a float64 copy and are rounded to float32 after each step: in float32
    # the matmuls' and reductions' last bits depend on the CPU's kernels
    # (AVX2 or AVX-512), and seven momentum steps grow those into 5e-4, which
    # would make the golden depend on the machine that wrote it.
    trajectory = copy.deepcopy(model).double()
    opt = torch.optim.SGD(trajectory.parameters(), lr=0.2, momentum=0.9)
    steps = []
    for _ in range(7):
        x = torch.randn(8, 4, dtype=torch.float64)
        y = torch.randn(8, 3, dtype=torch.float64)
        opt.zero_grad()
        torch.nn.functional.mse_loss(trajectory(x), y).backward()
        opt.step()
        steps.append(state(copy.deepcopy(trajectory).float()))

    cases = []
    for mode, decay in (("swa", None), ("ema", 0.9), ("ema", 0.75)):
        for use_buffers in (False, True):
            model.load_state_dict({k: torch.tensor(v).reshape(model.state_dict()[k].shape)
                                   for k, v in initial.items()})
            kwargs = {} if decay is None else {"multi_avg_fn": get_ema_multi_avg_fn(decay)}
            averaged = AveragedModel(model, use_buffers=use_buffers, **kwargs)
            after = []
            for s in steps:
                model.load_state_dict({k: torch.tensor(v).reshape(model.state_dict()[k].shape)
                                       for k, v in s.items()})
                averaged.update_parameters(model)
                after.append(state(averaged.module))
            cases.append({"mode": mode, "decay": decay, "use_buffers": use_buffers,
                          "n_averaged": int(averaged.n_averaged), "after": after})

    # update_bn on the SWA-averaged model (use_buffers=False), in eval mode
    # before, with BatchNorm momentum 0.3 to check it is restored.
    model.load_state_dict({k: torch.tensor(v).reshape(model.state_dict()[k].shape)
                           for k, v in initial.items()})
    averaged = AveragedModel(model)
    for s in steps:
        model.load_state_dict({k: torch.tensor(v).reshape(model.state_dict()[k].shape)
                               for k, v in s.items()})
        averaged.update_parameters(model)
    averaged.module[2].momentum = 0.3
    averaged.eval()
    batches = [torch.randn(5, 4) for _ in range(3)]
    update_bn(batches, averaged)
    assert averaged.module[2].momentum == 0.3 and not averaged.training
    probe = torch.randn(4, 4)
    with torch.no_grad():
        probe_out = averaged(probe)
    bn = {
        "batches": [flat(b) for b in batches],
        "batch_shape": list(batches[0].shape),
        "running_mean": flat(averaged.module[2].running_mean),
        "running_var": flat(averaged.module[2].running_var),
        "num_batches_tracked": int(averaged.module[2].num_batches_tracked),
        "probe": flat(probe),
        "probe_shape": list(probe.shape),
        "probe_output": flat(probe_out),
    }
    return {"initial": initial, "steps": steps, "cases": cases, "update_bn": bn}


def bf16_averages(golden):
    """A bfloat16 model's states, averaged by a float32 AveragedModel (the
    bf16 weights cast to float32, which is exact)."""
    def rounded(s):
        # Floating tensors as a bf16 model holds them; integer buffers as they are.
        out = {}
        for k, v in s.items():
            t = torch.tensor(v)
            out[k] = t.bfloat16().float() if t.is_floating_point() else t
        return out

    model = make_model()
    shapes = {k: v.shape for k, v in model.state_dict().items()}

    def load(s):
        model.load_state_dict({k: v.reshape(shapes[k]) for k, v in rounded(s).items()})

    cases = []
    for mode, decay in (("swa", None), ("ema", 0.999)):
        for use_buffers in (False, True):
            load(golden["initial"])
            kwargs = {} if decay is None else {"multi_avg_fn": get_ema_multi_avg_fn(decay)}
            averaged = AveragedModel(model, use_buffers=use_buffers, **kwargs)
            after = []
            for s in golden["steps"]:
                load(s)
                averaged.update_parameters(model)
                after.append(state(averaged.module))
            cases.append({"mode": mode, "decay": decay, "use_buffers": use_buffers,
                          "n_averaged": int(averaged.n_averaged), "after": after})
    return {"cases": cases}


def lr_groups(lrs):
    params = [torch.nn.Parameter(torch.zeros(1)) for _ in lrs]
    return torch.optim.SGD([{"params": [p], "lr": lr} for p, lr in zip(params, lrs)], lr=1.0)


def lr_of(opt):
    return [g["lr"] for g in opt.param_groups]


def swalr_cases():
    cases = []
    for strategy in ("cos", "linear"):
        for anneal_epochs in (0, 1, 3, 10):
            for swa_lr in (0.01, [0.02, 0.0005, 0.3]):
                opt = lr_groups([0.1, 0.037, 0.0042])
                # A non-trivial starting point: some other schedule moved the lrs first.
                for g, f in zip(opt.param_groups, (0.93, 0.71, 1.3)):
                    g["lr"] = g["lr"] * f
                start = lr_of(opt)
                sched = SWALR(opt, swa_lr=swa_lr, anneal_epochs=anneal_epochs,
                              anneal_strategy=strategy)
                trajectory = [lr_of(opt)]  # after construction (its initial step)
                for _ in range(anneal_epochs + 4):
                    opt.step()
                    sched.step()
                    trajectory.append(lr_of(opt))
                cases.append({"anneal_strategy": strategy, "anneal_epochs": anneal_epochs,
                              "swa_lr": swa_lr, "start_lr": start, "lr": trajectory})
    return cases


def composition():
    """The notebook's loop: linear warm-up schedule and SWALR built together
    before training; the schedule steps until the SWA start, SWALR after."""
    base = [3.6e-6, 3.5e-6, 1.75e-6]
    warmup, total, swa_start, steps = 3, 20, 7, 16
    opt = lr_groups(base)
    schedule = get_linear_schedule_with_warmup(opt, warmup, total)
    swalr = SWALR(opt, swa_lr=2e-6, anneal_epochs=5, anneal_strategy="cos")
    after_construction = lr_of(opt)
    lrs = []
    for step in range(steps):
        opt.step()
        lrs.append(lr_of(opt))  # the lr this step trained with
        if step >= swa_start:
            swalr.step()
        else:
            schedule.step()
    return {"base_lr": base, "num_warmup_steps": warmup, "num_training_steps": total,
            "swa_start": swa_start, "steps": steps, "swa_lr": 2e-6, "anneal_epochs": 5,
            "anneal_strategy": "cos", "after_construction": after_construction,
            "lr_used": lrs, "final_lr": lr_of(opt)}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    out = parser.parse_args().out
    out.mkdir(parents=True, exist_ok=True)
    golden = averages()
    with open(out / "swa_average.json", "w") as f:
        json.dump(golden, f)
        f.write("\n")
    with open(out / "swa_bf16.json", "w") as f:
        json.dump(bf16_averages(golden), f)
        f.write("\n")
    with open(out / "swa_lr.json", "w") as f:
        json.dump({"swalr": swalr_cases(), "composition": composition()}, f)
        f.write("\n")


if __name__ == "__main__":
    main()
