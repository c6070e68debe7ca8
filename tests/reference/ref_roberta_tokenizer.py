#!/usr/bin/env python3
"""Oracle for the RoBERTa example's byte-level BPE tokenizer (tokenizer.hpp).

  ref_roberta_tokenizer.py --out DIR

Encodes every text of tests/reference/roberta_tokenizer_texts.json with Hugging
Face's RobertaTokenizerFast (transformers; Rust `tokenizers` underneath) loaded
from the committed examples/roberta_regression/assets/roberta-bpe/ vocab.json
and merges.txt, no hub download. Writes DIR/roberta_tokenizer_cases.json: per
text the un-truncated ids, ids/attention mask truncated and padded to
max_length 32, the ids with add_prefix_space=True, and the `tokenizers` decode
of the ids where it is not `<s>` + text + `</s>`. For bytes that are not
UTF-8 the text is Python's errors="replace" decoding ("replaced_text").

Also cross-checks, failing on any difference, a `tokenizers.Tokenizer` put
together by hand (BPE + ByteLevel + RobertaProcessing + special tokens). And it
runs a port of the original slow Python algorithm (GPT-2's encoder.py, which
transformers 4's slow RobertaTokenizer used: the `regex` module, bytes_to_unicode,
rank-ordered merges) and records the ids wherever that one differs from the
fast tokenizer ("slow_ids"); the C++ follows the fast one.
"""
import argparse
import json
from pathlib import Path

import regex
from tokenizers import Tokenizer, decoders, pre_tokenizers, processors
from tokenizers.models import BPE
from transformers import RobertaTokenizerFast

ROOT = Path(__file__).resolve().parents[2]
ASSETS = ROOT / "examples" / "roberta_regression" / "assets" / "roberta-bpe"
TEXTS = Path(__file__).resolve().parent / "roberta_tokenizer_texts.json"
MAX_LENGTH = 32
SPECIALS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]


def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


class SlowPython:
    """GPT-2's encoder.py algorithm with added-token splitting, as the slow tokenizer did it."""
    PAT = regex.compile(r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""")

    def __init__(self, vocab, merges_path):
        self.vocab = vocab
        lines = merges_path.read_text(encoding="utf-8").split("\n")[1:-1]
        self.ranks = {tuple(line.split()): i for i, line in enumerate(lines)}
        self.byte_encoder = bytes_to_unicode()
        self.split = regex.compile("(" + "|".join(regex.escape(s) for s in SPECIALS) + ")")

    def bpe(self, token):
        word = list(token)
        while len(word) > 1:
            pairs = {(word[i], word[i + 1]) for i in range(len(word) - 1)}
            best = min(pairs, key=lambda p: self.ranks.get(p, float("inf")))
            if best not in self.ranks:
                break
            merged, i = [], 0
            while i < len(word):
                if i < len(word) - 1 and (word[i], word[i + 1]) == best:
                    merged.append(word[i] + word[i + 1])
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = merged
        return word

    def encode(self, text):
        ids = [self.vocab["<s>"]]
        for piece in self.split.split(text):
            if piece in SPECIALS:
                ids.append(self.vocab[piece])
                continue
            for token in self.PAT.findall(piece):
                mapped = "".join(self.byte_encoder[b] for b in token.encode("utf-8"))
                ids.extend(self.vocab[t] for t in self.bpe(mapped))
        return ids + [self.vocab["</s>"]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    fast = RobertaTokenizerFast.from_pretrained(str(ASSETS))
    fast_prefix = RobertaTokenizerFast.from_pretrained(str(ASSETS), add_prefix_space=True)

    manual = Tokenizer(BPE.from_file(str(ASSETS / "vocab.json"), str(ASSETS / "merges.txt")))
    manual.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    manual.decoder = decoders.ByteLevel()
    manual.add_special_tokens(SPECIALS)
    manual.post_processor = processors.RobertaProcessing(
        ("</s>", manual.token_to_id("</s>")), ("<s>", manual.token_to_id("<s>")))

    vocab = json.loads((ASSETS / "vocab.json").read_text(encoding="utf-8"))
    slow = SlowPython(vocab, ASSETS / "merges.txt")

    entries = json.loads(TEXTS.read_text(encoding="utf-8"))
    cases = []
    slow_differs = 0
    for entry in entries:
        if "text" in entry:
            text = entry["text"]
        else:  # what Python makes of bytes that are not UTF-8
            text = bytes.fromhex(entry["bytes_hex"]).decode("utf-8", errors="replace")
        full = fast(text)["input_ids"]
        fixed = fast(text, max_length=MAX_LENGTH, truncation=True, padding="max_length")
        if manual.encode(text).ids != full:
            raise SystemExit(f"transformers and tokenizers disagree on {text!r}")
        case = dict(entry)
        if "bytes_hex" in entry:
            case["replaced_text"] = text
        case["ids"] = full
        case[f"ids_{MAX_LENGTH}"] = fixed["input_ids"]
        case[f"mask_{MAX_LENGTH}"] = fixed["attention_mask"]
        case["prefix_space_ids"] = fast_prefix(text)["input_ids"]
        decoded = fast.backend_tokenizer.decode(full, skip_special_tokens=False)
        if decoded != "<s>" + text + "</s>":  # kept small: stored only where it differs
            case["decoded"] = decoded
        slow_ids = slow.encode(text)
        if slow_ids != full:
            case["slow_ids"] = slow_ids
            slow_differs += 1
        cases.append(case)

    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "roberta_tokenizer_cases.json", "w", encoding="utf-8", newline="\n") as f:
        f.write('{"max_length": %d,\n"cases": [\n' % MAX_LENGTH)
        f.write(",\n".join(json.dumps(c) for c in cases))
        f.write("\n]}\n")
    if slow_differs:
        print(f"    slow Python BPE differs from the fast tokenizer on {slow_differs} text(s)")


if __name__ == "__main__":
    main()
