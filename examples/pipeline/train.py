#!/usr/bin/env python3
"""Train a logistic-regression model with full-batch gradient descent (stdlib only).

It also fingerprints its input in a child process, so a traced run has a small
process tree: train.py -> python -c (reads the features file).
"""
import argparse
import json
import math
import os
import subprocess
import sys

FINGERPRINT = (
    "import hashlib, sys\n"
    "print(hashlib.sha256(open(sys.argv[1], 'rb').read()).hexdigest())"
)


def sigmoid(z):
    return 1.0 / (1.0 + math.exp(-z)) if z >= 0 else math.exp(z) / (1.0 + math.exp(z))


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("features", help="features JSON from preprocess.py")
    ap.add_argument("model", help="model JSON to write")
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--epochs", type=int, default=20)
    args = ap.parse_args()

    fingerprint = subprocess.run([sys.executable, "-c", FINGERPRINT, args.features],
                                 check=True, capture_output=True, text=True).stdout.strip()

    with open(args.features) as f:
        data = json.load(f)
    X, Y = data["train"]["X"], data["train"]["y"]
    n, d = len(X), len(data["features"])
    w, b = [0.0] * d, 0.0
    for epoch in range(1, args.epochs + 1):
        gw, gb, loss = [0.0] * d, 0.0, 0.0
        for x, y in zip(X, Y):
            p = sigmoid(b + sum(wj * xj for wj, xj in zip(w, x)))
            err = p - y
            gb += err
            for j in range(d):
                gw[j] += err * x[j]
            loss -= math.log(max(p if y else 1.0 - p, 1e-12))
        w = [wj - args.lr * g / n for wj, g in zip(w, gw)]
        b -= args.lr * gb / n
        if epoch == 1 or epoch == args.epochs or epoch % 5 == 0:
            print(f"epoch {epoch:3d}  loss {loss / n:.4f}")

    os.makedirs(os.path.dirname(args.model) or ".", exist_ok=True)
    with open(args.model, "w") as f:
        json.dump({"features": data["features"], "mean": data["mean"], "std": data["std"],
                   "weights": [round(v, 6) for v in w], "bias": round(b, 6),
                   "lr": args.lr, "epochs": args.epochs, "train_rows": n,
                   "features_sha256": fingerprint}, f, indent=2, sort_keys=True)
    print(f"model -> {args.model}")


if __name__ == "__main__":
    main()
