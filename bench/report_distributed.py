#!/usr/bin/env python3
"""The data-parallel table of `make bench` (scripts/bench_distributed.sh).

  report_distributed.py FOLDER --out FILE

Reads FOLDER/<shape>_single_<k>.json, <shape>_ranks2_<k>.json and
<shape>_overlap2_<k>.json (one JSON object each, from
bench/distributed_step.cpp), and prints per shape and 2-rank variant (the
all-reduce after backward, or overlapped with it): the median step time over
the repetitions and its coefficient of variation, the throughput ratio
(2 ranks x 1 thread over 1 process x 2 threads; the goal is >= 0.9), the
bytes all-reduced per step and the exposed communication (from the end of
backward to the reduced gradients). A ratio whose two sides' spreads
(median +- 2 standard deviations) overlap 1.0 is marked "within noise".
"""
import argparse
import json
import platform
import statistics
import subprocess
from pathlib import Path


def cpu_model() -> str:
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("folder")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    folder = Path(args.folder)
    result = {"cpu": cpu_model(), "shapes": {}}
    print(f"\nData-parallel step on {result['cpu']} (medians over repetitions)")
    print(f"{'shape':6} {'1 proc x 2 thr':>16} {'2 ranks x 1 thr':>16} {'ratio':>7} "
          f"{'exposed':>11} {'MB/step':>8}  variant")
    for shape in ("demo", "base"):
        single = [json.loads(p.read_text()) for p in sorted(folder.glob(f"{shape}_single_*.json"))]
        if not single:
            continue
        s = [r["step_s"] for r in single]
        ms, sd_s = statistics.median(s), statistics.pstdev(s)
        cv_s = sd_s / statistics.mean(s)
        for variant, label in (("ranks2", "after backward"), ("overlap2", "overlapped")):
            ranks = [json.loads(p.read_text())
                     for p in sorted(folder.glob(f"{shape}_{variant}_*.json"))]
            if not ranks:
                continue
            d = [r["step_s"] for r in ranks]
            red = statistics.median(r["reduce_s"] for r in ranks)
            md, sd_d = statistics.median(d), statistics.pstdev(d)
            cv_d = sd_d / statistics.mean(d)
            ratio = ms / md  # throughput of 2 ranks over 1 process
            lo = (ms - 2 * sd_s) / (md + 2 * sd_d)
            hi = (ms + 2 * sd_s) / max(md - 2 * sd_d, 1e-12)
            note = "within noise" if lo <= 1.0 <= hi else ""
            mb = ranks[0]["reduced_bytes"] / 1e6
            print(f"{shape:6} {ms * 1e3:11.1f} ms {cv_s:3.0%} {md * 1e3:11.1f} ms {cv_d:3.0%} "
                  f"{ratio:7.2f} {red * 1e3:8.1f} ms {mb:8.1f}  {label} {note}")
            key = shape if variant == "ranks2" else f"{shape}_overlapped"
            result["shapes"][key] = {
                "single_step_s": ms, "single_cv": cv_s, "ranks2_step_s": md, "ranks2_cv": cv_d,
                "throughput_ratio": ratio, "ratio_within_noise": bool(note),
                "allreduce_s": red, "allreduce_fraction_of_step": red / md,
                "reduced_bytes_per_step": ranks[0]["reduced_bytes"],
                "repetitions": len(d),
            }
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
