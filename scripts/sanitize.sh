#!/usr/bin/env bash
# The `make test` stage "sanitize": the library's unit tests, the example's
# tests that need no long training and the fuzzers' corpus replays, built with
# AddressSanitizer + UndefinedBehaviorSanitizer (CMake option
# FINETUNE_SANITIZE=ON) in build/asan against Debian's LibTorch 1.13, and run
# by CTest. Any ASan or UBSan report fails the test it happens in. Why 1.13
# and which sanitizer options: docs/fuzzing.md.
#   scripts/sanitize.sh          configure (once), build, run
set -euo pipefail
cd "$(dirname "$0")/.."
dir=build/asan

# The CTest tests (tests/test_<name>.cpp -> <name>, [cuda] and [onednn] cases as
# <name>_cuda and <name>_onednn)
# and their executables. roberta_train and roberta_pretrain train for minutes
# even uninstrumented: left out.
tests=(compat layerwise_lr lr_schedule periodic_evaluator periodic_evaluator_crash reinit swa unfreezing
       scheduler training_state docs_loops
       roberta_safetensors roberta_tokenizer bert_tokenizer roberta_data roberta_folds roberta_model)
fuzz_inputs=($(cd tests/fuzz && ls fuzz_*.cpp | sed 's/^fuzz_//; s/\.cpp$//'))  # one per tests/fuzz/fuzz_<input>.cpp
targets=()
for t in "${tests[@]}"; do targets+=(--target "test_$t"); done
for f in "${fuzz_inputs[@]}"; do targets+=(--target "${f}_fuzz_replay"); done

if [ ! -f "$dir/CMakeCache.txt" ]; then
  torch_dir=$(dirname "$(dpkg -L libtorch-dev | grep '/cmake/Torch/TorchConfig.cmake$' | head -n1)")
  mkdir -p build
  # -O1 -g1: instrumented code fast enough, line numbers in reports, asserts on.
  cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g1" \
    -DFINETUNE_SANITIZE=ON -DFINETUNE_BUILD_BENCHMARKS=OFF \
    -DPython3_EXECUTABLE="$PWD/.venv/bin/python" -DTorch_DIR="$torch_dir" > "$dir.configure.log" 2>&1 \
    || { cat "$dir.configure.log"; exit 1; }
fi
cmake --build "$dir" --parallel "${JOBS:-2}" "${targets[@]}"

# Sanitizer options (each reason in docs/fuzzing.md). The suppression files
# tests/sanitizers/*.supp hold one LeakSanitizer entry (LibTorch 1.13's);
# all three are read, so that an entry can be added without touching this.
supp=$PWD/tests/sanitizers
export ASAN_OPTIONS="detect_leaks=1:check_initialization_order=1:strict_init_order=1:detect_stack_use_after_return=1:abort_on_error=0:suppressions=$supp/asan.supp"
export LSAN_OPTIONS="suppressions=$supp/lsan.supp:print_suppressions=0"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:suppressions=$supp/ubsan.supp"
regex="^($(IFS='|'; echo "${tests[*]}"))(_cuda|_onednn)?\$|^($(IFS='|'; echo "${fuzz_inputs[*]}"))_fuzz_replay\$"
ctest --test-dir "$dir" --output-on-failure --parallel "${JOBS:-2}" --timeout 1800 -R "$regex"
