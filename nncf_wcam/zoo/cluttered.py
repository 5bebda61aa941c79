"""A localization dataset with ground truth from real digits: "where is the digit?".

Each digit is pasted at a random place on a larger black canvas (28x28 MNIST on 56x56, 16x16
scikit-learn digits on 32x32). Clutter patches cut from digits of OTHER classes are pasted
around it without touching it, so a map that points at the clutter is wrong and a map that
points at the digit is right. The ground-truth mask is the pasted digit's own bright pixels.
The WCAM paper evaluated localization the same way on PASCAL VOC segmentation masks
(pointing game, ROC-AUC): see `nncf_wcam.evaluation.localization.localization_scores`.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator
from typing import Optional
from typing import Tuple

import numpy as np
import torch
from scipy.ndimage import binary_dilation
from torch.utils.data import TensorDataset

from nncf_wcam.zoo.datasets import data_root_from_env
from nncf_wcam.zoo.datasets import load_digits
from nncf_wcam.zoo.datasets import load_mnist

MASK_THRESHOLD = 0.3


@dataclass(frozen=True)
class ClutteredDigits:
    """Cluttered canvases; sample i holds the source's digit i. Unpacks as `images, labels, masks`."""

    images: torch.Tensor  # N x 1 x S x S, in [0, 1]
    labels: torch.Tensor  # N, the pasted digit's label
    masks: torch.Tensor  # N x S x S bool, the pasted digit's pixels above the threshold
    clutter_masks: torch.Tensor  # N x S x S bool, the pixels the clutter patches put ink on

    def __iter__(self) -> Iterator[torch.Tensor]:
        return iter((self.images, self.labels, self.masks))

    def __len__(self) -> int:
        return len(self.labels)

    def as_dataset(self) -> TensorDataset:
        """(image, label) pairs, for training or evaluating a classifier on the canvases."""
        return TensorDataset(self.images, self.labels)


def default_patch_size(digit_size: int) -> int:
    """Clutter patches about 2/7 of a digit's side: 8 for 28x28 MNIST, 5 for 16x16 digits."""
    return max(2, round(digit_size * 2 / 7))


