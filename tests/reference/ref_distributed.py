#!/usr/bin/env python3
"""Oracle for finetune::shard_range (include/finetune/distributed.hpp).

  ref_distributed.py --out DIR

The rows of a global batch that each rank takes are numpy.array_split's
sections of the batch's rows (contiguous, the first n % world sections one
row longer), which is also how torch.tensor_split divides a batch. Writes
DIR/distributed_shards.json: per case n, world and each rank's [begin, end).
"""
import argparse
import json
from pathlib import Path

import numpy as np
import torch


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    out = Path(parser.parse_args().out)
    cases = []
    for world in (1, 2, 3, 4, 7):
        for n in (0, 1, 2, 3, 5, 13, 16, 17, 64, 100):
            sections = np.array_split(np.arange(n), world)
            ranges = []
            begin = 0
            for s in sections:
                ranges.append([begin, begin + len(s)])
                begin += len(s)
            # torch.tensor_split agrees (checked here, not assumed)
            assert [len(t) for t in torch.tensor_split(torch.arange(n), world)] == [len(s) for s in sections]
            cases.append({"n": n, "world": world, "ranges": ranges})
    lines = ",\n  ".join(json.dumps(c) for c in cases)
    (out / "distributed_shards.json").write_text('{"cases": [\n  ' + lines + "\n]}\n")


if __name__ == "__main__":
    main()
