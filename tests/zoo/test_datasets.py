"""Hostile data: truncated, corrupted or inconsistent IDX files fail with a DataError naming the file.

Every test file is written here, in tmp_path (20 images); the last test reads the real MNIST
test set in the folder NNCF_WCAM_DATA_ROOT names, when it is set.
"""

import gzip
import struct

import numpy as np
import pytest

from nncf_wcam.zoo.datasets import load_dataset
from nncf_wcam.zoo.datasets import load_mnist
from nncf_wcam.zoo.datasets import mnist_or_digits
from nncf_wcam.zoo.idx import MNIST_FILES
from nncf_wcam.zoo.idx import TEST_SET_TRAIN_PART
from nncf_wcam.zoo.idx import DataError
from nncf_wcam.zoo.idx import load_idx_pair
from nncf_wcam.zoo.idx import read_idx

from conftest import mnist_root

IMAGES, LABELS = MNIST_FILES["test"]
TRAIN_IMAGES, TRAIN_LABELS = MNIST_FILES["train"]
TYPE_CODES = {np.dtype(np.uint8): 0x08, np.dtype(np.int8): 0x09, np.dtype(">i2"): 0x0B, np.dtype(">i4"): 0x0C, np.dtype(">f4"): 0x0D, np.dtype(">f8"): 0x0E}


def idx_bytes(array: np.ndarray, type_code=None) -> bytes:
    """The IDX encoding of `array`: magic (0, 0, type, ndim), big-endian dimensions, big-endian data."""
    array = np.asarray(array)
    big_endian = array.dtype.newbyteorder(">") if array.dtype.itemsize > 1 else array.dtype
    code = TYPE_CODES[np.dtype(big_endian)] if type_code is None else type_code
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(big_endian).tobytes()


def write(path, data: bytes, gz: bool = True):
    path = path.with_name(path.name + ".gz") if gz else path
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def sample(count=20, size=28, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (count, size, size), dtype=np.uint8), rng.integers(0, 10, count).astype(np.uint8)


def write_pair(root, images, labels, gz=True, stems=(IMAGES, LABELS)):
    root.mkdir(parents=True, exist_ok=True)
    return write(root / stems[0], idx_bytes(images), gz), write(root / stems[1], idx_bytes(labels), gz)


def raises_data_error_naming(path, call, *match):
    with pytest.raises(DataError) as error:
        call()
    message = str(error.value)
    assert str(path) in message, message
    for part in match:
        assert part in message, message
    assert "\n" not in message
    return message


# --- valid files round-trip ---------------------------------------------------------------------
@pytest.mark.parametrize("gz", [True, False], ids=["gzip", "raw"])
def test_valid_pair_loads_and_round_trips(tmp_path, gz):
    images, labels = sample()
    write_pair(tmp_path, images, labels, gz=gz)
    loaded_images, loaded_labels = load_idx_pair(tmp_path, "test")
    assert loaded_images.dtype == np.uint8 and np.array_equal(loaded_images, images)
    assert loaded_labels.dtype == np.int64 and np.array_equal(loaded_labels, labels)


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, ">i2", ">i4", ">f4", ">f8"])
def test_every_idx_type_code_round_trips(tmp_path, dtype):
    values = (np.arange(24).reshape(2, 3, 4) - 7).astype(dtype) if np.dtype(dtype).kind != "u" else np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    path = write(tmp_path / "values-idx3", idx_bytes(values), gz=False)
    loaded = read_idx(path)
    assert loaded.shape == (2, 3, 4) and np.array_equal(loaded, values)


def test_official_split_when_training_files_are_present(tmp_path):
    images, labels = sample(20)
    write_pair(tmp_path, images, labels)
    train_images, train_labels = sample(30, seed=1)
    write_pair(tmp_path, train_images, train_labels, stems=(TRAIN_IMAGES, TRAIN_LABELS))
    split = load_mnist(tmp_path)
    assert len(split.train) == 30 and len(split.test) == 20
    x, y = split.test.tensors
    assert x.shape == (20, 1, 28, 28) and 0.0 <= x.min() and x.max() <= 1.0
    assert np.allclose(x.squeeze(1).numpy() * 255.0, images, atol=1e-3) and np.array_equal(y.numpy(), labels)
    assert "official split" in split.description


def test_mnist_from_the_environment_names_the_variable_not_the_folder(tmp_path, monkeypatch):
    """The benchmarks commit what this description says: no machine's folder in it."""
    write_pair(tmp_path, *sample(20))
    write_pair(tmp_path, *sample(30, seed=1), stems=(TRAIN_IMAGES, TRAIN_LABELS))
    monkeypatch.setenv("NNCF_WCAM_DATA_ROOT", str(tmp_path))
    split = mnist_or_digits()
    assert len(split.train) == 30 and "$NNCF_WCAM_DATA_ROOT" in split.description and str(tmp_path) not in split.description
    assert str(tmp_path) in load_mnist(tmp_path).description  # the CLI still names the folder it read


