"""Evaluation of attribution preservation, with captum as the oracle.

Three questions, one section each:
- what does a model attribute its decision to? `attribution_maps` (captum's Grad-CAM, Saliency,
  Integrated Gradients, Input x Gradient, Occlusion), one 2D map per sample;
- does the compressed student point where its teacher points? `map_agreement` (Pearson, Spearman,
  cosine, top-k IoU per sample) and `compare_attributions`;
- does a map point at the object? `localization_scores` (pointing game, ROC-AUC against masks).
The deployed OpenVINO IR is evaluated with Occlusion, the method that needs only a forward pass
(`ir_occlusion_maps`, `compare_ir_occlusion`). `plot_map_grid` draws maps for a report
(through `nncf_wcam.plotting`).

Conventions:
- Input-space methods give B x C x H x W attributions; they are collapsed to B x H x W by
  `channel_reduction`: "sum_abs" (default: sum over channels of |attribution|, a magnitude map as
  saliency maps are usually shown) or "sum" (signed sum over channels).
- Grad-CAM maps are ReLU'd (captum's `relu_attributions=True`), summed over channels by captum,
  and at the layer's resolution unless `upsample_to_input=True` (bilinear).
- Degenerate maps never give NaN in the agreement metrics. A map is constant when its values
  span less than `CONSTANT_TOLERANCE` times its largest magnitude (all zeros included). For every
  metric: both maps constant -> 1 (they carry the same, empty, spatial information), exactly one
  constant -> 0 (no agreement). Cosine uses the same rule only for all-zero maps, where it is undefined.
- Localization: samples whose mask is empty (pointing game) or all-empty / all-full (ROC-AUC) are
  undefined and get NaN; `summarize` averages with NaN skipped. A constant map has no peak: a miss.
"""

import inspect
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Dict, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from captum.attr import (
    InputXGradient,
    IntegratedGradients,
    LayerAttribution,
    LayerGradCam,
    Occlusion,
    Saliency,
)
from scipy.stats import rankdata
from torch import nn
from torch.utils.data import DataLoader
from torch.utils.data import Dataset

from nncf_wcam.attribution import LogitsSelector
from nncf_wcam.attribution import select_logits

LogitsOutput = Optional[Union[int, str]]
Target = Optional[Union[int, torch.Tensor]]
CONSTANT_TOLERANCE = 1e-7
CHANNEL_REDUCTIONS = ("sum_abs", "sum")


# ---------------------------------------------------------------------------------------------
# Attribution maps
# ---------------------------------------------------------------------------------------------


def logits_forward(model: Callable, logits_output: LogitsOutput = None) -> Callable:
    """A forward function returning the logits tensor, for models whose output is a dict or tuple."""
    if logits_output is None:
        return model

    def forward(inputs):
        outputs = model(inputs)
        if isinstance(outputs, torch.Tensor):  # indexing would silently pick a sample, not the logits
            raise ValueError(f"The model returns a single tensor: leave logits_output unset (got {logits_output!r}).")
        try:
            return outputs[logits_output]
        except (KeyError, IndexError, TypeError) as e:
            available = list(outputs.keys()) if isinstance(outputs, dict) else f"indices 0..{len(outputs) - 1}"
            msg = f"logits_output={logits_output!r} does not select the model's output; available: {available}."
            raise ValueError(msg) from e

    return forward


def resolve_layer(model: nn.Module, layer: Union[str, nn.Module]) -> nn.Module:
    """The submodule named `layer` (e.g. "features.9"); a wrong name raises a ValueError listing the valid names."""
    if isinstance(layer, nn.Module):
        return layer
    try:
        return model.get_submodule(layer)
    except AttributeError:
        names = [name for name, _ in model.named_modules() if name]
        msg = f"Layer '{layer}' is not a submodule of {type(model).__name__}. Valid layer names: {', '.join(names)}."
        raise ValueError(msg) from None


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
    logits_output: LogitsOutput = None,
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


# ---------------------------------------------------------------------------------------------
# Agreement between teacher and student maps
# ---------------------------------------------------------------------------------------------


