#!/usr/bin/env python3
"""Derives a RoBERTa-style vocab.json/merges.txt from GPT-2's byte-level BPE files.

  make_roberta_bpe.py --src DIR_WITH_encoder.json_AND_vocab.bpe --out DIR

roberta-base uses GPT-2's 50,257 byte-level tokens and GPT-2's 50,000 merges,
with <s>, <pad>, </s>, <unk> in front and <mask> last. This script keeps
GPT-2's order for the byte-level tokens (id g -> g + 4), so the ids differ from
roberta-base's (fairseq's frequency order) while every text splits into the
same pieces. merges.txt is vocab.bpe unchanged (its "#version: 0.2" header
included, as in roberta-base's merges.txt). Deterministic: re-running it
rewrites byte-identical files.
"""
import argparse
import json
from pathlib import Path

FRONT = ["<s>", "<pad>", "</s>", "<unk>"]
MASK = "<mask>"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    encoder = json.loads((args.src / "encoder.json").read_text(encoding="utf-8"))
    if sorted(encoder.values()) != list(range(len(encoder))):
        raise SystemExit("encoder.json ids are not 0..n-1")
    vocab = {token: i for i, token in enumerate(FRONT)}
    for token, gpt2_id in sorted(encoder.items(), key=lambda kv: kv[1]):
        if token in vocab:
            raise SystemExit(f"encoder.json already holds {token!r}")
        vocab[token] = gpt2_id + len(FRONT)
    vocab[MASK] = len(vocab)

    merges = (args.src / "vocab.bpe").read_text(encoding="utf-8")
    lines = merges.splitlines()
    if not lines[0].startswith("#version"):
        raise SystemExit("vocab.bpe does not start with its #version line")
    for number, line in enumerate(lines[1:], start=2):
        parts = line.split(" ")
        if len(parts) != 2 or any(p not in vocab for p in parts) or "".join(parts) not in vocab:
            raise SystemExit(f"vocab.bpe line {number}: bad merge {line!r}")

    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "vocab.json", "w", encoding="utf-8", newline="\n") as f:
        json.dump(vocab, f, ensure_ascii=False, separators=(",", ":"))
        f.write("\n")
    with open(args.out / "merges.txt", "w", encoding="utf-8", newline="\n") as f:
        f.write("\n".join(lines) + "\n")
    print(f"vocab.json: {len(vocab)} tokens (<mask> = {vocab[MASK]}), "
          f"merges.txt: {len(lines) - 1} merges")


if __name__ == "__main__":
    main()
