"""The output-folder lock: one run per folder, the holder named, a dead holder's lock taken over."""

import json
import os
import subprocess
import sys

import pytest

from nncf_wcam.io.folder_lock import LOCK_NAME
from nncf_wcam.io.folder_lock import FolderLock
from nncf_wcam.io.folder_lock import FolderLockedError
from nncf_wcam.io.folder_lock import check_not_locked

from conftest import ROOT

MODULE = ROOT / "nncf_wcam" / "io" / "folder_lock.py"


def test_a_second_holder_is_refused_with_the_first_ones_name(tmp_path):
    with FolderLock(tmp_path, command="nncf-wcam compress --output x"):
        with pytest.raises(FolderLockedError) as refused:
            FolderLock(tmp_path).acquire()  # flock conflicts between two opens, also in one process
        message = str(refused.value)
        assert "in use by another nncf-wcam run (pid" in message and "nncf-wcam compress --output x" in message
        assert len(message.splitlines()) == 1
    with FolderLock(tmp_path):  # released: free again
        pass
    assert not (tmp_path / LOCK_NAME).exists()


def test_a_killed_holders_lock_is_taken_over(tmp_path):
    """A holder killed with SIGKILL leaves the file; the kernel dropped its flock, so the next run takes over and says whose it was."""
    child = (
        "import importlib.util, os, sys\n"
        f"spec = importlib.util.spec_from_file_location('folder_lock', {str(MODULE)!r})\n"
        "module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module)\n"
        f"module.FolderLock({str(tmp_path)!r}, command='killed run').acquire()\n"
        "os.kill(os.getpid(), 9)\n"
    )
    result = subprocess.run([sys.executable, "-c", child], timeout=60)
    assert result.returncode == -9
    left = json.loads((tmp_path / LOCK_NAME).read_text())
    assert left["command"] == "killed run"
    with FolderLock(tmp_path) as lock:
        assert lock.taken_over is not None and f"pid {left['pid']}" in lock.taken_over
    assert not (tmp_path / LOCK_NAME).exists()


def test_a_folder_the_lock_created_goes_away_when_nothing_was_written(tmp_path):
    folder = tmp_path / "new"
    with FolderLock(folder):
        assert folder.is_dir()
    assert not folder.exists()
    with FolderLock(folder):
        (folder / "kept.txt").write_text("x")
    assert (folder / "kept.txt").is_file() and not (folder / LOCK_NAME).exists()


@pytest.mark.parametrize("kind", ["symlink-to-a-file", "dangling-symlink", "folder", "fifo"])
def test_a_lock_that_is_not_a_regular_file_is_refused_and_nothing_is_written_through_it(tmp_path, kind):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    folder = tmp_path / "run"
    folder.mkdir()
    lock = folder / LOCK_NAME
    {"symlink-to-a-file": lambda: lock.symlink_to(victim), "dangling-symlink": lambda: lock.symlink_to(tmp_path / "nowhere"),
     "folder": lock.mkdir, "fifo": lambda: os.mkfifo(lock)}[kind]()
    with pytest.raises(FolderLockedError, match=f"{LOCK_NAME} is (a symbolic link|a folder|not a regular file).*Fix: remove") as refused:
        FolderLock(folder).acquire()
    assert len(str(refused.value).splitlines()) == 1
    assert victim.read_text() == "precious" and not (tmp_path / "nowhere").exists()


def test_a_holders_long_command_is_shortened_in_the_refusal(tmp_path):
    with FolderLock(tmp_path, command="nncf-wcam compress " + "x" * 50000 + "\nsecond line"):
        with pytest.raises(FolderLockedError) as refused:
            FolderLock(tmp_path).acquire()
    message = str(refused.value)
    assert len(message) < 600 and len(message.splitlines()) == 1


def test_check_not_locked_names_a_live_holder_and_creates_nothing(tmp_path):
    check_not_locked(tmp_path / "absent")
    assert not (tmp_path / "absent").exists()
    with FolderLock(tmp_path, command="the other run"):
        with pytest.raises(FolderLockedError, match="the other run"):
            check_not_locked(tmp_path)
    check_not_locked(tmp_path)
