"""A `compress` output folder: what nncf-wcam writes there, what it refuses to write over, and its locks.

A folder without a run of ours (no run.json or checkpoint.pt) must be empty but for a lock and staging leftovers:
whatever else is there is someone else's, even under a name nncf-wcam writes, and is never replaced. Each of our names must have its kind
(a file where we write a file, a folder where we write a folder), and an `ir/` must be an earlier export:
all checked before any work, so a refusal costs nothing.
"""

import contextlib
import os
import stat
from pathlib import Path
from typing import Iterator

from nncf_wcam.cli.errors import UsageError
from nncf_wcam.deploy.folder import check_replaceable
from nncf_wcam.io.folder_lock import LOCK_NAME
from nncf_wcam.io.folder_lock import FolderLock
from nncf_wcam.io.folder_lock import check_not_locked

RUN_FILES = ("run.json", "teacher.pt", "checkpoint.pt", "report.json", "attribution_maps.png", LOCK_NAME)
RUN_FOLDERS = ("naive", "ir", "nncf_logs")
NAIVE_FILES = ("checkpoint.pt", LOCK_NAME)
NAIVE_FOLDERS = ("nncf_logs",)


def _is_staging(name: str, ours: tuple) -> bool:
    """A staging leftover of one of our atomic writes (`.<name>.tmp-...`, `.<name>.<pid>-....tmp`)."""
    return name.startswith(".") and any(name.startswith(f".{own}.") for own in ours)


def _shown(names: list) -> str:
    return ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")


def _kind(path: Path) -> str:
    """What stands at `path` when it is not a regular file (a missing path is "")."""
    if not os.path.lexists(path):
        return ""
    if not path.exists():
        return f"a symbolic link to {os.readlink(path)}, which does not exist"
    mode = path.stat().st_mode
    if stat.S_ISREG(mode):
        return ""
    return "a folder" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode) else "a special file"


def _check_kinds(folder: Path, files: tuple, folders: tuple) -> None:
    for name in files:
        kind = _kind(folder / name)
        if kind:
            # A checkpoint that is not a file must not read as "no checkpoint" (a restart from epoch 0).
            raise UsageError(f"{folder / name} is {kind}, where nncf-wcam keeps a file. Fix: move it away, or name another --output.")
    for name in folders:
        path = folder / name
        if path.exists() and not path.is_dir():
            raise UsageError(f"{path} is a file where nncf-wcam writes a folder. Fix: move it away, or name another --output.")


def _foreign(folder: Path, files: tuple, folders: tuple, holds_run: bool) -> list:
    """Entries nncf-wcam did not write: without a run of ours there, even our names are someone else's files."""
    ours = files + folders
    allowed = ours if holds_run else (LOCK_NAME,)
    return sorted(entry.name for entry in folder.iterdir() if entry.name not in allowed and not _is_staging(entry.name, ours))


def check_run_folder(output: Path, holds_run: bool) -> None:
    """Refuses, in one line and before any work, an output folder compress would have to write over someone else's files."""
    if not output.is_dir():
        return
    _check_kinds(output, RUN_FILES, RUN_FOLDERS)
    foreign = _foreign(output, RUN_FILES, RUN_FOLDERS, holds_run)
    if foreign and not holds_run:
        msg = (
            f"{output} holds {_shown(foreign)}, which nncf-wcam did not write, and no run of its own: compress writes "
            f"{', '.join(RUN_FILES[:-1])} and {', '.join(RUN_FOLDERS)} there. Fix: name a new or empty --output."
        )
        raise UsageError(msg)
    naive = output / "naive"
    if naive.is_dir():
        _check_kinds(naive, NAIVE_FILES, NAIVE_FOLDERS)
        foreign = _foreign(naive, NAIVE_FILES, NAIVE_FOLDERS, holds_run=(naive / "checkpoint.pt").is_file())
        if foreign and not (naive / "checkpoint.pt").is_file():
            raise UsageError(f"{naive} holds {_shown(foreign)}, which nncf-wcam did not write. Fix: name a new or empty --output.")
    check_replaceable(output / "ir")  # a foreign ir/ is refused now, not after the training


@contextlib.contextmanager
def run_folder_lock(output: Path, compare_naive: bool) -> Iterator[FolderLock]:
    """The output folder's lock; a naive/ folder another run holds is refused now (its own lock is taken when the
    naive student trains: `naive_folder_lock`)."""
    with FolderLock(output) as lock:
        if compare_naive:
            check_not_locked(output / "naive")
        yield lock


def naive_folder_lock(output: Path) -> FolderLock:
    return FolderLock(output / "naive")
