"""Tests of the NNCF 3.x adapter: they run in an environment holding NNCF 3.4 (.ci/run makes one)."""

import copy

import pytest
import torch
from torch.utils.data import DataLoader

import nncf_wcam

if nncf_wcam.nncf_generation() != 3:
    pytest.exit("tests_nncf3 needs NNCF 3.x installed (pip install '.[nncf3,test]'); tests/ is the NNCF 2.19 suite.", returncode=4)

from nncf_wcam.nncf3.training import fine_tune  # noqa: E402
from nncf_wcam.nncf_common.extension_cache import allow_slow_extension_builds  # noqa: E402
from nncf_wcam.nncf_common.extension_cache import check_extension_cache  # noqa: E402
from nncf_wcam.zoo.datasets import load_digits
from nncf_wcam.zoo.models import SmallCNN

allow_slow_extension_builds()  # NNCF's first compile meets this limit on a loaded 2-core machine


def pytest_sessionstart(session):
    """A killed compile's lock would make every NNCF test wait and fail: stop at once, naming the file."""
    try:
        check_extension_cache()
    except Exception as e:
        pytest.exit(str(e), returncode=4)


@pytest.fixture(scope="session")
def digits():
    return load_digits(image_size=16)


@pytest.fixture(scope="session")
def trained_cnn(digits):
    """A SmallCNN trained on digits, shared read-only: copy before use."""
    torch.manual_seed(0)
    model = SmallCNN(width=8)
    loader = DataLoader(digits.train, batch_size=32, shuffle=True, generator=torch.Generator().manual_seed(0))
    fine_tune(model, loader, torch.optim.Adam(model.parameters(), lr=3e-3), epochs=6)
    return model.eval()


@pytest.fixture
def teacher_copy(trained_cnn):
    return copy.deepcopy(trained_cnn)
