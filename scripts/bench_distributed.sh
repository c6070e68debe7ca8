#!/usr/bin/env bash
# `make bench`, data-parallel part (issue #19): the example's training step on
# this machine's cores, 2 ranks x 1 thread (torchrun, c10d Gloo on 127.0.0.1)
# against 1 process x 2 threads, at the demo model's and roberta-base's shapes;
# the 2 ranks once reducing after backward (all_reduce_gradients) and once
# overlapped with it (GradientReducer); plus the bytes all-reduced per step and
# the communication that backward does not hide. Writes build/bench/distributed/*.json and
# bench/results_distributed.json, and prints the table.
#   FINETUNE_BENCH_DIST_SHAPES="demo base" (default both)
set -euo pipefail
cd "$(dirname "$0")/.."
exe=${FINETUNE_BENCH_DIST_EXE:-build/torch2/bench/distributed_step}
[ -x "$exe" ] || { echo "bench_distributed: $exe not built" >&2; exit 1; }
out=build/bench/distributed
rm -rf "$out" && mkdir -p "$out"
shapes=${FINETUNE_BENCH_DIST_SHAPES:-demo base}
port() { .venv/bin/python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
for shape in $shapes; do
  if [ "$shape" = demo ]; then steps=20; warmup=3; else steps=3; warmup=1; fi
  for rep in 1 2 3; do  # alternated, so that drift hits both sides alike
    echo "=== distributed step, $shape, repetition $rep: 1 process x 2 threads"
    OMP_NUM_THREADS=2 "$exe" --shape "$shape" --steps $steps --warmup $warmup --threads 2 \
      --json "$out/${shape}_single_$rep.json"
    echo "=== distributed step, $shape, repetition $rep: torchrun, 2 ranks x 1 thread"
    OMP_NUM_THREADS=1 .venv/bin/torchrun --no-python --nproc-per-node 2 --master-addr 127.0.0.1 \
      --master-port "$(port)" "$exe" --shape "$shape" --steps $steps --warmup $warmup --threads 1 \
      --json "$out/${shape}_ranks2_$rep.json"
    echo "=== distributed step, $shape, repetition $rep: torchrun, 2 ranks x 1 thread, overlapped"
    OMP_NUM_THREADS=1 .venv/bin/torchrun --no-python --nproc-per-node 2 --master-addr 127.0.0.1 \
      --master-port "$(port)" "$exe" --shape "$shape" --steps $steps --warmup $warmup --threads 1 \
      --overlap --json "$out/${shape}_overlap2_$rep.json"
  done
done
.venv/bin/python bench/report_distributed.py "$out" --out bench/results_distributed.json
