#!/usr/bin/env python3
"""Merges the C++ benchmarks' Google Benchmark JSON and the PyTorch column into
bench/results.json and prints one Markdown table: for each figure the C++
time, the PyTorch time, their ratio, the C++ throughput (the bytes each
benchmark declares it moves) and, for memory-bound figures, the achieved
fraction of this machine's ceiling (the best copy/add bandwidth of figure 1).
With --cpp-torch1/--pytorch-torch1 also the Debian pair (LibTorch and PyTorch
1.13), under the key "torch1" and in a second table; with
--cpp-avx2/--pytorch-avx2 the 2.x pair run with the AVX2 code paths forced
(an AVX2-only CPU's paths on an AVX-512 one), under "torch2_avx2".

Noise: every figure's coefficient of variation over its repetitions (C++:
Google Benchmark's 5 repetitions; PyTorch: pytorch_bench.py's), and a ratio
whose two sides' spreads (median +- 2 standard deviations) overlap is marked
"~" (within noise): neither a win nor a loss.

The training steps (figures 6, 7, 9) come in rounds instead (the folder's
rounds/cpp_R.json and rounds/pytorch_R.json, scripts/bench.sh): each side's
time is the median over the rounds, its cv the spread over the rounds, and the
ratio is paired: the median of the rounds' own ratios, "~" when that ratio's
median +- 2 standard deviations (over the rounds) reaches 1.

Compute ceiling (figure 8): the best fp32 matrix-product rate of the same run
(BM_MatmulPeak: at::mm, and BM_MatmulPeakOneDnn: oneDNN's linear, but not
in the forced pair, whose oneDNN is not forced; 2048² and 4096²), each training step's matrix-product FLOPs
from the model's shapes (the benchmark's flop_per_step counter), and the
fraction of the ceiling the step reaches, C++ and PyTorch.

bf16 (figure 9): the plain step under CPU autocast in bf16 beside
torch.autocast's, its time over the fp32 plain step's (C++ and PyTorch), and
its FLOP/s against the best bf16 matrix-product rate (BM_MatmulPeakBf16).
"""
import argparse
import glob
import json
import os
import platform
import statistics

# (figure, what, C++ benchmark name, PyTorch result name or None, memory-bound)
ROWS = [
    ("1", "copy 125M fp32 (LibTorch copy_)", "BM_TorchCopy/real_time", "copy", True),
    ("1", "add 125M fp32 (LibTorch add_out)", "BM_TorchAdd/real_time", "add", True),
    ("1", "in-place add 125M fp32 (LibTorch add_)", "BM_TorchAddInplace/real_time",
     "add_inplace", True),
    ("1", "copy 125M fp32 (plain loop)", "BM_LoopCopy/real_time", None, True),
    ("1", "add 125M fp32 (plain loop)", "BM_LoopAdd/real_time", None, True),
    ("2", "SWAWrapper::update, roberta-base (vs AveragedModel.update_parameters)",
     "BM_SWAUpdate/real_time", "swa_update", True),
    ("2", "fused single pass, the floor (vs torch._foreach_lerp_)",
     "BM_SWAFusedSinglePass/real_time", "swa_foreach_lerp", True),
    ("3", "schedule step, 200 groups (vs HF linear LambdaLR)",
     "BM_ScheduleStep200Groups", "schedule_step_200_groups", False),
    ("4", "build LLRD groups, roberta-base (vs the notebook's builder)",
     "BM_BuildLLRDGroupsRobertaBase", "build_llrd_groups", False),
    ("10", "AdamW step, roberta-base (torch::optim::AdamW vs torch.optim.AdamW)",
     "BM_AdamWStep/0/real_time", "adamw_step", True),
    ("10", "AdamW step, roberta-base (finetune::FusedAdamW vs AdamW(fused=True))",
     "BM_AdamWStep/1/real_time", "adamw_fused_step", True),
    ("11", "dropout p=0.1 over [8,12,256,256] (vs torch.nn.functional.dropout)",
     "BM_DropoutAttention/real_time", "dropout_attention", False),
    ("5", "tokenizer encode, warm cache (vs HF tokenizers, 1 thread)",
     "BM_TokenizerEncodeCached", "tokenizer_encode", False),
    ("5", "tokenizer encode, no cache", "BM_TokenizerEncodeNoCache", None, False),
    ("6", "training step, demo model 16x96 (vs transformers + AveragedModel)",
     "BM_TrainingStepFull/0/real_time", "training_step_full_demo", False),
    ("6", "training step, roberta-base 8x256 (vs transformers + AveragedModel)",
     "BM_TrainingStepFull/1/real_time", "training_step_full_base", False),
    ("7", "plain step (one AdamW group), demo model", "BM_TrainingStepPlain/0/real_time",
     "training_step_plain_demo", False),
    ("7", "plain step (one AdamW group), roberta-base", "BM_TrainingStepPlain/1/real_time",
     "training_step_plain_base", False),
    ("9", "plain step in bf16 (CPU autocast), demo model (vs torch.autocast)",
     "BM_TrainingStepPlainBf16/0/real_time", "training_step_plain_bf16_demo", False),
    ("9", "plain step in bf16 (CPU autocast), roberta-base (vs torch.autocast)",
     "BM_TrainingStepPlainBf16/1/real_time", "training_step_plain_bf16_base", False),
    ("7", "techniques alone per step (schedule, SWA update, evaluator hook), demo model",
     "BM_TechniquesPerStep/0/real_time", None, False),
    ("7", "techniques alone per step, roberta-base", "BM_TechniquesPerStep/1/real_time", None,
     False),
]
CEILING_ROWS = ("BM_TorchCopy/real_time", "BM_TorchAdd/real_time",
                "BM_TorchAddInplace/real_time",
                "BM_LoopCopy/real_time", "BM_LoopAdd/real_time")
