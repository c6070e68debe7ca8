#!/usr/bin/env python3
"""Oracle for the example's training loop (examples/roberta_regression/training/trainer.hpp):
the per-layer learning rate at every step of a run, as the article's notebook
(`train-roberta-advanced.ipynb`, peggy1502/Data-Science-Articles) records it.

The notebook's own pieces, run in the notebook's order: its optimizer
builders (shared with ref_lr_schedule.py) on a 12-layer `transformers`
RobertaModel wrapped like its `MyModel`; `transformers.get_scheduler("linear",
num_warmup_steps, num_training_steps=int(n_train / batch_size * epochs))`;
`torch.optim.swa_utils.SWALR(optimizer, swa_lr)` built right after it; then,
per batch of a DataLoader over n_train rows (last batch partial):
optimizer.step(), `collect_lr_by_layers` (the notebook's function, verbatim
below), then swa_scheduler.step() in SWA epochs (epoch >= swa_start) and
scheduler.step() otherwise. No data is needed: the rates do not depend on it.

Writes --out/train_lr_cases.json: one entry per case with the settings and
`lrs[step][column]`, columns embeddings, layer0..layer11, pooler, regressor.
"""
import argparse
import math
import sys
from pathlib import Path

import torch
import transformers
from torch.optim.swa_utils import SWALR

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ref_lr_schedule import BUILDERS, MyModel, write  # noqa: E402  (the notebook's builders, the golden writer)

COLUMNS = ["embeddings"] + [f"layer{i}" for i in range(12)] + ["pooler", "regressor"]

# (name, llrd, n_train, batch_size, epochs, warmup_steps, swa_lr, swa_start)
CASES = [
    ("none_w0", "none", 40, 16, 5, 0, None, 3),
    ("layerwise_w3", "layerwise", 40, 16, 5, 3, None, 3),
    ("grouped_w3_swa", "grouped", 40, 16, 8, 3, 2e-6, 3),
    ("layerwise_w0_swa", "layerwise", 37, 8, 4, 0, 5e-6, 2),
]


def collect_lr_by_layers(optimizer, grouped_LLRD=True):
    """The notebook's cell, verbatim (indices for 12 layers)."""
    lr = []
    if grouped_LLRD:
        lr.append(optimizer.param_groups[0]["lr"])   # embeddings
        lr.append(optimizer.param_groups[5]["lr"])   # layer0
        lr.append(optimizer.param_groups[21]["lr"])  # layer1
        lr.append(optimizer.param_groups[37]["lr"])  # layer2
        lr.append(optimizer.param_groups[53]["lr"])  # layer3
        lr.append(optimizer.param_groups[69]["lr"])  # layer4
        lr.append(optimizer.param_groups[85]["lr"])  # layer5
        lr.append(optimizer.param_groups[101]["lr"]) # layer6
        lr.append(optimizer.param_groups[117]["lr"]) # layer7
        lr.append(optimizer.param_groups[133]["lr"]) # layer8
        lr.append(optimizer.param_groups[149]["lr"]) # layer9
        lr.append(optimizer.param_groups[165]["lr"]) # layer10
        lr.append(optimizer.param_groups[181]["lr"]) # layer11
        lr.append(optimizer.param_groups[197]["lr"]) # pooler
        lr.append(optimizer.param_groups[199]["lr"]) # regressor
    else:
        lr.append(optimizer.param_groups[26]["lr"]) # embeddings
        lr.append(optimizer.param_groups[24]["lr"]) # layer0
        lr.append(optimizer.param_groups[22]["lr"]) # layer1
        lr.append(optimizer.param_groups[20]["lr"]) # layer2
        lr.append(optimizer.param_groups[18]["lr"]) # layer3
        lr.append(optimizer.param_groups[16]["lr"]) # layer4
        lr.append(optimizer.param_groups[14]["lr"]) # layer5
        lr.append(optimizer.param_groups[12]["lr"]) # layer6
        lr.append(optimizer.param_groups[10]["lr"]) # layer7
        lr.append(optimizer.param_groups[8]["lr"])  # layer8
        lr.append(optimizer.param_groups[6]["lr"])  # layer9
        lr.append(optimizer.param_groups[4]["lr"])  # layer10
        lr.append(optimizer.param_groups[2]["lr"])  # layer11
        lr.append(optimizer.param_groups[0]["lr"])  # pooler
        lr.append(optimizer.param_groups[0]["lr"])  # regressor
    return lr


def check_grouped_indices(model, optimizer):
    # The notebook's hard-coded indices assume roberta-base's parameter order;
    # make sure the tiny model has it too.
    names = {id(p): n for n, p in model.named_parameters()}
    name_of = lambda g: names[id(optimizer.param_groups[g]["params"][0])]  # noqa: E731
    assert "embeddings" in name_of(0)
    for i, g in enumerate([5, 21, 37, 53, 69, 85, 101, 117, 133, 149, 165, 181]):
        assert f"encoder.layer.{i}." in name_of(g), (g, name_of(g))
    assert "pooler" in name_of(197) and name_of(199).startswith("regressor")


def run_case(name, llrd, n_train, batch_size, epochs, warmup, swa_lr, swa_start):
    torch.manual_seed(0)
    model = MyModel(12)
    groups, init_lr = BUILDERS[llrd](model, 12)
    optimizer = torch.optim.AdamW(groups, lr=init_lr, eps=1e-6)
    if llrd == "grouped":
        check_grouped_indices(model, optimizer)
    train_steps = int(n_train / batch_size * epochs)  # the notebook's count
    scheduler = transformers.get_scheduler("linear", optimizer=optimizer,
                                           num_warmup_steps=warmup,
                                           num_training_steps=train_steps)
    swa_scheduler = SWALR(optimizer, swa_lr=swa_lr) if swa_lr is not None else None
    batches = math.ceil(n_train / batch_size)  # DataLoader, drop_last=False
    rows = []
    for epoch in range(epochs):
        swa_step = swa_lr is not None and epoch >= swa_start
        for _ in range(batches):
            optimizer.step()  # no gradients: parameters stay, the step is what counts
            if llrd == "none":  # the notebook's collect_lr_by_layers expects LLRD groups
                rows.append([optimizer.param_groups[0]["lr"]] * len(COLUMNS))
            else:
                rows.append(collect_lr_by_layers(optimizer, llrd == "grouped"))
            if swa_step:
                swa_scheduler.step()
            else:
                scheduler.step()
    return {"name": name, "llrd": llrd, "n_train": n_train, "batch_size": batch_size,
            "epochs": epochs, "warmup_steps": warmup, "swa_lr": swa_lr,
            "swa_start_epoch": swa_start, "swa_anneal_steps": 10,
            "num_training_steps": train_steps, "columns": COLUMNS, "lrs": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    write(args.out / "train_lr_cases.json", {"cases": [run_case(*case) for case in CASES]})


if __name__ == "__main__":
    main()