def _flatten(maps) -> np.ndarray:
    if isinstance(maps, torch.Tensor):
        maps = maps.detach().cpu().numpy()
    maps = np.asarray(maps, dtype=np.float64)
    return maps.reshape(maps.shape[0], -1)


def _is_constant(values: np.ndarray) -> bool:
    scale = max(np.abs(values).max(), np.finfo(np.float64).tiny)
    return np.ptp(values) <= CONSTANT_TOLERANCE * scale


def _degenerate_score(a_constant: bool, b_constant: bool) -> Optional[float]:
    """The convention for constant maps: both -> 1, one -> 0, neither -> None (compute the metric)."""
    if a_constant and b_constant:
        return 1.0
    if a_constant or b_constant:
        return 0.0
    return None


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two flat maps (constant maps by the module's convention)."""
    degenerate = _degenerate_score(_is_constant(a), _is_constant(b))
    if degenerate is not None:
        return degenerate
    a, b = a - a.mean(), b - b.mean()
    return float(np.clip(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)), -1.0, 1.0))


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Rank correlation: Pearson of the ranks (ties get their average rank)."""
    degenerate = _degenerate_score(_is_constant(a), _is_constant(b))
    if degenerate is not None:
        return degenerate
    return pearson(rankdata(a), rankdata(b))


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two flat maps; all-zero maps by the module's convention."""
    degenerate = _degenerate_score(not np.any(a), not np.any(b))
    if degenerate is not None:
        return degenerate
    return float(np.clip(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)), -1.0, 1.0))


def top_k_indices(values: np.ndarray, top_k: float) -> np.ndarray:
    """Indices of the ceil(top_k * N) largest values (ties broken by position, deterministically)."""
    count = max(1, int(np.ceil(top_k * values.size)))
    return np.argsort(-values, kind="stable")[:count]


def top_k_iou(a: np.ndarray, b: np.ndarray, top_k: float = 0.1) -> float:
    """IoU of the two maps' top-k fraction of pixels (constant maps by the module's convention)."""
    degenerate = _degenerate_score(_is_constant(a), _is_constant(b))
    if degenerate is not None:
        return degenerate
    top_a, top_b = set(top_k_indices(a, top_k).tolist()), set(top_k_indices(b, top_k).tolist())
    return len(top_a & top_b) / len(top_a | top_b)


def map_agreement(teacher_maps, student_maps, top_k: float = 0.1) -> Dict[str, np.ndarray]:
    """Per-sample agreement of two batches of maps (B x H x W, tensors or arrays): pearson, spearman, cosine, iou."""
    teacher, student = _flatten(teacher_maps), _flatten(student_maps)
    if teacher.shape != student.shape:
        msg = f"Teacher maps {teacher.shape} and student maps {student.shape} differ in shape; compute them alike."
        raise ValueError(msg)
    if not 0.0 < top_k <= 1.0:
        raise ValueError(f"top_k is a fraction of pixels in (0, 1], got {top_k}.")
    metrics = {"pearson": pearson, "spearman": spearman, "cosine": cosine, "iou": lambda a, b: top_k_iou(a, b, top_k)}
    return {name: np.array([metric(t, s) for t, s in zip(teacher, student)]) for name, metric in metrics.items()}


def summarize(scores: Dict[str, np.ndarray]) -> Dict[str, float]:
    """Mean of each per-sample score, NaN (undefined samples) skipped; NaN only if no sample is defined."""
    summary = {}
    for name, values in scores.items():
        values = np.asarray(values, dtype=np.float64)
        summary[name] = float(np.nanmean(values)) if np.any(~np.isnan(values)) else float("nan")
    return summary


def compare_attributions(
    teacher: nn.Module,
    student: nn.Module,
    inputs: torch.Tensor,
    method: str,
    layer: Optional[str] = None,
    student_layer: Optional[str] = None,
    top_k: float = 0.1,
    logits_output: LogitsOutput = None,
    **options,
) -> Dict[str, np.ndarray]:
    """Agreement of the student's maps with the teacher's, both for the teacher's top-1 class."""
    target = resolve_target(logits_forward(teacher, logits_output), inputs, None)
    common = dict(method=method, target=target, logits_output=logits_output, **options)
    teacher_maps = attribution_maps(teacher, inputs, layer=layer, **common)
    student_maps = attribution_maps(student, inputs, layer=student_layer or layer, **common)
    return map_agreement(teacher_maps, student_maps, top_k)


