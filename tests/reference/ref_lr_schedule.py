#!/usr/bin/env python3
"""Oracle for finetune/layerwise_lr.hpp and finetune/lr_schedule.hpp.

Builds the article's parameter groups (layer-wise LR decay and grouped LLRD,
code taken from the article's notebook `train-roberta-advanced.ipynb`,
peggy1502/Data-Science-Articles, cells 29 and 30) on a real
`transformers.RobertaModel` (12 layers, tiny hidden size) wrapped like the
notebook's `MyModel` (`roberta_model` + `regressor`), hands them to
`torch.optim.AdamW`, and steps Hugging Face's own schedules
(`get_linear_schedule_with_warmup` and siblings, via `LambdaLR`), recording
every group's lr at every step.

Writes into --out:
  layerwise_lr_groups.json     group membership (parameter names), lr and
                               weight decay of each group, for 12, 4 and 6
                               layers (4 and 6: the notebook's code with the
                               layer sets generalised to t = L // 3)
  lr_schedule_<case>.json      per-step lrs of one (schedule, LLRD mode,
                               warm-up) case. Groups that start with the
                               same lr are stored once: `group_lr_index[g]`
                               points into `initial_lrs` and into each row of
                               `lrs` (the script asserts that such groups
                               really carry identical lrs at every step).
"""
import argparse
import json
from pathlib import Path

import torch
import torch.nn as nn
from transformers import RobertaConfig, RobertaModel
from transformers.optimization import (
    get_constant_schedule_with_warmup,
    get_cosine_schedule_with_warmup,
    get_cosine_with_min_lr_schedule_with_warmup,
    get_inverse_sqrt_schedule,
    get_linear_schedule_with_warmup,
    get_polynomial_decay_schedule_with_warmup,
)

NUM_TRAINING_STEPS = 300
EXTRA_STEPS = 10  # record past the end: HF's curves are defined there too


class MyModel(nn.Module):
    """The notebook's model, with a tiny RobertaConfig instead of roberta-base."""

    def __init__(self, num_layers):
        super().__init__()
        config = RobertaConfig(vocab_size=10, hidden_size=4, num_hidden_layers=num_layers,
                               num_attention_heads=1, intermediate_size=8,
                               max_position_embeddings=12, type_vocab_size=1)
        self.roberta_model = RobertaModel(config)
        self.regressor = nn.Linear(4, 1)


# --- The notebook's group builders (cell 29 and 30), returning the groups
# instead of transformers.AdamW (removed from transformers 5); num_layers
# generalises the hard-coded 12 (identical code paths for 12). -----------------

def roberta_base_AdamW_LLRD(model, num_layers=12):
    opt_parameters = []
    named_parameters = list(model.named_parameters())
    no_decay = ["bias", "LayerNorm.bias", "LayerNorm.weight"]
    init_lr = 3.5e-6
    head_lr = 3.6e-6
    lr = init_lr
    params_0 = [p for n, p in named_parameters if ("pooler" in n or "regressor" in n)
                and any(nd in n for nd in no_decay)]
    params_1 = [p for n, p in named_parameters if ("pooler" in n or "regressor" in n)
                and not any(nd in n for nd in no_decay)]
    opt_parameters.append({"params": params_0, "lr": head_lr, "weight_decay": 0.0})
    opt_parameters.append({"params": params_1, "lr": head_lr, "weight_decay": 0.01})
    for layer in range(num_layers - 1, -1, -1):
        params_0 = [p for n, p in named_parameters if f"encoder.layer.{layer}." in n
                    and any(nd in n for nd in no_decay)]
        params_1 = [p for n, p in named_parameters if f"encoder.layer.{layer}." in n
                    and not any(nd in n for nd in no_decay)]
        opt_parameters.append({"params": params_0, "lr": lr, "weight_decay": 0.0})
        opt_parameters.append({"params": params_1, "lr": lr, "weight_decay": 0.01})
        lr *= 0.9
    params_0 = [p for n, p in named_parameters if "embeddings" in n
                and any(nd in n for nd in no_decay)]
    params_1 = [p for n, p in named_parameters if "embeddings" in n
                and not any(nd in n for nd in no_decay)]
    opt_parameters.append({"params": params_0, "lr": lr, "weight_decay": 0.0})
    opt_parameters.append({"params": params_1, "lr": lr, "weight_decay": 0.01})
    return opt_parameters, init_lr


def roberta_base_AdamW_grouped_LLRD(model, num_layers=12):
    opt_parameters = []
    named_parameters = list(model.named_parameters())
    no_decay = ["bias", "LayerNorm.bias", "LayerNorm.weight"]
    if num_layers == 12:  # the notebook's literal sets
        set_2 = ["layer.4", "layer.5", "layer.6", "layer.7"]
        set_3 = ["layer.8", "layer.9", "layer.10", "layer.11"]
    else:  # t = L // 3; trailing dot so that layer.1 does not match layer.10
        t = num_layers // 3
        set_2 = [f"layer.{i}." for i in range(t, 2 * t)]
        set_3 = [f"layer.{i}." for i in range(2 * t, num_layers)]
    init_lr = 1e-6
    for i, (name, params) in enumerate(named_parameters):
        weight_decay = 0.0 if any(p in name for p in no_decay) else 0.01
        if name.startswith("roberta_model.embeddings") or name.startswith("roberta_model.encoder"):
            lr = init_lr
            lr = init_lr * 1.75 if any(p in name for p in set_2) else lr
            lr = init_lr * 3.5 if any(p in name for p in set_3) else lr
            opt_parameters.append({"params": params, "weight_decay": weight_decay, "lr": lr})
        if name.startswith("regressor") or name.startswith("roberta_model.pooler"):
            lr = init_lr * 3.6
            opt_parameters.append({"params": params, "weight_decay": weight_decay, "lr": lr})
    return opt_parameters, init_lr


