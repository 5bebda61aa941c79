"""NNCF 2.19 logs at import that it "provides best results with torch==2.9.*": hidden for the one combination CI
tests (.ci/constraints-nncf2.txt), kept for any other torch."""

import logging
from importlib import metadata

from nncf_wcam.generation import installed_nncf_version

_TESTED_NNCF2_TORCH = ("2.19.", "2.13.")


class TestedTorchNoticeFilter(logging.Filter):
    """Hides NNCF 2.19's import-time "best results with torch==2.9.*" notice for the tested combination only."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "NNCF provides best results with torch" not in record.getMessage()


def is_tested_combination(nncf_version: str, torch_version: str) -> bool:
    nncf_prefix, torch_prefix = _TESTED_NNCF2_TORCH
    return nncf_version.startswith(nncf_prefix) and torch_version.startswith(torch_prefix)


def hide_torch_notice_if_tested() -> None:
    try:
        torch_version = metadata.version("torch")
    except metadata.PackageNotFoundError:
        return
    if is_tested_combination(installed_nncf_version() or "", torch_version):
        from nncf.common.logging import nncf_logger  # nncf, not nncf.torch: tracing is already set

        nncf_logger.addFilter(TestedTorchNoticeFilter())
