"""Datasets: scikit-learn's digits (the embedded default) and MNIST / FashionMNIST IDX files.

Nothing is downloaded. IDX files are read from a folder the user names; a missing,
truncated or malformed file raises `DataError` naming the file and the fix.
"""

import gzip
import math
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
NUM_CLASSES = 10
# Split of the MNIST test set used when the training files are absent (documented in every output).
TEST_SET_TRAIN_PART = 8000


class DataError(ValueError):
    """A dataset file is missing, truncated or malformed."""


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


# Upper bound on one IDX file's data (the full MNIST training images take 47 MB): a header that
# announces more is refused before anything is decompressed (a gzip bomb stops at its header).
MAX_IDX_BYTES = 2 * 1024**3
_CHUNK = 1 << 20
MAX_IDX_DIMS = 8  # numpy stops at 64; datasets use 1 (labels) to 4 (colour images)


def _unreadable(path: Path, error: BaseException) -> DataError:
    """A file the OS will not let us read is not "corrupted": say what is wrong and how to fix it."""
    if isinstance(error, PermissionError):
        return DataError(f"Cannot read IDX file {path}: permission denied. Fix: make it readable (chmod u+r) or copy it somewhere readable.")
    if isinstance(error, IsADirectoryError):
        return DataError(f"IDX file {path} is a folder. Fix: put the IDX file itself there.")
    if isinstance(error, (EOFError, zlib.error, gzip.BadGzipFile)):
        return DataError(f"Cannot read IDX file {path}: {error}. The file is corrupted or truncated; replace it with a complete copy.")
    reason = getattr(error, "strerror", None) or error
    return DataError(f"Cannot read IDX file {path}: {reason}. Fix: check the file and the disk it is on.")


def _read_exactly(f, size: int) -> bytes:
    """Up to `size` bytes, read in chunks (memory grows with what is really there, not with what is announced)."""
    chunks, left = [], size
    while left > 0:
        chunk = f.read(min(left, _CHUNK))
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def read_idx(path: os.PathLike) -> np.ndarray:
    """Reads one IDX file (optionally gzip-compressed) into a numpy array.

    The header is read and checked first; the body is then read up to the size the header announces
    (at most `MAX_IDX_BYTES`) and one byte more, so a file that expands beyond its header, a gzip
    bomb included, is refused without being decompressed.
    """
    path = Path(path)
    if not path.is_file():
        msg = f"IDX file not found: {path}. Put the file there or point the dataset 'root' at the folder that holds it."
        raise DataError(msg)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            magic = _read_exactly(f, 4)
            if len(magic) < 4 or magic[0] != 0 or magic[1] != 0:
                msg = f"{path} is not an IDX file (bad magic number). Expected the MNIST/FashionMNIST IDX format."
                raise DataError(msg)
            if magic[2] not in IDX_DTYPES:
                codes = ", ".join(f"0x{code:02X}" for code in IDX_DTYPES)
                msg = f"{path} is not an IDX file: unknown data type code 0x{magic[2]:02X} in its magic number (IDX uses {codes})."
                raise DataError(msg)
            ndim = magic[3]
            if ndim > MAX_IDX_DIMS:
                msg = f"{path}: its IDX header announces {ndim} dimensions; image and label files have 1 to {MAX_IDX_DIMS}. The file is corrupted or not a dataset."
                raise DataError(msg)
            dims = _read_exactly(f, 4 * ndim)
            if len(dims) < 4 * ndim:
                raise DataError(f"IDX file {path} is truncated inside its header. Replace it with a complete copy.")
            shape = struct.unpack(f">{ndim}I", dims)
            dtype = np.dtype(IDX_DTYPES[magic[2]])
            expected = math.prod(shape) * dtype.itemsize  # exact: np.prod overflows int64 on a corrupted header
            if expected > MAX_IDX_BYTES:
                msg = (
                    f"IDX file {path}: its header announces {_shape_text(shape)}: {expected:,} data bytes, more than the "
                    f"{MAX_IDX_BYTES:,} this reader accepts (nothing was decompressed): the file is truncated or corrupted, or not a dataset. Replace it with a complete copy."
                )
                raise DataError(msg)
            body = _read_exactly(f, expected + 1)
    except DataError:
        raise
    except (OSError, EOFError, zlib.error) as e:  # zlib.error: a corrupted deflate stream inside a .gz
        raise _unreadable(path, e) from e
    if len(body) != expected:
        found = f"{len(body)}" if len(body) <= expected else "more"
        msg = (
            f"IDX file {path} holds {found} data bytes, but its header {_shape_text(shape)} announces {expected}: "
            "the file is truncated or corrupted. Replace it with a complete copy."
        )
        raise DataError(msg)
    return np.frombuffer(body, dtype=dtype).reshape(shape)


def _shape_text(shape: tuple) -> str:
    """A shape for an error message: a corrupted header can announce 255 dimensions."""
    if len(shape) <= 4:
        return f"shape {tuple(shape)}"
    return f"{len(shape)} dimensions ({', '.join(str(d) for d in shape[:3])}, ...)"


def _find_idx_file(root: Path, stem: str) -> Optional[Path]:
    for candidate in (root / f"{stem}.gz", root / stem):
        if candidate.is_file():
            return candidate
    return None


