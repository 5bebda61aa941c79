"""Datasets: scikit-learn's digits (the embedded default) and MNIST / FashionMNIST IDX files.

Nothing is downloaded. IDX files are read from a folder the user names: the dataset block's "root",
the command line's `--data-root`, or the environment variable NNCF_WCAM_DATA_ROOT.
"""

import logging
import os
from dataclasses import dataclass
from dataclasses import replace
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

from nncf_wcam.zoo.idx import MNIST_FILES
from nncf_wcam.zoo.idx import TEST_SET_TRAIN_PART
from nncf_wcam.zoo.idx import DataError
from nncf_wcam.zoo.idx import find_idx_file
from nncf_wcam.zoo.idx import load_idx_pair

logger = logging.getLogger("nncf_wcam")

DATA_ROOT_ENV = "NNCF_WCAM_DATA_ROOT"
MAX_IMAGE_SIZE = 256  # digits are upsampled in memory: 1,797 images at 256 x 256 already take 470 MB
IDX_DATASETS = ("mnist", "fashion_mnist")


@dataclass
class DatasetSplit:
    """Train and evaluation tensors of one dataset, images in [0, 1] as N x 1 x H x W."""

    name: str
    train: TensorDataset
    test: TensorDataset
    description: str

    @property
    def image_shape(self) -> tuple:
        return tuple(self.train.tensors[0].shape[1:])


def _to_dataset(images: np.ndarray, labels: np.ndarray, scale: float) -> TensorDataset:
    x = torch.from_numpy(np.asarray(images, dtype=np.float32) / scale).unsqueeze(1)
    return TensorDataset(x, torch.from_numpy(np.asarray(labels, dtype=np.int64)))


def load_mnist(root: os.PathLike, name: str = "mnist") -> DatasetSplit:
    """MNIST or FashionMNIST from IDX files in `root`.

    With the training files present, the official split is used. With only the
    test files, the first 8,000 test images train and the rest evaluate (the
    description says so).
    """
    root = Path(root)
    if not root.is_dir():
        msg = f"Dataset folder not found: {root}. Name a folder holding the {name} IDX files (t10k-images-idx3-ubyte.gz, ...)."
        raise DataError(msg)
    if not os.access(root, os.R_OK | os.X_OK):
        msg = f"Cannot open dataset folder {root}: permission denied (it needs read and execute permission). Fix: chmod u+rx {root}."
        raise DataError(msg)
    test_images, test_labels = load_idx_pair(root, "test")
    if find_idx_file(root, MNIST_FILES["train"][0]) is not None:
        train_images, train_labels = load_idx_pair(root, "train")
        description = f"{name} from {root}: official split, {len(train_labels)} train / {len(test_labels)} test"
    else:
        if len(test_labels) <= TEST_SET_TRAIN_PART:
            images_path = find_idx_file(root, MNIST_FILES["test"][0])
            msg = (
                f"{images_path} holds {len(test_labels)} images: without the training files, the first "
                f"{TEST_SET_TRAIN_PART} train and the rest evaluate, which leaves nothing to evaluate. "
                f"Fix: add {MNIST_FILES['train'][0]}.gz and {MNIST_FILES['train'][1]}.gz to {root}, or use the full test set."
            )
            raise DataError(msg)
        train_images, train_labels = test_images[:TEST_SET_TRAIN_PART], test_labels[:TEST_SET_TRAIN_PART]
        test_images, test_labels = test_images[TEST_SET_TRAIN_PART:], test_labels[TEST_SET_TRAIN_PART:]
        description = (
            f"{name} test set from {root}: first {TEST_SET_TRAIN_PART} images train, "
            f"last {len(test_labels)} evaluate"
        )
    return DatasetSplit(name, _to_dataset(train_images, train_labels, 255.0), _to_dataset(test_images, test_labels, 255.0), description)


def load_digits(image_size: int = 16, test_fraction: float = 0.25, seed: int = 0) -> DatasetSplit:
    """scikit-learn's 1,797 real 8 x 8 handwritten digits, upsampled to `image_size` (shipped, no download)."""
    from sklearn.datasets import load_digits as sklearn_digits

    if isinstance(image_size, bool) or not isinstance(image_size, int) or not 2 <= image_size <= MAX_IMAGE_SIZE:
        raise DataError(f"digits: image_size {image_size!r:.40} is out of bounds. Fix: a whole number from 2 to {MAX_IMAGE_SIZE}.")
    if isinstance(test_fraction, bool) or not isinstance(test_fraction, (int, float)) or not 0.01 <= test_fraction <= 0.99:
        raise DataError(f"digits: test_fraction {test_fraction!r:.40} leaves no training or no test data. Fix: a number from 0.01 to 0.99.")

    bunch = sklearn_digits()
    images = torch.from_numpy(bunch.images.astype(np.float32) / 16.0).unsqueeze(1)
    if image_size != images.shape[-1]:
        images = F.interpolate(images, size=(image_size, image_size), mode="bilinear", align_corners=False)
    labels = torch.from_numpy(bunch.target.astype(np.int64))
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    num_test = int(round(len(labels) * test_fraction))
    test_idx, train_idx = order[:num_test], order[num_test:]
    description = f"scikit-learn digits ({image_size}x{image_size}): {len(train_idx)} train / {num_test} test (seed {seed})"
    return DatasetSplit(
        "digits",
        TensorDataset(images[train_idx], labels[train_idx]),
        TensorDataset(images[test_idx], labels[test_idx]),
        description,
    )


def data_root_from_env() -> Optional[Path]:
    """The IDX folder named by NNCF_WCAM_DATA_ROOT, or None when the variable is unset or empty."""
    value = os.environ.get(DATA_ROOT_ENV, "").strip()
    return Path(value).expanduser() if value else None


def missing_root_message(name: str) -> str:
    return (
        f"Dataset '{name}' needs the folder holding its IDX files (t10k-images-idx3-ubyte.gz, ...); nothing is "
        f"downloaded. Fix: pass --data-root DIR, or set {DATA_ROOT_ENV}=DIR, or give the dataset block a \"root\"."
    )


def load_dataset(spec: Optional[dict] = None, data_root: Optional[os.PathLike] = None) -> DatasetSplit:
    """Loads the dataset a config names: `{"name": "digits" | "mnist" | "fashion_mnist", "root": ..., "image_size": ...}`.

    An IDX dataset's folder: the block's "root", else `data_root`, else NNCF_WCAM_DATA_ROOT.
    """
    spec = dict(spec or {"name": "digits"})
    name = spec.pop("name", "digits")
    if name == "digits":
        return load_digits(**spec)
    if name in IDX_DATASETS:
        root = spec.get("root") or data_root or data_root_from_env()
        if root is None:
            raise DataError(missing_root_message(name))
        return load_mnist(root, name)
    msg = f"Unknown dataset '{name}'. Use 'digits' (embedded), 'mnist' or 'fashion_mnist' (with a folder of IDX files)."
    raise DataError(msg)


def mnist_or_digits(image_size: int = 28) -> DatasetSplit:
    """MNIST from NNCF_WCAM_DATA_ROOT when it is set, else scikit-learn's digits (with a warning saying so).

    The description names the variable rather than the folder: results that quote it are shared.
    """
    root = data_root_from_env()
    if root is None:
        logger.warning("%s is not set: using scikit-learn's digits at %d x %d instead of MNIST.", DATA_ROOT_ENV, image_size, image_size)
        return load_digits(image_size=image_size)
    data = load_mnist(root)
    return replace(data, description=data.description.replace(f" from {root}:", f" from ${DATA_ROOT_ENV}:"))
