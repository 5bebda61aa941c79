"""Tests of the Intel Neural Compressor adapter: they run in an environment holding INC 3.7 (.ci/run makes one)."""

import copy

import pytest
import torch

from nncf_wcam.inc.versions import installed_inc_version

if not (installed_inc_version() or "").startswith("3.7"):
    pytest.exit(f"tests_inc needs Intel Neural Compressor 3.7 (found {installed_inc_version()}); pip install -c .ci/constraints-inc.txt -e '.[inc,test]'.", returncode=4)

from nncf_wcam.core.training import train_teacher  # noqa: E402
from nncf_wcam.zoo.datasets import load_digits  # noqa: E402
from nncf_wcam.zoo.models import SmallCNN  # noqa: E402


@pytest.fixture(scope="session")
def digits():
    return load_digits(image_size=16)


@pytest.fixture(scope="session")
def trained_cnn(digits):
    """A SmallCNN trained on digits, shared read-only: copy before use."""
    return train_teacher(SmallCNN(width=8), digits.train, epochs=6, lr=3e-3)


@pytest.fixture
def teacher_copy(trained_cnn):
    return copy.deepcopy(trained_cnn)


@pytest.fixture
def example(digits):
    return digits.test.tensors[0][:8]


def small_subset(dataset, n: int = 256):
    return torch.utils.data.TensorDataset(*(t[:n] for t in dataset.tensors))
