#!/usr/bin/env bash
# Runs every libFuzzer target (tests/fuzz/, docs/fuzzing.md) for a budget:
#   scripts/fuzz.sh [SECONDS]        each target SECONDS (default 10) from its
#                                    committed corpus; `make test` runs 10 s,
#                                    `make fuzz` FUZZ_SECONDS (default 120)
#   scripts/fuzz.sh --runs N [NAME]  N executions of each target (or of NAME),
#                                    as recorded in docs/fuzzing.md
# Builds build/fuzz with clang++-14 (Debian's clang-14 and libclang-rt-14-dev,
# which scripts/setup.sh installs) against Debian's LibTorch 1.13. New inputs
# go to build/fuzz/corpus/<input>/, never into the committed corpus; a crash
# or a failed FUZZ_CHECK leaves its input in build/fuzz/artifacts/ and fails.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=build/fuzz
inputs=($(cd tests/fuzz && ls fuzz_*.cpp | sed 's/^fuzz_//; s/\.cpp$//'))  # one per tests/fuzz/fuzz_<input>.cpp
limit=(-max_total_time="${1:-10}")
if [ "${1:-}" = --runs ]; then
  limit=(-runs="${2:?--runs N}")
  [ -n "${3:-}" ] && inputs=("$3")
fi
cxx=$(command -v clang++-14 || true)
if [ -z "$cxx" ]; then
  echo "fuzz: clang++-14 not found (scripts/setup.sh installs clang-14 and libclang-rt-14-dev)" >&2
  exit 1
fi
if [ ! -f "$dir/CMakeCache.txt" ]; then
  torch_dir=$(dirname "$(dpkg -L libtorch-dev | grep '/cmake/Torch/TorchConfig.cmake$' | head -n1)")
  mkdir -p build
  cmake -S . -B "$dir" -DCMAKE_CXX_COMPILER="$cxx" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DFINETUNE_BUILD_FUZZERS=ON -DFINETUNE_BUILD_BENCHMARKS=OFF \
    -DPython3_EXECUTABLE="$PWD/.venv/bin/python" -DTorch_DIR="$torch_dir" > "$dir.configure.log" 2>&1 \
    || { cat "$dir.configure.log"; exit 1; }
fi
targets=()
for f in "${inputs[@]}"; do targets+=(--target "fuzz_$f"); done
cmake --build "$dir" --parallel "${JOBS:-2}" "${targets[@]}"

status=0
mkdir -p "$dir/artifacts"
for f in "${inputs[@]}"; do
  mkdir -p "$dir/corpus/$f"
  dict=()
  [ -f "tests/fuzz/$f.dict" ] && dict=(-dict="tests/fuzz/$f.dict")
  echo "=== fuzz_$f ${limit[*]}"
  # -rss_limit_mb: LibTorch alone takes ~300 MB of the default 2 GB.
  # Raw training-state files feed LibTorch 1.13's own reader, which can crash
  # on corrupt zips (docs/fuzzing.md): fuzz the structured inputs only.
  if FINETUNE_FUZZ_STRUCTURED_ONLY=1 "$dir/tests/fuzz_$f" "${limit[@]}" "${dict[@]}" -print_final_stats=1 -rss_limit_mb=4096 \
       -artifact_prefix="$dir/artifacts/$f-" "$dir/corpus/$f" "tests/fuzz/corpus/$f" \
       > "$dir/fuzz_$f.log" 2>&1; then
    grep -E '^(#[0-9]+ +DONE|stat::(number_of_executed_units|average_exec_per_sec|peak_rss_mb))' \
      "$dir/fuzz_$f.log" || true
  else
    status=1
    echo "fuzz_$f FAILED: see $dir/fuzz_$f.log and $dir/artifacts/"
    grep -E 'ERROR|FUZZ_CHECK|what\(\)|runtime error|SUMMARY|Test unit written' "$dir/fuzz_$f.log" || tail -20 "$dir/fuzz_$f.log"
  fi
done
exit $status
