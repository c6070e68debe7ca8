#!/usr/bin/env python3
"""Test-time oracle for tests/test_roberta_safetensors.cpp: checks that a
safetensors file written by the C++ writer loads in Python's `safetensors` to
exactly the expected tensors, and that save_file of those tensors writes the
same bytes.

  check_safetensors_roundtrip.py FILE EXPECTED.json

EXPECTED.json: {"tensors": [{"name", "dtype", "shape", "values" (flat)}],
"metadata": {str: str}} (the format of tests/golden/safetensors/*.json).
Exit status 0 when everything matches; 1 with a message otherwise.
"""
import json
import os
import sys
import tempfile

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
    "U8": torch.uint8, "BOOL": torch.bool,
}


def expected_tensor(entry):
    dtype = DTYPES[entry["dtype"]]
    if dtype.is_floating_point:
        t = torch.tensor(entry["values"], dtype=torch.float64).to(dtype)
    else:
        t = torch.tensor(entry["values"], dtype=torch.int64 if dtype != torch.bool else torch.bool).to(dtype)
    return t.reshape(entry["shape"])


def main():
    if len(sys.argv) != 3:
        print(__doc__)
        return 2
    path, expected_path = sys.argv[1], sys.argv[2]
    with open(expected_path, encoding="utf-8") as fh:
        expected = json.load(fh)
    loaded = load_file(path)
    with safe_open(path, framework="pt") as f:
        metadata = f.metadata() or {}
    problems = []
    names = [e["name"] for e in expected["tensors"]]
    if sorted(loaded) != sorted(names):
        problems.append(f"names differ: file {sorted(loaded)} expected {sorted(names)}")
    for entry in expected["tensors"]:
        name = entry["name"]
        if name not in loaded:
            continue
        got, want = loaded[name], expected_tensor(entry)
        if got.dtype != want.dtype or list(got.shape) != list(want.shape) or not torch.equal(got, want):
            problems.append(f"tensor {name!r}: file {got.dtype} {list(got.shape)} differs from expected "
                            f"{want.dtype} {list(want.shape)}")
    if metadata != expected.get("metadata", {}):
        problems.append(f"metadata differ: file {metadata} expected {expected.get('metadata', {})}")
    # save_file orders several metadata keys by a Rust HashMap (run-dependent),
    # so the byte comparison needs at most one.
    if len(metadata) <= 1:
        with tempfile.TemporaryDirectory() as tmp:
            again = os.path.join(tmp, "again.safetensors")
            save_file(loaded, again, metadata=metadata or None)
            with open(again, "rb") as a, open(path, "rb") as b:
                if a.read() != b.read():
                    problems.append("save_file of the loaded tensors writes different bytes")
    for p in problems:
        print(f"{path}: {p}")
    if not problems:
        print(f"{path}: {len(names)} tensor(s) and metadata match; save_file bytes identical")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
