#!/usr/bin/env bash
# Installs what `make demo`, `make test` and `make bench` need, and does
# nothing the second time:
#   1. Debian packages (as root, or through sudo; otherwise prints the command);
#   2. OpenBLAS (OpenMP flavour) as the system BLAS/LAPACK, because Debian's
#      libtorch otherwise runs on the netlib reference BLAS, ~25x slower;
#   3. the project-local Python environment .venv from requirements.txt.
# With --torch1-python (what `make bench` adds): Debian's python3-torch (1.13)
# and .venv-torch1 (Debian's Python, its torch, requirements-torch1.txt), the
# PyTorch side of the benchmarks' Debian pair.
set -euo pipefail
torch1_python=0
if [ "${1:-}" = --torch1-python ]; then torch1_python=1; fi
cd "$(dirname "$0")/.."

packages=(
  cmake g++ make pkg-config git zlib1g-dev
  libtorch-dev libopenblas0-openmp
  libgloo-dev  # gloo's headers, for c10d's ProcessGroupGloo (include/finetune/distributed.hpp)
  catch2 libfmt-dev nlohmann-json3-dev libpcre2-dev libicu-dev libcli11-dev libbenchmark-dev
  gnuplot-nox python3-venv
  clang-14 libclang-rt-14-dev  # libFuzzer and clang's sanitizer runtimes (scripts/fuzz.sh)
)
if [ $torch1_python = 1 ]; then packages+=(python3-torch); fi

as_root() {
  if [ "$(id -u)" -eq 0 ]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    sudo "$@"
  else
    echo "setup: this step needs root. Run it yourself, then run make again:" >&2
    echo "  sudo $*" >&2
    exit 1
  fi
}

# --- 1. Debian packages ---------------------------------------------------------
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}"
  if [ "$(id -u)" -ne 0 ] && ! { command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; }; then
    echo "setup: installing packages needs root. Run this, then run make again:" >&2
    echo "  sudo apt-get update && sudo apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi

# --- 2. OpenBLAS (OpenMP) for libblas/liblapack/libopenblas ------------------------
arch=$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || echo x86_64-linux-gnu)
for lib in libblas.so.3 liblapack.so.3 libopenblas.so.0; do
  want="/usr/lib/$arch/openblas-openmp/$lib"
  link="$lib-$arch"
  current=$(update-alternatives --query "$link" 2>/dev/null | sed -n 's/^Value: //p')
  if [ "$current" != "$want" ]; then
    echo "setup: selecting OpenBLAS (OpenMP) for $lib"
    as_root update-alternatives --set "$link" "$want"
  fi
done

# --- 3. Python environments --------------------------------------------------------
# make_venv DIR REQUIREMENTS PYTHON [VENV_ARGS...]: (re)creates DIR when it is
# missing or REQUIREMENTS changed since it was made (hash in DIR's stamp).
make_venv() {
  local dir=$1 requirements=$2 python=$3
  shift 3
  local stamp=$dir/.requirements.sha256 want_hash
  want_hash=$(sha256sum "$requirements" | cut -d' ' -f1)
  if [ ! -x "$dir/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want_hash" ]; then
    echo "setup: creating $dir from $requirements"
    # The CUDA wheel of torch and its libraries take about 6 GB; say so up
    # front rather than through pip's "No space left on device".
    local free_kb
    free_kb=$(df -Pk . | awk 'NR == 2 { print $4 }')
    if [ -n "$free_kb" ] && [ "$free_kb" -lt $((7 * 1024 * 1024)) ]; then
      echo "setup: warning: $((free_kb / 1024)) MB free in $(pwd); .venv alone needs about 6 GB" >&2
    fi
    "$python" -m venv "$@" "$dir"
    # No pip cache: the wheels would take the same space a second time.
    "$dir/bin/python" -m pip install -q --no-cache-dir --upgrade pip
    "$dir/bin/python" -m pip install -q --no-cache-dir -r "$requirements"
    echo "$want_hash" > "$stamp"
  fi
}

# PyTorch's CUDA wheel and the oracles: a few GB.
make_venv .venv requirements.txt python3
# --torch1-python: the Debian pair's Python, which sees Debian's torch 1.13.
if [ $torch1_python = 1 ]; then
  make_venv .venv-torch1 requirements-torch1.txt /usr/bin/python3 --system-site-packages
fi