def _crop_around_ink(digit: np.ndarray, patch_size: int, rng: np.random.Generator) -> np.ndarray:
    """A patch_size square of `digit` centred on one of its bright pixels (so the clutter is visible ink)."""
    bright = np.argwhere(digit > MASK_THRESHOLD)
    if len(bright) == 0:
        bright = np.argwhere(digit == digit.max())
    center_y, center_x = bright[rng.integers(len(bright))]
    top = int(np.clip(center_y - patch_size // 2, 0, digit.shape[0] - patch_size))
    left = int(np.clip(center_x - patch_size // 2, 0, digit.shape[1] - patch_size))
    return digit[top : top + patch_size, left : left + patch_size]


def _free_positions(forbidden: np.ndarray, patch_size: int) -> np.ndarray:
    """Top-left corners (K x 2) where a patch_size square covers no forbidden pixel (integral-image window sums)."""
    integral = np.pad(forbidden.astype(np.int64), ((1, 0), (1, 0))).cumsum(0).cumsum(1)
    p = patch_size
    window_sums = integral[p:, p:] - integral[:-p, p:] - integral[p:, :-p] + integral[:-p, :-p]
    return np.argwhere(window_sums == 0)


def _donor_index(labels: np.ndarray, index: int, rng: np.random.Generator) -> int:
    """A random digit of another class (any other digit if the source has one class only)."""
    candidates = np.flatnonzero(labels != labels[index])
    if len(candidates) == 0:
        candidates = np.delete(np.arange(len(labels)), index)
    return int(candidates[rng.integers(len(candidates))])


def _make_canvas(digits, labels, index, canvas_size, num_clutter, patch_size, rng):
    """One canvas: the digit at a random place, then clutter patches away from its mask (1-pixel margin)."""
    digit = digits[index]
    height, width = digit.shape
    canvas = np.zeros((canvas_size, canvas_size), dtype=np.float32)
    top, left = rng.integers(canvas_size - height + 1), rng.integers(canvas_size - width + 1)
    canvas[top : top + height, left : left + width] = digit
    mask = np.zeros_like(canvas, dtype=bool)
    mask[top : top + height, left : left + width] = digit > MASK_THRESHOLD
    clutter = np.zeros_like(mask)
    margin = binary_dilation(mask, structure=np.ones((3, 3), dtype=bool))  # diagonal neighbours too
    free = _free_positions(margin, patch_size)
    for _ in range(num_clutter if len(free) else 0):
        patch = _crop_around_ink(digits[_donor_index(labels, index, rng)], patch_size, rng)
        y, x = free[rng.integers(len(free))]
        region = (slice(y, y + patch_size), slice(x, x + patch_size))
        canvas[region] = np.maximum(canvas[region], patch)  # max: clutter never erases ink already there
        clutter[region] |= patch > 0
    return canvas, mask, clutter


def make_cluttered_dataset(
    source: TensorDataset,
    canvas_size: int,
    num_clutter: int = 3,
    seed: int = 0,
    patch_size: Optional[int] = None,
    num_samples: Optional[int] = None,
) -> ClutteredDigits:
    """Pastes each of the first `num_samples` digits of `source` (1 x h x w images in [0, 1]) on a
    canvas_size square with `num_clutter` patches (patch_size, default `default_patch_size`) of
    other-class digits. Deterministic given `seed`."""
    images, labels = source.tensors[0], source.tensors[1]
    num_samples = len(labels) if num_samples is None else min(num_samples, len(labels))
    digits = images[:, 0].numpy()
    labels = labels.numpy()
    digit_size = max(digits.shape[1:])
    patch_size = patch_size or default_patch_size(digit_size)
    if canvas_size < digit_size:
        raise ValueError(f"canvas_size {canvas_size} is smaller than the digits; use at least {digit_size}.")
    if not 0 < patch_size < digit_size:
        raise ValueError(f"patch_size must be in (0, {digit_size}): clutter smaller than a digit; got {patch_size}.")
    if num_clutter < 0:
        raise ValueError(f"num_clutter must be >= 0, got {num_clutter}.")
    if num_samples < 1:
        raise ValueError("The source dataset is empty (or num_samples < 1): there is no digit to paste.")
    rng = np.random.default_rng(seed)
    samples = [_make_canvas(digits, labels, i, canvas_size, num_clutter, patch_size, rng) for i in range(num_samples)]
    canvases, masks, clutter = map(np.stack, zip(*samples))
    return ClutteredDigits(
        images=torch.from_numpy(canvases).unsqueeze(1),
        labels=torch.from_numpy(labels[:num_samples].copy()),
        masks=torch.from_numpy(masks),
        clutter_masks=torch.from_numpy(clutter),
    )


def cluttered_from_available(
    num_samples: Optional[int] = None,
    num_clutter: int = 3,
    seed: int = 0,
    canvas_scale: int = 2,
    mnist_root: Optional[Path] = None,
) -> Tuple[ClutteredDigits, str]:
    """Cluttered canvases from the real MNIST evaluation split when found (`mnist_root` or
    NNCF_WCAM_DATA_ROOT), else from scikit-learn's digits test split; with a description of which."""
    root = mnist_root or data_root_from_env()
    if root is not None:
        split = load_mnist(root)
    else:
        split = load_digits()
    digit_size = split.test.tensors[0].shape[-1]
    canvas_size = canvas_scale * digit_size
    data = make_cluttered_dataset(split.test, canvas_size, num_clutter, seed, num_samples=num_samples)
    patch_size = default_patch_size(digit_size)
    description = (
        f"cluttered {split.name}: {len(data)} evaluation digits ({digit_size}x{digit_size}) of [{split.description}] "
        f"pasted at random on {canvas_size}x{canvas_size} canvases with {num_clutter} clutter patches "
        f"({patch_size}x{patch_size}, from other-class digits, not touching the digit), seed {seed}; "
        f"masks: the digit's pixels > {MASK_THRESHOLD}"
    )
    return data, description
