"""Write a small sharded tensor dataset (run before the traced step)."""

import os
import sys

import torch

out, n = sys.argv[1], int(sys.argv[2])
os.makedirs(out, exist_ok=True)
g = torch.Generator().manual_seed(0)
for i in range(n):
    x = torch.randn(256, 1024, generator=g)
    y = torch.randint(0, 10, (256,), generator=g)
    torch.save({"x": x, "y": y}, os.path.join(out, f"shard-{i:03d}.pt"))
print(f"{n} shards in {out}")