UNIT = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0}


COUNTERS = ("flop_per_s", "flop_per_step")


def real_seconds(benchmark):
    """A Google Benchmark JSON entry's real time, in seconds."""
    return benchmark["real_time"] * UNIT[benchmark["time_unit"]]


def load_cpp(folder):
    """{run name: (median seconds, bytes per second or None)}, the context, and
    {run name: {"cv": ..., counter: median value}}."""
    results, context, extra = {}, {}, {}
    stats = {}
    for path in sorted(glob.glob(os.path.join(folder, "bench_*.json"))):
        with open(path) as f:
            data = json.load(f)
        context.update(data.get("context", {}))
        for b in data["benchmarks"]:
            name = b.get("run_name", b["name"])
            kind = b.get("aggregate_name") if b.get("run_type") == "aggregate" else "median"
            if kind in ("mean", "stddev"):
                stats.setdefault(name, {})[kind] = real_seconds(b)
            if kind != "median":
                continue
            results[name] = (real_seconds(b), b.get("bytes_per_second"))
            extra.setdefault(name, {}).update({c: b[c] for c in COUNTERS if c in b})
    for name, st in stats.items():
        if "mean" in st and "stddev" in st and st["mean"] > 0:
            extra.setdefault(name, {})["cv"] = st["stddev"] / st["mean"]
    return results, context, extra


def load_rounds(folder):
    """[({C++ run name: (seconds, counters)}, {PyTorch name: seconds})], one per
    round of folder/rounds, in round order; [] when the steps ran without rounds."""
    rounds = []
    for r in range(1, 1 + len(glob.glob(os.path.join(folder, "rounds", "cpp_*.json")))):
        with open(os.path.join(folder, "rounds", f"cpp_{r}.json")) as f:
            cpp = {b.get("run_name", b["name"]):
                   (real_seconds(b), {c: b[c] for c in COUNTERS if c in b})
                   for b in json.load(f)["benchmarks"] if b.get("run_type") != "aggregate"}
        with open(os.path.join(folder, "rounds", f"pytorch_{r}.json")) as f:
            rounds.append((cpp, json.load(f)["results"]))
    return rounds


def cv_of(xs):
    """Population standard deviation over mean, as pytorch_bench.py's (None for
    fewer than two values)."""
    return statistics.pstdev(xs) / statistics.mean(xs) if len(xs) >= 2 else None


def overlapping(a, cv_a, b, cv_b):
    """Whether median +- 2 sd of both sides overlap (None when a spread is unknown)."""
    if None in (a, cv_a, b, cv_b):
        return None
    return a - 2 * cv_a * a <= b + 2 * cv_b * b and b - 2 * cv_b * b <= a + 2 * cv_a * a


def throughput(bps):
    if bps is None:
        return "–"
    return f"{bps / 1e9:.1f} GB/s" if bps >= 1e9 else f"{bps / 1e6:.1f} MB/s"


def seconds(s):
    if s is None:
        return "–"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if s >= scale:
            return f"{s / scale:.3g} {unit}"
    return f"{s * 1e9:.3g} ns"


def cpu_model():
    """lscpu's model name and the vector flags that choose the code paths."""
    model, flags = platform.processor() or platform.machine(), []
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name":
                    model = value.strip()
                elif key.strip() == "flags":
                    flags = [x for x in value.split()
                             if x in ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_fp16",
                                      "amx_bf16")]
                    break
    except OSError:
        pass
    return model, flags