# ---------------------------------------------------------------------------------------------
# Localization against ground-truth masks
# ---------------------------------------------------------------------------------------------


def resize_maps(maps: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """B x h x w maps resized bilinearly to B x size."""
    maps = torch.as_tensor(maps, dtype=torch.float32)
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    return F.interpolate(maps[:, None], size=tuple(size), mode="bilinear", align_corners=False)[:, 0]


def min_max_normalize(maps: torch.Tensor) -> torch.Tensor:
    """Each map scaled to [0, 1]; a constant map becomes zeros."""
    flat = maps.flatten(1)
    low, high = flat.min(dim=1, keepdim=True).values, flat.max(dim=1, keepdim=True).values
    span = (high - low).clamp_min(torch.finfo(flat.dtype).tiny)
    return ((flat - low) / span).view_as(maps)


def pointing_game(maps, masks, tolerance: int = 0) -> np.ndarray:
    """1.0 when a map's maximum (upsampled to the mask size) falls in the mask, dilated by `tolerance` pixels.

    Empty masks give NaN; a constant map has no peak and is a miss.
    """
    masks = torch.as_tensor(masks).bool()
    maps = resize_maps(maps, masks.shape[-2:])
    if tolerance > 0:
        kernel = 2 * tolerance + 1
        masks = F.max_pool2d(masks[:, None].float(), kernel, stride=1, padding=tolerance)[:, 0].bool()
    hits = np.zeros(len(maps))
    for i, (saliency, mask) in enumerate(zip(maps.flatten(1), masks.flatten(1))):
        if not mask.any():
            hits[i] = np.nan
        elif not _is_constant(saliency.double().numpy()):
            hits[i] = float(mask[saliency.argmax()])
    return hits


def localization_roc_auc(maps, masks) -> np.ndarray:
    """ROC-AUC of each min-max-normalized map (upsampled to the mask size) as a score for the mask's pixels.

    NaN where the mask is all-empty or all-full (undefined); a constant map scores 0.5.
    """
    from sklearn.metrics import roc_auc_score

    masks = torch.as_tensor(masks).bool()
    maps = min_max_normalize(resize_maps(maps, masks.shape[-2:]))
    scores = np.full(len(maps), np.nan)
    for i, (saliency, mask) in enumerate(zip(maps.flatten(1).numpy(), masks.flatten(1).numpy())):
        if 0 < mask.sum() < mask.size:
            scores[i] = roc_auc_score(mask, saliency)
    return scores


def localization_scores(maps, masks, tolerance: int = 0) -> Dict[str, np.ndarray]:
    """Per-sample pointing game hits and ROC-AUC against masks (N x S x S bool)."""
    return {"pointing_game": pointing_game(maps, masks, tolerance), "roc_auc": localization_roc_auc(maps, masks)}


# ---------------------------------------------------------------------------------------------
# Attributions of the deployed OpenVINO IR
# ---------------------------------------------------------------------------------------------


class OpenVINOForward:
    """An OpenVINO model as a torch forward function (torch batch in, torch logits out), for captum.

    `model`: a compiled model, or a path to an IR .xml compiled on `device` with the
    `inference_precision` hint (None: the device's default, i.e. what a deployment gets; OpenVINO's
    CPU plugin runs FP32 IRs in bf16 on CPUs with bf16 support; "f32" to measure the IR alone).
    `output`: index or name of the logits output. A static batch dimension is served in chunks of
    that size (the last chunk zero-padded), a dynamic one in a single call.
    """

    def __init__(
        self, model, output: Union[int, str] = 0, device: str = "CPU", inference_precision: Optional[str] = None
    ):
        if isinstance(model, (str, os.PathLike)):
            model = self._compile(Path(model), device, inference_precision)
        elif inference_precision is not None:
            msg = "inference_precision applies when compiling from a path; set it when you compile the model."
            raise ValueError(msg)
        self.compiled_model = model
        self.output = model.output(output)
        batch = model.input(0).get_partial_shape()[0]
        self.static_batch = batch.get_length() if batch.is_static else None

    @staticmethod
    def _compile(path: Path, device: str, inference_precision: Optional[str]):
        import openvino as ov

        if not path.is_file():
            raise FileNotFoundError(f"OpenVINO IR not found: {path}. Give the .xml written by the export.")
        config = {} if inference_precision is None else {"INFERENCE_PRECISION_HINT": inference_precision}
        core = ov.Core()
        return core.compile_model(core.read_model(path), device, config)

    @property
    def inference_precision(self) -> str:
        """The precision the device actually computes in (e.g. 'f32', 'bf16'), for reports."""
        try:
            return self.compiled_model.get_property("INFERENCE_PRECISION_HINT").get_type_name()
        except RuntimeError:  # devices without the property
            return "unknown"

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        return np.array(self.compiled_model(batch)[self.output])

    def __call__(self, inputs: torch.Tensor) -> torch.Tensor:
        batch = np.ascontiguousarray(inputs.detach().cpu().numpy(), dtype=np.float32)
        if self.static_batch is None:
            return torch.from_numpy(self._infer(batch))
        chunks = []
        for start in range(0, len(batch), self.static_batch):
            chunk = batch[start : start + self.static_batch]
            padding = self.static_batch - len(chunk)
            if padding:
                chunk = np.concatenate([chunk, np.zeros((padding, *chunk.shape[1:]), dtype=np.float32)])
            chunks.append(self._infer(chunk)[: len(chunk) - padding])
        return torch.from_numpy(np.concatenate(chunks))


def ir_occlusion_maps(ir, inputs: torch.Tensor, target: Target = None, **options) -> torch.Tensor:
    """Occlusion maps (B x H x W) of an OpenVINO model: an `OpenVINOForward`, a compiled model or a path
    to .xml (the latter two with OpenVINOForward's defaults). Options as `occlusion_maps`."""
    forward = ir if isinstance(ir, OpenVINOForward) else OpenVINOForward(ir)
    inputs = inputs.detach()
    return occlusion_maps(forward, inputs, resolve_target(forward, inputs, target), **options)


def compare_ir_occlusion(
    teacher: nn.Module,
    ir,
    inputs: torch.Tensor,
    top_k: float = 0.1,
    logits_output: LogitsOutput = None,
    **options,
) -> Dict[str, np.ndarray]:
    """Agreement of the IR's occlusion maps with the PyTorch teacher's, both for the teacher's top-1 class."""
    target = resolve_target(logits_forward(teacher, logits_output), inputs, None)
    teacher_maps = attribution_maps(teacher, inputs, "occlusion", target=target, logits_output=logits_output, **options)
    return map_agreement(teacher_maps, ir_occlusion_maps(ir, inputs, target, **options), top_k)


# ---------------------------------------------------------------------------------------------
# Figures
# ---------------------------------------------------------------------------------------------


def plot_map_grid(images, rows: Dict[str, torch.Tensor], path: os.PathLike, titles: Optional[Sequence[str]] = None) -> Path:
    """Writes a PNG (atomically) of the images and one row per entry of `rows` (label -> B x h x w maps), the
    first entry being the reference the others are compared with. A forwarder to `nncf_wcam.plotting`."""
    from nncf_wcam import plotting  # plotting builds on this module

    (reference_label, reference_maps), *students = rows.items()
    fig = plotting.attribution_figure(images, reference_maps, dict(students), reference_label=reference_label, column_titles=titles)
    return plotting.save_png(fig, path)


@torch.no_grad()
def accuracy(model: nn.Module, data: Dataset, logits_output: LogitsSelector = None, batch_size: int = 256) -> float:
    was_training = model.training
    model.eval()
    correct = total = 0
    for x, y in DataLoader(data, batch_size=batch_size):
        correct += (select_logits(model(x), logits_output).argmax(1) == y).sum().item()
        total += len(y)
    model.train(was_training)
    return correct / max(total, 1)
