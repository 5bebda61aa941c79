"""A run config for Intel Neural Compressor 3.7: INC's algorithms under `"inc"`, the plugin block in `"compression"`.

    "inc": {"pruning": {"target_sparsity": 0.7, "pattern": "4x1", ...}}       -> WeightPruningConfig(...)
    "inc": {"quantization_aware_training": {}}                             -> QuantizationAwareTrainingConfig(...)
    "compression": [{"algorithm": "attribution_matching"}]                  -> AttributionMatchingConfig(...)

Keys are INC's own keyword arguments, checked against its signatures (INC takes unknown keys silently), so a
typo gets one line with the closest valid key before any work.
"""

import difflib
import inspect
from typing import Any
from typing import Optional

from nncf_wcam.cli.run_config import RunConfigError
from nncf_wcam.errors import short_repr
from nncf_wcam.schema.blocks import ATTRIBUTION_MATCHING
from nncf_wcam.schema.validation import compression_blocks

INC_KEY = "inc"
INC_ALGORITHMS = {"pruning": "WeightPruningConfig", "quantization_aware_training": "QuantizationAwareTrainingConfig"}
_SHAPE = "Fix: write \"inc\": {\"pruning\": {...}} or {\"quantization_aware_training\": {}} (docs/inc.md)."


def inc_section(config: Any) -> Optional[dict]:
    """The config's `"inc"` section (None: an NNCF config)."""
    return config.get(INC_KEY) if isinstance(config, dict) else None


def _inc_class(algorithm: str):
    from nncf_wcam.inc.versions import require_training_api

    require_training_api("A config with an \"inc\" section")
    from nncf_wcam.inc import framework

    return getattr(framework, INC_ALGORITHMS[algorithm])


def _check_keys(algorithm: str, options: Any, cls) -> None:
    if not isinstance(options, dict):
        raise RunConfigError(f"inc.{algorithm} must be an object of {cls.__name__}'s arguments, got {short_repr(options)}. {_SHAPE}")
    accepted = [name for name, p in inspect.signature(cls).parameters.items() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    for key in options:
        if key not in accepted:
            close = difflib.get_close_matches(str(key), accepted, n=1)
            hint = f"Did you mean '{close[0]}'? " if close else ""
            raise RunConfigError(f"inc.{algorithm}: unknown key {short_repr(key)}. {hint}Valid keys ({cls.__name__}): {', '.join(accepted)}.")


def _check_pruning_values(options: dict) -> None:
    from neural_compressor.compression.pruner.criteria import CRITERIA

    target = options.get("target_sparsity", 0.9)
    if not isinstance(target, (int, float)) or isinstance(target, bool) or not 0 < target < 1:
        raise RunConfigError(f"inc.pruning.target_sparsity is {short_repr(target)}. Fix: a fraction of weights to prune, above 0 and below 1.")
    kind = str(options.get("pruning_type", "snip_momentum")).removesuffix("_progressive")
    if kind not in CRITERIA:
        raise RunConfigError(f"inc.pruning.pruning_type {short_repr(options.get('pruning_type'))} is not INC's. Fix: one of {', '.join(CRITERIA)} (optionally with '_progressive').")
    steps = {key: options.get(key, default) for key, default in (("start_step", 0), ("end_step", 0), ("pruning_frequency", 1))}
    for key, value in steps.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < (1 if key == "pruning_frequency" else 0):
            raise RunConfigError(f"inc.pruning.{key} is {short_repr(value)}. Fix: a whole number of training steps (>= {1 if key == 'pruning_frequency' else 0}).")
    if steps["end_step"] == 0 and kind != "magnitude":
        raise RunConfigError(f"inc.pruning.end_step is 0: INC's {kind} criterion scores weights by their gradients over steps. Fix: set end_step to the training step where pruning stops (> 0).")
    if steps["end_step"] < steps["start_step"]:
        raise RunConfigError(f"inc.pruning: end_step {steps['end_step']} comes before start_step {steps['start_step']}. Fix: prune from start_step to a later end_step.")


def check_inc_section(config: dict) -> None:
    """Refuses, in one line, an `"inc"` section INC would misread, or NNCF algorithms beside it."""
    section = config[INC_KEY]
    if not isinstance(section, dict) or not section:
        raise RunConfigError(f"\"inc\" must name INC's algorithms, got {short_repr(section)}. {_SHAPE}")
    for algorithm, options in section.items():
        if algorithm not in INC_ALGORITHMS:
            raise RunConfigError(f"inc: unknown algorithm {short_repr(algorithm)}. Valid: {', '.join(INC_ALGORITHMS)}.")
        _check_keys(algorithm, options, _inc_class(algorithm))
        if algorithm == "pruning":
            _check_pruning_values(options)
    others = [b.get("algorithm") for b in compression_blocks(config) if isinstance(b, dict) and b.get("algorithm") != ATTRIBUTION_MATCHING]
    if others:
        msg = f"An \"inc\" config compresses with INC; its \"compression\" holds only the attribution_matching block, found {short_repr(others)}. Fix: move them to \"inc\" or drop \"inc\"."
        raise RunConfigError(msg)


def inc_configs(section: dict) -> list:
    """INC's config objects, one per algorithm of the section (checked by `check_inc_section`)."""
    return [_inc_class(algorithm)(**options) for algorithm, options in section.items()]
