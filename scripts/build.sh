#!/usr/bin/env bash
# scripts/build.sh FLAVOUR [TARGET...]: configures (once) and builds
# build/FLAVOUR against one of the two LibTorch builds:
#   torch2  LibTorch 2.x from the PyPI wheel in .venv (a CUDA build)
#   torch1  LibTorch 1.13 from Debian's libtorch-dev
set -euo pipefail
cd "$(dirname "$0")/.."
flavour=${1:?usage: scripts/build.sh torch2|torch1 [target...]}
shift
dir=build/$flavour

case "$flavour" in
  torch2)
    prefix=$(.venv/bin/python -c 'import os, torch; print(os.path.dirname(torch.__file__))')
    # The torch package folder as the prefix (not only share/cmake), so that
    # TorchConfig finds the wheel's libraries before a system libtorch.
    torch_args=(-DCMAKE_PREFIX_PATH="$prefix" -DTorch_DIR="$prefix/share/cmake/Torch")
    ;;
  torch1)
    torch_dir=$(dirname "$(dpkg -L libtorch-dev | grep '/cmake/Torch/TorchConfig.cmake$' | head -n1)")
    torch_args=(-DTorch_DIR="$torch_dir")
    ;;
  *) echo "unknown flavour '$flavour' (torch2 or torch1)" >&2; exit 2 ;;
esac

if [ ! -f "$dir/CMakeCache.txt" ]; then
  mkdir -p build
  cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE="${BUILD_TYPE:-Release}" \
    -DPython3_EXECUTABLE="$PWD/.venv/bin/python" "${torch_args[@]}" > "$dir.configure.log" 2>&1 \
    || { cat "$dir.configure.log"; exit 1; }
fi
targets=()
for t in "$@"; do targets+=(--target "$t"); done
cmake --build "$dir" --parallel "${JOBS:-2}" "${targets[@]}"
