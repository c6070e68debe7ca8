#!/usr/bin/env bash
# `make bench`: every C++ benchmark (build/torch2), the same work in PyTorch
# with the venv's torch at the same thread count, then one table and
# bench/results.json.
set -euo pipefail
cd "$(dirname "$0")/.."
threads=${FINETUNE_BENCH_THREADS:-$(nproc)}
export FINETUNE_BENCH_THREADS=$threads
out=build/bench
rm -rf "$out" && mkdir -p "$out"
for src in bench/bench_*.cpp; do
  name=$(basename "$src" .cpp)
  exe=build/torch2/bench/$name
  [ "$name" = bench_main ] && continue  # the shared main(), not a benchmark
  [ -x "$exe" ] || { echo "bench: $exe not built" >&2; exit 1; }
  echo "=== $name ($threads threads)"
  "$exe" --benchmark_repetitions=5 --benchmark_report_aggregates_only=true \
    --benchmark_out="$out/$name.json" --benchmark_out_format=json
done
echo "=== PyTorch ($threads threads)"
.venv/bin/python bench/pytorch_bench.py --threads "$threads" --out "$out/pytorch.json"
.venv/bin/python bench/report.py --cpp "$out" --pytorch "$out/pytorch.json" --out bench/results.json
