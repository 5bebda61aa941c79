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
from typing import Callable
from typing import NamedTuple
from typing import Optional

import numpy as np

try:
    import resource  # POSIX only
except ImportError:
    resource = None

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


class IdxHeader(NamedTuple):
    """What an IDX file's header announces; nothing of its body has been read."""

    path: Path
    shape: tuple
    dtype: np.dtype

    @property
    def data_bytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize  # exact: np.prod overflows int64 on a corrupted header


def _open_idx(path: Path):
    if not path.is_file():
        msg = f"IDX file not found: {path}. Put the file there or point the dataset 'root' at the folder that holds it."
        raise DataError(msg)
    return (gzip.open if path.suffix == ".gz" else open)(path, "rb")


def _read_header(f, path: Path) -> IdxHeader:
    magic = _read_exactly(f, 4)
    if len(magic) < 4 or magic[0] != 0 or magic[1] != 0:
        raise DataError(f"{path} is not an IDX file (bad magic number). Expected the MNIST/FashionMNIST IDX format.")
    if magic[2] not in IDX_DTYPES:
        codes = ", ".join(f"0x{code:02X}" for code in IDX_DTYPES)
        raise DataError(f"{path} is not an IDX file: unknown data type code 0x{magic[2]:02X} in its magic number (IDX uses {codes}).")
    ndim = magic[3]
    if ndim > MAX_IDX_DIMS:
        msg = f"{path}: its IDX header announces {ndim} dimensions; image and label files have 1 to {MAX_IDX_DIMS}. The file is corrupted or not a dataset."
        raise DataError(msg)
    dims = _read_exactly(f, 4 * ndim)
    if len(dims) < 4 * ndim:
        raise DataError(f"IDX file {path} is truncated inside its header. Replace it with a complete copy.")
    header = IdxHeader(path, struct.unpack(f">{ndim}I", dims), np.dtype(IDX_DTYPES[magic[2]]))
    if header.data_bytes > MAX_IDX_BYTES:
        msg = (
            f"IDX file {path}: its header announces {_shape_text(header.shape)}: {header.data_bytes:,} data bytes, more than the "
            f"{MAX_IDX_BYTES:,} this reader accepts (nothing was decompressed): the file is truncated or corrupted, or not a dataset. Replace it with a complete copy."
        )
        raise DataError(msg)
    return header


def read_idx_header(path: os.PathLike) -> IdxHeader:
    """The shape and type an IDX file announces, read without decompressing its body."""
    path = Path(path)
    try:
        with _open_idx(path) as f:
            return _read_header(f, path)
    except (OSError, EOFError, zlib.error) as e:  # zlib.error: a corrupted deflate stream inside a .gz
        raise _unreadable(path, e) from e


def _read_body(f, header: IdxHeader) -> np.ndarray:
    """The body, read into one preallocated buffer (peak memory: the data once, not twice)."""
    expected = header.data_bytes
    try:
        body = np.empty(expected, dtype=np.uint8)
    except MemoryError as e:
        raise DataError(f"{header.path}: its {expected:,} data bytes do not fit in memory. Fix: use a smaller file, or free memory.") from e
    view, filled = memoryview(body), 0
    while filled < expected:
        count = f.readinto(view[filled : filled + _CHUNK])
        if not count:
            break
        filled += count
    if filled != expected or f.read(1):
        found = f"{filled}" if filled < expected else "more"
        msg = (
            f"IDX file {header.path} holds {found} data bytes, but its header {_shape_text(header.shape)} announces {expected}: "
            "the file is truncated or corrupted. Replace it with a complete copy."
        )
        raise DataError(msg)
    return body.view(header.dtype).reshape(header.shape)


def read_idx(path: os.PathLike, check_header: Optional[Callable[[IdxHeader], None]] = None) -> np.ndarray:
    """Reads one IDX file (optionally gzip-compressed) into a numpy array.

    The header is read and checked first (by `check_header` too, when given); the body is then read
    up to the size the header announces (at most `MAX_IDX_BYTES`) and one byte more, so a file that
    expands beyond its header, a gzip bomb included, is refused without being decompressed.
    """
    path = Path(path)
    try:
        with _open_idx(path) as f:
            header = _read_header(f, path)
            if check_header is not None:
                check_header(header)
            return _read_body(f, header)
    except (OSError, EOFError, zlib.error) as e:
        raise _unreadable(path, e) from e


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


