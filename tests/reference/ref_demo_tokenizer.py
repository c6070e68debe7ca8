#!/usr/bin/env python3
"""Oracle for the demo model's byte-level BPE (examples/roberta_regression/assets/demo-bpe,
trained on the embedded passages by make_demo_bpe.py).

  ref_demo_tokenizer.py --out DIR

Encodes every 100th embedded State of the Union passage and the edge texts of
roberta_tokenizer_texts.json (those without Unicode 15-16 characters) with
Hugging Face's RobertaTokenizerFast loaded from the demo's vocab.json and
merges.txt (no hub download). Writes DIR/demo_tokenizer_cases.json: per text the un-truncated
ids, and for the passages the ids and attention mask truncated and padded to
96 (the demo's sequence length).
"""
import argparse
import csv
import gzip
import json
from pathlib import Path

from transformers import RobertaTokenizerFast

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "roberta_regression"
TEXTS = Path(__file__).resolve().parent / "roberta_tokenizer_texts.json"
MAX_LENGTH = 96


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    assets = EXAMPLE / "assets" / "demo-bpe"
    tokenizer = RobertaTokenizerFast.from_pretrained(str(assets))  # vocab.json + merges.txt
    with gzip.open(EXAMPLE / "data" / "sotu_passages.csv.gz", "rt", encoding="utf-8",
                   newline="") as f:
        passages = [row["excerpt"] for i, row in enumerate(csv.DictReader(f)) if i % 100 == 0]
    edge = [e["text"] for e in json.loads(TEXTS.read_text(encoding="utf-8"))
            if "text" in e and not e.get("unicode_16", False)]

    cases = []
    for i, text in enumerate(passages + edge):
        case = {"text": text, "ids": tokenizer(text)["input_ids"]}
        if i < len(passages):  # the demo's truncation and padding
            fixed = tokenizer(text, max_length=MAX_LENGTH, truncation=True, padding="max_length")
            case[f"ids_{MAX_LENGTH}"] = fixed["input_ids"]
            case[f"mask_{MAX_LENGTH}"] = fixed["attention_mask"]
        cases.append(case)
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "demo_tokenizer_cases.json", "w", encoding="utf-8", newline="\n") as f:
        f.write('{"max_length": %d, "passages": %d,\n"cases": [\n' % (MAX_LENGTH, len(passages)))
        f.write(",\n".join(json.dumps(c) for c in cases))
        f.write("\n]}\n")


if __name__ == "__main__":
    main()
