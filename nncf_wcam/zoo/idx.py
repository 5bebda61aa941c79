"""The MNIST / FashionMNIST IDX reader: header first, body bounded by what the header announces.

A missing, truncated or malformed file raises `DataError` naming the file and the fix; a gzip bomb
stops at its header, before anything is decompressed.
"""

import gzip
import math
import os
import struct
import zlib
from pathlib import Path
from typing import Optional

import numpy as np

from nncf_wcam.errors import NncfWcamError

IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
NUM_CLASSES = 10
# Split of the MNIST test set used when the training files are absent (documented in every output).
TEST_SET_TRAIN_PART = 8000


class DataError(NncfWcamError, ValueError):
    """A dataset file is missing, truncated or malformed."""


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


def find_idx_file(root: Path, stem: str) -> Optional[Path]:
    for candidate in (root / f"{stem}.gz", root / stem):
        if candidate.is_file():
            return candidate
    return None


def load_idx_pair(root: os.PathLike, split: str = "test") -> tuple:
    """Loads images (N x 28 x 28 uint8) and labels (N int64) of one MNIST-format split, checked for consistency."""
    root = Path(root)
    images_stem, labels_stem = MNIST_FILES[split]
    images_path = find_idx_file(root, images_stem) or root / f"{images_stem}.gz"
    labels_path = find_idx_file(root, labels_stem) or root / f"{labels_stem}.gz"
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


