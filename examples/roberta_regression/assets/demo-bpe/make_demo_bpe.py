#!/usr/bin/env python3
"""Trains the demo model's byte-level BPE on the embedded State of the Union
passages (their `excerpt` text only, never the years) with Hugging Face
`tokenizers`, and writes vocab.json + merges.txt in RoBERTa's format.

    .venv/bin/python examples/roberta_regression/assets/demo-bpe/make_demo_bpe.py

Deterministic: the same input gives the same files (checked by running twice).
"""
import argparse
import csv
import gzip
import json
from pathlib import Path

from tokenizers import ByteLevelBPETokenizer

HERE = Path(__file__).resolve().parent
DATA = HERE.parent.parent / "data" / "sotu_passages.csv.gz"
# RoBERTa's special tokens, in RoBERTa's id order 0..4.
SPECIAL = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--out", default=str(HERE))
    parser.add_argument("--vocab-size", type=int, default=8192)
    parser.add_argument("--min-frequency", type=int, default=2)
    args = parser.parse_args()

    with gzip.open(args.data, "rt", encoding="utf-8", newline="") as f:
        texts = [row["excerpt"] for row in csv.DictReader(f)]
    # RoBERTa's pre-tokenization: ByteLevel, no prefix space.
    tokenizer = ByteLevelBPETokenizer(add_prefix_space=False)
    tokenizer.train_from_iterator(texts, vocab_size=args.vocab_size,
                                  min_frequency=args.min_frequency, special_tokens=SPECIAL,
                                  show_progress=False)
    out = Path(args.out)
    tokenizer.save_model(str(out))
    vocab = json.loads((out / "vocab.json").read_text(encoding="utf-8"))
    assert [vocab[t] for t in SPECIAL] == list(range(5)), "special tokens must be ids 0..4"
    print(f"{len(texts)} passages -> {len(vocab)} tokens in {out}")


if __name__ == "__main__":
    main()
