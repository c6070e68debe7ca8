#!/usr/bin/env python3
"""Oracle for the example's `pretrain` subcommand (tests/test_roberta_cli.cpp
runs a tiny pretraining with the flags below).

  ref_cli_pretrain.py --out DIR

The learning rate that pretrain_log.csv records at each logged step: the
rate after that many optimizer steps of Hugging Face's
get_linear_schedule_with_warmup (RoBERTa's recipe: linear warm-up over the
warm-up fraction of the steps, then linear decay to 0). The fraction is
chosen so that fraction * steps is a whole number (HF's Trainer rounds it up,
no rounding is needed here). Logged steps: every --log-every steps and the
last one.

Writes DIR/cli_pretrain_cases.json: the flags and the expected (step, lr) rows.
"""
import argparse
import json
from pathlib import Path

import torch
from transformers import get_linear_schedule_with_warmup

FLAGS = {"hidden_size": 16, "layers": 2, "heads": 2, "intermediate_size": 32, "max_length": 16,
         "batch_size": 4, "steps": 5, "lr": 1e-3, "warmup_fraction": 0.4, "weight_decay": 0.01,
         "mask_probability": 0.2, "seed": 11, "log_every": 2}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    steps, fraction = FLAGS["steps"], FLAGS["warmup_fraction"]
    warmup = round(fraction * steps)
    assert abs(fraction * steps - warmup) < 1e-12
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.AdamW([parameter], lr=FLAGS["lr"], betas=(0.9, 0.98), eps=1e-6,
                                  weight_decay=FLAGS["weight_decay"])
    scheduler = get_linear_schedule_with_warmup(optimizer, warmup, steps)
    log = []
    for step in range(1, steps + 1):
        optimizer.step()
        scheduler.step()
        if step % FLAGS["log_every"] == 0 or step == steps:
            log.append({"step": step, "lr": optimizer.param_groups[0]["lr"]})
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "cli_pretrain_cases.json", "w", encoding="utf-8", newline="\n") as f:
        json.dump({"flags": FLAGS, "warmup_steps": warmup, "log": log}, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