def _proc_field_bytes(path: str, field: str) -> Optional[int]:
    """One "Field:  N kB" line of a /proc file, in bytes."""
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _cgroup_room() -> Optional[int]:
    """What the container's cgroup (v2) still allows, or None without a limit."""
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        used = Path("/sys/fs/cgroup/memory.current").read_text().strip()
        return None if limit == "max" else int(limit) - int(used)
    except (OSError, ValueError):
        return None


def _address_space_room() -> Optional[int]:
    """What `ulimit -v` (RLIMIT_AS) still allows this process, or None without a limit."""
    if resource is None:
        return None
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    used = _proc_field_bytes("/proc/self/status", "VmSize")
    return None if soft == resource.RLIM_INFINITY or used is None else soft - used


def available_memory_bytes() -> Optional[int]:
    """Memory this process can still get: the least of the machine's, the container's and its ulimit; None if unknown."""
    rooms = [_proc_field_bytes("/proc/meminfo", "MemAvailable"), _cgroup_room(), _address_space_room()]
    known = [room for room in rooms if room is not None]
    return max(0, min(known)) if known else None


def _check_pair_headers(images: IdxHeader, labels: IdxHeader) -> None:
    """Refuses a pair from its headers alone, before either body is decompressed."""
    if len(images.shape) != 3 or images.shape[1:] != (28, 28):
        raise DataError(f"{images.path}: expected 28 x 28 images, found {_shape_text(images.shape)}. Is this an MNIST-format image file?")
    if images.shape[0] == 0:
        raise DataError(f"{images.path} holds no images. Replace it with a complete copy.")
    if images.dtype != np.uint8:
        raise DataError(f"{images.path}: expected unsigned-byte pixels (IDX type 0x08), found {images.dtype}. Is this an MNIST-format image file?")
    if not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"{labels.path}: expected integer labels, found {labels.dtype}. Is this an MNIST-format label file?")
    if len(labels.shape) != 1 or labels.shape[0] != images.shape[0]:
        msg = f"{labels.path}: {_shape_text(labels.shape)} labels for {images.shape[0]} images in {images.path}. The files do not match."
        raise DataError(msg)
    # The images are held as bytes and then as float32 tensors: five bytes per pixel.
    needed = images.data_bytes * 5 + labels.shape[0] * (labels.dtype.itemsize + 8)
    available = available_memory_bytes()
    if available is not None and needed > available:
        msg = (
            f"{images.path}: its header announces {images.shape[0]:,} images, which need {needed / 1024**3:.1f} GiB of memory; "
            f"{available / 1024**3:.1f} GiB are available (nothing was decompressed). Fix: use a smaller file, or free memory."
        )
        raise DataError(msg)


def load_idx_pair(root: os.PathLike, split: str = "test") -> tuple:
    """Loads images (N x 28 x 28 uint8) and labels (N int64) of one MNIST-format split, checked for consistency.

    Both headers are checked against each other (and against the memory the run has) before either
    body is read.
    """
    root = Path(root)
    images_stem, labels_stem = MNIST_FILES[split]
    images_path = find_idx_file(root, images_stem) or root / f"{images_stem}.gz"
    labels_path = find_idx_file(root, labels_stem) or root / f"{labels_stem}.gz"
    images_header, labels_header = read_idx_header(images_path), read_idx_header(labels_path)
    _check_pair_headers(images_header, labels_header)
    labels = read_idx(labels_path, check_header=lambda header: _same_header(header, labels_header))
    images = read_idx(images_path, check_header=lambda header: _same_header(header, images_header))
    out_of_range = (labels < 0) | (labels >= NUM_CLASSES)
    if out_of_range.any():
        index = int(np.argmax(out_of_range))
        msg = f"{labels_path}: label {int(labels[index])} (entry {index}) out of range [0, {NUM_CLASSES}). The file is corrupted."
        raise DataError(msg)
    return images, labels.astype(np.int64)


def _same_header(header: IdxHeader, checked: IdxHeader) -> None:
    """The file was replaced between the header check and the read: refuse rather than read unchecked data."""
    if header != checked:
        raise DataError(f"{header.path} changed while it was being read. Fix: run again once nothing writes to it.")