def load_idx_pair(root: os.PathLike, split: str = "test") -> tuple:
    """Loads images (N x 28 x 28 uint8) and labels (N int64) of one MNIST-format split, checked for consistency."""
    root = Path(root)
    images_stem, labels_stem = MNIST_FILES[split]
    images_path = _find_idx_file(root, images_stem) or root / f"{images_stem}.gz"
    labels_path = _find_idx_file(root, labels_stem) or root / f"{labels_stem}.gz"
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    if images.ndim != 3 or images.shape[1:] != (28, 28):
        msg = f"{images_path}: expected 28 x 28 images, found {_shape_text(images.shape)}. Is this an MNIST-format image file?"
        raise DataError(msg)
    if len(images) == 0:
        msg = f"{images_path} holds no images. Replace it with a complete copy."
        raise DataError(msg)
    if images.dtype != np.uint8:
        msg = f"{images_path}: expected unsigned-byte pixels (IDX type 0x08), found {images.dtype}. Is this an MNIST-format image file?"
        raise DataError(msg)
    if not np.issubdtype(labels.dtype, np.integer):
        msg = f"{labels_path}: expected integer labels, found {labels.dtype}. Is this an MNIST-format label file?"
        raise DataError(msg)
    if labels.ndim != 1 or len(labels) != len(images):
        msg = f"{labels_path}: {_shape_text(labels.shape)} labels for {len(images)} images in {images_path}. The files do not match."
        raise DataError(msg)
    out_of_range = (labels < 0) | (labels >= NUM_CLASSES)
    if out_of_range.any():
        index = int(np.argmax(out_of_range))
        msg = f"{labels_path}: label {int(labels[index])} (entry {index}) out of range [0, {NUM_CLASSES}). The file is corrupted."
        raise DataError(msg)
    return images, labels.astype(np.int64)


def _to_dataset(images: np.ndarray, labels: np.ndarray, scale: float) -> TensorDataset:
    x = torch.from_numpy(np.asarray(images, dtype=np.float32) / scale).unsqueeze(1)
    return TensorDataset(x, torch.from_numpy(np.asarray(labels, dtype=np.int64)))


def load_mnist(root: os.PathLike, name: str = "mnist") -> DatasetSplit:
    """MNIST or FashionMNIST from IDX files in `root`.

    With the training files present, the official split is used. With only the
    test files (as in ../shared/data/mnist), the first 8,000 test images train
    and the last 2,000 evaluate.
    """
    root = Path(root)
    if not root.is_dir():
        msg = f"Dataset folder not found: {root}. Name a folder holding the {name} IDX files (t10k-images-idx3-ubyte.gz, ...)."
        raise DataError(msg)
    if not os.access(root, os.R_OK | os.X_OK):
        msg = f"Cannot open dataset folder {root}: permission denied (it needs read and execute permission). Fix: chmod u+rx {root}."
        raise DataError(msg)
    test_images, test_labels = load_idx_pair(root, "test")
    if _find_idx_file(root, MNIST_FILES["train"][0]) is not None:
        train_images, train_labels = load_idx_pair(root, "train")
        description = f"{name} from {root}: official split, {len(train_labels)} train / {len(test_labels)} test"
    else:
        if len(test_labels) <= TEST_SET_TRAIN_PART:
            images_path = _find_idx_file(root, MNIST_FILES["test"][0])
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


def load_dataset(spec: Optional[dict] = None) -> DatasetSplit:
    """Loads the dataset a config names: `{"name": "digits" | "mnist" | "fashion_mnist", "root": ..., "image_size": ...}`."""
    spec = dict(spec or {"name": "digits"})
    name = spec.pop("name", "digits")
    if name == "digits":
        return load_digits(**spec)
    if name in ("mnist", "fashion_mnist"):
        if "root" not in spec:
            msg = f"Dataset '{name}' needs a 'root': the folder holding its IDX files. Nothing is downloaded."
            raise DataError(msg)
        return load_mnist(spec["root"], name)
    msg = f"Unknown dataset '{name}'. Use 'digits' (embedded), 'mnist' or 'fashion_mnist' (with a 'root' folder)."
    raise DataError(msg)


def shared_mnist_root() -> Optional[Path]:
    """The real MNIST test set shipped beside the repo in ../shared/data/mnist, if present."""
    candidates = [Path(os.environ["NNCF_WCAM_MNIST"])] if "NNCF_WCAM_MNIST" in os.environ else []
    candidates.append(Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist")
    for candidate in candidates:
        if _find_idx_file(candidate, MNIST_FILES["test"][0]) is not None:
            return candidate
    return None


def mnist_or_digits(image_size: int = 28) -> DatasetSplit:
    """The real MNIST test set from ../shared/data/mnist when present, else scikit-learn's digits, saying so."""
    root = shared_mnist_root()
    if root is None:
        print(
            f"MNIST not found (looked for ../shared/data/mnist and $NNCF_WCAM_MNIST): falling back to "
            f"scikit-learn's digits at {image_size} x {image_size}."
        )
        return load_digits(image_size=image_size)
    return load_mnist(root)
