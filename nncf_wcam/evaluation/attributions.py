"""What does a model attribute its decision to? One 2D map per sample by a captum method.

`attribution_maps` runs captum's Grad-CAM (at a layer), Saliency, Integrated Gradients, Input x Gradient
or Occlusion for given target classes (the model's top-1 by default; pass the teacher's top-1 to compare a
student with its teacher for the same class).

Conventions:
- Input-space methods give B x C x H x W attributions; they are collapsed to B x H x W by
  `channel_reduction`: "sum_abs" (default: sum over channels of |attribution|, a magnitude map as
  saliency maps are usually shown) or "sum" (signed sum over channels).
- Grad-CAM maps are ReLU'd (captum's `relu_attributions=True`), summed over channels by captum,
  and at the layer's resolution unless `upsample_to_input=True` (bilinear).
"""

import inspect
from contextlib import contextmanager
from typing import Callable
from typing import Optional
from typing import Union

import torch
from captum.attr import InputXGradient
from captum.attr import IntegratedGradients
from captum.attr import LayerAttribution
from captum.attr import LayerGradCam
from captum.attr import Occlusion
from captum.attr import Saliency
from torch import nn

from nncf_wcam.core.layers import resolve_layer
from nncf_wcam.core.logits import LogitsSelector
from nncf_wcam.core.logits import select_logits

Target = Optional[Union[int, torch.Tensor]]
CHANNEL_REDUCTIONS = ("sum_abs", "sum")


def logits_forward(model: Callable, logits_output: LogitsSelector = None) -> Callable:
    """A forward function returning the logits tensor (`core.logits.select_logits` on the model's output)."""
    if logits_output is None:
        return model
    return lambda inputs: select_logits(model(inputs), logits_output)


@contextmanager
def eval_mode(model: nn.Module):
    """Puts every submodule in eval mode, then restores each one's own mode (models may mix modes)."""
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in modes:
            module.training = training


def resolve_target(forward: Callable, inputs: torch.Tensor, target: Target) -> torch.Tensor:
    """Target classes as a B-long tensor: the forward's top-1 when `target` is None."""
    batch_size = inputs.shape[0]
    if target is None:
        with torch.no_grad():
            return forward(inputs).argmax(dim=1)
    if isinstance(target, int):
        return torch.full((batch_size,), target, dtype=torch.long)
    target = torch.as_tensor(target, dtype=torch.long).flatten()
    if target.numel() != batch_size:
        msg = f"target has {target.numel()} entries for a batch of {batch_size} inputs; give one class per sample."
        raise ValueError(msg)
    return target


def collapse_channels(attributions: torch.Tensor, channel_reduction: str = "sum_abs") -> torch.Tensor:
    """B x C x H x W -> B x H x W (see the module docstring for the reductions)."""
    if channel_reduction == "sum_abs":
        return attributions.abs().sum(dim=1)
    if channel_reduction == "sum":
        return attributions.sum(dim=1)
    msg = f"Unknown channel_reduction '{channel_reduction}'. Use one of: {', '.join(CHANNEL_REDUCTIONS)}."
    raise ValueError(msg)


def _grad_cam(forward, model, inputs, target, layer=None, upsample_to_input=False):
    if layer is None:
        raise ValueError("Grad-CAM needs a `layer`, e.g. layer='features.9' (the last spatial feature map).")
    grad_cam = LayerGradCam(forward, resolve_layer(model, layer))
    maps = grad_cam.attribute(inputs, target=target, relu_attributions=True)  # B x 1 x h x w
    if upsample_to_input:
        maps = LayerAttribution.interpolate(maps, tuple(inputs.shape[-2:]), interpolate_mode="bilinear")
    return maps[:, 0]


def _saliency(forward, model, inputs, target, channel_reduction="sum_abs"):
    return collapse_channels(Saliency(forward).attribute(inputs, target=target, abs=True), channel_reduction)


def _integrated_gradients(forward, model, inputs, target, n_steps=32, baseline=0.0, channel_reduction="sum_abs"):
    attributions = IntegratedGradients(forward).attribute(inputs, baselines=baseline, target=target, n_steps=n_steps)
    return collapse_channels(attributions, channel_reduction)


def _input_x_gradient(forward, model, inputs, target, channel_reduction="sum_abs"):
    return collapse_channels(InputXGradient(forward).attribute(inputs, target=target), channel_reduction)


def occlusion_maps(
    forward: Callable,
    inputs: torch.Tensor,
    target: torch.Tensor,
    window: int = 4,
    stride: int = 2,
    baseline: float = 0.0,
    perturbations_per_eval: int = 1,
    channel_reduction: str = "sum_abs",
) -> torch.Tensor:
    """captum Occlusion with a square `window` over all channels, for any forward function (B x H x W)."""
    channels = inputs.shape[1]
    attributions = Occlusion(forward).attribute(
        inputs,
        sliding_window_shapes=(channels, window, window),
        strides=(channels, stride, stride),
        baselines=baseline,
        target=target,
        perturbations_per_eval=perturbations_per_eval,
    )
    return collapse_channels(attributions, channel_reduction)


def _occlusion(forward, model, inputs, target, **options):
    return occlusion_maps(forward, inputs, target, **options)


METHODS = {
    "grad_cam": _grad_cam,
    "saliency": _saliency,
    "integrated_gradients": _integrated_gradients,
    "input_x_gradient": _input_x_gradient,
    "occlusion": _occlusion,
}


def _method_options(method: str) -> list:
    """The keyword options of a method: its parameters after `target` (Grad-CAM's `layer` is passed apart)."""
    function = occlusion_maps if method == "occlusion" else METHODS[method]
    names = list(inspect.signature(function).parameters)
    return [name for name in names[names.index("target") + 1 :] if name != "layer"]


def attribution_maps(
    model: nn.Module,
    inputs: torch.Tensor,
    method: str,
    target: Target = None,
    layer: Optional[Union[str, nn.Module]] = None,
    logits_output: LogitsSelector = None,
    **options,
) -> torch.Tensor:
    """One 2D attribution map per sample (B x H x W, detached) by a captum method.

    `method`: one of METHODS. `target`: None (the model's top-1), an int, or one class per sample
    (pass the teacher's top-1 to compare a student with its teacher for the same class).
    `layer`: Grad-CAM's layer, a name like "features.9". Options per method:
    grad_cam: upsample_to_input; saliency, input_x_gradient: channel_reduction;
    integrated_gradients: n_steps, baseline, channel_reduction;
    occlusion: window, stride, baseline, perturbations_per_eval, channel_reduction.
    """
    if method not in METHODS:
        raise ValueError(f"Unknown attribution method '{method}'. Use one of: {', '.join(METHODS)}.")
    unknown = sorted(set(options) - set(_method_options(method)))
    if unknown:
        msg = f"Unknown option(s) {unknown} for method '{method}'. Valid options: {', '.join(_method_options(method))}."
        raise ValueError(msg)
    inputs = inputs.detach().requires_grad_(True)  # a fresh leaf: gradient methods differentiate w.r.t. it
    forward = logits_forward(model, logits_output)
    with eval_mode(model):
        target = resolve_target(forward, inputs, target)
        extra = {"layer": layer} if method == "grad_cam" else {}
        maps = METHODS[method](forward, model, inputs, target, **extra, **options)
    return maps.detach()
