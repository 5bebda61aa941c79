"""Differentiable collapsed attribution maps and their distance.

captum's maps are not differentiable, so the training loss computes its own; captum serves as the
oracle in evaluation and tests. Shapes: activations and gradients B x C x (spatial...), maps B x (spatial...).
"""

from typing import Optional

import torch
import torch.nn.functional as F

INPUT_METHODS = ("saliency", "input_x_gradient")


def _broadcast_mask(channel_mask: torch.Tensor, spatial_dims: int) -> torch.Tensor:
    return channel_mask.view(*channel_mask.shape, *([1] * spatial_dims))


def wcam_map(activation: torch.Tensor, gradient: torch.Tensor, channel_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Weighted collapsed map ReLU(sum_c w_c A_c), w_c = sum over space of dy_k/dA_c (Grad-CAM up to scale).

    `channel_mask` (B x C, 0/1) drops channels before collapsing (stochastic matching).
    Returns B x (spatial...) maps.
    """
    spatial_dims = tuple(range(2, activation.dim()))
    weights = gradient.sum(dim=spatial_dims, keepdim=True)
    weighted = weights * activation
    if channel_mask is not None:
        weighted = weighted * _broadcast_mask(channel_mask, len(spatial_dims))
    return F.relu(weighted.sum(dim=1))


def ewa_map(activation: torch.Tensor, channel_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Label-free ablation (attention transfer): mean over channels of A_c squared."""
    squared = activation.pow(2)
    if channel_mask is not None:
        squared = squared * _broadcast_mask(channel_mask, activation.dim() - 2)
    return squared.mean(dim=1)


def normalize_maps(maps: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Per-sample L2 normalization of flattened maps; an all-zero map stays zero (no NaN).

    Half-precision maps (bf16/fp16 autocast) are normalized in float32: the sum of squares and
    the difference of unit maps lose most of their precision in 8 mantissa bits.
    """
    maps = maps.flatten(1)
    if maps.dtype in (torch.float16, torch.bfloat16):
        maps = maps.float()
    return F.normalize(maps, p=2, dim=1, eps=eps)


def map_distance(teacher_maps: torch.Tensor, student_maps: torch.Tensor) -> torch.Tensor:
    """Per sample, the SUM over positions of (n(M_t) - n(M_s))^2 = 2 (1 - cos); then the mean over the batch.

    In [0, 4] whatever the map's size: a loss weight means the same for a 7 x 7 and a 56 x 56 layer
    and for any batch size. (The authors' code took the mean over positions too, which makes beta's
    effect shrink with H * W: their beta 100 on VGG16's 14 x 14 maps is 100 / 196 = 0.51 here.)
    """
    squared = (normalize_maps(teacher_maps) - normalize_maps(student_maps)).pow(2)
    return squared.sum(dim=1).mean()


def input_map(method: str, inputs: torch.Tensor, gradient: torch.Tensor) -> torch.Tensor:
    """Input-space attribution for the target class: |dy_k/dx| ("saliency", captum's Saliency with abs)
    or x * dy_k/dx ("input_x_gradient", captum's InputXGradient); same shape as the input."""
    if method == "saliency":
        return gradient.abs()
    if method == "input_x_gradient":
        return inputs * gradient
    msg = f"Unknown input_method '{method}'. Use one of: {', '.join(INPUT_METHODS)}, or null."
    raise ValueError(msg)
