#!/usr/bin/env python3
"""Oracle for the example's pretraining windows (pack_mlm_windows in
examples/roberta_regression/training/pretrain.hpp): each text's BPE ids cut into
windows of max_length - 2, each wrapped in <s> ... </s>, the last padded.

  ref_roberta_pretrain.py --out DIR

That is Hugging Face's own windowing of long texts: a fast tokenizer called
with truncation, `return_overflowing_tokens=True`, `stride=0` and
`padding="max_length"` (how transformers' run_qa.py cuts long contexts,
there with a stride), here RobertaTokenizerFast loaded from the demo's
vocab.json and merges.txt. The texts: two passages (one whose token count is
a multiple of the window for max_length 8) and a one-word text. Writes
DIR/roberta_pretrain_windows.json: the texts, and per max_length the
windows' input_ids and attention_mask in order.
"""
import argparse
import json
from pathlib import Path

from transformers import RobertaTokenizerFast

ROOT = Path(__file__).resolve().parents[2]
BPE = ROOT / "examples" / "roberta_regression" / "assets" / "demo-bpe"
TEXTS = [
    "Fellow-Citizens of the Senate and House of Representatives: the state of the Union is strong.",
    "We must reduce the public debt, and the revenue of the Treasury has increased this year.",
    "Short.",
]
MAX_LENGTHS = [3, 5, 8, 16, 64]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    tokenizer = RobertaTokenizerFast.from_pretrained(str(BPE))
    cases = []
    for max_length in MAX_LENGTHS:
        enc = tokenizer(TEXTS, max_length=max_length, truncation=True, stride=0,
                        return_overflowing_tokens=True, padding="max_length")
        cases.append({"max_length": max_length,
                      "text_of_window": enc["overflow_to_sample_mapping"],
                      "input_ids": enc["input_ids"],
                      "attention_mask": enc["attention_mask"]})
    tokens = [len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in TEXTS]
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "roberta_pretrain_windows.json", "w", encoding="utf-8",
              newline="\n") as f:
        f.write('{"texts": %s,\n"tokens": %s,\n"cases": [\n' % (json.dumps(TEXTS), json.dumps(tokens)))
        f.write(",\n".join(json.dumps(c) for c in cases))
        f.write("\n]}\n")


if __name__ == "__main__":
    main()