# --- hostile files ------------------------------------------------------------------------------
def test_missing_folder_and_missing_files(tmp_path, monkeypatch):
    missing = tmp_path / "nowhere"
    raises_data_error_naming(missing, lambda: load_mnist(missing), "Dataset folder not found")
    raises_data_error_naming(tmp_path / f"{IMAGES}.gz", lambda: load_mnist(tmp_path), "IDX file not found")
    images, labels = sample()
    write(tmp_path / IMAGES, idx_bytes(images))  # labels missing
    raises_data_error_naming(tmp_path / f"{LABELS}.gz", lambda: load_mnist(tmp_path), "IDX file not found")
    monkeypatch.delenv("NNCF_WCAM_DATA_ROOT", raising=False)
    with pytest.raises(DataError, match="needs the folder holding its IDX files.*--data-root DIR.*NNCF_WCAM_DATA_ROOT"):
        load_dataset({"name": "mnist"})
    monkeypatch.setenv("NNCF_WCAM_DATA_ROOT", str(tmp_path / "nowhere"))
    raises_data_error_naming(tmp_path / "nowhere", lambda: load_dataset({"name": "mnist"}), "Dataset folder not found")


def test_truncated_header(tmp_path):
    images, _ = sample()
    path = write(tmp_path / IMAGES, idx_bytes(images)[:10])  # 4 magic bytes + 1.5 of 3 dimensions
    raises_data_error_naming(path, lambda: read_idx(path), "truncated inside its header")
    path = write(tmp_path / "short-idx", b"\x00\x00", gz=False)  # not even a magic number
    raises_data_error_naming(path, lambda: read_idx(path), "bad magic number")
    path = write(tmp_path / "empty-idx", b"", gz=False)
    raises_data_error_naming(path, lambda: read_idx(path), "bad magic number")


@pytest.mark.parametrize("cut", [1, 784, 20 * 784 - 1])
def test_truncated_data(tmp_path, cut):
    images, labels = sample()
    data = idx_bytes(images)
    path = write(tmp_path / IMAGES, data[: len(data) - cut])
    write(tmp_path / LABELS, idx_bytes(labels))
    raises_data_error_naming(path, lambda: load_idx_pair(tmp_path), "truncated or corrupted", f"announces {20 * 784}")


def test_trailing_garbage_is_rejected(tmp_path):
    images, _ = sample()
    path = write(tmp_path / IMAGES, idx_bytes(images) + b"\x00" * 7)
    raises_data_error_naming(path, lambda: read_idx(path), "truncated or corrupted")


def test_header_announcing_an_absurd_size(tmp_path):
    """Dimensions near 2**32 overflow an int64 product: the size check must stay exact."""
    header = bytes([0, 0, 0x08, 3]) + struct.pack(">3I", 2**32 - 1, 2**32 - 1, 2**32 - 1)
    path = write(tmp_path / IMAGES, header + b"\x00" * 100)
    raises_data_error_naming(path, lambda: read_idx(path), "truncated or corrupted")


@pytest.mark.parametrize(
    "magic",
    [b"\x89PNG", b"\x01\x00\x08\x03", b"\x00\x01\x08\x03", b"\x1f\x8b\x08\x00", b"P5 2"],
    ids=["png", "first-byte", "second-byte", "double-gzip", "pgm"],
)
def test_bad_magic(tmp_path, magic):
    images, _ = sample()
    path = write(tmp_path / IMAGES, magic + idx_bytes(images)[4:])
    raises_data_error_naming(path, lambda: read_idx(path), "bad magic number")


@pytest.mark.parametrize("code", [0x00, 0x07, 0x0A, 0x0F, 0xFF])
def test_unknown_dtype_code(tmp_path, code):
    images, _ = sample()
    path = write(tmp_path / IMAGES, idx_bytes(images, type_code=code))
    raises_data_error_naming(path, lambda: read_idx(path), f"unknown data type code 0x{code:02X}")


