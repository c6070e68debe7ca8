#!/usr/bin/env python3
"""Runs every oracle script tests/reference/ref_*.py and writes or checks the
golden files the C++ tests read.

  regenerate.py --out tests/golden     rewrite the goldens (make goldens)
  regenerate.py --check tests/golden   regenerate into a temporary folder and
                                       fail on any difference (make test)
  ... --scripts ref_swa.py ...         only these scripts (and their files)

Each ref_*.py takes `--out DIR` and writes its files there. The oracles are
PyTorch, Hugging Face transformers/tokenizers and scikit-learn from the pinned
.venv. The check is byte for byte except for the few float32 goldens listed in
golden_compare.RULES, compared numerically at a tolerance far below their C++
readers' (README.md here): a changed pin or script cannot silently leave stale
goldens behind, and rounding differences between CPUs are not reported.
"""
import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from golden_compare import Numeric, compare_file, rule_for

HERE = Path(__file__).resolve().parent


def run_scripts(out: Path, only: list[str]) -> None:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONHASHSEED="0",
               HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", CUDA_VISIBLE_DEVICES="")
    scripts = sorted(HERE.glob("ref_*.py"))
    if only:
        unknown = sorted(set(only) - {s.name for s in scripts})
        if unknown:
            raise SystemExit(f"regenerate.py: no such oracle script: {', '.join(unknown)}")
        scripts = [s for s in scripts if s.name in only]
    for script in scripts:
        print(f"  {script.name}", flush=True)
        subprocess.run([sys.executable, str(script), "--out", str(out)], check=True, env=env)
    print(f"ran {len(scripts)} oracle script(s)")


def compare(fresh: Path, golden: Path, partial: bool) -> int:
    fresh_files = {p.relative_to(fresh) for p in fresh.rglob("*") if p.is_file()}
    golden_files = {p.relative_to(golden) for p in golden.rglob("*")
                    if p.is_file() and p.name != "README.md"}
    if partial:  # only some scripts ran: the other goldens are not theirs
        golden_files &= fresh_files
    problems = []
    for rel in sorted(fresh_files - golden_files):
        problems.append(f"new, not committed: tests/golden/{rel}")
    for rel in sorted(golden_files - fresh_files):
        problems.append(f"stale, no script writes it: tests/golden/{rel}")
    numeric = 0
    for rel in sorted(fresh_files & golden_files):
        rule = rule_for(rel.as_posix())
        result = compare_file(fresh / rel, golden / rel, rule)
        if not result.same:
            problems.append(f"drifted: tests/golden/{rel} ({rule.describe()}): {result.detail}")
        elif isinstance(rule, Numeric):
            numeric += 1
            print(f"  tests/golden/{rel}: {result.detail}")
    for line in problems:
        print(line)
    if problems:
        print(f"{len(problems)} golden file(s) differ from the oracles; run `make goldens` "
              "and review the diff")
        return 1
    print(f"{len(fresh_files)} golden file(s) match the oracles "
          f"({len(fresh_files) - numeric} byte for byte, {numeric} numerically: "
          "tests/reference/README.md)")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--out", type=Path, help="write goldens here")
    group.add_argument("--check", type=Path, help="compare fresh goldens with these")
    parser.add_argument("--scripts", nargs="+", default=[], metavar="ref_NAME.py",
                        help="run only these oracle scripts (and check only their files)")
    args = parser.parse_args()
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        run_scripts(args.out, args.scripts)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        run_scripts(Path(tmp), args.scripts)
        return compare(Path(tmp), args.check, partial=bool(args.scripts))


if __name__ == "__main__":
    sys.exit(main())
