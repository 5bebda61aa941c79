"""nncf-wcam: attribution-preserving compression for NNCF.

The pure-torch core (`AttributionMatcher`, `frozen_copy`, the saliency-guided loss) works with any NNCF.
Each NNCF generation has its own adapter, and only the one matching the installed NNCF is loaded:

- NNCF 2.19: `import nncf_wcam` before `create_compressed_model` is all a project needs. It switches on
  NNCF's legacy PyTorch tracing (which `create_compressed_model` requires) and registers the
  `attribution_matching` and `saliency_guided` algorithms (`nncf_wcam.nncf_plugin`).
- NNCF 3.x: nothing of NNCF is imported here; `nncf_wcam.nncf3` holds the quantization-aware-training helpers.
"""

__version__ = "0.2.0"  # the single source of the version (pyproject.toml reads it)

import logging
import os
import sys
from importlib import metadata
from typing import Optional

_LEGACY_TRACING_VAR = "NNCF_TORCH_LEGACY_TRACING"
_TRUE_VALUES = ("1", "on", "true")
# The one combination CI tests (.ci/constraints-nncf2.txt): NNCF 2.19's "tested with torch 2.9" notice is
# hidden only for it. Any other torch keeps NNCF's warning.
_TESTED_NNCF2_TORCH = ("2.19.", "2.13.")


class NNCFImportOrderError(ImportError):
    """nncf.torch was imported before nncf_wcam, without legacy tracing."""


class NNCFGenerationError(ImportError):
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
        "On NNCF 3.x use nncf_wcam.nncf3 (README: NNCF 3.x)."
        if major == 2
        else "On NNCF 2.19 use the attribution_matching config block (README)."
    )
    msg = (
        f"{what} needs NNCF {major}.x, found {'no NNCF' if found is None else 'NNCF ' + found}. "
        f"Fix: pip install 'nncf-wcam[{extra}]', or: {other}"
    )
    raise NNCFGenerationError(msg)


def _enable_legacy_tracing() -> None:
    """NNCF 2.19 reads the variable once, when nncf.torch is first imported: it must be set before that."""
    if os.environ.get(_LEGACY_TRACING_VAR, "").lower() in _TRUE_VALUES:
        return
    if "nncf.torch" in sys.modules:
        msg = (
            "nncf.torch was imported before nncf_wcam without NNCF_TORCH_LEGACY_TRACING=1, so NNCF's "
            "create_compressed_model cannot work in this process. Fix: put `import nncf_wcam` before any "
            "`import nncf.torch` (or `from nncf.torch import ...`), or start Python with "
            "NNCF_TORCH_LEGACY_TRACING=1 in the environment."
        )
        raise NNCFImportOrderError(msg)
    os.environ[_LEGACY_TRACING_VAR] = "1"


class _TestedTorchNoticeFilter(logging.Filter):
    """Hides NNCF 2.19's import-time "best results with torch==2.9.*" notice for the tested combination only."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "NNCF provides best results with torch" not in record.getMessage()


def is_tested_combination(nncf_version: str, torch_version: str) -> bool:
    nncf_prefix, torch_prefix = _TESTED_NNCF2_TORCH
    return nncf_version.startswith(nncf_prefix) and torch_version.startswith(torch_prefix)


def _hide_torch_notice_if_tested() -> None:
    try:
        torch_version = metadata.version("torch")
    except metadata.PackageNotFoundError:
        return
    if is_tested_combination(installed_nncf_version(), torch_version):
        from nncf.common.logging import nncf_logger  # nncf, not nncf.torch: tracing is already set

        nncf_logger.addFilter(_TestedTorchNoticeFilter())


from nncf_wcam.attribution import LayerNameError  # noqa: E402
from nncf_wcam.matching import AttributionMatcher  # noqa: E402
from nncf_wcam.matching import frozen_copy  # noqa: E402

__all__ = [
    "AttributionMatcher",
    "LayerNameError",
    "NNCFGenerationError",
    "NNCFImportOrderError",
    "frozen_copy",
    "nncf_generation",
]

if nncf_generation() == 2:
    _enable_legacy_tracing()
    _hide_torch_notice_if_tested()
    from nncf_wcam.nncf_plugin import AlgorithmConfigError  # noqa: E402  (registers the algorithms)

    __all__.append("AlgorithmConfigError")
