"""Builder and controller of the NNCF algorithm `attribution_matching`.

Modelled on NNCF's knowledge_distillation: the builder keeps a clean, frozen copy of the
uncompressed model as the teacher and adds no transformation; the controller's loss is the
matching loss. Unlike knowledge distillation, the teacher runs with gradients enabled
(its Grad-CAM weights need them) and in eval mode.
"""

from copy import deepcopy
from typing import Callable, Optional

import torch

from nncf import NNCFConfig
from nncf.common.logging import nncf_logger
from nncf.torch.algo_selector import PT_COMPRESSION_ALGORITHMS
from nncf.torch.graph.transformations.layout import PTTransformationLayout
from nncf.torch.nncf_network import NNCFNetwork
from nncf_wcam.attribution import LayerNameError
from nncf_wcam.attribution import has_spatial_extent
from nncf_wcam.attribution import last_spatial_layer
from nncf_wcam.attribution import record_output_shapes
from nncf_wcam.attribution import resolve_layers
from nncf_wcam.attribution import user_layer_names
from nncf_wcam.matching import AttributionMatcher
from nncf_wcam.matching import freeze
from nncf_wcam.nncf_plugin.base import RegularizerBuilder
from nncf_wcam.nncf_plugin.base import RegularizerController
from nncf_wcam.nncf_plugin.blocks import plugin_block
from nncf_wcam.nncf_plugin.config_check import AlgorithmConfigError
from nncf_wcam.nncf_plugin.schema import ATTRIBUTION_MATCHING


def clean_teacher(model: NNCFNetwork) -> NNCFNetwork:
    """A frozen, uncompressed copy of the model as it is before compression (as knowledge_distillation makes it)."""
    return freeze(deepcopy(model).nncf.get_clean_shallow_copy())


def example_forward(model: NNCFNetwork) -> Optional[Callable]:
    """A forward pass on the config's `input_info`, used to find and check layers before training."""
    input_info = model.nncf.input_infos
    if not hasattr(input_info, "get_forward_inputs"):
        return None
    device = next(model.parameters()).device
    args, kwargs = input_info.get_forward_inputs(device)
    return lambda: model(*args, **kwargs)


def requested_layers(value):
    """The block's "layers" as "auto" or a list of names: `["auto"]` means "auto" (a list is what people write)."""
    if value == "auto" or (isinstance(value, (list, tuple)) and list(value) == ["auto"]):
        return "auto"
    if isinstance(value, (list, tuple)) and "auto" in value:
        msg = f"\"layers\": {list(value)} mixes \"auto\" with layer names. Write \"layers\": \"auto\" (one layer, picked for you) or list layer names only."
        raise LayerNameError(msg)
    return list(value)


def choose_layers(model: torch.nn.Module, requested, run_forward: Optional[Callable] = None) -> list:
    """Resolves "auto" (or ["auto"]) and checks that every named layer exists, runs, and has a spatial output.

    `run_forward`: one forward pass of `model` (on the config's input_info or a data sample); without it
    names are only checked to exist. Errors name the layers with spatial outputs, the ones that can be matched.
    """
    requested = requested_layers(requested)
    if run_forward is None:
        if requested == "auto":
            msg = "\"layers\": \"auto\" needs the config's \"input_info\" to run the model once. Add it, or name the layers."
            raise LayerNameError(msg)
        resolve_layers(model, requested)  # raises with the list of valid names
        return requested
    shapes = record_output_shapes(model, run_forward, user_layer_names(model))
    if requested == "auto":
        layer = last_spatial_layer(shapes)
        nncf_logger.info(f"attribution_matching: \"layers\": \"auto\" matches '{layer}' (output {shapes[layer]})")
        return [layer]
    spatial = ", ".join(repr(name) for name, shape in shapes.items() if has_spatial_extent(shape))
    names = set(user_layer_names(model))
    for name in requested:
        if name not in names:
            msg = f"Layer {name!r} does not exist in {type(model).__name__}. Layers with spatial outputs (the ones that can be used): {spatial}."
            raise LayerNameError(msg)
        if name not in shapes:
            msg = f"Layer {name!r} does not run in the model's forward pass. Layers with spatial outputs that do: {spatial}."
            raise LayerNameError(msg)
        if not has_spatial_extent(shapes[name]):
            msg = (
                f"Layer {name!r} outputs shape {shapes[name]}: no spatial dimensions to draw a map over. "
                f"Pick a layer with a B x C x H x W output: {spatial}."
            )
            raise LayerNameError(msg)
    return requested


@PT_COMPRESSION_ALGORITHMS.register(ATTRIBUTION_MATCHING)
class AttributionMatchingBuilder(RegularizerBuilder):
    def __init__(self, config: NNCFConfig, should_init: bool = True):
        # Checked before NNCF parses the block, so a bad block gets our one-line error.
        self.params = plugin_block(config, ATTRIBUTION_MATCHING)
        layers, layer_weights = requested_layers(self.params["layers"]), self.params["layer_weights"]
        count = 1 if layers == "auto" else len(layers)
        if layer_weights is not None and len(layer_weights) != count:
            msg = f"{ATTRIBUTION_MATCHING}.layer_weights: {len(layer_weights)} weights for {count} layer(s). Fix: give one weight per layer."
            raise AlgorithmConfigError(msg)
        if layers == [] and self.params["input_method"] is None:
            msg = f"{ATTRIBUTION_MATCHING}.layers: [] matches nothing. Fix: name a layer, use \"auto\", or set \"input_method\"."
            raise AlgorithmConfigError(msg)
        super().__init__(config, should_init)
        self._teacher = None
        self._layers = None

    def _get_transformation_layout(self, target_model: NNCFNetwork) -> PTTransformationLayout:
        # Called before any algorithm transforms the model: the copy is the uncompressed model.
        self._teacher = clean_teacher(target_model)
        self._layers = choose_layers(self._teacher, self.params["layers"], example_forward(self._teacher))
        return PTTransformationLayout()

    def _build_controller(self, model: NNCFNetwork) -> "AttributionMatchingController":
        matcher = AttributionMatcher(
            self._teacher,
            model,
            self._layers,
            method=self.params["method"],
            weight=self.params["weight"],
            layer_weights=self.params["layer_weights"],
            stochastic_drop=self.params["stochastic_drop"],
            logits_output=self.params["logits_output"],
            seed=self.params["seed"],
            input_method=self.params["input_method"],
            input_weight=self.params["input_weight"],
        )
        return AttributionMatchingController(model, matcher)

    def _get_state_without_name(self) -> dict:
        return {"layers": self._layers}


class AttributionMatchingController(RegularizerController):
    """Holds the matcher; `loss` is the matching loss of the latest training forward pass.

    The per-layer losses of the last step are in `matcher.last_layer_losses`.
    """

    def __init__(self, target_model: NNCFNetwork, matcher: AttributionMatcher):
        super().__init__(target_model, matcher)
        self.matcher = matcher

    @property
    def teacher(self) -> NNCFNetwork:
        return self.matcher.teacher
