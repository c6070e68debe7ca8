#!/usr/bin/env python3
"""The golden drift check can fail: tests of golden_compare on the committed
goldens (run by CTest as `golden_check`, and by hand with
`.venv/bin/python tests/reference/test_golden_compare.py`).

- A float32 golden moved by rounding (a few float32 ulps everywhere) is the
  same; moved beyond its tolerance at a single value, it is reported, with
  the place named.
- Structure, integers and strings of a numeric golden are compared exactly.
- An exact golden changed in its last double bit, or in one integer, is
  reported.
- Every numeric tolerance stays at most a quarter of the tolerance of the C++
  test that reads the golden.
"""
import copy
import json
import math
import struct
import sys
import tempfile
import unittest
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from golden_compare import RULES, Exact, Numeric, compare_file, move_ulps, rule_for  # noqa: E402

GOLDEN = HERE.parent / "golden"


def map_floats(value, fn):
    """value with every JSON float replaced by fn(float) (ints, bools untouched)."""
    if isinstance(value, dict):
        return {k: map_floats(v, fn) for k, v in value.items()}
    if isinstance(value, list):
        return [map_floats(v, fn) for v in value]
    if type(value) is float:
        return fn(value)
    return value


def safetensors_map(data: bytes, fn) -> bytes:
    """The file with fn applied to each F32 tensor's flat numpy array."""
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    body = bytearray(data[8 + n:])
    for name, info in header.items():
        if name == "__metadata__" or info["dtype"] != "F32":
            continue
        begin, end = info["data_offsets"]
        values = np.frombuffer(bytes(body[begin:end]), dtype=np.float32).copy()
        body[begin:end] = fn(name, values).astype(np.float32).tobytes()
    return data[:8 + n] + bytes(body)


def last_float(doc, path="$"):
    """(container, key, path as golden_compare names it) of the last float in doc."""
    found = None
    items = doc.items() if isinstance(doc, dict) else enumerate(doc)
    for key, value in items:
        where = f"{path}.{key}" if isinstance(doc, dict) else f"{path}[{key}]"
        if type(value) is float:
            found = (doc, key, where)
        elif isinstance(value, (dict, list)):
            found = last_float(value, where) or found
    return found


def float_values(path: Path) -> list:
    data = path.read_bytes()
    if path.suffix == ".json":
        out = []
        map_floats(json.loads(data), lambda x: out.append(x) or x)
        return out
    out = []
    safetensors_map(data, lambda _, v: out.extend(float(x) for x in v) or v)
    return out


class GoldenCheckTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.dir = Path(self.tmp.name)

    def tearDown(self):
        self.tmp.cleanup()

    def check(self, rel: str, data: bytes):
        fresh = self.dir / Path(rel).name
        fresh.write_bytes(data)
        return compare_file(fresh, GOLDEN / rel, rule_for(rel))

    def numeric_goldens(self):
        found = []
        for pattern, rule in RULES:
            matches = sorted(p for p in GOLDEN.glob(pattern) if p.is_file())
            self.assertTrue(matches, f"rule {pattern} matches no committed golden")
            found += [(p.relative_to(GOLDEN).as_posix(), rule) for p in matches]
        return found

    def test_tolerances_well_below_the_readers(self):
        for rel, rule in self.numeric_goldens():
            self.assertIsInstance(rule, Numeric)
            # the largest deviation the check admits, at the golden's largest value
            largest = max(abs(v) for v in float_values(GOLDEN / rel))
            self.assertGreater(largest, 0.0, rel)
            self.assertLessEqual(rule.atol + largest * rule.rtol, rule.reader_tolerance / 2, rel)

    def test_everything_else_is_exact(self):
        for rel in ("folds_cases.json", "train_lr_cases.json", "lr_schedule_linear_grouped_w50.json",
                    "roberta_model/tiny_2x32_h2/model.safetensors", "swa_lr.json"):
            self.assertIsInstance(rule_for(rel), Exact, rel)

    def test_rounding_is_not_a_drift(self):
        for rel, rule in self.numeric_goldens():
            original = (GOLDEN / rel).read_bytes()
            for ulps in (rule.rounding_ulps, -rule.rounding_ulps):
                move = lambda x: move_ulps(x, ulps, rule.ulp_dtype)  # noqa: E731
                if rel.endswith(".json"):
                    moved = json.dumps(map_floats(json.loads(original), move)).encode()
                else:
                    moved = safetensors_map(original, lambda _, v: np.array(
                        [move(float(x)) for x in v]))
                self.assertNotEqual(moved, original)
                result = self.check(rel, moved)
                self.assertTrue(result.same, f"{rel} moved by {ulps} ulp: {result.detail}")

    def test_one_value_beyond_the_tolerance_is_a_drift(self):
        for rel, rule in self.numeric_goldens():
            original = (GOLDEN / rel).read_bytes()
            if rel.endswith(".json"):
                doc = json.loads(original)
                parent, key, where = last_float(doc)
                parent[key] += 3 * rule.atol + 3 * rule.rtol * abs(parent[key])
                moved = json.dumps(doc).encode()
            else:
                first = {}

                def bump(name, v):
                    if not first and v.size:
                        i = v.size // 2
                        first[name] = i
                        v = v.copy()
                        v[i] += np.float32(3 * rule.atol + 3 * rule.rtol * abs(float(v[i])))
                    return v
                moved = safetensors_map(original, bump)
                name, i = next(iter(first.items()))
                where = f"{name}[{i}]"
            result = self.check(rel, moved)
            self.assertFalse(result.same, rel)
            self.assertIn(where, result.detail)
            self.assertGreater(result.max_ratio, 1.0)

    def test_numeric_goldens_keep_structure_exact(self):
        doc = json.loads((GOLDEN / "swa_average.json").read_bytes())
        changed = copy.deepcopy(doc)
        changed["cases"][0]["n_averaged"] += 1          # an integer
        self.assertFalse(self.check("swa_average.json", json.dumps(changed).encode()).same)
        changed = copy.deepcopy(doc)
        changed["update_bn"]["batch_shape"] = [5, 5]    # a shape
        self.assertFalse(self.check("swa_average.json", json.dumps(changed).encode()).same)
        changed = copy.deepcopy(doc)
        del changed["steps"][3]["2.bias"]               # a missing tensor
        self.assertFalse(self.check("swa_average.json", json.dumps(changed).encode()).same)
        changed = copy.deepcopy(doc)
        changed["update_bn"]["probe_output"][0] = math.nan
        result = self.check("swa_average.json", json.dumps(changed).encode())
        self.assertFalse(result.same)
        self.assertIn("probe_output[0]", result.detail)

        rel = "roberta_model/tiny_2x32_h2/expected.safetensors"
        data = (GOLDEN / rel).read_bytes()
        (n,) = struct.unpack("<Q", data[:8])
        header = json.loads(data[8:8 + n])
        name = next(k for k in header if k != "__metadata__")
        header[name]["shape"] = list(reversed(header[name]["shape"])) + [1]
        raw = json.dumps(header).encode()
        self.assertFalse(self.check(rel, struct.pack("<Q", len(raw)) + raw + data[8 + n:]).same)
        self.assertFalse(self.check(rel, data[:-4]).same)  # truncated

    def test_exact_goldens_fail_on_the_last_bit(self):
        rel = "lr_schedule_linear_grouped_w50.json"
        text = (GOLDEN / rel).read_text()
        doc = json.loads(text)
        moved = map_floats(doc, lambda x: math.nextafter(x, math.inf) if x else x)
        self.assertFalse(self.check(rel, json.dumps(moved).encode()).same)
        rel = "folds_cases.json"
        original = (GOLDEN / rel).read_bytes()
        self.assertTrue(self.check(rel, original).same)
        self.assertFalse(self.check(rel, original.replace(b"1", b"2", 1)).same)

if __name__ == "__main__":
    unittest.main(verbosity=2)
