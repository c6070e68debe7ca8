#!/usr/bin/env python3
"""Oracle for finetune::PeriodicEvaluator: the evaluation schedule, best
tracking, early stopping and printed lines of the article's notebook.

The loop below is the notebook's (peggy1502/Data-Science-Articles,
train-roberta-advanced.ipynb: `run_training` and `train_and_validate`), kept
statement for statement, with the model, data and optimizer taken out: each
validation pass returns the next value of a fixed metric sequence instead of
an RMSE. Only the values printed and decided by the loop are recorded.

Differences from the notebook, all parameters of the notebook's constants:
EPOCHS, len(train_data_loader), the 10 of `i % 10`, the 2 of `epoch >= 2`
and EARLY_STOP_THRESHOLD vary per case. Max-mode cases run the notebook loop
on the negated metric (the notebook only minimizes).

Writes periodic_evaluator_schedule.json into --out DIR.
"""
import argparse
import json
import math
import random
from pathlib import Path


def notebook_run(metric_stream, EPOCHS, n_batches, eval_every, frequent_from, EARLY_STOP_THRESHOLD,
                 train_step=None, validate=None):
    """run_training / train_and_validate of the notebook for one fold.

    train_step(epoch, i), when given, is the training step of batch i;
    validate(epoch, i), when given, is the validation after batch i and
    replaces metric_stream (check_notebook_loop.py runs the real loop so)."""
    fold = 0
    events = []          # one per evaluation: epoch, batch, saved
    lines = []           # what the notebook prints
    stream = iter(metric_stream)

    def train_fn_step(epoch, i):
        if train_step is not None:
            train_step(epoch, i)

    def validate_fn(epoch, i):
        return validate(epoch, i) if validate is not None else next(stream)

    def train_and_validate(best_rmse, early_stopping_counter, fold, epoch):
        for i in range(n_batches):  # for i, batch in enumerate(train_data_loader)
            train_fn_step(epoch, i)
            if (i % eval_every == 0) or ((i + 1) == n_batches):
                rmse = validate_fn(epoch, i)
                if rmse < best_rmse:
                    events.append({"epoch": epoch, "batch": i, "saved": True})
                    lines.append(f"FOLD: {fold}, Epoch: {epoch}, Batch {i}, RMSE = {round(rmse,4)}, checkpoint saved.")
                    best_rmse = rmse
                    early_stopping_counter = 0
                else:
                    events.append({"epoch": epoch, "batch": i, "saved": False})
                    lines.append(f"FOLD: {fold}, Epoch: {epoch}, Batch {i}, RMSE = {round(rmse,4)}")
                    early_stopping_counter += 1
                if early_stopping_counter > EARLY_STOP_THRESHOLD:
                    lines.append(f"Early stopping triggered!")
                    break
        return best_rmse, early_stopping_counter

    frequent_eval = True
    best_rmse = 999
    early_stopping_counter = 0
    for epoch in range(EPOCHS):
        if frequent_eval and epoch >= frequent_from:
            best_rmse, early_stopping_counter = train_and_validate(
                best_rmse, early_stopping_counter, fold, epoch)
            if early_stopping_counter > EARLY_STOP_THRESHOLD: break
        else:
            # train_fn(...) runs all batches; then one validation.
            for i in range(n_batches):
                train_fn_step(epoch, i)
            rmse = validate_fn(epoch, n_batches - 1)
            if rmse < best_rmse:
                events.append({"epoch": epoch, "batch": n_batches - 1, "saved": True})
                lines.append(f"FOLD: {fold}, Epoch: {epoch}, RMSE = {round(rmse,4)}, checkpoint saved.")
                best_rmse = rmse
                early_stopping_counter = 0
            else:
                events.append({"epoch": epoch, "batch": n_batches - 1, "saved": False})
                lines.append(f"FOLD: {fold}, Epoch: {epoch}, RMSE = {round(rmse,4)}")
                early_stopping_counter += 1
            if early_stopping_counter > EARLY_STOP_THRESHOLD:
                lines.append(f"Early stopping triggered!")
                break
    stopped = early_stopping_counter > EARLY_STOP_THRESHOLD
    return {"evaluations": events, "lines": lines, "stopped": stopped,
            "best": best_rmse, "early_stopping_counter": early_stopping_counter}


