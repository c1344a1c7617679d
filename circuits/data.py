"""Data sets, read with torchvision and held in memory as tensors.

MNIST-sized sets fit in memory, so batches are slices of one normalised tensor in a seeded
order per epoch: no worker processes, the same order on every run with the same seed, and an
epoch's order can be rebuilt from (seed, epoch) alone.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from circuits.errors import DataError

# name: (torchvision class name, folder, files that must exist, mean, std)
DATASETS = {
    "mnist": ("MNIST", "MNIST/raw", ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                                      "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"), 0.1307, 0.3081),
    "fashion_mnist": ("FashionMNIST", "FashionMNIST/raw", ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                                                           "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"), 0.2860, 0.3530),
}


@dataclass
class Split:
    """Images (N × C × H × W, float, normalised) and integer labels (N)."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return len(self.y)

    def to(self, device) -> "Split":
        return Split(self.x.to(device), self.y.to(device))


def load(name: str, root: str, val_size: int = 0) -> dict[str, Split]:
    """{"train", "val" (if val_size > 0), "test"} splits of data set ``name`` under ``root``.

    The validation cells are the last ``val_size`` of a fixed permutation (seed 0) of the
    training set, the same for every run, and are removed from "train".
    """
    key = name.lower().replace("-", "_")
    if key not in DATASETS:
        raise DataError(f"unknown data set {name!r} (known: {', '.join(DATASETS)})")
    cls_name, folder, files, mean, std = DATASETS[key]
    where = os.path.join(os.path.abspath(root), folder)
    missing = [f for f in files if not os.path.exists(os.path.join(where, f))
               and not os.path.exists(os.path.join(where, f + ".gz"))]
    if missing:
        raise DataError(
            f"{cls_name} not found: looked in {where} for {', '.join(missing)}. Pass --data-root DIR "
            f"with DIR/{folder}/ holding the four files (torchvision's layout; on a machine with internet "
            f"`torchvision.datasets.{cls_name}(DIR, download=True)` fetches them).")
    import torchvision

    cls = getattr(torchvision.datasets, cls_name)
    try:
        sets = {split: cls(root, train=(split == "train"), download=False) for split in ("train", "test")}
    except (RuntimeError, ValueError, OSError) as err:
        raise DataError(f"{cls_name} under {where} could not be read ({err}); the files may be truncated or corrupt") from None
    splits = {}
    for split, ds in sets.items():
        x = ds.data.unsqueeze(1).float().div_(255).sub_(mean).div_(std)
        splits[split] = Split(x, ds.targets.clone().long())
    if val_size:
        train = splits["train"]
        if not 0 < val_size < len(train):
            raise DataError(f"val_size={val_size} must be between 1 and {len(train) - 1}")
        order = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))
        keep, held = order[:-val_size], order[-val_size:]
        splits["val"] = Split(train.x[held], train.y[held])
        splits["train"] = Split(train.x[keep], train.y[keep])
    return splits


def batches(split: Split, batch_size: int, seed: int | None = None, epoch: int = 0):
    """Yield (x, y) batches; shuffled in an order given by (seed, epoch) if seed is not None."""
    n = len(split)
    if seed is None:
        order = None
    else:
        g = torch.Generator().manual_seed(seed * 100_003 + epoch)
        order = torch.randperm(n, generator=g).to(split.x.device)
    for start in range(0, n, batch_size):
        if order is None:
            yield split.x[start:start + batch_size], split.y[start:start + batch_size]
        else:
            idx = order[start:start + batch_size]
            yield split.x[idx], split.y[idx]
