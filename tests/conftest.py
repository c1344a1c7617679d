import os

import pytest
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
# The real data: where CIRCUITS_DATA_ROOT points, else ../shared/data beside the repository (found
# from this file's location, so a clone anywhere, run from any working directory, finds its own).
DATA_ROOT_SET = bool(os.environ.get("CIRCUITS_DATA_ROOT"))
DATA_ROOT = os.path.abspath(os.environ.get("CIRCUITS_DATA_ROOT") or os.path.join(REPO, "..", "shared", "data"))
MNIST_RAW = os.path.join(DATA_ROOT, "MNIST", "raw")
MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
HAVE_MNIST = all(os.path.exists(os.path.join(MNIST_RAW, f)) or os.path.exists(os.path.join(MNIST_RAW, f + ".gz"))
                 for f in MNIST_FILES)
NO_MNIST = (f"the real MNIST is not in {MNIST_RAW}: put the data in ../shared/data beside the repository, or "
            "set CIRCUITS_DATA_ROOT=DIR with DIR/MNIST/raw holding torchvision's four MNIST files")


def require_mnist() -> str:
    """The data root holding the real MNIST. Without it: skip (the reason says how to point the
    suite at the data), or fail when CIRCUITS_DATA_ROOT was set to a folder without it."""
    if not HAVE_MNIST:
        if DATA_ROOT_SET:
            pytest.fail(f"CIRCUITS_DATA_ROOT is set, but {NO_MNIST}")
        pytest.skip(NO_MNIST)
    return DATA_ROOT


@pytest.fixture
def data_root():
    return require_mnist()


@pytest.fixture(autouse=True)
def _float_defaults():
    torch.manual_seed(0)
    yield
