"""A real full disk and a mount point as the output: one line naming the path and the fix, nothing half-written.

The filesystem is a real 1 MiB tmpfs (the `small_filesystem` fixture), filled up to leave a few bytes
to a few pages; the IR of the tiny run takes about 36 kB.
"""

import pytest

from nncf_wcam import cli

from conftest import FAST
from conftest import TINY
from conftest import fill_up


def _one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr[-3000:]
    return lines[0]


@pytest.mark.parametrize("leave", [0, 4096, 16384, 32768], ids=["full", "4k-left", "16k-left", "32k-left"])
def test_export_onto_a_full_disk(leave, small_filesystem, tiny_run, capsys):
    fill_up(small_filesystem, leave)
    output = small_filesystem / "ir"
    code = cli.main(["export", "--checkpoint", str(tiny_run / "checkpoint.pt"), "--output", str(output), "--eval-samples", "8"])
    captured = capsys.readouterr()
    left = sorted(p.name for p in small_filesystem.iterdir())
    if code == 0:  # it fitted: then it is complete
        assert sorted(p.name for p in output.iterdir()) == ["manifest.json", "model.bin", "model.xml"]
        return
    line = _one_line(captured.err)
    assert code == 2 and "No space left on device" in line and str(output) in line and "Fix:" in line, line
    assert left == ["filler"], left  # no IR folder, no staging leftover


def test_export_onto_a_full_disk_fails_at_least_once(small_filesystem, tiny_run, capsys):
    """The sweep above must hit the full disk at least with nothing left (else it proves nothing)."""
    fill_up(small_filesystem, 0)
    code = cli.main(["export", "--checkpoint", str(tiny_run / "checkpoint.pt"), "--output", str(small_filesystem / "ir"), "--eval-samples", "8"])
    assert code == 2 and "No space left on device" in _one_line(capsys.readouterr().err)


def test_export_to_a_mount_point_is_refused_before_any_work(small_filesystem, tiny_run, capsys):
    """A mount point cannot be renamed aside (EBUSY): refused up front, the IR goes into a folder inside it."""
    code = cli.main(["export", "--checkpoint", str(tiny_run / "checkpoint.pt"), "--output", str(small_filesystem), "--eval-samples", "8"])
    line = _one_line(capsys.readouterr().err)
    assert code == 2 and "mount point" in line and str(small_filesystem / "ir") in line, line
    assert list(small_filesystem.iterdir()) == []


def test_compress_onto_a_full_disk(small_filesystem, capsys):
    fill_up(small_filesystem, 8192)
    output = small_filesystem / "run"
    code = cli.main(["compress", "--config", str(TINY), "--output", str(output), *FAST])
    line = _one_line(capsys.readouterr().err)
    assert code == 2 and "No space left on device" in line and str(output) in line, line
    assert not [p for p in output.rglob("*") if p.name.startswith(".") and p.name != ".nncf-wcam.lock"]
