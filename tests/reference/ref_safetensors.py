#!/usr/bin/env python3
"""Oracle for examples/roberta_regression/model/safetensors.hpp: Python's
`safetensors.torch.save_file` (the writer of Hugging Face checkpoints).

Writes into --out DIR/safetensors/:
  <case>.safetensors  written by save_file
  <case>.json         what the file holds: tensors in file (header) order, each
                      {name, dtype, shape, values (flat, row-major)}, and the
                      metadata. The C++ test reads the .safetensors and checks
                      it against the .json, rebuilds the tensors from the .json,
                      writes them and compares bytes with the .safetensors.
Cases: all_dtypes (every supported dtype, 0-d and empty tensors, metadata),
names (names that sort and JSON-escape non-trivially, no metadata),
empty (no tensors), empty_with_metadata.

Metadata has at most one key: save_file stores it in a Rust HashMap, so the
order of several keys varies from run to run (not byte-reproducible).
"""
import argparse
import json
from pathlib import Path

import safetensors
import torch
from safetensors import safe_open
from safetensors.torch import save_file

torch.set_num_threads(1)

DTYPE_NAMES = {
    torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8",
    torch.uint8: "U8", torch.bool: "BOOL",
}


def values(t):
    flat = t.reshape(-1)
    if t.dtype in (torch.float16, torch.bfloat16):
        flat = flat.to(torch.float64)  # exact: every f16/bf16 value is a double
    return flat.tolist()


def cases():
    g = torch.Generator().manual_seed(0)
    randn = lambda *shape: torch.randn(*shape, generator=g)  # noqa: E731
    all_dtypes = {
        "f64": randn(2, 3).to(torch.float64) * 1e3,
        "f32": randn(3, 4),
        "f16": (randn(5) * 100).to(torch.float16),
        "bf16": (randn(2, 2) * 1e-3).to(torch.bfloat16),
        "i64": torch.tensor([-(2**63), 2**63 - 1, 0, -1], dtype=torch.int64),
        "i32": torch.tensor([[-(2**31), 2**31 - 1], [7, -7]], dtype=torch.int32),
        "i16": torch.tensor([-(2**15), 2**15 - 1, 3], dtype=torch.int16),
        "i8": torch.tensor([-128, 127, 0], dtype=torch.int8),
        "u8": torch.tensor([0, 255, 17], dtype=torch.uint8),
        "bool": torch.tensor([True, False, True], dtype=torch.bool),
        "scalar_f32": torch.tensor(-0.0),
        "scalar_i64": torch.tensor(42, dtype=torch.int64),
        "empty_f32": torch.zeros(0, 3),
        "empty_bool": torch.zeros(2, 0, dtype=torch.bool),
        "encoder.layer.0.attention.self.query.weight": randn(4, 4),
        "encoder.layer.0.attention.self.query.bias": torch.zeros(4),
    }
    names = {
        "b": torch.arange(3, dtype=torch.float32),
        "a": torch.arange(2, dtype=torch.float32),
        "B": torch.arange(1, dtype=torch.float32),
        "a.b": torch.ones(1),
        "a_b": torch.ones(1),
        "quote\"back\\slash\ttab\nnl\u0001ctl": torch.ones(2),
        "\u00fcnicode \u4e2d\u6587 \U0001F600": torch.ones(1, dtype=torch.float16),
        "z": torch.ones(1, dtype=torch.int64),
    }
    return [
        ("all_dtypes", all_dtypes, {"format": "pt"}),
        ("names", names, None),
        ("empty", {}, None),
        ("empty_with_metadata", {}, {"note": "no tensors \"quoted\" \u00e9"}),
    ]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    out = args.out / "safetensors"
    out.mkdir(parents=True, exist_ok=True)
    for name, tensors, metadata in cases():
        path = out / f"{name}.safetensors"
        save_file(tensors, str(path), metadata=metadata)
        with open(path, "rb") as fh:  # header order, as the file stores it
            n = int.from_bytes(fh.read(8), "little")
            header = json.loads(fh.read(n), object_pairs_hook=lambda pairs: [k for k, _ in pairs])
        order = [k for k in header if k != "__metadata__"]
        with safe_open(str(path), framework="pt") as f:
            assert sorted(order) == sorted(f.keys())
            entries = []
            for key in order:
                t = f.get_tensor(key)
                assert torch.equal(t, tensors[key]), key
                entries.append({"name": key, "dtype": DTYPE_NAMES[t.dtype], "shape": list(t.shape),
                                "values": values(t)})
            stored_metadata = f.metadata() or {}
        with open(out / f"{name}.json", "w", encoding="utf-8") as fh:
            json.dump({"safetensors_version": safetensors.__version__, "tensors": entries,
                       "metadata": stored_metadata}, fh, indent=1, ensure_ascii=True)
            fh.write("\n")


if __name__ == "__main__":
    main()
