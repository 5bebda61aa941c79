"""Which NNCF generation is installed, and what each generation needs before `nncf` is imported.

nncf-wcam supports NNCF 2.19 (JSON-configured compression-aware training: the `attribution_matching`
block, the command line) and NNCF 3.4 (`nncf.quantize` / `nncf.prune` and the user's own loop). Only the
adapter of the installed generation is loaded; the other refuses in one line. Nothing here imports NNCF:
the version comes from the package metadata.
"""

import os
import sys
from importlib import metadata
from typing import Optional

from nncf_wcam.errors import NncfWcamError

LEGACY_TRACING_VAR = "NNCF_TORCH_LEGACY_TRACING"
_TRUE_VALUES = ("1", "on", "true")


class NNCFImportOrderError(NncfWcamError, ImportError):
    """nncf.torch was imported before nncf_wcam, without legacy tracing."""


class NNCFGenerationError(NncfWcamError, ImportError):
    """A part of nncf_wcam was imported with the other NNCF generation installed."""


def installed_nncf_version() -> Optional[str]:
    """The installed NNCF's version, read from its metadata (NNCF itself is not imported)."""
    try:
        return metadata.version("nncf")
    except metadata.PackageNotFoundError:
        return None


def nncf_generation() -> Optional[int]:
    """2 or 3 (the major version of the installed NNCF), None without NNCF."""
    version = installed_nncf_version()
    return int(version.split(".")[0]) if version else None


def require_nncf_generation(major: int, what: str) -> None:
    """One clear line when `what` is used with the other NNCF generation (or none)."""
    found = installed_nncf_version()
    if found is not None and int(found.split(".")[0]) == major:
        return
    extra = "nncf2" if major == 2 else "nncf3"
    other = (
        "On NNCF 3.x use nncf_wcam.nncf3 (docs/nncf3.md)."
        if major == 2
        else "On NNCF 2.19 use the attribution_matching config block (README)."
    )
    msg = (
        f"{what} needs NNCF {major}.x, found {'no NNCF' if found is None else 'NNCF ' + found}. "
        f"Fix: pip install -e '.[{extra}]' in a clone of nncf-wcam, or: {other}"
    )
    raise NNCFGenerationError(msg)


def enable_legacy_tracing() -> None:
    """NNCF 2.19 reads the variable once, when nncf.torch is first imported: it must be set before that."""
    if os.environ.get(LEGACY_TRACING_VAR, "").lower() in _TRUE_VALUES:
        return
    if "nncf.torch" in sys.modules:
        msg = (
            "nncf.torch was imported before nncf_wcam without NNCF_TORCH_LEGACY_TRACING=1, so NNCF's "
            "create_compressed_model cannot work in this process. Fix: put `import nncf_wcam` before any "
            "`import nncf.torch` (or `from nncf.torch import ...`), or start Python with "
            "NNCF_TORCH_LEGACY_TRACING=1 in the environment."
        )
        raise NNCFImportOrderError(msg)
    os.environ[LEGACY_TRACING_VAR] = "1"
