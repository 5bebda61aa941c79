"""`prepare_compression`: INC's own, with an `AttributionMatchingConfig` accepted beside INC's configs.

    from neural_compressor.config import WeightPruningConfig
    from nncf_wcam.inc import AttributionMatchingConfig, prepare_compression

    manager = prepare_compression(model, [WeightPruningConfig(...), AttributionMatchingConfig(example_inputs=x)])

The teacher is taken before INC touches the model; the matched layers are chosen on it ("auto": the last
spatial layer) and found again on the model INC prepares (`fusion`), when `on_train_begin` has run.
"""

import inspect
from typing import Any
from typing import List

import torch
from torch import nn

from nncf_wcam.core.layers import AUTO
from nncf_wcam.core.layers import LayerNameError
from nncf_wcam.core.layers import choose_layers
from nncf_wcam.core.layers import requested_layers
from nncf_wcam.core.matcher import AttributionMatcher
from nncf_wcam.errors import NncfWcamError
from nncf_wcam.errors import error_summary
from nncf_wcam.inc.callbacks import AttributionMatchingCallBacks
from nncf_wcam.inc.config import AttributionMatchingConfig
from nncf_wcam.inc.config import resolve_teacher
from nncf_wcam.inc.framework import CompressionManager
from nncf_wcam.inc.framework import WeightPruningConfig
from nncf_wcam.inc.framework import prepare_compression as inc_prepare_compression
from nncf_wcam.inc.fusion import student_layer_name


class IncConfigError(NncfWcamError, ValueError):
    """The list of configs given to prepare_compression cannot be used."""


def _split_configs(confs: Any) -> tuple:
    configs = list(confs) if isinstance(confs, (list, tuple)) else [confs]
    matching = [c for c in configs if isinstance(c, AttributionMatchingConfig)]
    others = [c for c in configs if not isinstance(c, AttributionMatchingConfig)]
    if len(matching) > 1:
        raise IncConfigError(f"{len(matching)} AttributionMatchingConfig objects given; give one (list several layers in its \"layers\").")
    if not others:
        msg = "AttributionMatchingConfig needs an INC algorithm beside it. Fix: add WeightPruningConfig, QuantizationAwareTrainingConfig or DistillationConfig to the list."
        raise IncConfigError(msg)
    return (matching[0] if matching else None), others


def _example_forward(model: nn.Module, example_inputs: Any):
    if example_inputs is None:
        return None
    args = tuple(example_inputs) if isinstance(example_inputs, (tuple, list)) else (example_inputs,)
    return lambda: model(*args)


def teacher_layers(config: AttributionMatchingConfig, teacher: nn.Module) -> List[str]:
    """The matched layers, named as in the teacher: "auto" resolved by one forward pass on `example_inputs`."""
    requested = requested_layers(config.layers)
    if requested == AUTO and config.example_inputs is None:
        msg = "layers=\"auto\" needs example_inputs (one batch of inputs) to run the model once. Fix: pass AttributionMatchingConfig(example_inputs=x), or name the layers."
        raise LayerNameError(msg)
    try:
        with torch.no_grad():
            return choose_layers(teacher, requested, _example_forward(teacher, config.example_inputs))
    except (RuntimeError, TypeError, ValueError) as error:
        if isinstance(error, NncfWcamError):
            raise
        msg = f"The model failed on AttributionMatchingConfig.example_inputs ({error_summary(error, 160)}). Fix: pass one batch shaped like the model's input (e.g. x[:2])."
        raise IncConfigError(msg) from error


def _matcher_factory(config: AttributionMatchingConfig, teacher: nn.Module, layers: List[str]):
    def build(student: nn.Module) -> AttributionMatcher:
        names = config.student_layers or [student_layer_name(teacher, student, layer) for layer in layers]
        return AttributionMatcher(
            teacher,
            student,
            layers,
            student_layers=names,
            method=config.method,
            weight=config.weight,
            layer_weights=config.layer_weights,
            stochastic_drop=config.stochastic_drop,
            logits_output=config.logits_output,
            seed=config.seed,
            input_method=config.input_method,
            input_weight=config.input_weight,
        )

    return build


def _own_pruning_configs(configs: List[Any]) -> None:
    """INC 3.7's WeightPruningConfig shares one mutable default `pruning_configs=[{}]` between instances, and
    fills it in on first use: every later config of the process would then prune with the first one's
    settings. Each config gets a list of its own."""
    shared = inspect.signature(WeightPruningConfig).parameters["pruning_configs"].default
    for config in configs:
        if isinstance(config, WeightPruningConfig) and config.pruning_configs is shared:
            config.pruning_configs = [{}]


def prepare_compression(model: nn.Module, confs: Any, **kwargs) -> CompressionManager:
    """INC's `prepare_compression(model, confs)`, where `confs` may hold one `AttributionMatchingConfig`.

    Returns INC's CompressionManager; with attribution matching its `callbacks` add the matching loss in
    `on_after_compute_loss` (the matcher: `attribution_matcher(manager)`, after `on_train_begin`).
    """
    if not isinstance(model, nn.Module):
        raise IncConfigError(f"prepare_compression needs the torch nn.Module to compress, got {type(model).__name__}.")
    config, inc_configs = _split_configs(confs)
    _own_pruning_configs(inc_configs)
    if config is None:
        return inc_prepare_compression(model, inc_configs, **kwargs)
    teacher = resolve_teacher(config, model)  # before INC changes the model
    layers = teacher_layers(config, teacher)
    manager = inc_prepare_compression(model, inc_configs, **kwargs)
    manager.callbacks = AttributionMatchingCallBacks(
        manager.callbacks.callbacks_list,
        build_matcher=_matcher_factory(config, teacher, layers),
        student=lambda: manager.model.model,
        pruning=any(isinstance(c, WeightPruningConfig) for c in inc_configs),
    )
    return manager


def attribution_matcher(manager: CompressionManager):
    """The matcher of a manager from `prepare_compression` (None before `on_train_begin` or without matching)."""
    return getattr(manager.callbacks, "matcher", None)
