#!/usr/bin/env python3
"""Test-time oracle: the article's notebook loop, re-run on what a C++ run traced
(tests/test_roberta_notebook_parity.cpp):

  check_notebook_loop.py TRACE_DIR...

Each TRACE_DIR is what `roberta_regression train|table --trace DIR` wrote (any
fold<k>/trace.json below it is checked). For every traced fold, this runs the
notebook's `run_training` / `train_fn` / `train_and_validate` / `validate_fn`
(peggy1502/Data-Science-Articles, train-roberta-advanced.ipynb), statement for
statement where possible, with:
- the notebook's MyModel: transformers' RobertaModel (the traced folder's
  config, eager attention, dropout 0 unless the run had another) and
  nn.Linear(hidden, 1) on its pooler output, loaded from the run's
  initial.safetensors (after re-initialisation; every tensor used, none missing);
- the ids RobertaTokenizerFast gives the CSV's excerpts (checked equal to the
  traced ids);
- the notebook's optimizer builders (ref_lr_schedule.py) and transformers.AdamW's
  update, written out below (transformers 5, pinned here, no longer ships it);
- transformers.get_scheduler("linear"), torch.optim.swa_utils AveragedModel,
  SWALR (anneal_epochs = the run's --swa-anneal-steps) and update_bn;
- the notebook's evaluation schedule and early stopping; the traced batch order.
The notebook never evaluates swa_model; where the C++ run reports the averaged
weights' RMSE, swa_model is validated at the same points (our addition).
Where the run standardized the target (the embedded data), the port trains on
(y - mean) / std and reports RMSE in the target's units, as the C++ run does.

Prints one JSON line: per traced fold the worst relative differences of the
losses and RMSEs and how many were compared; exits 1 when any is above
--tolerance (default 1e-4) or the steps/evaluations do not line up.
"""
import argparse
import csv
import gzip
import json
import math
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import transformers
from safetensors.torch import load_file
from torch.optim.swa_utils import SWALR, AveragedModel
from transformers import RobertaConfig, RobertaModel, RobertaTokenizerFast
from transformers.utils import logging as hf_logging

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ref_lr_schedule import BUILDERS  # noqa: E402  (the notebook's optimizer builders)
from ref_periodic_evaluator import notebook_run  # noqa: E402  (its schedule and early stopping)


class HFAdamW(torch.optim.Optimizer):
    """transformers.AdamW (transformers 4.x, src/transformers/optimization.py),
    the notebook's optimizer: defaults lr=1e-3, betas (0.9, 0.999), eps=1e-6,
    weight_decay=0.0, correct_bias=True. Its step, verbatim."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.0,
                 correct_bias=True):
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                        correct_bias=correct_bias)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                state = self.state[p]
                if len(state) == 0:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
                beta1, beta2 = group["betas"]
                state["step"] += 1
                exp_avg.mul_(beta1).add_(grad, alpha=(1.0 - beta1))
                exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1.0 - beta2)
                denom = exp_avg_sq.sqrt().add_(group["eps"])
                step_size = group["lr"]
                if group["correct_bias"]:
                    bias_correction1 = 1.0 - beta1 ** state["step"]
                    bias_correction2 = 1.0 - beta2 ** state["step"]
                    step_size = step_size * math.sqrt(bias_correction2) / bias_correction1
                p.addcdiv_(exp_avg, denom, value=-step_size)
                if group["weight_decay"] > 0.0:
                    p.add_(p, alpha=(-group["lr"] * group["weight_decay"]))


class MyModel(nn.Module):
    """The notebook's MyModel (cell 23), its weights from the C++ run's file."""

    def __init__(self, config):
        super().__init__()
        self.roberta_model = RobertaModel(config, add_pooling_layer=True)
        self.regressor = nn.Linear(config.hidden_size, 1)

    def forward(self, input_ids, attention_mask):
        raw_output = self.roberta_model(input_ids, attention_mask, return_dict=True)
        pooler = raw_output["pooler_output"]
        output = self.regressor(pooler)
        return output


def loss_fn(predictions, targets):
    return torch.sqrt(nn.MSELoss()(predictions, targets))


def read_csv_rows(path):
    """The CSV's kept rows, as the example reads them (target 0 and standard_error 0 dropped)."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    return [r for r in rows if not (float(r["target"]) == 0.0 and float(r["standard_error"]) == 0.0)]


