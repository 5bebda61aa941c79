"""Which layers attribution maps are drawn at: names as the user wrote them, checked, and "auto".

"auto" picks the layer a Grad-CAM user picks: the last module to finish whose output is a spatial
feature map. Every error names the layers that can be used.
"""

import logging
from typing import Any
from typing import Callable
from typing import Iterable
from typing import Optional
from typing import Sequence
from typing import Union

import torch
from torch import nn

from nncf_wcam.errors import NncfWcamError

logger = logging.getLogger("nncf_wcam")

# Module-name parts that NNCF adds to a wrapped model; they are not user layers.
_NNCF_INTERNAL_PARTS = ("_nncf", "pre_ops", "post_ops")
AUTO = "auto"


class LayerNameError(NncfWcamError, ValueError):
    """A layer named in a config does not exist, does not run, or has no spatial output."""


def user_layer_names(model: nn.Module) -> list:
    """Names of the model's modules as the user wrote them, without NNCF's internal submodules."""
    names = []
    for name, _ in model.named_modules():
        if name and not any(part in _NNCF_INTERNAL_PARTS for part in name.split(".")):
            names.append(name)
    return names


def resolve_layers(model: nn.Module, names: Sequence[str]) -> list:
    """Returns the modules for `names`, or raises LayerNameError listing the names that exist."""
    valid = user_layer_names(model)
    modules = []
    for name in names:
        if name not in valid:
            msg = f"Layer {name!r} does not exist in {type(model).__name__}. Layers that do: {', '.join(valid)}."
            raise LayerNameError(msg)
        modules.append(model.get_submodule(name))
    return modules


def resolve_layer(model: nn.Module, layer: Union[str, nn.Module]) -> nn.Module:
    """The submodule named `layer` (e.g. "features.9"), or `layer` itself when it is a module."""
    return layer if isinstance(layer, nn.Module) else resolve_layers(model, [layer])[0]


def record_output_shapes(model: nn.Module, run_forward: Callable[[], Any], names: Iterable[str]) -> dict:
    """Runs one forward pass and returns {name: output shape (or None if not a tensor)} in completion order."""
    shapes = {}
    handles = []
    for name in names:
        module = model.get_submodule(name)

        def hook(_module, _inputs, output, name=name):
            shapes.pop(name, None)  # re-insert so the order is that of the last completion
            shapes[name] = tuple(output.shape) if isinstance(output, torch.Tensor) else None

        handles.append(module.register_forward_hook(hook))
    try:
        with torch.no_grad():
            run_forward()
    finally:
        for handle in handles:
            handle.remove()
    return shapes


def has_spatial_extent(shape: Optional[tuple]) -> bool:
    """B x C x H x W (or B x C x L): at least one spatial dimension larger than 1."""
    return shape is not None and len(shape) >= 3 and any(s > 1 for s in shape[2:])


def last_spatial_layer(shapes: dict) -> str:
    """The layer a Grad-CAM user picks: the last module to finish whose output is a spatial feature map.

    Containers finish after their children, so for `features -> pool -> fc` this is `features`,
    and for a ResNet it is `layer4`: the same tensor as its last block's output.
    """
    spatial = [name for name, shape in shapes.items() if has_spatial_extent(shape)]
    if not spatial:
        msg = "\"layers\": \"auto\" found no module with a spatial output (B x C x H x W). Name the layers explicitly."
        raise LayerNameError(msg)
    return spatial[-1]


def requested_layers(value) -> Union[str, list]:
    """A block's "layers" as "auto" or a list of names: `["auto"]` means "auto" (a list is what people write)."""
    if value == AUTO or (isinstance(value, (list, tuple)) and list(value) == [AUTO]):
        return AUTO
    if isinstance(value, (list, tuple)) and AUTO in value:
        msg = f"\"layers\": {list(value)} mixes \"auto\" with layer names. Write \"layers\": \"auto\" (one layer, picked for you) or list layer names only."
        raise LayerNameError(msg)
    return list(value)


def _check_named_layers(model: nn.Module, requested: list, shapes: dict) -> None:
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


def choose_layers(model: nn.Module, requested, run_forward: Optional[Callable] = None) -> list:
    """Resolves "auto" (or ["auto"]) and checks that every named layer exists, runs, and has a spatial output.

    `run_forward`: one forward pass of `model` (on a config's input_info or a data sample); without it
    names are only checked to exist. Errors name the layers with spatial outputs, the ones that can be matched.
    """
    requested = requested_layers(requested)
    if run_forward is None:
        if requested == AUTO:
            msg = "\"layers\": \"auto\" needs the config's \"input_info\" to run the model once. Add it, or name the layers."
            raise LayerNameError(msg)
        resolve_layers(model, requested)  # raises with the list of valid names
        return requested
    shapes = record_output_shapes(model, run_forward, user_layer_names(model))
    if requested == AUTO:
        layer = last_spatial_layer(shapes)
        logger.info("attribution matching: \"layers\": \"auto\" matches '%s' (output %s)", layer, shapes[layer])
        return [layer]
    _check_named_layers(model, requested, shapes)
    return requested
