"""nncf-wcam on Intel Neural Compressor 3.7: attribution matching as one object beside INC's own configs.

    from neural_compressor.config import WeightPruningConfig
    from nncf_wcam.inc import AttributionMatchingConfig, prepare_compression, export_ir

    manager = prepare_compression(model, [WeightPruningConfig(...), AttributionMatchingConfig(example_inputs=x)])
    # INC's documented loop, every callback in place (README); the matching loss joins in on_after_compute_loss
    export_ir(manager.model.model, "ir/", sample_inputs)

INC 3.8 removed training-time compression: the training names here check the installed version and say so in
one line. `export_ir` works on any INC (it only needs the torch module), e.g. after INC 3.10's `prepare_qat`.
"""

import importlib
import warnings

# INC 3.7 imports pkg_resources (hence setuptools < 81) and setuptools warns on every start: a note for INC's
# maintainers, not for our users.
warnings.filterwarnings("ignore", message=r"pkg_resources is deprecated as an API", category=UserWarning, module=r"neural_compressor\.")

_TRAINING = {
    "AttributionMatchingConfig": "nncf_wcam.inc.config",
    "TeacherError": "nncf_wcam.inc.config",
    "MatchingConfigError": "nncf_wcam.inc.config",
    "prepare_compression": "nncf_wcam.inc.compression",
    "attribution_matcher": "nncf_wcam.inc.compression",
    "IncConfigError": "nncf_wcam.inc.compression",
    "IncLoopError": "nncf_wcam.inc.callbacks",
    "fine_tune": "nncf_wcam.inc.training",
    "end_training": "nncf_wcam.inc.training",
}
_ANY_VERSION = {
    "export_ir": "nncf_wcam.inc.export",
    "IncVersionError": "nncf_wcam.inc.versions",
    "installed_inc_version": "nncf_wcam.inc.versions",
}

__all__ = [*_TRAINING, *_ANY_VERSION]


def __getattr__(name: str):
    if name in _TRAINING:
        from nncf_wcam.inc.versions import require_training_api

        require_training_api(f"nncf_wcam.inc.{name}")
    module = _TRAINING.get(name) or _ANY_VERSION.get(name)
    if module is None:
        raise AttributeError(f"module 'nncf_wcam.inc' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list:
    return sorted(set(globals()) | set(__all__))
