"""NNCF 3.x's calibration input: an `nncf.Dataset` over the user's (image, label) loader."""

import nncf
from torch.utils.data import DataLoader


def _images(batch):
    return batch[0]  # (images, labels) -> images: the model's input


def calibration_dataset(loader: DataLoader) -> nncf.Dataset:
    """`nncf.quantize`'s calibration dataset from a loader of (image, label) batches (labels are dropped)."""
    return nncf.Dataset(loader, _images)
