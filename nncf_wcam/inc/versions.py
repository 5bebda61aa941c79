"""Which Intel Neural Compressor is installed, and which of its routes it has.

INC 3.7.x is the last release with PyTorch training-time compression (`neural_compressor.training`:
pruning, torch.ao FX quantization-aware training, distillation). INC 3.8 removed it; INC 3.10 keeps only
`neural_compressor.torch.quantization.quantize.prepare_qat` (MX fake-quantization of nn.Linear in the user's
own loop), where the matcher joins as a plain loss term (docs/inc.md). Nothing here imports INC.
"""

from importlib import metadata
from typing import Optional

from nncf_wcam.errors import NncfWcamError

TESTED_TRAINING_VERSION = "3.7.1"
# INC ships as one distribution (neural-compressor) up to 3.7 and as framework ones after.
_DISTRIBUTIONS = ("neural-compressor", "neural-compressor-pt", "neural_compressor_pt")


class IncVersionError(NncfWcamError, ImportError):
    """The installed Intel Neural Compressor lacks the route asked for (or INC is absent)."""


def installed_inc_version() -> Optional[str]:
    for name in _DISTRIBUTIONS:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return None


def _major_minor(version: str) -> tuple:
    parts = [int("".join(c for c in part if c.isdigit()) or 0) for part in version.split(".")[:2]]
    return tuple(parts + [0] * (2 - len(parts)))


def require_training_api(what: str = "nncf_wcam.inc") -> str:
    """The INC version when it has `neural_compressor.training` (3.x up to 3.7); else one line naming the fix."""
    found = installed_inc_version()
    if found is None:
        msg = f"{what} needs Intel Neural Compressor 3.7.x, found none. Fix: pip install 'neural-compressor=={TESTED_TRAINING_VERSION}' 'numpy<2' 'setuptools<81' six."
        raise IncVersionError(msg)
    if _major_minor(found) >= (3, 8):
        msg = (
            f"{what} needs Intel Neural Compressor 3.7.x; found {found}, which has no training-time pruning or "
            f"FX quantization-aware training (INC 3.8 removed them). Fix: pip install 'neural-compressor=="
            f"{TESTED_TRAINING_VERSION}', or on INC 3.8+ use prepare_qat with AttributionMatcher in your own loop "
            "(examples/inc310_qat.py, docs/inc.md)."
        )
        raise IncVersionError(msg)
    if _major_minor(found) < (3, 0):
        msg = f"{what} needs Intel Neural Compressor 3.7.x; found {found}. Fix: pip install 'neural-compressor=={TESTED_TRAINING_VERSION}'."
        raise IncVersionError(msg)
    return found
