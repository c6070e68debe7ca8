#!/usr/bin/env python3
"""Oracle for the example's `tokenize` subcommand (tests/test_roberta_cli.cpp
pipes `stdin` below into `roberta_regression tokenize` and compares each
printed JSON line).

  ref_cli_tokenize.py --out DIR

Hugging Face's RobertaTokenizerFast, loaded from the example's committed
vocab.json + merges.txt (assets/demo-bpe, and assets/roberta-bpe: the
subcommand's default, roberta-base's files; no hub download), encodes every
line of `stdin` as the subcommand documents: one line at a time, a trailing
'\\r' dropped, `<s> ... </s>`; with --max-length L, `truncation=True,
padding="max_length", max_length=L`; with --add-prefix-space, a tokenizer
built with add_prefix_space=True.

Writes DIR/cli_tokenize_cases.json: the stdin text and, per case, the
subcommand's flags (asset folder, max length, prefix space) and the expected
{"ids", "mask"} of each line.
"""
import argparse
import json
from pathlib import Path

from transformers import RobertaTokenizerFast

ROOT = Path(__file__).resolve().parents[2]
ASSETS = ROOT / "examples" / "roberta_regression" / "assets"

# Lines for stdin: plain prose, an empty line, leading and repeated spaces,
# punctuation and digits, accents, CJK, an emoji, a CRLF line ending, and a
# line longer than the truncated length.
LINES = [
    "Fellow-Citizens of the Senate and House of Representatives:",
    "",
    "  two leading spaces,   and three inside.",
    "In 1862, $4,000,000.50 -- \"quoted\" & (bracketed) text; isn't it?",
    "Caf\u00e9 na\u00efve \u00fcber se\u00f1or",
    "\u4e2d\u6587\u6587\u672c and \U0001F600 emoji",
    "a line that ended in CRLF\r",
    "The abundant fruits of another year have blessed our country with plenty and with the "
    "means of a flourishing commerce, and the progress of public credit is witnessed.",
    "last line without a newline",
]

CASES = [
    # name, asset folder, --max-length (0: none), --add-prefix-space
    ("demo_bpe", "demo-bpe", 0, False),
    ("demo_bpe_max12", "demo-bpe", 12, False),
    ("demo_bpe_prefix_space", "demo-bpe", 0, True),
    ("roberta_bpe_default_max16", "roberta-bpe", 16, False),
]


def encode(tokenizer, line, max_length):
    text = line[:-1] if line.endswith("\r") else line
    if max_length:
        e = tokenizer(text, max_length=max_length, truncation=True, padding="max_length")
    else:
        e = tokenizer(text)
    return {"ids": e["input_ids"], "mask": e["attention_mask"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    cases = []
    for name, folder, max_length, prefix_space in CASES:
        tokenizer = RobertaTokenizerFast.from_pretrained(str(ASSETS / folder),
                                                         add_prefix_space=prefix_space)
        cases.append({"name": name, "assets": folder, "max_length": max_length,
                      "add_prefix_space": prefix_space,
                      "lines": [encode(tokenizer, line, max_length) for line in LINES]})
    stdin = "\n".join(LINES)  # the last line has no newline
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "cli_tokenize_cases.json", "w", encoding="utf-8", newline="\n") as f:
        f.write('{"stdin": %s,\n"cases": [\n' % json.dumps(stdin))
        f.write(",\n".join(json.dumps(c) for c in cases))
        f.write("\n]}\n")


if __name__ == "__main__":
    main()
