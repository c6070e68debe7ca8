#!/usr/bin/env python3
"""Merges the C++ benchmarks' Google Benchmark JSON and the PyTorch column into
bench/results.json and prints one Markdown table: for each figure the C++
time, the PyTorch time, their ratio and, where a physical limit applies, the
achieved fraction of it (the measured copy/add bandwidth of this machine).
"""
import argparse
import glob
import json
import os
import platform

GB = 1e9
N = 125_000_000

# (figure, what, C++ benchmark name, PyTorch result name, bytes moved or None)
ROWS = [
    ("1", "copy 125M fp32 (LibTorch copy_)", "BM_TorchCopy/real_time", "copy", 2 * 4 * N),
    ("1", "add 125M fp32 (LibTorch add_out)", "BM_TorchAdd/real_time", "add", 3 * 4 * N),
    ("1", "copy 125M fp32 (plain parallel loop)", "BM_LoopCopy/real_time", None, 2 * 4 * N),
    ("1", "add 125M fp32 (plain parallel loop)", "BM_LoopAdd/real_time", None, 3 * 4 * N),
]

UNIT = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0}


def load_cpp(folder):
    times, context = {}, {}
    for path in sorted(glob.glob(os.path.join(folder, "bench_*.json"))):
        with open(path) as f:
            data = json.load(f)
        context = data.get("context", context)
        for b in data["benchmarks"]:
            if b.get("run_type", "iteration") == "aggregate" and b.get("aggregate_name") != "median":
                continue
            name = b.get("run_name", b["name"])
            times[name] = b["real_time"] * UNIT[b["time_unit"]]
    return times, context


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpp", required=True, help="folder with bench_*.json")
    parser.add_argument("--pytorch", required=True, help="pytorch_bench.py output")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    cpp, context = load_cpp(args.cpp)
    with open(args.pytorch) as f:
        py = json.load(f)

    # The ceiling: the best bandwidth any copy/add kernel reached here.
    ceiling = max((bytes_ / cpp[name] for _, _, name, _, bytes_ in ROWS
                   if bytes_ and name in cpp and name.startswith(("BM_TorchCopy", "BM_TorchAdd",
                                                                  "BM_LoopCopy", "BM_LoopAdd"))),
                  default=None)
    rows = []
    for figure, what, cpp_name, py_name, bytes_ in ROWS:
        c = cpp.get(cpp_name)
        p = py["results"].get(py_name) if py_name else None
        row = {"figure": figure, "what": what, "cpp_s": c, "pytorch_s": p,
               "cpp_over_pytorch": (c / p) if (c and p) else None}
        if bytes_ and c:
            row["cpp_GBps"] = bytes_ / c / GB
            row["fraction_of_ceiling"] = (bytes_ / c) / ceiling if ceiling else None
        rows.append(row)

    result = {
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "cpp_context": context},
        "pytorch": {"version": py["torch_version"], "threads": py["threads"]},
        "ceiling_GBps": ceiling / GB if ceiling else None,
        "rows": rows,
    }
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)

    def fmt(x, spec):
        return format(x, spec) if x is not None else "–"

    print("| fig | what | C++ ms | PyTorch ms | C++/PyTorch | GB/s | of ceiling |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['figure']} | {r['what']} | {fmt(r['cpp_s'] and r['cpp_s'] * 1e3, '.3f')} "
              f"| {fmt(r['pytorch_s'] and r['pytorch_s'] * 1e3, '.3f')} "
              f"| {fmt(r['cpp_over_pytorch'], '.2f')} | {fmt(r.get('cpp_GBps'), '.1f')} "
              f"| {fmt(r.get('fraction_of_ceiling'), '.0%')} |")
    print(f"\nceiling {fmt(result['ceiling_GBps'], '.1f')} GB/s; PyTorch {py['torch_version']}, "
          f"{py['threads']} threads; written {args.out}")


if __name__ == "__main__":
    main()
