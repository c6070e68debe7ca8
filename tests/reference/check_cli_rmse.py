#!/usr/bin/env python3
"""Test-time oracle for the RMSE that `roberta_regression train` / `table`
report (tests/test_roberta_cli.cpp):

  check_cli_rmse.py SPEC.json

SPEC.json is a list of jobs {"model": folder with config.json, vocab.json and
merges.txt; "checkpoint": a best.safetensors the run saved; "csv": the data;
"val_rows" and "train_rows": 0-based data rows; "max_length"; "standardize":
true or false}. For each job, transformers' RobertaModel (the folder's
config, eager attention) plus nn.Linear(hidden, 1) on its pooler output (the
article's model) is loaded from the checkpoint (every tensor of the file used,
none missing), RobertaTokenizerFast encodes the excerpts (truncation=True,
padding="max_length"), and the RMSE over val_rows is computed in the target's
units: with standardize, prediction * std + mean, where mean and std (ddof 0)
are those of the train_rows' targets. Prints one JSON list: each job's RMSE
(and n_val, mean, std); exits 1 when a checkpoint does not fit the model.
"""
import csv
import json
import sys

import numpy as np
import torch
from safetensors.torch import load_file
from transformers import RobertaConfig, RobertaModel, RobertaTokenizerFast
from transformers.utils import logging as hf_logging


def rmse(job):
    config = RobertaConfig.from_pretrained(job["model"], attn_implementation="eager")
    model = RobertaModel(config, add_pooling_layer=True)
    regressor = torch.nn.Linear(config.hidden_size, 1)
    tensors = load_file(job["checkpoint"])
    encoder = {k[len("roberta."):]: v for k, v in tensors.items() if k.startswith("roberta.")}
    head = {k[len("regressor."):]: v for k, v in tensors.items() if k.startswith("regressor.")}
    if len(encoder) + len(head) != len(tensors):
        raise SystemExit(f"{job['checkpoint']}: tensors outside roberta.* and regressor.*")
    result = model.load_state_dict(encoder, strict=False)
    if result.unexpected_keys or result.missing_keys:
        raise SystemExit(f"{job['checkpoint']}: unexpected {result.unexpected_keys}, "
                         f"missing {result.missing_keys}")
    regressor.load_state_dict(head, strict=True)
    model.eval()
    regressor.eval()

    with open(job["csv"], encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    targets = np.array([float(r["target"]) for r in rows], dtype=np.float64)
    mean, std = 0.0, 1.0
    if job["standardize"]:
        train = targets[job["train_rows"]]
        mean, std = float(train.mean()), float(train.std())
        if not std > 0:
            std = 1.0
    tokenizer = RobertaTokenizerFast.from_pretrained(job["model"])
    texts = [rows[i]["excerpt"] for i in job["val_rows"]]
    enc = tokenizer(texts, max_length=job["max_length"], truncation=True, padding="max_length",
                    return_tensors="pt")
    with torch.no_grad():
        pooled = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).pooler_output
        prediction = regressor(pooled).squeeze(-1).double().numpy()
    error = prediction * std + mean - targets[job["val_rows"]]
    return {"rmse": float(np.sqrt(np.mean(error ** 2))), "n_val": len(texts), "mean": mean,
            "std": std}


def main() -> int:
    torch.set_num_threads(1)
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    with open(sys.argv[1], encoding="utf-8") as f:
        jobs = json.load(f)
    print(json.dumps([rmse(job) for job in jobs]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
