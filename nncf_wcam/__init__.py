"""nncf-wcam: attribution-preserving compression for NNCF 2.x.

`import nncf_wcam` before `create_compressed_model` is all an NNCF project needs:
it switches on NNCF's legacy PyTorch tracing (which `create_compressed_model`
requires) and registers the `attribution_matching` and `saliency_guided`
algorithms in NNCF's config schema and algorithm registry.
"""

import logging
import os
import sys

_LEGACY_TRACING_VAR = "NNCF_TORCH_LEGACY_TRACING"
_TRUE_VALUES = ("1", "on", "true")


class NNCFImportOrderError(ImportError):
    """nncf.torch was imported before nncf_wcam, without legacy tracing."""


def _enable_legacy_tracing() -> None:
    """NNCF reads the variable once, when nncf.torch is first imported: it must be set before that."""
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


_enable_legacy_tracing()


class _TorchVersionNoticeFilter(logging.Filter):
    """NNCF 2.19 warns at import that it was tested with torch 2.9; with 2.13 it works (DESIGN.md §2).

    Every CLI call, error exits included, would start with that line: keep it out.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return "NNCF provides best results with torch" not in record.getMessage()


from nncf.common.logging import nncf_logger  # noqa: E402  (nncf, not nncf.torch: tracing is set above)

nncf_logger.addFilter(_TorchVersionNoticeFilter())

__version__ = "0.1.0"

from nncf_wcam.attribution import LayerNameError  # noqa: E402
from nncf_wcam.matching import AttributionMatcher  # noqa: E402
from nncf_wcam.matching import frozen_copy  # noqa: E402
from nncf_wcam.nncf_plugin import AlgorithmConfigError  # noqa: E402

__all__ = ["AlgorithmConfigError", "AttributionMatcher", "LayerNameError", "NNCFImportOrderError", "frozen_copy"]
