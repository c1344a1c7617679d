"""Data sets are what they claim: sizes, pairs, known checksums, train ≠ test (issue 18).
The command-line cases (swapped MNIST files, mixed pairs, a changed byte) are in test_faults.py."""
import pytest
import torch

from circuits import DataError
from circuits.data import Split, check_imagenet, check_sizes, load, num_classes


def split(n, m=None):
    return Split(torch.zeros(n, 1, 2, 2), torch.zeros(n if m is None else m, dtype=torch.long))


def test_real_mnist_passes_every_check(data_root):
    splits = load("mnist", data_root)
    assert (len(splits["train"]), len(splits["test"])) == (60000, 10000)
    assert num_classes(splits) == 10


def test_sizes_and_pairs_of_in_memory_sets():
    check_sizes("cifar10", "ROOT", {"train": split(50000), "test": split(10000)})
    with pytest.raises(DataError, match="the test split has 50000 items, not 10000 .*swapped"):
        check_sizes("cifar10", "ROOT", {"train": split(50000), "test": split(50000)})
    with pytest.raises(DataError, match="the train split has 50000 images but 49999 labels"):
        check_sizes("cifar100", "ROOT", {"train": split(50000, 49999), "test": split(10000)})


def test_imagenet_folders_swapped_or_shared(tmp_path):

    class Folder(list):
        def __init__(self, root, n):
            super().__init__(range(n))
            self.root = root
    check_imagenet("ROOT", Folder(str(tmp_path / "train"), 100), Folder(str(tmp_path / "val"), 10))
    with pytest.raises(DataError, match="are train/ and val/ swapped"):
        check_imagenet("ROOT", Folder(str(tmp_path / "train"), 10), Folder(str(tmp_path / "val"), 100))
    with pytest.raises(DataError, match="train/ and val/ are the same folder"):
        check_imagenet("ROOT", Folder(str(tmp_path / "train"), 10), Folder(str(tmp_path / "train"), 10))


def test_gzipped_mnist_files_are_read_and_checked_as_torchvision_ships_them(tmp_path):
    """Where a raw file is missing, its .gz (torchvision's download) is read instead, and checked
    against torchvision's own checksum of the .gz: here headers alone (the right item counts),
    so the check names the .gz file."""
    import gzip
    import struct

    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name, magic, n in (("train-images-idx3-ubyte", 0x803, 60000), ("train-labels-idx1-ubyte", 0x801, 60000),
                           ("t10k-images-idx3-ubyte", 0x803, 10000), ("t10k-labels-idx1-ubyte", 0x801, 10000)):
        dims = (n, 28, 28) if magic == 0x803 else (n,)
        with gzip.open(raw / f"{name}.gz", "wb") as f:
            f.write(struct.pack(f">I{len(dims)}I", magic, *dims))
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte\.gz"):
        load("mnist", str(tmp_path))
