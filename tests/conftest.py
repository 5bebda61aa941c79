import copy
import os
import subprocess
from pathlib import Path

import pytest
import torch

import nncf_wcam  # noqa: F401  (must precede nncf.torch)
from nncf_wcam.data import load_digits
from nncf_wcam.models import SmallCNN
from nncf_wcam.training import train_teacher


ROOT = Path(__file__).parents[1]
TINY = ROOT / "nncf_wcam" / "configs" / "tiny_test.json"
# A tiny compress run: 1 teacher epoch, 2 steps per epoch, 8 evaluation samples.
FAST = ["--teacher-epochs", "1", "--max-steps", "2", "--eval-samples", "8", "--quiet"]

# Subprocesses (the CLI, benchmarks, torchrun workers) import this tree, not whatever is installed.
os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])


def _git_status():
    """`git status --porcelain` of the repository, or None outside a git checkout."""
    try:
        result = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout if result.returncode == 0 else None


def pytest_sessionstart(session):
    session.config._nncf_wcam_git_status = _git_status()


def pytest_sessionfinish(session, exitstatus):
    """Tests write nothing into the repository: a session that did fails, naming the files."""
    before = getattr(session.config, "_nncf_wcam_git_status", None)
    after = _git_status()
    if before is None or after is None or before == after:
        return
    new = sorted(set(after.splitlines()) - set(before.splitlines()))
    print(f"\nThe tests changed the repository: {new}")
    session.exitstatus = 1


@pytest.fixture(scope="session", autouse=True)
def scratch_cwd(tmp_path_factory):
    """Every test runs in a scratch working directory: what a library writes into the cwd (NNCF's .dot graphs) lands there."""
    previous = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("cwd"))
    yield
    os.chdir(previous)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """One finished `compress --compare-naive` run of tiny_test.json, shared read-only by the CLI tests."""
    from nncf_wcam import cli

    output = tmp_path_factory.mktemp("cli") / "tiny"
    assert cli.main(["compress", "--config", str(TINY), "--output", str(output), "--compare-naive", *FAST]) == 0
    return output


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
