"""Does the compressed student point where its teacher points? Per-sample agreement of two batches of maps.

Degenerate maps never give NaN. A map is constant when its values span less than `CONSTANT_TOLERANCE`
times its largest magnitude (all zeros included). For every metric: both maps constant -> 1 (they carry
the same, empty, spatial information), exactly one constant -> 0 (no agreement). Cosine uses the same
rule only for all-zero maps, where it is undefined.
"""

from typing import Dict
from typing import Optional

import numpy as np
import torch
from scipy.stats import rankdata
from torch import nn

from nncf_wcam.core.logits import LogitsSelector
from nncf_wcam.evaluation.attributions import attribution_maps
from nncf_wcam.evaluation.attributions import logits_forward
from nncf_wcam.evaluation.attributions import resolve_target

CONSTANT_TOLERANCE = 1e-7


def _flatten(maps) -> np.ndarray:
    if isinstance(maps, torch.Tensor):
        maps = maps.detach().cpu().numpy()
    maps = np.asarray(maps, dtype=np.float64)
    return maps.reshape(maps.shape[0], -1)


def is_constant(values: np.ndarray) -> bool:
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
    degenerate = _degenerate_score(is_constant(a), is_constant(b))
    if degenerate is not None:
        return degenerate
    a, b = a - a.mean(), b - b.mean()
    return float(np.clip(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)), -1.0, 1.0))


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Rank correlation: Pearson of the ranks (ties get their average rank)."""
    degenerate = _degenerate_score(is_constant(a), is_constant(b))
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
    degenerate = _degenerate_score(is_constant(a), is_constant(b))
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
    logits_output: LogitsSelector = None,
    **options,
) -> Dict[str, np.ndarray]:
    """Agreement of the student's maps with the teacher's, both for the teacher's top-1 class."""
    target = resolve_target(logits_forward(teacher, logits_output), inputs, None)
    common = dict(method=method, target=target, logits_output=logits_output, **options)
    teacher_maps = attribution_maps(teacher, inputs, layer=layer, **common)
    student_maps = attribution_maps(student, inputs, layer=student_layer or layer, **common)
    return map_agreement(teacher_maps, student_maps, top_k)
