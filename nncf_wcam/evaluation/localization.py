"""Does a map point at the object? The pointing game and ROC-AUC against ground-truth masks, as the WCAM paper
evaluated localization on PASCAL VOC (`nncf_wcam.zoo.cluttered` makes such masks from real digits).

Samples whose mask is empty (pointing game) or all-empty / all-full (ROC-AUC) are undefined and get NaN;
`agreement.summarize` averages with NaN skipped. A constant map has no peak: a miss.
"""

from typing import Dict
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score

from nncf_wcam.evaluation.agreement import is_constant


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
        elif not is_constant(saliency.double().numpy()):
            hits[i] = float(mask[saliency.argmax()])
    return hits


def localization_roc_auc(maps, masks) -> np.ndarray:
    """ROC-AUC of each min-max-normalized map (upsampled to the mask size) as a score for the mask's pixels.

    NaN where the mask is all-empty or all-full (undefined); a constant map scores 0.5.
    """
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
