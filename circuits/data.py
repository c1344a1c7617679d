"""Data sets: in memory when they fit, a DataLoader over an ImageFolder tree when they do not.

A data set is named by a string, optionally with options: ``"mnist"``, ``"cifar10"``,
``"cifar100:augment=false"``, ``"imagenet:image_size=224,workers=8"``, ``"fake_cifar10:train=512"``.

- ``mnist``, ``fashion_mnist``: torchvision's raw files under ROOT/MNIST/raw (FashionMNIST/raw),
  normalised, held in memory; batches are slices of one tensor in a seeded order per epoch.
- ``cifar10``, ``cifar100``: ``torchvision.datasets.CIFAR10/100(ROOT, download=False)``, in
  memory; training batches get the standard augmentation (random 32×32 crop of the image padded
  by 4, horizontal flip), drawn per image from a generator seeded by (seed, epoch).
- ``imagenet``: ``torchvision.datasets.ImageFolder`` on ROOT/imagenet/train and ROOT/imagenet/val
  (one folder per class; ROOT itself may hold train/ and val/), read by a DataLoader:
  RandomResizedCrop(image_size) + flip for training, Resize(image_size·256/224) +
  CenterCrop(image_size) for evaluation. Options: ``image_size`` (224), ``workers``, ``decoder``:
  ``pil`` (ImageFolder's PIL decoding, the default) or ``torchvision`` (``torchvision.io.decode_image``
  to a uint8 tensor, cropped and resized as a tensor with antialiasing; the same images up to
  decoding and resampling differences, see benchmarks/data_pipeline.py for its speed).
- ``fake_cifar10``, ``fake_cifar100``: generated CIFAR-shaped data (class templates plus noise),
  for tests and smoke runs; options ``train`` and ``test`` (sizes).
- ``fake_imagenet``: generated ImageNet-shaped data in memory (1000 classes, 224², class templates
  plus noise); options ``train``, ``test``, ``classes``, ``image_size``.

Every load checks the data: MNIST-like files hold 60000 (train) and 10000 (t10k) items, images
and labels pair up, MNIST's files match their known md5 (``MD5``; torchvision's md5 for .gz
files), so swapped train/test files are named as such; CIFAR sets hold 50000/10000 images
(torchvision checks each file's md5); ImageNet's train/ and val/ are two folders, val/ the smaller.

The validation split (``val_size`` > 0) is the last ``val_size`` cells of a fixed permutation
(seed 0) of the training set, the same for every run, removed from "train" and evaluated
without augmentation. "test" is the official test set (ImageNet: its validation set).
"""
from __future__ import annotations

import copy
import gzip
import hashlib
import os
import struct
from dataclasses import dataclass
from typing import Callable

import torch

from circuits.errors import DataError

