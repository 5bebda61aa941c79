"""Atomic writes: a file or a whole folder is written under a staging name beside its target and renamed over
it, so a reader (or a run killed at any moment) sees the previous version or the new one, never a mix.

Staging names carry the writer's process id (`io.staging`); the next write to the same target removes the
leftovers of dead writers and says so in one line.
"""

import contextlib
import logging
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any
from typing import Callable
from typing import Iterator
from typing import Union

import torch

from nncf_wcam.errors import ExportError
from nncf_wcam.io.staging import clean_stale_staging
from nncf_wcam.io.staging import file_staging_prefix
from nncf_wcam.io.staging import folder_staging_name
from nncf_wcam.io.staging import remove_tree

logger = logging.getLogger("nncf_wcam")
PathLike = Union[str, os.PathLike]


class OutputFolderError(ExportError):
    """The output path cannot be replaced safely (not a folder of ours, a dangling link): nothing was touched."""

    exit_code = 2


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def errors_name(path: PathLike) -> Iterator[None]:
    """An OSError raised inside without a file name (a full disk during a write) gets `path`, the file the user named."""
    try:
        yield
    except OSError as error:
        if isinstance(error.filename, str) or error.errno is None:
            raise
        raise OSError(error.errno, error.strerror, str(path)) from error


def atomic_write(path: PathLike, write: Callable[[Any], None]) -> Path:
    """Writes through `write(file object)` to a temporary file beside `path`, then renames it over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_staging(path)  # what a writer killed before its rename left behind
    descriptor, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=file_staging_prefix(path.name), suffix=".tmp")
    try:
        with errors_name(path), os.fdopen(descriptor, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp_name, 0o666 & ~_umask())  # mkstemp creates 0600; give the file the usual permissions
        os.replace(tmp_name, path)
    except BaseException:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
        raise
    return path


def atomic_torch_save(obj: Any, path: PathLike) -> Path:
    return atomic_write(path, lambda f: torch.save(obj, f))


def atomic_write_text(path: PathLike, text: str) -> Path:
    return atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def atomic_write_bytes(path: PathLike, data: bytes) -> Path:
    return atomic_write(path, lambda f: f.write(data))


@contextlib.contextmanager
def atomic_directory(path: PathLike, before_swap: Callable[[Path], None] = lambda target: None) -> Iterator[Path]:
    """Yields an empty staging folder; on success it replaces `path` as a whole, on failure it vanishes.

    The staging folder is a sibling of `path` (same filesystem, so the swap is a rename). An existing
    `path` is first renamed aside and deleted only once the new folder is in place, so an earlier
    version stays intact until the new one is complete. Any exception (KeyboardInterrupt included)
    removes the staging folder and leaves `path` untouched. Only a process killed between the two
    renames of the swap could leave the old version under `.<name>.old-<pid>-<id>` next to `path`;
    the next write to `path` removes such leftovers of dead processes (`staging.clean_stale_staging`).
    A symbolic link is followed: the folder it points to is replaced and the link kept; a dangling
    link is refused (`OutputFolderError`). `before_swap(target)` runs right before the swap (the export's
    folder check again: something written into the folder while the IR was built is never deleted).
    """
    target = followed(Path(path)).absolute()
    target.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_staging(target)
    token = uuid.uuid4().hex[:8]
    staging = target.parent / folder_staging_name(target.name, "tmp", token)
    staging.mkdir()
    try:
        yield staging
        before_swap(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    _swap_in(staging, target, target.parent / folder_staging_name(target.name, "old", token))


def followed(path: Path) -> Path:
    """The folder a symbolic link names (the link itself is kept); a dangling link is refused."""
    if not path.is_symlink():
        return path
    if not path.exists():
        msg = (
            f"Output path {path} is a symbolic link to {os.readlink(path)}, which does not exist. "
            "Fix: create that folder, remove the link, or name another output folder."
        )
        raise OutputFolderError(msg)
    return path.resolve()


def _swap_in(staging: Path, target: Path, backup: Path) -> None:
    if not target.exists():
        os.replace(staging, target)
        return
    try:
        os.replace(target, backup)
    except BaseException:  # e.g. EBUSY: a mount point cannot be renamed; the earlier version is untouched
        shutil.rmtree(staging, ignore_errors=True)
        raise
    try:
        os.replace(staging, target)
    except BaseException:
        os.replace(backup, target)  # put the earlier version back
        shutil.rmtree(staging, ignore_errors=True)
        raise
    try:
        remove_tree(backup)  # also when its user made the earlier IR read-only
    except OSError as e:
        logger.warning("Could not remove the previous version %s (%s); the new one is in place. Remove it by hand.", backup, e.strerror or e)
