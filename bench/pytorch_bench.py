#!/usr/bin/env python3
"""The PyTorch column of `make bench`: the same work as the C++ benchmarks,
timed in Python with the venv's torch at the same thread count.

Writes JSON {"torch_version", "threads", "results": {name: median seconds},
"cv": {name: coefficient of variation over the repetitions, or null}}.
The names are the ones bench/report.py pairs with the C++ benchmarks.
--figures runs some figures only: scripts/bench.sh runs the training steps
apart, in rounds that alternate with the C++ ones (--base-repeats 1).
"""
import argparse
import json
import os

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # one thread, like the C++ figure
import statistics
import time
import warnings

import sys
import timeit
from pathlib import Path

import torch
from torch.optim.swa_utils import AveragedModel
from transformers import RobertaConfig, RobertaModel, get_linear_schedule_with_warmup

# The notebook's own group builder, as the oracle script keeps it.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "reference"))
from ref_lr_schedule import roberta_base_AdamW_LLRD  # noqa: E402

N = 125_000_000  # fp32 elements: roberta-base's parameter count


# Each figure's coefficient of variation over its repetitions, by the name
# its median is stored under (the "cv" key of the output).
SPREAD = {}


def median_seconds(fn, repeats=7, warmup=1):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    median_seconds.last_cv = statistics.pstdev(times) / statistics.mean(times)
    return statistics.median(times)


class Results(dict):
    """A dict that records, with each median set, the cv of the run that made it."""

    def __setitem__(self, name, value):
        SPREAD[name] = getattr(median_seconds, "last_cv", None)
        median_seconds.last_cv = None
        super().__setitem__(name, value)


def bench_bandwidth(results):
    src = torch.rand(N)
    dst = torch.empty_like(src)
    results["copy"] = median_seconds(lambda: dst.copy_(src))
    other = torch.rand(N)
    results["add"] = median_seconds(lambda: torch.add(src, other, out=dst))
    results["add_inplace"] = median_seconds(lambda: dst.add_(other))


class RobertaRegressor(torch.nn.Module):
    """roberta-base's shapes (RobertaModel) plus the article's regressor: 201 tensors."""

    def __init__(self):
        super().__init__()
        config = RobertaConfig(max_position_embeddings=514, type_vocab_size=1)
        self.roberta_model = RobertaModel(config)
        self.regressor = torch.nn.Linear(config.hidden_size, 1)


def per_call_seconds(fn, calls):
    times = timeit.repeat(fn, number=calls, repeat=5)
    median_seconds.last_cv = statistics.pstdev(times) / statistics.mean(times)
    return min(times) / calls


def bench_techniques(results):
    model = RobertaRegressor()
    averaged = AveragedModel(model)
    averaged.update_parameters(model)  # the first update copies; the rest average
    results["swa_update"] = median_seconds(lambda: averaged.update_parameters(model))
    # The same fused single pass (in place, p and avg read once) PyTorch offers
    # (from 2.0; the Debian 1.13 pair has no such row).
    if hasattr(torch, "_foreach_lerp_"):
        params = [p.detach() for p in model.parameters()]
        avgs = [p.clone() for p in params]
        results["swa_foreach_lerp"] = median_seconds(
            lambda: torch._foreach_lerp_(avgs, params, 0.1))

    # Figure 10: one AdamW step over the same parameters, PyTorch's default on
    # CPU (the single-tensor loop) and fused=True (from 2.4).
    for p in model.parameters():
        p.grad = torch.randn_like(p) * 1e-3
    for name, kwargs in (("adamw_step", {"foreach": False}), ("adamw_fused_step", {"fused": True})):
        try:
            optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, weight_decay=0.01, **kwargs)
            optimizer.step()
        except (RuntimeError, TypeError):  # no fused CPU kernel before 2.4
            continue
        results[name] = median_seconds(optimizer.step)
        del optimizer

    groups = [{"params": [torch.zeros(1, requires_grad=True)], "lr": 1e-5 * (g + 1)}
              for g in range(200)]
    optimizer = torch.optim.AdamW(groups, lr=1e-5)
    schedule = get_linear_schedule_with_warmup(optimizer, 50, 1 << 30)
    with warnings.catch_warnings():  # the "step before optimizer.step()" warning
        warnings.simplefilter("ignore")
        results["schedule_step_200_groups"] = per_call_seconds(schedule.step, 2000)

    results["build_llrd_groups"] = per_call_seconds(lambda: roberta_base_AdamW_LLRD(model), 20)


