"""A real CUDA training job in miniature: a DataLoader with worker processes
reads tensor shards, an MLP trains on the GPU, the checkpoint is written to a
temporary name and renamed into place (as torch users do)."""

import glob
import os
import sys
import time

import torch
from torch.utils.data import DataLoader, Dataset


class Shards(Dataset):
    def __init__(self, root):
        self.files = sorted(glob.glob(os.path.join(root, "shard-*.pt")))

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        d = torch.load(self.files[i])
        return d["x"], d["y"]


def main(root, ckpt, epochs=2):
    torch.manual_seed(0)
    dev = torch.device("cuda")
    model = torch.nn.Sequential(torch.nn.Linear(1024, 4096), torch.nn.GELU(),
                                torch.nn.Linear(4096, 10)).to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loader = DataLoader(Shards(root), batch_size=4, num_workers=2,
                        collate_fn=lambda b: (torch.cat([x for x, _ in b]),
                                              torch.cat([y for _, y in b])))
    t = time.time()
    for epoch in range(epochs):
        for x, y in loader:
            loss = torch.nn.functional.cross_entropy(model(x.to(dev)), y.to(dev))
            opt.zero_grad()
            loss.backward()
            opt.step()
    torch.cuda.synchronize()
    tmp = ckpt + ".tmp"
    torch.save(model.state_dict(), tmp)
    os.replace(tmp, ckpt)
    print(f"loss {loss.item():.4f}, {time.time() - t:.2f}s on {torch.cuda.get_device_name()}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