def pair(cpp_folder, pytorch_json, forced=False):
    """One C++ / PyTorch pair (same LibTorch version): the rows and the goals' ratios."""
    cpp, context, extra = load_cpp(cpp_folder)
    with open(pytorch_json) as f:
        py = json.load(f)
    py_cv = py.get("cv", {})

    # The rounds' medians stand in for the steps' figures, and the rows they
    # pair get the rounds' own ratios.
    rounds = load_rounds(cpp_folder)
    paired = {}  # C++ name: [C++ / PyTorch, round by round]
    for _, _, cpp_name, py_name, _ in ROWS:
        times = [c[cpp_name] for c, _ in rounds if cpp_name in c]
        if not times:
            continue
        cpp[cpp_name] = (statistics.median([t for t, _ in times]), None)
        extra[cpp_name] = dict(times[0][1], cv=cv_of([t for t, _ in times]))
        py_times = [p[py_name] for _, p in rounds if py_name in p]
        if py_times:
            py["results"][py_name] = statistics.median(py_times)
            py_cv[py_name] = cv_of(py_times)
            paired[cpp_name] = [c[cpp_name][0] / p[py_name] for c, p in rounds
                                if cpp_name in c and py_name in p]

    ceiling = max((cpp[n][1] for n in CEILING_ROWS if n in cpp and cpp[n][1]), default=None)
    rows = []
    for figure, what, cpp_name, py_name, memory_bound in ROWS:
        c, bps = cpp.get(cpp_name, (None, None))
        p = py["results"].get(py_name) if py_name else None
        c_cv = extra.get(cpp_name, {}).get("cv")
        p_cv = py_cv.get(py_name) if py_name else None
        ratio_of_rounds = paired.get(cpp_name)
        if ratio_of_rounds:
            rel = statistics.median(ratio_of_rounds)
            spread = cv_of(ratio_of_rounds)
            within = None if spread is None else abs(rel - 1) <= 2 * spread * rel
        else:
            rel = c / p if (c and p) else None
            within = overlapping(c, c_cv, p, p_cv) if (c and p) else None
        rows.append({
            "figure": figure, "what": what, "cpp_s": c, "pytorch_s": p,
            "cpp_cv": c_cv, "pytorch_cv": p_cv,
            "cpp_over_pytorch": rel,
            "ratio_within_noise": within,
            "cpp_bytes_per_s": bps,
            "fraction_of_ceiling": bps / ceiling if (memory_bound and bps and ceiling) else None,
        })
        if ratio_of_rounds:
            rows[-1]["ratio_by_round"] = ratio_of_rounds

    # Figure 8: the compute ceiling and each training step's share of it.
    # The fp32 ceiling is the better of at::mm (the build's BLAS) and oneDNN's
    # linear (on an AMD CPU with AVX-512, MKL runs its AVX2 kernels). Not
    # oneDNN's in a forced pair: its instruction set is not forced (see
    # docs/performance.md), so its rate there is not the emulated CPU's.
    libraries = [("at::mm", "BM_MatmulPeak/")]
    if not forced:
        libraries.append(("oneDNN linear", "BM_MatmulPeakOneDnn/"))
    peaks = {library: max((v["flop_per_s"] for n, v in extra.items()
                           if n.startswith(prefix) and v.get("flop_per_s")), default=None)
             for library, prefix in libraries}
    peak = max((v for v in peaks.values() if v), default=None)
    peak_bf16 = max((v["flop_per_s"] for n, v in extra.items()
                     if n.startswith("BM_MatmulPeakBf16/") and "flop_per_s" in v), default=None)
    compute = []
    for what, cpp_name, py_name in (
            ("full step, demo 16x96", "BM_TrainingStepFull/0/real_time", "training_step_full_demo"),
            ("full step, roberta-base 8x256", "BM_TrainingStepFull/1/real_time",
             "training_step_full_base"),
            ("plain step, demo 16x96", "BM_TrainingStepPlain/0/real_time",
             "training_step_plain_demo"),
            ("plain step, roberta-base 8x256", "BM_TrainingStepPlain/1/real_time",
             "training_step_plain_base")):
        flop = extra.get(cpp_name, {}).get("flop_per_step")
        c = cpp.get(cpp_name, (None, None))[0]
        p = py["results"].get(py_name)
        if not flop:
            continue
        compute.append({
            "what": what, "flop_per_step": flop, "floor_s": flop / peak if peak else None,
            "cpp_flop_per_s": flop / c if c else None, "pytorch_flop_per_s": flop / p if p else None,
            "cpp_of_peak": flop / c / peak if (c and peak) else None,
            "pytorch_of_peak": flop / p / peak if (p and peak) else None,
        })

    def ratio(a, b):
        return cpp[a][0] / cpp[b][0] if a in cpp and b in cpp else None

    # Figure 9: bf16 against fp32 (time ratio: < 1 means bf16 is faster) and
    # against the bf16 matrix-product peak.
    bf16 = []
    for arg, shape in ((0, "demo"), (1, "base")):
        name = f"BM_TrainingStepPlainBf16/{arg}/real_time"
        c = cpp.get(name, (None, None))[0]
        flop = extra.get(name, {}).get("flop_per_step")
        p = py["results"].get(f"training_step_plain_bf16_{shape}")
        p32 = py["results"].get(f"training_step_plain_{shape}")
        if c is None and p is None:
            continue
        bf16.append({
            "shape": shape,
            "cpp_bf16_over_fp32": ratio(name, f"BM_TrainingStepPlain/{arg}/real_time"),
            "pytorch_bf16_over_fp32": p / p32 if (p and p32) else None,
            "cpp_flop_per_s": flop / c if (c and flop) else None,
            "cpp_of_bf16_peak": flop / c / peak_bf16 if (c and flop and peak_bf16) else None,
            "pytorch_of_bf16_peak": flop / p / peak_bf16 if (p and flop and peak_bf16) else None,
        })

    model, flags = cpu_model()
    return {
        "machine": {"cpu": model, "cpu_flags": flags,
                    "cores": os.cpu_count(), "cpp_context": context,
                    "forced": {}},  # the code-path variables a pair ran under
        "pytorch": {"version": py["torch_version"], "threads": py["threads"]},
        "ceiling_bytes_per_s": ceiling,
        "matmul_peak_flop_per_s": peak,
        "matmul_peak_by_library": peaks,
        "matmul_peak_bf16_flop_per_s": peak_bf16,
        "compute": compute,
        "bf16": bf16,
        # Figure 2's goal is relative to the fused single pass of the same run.
        "swa_update_over_fused_pass": ratio("BM_SWAUpdate/real_time",
                                            "BM_SWAFusedSinglePass/real_time"),
        "rows": rows,
        # Figure 7: the techniques' per-step calls as a share of a plain step,
        # and the full step's excess over the plain one (noisier: a difference).
        "techniques_share_of_step": {
            shape: {"alone": ratio(f"BM_TechniquesPerStep/{arg}/real_time",
                                   f"BM_TrainingStepPlain/{arg}/real_time"),
                    "full_over_plain": ratio(f"BM_TrainingStepFull/{arg}/real_time",
                                             f"BM_TrainingStepPlain/{arg}/real_time")}
            for arg, shape in ((0, "demo"), (1, "roberta-base"))},
    }


