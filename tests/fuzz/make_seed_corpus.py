#!/usr/bin/env python3
"""Writes the seed corpus of the safetensors fuzzer into
tests/fuzz/corpus/safetensors/: the golden files of tests/golden/safetensors/
and the malformed cases of tests/test_roberta_safetensors.cpp (each a few
hundred bytes). Crashers found by the fuzzer are added next to them by hand
(named crash-*). Run: .venv/bin/python tests/fuzz/make_seed_corpus.py
"""
import shutil
import struct
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "tests" / "fuzz" / "corpus" / "safetensors"
A = '"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}'
BUF8 = b"\0" * 8


def file(header, buf=b""):
    h = header.encode("utf-8") if isinstance(header, str) else header
    return struct.pack("<Q", len(h)) + h + buf


def entry(dtype="F32", shape="[2]", offsets="[0,8]", extra=""):
    return '{"a":{"dtype":"%s","shape":%s,"data_offsets":%s%s}}' % (dtype, shape, offsets, extra)


CASES = {
    "valid_two": file('{"b":{"dtype":"U8","shape":[2],"data_offsets":[8,10]},' + A + "}", BUF8 + b"\5\6"),
    "valid_meta": file('{"__metadata__":{"format":"pt"},' + A + "}", BUF8),
    "valid_empty": file("{}"),
    "short": b"\1\0\0",
    "len_huge": struct.pack("<Q", 2**64 - 1) + b"{}",
    "len_past_end": struct.pack("<Q", 3) + b"{}",
    "bad_json": file('{"a":', BUF8),
    "not_object": file("[1,2]"),
    "nul_padding": file(b"{}\0\0\0\0\0\0"),
    "invalid_utf8": file(b'{"a\xff":{}}'),
    "deep": file("[" * 64 + "]" * 64),
    "dup_key": file("{" + A + "," + A + "}", BUF8),
    "entry_not_object": file('{"a":[1]}'),
    "missing_field": file('{"a":{"dtype":"F32","shape":[2]}}', BUF8),
    "extra_field": file(entry(extra=',"x":1'), BUF8),
    "dtype_f8": file(entry(dtype="F8_E4M3", shape="[8]"), BUF8),
    "dtype_number": file('{"a":{"dtype":4,"shape":[2],"data_offsets":[0,8]}}', BUF8),
    "shape_negative": file(entry(shape="[-2]"), BUF8),
    "shape_float": file(entry(shape="[2.0]"), BUF8),
    "shape_overflow": file(entry(shape="[4294967296,4294967296,0]"), BUF8),
    "nbytes_overflow": file(entry(shape="[4611686018427387904]"), BUF8),
    "shape_mismatch": file(entry(shape="[3]"), BUF8),
    "offsets_reversed": file(entry(offsets="[8,0]"), BUF8),
    "offsets_past_end": file(entry(offsets="[8,16]"), BUF8),
    "offsets_huge": file(entry(dtype="U8", shape="[1]",
                               offsets="[18446744073709551614,18446744073709551615]"), BUF8),
    "overlap": file("{" + A + ',"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}', BUF8),
    "hole": file('{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},'
                 '"b":{"dtype":"U8","shape":[2],"data_offsets":[6,8]}}', BUF8),
    "uncovered_tail": file(entry(shape="[1]", offsets="[0,4]"), BUF8),
    "metadata_number": file('{"__metadata__":{"k":1}}'),
    "bool_byte": file('{"a":{"dtype":"BOOL","shape":[2],"data_offsets":[0,2]}}', b"\1\2"),
}


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    for path in sorted((ROOT / "tests" / "golden" / "safetensors").glob("*.safetensors")):
        shutil.copyfile(path, OUT / f"golden_{path.stem}")
    for name, data in CASES.items():
        (OUT / f"seed_{name}").write_bytes(data)


if __name__ == "__main__":
    main()