def test_gzip_garbage(tmp_path):
    images, _ = sample()
    rng = np.random.default_rng(0)
    garbage = tmp_path / f"{IMAGES}.gz"
    garbage.write_bytes(rng.integers(0, 256, 2000, dtype=np.uint8).tobytes())  # not gzip at all
    raises_data_error_naming(garbage, lambda: read_idx(garbage), "corrupted or truncated")
    compressed = gzip.compress(idx_bytes(images))
    truncated = tmp_path / "truncated-idx3-ubyte.gz"
    truncated.write_bytes(compressed[: len(compressed) // 2])  # cut inside the deflate stream
    raises_data_error_naming(truncated, lambda: read_idx(truncated), "corrupted or truncated")
    damaged_data = bytearray(compressed)
    for i in range(200, 260):
        damaged_data[i] ^= 0x5A  # damaged bytes inside a stored block, past the IDX header: a CRC error (an OSError)
    crc = tmp_path / "crc-idx3-ubyte.gz"
    crc.write_bytes(bytes(damaged_data))
    raises_data_error_naming(crc, lambda: read_idx(crc), "corrupted or truncated", "CRC")
    damaged_block = bytearray(compressed)
    damaged_block[10] ^= 0xFF  # the first deflate block header: zlib.error, which is no OSError
    block = tmp_path / "block-idx3-ubyte.gz"
    block.write_bytes(bytes(damaged_block))
    raises_data_error_naming(block, lambda: read_idx(block), "corrupted or truncated", "invalid block type")
    not_gzipped = write(tmp_path / "plain-idx3-ubyte", idx_bytes(images), gz=False)
    renamed = not_gzipped.rename(tmp_path / "plain-idx3-ubyte.gz")  # an uncompressed file named .gz
    raises_data_error_naming(renamed, lambda: read_idx(renamed), "corrupted or truncated")


@pytest.mark.parametrize("shape", [(20, 32, 32), (20, 28), (20, 28, 27), (20, 3, 28, 28)])
def test_wrong_image_size(tmp_path, shape):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, shape, dtype=np.uint8)
    _, labels = sample()
    images_path, _ = write_pair(tmp_path, images, labels)
    raises_data_error_naming(images_path, lambda: load_idx_pair(tmp_path), "expected 28 x 28 images", str(shape))


def test_float_images_and_labels_are_rejected(tmp_path):
    images, labels = sample()
    images_path, _ = write_pair(tmp_path, images.astype(">f4") / 255.0, labels)
    raises_data_error_naming(images_path, lambda: load_idx_pair(tmp_path), "expected unsigned-byte pixels")
    _, labels_path = write_pair(tmp_path, images, labels.astype(">f4") + 0.5)
    raises_data_error_naming(labels_path, lambda: load_idx_pair(tmp_path), "expected integer labels")


@pytest.mark.parametrize("bad", [10, 255, -1], ids=["ten", "byte-max", "negative"])
def test_label_out_of_range(tmp_path, bad):
    images, labels = sample()
    labels = labels.astype(np.int8 if bad < 0 else np.uint8)
    labels[13] = bad
    _, labels_path = write_pair(tmp_path, images, labels)
    raises_data_error_naming(labels_path, lambda: load_idx_pair(tmp_path), f"label {bad} (entry 13) out of range")


@pytest.mark.parametrize("count", [19, 21])
def test_mismatched_counts(tmp_path, count):
    images, _ = sample()
    _, labels = sample(count)
    images_path, labels_path = write_pair(tmp_path, images, labels)
    message = raises_data_error_naming(labels_path, lambda: load_idx_pair(tmp_path), f"for 20 images", "do not match")
    assert str(images_path) in message


def test_labels_with_two_dimensions(tmp_path):
    images, labels = sample()
    _, labels_path = write_pair(tmp_path, images, labels.reshape(20, 1))
    raises_data_error_naming(labels_path, lambda: load_idx_pair(tmp_path), "do not match")


def test_empty_files(tmp_path):
    images_path, _ = write_pair(tmp_path, np.zeros((0, 28, 28), np.uint8), np.zeros(0, np.uint8))
    raises_data_error_naming(images_path, lambda: load_idx_pair(tmp_path), "holds no images")


def test_test_set_too_small_to_split(tmp_path):
    """Only the test files, and fewer than 8,000 + 1 images: the 8,000 / rest split would evaluate nothing."""
    images, labels = sample()
    images_path, _ = write_pair(tmp_path, images, labels)
    raises_data_error_naming(images_path, lambda: load_mnist(tmp_path), "leaves nothing to evaluate", TRAIN_IMAGES)


# --- the real MNIST test set --------------------------------------------------------------------
def test_real_mnist_test_set():
    root = mnist_root()
    images, labels = load_idx_pair(root, "test")
    assert images.shape == (10000, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (10000,) and set(np.unique(labels).tolist()) == set(range(10))
    assert images.max() == 255 and images.min() == 0
    split = load_mnist(root)
    assert TEST_SET_TRAIN_PART == 8000
    assert len(split.train) == 8000 and len(split.test) == 2000
    x_train, y_train = split.train.tensors
    x_test, y_test = split.test.tensors
    assert x_train.shape == (8000, 1, 28, 28) and x_test.shape == (2000, 1, 28, 28)
    assert 0.0 <= float(x_train.min()) and float(x_train.max()) <= 1.0
    assert np.array_equal(y_train.numpy(), labels[:8000]) and np.array_equal(y_test.numpy(), labels[8000:])
    assert np.allclose(x_test[0, 0].numpy() * 255.0, images[8000], atol=1e-3)
    assert set(y_test.unique().tolist()) == set(range(10))
    assert "first 8000 images train, last 2000 evaluate" in split.description
