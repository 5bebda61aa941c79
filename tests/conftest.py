import copy
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import nncf_wcam  # noqa: F401  (on NNCF 2.x: legacy tracing before anything imports nncf.torch)
from nncf_wcam.core.training import train_teacher
from nncf_wcam.nncf_common.extension_cache import allow_slow_extension_builds
from nncf_wcam.nncf_common.extension_cache import check_extension_cache
from nncf_wcam.zoo.datasets import data_root_from_env
from nncf_wcam.zoo.datasets import load_digits
from nncf_wcam.zoo.models import SmallCNN

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
TINY = TESTS / "configs" / "tiny.json"
# A tiny compress run: 1 teacher epoch, 2 steps per epoch, 8 evaluation samples.
FAST = ["--teacher-epochs", "1", "--max-steps", "2", "--eval-samples", "8", "--quiet"]
# Files that Python and pytest themselves write into a checkout; anything else new there is the tests' doing.
_CACHES = ("__pycache__/", ".pytest_cache/", ".hypothesis/", ".egg-info/")

# NNCF's first compile meets this limit on a loaded 2-core machine (NNCF's own is 60 s); subprocesses inherit it.
allow_slow_extension_builds()
# Subprocesses (the CLI, benchmarks, torchrun workers) import this tree, not whatever is installed.
os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])


def mnist_root():
    """The folder of the real MNIST IDX files (NNCF_WCAM_DATA_ROOT), or a skip saying how to provide it."""
    root = data_root_from_env()
    if root is None or not (root / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip("real MNIST not found: set NNCF_WCAM_DATA_ROOT to the folder of t10k-images-idx3-ubyte.gz")
    return root


class DictOutputCNN(SmallCNN):
    """A SmallCNN whose forward returns a dict, as detection or multi-task models do (logits under "logits")."""

    def forward(self, x):
        embedding = self.pool(self.features(x)).flatten(1)
        return {"embedding": embedding, "logits": self.classifier(embedding)}


def ir_against_model(ir_dir, model, samples, logits_output=None) -> tuple:
    """(top-1 agreement, max |logit diff|) of the IR, compiled here, against the PyTorch model on `samples`:
    computed by the test itself, not read from the manifest the export wrote."""
    from nncf_wcam.core.logits import select_logits
    from nncf_wcam.deploy.runtime import load_compiled
    from nncf_wcam.deploy.runtime import run_compiled

    ir_logits = run_compiled(load_compiled(ir_dir), samples)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        torch_logits = select_logits(model(samples), logits_output).numpy()
    model.train(was_training)
    return float((ir_logits.argmax(1) == torch_logits.argmax(1)).mean()), float(abs(ir_logits - torch_logits).max())


CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH = 1, 2
# setpriv without the capabilities that let root ignore permission bits: still uid 0, so it can run the
# interpreter wherever it lives (an unprivileged user cannot enter /root), but files obey their mode.
WITHOUT_ROOT_POWERS = ["setpriv", "--bounding-set=-all", "--inh-caps=-all", "--"]


def bypasses_permissions() -> bool:
    """Whether this process ignores read/write permission bits (root with CAP_DAC_OVERRIDE or CAP_DAC_READ_SEARCH)."""
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return hasattr(os, "geteuid") and os.geteuid() == 0
    effective = int(status.split("CapEff:")[1].split()[0], 16)
    return bool(effective & (1 << CAP_DAC_OVERRIDE | 1 << CAP_DAC_READ_SEARCH))


def rerun_without_root_powers(request) -> bool:
    """Under root, runs the calling test again in a child that obeys permission bits, and returns True (the
    caller then returns: the child's result is asserted here). Without root's powers, returns False at once.

    One child runs every parametrization of the test function; each case asserts its own line of the report.
    """
    if not bypasses_permissions():
        return False
    if shutil.which("setpriv") is None:
        pytest.skip("root ignores permission bits, and setpriv (util-linux) is missing to drop that power")
    function = request.node.nodeid.split("[")[0]
    reports = request.config.__dict__.setdefault("_nncf_wcam_unprivileged", {})
    if function not in reports:
        command = [*WITHOUT_ROOT_POWERS, sys.executable, "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider", "-o", "addopts=", function]
        result = subprocess.run(command, cwd=request.config.rootpath, capture_output=True, text=True, timeout=900)
        reports[function] = result.stdout + result.stderr
    report = reports[function]
    assert f"PASSED {request.node.nodeid}" in report, report[-4000:]
    return True


@pytest.fixture
def small_filesystem(tmp_path):
    """A real 1 MiB tmpfs mounted in tmp_path, to fill up for real; skips where this machine does not let
    the tests mount one (mounting needs root's CAP_SYS_ADMIN)."""
    mount_point = tmp_path / "small_fs"
    mount_point.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount_point)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small filesystem here: {mounted.stderr.strip()[:200]}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], capture_output=True)


def fill_up(folder: Path, leave: int) -> Path:
    """Fills the filesystem of `folder` until it is full, then frees `leave` bytes again; returns the filler file."""
    filler = folder / "filler"
    descriptor = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        while os.write(descriptor, bytes(4096)) > 0:
            pass
    except OSError:
        pass
    finally:
        os.close(descriptor)
    size = filler.stat().st_size
    os.truncate(filler, max(0, size - leave))
    return filler


def repository_files():
    """Every file of the checkout that git lists, ignored ones included, without caches (None outside a checkout)."""
    command = ["git", "status", "--porcelain", "--ignored", "--untracked-files=all"]
    try:
        result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    if result.returncode != 0:
        return None
    return {line for line in result.stdout.splitlines() if not any(cache in line for cache in _CACHES)}


def pytest_sessionstart(session):
    session.config._nncf_wcam_files = repository_files()
    stop_at_a_stale_extension_lock()


def stop_at_a_stale_extension_lock():
    """A killed compile's lock would make every NNCF test wait and fail: stop at once, naming the file."""
    try:
        check_extension_cache()
    except Exception as e:
        pytest.exit(str(e), returncode=4)


def pytest_sessionfinish(session, exitstatus):
    """Tests write nothing into the repository (ignored files such as NNCF's *.dot dumps included): a session that did fails, naming them."""
    before = getattr(session.config, "_nncf_wcam_files", None)
    after = repository_files()
    if before is None or after is None or before == after:
        return
    print(f"\nThe tests changed the repository: {sorted(after - before)}")
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
    """One finished `compress --compare-naive` run of tests/configs/tiny.json, shared read-only by the CLI tests."""
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
