#!/usr/bin/env bash
# `make test`: the oracle check, then build and run the whole suite against
# both LibTorch builds, then the sanitizer stage (scripts/sanitize.sh: unit
# tests under ASan + UBSan in build/asan) and a short run of every fuzzer
# (scripts/fuzz.sh, FUZZ_SECONDS each, default 10; needs clang-14). Every stage
# runs even when an earlier one failed; the summary at the end says which
# failed and how many tests each CTest run skipped, and the exit status is
# non-zero when a stage failed.
set -uo pipefail
cd "$(dirname "$0")/.."
mkdir -p build
declare -A result seconds
rm -f build/torch2.ctest.log build/torch1.ctest.log build/asan.ctest.log

stage() {  # stage NAME COMMAND...
  local name=$1; shift
  local start=$SECONDS
  echo "=== $name"
  if "$@"; then result[$name]=passed; else result[$name]=FAILED; fi
  seconds[$name]=$((SECONDS - start))
}

logged() {  # logged BUILD_DIR COMMAND...: runs COMMAND, its output kept in BUILD_DIR.ctest.log
  local dir=$1; shift
  "$@" 2>&1 | tee "$dir.ctest.log"
}

# skipped BUILD_DIR: the tests CTest reported as skipped in its last run there
# (its list "The following tests did not run", e.g. "12 - name (Skipped)").
skipped() {
  [ -f "$1.ctest.log" ] || return 0
  sed -n 's/^[[:space:]]*[0-9]\{1,\} - \(.*\) (Skipped)$/\1/p' "$1.ctest.log"
}

stage goldens .venv/bin/python tests/reference/regenerate.py --check tests/golden
for flavour in torch2 torch1; do
  stage "build-$flavour" bash scripts/build.sh "$flavour"
  if [ "${result[build-$flavour]}" = passed ]; then
    stage "ctest-$flavour" logged "build/$flavour" ctest --test-dir "build/$flavour" --output-on-failure \
      --parallel "${JOBS:-2}" --timeout 900
  else
    result[ctest-$flavour]="not run"; seconds[ctest-$flavour]=0
  fi
done

stage sanitize logged build/asan bash scripts/sanitize.sh
if command -v clang++-14 > /dev/null; then
  stage fuzz bash scripts/fuzz.sh "${FUZZ_SECONDS:-10}"
else
  echo "=== fuzz: skipped, clang++-14 not found (scripts/setup.sh installs it)"
  result[fuzz]="skipped"; seconds[fuzz]=0
fi

echo
echo "=== make test summary"
status=0
for name in goldens build-torch2 ctest-torch2 build-torch1 ctest-torch1 sanitize fuzz; do
  printf '  %-14s %-8s %5ss\n' "$name" "${result[$name]}" "${seconds[$name]}"
  case "${result[$name]}" in passed) ;; skipped) ;; *) status=1 ;; esac
done
for dir in build/torch2 build/torch1 build/asan; do
  names=$(skipped "$dir")
  count=$(printf '%s' "$names" | grep -c . || true)
  printf '  %s: %s CTest test(s) skipped%s\n' "$dir" "$count" \
    "$([ "$count" -gt 0 ] && printf ': %s' "$(echo $names)")"
done
for flavour in torch2 torch1; do
  cache=build/$flavour/CMakeCache.txt
  [ -f "$cache" ] && printf '  %s: LibTorch from %s\n' "$flavour" "$(sed -n 's/^Torch_DIR:[A-Z]*=//p' "$cache")"
done
exit $status
