"""nncf-wcam: attribution-preserving compression for NNCF, shipped as OpenVINO IR.

- NNCF 2.19: `import nncf_wcam` before `create_compressed_model` is all a project needs. It switches on
  NNCF's legacy PyTorch tracing (which `create_compressed_model` requires) and registers the
  `attribution_matching` and `saliency_guided` algorithms (`nncf_wcam.nncf2`).
- NNCF 3.x: nothing of NNCF is imported here; `nncf_wcam.nncf3` holds the quantization-aware-training helpers.

The public API is this module's names (loaded when first used, so `import nncf_wcam` stays light):
the pure-torch matcher and saliency-guided loss, evaluation with captum, figures, the deployment helpers,
and on NNCF 2.x the 2.19 route's `export_ir` and `fine_tune`. The package's layers, bottom to top:
`errors`/`generation`, `core` and `io`, `zoo`/`deploy`/`schema`, `evaluation`, the adapters
(`nncf2`, `nncf3`), `cli`; each imports only from layers below it.
"""

import importlib

from nncf_wcam.generation import NNCFGenerationError
from nncf_wcam.generation import NNCFImportOrderError
from nncf_wcam.generation import nncf_generation
from nncf_wcam.version import __version__

# name -> module that defines it, for every public name (see __getattr__).
_PUBLIC = {
    "NncfWcamError": "nncf_wcam.errors",
    "AttributionMatcher": "nncf_wcam.core.matcher",
    "frozen_copy": "nncf_wcam.core.matcher",
    "LayerNameError": "nncf_wcam.core.layers",
    "select_logits": "nncf_wcam.core.logits",
    "SaliencyGuidedRegularizer": "nncf_wcam.core.saliency",
    "input_saliency": "nncf_wcam.core.saliency",
    "mask_least_salient": "nncf_wcam.core.saliency",
    "kl_consistency": "nncf_wcam.core.saliency",
    "preserved_state": "nncf_wcam.core.saliency",
    "train_teacher": "nncf_wcam.core.training",
    "freeze_batchnorm_statistics": "nncf_wcam.core.training",
    "NonFiniteLossError": "nncf_wcam.core.training",
    "AlgorithmConfigError": "nncf_wcam.schema.validation",
    "ExportError": "nncf_wcam.errors",
    "UnsupportedDeviceError": "nncf_wcam.deploy.devices",
    "OutputFolderError": "nncf_wcam.io.atomic",
    "load_compiled": "nncf_wcam.deploy.runtime",
    "run_compiled": "nncf_wcam.deploy.runtime",
    "attribution_maps": "nncf_wcam.evaluation.attributions",
    "map_agreement": "nncf_wcam.evaluation.agreement",
    "compare_attributions": "nncf_wcam.evaluation.agreement",
    "summarize": "nncf_wcam.evaluation.agreement",
    "localization_scores": "nncf_wcam.evaluation.localization",
    "OpenVINOForward": "nncf_wcam.evaluation.ir_attributions",
    "ir_occlusion_maps": "nncf_wcam.evaluation.ir_attributions",
    "compare_ir_occlusion": "nncf_wcam.evaluation.ir_attributions",
    "attribution_figure": "nncf_wcam.evaluation.figures",
    "write_attribution_figure": "nncf_wcam.evaluation.figures",
    "plot_map_grid": "nncf_wcam.evaluation.figures",
    "make_cluttered_dataset": "nncf_wcam.zoo.cluttered",
}
# The NNCF 2.19 route's names (on NNCF 3.x: nncf_wcam.nncf3 has its own export_ir and fine_tune).
_NNCF2_PUBLIC = {
    "export_ir": "nncf_wcam.nncf2.export",
    "fine_tune": "nncf_wcam.nncf2.training",
    "attribution_controller": "nncf_wcam.nncf2.attribution_matching",
    "saliency_guided_controller": "nncf_wcam.nncf2.saliency_guided",
}

__all__ = ["NNCFGenerationError", "NNCFImportOrderError", "__version__", "nncf_generation", *_PUBLIC, *_NNCF2_PUBLIC]


def __getattr__(name: str):
    if name in _NNCF2_PUBLIC and nncf_generation() != 2:
        msg = f"nncf_wcam.{name} is the NNCF 2.19 route; with NNCF {nncf_generation() or 'absent'} use nncf_wcam.nncf3.{name} (docs/nncf3.md)."
        raise NNCFGenerationError(msg)
    module = _PUBLIC.get(name) or _NNCF2_PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'nncf_wcam' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list:
    return sorted(set(globals()) | set(__all__))


if nncf_generation() == 2:
    import nncf_wcam.nncf2  # noqa: E402,F401  (legacy tracing, then registers the algorithms with NNCF)
