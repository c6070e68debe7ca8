# The two commands of the README, and a few more for developers.
#   make demo    the RoBERTa regression example on its embedded data (LibTorch 2.x)
#   make table-minilm  the same table on a real pretrained BERT, all-MiniLM-L6-v2
#                (about an hour on two cores; scripts/table_minilm.sh)
#   make test    the whole test suite, against LibTorch 2.x and 1.13, under
#                ASan + UBSan, and a short run of every fuzzer
#   make bench   the benchmarks (both LibTorch builds, each against its PyTorch)
#   make sanitize  only the ASan + UBSan stage of make test (build/asan)
#   make fuzz    every libFuzzer target for FUZZ_SECONDS each (default 120;
#                build/fuzz, clang-14; docs/fuzzing.md)
#   make goldens rewrite tests/golden/ from the PyTorch / Hugging Face oracles
# Each target installs what is missing first (scripts/setup.sh).

JOBS ?= 2
BUILD_TYPE ?= Release
PYTHON := .venv/bin/python

.PHONY: all setup demo table-minilm test sanitize fuzz bench goldens check-goldens build-torch2 build-torch1 clean

all: test

setup:
	@bash scripts/setup.sh

demo: setup
	@bash scripts/build.sh torch2 roberta_regression
	@bash scripts/demo.sh

table-minilm: setup
	@bash scripts/build.sh torch2 roberta_regression
	@bash scripts/table_minilm.sh

test: setup
	@bash scripts/test.sh

sanitize: setup
	@bash scripts/sanitize.sh

fuzz: setup
	@bash scripts/fuzz.sh $(or $(FUZZ_SECONDS),120)

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
