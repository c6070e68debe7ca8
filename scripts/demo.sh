#!/usr/bin/env bash
# `make demo`: the RoBERTa regression example on its embedded default data.
set -euo pipefail
cd "$(dirname "$0")/.."
exec build/torch2/examples/roberta_regression/roberta_regression demo "$@"
