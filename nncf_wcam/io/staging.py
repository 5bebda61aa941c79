"""Names of the staging files our atomic writers leave beside their targets, and their cleanup.

Atomic writes go through a sibling first (a folder `.<name>.tmp-<host>-<pid>-<token>`, the previous
version renamed to `.<name>.old-<host>-<pid>-<token>`, a file `.<name>.<host>-<pid>-<random>.tmp`) and
are renamed over the target. `<host>` is a short hash of the machine's name: on storage that several
machines share, a process id says nothing about another machine's processes. A process killed at the
wrong moment leaves such a sibling behind. The next write to the same target removes the ones whose
writer is dead (on this machine), and says so in one line; a previous version left under `.old-` while
its target is missing (a kill between the two renames of a swap) is put back first. Only names of this
exact pattern are touched: a live writer's staging files, another machine's, and anything anyone else
wrote stay.
"""

import logging
import os
import hashlib
import re
import shutil
import socket
import stat
import sys
from pathlib import Path
from typing import Callable
from typing import Optional

logger = logging.getLogger("nncf_wcam")


def host_mark() -> str:
    """Eight hex digits naming this machine in staging names."""
    return hashlib.sha256(socket.gethostname().encode("utf-8", "replace")).hexdigest()[:8]


def folder_staging_name(target_name: str, kind: str, token: str, pid: Optional[int] = None) -> str:
    """`.<name>.tmp-<host>-<pid>-<token>` (kind "tmp": the new version) or `.<name>.old-<host>-<pid>-<token>` (the previous one)."""
    return f".{target_name}.{kind}-{host_mark()}-{os.getpid() if pid is None else pid}-{token}"


def file_staging_prefix(target_name: str, pid: Optional[int] = None) -> str:
    """Prefix of a file's staging name; mkstemp appends random characters and the suffix `.tmp`."""
    return f".{target_name}.{host_mark()}-{os.getpid() if pid is None else pid}-"


def _patterns(target_name: str) -> list:
    name = re.escape(target_name)
    return [
        re.compile(rf"^\.{name}\.(?P<kind>tmp|old)-(?P<host>[0-9a-f]{{8}})-(?P<pid>\d+)-[0-9a-f]+$"),  # folders (io.atomic.atomic_directory)
        re.compile(rf"^\.{name}\.(?P<host>[0-9a-f]{{8}})-(?P<pid>\d+)-[A-Za-z0-9_]+\.tmp$"),  # files (io.atomic.atomic_write)
    ]


def _dead_writers_leftover(entry: Path, target_name: str) -> Optional[re.Match]:
    """The name's match when `entry` is a staging leftover of a writer on this machine that no longer runs."""
    for pattern in _patterns(target_name):
        match = pattern.match(entry.name)
        if match is not None and match["host"] == host_mark() and not _pid_alive(int(match["pid"])):
            return match
    return None


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


def _restore_interrupted_swap(target: Path, leftovers: list) -> Optional[Path]:
    """A previous version renamed aside by a writer killed before it renamed the new one in: put it back."""
    if os.path.lexists(target):
        return None
    for entry, match in leftovers:
        if match.groupdict().get("kind") == "old":
            os.replace(entry, target)
            logger.warning("nncf-wcam: put back %s from %s: a write into it was interrupted between its two renames.", target, entry.name)
            return entry
    return None


def clean_stale_staging(target: Path) -> list:
    """Removes the staging leftovers of dead writers beside `target` (after putting back a previous version
    that an interrupted swap left aside); returns their names (said in one line)."""
    target = Path(target)
    parent = target.parent
    try:
        entries = list(parent.iterdir())
    except OSError:
        return []  # a missing or unreadable folder: the write itself reports it
    leftovers = [(entry, match) for entry in entries if (match := _dead_writers_leftover(entry, target.name)) is not None]
    restored = _restore_interrupted_swap(target, leftovers)
    removed = []
    for entry, _ in leftovers:
        if entry == restored:
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
