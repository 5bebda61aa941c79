"""Gzip bombs under the 2 GiB cap: both headers are compared, and the decoded size bounded by the
memory the run has, before any body is decompressed.

The files are small gzip streams of zeros whose headers announce large data; memory is measured
with tracemalloc (numpy reports its buffers to it) and bounded for real with `ulimit -v` in a child.
"""

import gzip
import struct
import subprocess
import sys
import textwrap
import tracemalloc

import pytest

from nncf_wcam.zoo.idx import MNIST_FILES
from nncf_wcam.zoo.idx import DataError
from nncf_wcam.zoo.idx import load_idx_pair

IMAGES, LABELS = MNIST_FILES["test"]
MiB = 1024**2


def write_bomb(path, shape, body_bytes: int, type_code: int = 0x08):
    """An IDX .gz whose header announces `shape` and whose body is `body_bytes` zeros, written in chunks."""
    header = bytes([0, 0, type_code, len(shape)]) + struct.pack(f">{len(shape)}I", *shape)
    zeros = bytes(MiB)
    with gzip.open(path, "wb", compresslevel=1) as f:
        f.write(header)
        for start in range(0, body_bytes, MiB):
            f.write(zeros[: min(MiB, body_bytes - start)])
    return path


def peak_traced_bytes(call) -> int:
    tracemalloc.start()
    try:
        with pytest.raises(DataError) as error:
            call()
        return tracemalloc.get_traced_memory()[1], str(error.value)
    finally:
        tracemalloc.stop()


def test_labels_bomb_is_refused_by_the_image_count_before_decompressing(tmp_path):
    """2.1e9 labels announced (under the cap) next to 20 images: refused from the headers alone."""
    write_bomb(tmp_path / f"{IMAGES}.gz", (20, 28, 28), 20 * 784)
    labels = write_bomb(tmp_path / f"{LABELS}.gz", (2_100_000_000,), 64 * MiB)
    peak, message = peak_traced_bytes(lambda: load_idx_pair(tmp_path))
    assert str(labels) in message and "do not match" in message and "2100000000" in message, message
    assert peak < 8 * MiB, f"{peak / MiB:.0f} MiB were allocated before the mismatch was seen"


def test_images_bomb_is_refused_by_the_label_count_before_decompressing(tmp_path):
    write_bomb(tmp_path / f"{IMAGES}.gz", (2_700_000, 28, 28), 64 * MiB)
    labels = write_bomb(tmp_path / f"{LABELS}.gz", (20,), 20)
    peak, message = peak_traced_bytes(lambda: load_idx_pair(tmp_path))
    assert str(labels) in message and "for 2700000 images" in message, message
    assert peak < 8 * MiB, f"{peak / MiB:.0f} MiB were allocated before the mismatch was seen"


def test_a_consistent_bomb_larger_than_the_memory_limit_is_refused_in_one_line(tmp_path):
    """A matching pair of 1.2 M images (940 MB of pixels, 4.7 GB as tensors) under `ulimit -v` +1.5 GiB:
    a DataError naming the memory, not a MemoryError traceback or an OOM kill."""
    count = 1_200_000
    images = write_bomb(tmp_path / f"{IMAGES}.gz", (count, 28, 28), 4 * MiB)  # truncated: a read would say so
    write_bomb(tmp_path / f"{LABELS}.gz", (count,), count)
    child = textwrap.dedent(
        f"""
        import resource, sys
        from nncf_wcam.zoo.idx import DataError, load_idx_pair
        status = open("/proc/self/status").read()
        used = int(status.split("VmSize:")[1].split()[0]) * 1024
        resource.setrlimit(resource.RLIMIT_AS, (used + 1536 * 1024**2, resource.RLIM_INFINITY))
        try:
            load_idx_pair({str(tmp_path)!r})
        except DataError as error:
            print(error)
            sys.exit(3)
        """
    )
    result = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=120)
    assert result.returncode == 3, result.stderr[-2000:]
    message = result.stdout.strip()
    assert str(images) in message and "GiB of memory" in message and "nothing was decompressed" in message, message
    assert "\n" not in message
