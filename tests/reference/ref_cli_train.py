#!/usr/bin/env python3
"""Oracle for the example's `train` and `table` flags end to end
(tests/test_roberta_cli.cpp runs the roberta_regression binary).

  ref_cli_train.py --out DIR

Writes into DIR:
  cli_train.csv         the input the test trains on: 36 State of the Union
                        passages (every 76th of the embedded data, cut to about
                        200 characters), target = the address's year, no
                        `address` column (so `--standardize-target auto` is off
                        and the folds are the notebook's ungrouped ones)
  cli_train_cases.json  per run of the test: its flags as settings, the
                        CSV rows it uses (data_rows: all, or every N-th
                        with --subsample N), the notebook's folds of those
                        rows for that --folds /
                        --seed (ref_folds.notebook_folds: numpy seed, pandas
                        sample, pd.cut bins, StratifiedKFold), the rows of the
                        chosen --fold, the steps, the raw evaluations
                        (epoch, batch) of the notebook's loop
                        (ref_periodic_evaluator.notebook_run) and, where the
                        run logs them, the per-layer learning rate of every
                        step (the notebook's optimizer builders, HF's linear
                        schedule and torch's SWALR with anneal_epochs =
                        --swa-anneal-steps, in the notebook's order, as
                        ref_train_lr.py).

The per-layer columns are read from the group holding each column's
parameter (embeddings.word_embeddings.weight, encoder.layer.i.attention.self.
query.weight, pooler.dense.weight, regressor.weight): the notebook's
collect_lr_by_layers with its roberta-base indices replaced by that lookup, so
that it works for the demo model's 4 layers. For 12 layers the script asserts
that the lookup gives the notebook's verbatim collect_lr_by_layers.
"""
import argparse
import csv
import gzip
import io
import json
import math
import sys
from pathlib import Path

import torch
import transformers
from torch.optim.swa_utils import SWALR

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from ref_folds import DATA, notebook_folds  # noqa: E402
from ref_lr_schedule import BUILDERS, MyModel, write  # noqa: E402
from ref_periodic_evaluator import notebook_run  # noqa: E402
from ref_train_lr import collect_lr_by_layers  # noqa: E402

ROWS = 36
DEMO_LAYERS = 4  # examples/roberta_regression/assets/demo-model/config.json

# The runs of tests/test_roberta_cli.cpp; every flag the test passes is here.
CASES = [
    # train: one fold of three with another seed, layer-wise LLRD, warm-up, SWA
    # with a short anneal, frequent evaluation from epoch 1, a validation batch
    # that does not divide the fold, the standardized target, the lr log.
    dict(name="train_main", command="train", folds=3, fold=1, seed=7, epochs=2, batch_size=4,
         val_batch_size=5, max_length=16, llrd="layerwise", lr_scale=100.0, warmup_steps=2,
         swa_lr=2e-6, swa_start_epoch=1, swa_anneal_steps=3, eval_every=2,
         eval_every_from_epoch=1, patience=50, standardize_target="on", lr_log=True),
    # train: frozen weights (lr scale 1e-300: every update rounds to nothing),
    # so every evaluation gives the first one's RMSE, none improves, and
    # --patience 2 stops the run at the fourth evaluation. --subsample 2: the
    # CSV's rows 0, 2, 4, ... only, folded as if they were the whole file.
    dict(name="train_patience", command="train", subsample=2, folds=3, fold=0, seed=3377, epochs=3,
         batch_size=4, val_batch_size=64, max_length=16, llrd="none", lr_scale=1e-300,
         warmup_steps=0, swa_lr=None, swa_start_epoch=3, swa_anneal_steps=10, eval_every=1,
         eval_every_from_epoch=0, patience=2, standardize_target="off", lr_log=False,
         constant_metric=True),
    # table: row 1 only, fold 0 of two, the table JSON at --json.
    dict(name="table_json", command="table", folds=2, fold=0, seed=3377, epochs=1, batch_size=8,
         val_batch_size=64, max_length=16, llrd="none", lr_scale=1.0, warmup_steps=0,
         swa_lr=None, swa_start_epoch=3, swa_anneal_steps=10, eval_every=None,
         eval_every_from_epoch=2, patience=50, standardize_target="auto", lr_log=False),
]


def make_csv():
    with gzip.open(DATA, "rt", encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    picked = rows[::76][:ROWS]
    assert len(picked) == ROWS
    out = io.StringIO(newline="")
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["id", "url_legal", "license", "excerpt", "target", "standard_error"])
    targets = []
    for row in picked:
        text = row["excerpt"]
        if len(text) > 200:
            text = text[:200].rsplit(" ", 1)[0]
        writer.writerow([row["id"], "", "", text, row["target"], row["standard_error"]])
        targets.append(float(row["target"]))
    return out.getvalue(), targets


