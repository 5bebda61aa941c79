"""A stale lock in NNCF's extension cache: found before it hangs a run, named in one line.

Each test builds its own extension folder (TORCH_EXTENSIONS_DIR in tmp_path) and plants a `lock` where
torch's build would put it; a live holder is a real child process keeping the lock open, as torch's
FileBaton does while it compiles.
"""

import os
import subprocess
import sys
import time

import pytest
import torch

from nncf_wcam.nncf_common.extension_cache import ExtensionCacheError
from nncf_wcam.nncf_common.extension_cache import check_extension_cache
from nncf_wcam.nncf_common.extension_cache import extensions_root
from nncf_wcam.nncf_common.extension_cache import stale_extension_locks

from conftest import TINY

HOLD_LOCK = "import os, sys, time; fd = os.open(sys.argv[1], os.O_CREAT | os.O_EXCL); print('held', flush=True); time.sleep(120)"


@pytest.fixture
def cache(tmp_path, monkeypatch):
    root = tmp_path / "torch_extensions"
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(root))
    build = root / "nncf" / "quantized_functions_cpu" / torch.__version__
    build.mkdir(parents=True)
    return build


@pytest.fixture
def live_holder(cache):
    """A process holding the lock open, as a compile in progress does."""
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(cache / "lock")], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    yield holder
    holder.kill()
    holder.wait()


def test_the_root_is_torchs(cache):
    assert extensions_root() == cache.parents[2]


def test_a_planted_stale_lock_is_named_with_the_fix(cache):
    (cache / "lock").touch()
    assert stale_extension_locks() == [cache / "lock"]
    with pytest.raises(ExtensionCacheError) as error:
        check_extension_cache()
    message = str(error.value)
    assert str(cache / "lock") in message and "remove that file" in message and "\n" not in message


def test_a_lock_held_by_a_live_build_is_left_alone(live_holder, cache):
    assert stale_extension_locks() == []
    check_extension_cache()
    assert (cache / "lock").exists()


def test_no_lock_no_complaint(cache):
    check_extension_cache()


def _compress(tmp_path, env: dict, timeout: int):
    command = [sys.executable, "-m", "nncf_wcam.cli", "compress", "--config", str(TINY), "--output", str(tmp_path / "run"), "--teacher-epochs", "1", "--max-steps", "1", "--eval-samples", "8", "--quiet"]
    started = time.monotonic()
    result = subprocess.run(command, capture_output=True, text=True, env={**os.environ, **env}, timeout=timeout)
    return result, time.monotonic() - started


def _error_lines(stderr: str) -> list:
    """stderr's lines but torch's own: a CUDA build of torch on a machine without a GPU logs "No CUDA runtime
    is found" from cpp_extension.py when NNCF imports it, before nncf-wcam says anything."""
    return [line for line in stderr.splitlines() if line.strip() and "INFO" not in line and "cpp_extension.py" not in line]


def test_the_cli_stops_at_a_stale_lock_at_once(cache, tmp_path):
    """Without the check, NNCF would wait its whole limit (600 s here) and then print a page."""
    (cache / "lock").touch()
    result, _ = _compress(tmp_path, {"NNCF_EXTENSION_LOAD_TIMEOUT": "600"}, timeout=120)
    lines = _error_lines(result.stderr)
    assert result.returncode == 2 and len(lines) == 1, result.stderr[-3000:]
    assert str(cache / "lock") in lines[0] and "stale" in lines[0]
    assert not (tmp_path / "run").exists()


def test_nncfs_own_timeout_is_one_line(live_holder, cache, tmp_path):
    """A build that really is in progress elsewhere (the live holder) and a 2 s limit: NNCF's timeout page becomes one line."""
    result, _ = _compress(tmp_path, {"NNCF_EXTENSION_LOAD_TIMEOUT": "2"}, timeout=300)
    lines = _error_lines(result.stderr)
    assert result.returncode == 2 and len(lines) == 1, result.stderr[-3000:]
    assert "did not compile within 2 s" in lines[0] and "NNCF_EXTENSION_LOAD_TIMEOUT" in lines[0]
