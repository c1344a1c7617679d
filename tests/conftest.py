import os

import pytest
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
DATA_ROOT = os.environ.get("CIRCUITS_DATA_ROOT", os.path.join(REPO, "..", "shared", "data"))


@pytest.fixture
def data_root():
    if not os.path.exists(os.path.join(DATA_ROOT, "MNIST", "raw", "train-images-idx3-ubyte")):
        pytest.fail(f"the real MNIST is expected under {DATA_ROOT}/MNIST/raw (set CIRCUITS_DATA_ROOT)")
    return DATA_ROOT


@pytest.fixture(autouse=True)
def _float_defaults():
    torch.manual_seed(0)
    yield
