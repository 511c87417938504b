#!/usr/bin/env python3
"""Read every CSV shard in a directory, standardise features, split train/test."""
import argparse
import csv
import glob
import json
import math
import os


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("raw_dir", help="directory holding *.csv shards")
    ap.add_argument("out", help="features JSON to write")
    ap.add_argument("--test-every", type=int, default=5,
                    help="every N-th row goes to the test split")
    args = ap.parse_args()

    shards = sorted(glob.glob(os.path.join(args.raw_dir, "*.csv")))
    if not shards:
        raise SystemExit(f"no *.csv shards in {args.raw_dir}")
    rows, names = [], None
    for path in shards:
        with open(path, newline="") as f:
            reader = csv.reader(f)
            header = next(reader)
            names = header[:-1]
            rows += [([float(v) for v in r[:-1]], int(r[-1])) for r in reader]

    n, d = len(rows), len(names)
    mean = [sum(x[j] for x, _ in rows) / n for j in range(d)]
    std = [math.sqrt(sum((x[j] - mean[j]) ** 2 for x, _ in rows) / n) or 1.0 for j in range(d)]

    split = {"train": {"X": [], "y": []}, "test": {"X": [], "y": []}}
    for i, (x, y) in enumerate(rows):
        part = split["test" if i % args.test_every == 0 else "train"]
        part["X"].append([round((x[j] - mean[j]) / std[j], 6) for j in range(d)])
        part["y"].append(y)

    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"features": names, "mean": mean, "std": std,
                   "shards": len(shards), **split}, f, sort_keys=True)
    print(f"{len(shards)} shards, {n} rows -> {args.out} "
          f"(train {len(split['train']['y'])}, test {len(split['test']['y'])})")


if __name__ == "__main__":
    main()