def print_table(result):
    def cv(x):
        return f" ±{x:.0%}" if x is not None else ""

    print("| fig | what | C++ (cv) | PyTorch (cv) | C++/PyTorch | C++ throughput | of ceiling |")
    print("|---|---|---|---|---|---|---|")
    for r in result["rows"]:
        if r["cpp_s"] is None and r["pytorch_s"] is None:
            continue
        rel = f"{r['cpp_over_pytorch']:.2f}" if r["cpp_over_pytorch"] else "–"
        if r["ratio_within_noise"]:
            rel += " ~"
        frac = f"{r['fraction_of_ceiling']:.0%}" if r["fraction_of_ceiling"] else "–"
        print(f"| {r['figure']} | {r['what']} | {seconds(r['cpp_s'])}{cv(r['cpp_cv'])} "
              f"| {seconds(r['pytorch_s'])}{cv(r['pytorch_cv'])} "
              f"| {rel} | {throughput(r['cpp_bytes_per_s'])} | {frac} |")
    print("(cv: coefficient of variation over the repetitions; ~: the two sides' "
          "median ± 2 sd overlap, within noise)")
    dense = result["machine"]["cpp_context"].get("dense_backend")
    if dense:
        print(f"(C++ side: the model's fp32 linear layers by {dense}; model/dense.hpp)")
    by_round = [r for r in result["rows"] if r.get("ratio_by_round")]
    if by_round:
        print(f"Training steps: {len(by_round[0]['ratio_by_round'])} interleaved rounds; "
              "C++/PyTorch is the median of the rounds' ratios, ~ when its median ± 2 sd "
              "reaches 1. By round:")
        for r in by_round:
            print(f"- {r['what']}: " + ", ".join(f"{x:.2f}" for x in r["ratio_by_round"]))
    peak = result.get("matmul_peak_flop_per_s")
    if peak and result.get("compute"):
        by = ", ".join(f"{lib} {v / 1e9:.0f}" for lib, v in
                       result.get("matmul_peak_by_library", {}).items() if v)
        print(f"\nFigure 8, compute ceiling: fp32 matmul peak {peak / 1e9:.0f} GFLOP/s "
              f"(this run; {by})")
        print("| step | GFLOP per step | floor at peak | C++ GFLOP/s | of peak | PyTorch GFLOP/s | of peak |")
        print("|---|---|---|---|---|---|---|")
        for c in result["compute"]:
            def g(x):
                return f"{x / 1e9:.0f}" if x else "–"

            def f(x):
                return f"{x:.0%}" if x else "–"
            print(f"| {c['what']} | {c['flop_per_step'] / 1e9:.1f} | {seconds(c['floor_s'])} "
                  f"| {g(c['cpp_flop_per_s'])} | {f(c['cpp_of_peak'])} "
                  f"| {g(c['pytorch_flop_per_s'])} | {f(c['pytorch_of_peak'])} |")
    peak_bf16 = result.get("matmul_peak_bf16_flop_per_s")
    if result.get("bf16"):
        print("\nFigure 9, bf16 (CPU autocast): bf16 matmul peak "
              + (f"{peak_bf16 / 1e9:.0f} GFLOP/s" if peak_bf16 else "not measured"))
        print("| plain step | C++ bf16/fp32 time | PyTorch bf16/fp32 time | C++ GFLOP/s "
              "| of bf16 peak | PyTorch of bf16 peak |")
        print("|---|---|---|---|---|---|")

        def r(x, fmt):
            return format(x, fmt) if x is not None else "–"
        for b in result["bf16"]:
            print(f"| {b['shape']} | {r(b['cpp_bf16_over_fp32'], '.2f')} "
                  f"| {r(b['pytorch_bf16_over_fp32'], '.2f')} "
                  f"| {r(b['cpp_flop_per_s'] and b['cpp_flop_per_s'] / 1e9, '.0f')} "
                  f"| {r(b['cpp_of_bf16_peak'], '.0%')} | {r(b['pytorch_of_bf16_peak'], '.0%')} |")
    s = result["swa_update_over_fused_pass"]
    if s:
        print(f"\nSWAWrapper::update / fused single pass: {s:.2f}")
    for shape, share in result["techniques_share_of_step"].items():
        if share["alone"] is not None:
            print(f"figure 7, {shape}: techniques alone {share['alone']:.2%} of a plain step; "
                  f"full step / plain step {share['full_over_plain']:.3f}")
    py = result["pytorch"]
    print(f"ceiling {throughput(result['ceiling_bytes_per_s'])}; "
          f"PyTorch {py['version']}, {py['threads']} threads")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpp", required=True, help="folder with bench_*.json (LibTorch 2.x)")
    parser.add_argument("--pytorch", required=True, help="pytorch_bench.py output (torch 2.x)")
    parser.add_argument("--cpp-torch1", help="folder with bench_*.json (Debian's LibTorch 1.13)")
    parser.add_argument("--pytorch-torch1", help="pytorch_bench.py output (Debian's torch 1.13)")
    parser.add_argument("--cpp-avx2", help="folder with bench_*.json (2.x, AVX2 paths forced)")
    parser.add_argument("--pytorch-avx2", help="pytorch_bench.py output (2.x, AVX2 paths forced)")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    result = pair(args.cpp, args.pytorch)
    model, flags = cpu_model()
    print(f"CPU: {model} ({' '.join(flags)}), {os.cpu_count()} cores\n")
    print_table(result)
    if args.cpp_torch1 and args.pytorch_torch1:
        result["torch1"] = pair(args.cpp_torch1, args.pytorch_torch1)
        print("\nThe Debian pair (LibTorch 1.13 with the system BLAS):\n")
        print_table(result["torch1"])
    if args.cpp_avx2 and args.pytorch_avx2:
        result["torch2_avx2"] = pair(args.cpp_avx2, args.pytorch_avx2, forced=True)
        result["torch2_avx2"]["machine"]["forced"] = {
            "ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}
        print("\nThe 2.x pair with the AVX2 code paths forced (ATEN_CPU_CAPABILITY=avx2, "
              "MKL_ENABLE_INSTRUCTIONS=AVX2: an AVX2-only CPU's kernels):\n")
        print_table(result["torch2_avx2"])
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
