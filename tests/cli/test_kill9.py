"""kill -9 of real `nncf-wcam` processes: whatever moment the kill lands, what is on disk is complete, and the
next command finishes the job.

compress is killed as soon as its first checkpoint appears (mid-run: the teacher is written, training goes
on), then resumed; the result must equal an uninterrupted run's, weight for weight. export is killed at a
the moments of its write while it replaces an earlier IR; each time the folder holds the earlier IR or the new
one, complete, and the next export succeeds without leftovers.
"""

import json
import os
import signal
import subprocess
import sys
import time

import openvino as ov
import torch

from nncf_wcam.nncf2.checkpoint import load_checkpoint

from conftest import TINY

COMPRESS = ["--config", str(TINY), "--teacher-epochs", "1", "--epochs", "3", "--max-steps", "4", "--eval-samples", "8", "--quiet"]


def _cli(*argv: str) -> list:
    return [sys.executable, "-m", "nncf_wcam.cli", *argv]


def _kill_when(process: subprocess.Popen, ready, timeout: float = 300) -> bool:
    """SIGKILLs `process` as soon as `ready()` holds; False if it ended first."""
    deadline = time.monotonic() + timeout
    while process.poll() is None and time.monotonic() < deadline:
        if ready():
            os.kill(process.pid, signal.SIGKILL)
            process.wait()
            return True
        time.sleep(0.01)
    process.wait()
    return False


def _weights(path) -> dict:
    return load_checkpoint(path)["state_dict"]


def test_compress_killed_mid_run_resumes_to_the_uninterrupted_result(tmp_path):
    straight = subprocess.run(_cli("compress", "--output", str(tmp_path / "straight"), *COMPRESS), capture_output=True, text=True, timeout=600)
    assert straight.returncode == 0, straight.stderr[-3000:]
    run = tmp_path / "killed"
    process = subprocess.Popen(_cli("compress", "--output", str(run), *COMPRESS), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert _kill_when(process, lambda: (run / "checkpoint.pt").exists()), "the run ended before its first checkpoint was seen"
    epoch = load_checkpoint(run / "checkpoint.pt")["epoch"]  # complete, whatever moment the kill landed
    json.loads((run / "run.json").read_text())
    assert epoch < 3, "killed after the last epoch: the test proves nothing"
    resumed = subprocess.run(_cli("compress", "--output", str(run), "--resume", "--quiet"), capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert load_checkpoint(run / "checkpoint.pt")["epoch"] == 3
    expected, found = _weights(tmp_path / "straight" / "checkpoint.pt"), _weights(run / "checkpoint.pt")
    assert expected.keys() == found.keys()
    assert all(torch.equal(expected[key], found[key]) for key in expected), "the resumed run differs from the uninterrupted one"
    assert not [p.name for p in run.rglob(".*") if p.name != ".nncf-wcam.lock"]  # no staging leftover once finished


def _complete_ir(folder) -> str:
    """The IR's parity record, once the folder is checked to hold a whole IR that compiles."""
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["manifest.json", "model.bin", "model.xml"], names
    manifest = json.loads((folder / "manifest.json").read_text())
    ov.Core().compile_model(str(folder / "model.xml"), "CPU")
    return json.dumps(manifest["parity"], sort_keys=True)


def _staging(folder, name: str = ""):
    """The export's staging folder beside `folder` (or a file in it), once it exists."""
    found = [p for p in folder.parent.iterdir() if p.name.startswith(f".{folder.name}.tmp-")]
    return found and (not name or (found[0] / name).exists())


# Moments of the write: the staging folder made, the IR saved into it, the manifest written (just before the swap).
KILL_POINTS = {"staging-made": "", "ir-saved": "model.bin", "manifest-written": "manifest.json"}


def test_export_killed_at_each_moment_of_its_write_leaves_a_whole_ir(tiny_run, tmp_path):
    ir = tmp_path / "ir"
    export = _cli("export", "--checkpoint", str(tiny_run / "checkpoint.pt"), "--output", str(ir), "--eval-samples", "8", "--quiet")
    assert subprocess.run(export, capture_output=True, timeout=300).returncode == 0
    earlier = _complete_ir(ir)
    landed = []
    for moment, name in KILL_POINTS.items():
        process = subprocess.Popen([*export[:-1], "--eval-samples", "16"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if _kill_when(process, lambda: _staging(ir, name)):
            landed.append(moment)
        if ir.exists():
            _complete_ir(ir)  # the earlier IR or the new one, whole
        else:
            assert any(".ir.old-" in p.name for p in tmp_path.iterdir()), f"{moment}: the IR vanished without a copy aside"
    assert landed, "no kill landed inside the write: the test proved nothing"
    again = subprocess.run(export, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert _complete_ir(ir) == earlier  # the same samples: the same parity
    assert [p.name for p in tmp_path.iterdir()] == ["ir"], "staging leftovers were not cleaned"
