#!/usr/bin/env bash
# `make bench`: every C++ benchmark beside the same work in PyTorch at the same
# thread count, for two pairs of the same version on each side:
#   torch2  build/torch2 (LibTorch 2.x of the PyPI wheel) and .venv's torch;
#   torch1  build/torch1 (Debian's LibTorch 1.13, system BLAS) and Debian's
#           python3-torch with transformers 4.40 (.venv-torch1).
#   torch2-avx2  the torch2 pair again with the AVX2 code paths forced
#           (ATEN_CPU_CAPABILITY=avx2 for ATen's kernels, MKL_ENABLE_INSTRUCTIONS=AVX2
#           for MKL's sgemm): an AVX2-only CPU's paths (the project's EPYC
#           machines) on an AVX-512 one. Run only where the CPU has AVX-512.
# The training steps (figures 6, 7, 9) are timed apart, in rounds: each round
# runs every step once on the C++ side, then once on PyTorch's, so that the two
# sides of a ratio are minutes apart at most and a slow spell of the machine
# falls on both (FINETUNE_BENCH_ROUNDS rounds, default 5; report.py pairs them
# round by round). Then one table per pair and bench/results.json.
# FINETUNE_BENCH_PAIRS=torch2 runs the first pair only.
set -euo pipefail
cd "$(dirname "$0")/.."
threads=${FINETUNE_BENCH_THREADS:-$(nproc)}
export FINETUNE_BENCH_THREADS=$threads
rounds=${FINETUNE_BENCH_ROUNDS:-5}
steps=BM_TrainingStep  # the C++ benchmarks timed in rounds
pairs=${FINETUNE_BENCH_PAIRS:-torch2 torch1 torch2-avx2}
grep -qw avx512f /proc/cpuinfo || pairs=${pairs//torch2-avx2/}

run_pair() {  # run_pair FLAVOUR PYTHON [OUT]: C++ and PyTorch JSON into build/bench/OUT
  local flavour=$1 python=$2 label=${3:-$1}
  local out=build/bench/$label
  rm -rf "$out" && mkdir -p "$out"
  for src in bench/bench_*.cpp; do
    local name exe
    name=$(basename "$src" .cpp)
    exe=build/$flavour/bench/$name
    [ "$name" = bench_main ] && continue  # the shared main(), not a benchmark
    [ -x "$exe" ] || { echo "bench: $exe not built" >&2; exit 1; }
    echo "=== $label: $name ($threads threads)"
    "$exe" --benchmark_repetitions=5 --benchmark_report_aggregates_only=true \
      --benchmark_filter="-$steps" \
      --benchmark_out="$out/$name.json" --benchmark_out_format=json
  done
  echo "=== $label: PyTorch ($threads threads)"
  "$python" bench/pytorch_bench.py --threads "$threads" --out "$out/pytorch.json" \
    --figures bandwidth techniques tokenizer dropout
  rm -rf "$out/rounds" && mkdir -p "$out/rounds"
  for ((r = 1; r <= rounds; r++)); do
    echo "=== $label: training steps, round $r of $rounds (C++, then PyTorch)"
    "build/$flavour/bench/bench_roberta_training" --benchmark_filter="$steps" \
      --benchmark_out="$out/rounds/cpp_$r.json" --benchmark_out_format=json
    "$python" bench/pytorch_bench.py --threads "$threads" --figures training \
      --base-repeats 1 --out "$out/rounds/pytorch_$r.json"
  done
}

report=(--cpp build/bench/torch2 --pytorch build/bench/torch2/pytorch.json)
run_pair torch2 .venv/bin/python
if [[ " $pairs " == *" torch1 "* ]]; then
  bash scripts/setup.sh --torch1-python
  bash scripts/build.sh torch1
  run_pair torch1 .venv-torch1/bin/python
  report+=(--cpp-torch1 build/bench/torch1 --pytorch-torch1 build/bench/torch1/pytorch.json)
fi
if [[ " $pairs " == *" torch2-avx2 "* ]]; then
  ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2 run_pair torch2 .venv/bin/python torch2-avx2
  report+=(--cpp-avx2 build/bench/torch2-avx2 --pytorch-avx2 build/bench/torch2-avx2/pytorch.json)
fi
.venv/bin/python bench/report.py "${report[@]}" --out bench/results.json
# The data-parallel step (2 ranks x 1 thread against 1 process x 2 threads).
bash scripts/bench_distributed.sh