def metric_sequence(seed, count, floor, start, decay, noise, decimals=None):
    """An RMSE-like curve: falls from `start` towards `floor`, with noise,
    so that improvements stop after a while and early stopping can fire.
    `decimals` rounds the values, which makes ties (equal to the best so far:
    not an improvement) frequent."""
    rng = random.Random(seed)
    seq = [floor + (start - floor) * math.exp(-k / decay) + rng.uniform(-noise, noise)
           for k in range(count)]
    return seq if decimals is None else [round(v, decimals) for v in seq]


CASES = [
    # The article: 15 epochs, 142 batches (2267 texts / 16), every 10 batches
    # from epoch 2 (0-based), patience 50.
    dict(name="article", epochs=15, batches=142, eval_every=10, from_epoch=2, patience=50,
         mode="min", seed=1, floor=0.52, start=0.80, decay=15.0, noise=0.02),
    # Last batch index 10 is a multiple of 5: evaluated once, not twice.
    dict(name="last_batch_on_grid", epochs=6, batches=11, eval_every=5, from_epoch=2,
         patience=4, mode="min", seed=2, floor=0.5, start=0.9, decay=6.0, noise=0.03),
    dict(name="every_batch_from_start", epochs=5, batches=5, eval_every=1, from_epoch=0,
         patience=3, mode="min", seed=3, floor=0.4, start=0.7, decay=4.0, noise=0.05),
    dict(name="n_larger_than_epoch", epochs=8, batches=3, eval_every=20, from_epoch=1,
         patience=5, mode="min", seed=4, floor=0.6, start=0.9, decay=3.0, noise=0.04),
    dict(name="one_batch_epochs", epochs=12, batches=1, eval_every=7, from_epoch=3,
         patience=2, mode="min", seed=5, floor=0.5, start=0.8, decay=2.0, noise=0.05),
    dict(name="epoch_end_only", epochs=30, batches=9, eval_every=3, from_epoch=100,
         patience=2, mode="min", seed=6, floor=0.5, start=0.8, decay=3.0, noise=0.04),
    dict(name="no_early_stop", epochs=4, batches=13, eval_every=4, from_epoch=1,
         patience=1000, mode="min", seed=7, floor=0.5, start=0.8, decay=5.0, noise=0.05),
    dict(name="patience_zero", epochs=4, batches=8, eval_every=3, from_epoch=1,
         patience=0, mode="min", seed=8, floor=0.5, start=0.8, decay=5.0, noise=0.05),
    # Metrics rounded to 2 decimals: many ties with the best, none an improvement.
    dict(name="ties", epochs=6, batches=10, eval_every=2, from_epoch=1, patience=5,
         mode="min", seed=10, floor=0.5, start=0.8, decay=4.0, noise=0.02, decimals=2),
    # Higher is better (accuracy-like); the notebook loop sees -metric.
    dict(name="max_mode", epochs=10, batches=17, eval_every=4, from_epoch=2, patience=6,
         mode="max", seed=9, floor=-0.9, start=-0.5, decay=8.0, noise=0.03),
]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    out_cases = []
    for case in CASES:
        evals_max = case["epochs"] * case["batches"]
        seq = metric_sequence(case["seed"], evals_max, case["floor"], case["start"],
                              case["decay"], case["noise"], case.get("decimals"))
        if case["mode"] == "max":
            user_metrics = [-v for v in seq]   # the user's metric, higher is better
        else:
            user_metrics = seq
        result = notebook_run(seq, case["epochs"], case["batches"], case["eval_every"],
                              case["from_epoch"], case["patience"])
        used = len(result["evaluations"])
        out_cases.append({
            "name": case["name"], "epochs": case["epochs"], "batches": case["batches"],
            "eval_every": case["eval_every"], "from_epoch": case["from_epoch"],
            "patience": case["patience"], "mode": case["mode"],
            "metrics": user_metrics[:used],
            "evaluations": result["evaluations"],
            "lines": result["lines"] if case["mode"] == "min" else [],
            "stopped": result["stopped"],
            "best": result["best"] if case["mode"] == "min" else -result["best"],
            "evaluations_without_improvement": result["early_stopping_counter"],
        })
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "periodic_evaluator_schedule.json", "w") as f:
        json.dump({"source": "train-roberta-advanced.ipynb loop (peggy1502/Data-Science-Articles)",
                   "cases": out_cases}, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
