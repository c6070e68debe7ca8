#!/usr/bin/env python3
"""The PyTorch column of `make bench`: the same work as the C++ benchmarks,
timed in Python with the venv's torch at the same thread count.

Writes JSON {"torch_version", "threads", "results": {name: median seconds}}.
The names are the ones bench/report.py pairs with the C++ benchmarks.
"""
import argparse
import json
import os
import statistics
import time

import torch

N = 125_000_000  # fp32 elements: roberta-base's parameter count


def median_seconds(fn, repeats=7, warmup=1):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_bandwidth(results):
    src = torch.rand(N)
    dst = torch.empty_like(src)
    results["copy"] = median_seconds(lambda: dst.copy_(src))
    other = torch.rand(N)
    results["add"] = median_seconds(lambda: torch.add(src, other, out=dst))


FIGURES = [bench_bandwidth]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results = {}
    for figure in FIGURES:
        figure(results)
    with open(args.out, "w") as f:
        json.dump({"torch_version": torch.__version__, "threads": args.threads,
                   "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
