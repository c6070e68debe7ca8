#!/usr/bin/env python3
"""Oracle for the example's folds (examples/roberta_regression/data/folds.hpp).

  ref_folds.py --out DIR

Runs the article notebook's fold code itself (numpy global seed, pandas
`sample(frac=1)`, `pd.cut(target, bins=floor(1 + log2 n), labels=False)`,
scikit-learn `StratifiedKFold(n_splits)`) on synthetic targets and on the
embedded data's addresses (one row per address, target = its year: the
grouped folds), and writes DIR/folds_cases.json: per case the targets, the
seed, the number of folds, the fold of each original row, and for checking the
pieces the permutation and the bin codes.
"""
import argparse
import csv
import gzip
import json
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedKFold

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "examples" / "roberta_regression" / "data" / "sotu_passages.csv.gz"


def notebook_folds(targets, n_splits, seed):
    """The notebook's cell, with a `row` column to map folds back to input order."""
    df = pd.DataFrame({"row": np.arange(len(targets)), "target": targets})
    df["skfold"] = -99
    np.random.seed(seed)
    df = df.sample(frac=1).reset_index(drop=True)
    bins = int(np.floor(1 + np.log2(len(df))))
    df.loc[:, "bins"] = pd.cut(df["target"], bins=bins, labels=False)
    skf = StratifiedKFold(n_splits=n_splits)
    for fold, (_, val_idx) in enumerate(skf.split(X=df, y=df["bins"].values)):
        df.loc[val_idx, "skfold"] = fold
    folds = [0] * len(targets)
    for row, fold in zip(df["row"], df["skfold"]):
        folds[int(row)] = int(fold)
    return {"targets": [float(t) for t in targets], "n_splits": n_splits, "seed": seed,
            "permutation": [int(r) for r in df["row"]],
            "bin_codes": [int(b) for b in df["bins"]], "folds": folds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    rng = np.random.RandomState(7)
    cases = {
        # CommonLit-like: normal targets around -0.96.
        "normal_1000_k5": notebook_folds(np.round(rng.normal(-0.96, 1.03, 1000), 6), 5, 3377),
        "uniform_57_k3": notebook_folds(np.round(rng.uniform(0, 1, 57), 6), 3, 42),
        # Ties and a target at the lowest edge.
        "ties_200_k5": notebook_folds(rng.randint(0, 7, 200).astype(float), 5, 3377),
    }
    with gzip.open(DATA, "rt", encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    years, seen = [], set()
    for row in rows:  # one row per address, in order of first appearance
        if row["address"] not in seen:
            seen.add(row["address"])
            years.append(float(row["target"]))
    cases["sotu_addresses_k5"] = notebook_folds(years, 5, 3377)
    cases["sotu_addresses_k2"] = notebook_folds(years, 2, 3377)

    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "folds_cases.json", "w", encoding="utf-8", newline="\n") as f:
        f.write("{\n")
        f.write(",\n".join(f"{json.dumps(k)}: {json.dumps(v)}" for k, v in cases.items()))
        f.write("\n}\n")


if __name__ == "__main__":
    main()