def load_model(trace, fold_dir):
    config = RobertaConfig.from_pretrained(trace["model"], attn_implementation="eager")
    if trace["dropout"] is not None:
        config.hidden_dropout_prob = config.attention_probs_dropout_prob = trace["dropout"]
    model = MyModel(config)
    tensors = load_file(str(fold_dir / "initial.safetensors"))
    state = {("roberta_model." + k[len("roberta."):] if k.startswith("roberta.") else k): v
             for k, v in tensors.items()}
    model.load_state_dict(state, strict=True)  # raises on a missing or unexpected tensor
    return model, config


def relative(a, b):
    return abs(a - b) / max(abs(b), 1e-12)


def run_fold(fold_dir, tolerance):
    with open(fold_dir / "trace.json", encoding="utf-8") as f:
        trace = json.load(f)
    if not trace["notebook_exact"]:
        raise SystemExit(f"{fold_dir}: the run was not --notebook-exact")
    torch.manual_seed(0)  # nothing random below (dropout 0, the traced order)
    model, config = load_model(trace, fold_dir)
    num_layers = config.num_hidden_layers

    # --- data: the tokenizer's ids must be the run's ---------------------------------
    rows = read_csv_rows(trace["data"])[::trace["subsample"]]  # --subsample N: every N-th
    tokenizer = RobertaTokenizerFast.from_pretrained(trace["model"])
    enc = tokenizer([r["excerpt"] for r in rows], max_length=trace["max_length"],
                    truncation=True, padding="max_length", return_tensors="pt")
    ids = torch.tensor(trace["input_ids"], dtype=torch.long)
    masks = torch.tensor(trace["attention_mask"], dtype=torch.long)
    if not (torch.equal(enc["input_ids"], ids) and torch.equal(enc["attention_mask"], masks)):
        raise SystemExit(f"{fold_dir}: RobertaTokenizerFast's ids differ from the run's")
    targets = torch.tensor([float(r["target"]) for r in rows], dtype=torch.float64)
    if not torch.equal(targets, torch.tensor(trace["targets"], dtype=torch.float64)):
        raise SystemExit(f"{fold_dir}: the CSV's targets differ from the run's")
    train_rows = torch.tensor(trace["train_rows"], dtype=torch.long)
    val_rows = torch.tensor(trace["val_rows"], dtype=torch.long)
    mean, scale = trace["target_mean"], trace["target_scale"]
    train_ids, train_masks = ids[train_rows], masks[train_rows]
    train_targets = ((targets[train_rows] - mean) / scale).float()
    val_ids, val_masks, val_targets = ids[val_rows], masks[val_rows], targets[val_rows]
    n_train = len(train_rows)
    TRAIN_BS, VAL_BS = trace["batch_size"], trace["val_batch_size"]
    EPOCHS, EARLY_STOP_THRESHOLD = trace["epochs"], trace["patience"]
    n_batches = math.ceil(n_train / TRAIN_BS)  # DataLoader, drop_last=False

    def train_batch(epoch, i):  # DataLoader(shuffle=True) with the run's permutation
        b = torch.tensor(trace["orders"][epoch], dtype=torch.long)[i * TRAIN_BS:(i + 1) * TRAIN_BS]
        return {"ids": train_ids[b], "masks": train_masks[b], "target": train_targets[b]}

    def validate_fn(model):
        # The notebook's validate_fn: mean over batches of 64 of each batch's RMSE;
        # in target units (prediction * std + mean), as the run.
        model.eval()
        val_losses = []
        with torch.no_grad():
            for start in range(0, len(val_rows), VAL_BS):
                outputs = model(val_ids[start:start + VAL_BS],
                                val_masks[start:start + VAL_BS]).squeeze(-1)
                error = outputs.double() * scale + mean - val_targets[start:start + VAL_BS]
                val_losses.append(float(torch.sqrt(torch.mean(error ** 2))))
        return float(np.mean(val_losses))

    # --- run_training (one fold) -------------------------------------------------------
    swa_lr = trace["swa_lr"] * trace["lr_scale"] if trace["swa_lr"] is not None else None
    swa_start = trace["swa_start_epoch"]
    swa_model = AveragedModel(model) if swa_lr is not None else None
    groups, init_lr = BUILDERS[trace["llrd"]](model, num_layers)
    for g in groups:  # --lr-scale
        g["lr"] = g.get("lr", init_lr) * trace["lr_scale"]
    optimizer = HFAdamW(groups, lr=init_lr * trace["lr_scale"])
    train_steps = int(n_train / TRAIN_BS * EPOCHS)
    scheduler = transformers.get_scheduler("linear", optimizer=optimizer,
                                           num_warmup_steps=trace["warmup_steps"],
                                           num_training_steps=train_steps)
    swa_scheduler = (SWALR(optimizer, swa_lr=swa_lr, anneal_epochs=trace["swa_anneal_steps"])
                     if swa_lr is not None else None)
    eval_every = trace["eval_every"]
    frequent_eval = eval_every is not None
    frequent_from = trace["eval_every_from_epoch"]

    losses, evaluations = [], []
    step = 0

    def train_step(batch, swa_step):
        nonlocal step
        model.train()
        optimizer.zero_grad()
        outputs = model(batch["ids"], batch["masks"]).squeeze(-1)
        loss = loss_fn(outputs, batch["target"])
        losses.append(loss.item())
        loss.backward()
        optimizer.step()
        if swa_step:
            swa_model.update_parameters(model)
            swa_scheduler.step()
        else:
            scheduler.step()
        step += 1
        return loss.item()

    def evaluate(epoch, i, swa_step):
        rmse = validate_fn(model)
        swa_rmse = validate_fn(swa_model) if swa_step else None
        evaluations.append({"epoch": epoch, "batch": i, "step": step, "rmse": rmse,
                            "swa_rmse": swa_rmse})
        return rmse

    def swa_epoch(epoch):
        return swa_lr is not None and epoch >= swa_start

    # run_training's loop: train_and_validate from frequent_from on, else
    # train_fn then validate_fn; early stopping after EARLY_STOP_THRESHOLD.
    notebook_run([], EPOCHS, n_batches, eval_every if frequent_eval else 1,
                 frequent_from if frequent_eval else EPOCHS, EARLY_STOP_THRESHOLD,
                 train_step=lambda epoch, i: train_step(train_batch(epoch, i), swa_epoch(epoch)),
                 validate=lambda epoch, i: evaluate(epoch, i, swa_epoch(epoch)))
    if swa_lr is not None:  # no BatchNorm in RoBERTa: returns at once, as in the notebook
        torch.optim.swa_utils.update_bn((train_batch(0, i) for i in range(n_batches)), swa_model)

    # --- compare --------------------------------------------------------------------
    problems = []
    if len(losses) != len(trace["losses"]):
        problems.append(f"{len(losses)} steps here, {len(trace['losses'])} in the run")
    ours = [(e["epoch"], e["batch"], e["step"]) for e in evaluations]
    theirs = [(e["epoch"], e["batch"], e["step"]) for e in trace["evaluations"]]
    if ours != theirs:
        problems.append(f"evaluation points differ: here {ours}, run {theirs}")
    worst_loss = max((relative(c, p) for c, p in zip(trace["losses"], losses)), default=0.0)
    worst_rmse, worst_swa = 0.0, 0.0
    swa_compared = 0
    for c, p in zip(trace["evaluations"], evaluations):
        worst_rmse = max(worst_rmse, relative(c["rmse"], p["rmse"]))
        if (c["swa_rmse"] is None) != (p["swa_rmse"] is None):
            problems.append(f"SWA evaluation at step {p['step']} on one side only")
        elif c["swa_rmse"] is not None:
            worst_swa = max(worst_swa, relative(c["swa_rmse"], p["swa_rmse"]))
            swa_compared += 1
    worst = max(worst_loss, worst_rmse, worst_swa)
    if worst > tolerance:
        problems.append(f"worst relative difference {worst:.3g} > {tolerance:g}")
    return {"trace": str(fold_dir), "steps": len(losses), "evaluations": len(evaluations),
            "swa_evaluations": swa_compared, "worst_loss": worst_loss, "worst_rmse": worst_rmse,
            "worst_swa_rmse": worst_swa, "worst": worst, "problems": problems}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("trace_dirs", nargs="+", type=Path)
    parser.add_argument("--tolerance", type=float, default=1e-4)
    args = parser.parse_args()
    torch.set_num_threads(1)
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    results = []
    for d in args.trace_dirs:
        found = sorted(p.parent for p in d.rglob("trace.json"))
        if not found:
            raise SystemExit(f"{d}: no fold<k>/trace.json below it")
        results.extend(run_fold(f, args.tolerance) for f in found)
    print(json.dumps(results))
    return 1 if any(r["problems"] for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
