"""The cluttered-digits localization dataset, built from real digits."""

import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset

import nncf_wcam  # noqa: F401  (sets NNCF's legacy tracing before anything imports nncf)
from nncf_wcam.evaluation.agreement import summarize
from nncf_wcam.evaluation.localization import localization_scores
from nncf_wcam.zoo.cluttered import MASK_THRESHOLD
from nncf_wcam.zoo.cluttered import cluttered_from_available
from nncf_wcam.zoo.cluttered import make_cluttered_dataset
from nncf_wcam.zoo.datasets import load_digits

from conftest import mnist_root


@pytest.fixture(scope="module")
def source():
    return load_digits().test


@pytest.fixture(scope="module")
def cluttered(source):
    return make_cluttered_dataset(source, canvas_size=32, num_clutter=3, seed=0, num_samples=60)


def test_shapes_types_and_labels(source, cluttered):
    images, labels, masks = cluttered  # unpacks like a tuple
    assert images.shape == (60, 1, 32, 32) and images.dtype == torch.float32
    assert masks.shape == (60, 32, 32) and masks.dtype == torch.bool
    assert torch.equal(labels, source.tensors[1][:60])
    assert images.min() >= 0 and images.max() <= 1
    assert len(cluttered.as_dataset()) == 60


def test_mask_is_exactly_the_pasted_digits_bright_pixels(source, cluttered):
    digits = source.tensors[0][:60, 0]
    mask_area = cluttered.masks.sum(dim=(1, 2))
    assert (mask_area > 0).all()
    torch.testing.assert_close(mask_area, (digits > MASK_THRESHOLD).sum(dim=(1, 2)))  # nothing resampled
    assert (cluttered.images[:, 0][cluttered.masks] > MASK_THRESHOLD).all()  # every mask pixel is bright
    # Everything bright outside the clutter belongs to the mask: the mask misses none of the digit.
    outside = ~cluttered.masks & ~cluttered.clutter_masks
    assert (cluttered.images[:, 0][outside] <= MASK_THRESHOLD).all()


def test_mask_keeps_the_digits_shape(source, cluttered):
    """The masked canvas, cropped to the mask's bounding box, is the source digit's own bright pattern."""
    for i in range(5):
        rows, cols = torch.nonzero(cluttered.masks[i], as_tuple=True)
        crop = cluttered.masks[i, rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
        bright = source.tensors[0][i, 0] > MASK_THRESHOLD
        digit_rows, digit_cols = torch.nonzero(bright, as_tuple=True)
        expected = bright[digit_rows.min() : digit_rows.max() + 1, digit_cols.min() : digit_cols.max() + 1]
        assert torch.equal(crop, expected)


def test_clutter_is_present_and_never_touches_the_digit(cluttered):
    assert cluttered.clutter_masks.flatten(1).any(dim=1).all()
    assert not (cluttered.clutter_masks & cluttered.masks).any()
    # Not even diagonally adjacent: a one-pixel margin separates clutter from the digit.
    dilated = torch.nn.functional.max_pool2d(cluttered.masks[:, None].float(), 3, stride=1, padding=1)[:, 0].bool()
    assert not (cluttered.clutter_masks & dilated).any()
    # Clutter is real ink: bright pixels outside the digit.
    assert (cluttered.images[:, 0][cluttered.clutter_masks] > MASK_THRESHOLD).any()


def test_clutter_comes_from_other_classes():
    """A source where each class has one constant brightness: the clutter's ink shows where it came from."""
    num_per_class, size = 5, 14
    labels = torch.arange(3).repeat_interleave(num_per_class)
    images = torch.zeros(len(labels), 1, size, size)
    images[:, 0, 3:11, 3:11] = (0.4 + 0.2 * labels.float())[:, None, None]  # class c: a square of 0.4 + 0.2 c
    data = make_cluttered_dataset(TensorDataset(images, labels), canvas_size=40, num_clutter=3, seed=0)
    for image, label, clutter in zip(data.images[:, 0], data.labels, data.clutter_masks):
        clutter_values = image[clutter & (image > 0)]
        assert len(clutter_values) > 0
        assert not torch.isclose(clutter_values, torch.tensor(0.4 + 0.2 * float(label))).any()


def test_deterministic_given_a_seed(source, cluttered):
    again = make_cluttered_dataset(source, canvas_size=32, num_clutter=3, seed=0, num_samples=60)
    other = make_cluttered_dataset(source, canvas_size=32, num_clutter=3, seed=1, num_samples=60)
    assert torch.equal(again.images, cluttered.images) and torch.equal(again.masks, cluttered.masks)
    assert not torch.equal(other.masks, cluttered.masks)  # digits land elsewhere


def test_no_clutter_leaves_only_the_digit(source):
    data = make_cluttered_dataset(source, canvas_size=24, num_clutter=0, seed=0, num_samples=10)
    assert not data.clutter_masks.any()
    totals = data.images.sum(dim=(1, 2, 3))
    torch.testing.assert_close(totals, source.tensors[0][:10].sum(dim=(1, 2, 3)))  # the whole digit, only it


def test_bad_arguments_are_rejected(source):
    with pytest.raises(ValueError, match="canvas_size"):
        make_cluttered_dataset(source, canvas_size=8)
    with pytest.raises(ValueError, match="patch_size"):
        make_cluttered_dataset(source, canvas_size=32, patch_size=16)
    with pytest.raises(ValueError, match="num_clutter"):
        make_cluttered_dataset(source, canvas_size=32, num_clutter=-1)


def test_masks_are_the_oracle_for_the_localization_metrics(cluttered):
    """The mask as a map localizes perfectly; a map on the clutter points at the wrong place."""
    perfect = summarize(localization_scores(cluttered.masks.float(), cluttered.masks))
    assert perfect == {"pointing_game": 1.0, "roc_auc": 1.0}
    clutter_only = cluttered.clutter_masks.float() * cluttered.images[:, 0]
    fooled = summarize(localization_scores(clutter_only, cluttered.masks))
    assert fooled["pointing_game"] == 0.0 and fooled["roc_auc"] < 0.5


def test_falls_back_to_sklearn_digits_without_mnist(monkeypatch):
    monkeypatch.delenv("NNCF_WCAM_DATA_ROOT", raising=False)
    data, description = cluttered_from_available(num_samples=20, seed=3)
    assert "digits" in description and "32x32" in description
    assert data.images.shape == (20, 1, 32, 32)


def test_uses_real_mnist_evaluation_split_when_available():
    mnist_root()
    data, description = cluttered_from_available(num_samples=30)
    assert "mnist" in description and "56x56" in description and "last 2000 evaluate" in description
    assert data.images.shape == (30, 1, 56, 56)
    assert (data.masks.sum(dim=(1, 2)) > 20).all()  # 28x28 MNIST strokes, not 8x8 digits
    assert not (data.clutter_masks & data.masks).any()
    assert np.isin(data.labels.numpy(), np.arange(10)).all()