def no_LLRD(model, num_layers=12):
    # The notebook: transformers.AdamW(model.parameters(), lr=1e-6), whose
    # weight_decay default was 0.0.
    return [{"params": list(model.parameters()), "weight_decay": 0.0}], 1e-6


BUILDERS = {"layerwise": roberta_base_AdamW_LLRD, "grouped": roberta_base_AdamW_grouped_LLRD,
            "none": no_LLRD}


def make_optimizer(model, mode, num_layers=12):
    groups, init_lr = BUILDERS[mode](model, num_layers)
    return torch.optim.AdamW(groups, lr=init_lr)


def describe_groups(model, optimizer):
    names = {id(p): n for n, p in model.named_parameters()}
    return [{"params": [names[id(p)] for p in g["params"]], "lr": g["lr"],
             "weight_decay": g["weight_decay"]} for g in optimizer.param_groups]


def groups_golden():
    out = {}
    for num_layers in (12, 4, 6):
        torch.manual_seed(0)
        model = MyModel(num_layers)
        entry = {"num_layers": num_layers,
                 "params": [[n, p.numel()] for n, p in model.named_parameters()]}
        for mode in ("layerwise", "grouped", "none"):
            entry[mode] = describe_groups(model, make_optimizer(model, mode, num_layers))
        out[f"roberta{num_layers}"] = entry
    return out


SCHEDULES = {
    "linear": lambda opt, w, kw: get_linear_schedule_with_warmup(opt, w, NUM_TRAINING_STEPS),
    "cosine": lambda opt, w, kw: get_cosine_schedule_with_warmup(opt, w, NUM_TRAINING_STEPS, **kw),
    "cosine_min_lr": lambda opt, w, kw: get_cosine_with_min_lr_schedule_with_warmup(
        opt, w, NUM_TRAINING_STEPS, **kw),
    "constant": lambda opt, w, kw: get_constant_schedule_with_warmup(opt, w),
    "polynomial": lambda opt, w, kw: get_polynomial_decay_schedule_with_warmup(
        opt, w, NUM_TRAINING_STEPS, **kw),
    "inverse_sqrt": lambda opt, w, kw: get_inverse_sqrt_schedule(opt, w, **kw),
}

# (file name, schedule, LLRD mode, warm-up steps, schedule kwargs)
CASES = [
    ("linear_none_w0", "linear", "none", 0, {}),
    ("linear_none_w50", "linear", "none", 50, {}),
    ("linear_layerwise_w0", "linear", "layerwise", 0, {}),
    ("linear_layerwise_w50", "linear", "layerwise", 50, {}),
    ("linear_grouped_w0", "linear", "grouped", 0, {}),
    ("linear_grouped_w50", "linear", "grouped", 50, {}),
    ("cosine_grouped_w50", "cosine", "grouped", 50, {"num_cycles": 0.5}),
    ("cosine_none_w0_c2", "cosine", "none", 0, {"num_cycles": 2.0}),
    ("cosine_min_lr_grouped_w50", "cosine_min_lr", "grouped", 50, {"min_lr_rate": 0.1}),
    ("constant_grouped_w50", "constant", "grouped", 50, {}),
    ("constant_none_w0", "constant", "none", 0, {}),
    ("polynomial_layerwise_w50", "polynomial", "layerwise", 50, {"power": 2.0, "lr_end": 1e-7}),
    ("polynomial_grouped_w0", "polynomial", "grouped", 0, {"power": 1.0, "lr_end": 1e-8}),
    ("inverse_sqrt_grouped_w50", "inverse_sqrt", "grouped", 50, {}),
    ("inverse_sqrt_none_w0_t10", "inverse_sqrt", "none", 0, {"timescale": 10}),
    ("inverse_sqrt_none_w0", "inverse_sqrt", "none", 0, {}),
]


def schedule_golden(shape, mode, warmup, kwargs):
    torch.manual_seed(0)
    model = MyModel(12)
    optimizer = make_optimizer(model, mode)
    scheduler = SCHEDULES[shape](optimizer, warmup, kwargs)
    initial = [g["initial_lr"] for g in optimizer.param_groups]
    distinct = sorted(set(initial), reverse=True)
    index = [distinct.index(lr) for lr in initial]
    rows = []
    for step in range(NUM_TRAINING_STEPS + EXTRA_STEPS + 1):
        lrs = [g["lr"] for g in optimizer.param_groups]
        row = [None] * len(distinct)
        for g, lr in enumerate(lrs):
            if row[index[g]] is None:
                row[index[g]] = lr
            assert row[index[g]] == lr, "groups with one initial lr diverged"
        rows.append(row)
        optimizer.step()  # no gradients: a no-op that keeps LambdaLR's order check quiet
        scheduler.step()
    return {"schedule": shape, "llrd": mode, "num_warmup_steps": warmup,
            "num_training_steps": NUM_TRAINING_STEPS, "kwargs": kwargs,
            "defaults_lr": optimizer.defaults["lr"], "num_groups": len(initial),
            "group_lr_index": index, "initial_lrs": distinct, "lrs": rows}


def write(path: Path, obj) -> None:
    with open(path, "w") as f:
        json.dump(obj, f, indent=None, separators=(",", ":"))
        f.write("\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    write(args.out / "layerwise_lr_groups.json", groups_golden())
    for name, shape, mode, warmup, kwargs in CASES:
        write(args.out / f"lr_schedule_{name}.json", schedule_golden(shape, mode, warmup, kwargs))


if __name__ == "__main__":
    main()
