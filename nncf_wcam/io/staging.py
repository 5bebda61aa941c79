"""Names of the staging files our atomic writers leave beside their targets, and their cleanup.

Atomic writes go through a sibling first (a folder `.<name>.tmp-<pid>-<token>`, the previous
version renamed to `.<name>.old-<pid>-<token>`, a file `.<name>.<pid>-<random>.tmp`) and are
renamed over the target. A process killed at the wrong moment leaves such a sibling behind. The
next write to the same target removes the ones whose writer is dead, and says so in one line.
Only names of this exact pattern with a process id that no longer runs are touched: a concurrent
writer's staging files (a live pid) and anything anyone else wrote stay.
"""

import logging
import os
import re
import shutil
import stat
import sys
from pathlib import Path
from typing import Callable

logger = logging.getLogger("nncf_wcam")


def folder_staging_name(target_name: str, kind: str, token: str) -> str:
    """`.<name>.tmp-<pid>-<token>` (kind "tmp": the new version) or `.<name>.old-<pid>-<token>` (the previous one)."""
    return f".{target_name}.{kind}-{os.getpid()}-{token}"


def file_staging_prefix(target_name: str) -> str:
    """Prefix of a file's staging name; mkstemp appends random characters and the suffix `.tmp`."""
    return f".{target_name}.{os.getpid()}-"


def _patterns(target_name: str) -> list:
    name = re.escape(target_name)
    return [
        re.compile(rf"^\.{name}\.(?:tmp|old)-(\d+)-[0-9a-f]+$"),  # folders (io.atomic.atomic_directory)
        re.compile(rf"^\.{name}\.(\d+)-[A-Za-z0-9_]+\.tmp$"),  # files (io.atomic.atomic_write)
    ]


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True  # someone else's process (or a pid we cannot check): leave its files alone
    return True


def remove_tree(path: Path) -> None:
    """rmtree that also removes read-only folders of ours (an IR folder made read-only by its user)."""

    def make_writable_and_retry(function: Callable, failed: str, _exc) -> None:
        parent = os.path.dirname(failed)
        for folder in (parent, failed):
            try:
                if os.path.isdir(folder) and not os.path.islink(folder):
                    os.chmod(folder, os.stat(folder).st_mode | stat.S_IWUSR | stat.S_IXUSR | stat.S_IRUSR)
            except OSError:
                pass
        function(failed)

    if path.is_dir() and not path.is_symlink():
        if sys.version_info >= (3, 12):
            shutil.rmtree(path, onexc=make_writable_and_retry)
        else:
            shutil.rmtree(path, onerror=make_writable_and_retry)
    else:
        path.unlink()


def clean_stale_staging(target: Path) -> list:
    """Removes the staging leftovers of dead writers beside `target`; returns their names (said in one line)."""
    target = Path(target)
    parent = target.parent
    try:
        entries = list(parent.iterdir())
    except OSError:
        return []  # a missing or unreadable folder: the write itself reports it
    removed = []
    for entry in entries:
        for pattern in _patterns(target.name):
            match = pattern.match(entry.name)
            if match is None or _pid_alive(int(match.group(1))):
                continue
            try:
                remove_tree(entry)
            except OSError as e:
                logger.warning("nncf-wcam: could not remove the stale staging leftover %s (%s); remove it by hand.", entry, e.strerror or e)
                continue
            removed.append(entry.name)
    if removed:
        logger.warning(
            "nncf-wcam: removed %d staging leftover(s) of an interrupted earlier write in %s: %s",
            len(removed),
            parent,
            ", ".join(sorted(removed)),
        )
    return removed
