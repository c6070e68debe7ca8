#!/usr/bin/env python3
"""Writes the fixed text set for the RoBERTa tokenizer parity test.

  make_roberta_tokenizer_texts.py --sotu /path/to/sotu.jsonl --out tests/reference/roberta_tokenizer_texts.json

Run once by hand; its output is committed (the State of the Union corpus is
not part of the repository) and read by ref_roberta_tokenizer.py. The set is
hand-written edge cases plus a seeded sample of real sentences and passages
from the State of the Union addresses (public domain). Deterministic: same
corpus in, byte-identical file out.

Each entry is {"text": str} or, for input that is not valid UTF-8,
{"bytes_hex": str} (JSON strings cannot carry such bytes); "unicode_16": true
marks text with characters assigned in Unicode 15-16.
"""
import argparse
import json
import random
import re
from pathlib import Path

EDGE_CASES = [
    # empty, plain prose, leading/trailing spaces
    "", "Hello world", " Hello world", "Hello world ", "  two leading spaces", "x",
    "The quick brown fox jumps over the lazy dog.",
    # contractions (the regex is case-sensitive and ASCII-apostrophe only)
    "I'm sure you'll say it's theirs; they've said we'd go and I'd stay, don't you?",
    "DON'T SHOUT, I'M HERE. IT'S FINE.", "rock 'n' roll", "'s", "''s'", "it’s curly", "o'clock y'all",
    # runs of spaces, tabs, newlines
    "a  b   c    d     e", "a \t b", "word   ", "   ", " ", "\t", "\n", "line1\nline2\n\nline4",
    "windows\r\nline\r\n", "\t\ttabbed\tin", " \n ", "end with newline\n", "spaces then\n  indented",
    # digits and numbers
    "1234567890", "3.14159", "$1,000,000.00", "in 1999 and 2021", "phone: +1 (555) 010-9999",
    "٣٤٥ Arabic-Indic digits", "Ⅻ roman, ½ fraction, x² superscript", "１２３ fullwidth",
    # punctuation runs
    "!!!???...", "---", "(a) [b] {c}", "foo@bar.com", "https://example.com/path?q=1&r=2#frag",
    "<html><body class=\"x\">", "C++ && C# || F#", "\"quoted\" and 'single'", "… — – ‘’ “”",
    "#hashtag @mention $ticker", "a.b,c;d:e", "____init____", "~/.bashrc", "100%!",
    # accented Latin, combining marks
    "Café naïve résumé façade coöperate", "Zürich Ærøskøbing Łódź Þórr", "Cafe\u0301 decomposed",
    "e\u0301\u0302\u0303 stacked marks", "\u0301 leading combining mark", "ǅ titlecase, ﬁ ligature",
    # other scripts
    "Αθήνα και Москва", "日本語のテキストです。", "中文测试，标点符号！", "한국어 텍스트",
    "مرحبا بالعالم", "שָׁלוֹם עולם", "สวัสดีครับ", "नमस्ते दुनिया", "Hello世界123!!",
    "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝕞𝕒𝕥𝕙", "ᚠᚢᚦ runes",
    # emoji, ZWJ sequences, modifiers, flags, keycaps
    "I ❤️ NY 😀", "👨‍👩‍👧‍👦 family", "👍🏽 ok", "🇺🇸🇫🇷 flags", "1️⃣ keycap", "😀😀😀😀😀",
    "emoji after word😀 and 😀before",
    # Unicode whitespace and invisible characters
    "a\u00a0b", "a\u3000b", "a\u2028b", "a\u2029b", "a\u0085b", "a\u1680b", "a\u2000b\u200ac",
    "a\u2009thin\u202fnarrow\u205fmath", "a\u180eb", "a\u200bb", "a\ufeffb", "a\u200d\u200cb",
    "a\x0bb\x0cc", "a \u180e b", "x\u180e\u180e y", "!\u180e!", "wait\u180e...", "\x1c\x1c word", " \x1c x", "a \u0085 b",
    "a\x1cb\x1dc\x1ed\x1fe", "\u00a0\u00a0x", "x \u00a0 y", "x\u3000\u3000 y",
    "trailing nbsp\u00a0", "\u2028", "\u00a0",
    # control characters
    "\x00 null", "del\x7f", "bell\x07", "esc\x1b[0m",
    # the special tokens' strings inside text
    "Hello <mask> there", "Hello<mask>", "<s>already wrapped</s>", "<pad><unk>", "a<mask>b",
    "<mask>", "<mas k>", "< s >", "<s", "</s> </s>", "  <mask>  ",
    # private use, noncharacter-adjacent, astral
    "\ue000 private", "\U0010fffd", "\U0001f9d1\u200d\U0001f52c",
    # very long words
    "a" * 3000, "supercalifragilisticexpialidocious" * 20, "x" * 1000 + " y", "9" * 500,
    "!" * 700, " " * 600 + "end", "\n" * 300, "Ha" * 400 + "!",
]

# Letters and digits assigned in Unicode 15.0-16.0, next to letters/digits so
# that their class matters. `tokenizers` (Oniguruma) knows Unicode 16; PCRE2
# knows the Unicode of its release (14 in 10.42, 16 from 10.45), so the C++
# test checks these only with PCRE2 >= 10.45.
NEWER_UNICODE = [
    "\U000315b6\u6695", "the \U000315b6\u6695 ext-h", "\u4e00\U00031350\u4e00 ext-h",
    "x\U0001e030y cyrillic ext-d", "\u4e00\U0002ebf0\u4e00 ext-i", "a\U00010d50b garay",
    "a\U00016d43b kirat", "1\U00010d40 garay digit",
]

INVALID_UTF8 = [
    b"abc\xff", b"\xe2\x82", b"\xe2\x82 tail", b"\xc0\x80", b"\xed\xa0\x80", b"caf\xe9",
    b"\xf4\x90\x80\x80", b"\xf0\x9f\x98 ok", b"\x80\x80\x80", b"ok\xf0\x9f\x98\x80\xff",
]


def sentences(text: str):
    return [s for s in re.split(r"(?<=[.!?])\s+(?=[A-Z\"“])", text)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sotu", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    addresses = [json.loads(line) for line in args.sotu.read_text(encoding="utf-8").splitlines()]
    all_sentences = [s for a in addresses for s in sentences(a["text"]) if 15 <= len(s) <= 600]
    rng = random.Random(20260701)
    sample = rng.sample(all_sentences, 190)
    non_ascii = [s for s in all_sentences if any(ord(c) > 127 for c in s)]
    sample += rng.sample(non_ascii, 10)
    passages = []
    for address in rng.sample(addresses, 4):
        start = rng.randrange(0, max(1, len(address["text"]) - 1500))
        passages.append(address["text"][start:start + 1500])

    entries = [{"text": t} for t in EDGE_CASES]
    entries += [{"text": t, "unicode_16": True} for t in NEWER_UNICODE]
    entries += [{"bytes_hex": b.hex()} for b in INVALID_UTF8]
    entries += [{"text": t} for t in sample + passages]
    with open(args.out, "w", encoding="utf-8", newline="\n") as f:
        f.write("[\n" + ",\n".join(json.dumps(e) for e in entries) + "\n]\n")
    print(f"{len(entries)} texts -> {args.out}")


if __name__ == "__main__":
    main()
