#!/usr/bin/env python3
"""Write a small synthetic binary-classification dataset as CSV shards.

Each row has four numeric features and a 0/1 label drawn from a fixed logistic
model plus noise. Output is deterministic for a given --seed.
"""
import argparse
import math
import os
import random

TRUE_WEIGHTS = [1.5, -2.0, 0.7, 0.0]
TRUE_BIAS = -0.3


def make_row(rng):
    x = [rng.gauss(0.0, 1.0) for _ in TRUE_WEIGHTS]
    z = TRUE_BIAS + sum(w * v for w, v in zip(TRUE_WEIGHTS, x))
    y = 1 if rng.random() < 1.0 / (1.0 + math.exp(-z)) else 0
    x[2] = 3.0 * x[2] + 5.0  # one feature on another scale, so preprocessing matters
    return x, y


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("out_dir", help="directory for shard-NN.csv files")
    ap.add_argument("--shards", type=int, default=20)
    ap.add_argument("--rows", type=int, default=50, help="rows per shard")
    ap.add_argument("--seed", type=int, default=42)
    args = ap.parse_args()

    rng = random.Random(args.seed)
    os.makedirs(args.out_dir, exist_ok=True)
    for s in range(args.shards):
        path = os.path.join(args.out_dir, f"shard-{s:02d}.csv")
        with open(path, "w") as f:
            f.write("x1,x2,x3,x4,y\n")
            for _ in range(args.rows):
                x, y = make_row(rng)
                f.write(",".join(f"{v:.5f}" for v in x) + f",{y}\n")
    print(f"wrote {args.shards} shards x {args.rows} rows to {args.out_dir}")


if __name__ == "__main__":
    main()
