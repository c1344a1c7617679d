"""Image data sets: CIFAR augmentation, generated CIFAR, ImageFolder through a DataLoader, and
errors that name the folder."""
import numpy as np
import pytest
import torch

from circuits import DataError
from circuits.data import CropFlip, LoaderSplit, Split, batches, load, parse


def test_crop_flip_is_a_padded_crop_and_a_flip():
    x = torch.randn(6, 3, 8, 8)
    fill = torch.tensor([-1.0, -2.0, -3.0])
    out = CropFlip(2, fill)(x, torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(0)  # replay the draws
    dy, dx = torch.randint(0, 5, (6, 1), generator=g), torch.randint(0, 5, (6, 1), generator=g)
    flip = torch.rand(6, 1, generator=g) < 0.5
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for c in range(3):
        padded[:, c][padded[:, c] == 0] = fill[c]
    for i in range(6):
        crop = padded[i, :, dy[i, 0]:dy[i, 0] + 8, dx[i, 0]:dx[i, 0] + 8]
        torch.testing.assert_close(out[i], crop.flip(2) if flip[i, 0] else crop)


def test_fake_cifar_batches_are_augmented_reproducibly():
    splits = load("fake_cifar10:train=40,test=10", "unused", val_size=8)
    assert {k: len(v) for k, v in splits.items()} == {"train": 32, "val": 8, "test": 10}
    assert splits["train"].x.shape[1:] == (3, 32, 32) and splits["train"].augment is not None
    assert splits["val"].augment is None and splits["test"].augment is None
    a = [x for x, _ in batches(splits["train"], 16, seed=0, epoch=0)]
    b = [x for x, _ in batches(splits["train"], 16, seed=0, epoch=0)]
    c = [x for x, _ in batches(splits["train"], 16, seed=0, epoch=1)]
    assert all(torch.equal(u, v) for u, v in zip(a, b)) and not torch.equal(a[0], c[0])
    plain = next(batches(splits["test"], 10))[0]
    assert torch.equal(plain, splits["test"].x)  # evaluation: no augmentation
    head = splits["train"].head(5)
    assert len(head) == 5 and head.augment is splits["train"].augment
    assert load("fake_cifar10:augment=false,train=4,test=4", "x")["train"].augment is None


def test_data_errors_name_what_is_missing(tmp_path):
    with pytest.raises(DataError, match=r"CIFAR10 not found: looked for the folder .*empty.*cifar-10-batches-py"):
        load("cifar10", str(tmp_path / "empty"))
    with pytest.raises(DataError, match=r"CIFAR100 not found.*cifar-100-python"):
        load("cifar100", str(tmp_path / "empty"))
    with pytest.raises(DataError, match=r"ImageNet not found: looked for train/ and val/ in .*imagenet"):
        load("imagenet", str(tmp_path / "empty"))
    with pytest.raises(DataError, match=r"unknown option 'size' \(options: augment, image_size, workers, decoder\)"):
        load("imagenet:size=3", str(tmp_path))
    with pytest.raises(DataError, match=r"image_size='big' is not a valid int"):
        load("imagenet:image_size=big", str(tmp_path))
    with pytest.raises(DataError, match="unknown data set 'svhn'.*cifar10.*imagenet"):
        load("svhn", str(tmp_path))
    assert parse("Fake-CIFAR10: train=3 , test=2") == ("fake_cifar10", {"train": "3", "test": "2"})


def image_folder(root, classes=("n01", "n02"), train=6, val=2, size=(20, 24)):
    """A tiny ImageNet-like tree of random PNGs: root/imagenet/{train,val}/CLASS/*.png."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in [("train", train), ("val", val)]:
        for cls in classes:
            folder = root / "imagenet" / split / cls
            folder.mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return root


def test_imagenet_folder_through_a_dataloader(tmp_path):
    root = image_folder(tmp_path)
    splits = load("imagenet:image_size=16,workers=0", str(root), val_size=3)
    assert all(isinstance(s, LoaderSplit) for s in splits.values())
    assert {k: len(v) for k, v in splits.items()} == {"train": 9, "val": 3, "test": 4}
    x, y = next(batches(splits["train"], 4, seed=0, epoch=0))
    assert x.shape == (4, 3, 16, 16) and x.dtype == torch.float32 and y.dtype == torch.long
    order = [y for _, y in batches(splits["train"], 9, seed=0, epoch=0)]
    again = [y for _, y in batches(splits["train"], 9, seed=0, epoch=0)]
    assert torch.equal(order[0], again[0])
    xv, _ = next(batches(splits["val"], 3))
    xv2, _ = next(batches(splits["val"], 3))
    assert torch.equal(xv, xv2)  # evaluation transform: Resize + CenterCrop, no randomness
    assert len(splits["train"].head(2)) == 2
    for too_many in (12, 13):  # 12 training images: a validation split must leave at least one
        with pytest.raises(DataError, match=f"val_size={too_many} must be between 1 and 11"):
            load("imagenet:image_size=16,workers=0", str(root), val_size=too_many)
    (tmp_path / "imagenet" / "val" / "n03").mkdir()
    from PIL import Image
    Image.new("RGB", (8, 8)).save(tmp_path / "imagenet" / "val" / "n03" / "a.png")
    with pytest.raises(DataError, match="train/ and val/ hold different classes"):
        load("imagenet", str(root))


def test_split_to_keeps_augmentation():
    s = Split(torch.zeros(2, 1, 4, 4), torch.zeros(2, dtype=torch.long), CropFlip(1, [0.0]))
    assert s.to("cpu").augment is s.augment


def test_torchvision_decoder_gives_pils_evaluation_tensors(tmp_path):
    """decoder=torchvision (torchvision.io, tensor transforms): on lossless PNGs whose shorter side
    is already Resize's (16 for image_size 14), the evaluation tensors equal PIL's bit for bit;
    training batches have the same shape and dtype; an unknown decoder is named."""
    root = image_folder(tmp_path, size=(16, 24))
    pil = load("imagenet:image_size=14,workers=0", str(root))
    tv = load("imagenet:image_size=14,workers=0,decoder=torchvision", str(root))
    a, b = next(batches(pil["test"], 4)), next(batches(tv["test"], 4))
    assert a[0].shape == (4, 3, 14, 14) and torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    x, _ = next(batches(tv["train"], 4, seed=0, epoch=0))
    assert x.shape == (4, 3, 14, 14) and x.dtype == torch.float32
    with pytest.raises(DataError, match="decoder='cv2' is not one of pil, torchvision"):
        load("imagenet:decoder=cv2", str(root))