def bench_tokenizer(results):
    from transformers import RobertaTokenizerFast
    root = Path(__file__).resolve().parent.parent
    with open(root / "tests" / "reference" / "roberta_tokenizer_texts.json") as f:
        texts = [e["text"] for e in json.load(f) if "text" in e and len(e["text"].encode()) >= 80]
    tokenizer = RobertaTokenizerFast.from_pretrained(
        str(root / "examples" / "roberta_regression" / "assets" / "roberta-bpe"))
    backend = tokenizer.backend_tokenizer
    results["tokenizer_encode"] = median_seconds(
        lambda: backend.encode_batch(texts, add_special_tokens=False), repeats=15)


class Regressor(torch.nn.Module):
    """The article's model (RobertaModel, then Linear on the pooler output)."""

    def __init__(self, config):
        super().__init__()
        self.roberta_model = RobertaModel(config)
        self.regressor = torch.nn.Linear(config.hidden_size, 1)

    def forward(self, ids, mask):
        return self.regressor(self.roberta_model(ids, mask).pooler_output).squeeze(-1)


# The same shapes as bench_roberta_training.cpp: the demo model at batch
# 16 x 96, roberta-base at batch 8 x 256.
TRAINING_SHAPES = {
    "demo": (dict(vocab_size=8192, hidden_size=128, num_hidden_layers=4, num_attention_heads=4,
                  intermediate_size=512, max_position_embeddings=130, type_vocab_size=1), 16, 96),
    "base": (dict(max_position_embeddings=514, type_vocab_size=1), 8, 256),
}


def bench_training(results, base_repeats=5):
    for name, (config, batch, tokens) in TRAINING_SHAPES.items():
        for full in (False, True):
            torch.manual_seed(0)
            config_obj = RobertaConfig(**config)
            model = Regressor(config_obj).train()
            ids = torch.randint(5, config_obj.vocab_size, (batch, tokens))
            mask = torch.ones(batch, tokens, dtype=torch.long)
            target = torch.randn(batch)
            if full:  # the notebook's layer-wise groups, its schedule, AveragedModel
                groups, lr = roberta_base_AdamW_LLRD(model, config_obj.num_hidden_layers)
                optimizer = torch.optim.AdamW(groups, lr=lr)
                schedule = get_linear_schedule_with_warmup(optimizer, 50, 1 << 30)
                averaged = AveragedModel(model)
                averaged.update_parameters(model)
            else:
                optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)

            def step():
                loss = torch.sqrt(torch.nn.functional.mse_loss(model(ids, mask), target))
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                if full:
                    schedule.step()
                    averaged.update_parameters(model)

            repeats = base_repeats if name == "base" else 15
            kind = "full" if full else "plain"
            results[f"training_step_{kind}_{name}"] = median_seconds(step, repeats=repeats)

            if not full:  # figure 9: the same plain step with the forward in bf16
                def step_bf16():
                    with torch.autocast("cpu", dtype=torch.bfloat16):
                        prediction = model(ids, mask)
                    loss = torch.sqrt(torch.nn.functional.mse_loss(prediction.float(), target))
                    optimizer.zero_grad()
                    loss.backward()
                    optimizer.step()

                results[f"training_step_plain_bf16_{name}"] = median_seconds(step_bf16,
                                                                             repeats=repeats)


def bench_dropout(results):
    """Figure 11: dropout over one attention-probability tensor of roberta-base."""
    torch.manual_seed(0)
    x = torch.rand(8, 12, 256, 256)
    results["dropout_attention"] = median_seconds(
        lambda: torch.nn.functional.dropout(x, 0.1, training=True))


FIGURES = {"bandwidth": bench_bandwidth, "techniques": bench_techniques,
           "tokenizer": bench_tokenizer, "dropout": bench_dropout, "training": bench_training}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--figures", nargs="+", choices=list(FIGURES), default=list(FIGURES),
                        help="which figures to run (default: all)")
    parser.add_argument("--base-repeats", type=int, default=5,
                        help="timed roberta-base training steps per figure (one round of "
                             "make bench's interleaved rounds takes 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results = Results()
    for name in args.figures:
        if name == "training":
            bench_training(results, args.base_repeats)
        else:
            FIGURES[name](results)
    with open(args.out, "w") as f:
        json.dump({"torch_version": torch.__version__, "threads": args.threads,
                   "results": dict(results), "cv": SPREAD}, f, indent=1)


if __name__ == "__main__":
    main()
