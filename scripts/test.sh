#!/usr/bin/env bash
# `make test`: the oracle check, then build and run the whole suite against
# both LibTorch builds. Every stage runs even when an earlier one failed; the
# summary at the end says which failed, and the exit status is non-zero then.
set -uo pipefail
cd "$(dirname "$0")/.."
mkdir -p build
declare -A result seconds

stage() {  # stage NAME COMMAND...
  local name=$1; shift
  local start=$SECONDS
  echo "=== $name"
  if "$@"; then result[$name]=passed; else result[$name]=FAILED; fi
  seconds[$name]=$((SECONDS - start))
}

stage goldens .venv/bin/python tests/reference/regenerate.py --check tests/golden
for flavour in torch2 torch1; do
  stage "build-$flavour" bash scripts/build.sh "$flavour"
  if [ "${result[build-$flavour]}" = passed ]; then
    stage "ctest-$flavour" ctest --test-dir "build/$flavour" --output-on-failure \
      --parallel "${JOBS:-2}" --timeout 900
  else
    result[ctest-$flavour]="not run"; seconds[ctest-$flavour]=0
  fi
done

echo
echo "=== make test summary"
status=0
for name in goldens build-torch2 ctest-torch2 build-torch1 ctest-torch1; do
  printf '  %-14s %-8s %5ss\n' "$name" "${result[$name]}" "${seconds[$name]}"
  [ "${result[$name]}" = passed ] || status=1
done
for flavour in torch2 torch1; do
  cache=build/$flavour/CMakeCache.txt
  [ -f "$cache" ] && printf '  %s: LibTorch from %s\n' "$flavour" "$(sed -n 's/^Torch_DIR:[A-Z]*=//p' "$cache")"
done
exit $status
