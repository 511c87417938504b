#!/usr/bin/env python3
"""Evaluate a trained model on the test split and write metrics JSON."""
import argparse
import json
import math
import os


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("model", help="model JSON from train.py")
    ap.add_argument("features", help="features JSON from preprocess.py")
    ap.add_argument("out", help="metrics JSON to write")
    args = ap.parse_args()

    with open(args.model) as f:
        model = json.load(f)
    with open(args.features) as f:
        test = json.load(f)["test"]

    w, b = model["weights"], model["bias"]
    correct, loss = 0, 0.0
    for x, y in zip(test["X"], test["y"]):
        z = b + sum(wj * xj for wj, xj in zip(w, x))
        p = 1.0 / (1.0 + math.exp(-z)) if z >= 0 else math.exp(z) / (1.0 + math.exp(z))
        correct += int((p >= 0.5) == bool(y))
        loss -= math.log(max(p if y else 1.0 - p, 1e-12))
    n = len(test["y"])
    metrics = {"test_rows": n, "accuracy": round(correct / n, 4), "log_loss": round(loss / n, 4)}

    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(metrics, f, indent=2, sort_keys=True)
    print(f"accuracy {metrics['accuracy']:.4f}  log_loss {metrics['log_loss']:.4f} -> {args.out}")


if __name__ == "__main__":
    main()
