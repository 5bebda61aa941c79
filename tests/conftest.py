import copy

import pytest
import torch

import nncf_wcam  # noqa: F401  (must precede nncf.torch)
from nncf_wcam.data import load_digits
from nncf_wcam.models import SmallCNN
from nncf_wcam.training import train_teacher


@pytest.fixture(scope="session")
def digits():
    """scikit-learn's real handwritten digits at 16 x 16."""
    return load_digits(image_size=16)


@pytest.fixture(scope="session")
def trained_cnn(digits):
    """A SmallCNN trained on digits (about 96 % test accuracy), shared read-only: copy before use."""
    torch.manual_seed(0)
    return train_teacher(SmallCNN(width=8), digits.train, epochs=15, lr=3e-3)


@pytest.fixture
def teacher_copy(trained_cnn):
    return copy.deepcopy(trained_cnn)


def input_info(image_size=16):
    return {"sample_size": [1, 1, image_size, image_size]}