# name: (torchvision class name, folder, files that must exist, mean, std)
DATASETS = {
    "mnist": ("MNIST", "MNIST/raw", ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                                      "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"), 0.1307, 0.3081),
    "fashion_mnist": ("FashionMNIST", "FashionMNIST/raw", ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                                                           "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"), 0.2860, 0.3530),
}
# name: (torchvision class name, folder, classes, per-channel mean, std)
CIFAR = {
    "cifar10": ("CIFAR10", "cifar-10-batches-py", 10, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ("CIFAR100", "cifar-100-python", 100, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}
# Integrity: split sizes of the known data sets, and md5s of MNIST's files (uncompressed, as
# torchvision reads them: the digests of the official files once unpacked; torchvision's own
# ``resources`` md5s cover the .gz downloads and are checked when only those are present)
SIZES = {"mnist": (60000, 10000), "fashion_mnist": (60000, 10000), "cifar10": (50000, 10000), "cifar100": (50000, 10000)}
MD5 = {"mnist": {"train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
                 "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
                 "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
                 "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637"}}
IMAGENET_TRAIN, IMAGENET_VAL = 1_281_167, 50_000  # ILSVRC-2012
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
DECODERS = ("pil", "torchvision")  # ImageNet's JPEG decoding: PIL (ImageFolder's own), torchvision.io
OPTIONS = {  # the options each kind of data set takes, with their defaults
    "memory": {},
    "cifar": {"augment": True},
    "fake": {"augment": True, "train": 1024, "test": 256},
    "imagenet": {"augment": True, "image_size": 224, "workers": min(8, os.cpu_count() or 1), "decoder": "pil"},
    "fake_imagenet": {"train": 256, "test": 64, "classes": 1000, "image_size": 224},
}


@dataclass
class Split:
    """Images (N × C × H × W, float, normalised) and integer labels (N), in memory.

    ``augment(x, generator)``: applied to each training batch (not when evaluating)."""

    x: torch.Tensor
    y: torch.Tensor
    augment: Callable | None = None

    def __len__(self) -> int:
        return len(self.y)

    def to(self, device) -> "Split":
        return Split(self.x.to(device), self.y.to(device), self.augment)

    def head(self, n: int) -> "Split":
        """The first ``n`` cells (smoke runs and tests)."""
        return Split(self.x[:n], self.y[:n], self.augment)


class LoaderSplit:
    """A data set too large for memory, read by a ``torch.utils.data.DataLoader`` (``workers``
    processes) and moved batch by batch to ``device``. The order of an epoch is a function of
    (seed, epoch), and so are the workers' augmentation seeds."""

    def __init__(self, dataset, workers: int = 0, device="cpu"):
        self.dataset, self.workers, self.device = dataset, workers, torch.device(device)

    def __len__(self) -> int:
        return len(self.dataset)

    def to(self, device) -> "LoaderSplit":
        return LoaderSplit(self.dataset, self.workers, device)

    def head(self, n: int) -> "LoaderSplit":
        return LoaderSplit(torch.utils.data.Subset(self.dataset, range(min(n, len(self)))), self.workers, self.device)

    def batches(self, batch_size: int, seed: int | None = None, epoch: int = 0, shard: tuple[int, int] = (0, 1)):
        """This process's part of every global batch (``shard`` = (rank, world size)): the
        DataLoader reads only those images. Shuffled (``seed``): the global order is the one a
        ``RandomSampler`` seeded by (seed, epoch) gives, as with one process; unshuffled
        (evaluation): the rank's contiguous block of the split, read in order."""
        rank, world = shard
        generator, dataset = None, self.dataset
        if seed is not None:
            generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
            order = torch.utils.data.RandomSampler(dataset, generator=generator)
            # the loader draws its workers' base seed from ``generator`` before the sampler's
            # permutation, as a plain DataLoader(sampler=RandomSampler) does: the same order and seeds
            sampler = GlobalBatchShards(order, batch_size, rank, world)
        else:
            if world > 1:
                dataset = torch.utils.data.Subset(dataset, shard_range(len(dataset), rank, world))
            sampler = torch.utils.data.BatchSampler(torch.utils.data.SequentialSampler(dataset), batch_size, False)
        loader = torch.utils.data.DataLoader(
            dataset, batch_sampler=sampler, num_workers=self.workers,
            pin_memory=self.device.type == "cuda", generator=generator)
        for x, y in loader:
            yield x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)


def shard_range(n: int, rank: int, world: int) -> range:
    """Rank ``rank``'s contiguous block of ``n`` items split into ``world`` parts (as ``tensor_split``)."""
    size, extra = divmod(n, world)
    start = rank * size + min(rank, extra)
    return range(start, start + size + (rank < extra))


class GlobalBatchShards(torch.utils.data.Sampler):
    """A batch sampler: the global order of ``order`` (a sampler) cut into global batches of
    ``batch_size``, of which rank ``rank`` of ``world`` gets its ``shard_range`` share only."""

    def __init__(self, order, batch_size: int, rank: int = 0, world: int = 1):
        self.order, self.batch_size, self.rank, self.world = order, batch_size, rank, world

    def __len__(self) -> int:
        return -(-len(self.order) // self.batch_size)

    def __iter__(self):
        batch = []
        for index in self.order:
            batch.append(index)
            if len(batch) == self.batch_size:
                yield self._mine(batch)
                batch = []
        if batch:
            yield self._mine(batch)

    def _mine(self, batch: list) -> list:
        part = shard_range(len(batch), self.rank, self.world)
        return batch[part.start:part.stop]


class CropFlip:
    """The CIFAR augmentation on a batch: pad by ``padding`` with ``fill`` (per channel: the
    normalised value of black, as torchvision's RandomCrop pads before normalising), take a
    random H × W crop per image, and flip it horizontally with probability 1/2."""

    def __init__(self, padding: int, fill):
        self.padding = padding
        self.fill = torch.as_tensor(fill, dtype=torch.float32)

    def __call__(self, x: torch.Tensor, generator: torch.Generator, part: tuple[int, int] | None = None) -> torch.Tensor:
        """``part`` = (offset, n_global): ``x`` is rows offset.. of a global batch of n_global
        images, and gets those rows' draws (the draws are made for the whole global batch)."""
        n, c, h, w = x.shape
        offset, total = part if part is not None else (0, n)
        p = self.padding
        padded = self.fill.to(x.device, x.dtype).view(1, c, 1, 1).expand(n, c, h + 2 * p, w + 2 * p).clone()
        padded[:, :, p:p + h, p:p + w] = x
        mine = slice(offset, offset + n)
        dy = torch.randint(0, 2 * p + 1, (total, 1), generator=generator)[mine]
        dx = torch.randint(0, 2 * p + 1, (total, 1), generator=generator)[mine]
        flip = (torch.rand(total, 1, generator=generator) < 0.5)[mine]
        rows = (dy + torch.arange(h)).to(x.device)
        cols = dx + torch.arange(w)
        cols = torch.where(flip, cols.flip(1), cols).to(x.device)
        index = torch.arange(n, device=x.device)[:, None, None]
        return padded.permute(0, 2, 3, 1)[index, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2).contiguous()


def parse(spec: str) -> tuple[str, dict]:
    """``"name:key=value,..."`` → (normalised name, {key: value string})."""
    name, _, rest = spec.partition(":")
    options = {}
    for item in filter(None, (s.strip() for s in rest.split(","))):
        key, sep, value = item.partition("=")
        if not sep:
            raise DataError(f"data set {spec!r}: option {item!r} is not key=value")
        options[key.strip()] = value.strip()
    return name.strip().lower().replace("-", "_"), options


def _options(spec: str, kind: str, given: dict) -> dict:
    known = OPTIONS[kind]
    unknown = sorted(set(given) - set(known))
    if unknown:
        raise DataError(f"data set {spec!r}: unknown option {unknown[0]!r} (options: {', '.join(known) or 'none'})")
    out = dict(known)
    for key, value in given.items():
        if isinstance(known[key], str):
            if value not in DECODERS:
                raise DataError(f"data set {spec!r}: {key}={value!r} is not one of {', '.join(DECODERS)}")
            out[key] = value
            continue
        try:
            if isinstance(known[key], bool):
                if value.lower() not in ("true", "false", "1", "0"):
                    raise ValueError
                out[key] = value.lower() in ("true", "1")
            else:
                out[key] = int(value)
                if out[key] < (0 if key == "workers" else 1):
                    raise ValueError
        except ValueError:
            raise DataError(f"data set {spec!r}: {key}={value!r} is not a valid {type(known[key]).__name__}") from None
    return out


def normalisation(name: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(per-channel mean, sd) with which data set ``name``'s images were normalised: pixel values
    in [0, 1] are (x_normalised · sd + mean). For probes that perturb images in pixel space."""
    key, _ = parse(name)
    key = key[5:] if key.startswith("fake_") and key != "fake_imagenet" else key
    if key in DATASETS:
        return (DATASETS[key][3],), (DATASETS[key][4],)
    if key in CIFAR:
        return tuple(CIFAR[key][3]), tuple(CIFAR[key][4])
    if key in ("imagenet", "fake_imagenet"):
        return IMAGENET_MEAN, IMAGENET_STD
    raise DataError(f"unknown data set {name!r}: no normalisation known")


def load(name: str, root: str, val_size: int = 0) -> dict:
    """{"train", "val" (if val_size > 0), "test"} splits of data set ``name`` under ``root``."""
    key, given = parse(name)
    if key in DATASETS:
        _options(name, "memory", given)
        splits = _load_mnist_like(key, root)
    elif key in CIFAR:
        splits = _load_cifar(key, root, _options(name, "cifar", given))
    elif key.startswith("fake_") and key[5:] in CIFAR:
        splits = _fake_cifar(key[5:], _options(name, "fake", given))
    elif key == "imagenet":
        return _load_imagenet(root, _options(name, "imagenet", given), val_size)
    elif key == "fake_imagenet":
        splits = _fake_imagenet(_options(name, "fake_imagenet", given))
    else:
        known = [*DATASETS, *CIFAR, *(f"fake_{k}" for k in CIFAR), "imagenet", "fake_imagenet"]
        raise DataError(f"unknown data set {name!r} (known: {', '.join(known)})")
    return _hold_out(splits, val_size)


def _hold_out(splits: dict, val_size: int) -> dict:
    if not val_size:
        return splits
    train = splits["train"]
    if not 0 < val_size < len(train):
        raise DataError(f"val_size={val_size} must be between 1 and {len(train) - 1}")
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))
    keep, held = order[:-val_size], order[-val_size:]
    splits["val"] = Split(train.x[held], train.y[held])
    splits["train"] = Split(train.x[keep], train.y[keep], train.augment)
    return splits


def _load_mnist_like(key: str, root: str) -> dict:
    cls_name, folder, files, mean, std = DATASETS[key]
    where = os.path.join(os.path.abspath(root), folder)
    missing = [f for f in files if not os.path.exists(os.path.join(where, f))
               and not os.path.exists(os.path.join(where, f + ".gz"))]
    if missing:
        raise DataError(
            f"{cls_name} not found: looked in {where} for {', '.join(missing)}. Pass --data-root DIR "
            f"with DIR/{folder}/ holding the four files (torchvision's layout; on a machine with internet "
            f"`torchvision.datasets.{cls_name}(DIR, download=True)` fetches them).")
    check_idx_files(key, where)
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
    return check_sizes(key, where, splits)


def _idx_count(path: str) -> tuple[int, ...]:
    """The dimensions in an IDX file's header (N, 28, 28 for images; N for labels)."""
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            head = f.read(4)
            if len(head) < 4 or head[:2] != b"\0\0":
                raise DataError(f"{path} is not an IDX file (MNIST's format): bad header")
            ndim = head[3]
            return struct.unpack(f">{ndim}I", f.read(4 * ndim))
    except (OSError, struct.error, EOFError) as err:
        raise DataError(f"{path} could not be read ({err}); the file may be truncated or corrupt") from None


def file_hash(path: str, algorithm: str = "md5") -> str:
    """The hex digest of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _known_md5(key: str, name: str) -> str | None:
    """The md5 of file ``name`` of data set ``key`` (a .gz name: torchvision's own)."""
    if name.endswith(".gz"):
        import torchvision
        resources = getattr(getattr(torchvision.datasets, DATASETS[key][0]), "resources", [])
        return dict((os.path.basename(url), md5) for url, md5 in resources).get(name)
    return MD5.get(key, {}).get(name)


def check_idx_files(key: str, where: str) -> None:
    """MNIST-like files: each holds its split's number of items (a swapped train/test pair is
    caught: the file named t10k holds 10000), images and labels pair up, and the content is the
    known one where its checksum is known. DataError naming the file otherwise."""
    cls_name, _, files, _, _ = DATASETS[key]
    sizes = dict(zip(("train", "test"), SIZES[key]))
    counts = {}
    for name in files:
        path = os.path.join(where, name)
        path = path if os.path.exists(path) else path + ".gz"
        split = "train" if name.startswith("train") else "test"
        counts[name] = _idx_count(path)[0]
        if counts[name] != sizes[split]:
            other = "test" if split == "train" else "train"
            hint = (f": it looks like the {other} file (are the train and test files swapped?)"
                    if counts[name] == sizes[other] else "")
            raise DataError(f"{path} holds {counts[name]} items; {cls_name}'s {split} file holds "
                            f"{sizes[split]}{hint}")
        known = _known_md5(key, os.path.basename(path))
        if known and file_hash(path) != known:
            raise DataError(f"{path} is not {cls_name}'s {name} (md5 differs from the known {known}); "
                            "the file is corrupt or from another data set: fetch it again")


def check_sizes(key: str, where: str, splits: dict) -> dict:
    """The known number of train and test items, images and labels paired, train ≠ test."""
    for split, expected in zip(("train", "test"), SIZES[key]):
        s = splits[split]
        if len(s.x) != len(s.y):
            raise DataError(f"{key} under {where}: the {split} split has {len(s.x)} images but {len(s.y)} labels")
        if len(s.y) != expected:
            raise DataError(f"{key} under {where}: the {split} split has {len(s.y)} items, not {expected} "
                            "(a truncated file, or train and test swapped?)")
    return splits


def num_classes(splits: dict) -> int | None:
    """The number of classes of a data set (largest label + 1; an ImageFolder's class list)."""
    n = 0
    for split in splits.values():
        if isinstance(split, Split):
            n = max(n, int(split.y.max()) + 1 if len(split.y) else 0)
        else:
            dataset = split.dataset
            while isinstance(dataset, torch.utils.data.Subset):
                dataset = dataset.dataset
            n = max(n, len(getattr(dataset, "classes", [])))
    return n or None


def _normalise(images: torch.Tensor, mean, std) -> torch.Tensor:
    """uint8 N × H × W × C → float N × C × H × W, normalised per channel."""
    x = images.permute(0, 3, 1, 2).float().div_(255)
    return x.sub_(torch.tensor(mean).view(1, -1, 1, 1)).div_(torch.tensor(std).view(1, -1, 1, 1))


def _cifar_augment(options: dict, mean, std):
    return CropFlip(4, [-m / s for m, s in zip(mean, std)]) if options["augment"] else None


def _load_cifar(key: str, root: str, options: dict) -> dict:
    cls_name, folder, _, mean, std = CIFAR[key]
    where = os.path.join(os.path.abspath(root), folder)
    if not os.path.isdir(where):
        raise DataError(f"{cls_name} not found: looked for the folder {where}. Pass --data-root DIR with "
                        f"DIR/{folder}/ as torchvision unpacks it (on a machine with internet "
                        f"`torchvision.datasets.{cls_name}(DIR, download=True)` fetches it), or try the "
                        f"experiment end to end on generated data with --set data=fake_{key} (options: train, test).")
    import torchvision

    try:
        sets = {split: getattr(torchvision.datasets, cls_name)(root, train=(split == "train"), download=False)
                for split in ("train", "test")}
    except (RuntimeError, ValueError, OSError) as err:
        raise DataError(f"{cls_name} under {where} could not be read ({err}); the files may be truncated or corrupt") from None
    augment = _cifar_augment(options, mean, std)
    return check_sizes(key, where, {split: Split(_normalise(torch.from_numpy(ds.data), mean, std), torch.tensor(ds.targets).long(),
                         augment if split == "train" else None)
            for split, ds in sets.items()})


def _fake_cifar(key: str, options: dict) -> dict:
    """CIFAR-shaped images: a fixed random template per class (seed 0) plus noise, as uint8."""
    _, _, classes, mean, std = CIFAR[key]
    g = torch.Generator().manual_seed(0)
    templates = torch.rand(classes, 32, 32, 3, generator=g) * 255
    splits = {}
    for split in ("train", "test"):
        n = options[split]
        y = torch.randint(0, classes, (n,), generator=g)
        images = (0.5 * templates[y] + 0.5 * torch.rand(n, 32, 32, 3, generator=g) * 255).to(torch.uint8)
        splits[split] = Split(_normalise(images, mean, std), y)
    splits["train"].augment = _cifar_augment(options, mean, std)
    return splits


def _fake_imagenet(options: dict) -> dict:
    """ImageNet-shaped images (3 × image_size², ``classes`` labels, normalised with ImageNet's
    mean and sd), in memory: per class a fixed random 8 × 8 colour template (seeded by the class)
    scaled up, plus noise; labels drawn uniformly (seed 0). For trying an ImageNet experiment end
    to end without the data."""
    import torch.nn.functional as F

    size, classes = options["image_size"], options["classes"]
    if size < 32 or classes < 2:
        raise DataError(f"fake_imagenet: image_size must be ≥ 32 and classes ≥ 2, got {size} and {classes}")
    g = torch.Generator().manual_seed(0)
    splits = {}
    for split in ("train", "test"):
        y = torch.randint(0, classes, (options[split],), generator=g)
        small = torch.stack([torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(int(c))) for c in y])
        images = 0.6 * F.interpolate(small, size=(size, size), mode="nearest") + 0.4 * torch.rand(len(y), 3, size, size, generator=g)
        mean, std = torch.tensor(IMAGENET_MEAN)[:, None, None], torch.tensor(IMAGENET_STD)[:, None, None]
        splits[split] = Split((images - mean) / std, y)
    return splits


def _load_imagenet(root: str, options: dict, val_size: int) -> dict:
    root = os.path.abspath(root)
    candidates = [os.path.join(root, "imagenet"), os.path.join(root, "ImageNet"), root]
    where = next((c for c in candidates if os.path.isdir(os.path.join(c, "train"))
                  and os.path.isdir(os.path.join(c, "val"))), None)
    if where is None:
        raise DataError(f"ImageNet not found: looked for train/ and val/ in {candidates[0]} (or {root}), "
                        "each holding one folder of images per class (torchvision.datasets.ImageFolder's layout); "
                        "pass --data-root DIR, or try the experiment end to end on generated data with "
                        "--set data=fake_imagenet (options: train, test, classes, image_size)")
    import torchvision

    training, evaluation, loader = imagenet_transforms(options)
    try:
        train = torchvision.datasets.ImageFolder(os.path.join(where, "train"), training, loader=loader)
        test = torchvision.datasets.ImageFolder(os.path.join(where, "val"), evaluation, loader=loader)
    except (RuntimeError, FileNotFoundError, OSError) as err:
        raise DataError(f"ImageNet under {where} could not be read: {err}") from None
    if train.classes != test.classes:
        raise DataError(f"ImageNet under {where}: train/ and val/ hold different classes "
                        f"({len(train.classes)} and {len(test.classes)} folders)")
    check_imagenet(where, train, test)
    workers = options["workers"]
    splits = {"test": LoaderSplit(test, workers)}
    if val_size:
        if not 0 < val_size < len(train):
            raise DataError(f"val_size={val_size} must be between 1 and {len(train) - 1}")
        order = torch.randperm(len(train), generator=torch.Generator().manual_seed(0)).tolist()
        held_out = copy.copy(train)  # the same file list, read with the evaluation transform
        held_out.transform = evaluation
        splits["val"] = LoaderSplit(torch.utils.data.Subset(held_out, order[-val_size:]), workers)
        train = torch.utils.data.Subset(train, order[:-val_size])
    splits["train"] = LoaderSplit(train, workers)
    return splits


def read_image(path: str) -> torch.Tensor:
    """An image file as a uint8 3 × H × W tensor (RGB; grey and CMYK JPEGs converted), by torchvision.io."""
    from torchvision.io import ImageReadMode, decode_image, read_file

    return decode_image(read_file(path), mode=ImageReadMode.RGB)


def imagenet_transforms(options: dict):
    """(training transform, evaluation transform, ImageFolder loader) of the ImageNet options."""
    import torchvision
    from torchvision import transforms as T

    size = options["image_size"]
    if options.get("decoder", "pil") == "torchvision":  # uint8 tensors: crop and resize, then to float
        normalise = [T.ConvertImageDtype(torch.float32), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
        loader = read_image
    else:
        normalise = [T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
        loader = torchvision.datasets.folder.default_loader
    evaluation = T.Compose([T.Resize(round(size * 256 / 224), antialias=True), T.CenterCrop(size), *normalise])
    training = (T.Compose([T.RandomResizedCrop(size, antialias=True), T.RandomHorizontalFlip(), *normalise])
                if options["augment"] else evaluation)
    return training, evaluation, loader


def check_imagenet(where: str, train, test) -> None:
    """train/ and val/ are not one folder, and not swapped (ILSVRC-2012: 1,281,167 and 50,000 images)."""
    if os.path.realpath(train.root) == os.path.realpath(test.root):
        raise DataError(f"ImageNet under {where}: train/ and val/ are the same folder")
    if not len(test):
        raise DataError(f"ImageNet under {where}: val/ holds no images")
    if len(test) > len(train) or (len(test) == IMAGENET_TRAIN and len(train) == IMAGENET_VAL):
        raise DataError(f"ImageNet under {where}: val/ holds more images ({len(test)}) than train/ "
                        f"({len(train)}): are train/ and val/ swapped?")


def batches(split, batch_size: int, seed: int | None = None, epoch: int = 0, shard: tuple[int, int] = (0, 1)):
    """Yield (x, y) batches; shuffled (and augmented, for a split that has an augmentation) in
    an order given by (seed, epoch) if seed is not None.

    ``shard`` = (rank, world size): yield only this process's part, and read only it. Shuffled:
    of every global batch, its ``shard_range`` share (the rows ``tensor_split`` gives the rank),
    augmented with the draws those rows get in the global batch, so the union over ranks is the
    one-process batch exactly. Unshuffled (evaluation): the rank's contiguous block of the split."""
    if isinstance(split, LoaderSplit):
        yield from split.batches(batch_size, seed, epoch, shard)
        return
    rank, world = shard
    n = len(split)
    if seed is None:
        block = shard_range(n, rank, world)
        for start in range(block.start, block.stop, batch_size):
            stop = min(start + batch_size, block.stop)
            yield split.x[start:stop], split.y[start:stop]
        return
    g = torch.Generator().manual_seed(seed * 100_003 + epoch)
    order = torch.randperm(n, generator=g).to(split.x.device)
    augment_g = torch.Generator().manual_seed(seed * 100_003 + epoch + 2**40) if split.augment else None
    for start in range(0, n, batch_size):
        idx = order[start:start + batch_size]
        if world > 1:
            part = shard_range(len(idx), rank, world)
            mine = idx[part.start:part.stop]
            x = split.x[mine]
            if split.augment is not None:
                x = split.augment(x, augment_g, part=(part.start, len(idx)))
            yield x, split.y[mine]
            continue
        x = split.x[idx]
        if split.augment is not None:
            x = split.augment(x, augment_g)
        yield x, split.y[idx]
