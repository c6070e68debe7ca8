# The two commands of the README, and a few more for developers.
#   make demo    the RoBERTa regression example on its embedded data (LibTorch 2.x)
#   make test    the whole test suite, against LibTorch 2.x and 1.13
#   make bench   the benchmarks (both LibTorch builds, each against its PyTorch)
#   make goldens rewrite tests/golden/ from the PyTorch / Hugging Face oracles
# Each target installs what is missing first (scripts/setup.sh).

JOBS ?= 2
BUILD_TYPE ?= Release
PYTHON := .venv/bin/python

.PHONY: all setup demo test bench goldens check-goldens build-torch2 build-torch1 clean

all: test

setup:
	@bash scripts/setup.sh

demo: setup
	@bash scripts/build.sh torch2 roberta_regression
	@bash scripts/demo.sh

test: setup
	@bash scripts/test.sh

bench: setup
	@bash scripts/build.sh torch2
	@bash scripts/bench.sh

goldens: setup
	$(PYTHON) tests/reference/regenerate.py --out tests/golden

check-goldens: setup
	$(PYTHON) tests/reference/regenerate.py --check tests/golden

build-torch2: setup
	@bash scripts/build.sh torch2

build-torch1: setup
	@bash scripts/build.sh torch1

clean:
	rm -rf build
