#!/usr/bin/env python3
"""Derives the example's embedded data set from the State of the Union
addresses: passages of 120-200 words in the shape of CommonLit's train.csv
(id, url_legal, license, excerpt, target, standard_error) plus `address`,
the address a passage comes from (so folds can keep an address together).
The target is the address's year.

  make_sotu_passages.py SOTU_JSONL OUT_CSV_GZ

Deterministic: fixed seed, sentence splitting by a fixed rule, gzip with a
zero timestamp, so re-running gives the same bytes. Source and license:
README.md beside this file.
"""
import csv
import gzip
import hashlib
import io
import json
import random
import re
import sys

SEED = 3377
PASSAGES_PER_ADDRESS = 12
MIN_WORDS, MAX_WORDS = 120, 200
# A sentence ends at . ! or ? (optionally closed by a quote or bracket)
# followed by white space and an upper-case letter, digit or opening quote.
SENTENCE_END = re.compile(r'(?<=[.!?])["\')\]]?\s+(?=["\'(\[]?[A-Z0-9])')


def passages(text):
    """Consecutive sentences grouped into passages of MIN..MAX words."""
    out, current, words = [], [], 0
    for sentence in SENTENCE_END.split(text):
        n = len(sentence.split())
        if n == 0:
            continue
        if words + n > MAX_WORDS:
            if words >= MIN_WORDS:
                out.append(" ".join(current))
            current, words = [], 0
            if n > MAX_WORDS:  # a single overlong sentence: skip it
                continue
        current.append(sentence.strip())
        words += n
        if words >= MIN_WORDS and words + 25 > MAX_WORDS:
            out.append(" ".join(current))
            current, words = [], 0
    if words >= MIN_WORDS:
        out.append(" ".join(current))
    return out


def main():
    source, target = sys.argv[1], sys.argv[2]
    rng = random.Random(SEED)
    rows = []
    with open(source, encoding="utf-8") as f:
        addresses = [json.loads(line) for line in f]
    for number, address in enumerate(addresses):
        label = f"{address['year']} {address['name']}"
        candidates = passages(address["text"])
        chosen = sorted(rng.sample(range(len(candidates)),
                                   min(PASSAGES_PER_ADDRESS, len(candidates))))
        for index in chosen:
            excerpt = candidates[index]
            pid = hashlib.sha1(f"{number}:{index}:{excerpt}".encode()).hexdigest()[:9]
            rows.append([pid, "", "Public Domain (U.S. Government work)", excerpt,
                         address["year"], 0.0, label])
    buffer = io.StringIO()
    writer = csv.writer(buffer, quoting=csv.QUOTE_MINIMAL, lineterminator="\n")
    writer.writerow(["id", "url_legal", "license", "excerpt", "target", "standard_error",
                     "address"])
    writer.writerows(rows)
    with open(target, "wb") as raw:
        with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=9) as gz:
            gz.write(buffer.getvalue().encode("utf-8"))
    print(f"{len(rows)} passages from {len(addresses)} addresses -> {target}")


if __name__ == "__main__":
    main()
