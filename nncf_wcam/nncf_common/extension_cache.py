"""NNCF's C++ extension cache: a stale build lock found before it hangs a run, said in one line.

NNCF compiles its quantization kernels on first use with torch's cpp_extension, into a cache that every
environment of a user shares (`$TORCH_EXTENSIONS_DIR`, else `~/.cache/torch_extensions/py<ver>_<accel>`).
torch serialises builds with a `lock` file that the building process holds open. A build that is killed
leaves the file behind, and every later NNCF run on the machine waits for it until NNCF's time limit
(60 s by default), then fails with a page of advice. A lock that no process on this machine holds open
is stale: `check_extension_cache` names it and the fix before any work starts.

Pure torch and the standard library: nothing here imports NNCF, so a check never triggers the build.
"""

import os
import sys
from pathlib import Path
from typing import Iterator
from typing import Optional

import torch

from nncf_wcam.errors import NncfWcamError

LOAD_TIMEOUT_ENV = "NNCF_EXTENSION_LOAD_TIMEOUT"
# A cold compile takes 60 to 90 s on an idle 2-core machine, several minutes on a loaded one; NNCF's own
# limit is 60 s.
LOAD_TIMEOUT_S = 600
EXTENSIONS = ("quantized_functions_cpu", "quantized_functions_cuda")


class ExtensionCacheError(NncfWcamError, RuntimeError):
    """NNCF's extension build folder holds a lock that no process holds: a killed build left it."""


def extensions_root() -> Path:
    """Where torch builds C++ extensions for this interpreter and torch build (as torch itself computes it)."""
    configured = os.environ.get("TORCH_EXTENSIONS_DIR")
    if configured:
        return Path(configured)
    from torch.utils.cpp_extension import get_default_build_root

    if torch.version.hip is not None:
        accelerator = "rocm" + torch.version.hip.replace(".", "")
    elif torch.version.cuda is not None:
        accelerator = "cu" + torch.version.cuda.replace(".", "")
    else:
        accelerator = "cpu"
    python = f"py{sys.version_info.major}{sys.version_info.minor}{getattr(sys, 'abiflags', '')}"
    return Path(get_default_build_root()) / f"{python}_{accelerator}"


def extension_locks(root: Optional[Path] = None) -> list:
    """The build locks of NNCF's extensions for this torch that exist now."""
    root = extensions_root() if root is None else root
    return [lock for name in EXTENSIONS if (lock := root / "nncf" / name / torch.__version__ / "lock").exists()]


def _open_files() -> Iterator[tuple]:
    """(pid, target) of every file descriptor this user can see on this machine."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:  # gone, or another user's
            continue
        for fd in fds:
            try:
                yield int(pid), os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue


def lock_holders(lock: Path) -> Optional[list]:
    """The pids holding `lock` open, or None where that cannot be seen (no /proc)."""
    if not os.path.isdir("/proc/self/fd"):
        return None
    target = os.path.realpath(lock)
    return sorted({pid for pid, path in _open_files() if path == target})


def stale_extension_locks(root: Optional[Path] = None) -> list:
    """Locks that exist and that no process on this machine holds open (a killed build's leftovers)."""
    stale = []
    for lock in extension_locks(root):
        holders = lock_holders(lock)
        if holders == [] and lock.exists():  # still there after the scan: not a build that just finished
            stale.append(lock)
    return stale


def check_extension_cache(root: Optional[Path] = None) -> None:
    """Refuses to start while a stale lock would make NNCF's extension build wait until it times out."""
    stale = stale_extension_locks(root)
    if stale:
        msg = (
            f"NNCF's C++ extension cache holds a stale build lock, {stale[0]}: no process on this machine holds it "
            "(a compile was killed), and every NNCF run would wait for it until it times out. Fix: remove that file "
            "(if the cache is shared with other machines, first check that none of them is compiling)."
        )
        raise ExtensionCacheError(msg)


def allow_slow_extension_builds() -> None:
    """Gives NNCF's first compile a limit a loaded 2-core machine meets, unless the user set one."""
    os.environ.setdefault(LOAD_TIMEOUT_ENV, str(LOAD_TIMEOUT_S))


def is_extension_timeout(error: BaseException) -> bool:
    """NNCF's ExtensionLoaderTimeoutException, recognised without importing NNCF."""
    return type(error).__name__ == "ExtensionLoaderTimeoutException"


def extension_timeout_line() -> str:
    """One line for NNCF's extension load timeout: the stale lock when there is one, else the limit to raise."""
    stale = stale_extension_locks()
    if stale:
        return f"NNCF's C++ extension build waited for a stale lock, {stale[0]}, left by a killed compile. Fix: remove that file and run again."
    limit = os.environ.get(LOAD_TIMEOUT_ENV, "60")
    return (
        f"NNCF's C++ extension did not compile within {limit} s (another process may be compiling it). "
        f"Fix: wait for that process, or raise the limit: {LOAD_TIMEOUT_ENV}=1200."
    )


def forget_abandoned_extension_loader() -> None:
    """After NNCF's load timeout its loader thread still waits for the lock; at exit, its thread pool's
    finalizer fails on closed pipes and prints a traceback that tells the user nothing: drop that one."""
    previous = sys.unraisablehook

    def hook(unraisable):
        if getattr(unraisable.object, "__qualname__", "") != "Pool.__del__":
            previous(unraisable)

    sys.unraisablehook = hook