def column_params(num_layers):
    return (["roberta_model.embeddings.word_embeddings.weight"]
            + [f"roberta_model.encoder.layer.{i}.attention.self.query.weight"
               for i in range(num_layers)]
            + ["roberta_model.pooler.dense.weight", "regressor.weight"])


def collect_by_name(model, optimizer, num_layers):
    group_of = {}
    for g, group in enumerate(optimizer.param_groups):
        for p in group["params"]:
            group_of[id(p)] = g
    params = dict(model.named_parameters())
    return [optimizer.param_groups[group_of[id(params[n])]]["lr"]
            for n in column_params(num_layers)]


def lr_rows(num_layers, llrd, n_train, batch_size, epochs, warmup, swa_lr, swa_start,
            swa_anneal_steps, lr_scale, check_notebook=False):
    """ref_train_lr.run_case for any depth, an lr scale and SWALR's anneal_epochs."""
    torch.manual_seed(0)
    model = MyModel(num_layers)
    groups, init_lr = BUILDERS[llrd](model, num_layers)
    for group in groups:
        group["lr"] = group.get("lr", init_lr) * lr_scale
    optimizer = torch.optim.AdamW(groups, lr=init_lr * lr_scale, eps=1e-6)
    train_steps = int(n_train / batch_size * epochs)  # the notebook's count
    scheduler = transformers.get_scheduler("linear", optimizer=optimizer,
                                           num_warmup_steps=warmup,
                                           num_training_steps=train_steps)
    swa_scheduler = (SWALR(optimizer, swa_lr=swa_lr * lr_scale, anneal_epochs=swa_anneal_steps)
                     if swa_lr is not None else None)
    batches = math.ceil(n_train / batch_size)  # DataLoader, drop_last=False
    rows = []
    for epoch in range(epochs):
        swa_step = swa_lr is not None and epoch >= swa_start
        for _ in range(batches):
            optimizer.step()
            row = collect_by_name(model, optimizer, num_layers)
            if check_notebook and llrd != "none":
                assert row == collect_lr_by_layers(optimizer, llrd == "grouped"), "lookup"
            rows.append(row)
            if swa_step:
                swa_scheduler.step()
            else:
                scheduler.step()
    return rows


def run(case, all_targets):
    data_rows = list(range(0, len(all_targets), case.get("subsample", 1)))  # the CSV rows used
    targets = [all_targets[i] for i in data_rows]
    folds = notebook_folds(targets, case["folds"], case["seed"])["folds"]
    val_rows = [i for i, f in enumerate(folds) if f == case["fold"]]
    n_train, n_val = len(targets) - len(val_rows), len(val_rows)
    batches = math.ceil(n_train / case["batch_size"])
    # The notebook's loop on a metric stream: strictly falling (the schedule
    # alone decides) or constant (nothing improves after the first).
    count = case["epochs"] * batches + 1
    stream = [1.0] * count if case.get("constant_metric") else [1.0 - k / 1000 for k in range(count)]
    eval_every = case["eval_every"] or 1
    frequent_from = case["eval_every_from_epoch"] if case["eval_every"] else case["epochs"]
    loop = notebook_run(stream, case["epochs"], batches, eval_every, frequent_from,
                        case["patience"])
    evaluations = [[e["epoch"], e["batch"]] for e in loop["evaluations"]]
    last = evaluations[-1]
    steps = (last[0] * batches + last[1] + 1) if loop["stopped"] else case["epochs"] * batches
    out = dict(case)
    out.update({"data_rows": data_rows, "fold_of_row": folds, "val_rows": val_rows,
                "n_train": n_train, "n_val": n_val,
                "batches": batches, "steps": steps, "evaluations": evaluations,
                "early_stopped": loop["stopped"]})
    if case["lr_log"]:
        out["columns"] = (["embeddings"] + [f"layer{i}" for i in range(DEMO_LAYERS)]
                          + ["pooler", "regressor"])
        rows = lr_rows(DEMO_LAYERS, case["llrd"], n_train, case["batch_size"], case["epochs"],
                       case["warmup_steps"], case["swa_lr"], case["swa_start_epoch"],
                       case["swa_anneal_steps"], case["lr_scale"])
        out["lrs"] = rows[:steps]
        # The by-name lookup is the notebook's collect_lr_by_layers on roberta-base's depth.
        lr_rows(12, case["llrd"], n_train, case["batch_size"], case["epochs"],
                case["warmup_steps"], case["swa_lr"], case["swa_start_epoch"],
                case["swa_anneal_steps"], case["lr_scale"], check_notebook=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    text, targets = make_csv()
    with open(args.out / "cli_train.csv", "w", encoding="utf-8", newline="") as f:
        f.write(text)
    write(args.out / "cli_train_cases.json",
          {"csv": "cli_train.csv", "rows": ROWS, "targets": targets,
           "cases": [run(case, targets) for case in CASES]})


if __name__ == "__main__":
    main()
