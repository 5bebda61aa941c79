"""Every subcommand's bad inputs, each in its own process: exit code 2, one line on stderr, no traceback, nothing written.

The cases run through tests/cli_fork_runner.py (one import of torch and NNCF, one forked process per
case), against the session's finished tiny run and copies of it made inconsistent on purpose.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from nncf_wcam.io.atomic import atomic_torch_save
from nncf_wcam.io.folder_lock import FolderLock
from nncf_wcam.nncf2.checkpoint import build_model
from nncf_wcam.nncf2.checkpoint import load_checkpoint
from nncf_wcam.nncf2.checkpoint import load_teacher_state
from nncf_wcam.nncf2.checkpoint import save_teacher

from conftest import TINY

RUNNER = Path(__file__).parent / "cli_fork_runner.py"
SPATIAL = "'features.0', 'features.1'"  # the start of the list of spatial layers every layer error names


def _snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.rglob("*"))}


def _config(tmp: Path, name: str, **changes) -> str:
    data = json.loads(TINY.read_text())
    for key, value in changes.items():
        if key in ("layers", "logits_output"):
            data["compression"][1][key] = value
        else:
            data[key] = value
    path = tmp / f"{name}.json"
    path.write_text(json.dumps(data))
    return str(path)


def _other_teacher(run: Path, path: Path) -> Path:
    """The run's teacher with one weight changed: another teacher of the same model."""
    spec = load_checkpoint(run / "checkpoint.pt")["model"]
    model = build_model(spec)
    model.load_state_dict(load_teacher_state(run / "teacher.pt"))
    with torch.no_grad():
        next(model.parameters()).add_(0.01)
    return save_teacher(path, model, spec)


def _mixed_copy(run: Path, folder: Path, teacher: Path = None, **checkpoint_changes) -> str:
    """A copy of the run whose teacher.pt or checkpoint came from another run."""
    shutil.copytree(run, folder)
    if teacher is not None:
        shutil.copy(teacher, folder / "teacher.pt")
    if checkpoint_changes:
        checkpoint = load_checkpoint(folder / "checkpoint.pt")
        for key, value in checkpoint_changes.items():
            if key == "optimizer":
                checkpoint["config"]["optimizer"] = value
            else:
                checkpoint[key] = value
        atomic_torch_save(checkpoint, folder / "checkpoint.pt")
    return str(folder)


def _cases(run: Path, tmp: Path, locked: Path) -> list:
    """(argv, expected text of the one stderr line)."""
    ckpt = str(run / "checkpoint.pt")
    out = str(tmp / "out")
    a_file = tmp / "a_file"
    a_file.write_text("x")
    garbage = tmp / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    other = _other_teacher(run, tmp / "other_teacher.pt")
    compress = ["compress", "--config", str(TINY), "--teacher-epochs", "1", "--max-steps", "1", "--quiet"]
    return [
        # compress: flags, files, devices
        (["compress", "--config", str(tmp / "missing.json"), "--output", out], "Config file not found"),
        (["compress", "--output", out], "--config is required for a new run"),
        ([*compress, "--output", out, "--epochs", "0"], "--epochs must be a positive number, got 0"),
        ([*compress, "--output", out, "--eval-samples", "-3"], "--eval-samples must be a positive number, got -3"),
        ([*compress, "--output", out, "--seed", str(2**63)], f"--seed {2**63} is out of range. Fix: a whole number from 0 to {2**63 - 1}."),
        ([*compress, "--output", out, "--device", "MYRIAD"], "MYRIAD"),
        ([*compress, "--output", out, "--device", "NPU"], "not available on this machine"),
        ([*compress, "--output", out, "--teacher", str(tmp / "none.pt")], "Teacher file not found"),
        ([*compress, "--output", out, "--teacher", str(garbage)], "Cannot read Teacher file"),
        ([*compress, "--output", str(a_file)], "exists and is not a folder"),
        ([*compress, "--output", out, "--bogus"], "unrecognized arguments: --bogus"),
        # compress: layers, checked before NNCF's initialization
        (["compress", "--config", _config(tmp, "typo", layers=["features.99"]), "--output", out], f"Layer 'features.99' does not exist in SmallCNN. Layers with spatial outputs (the ones that can be used): {SPATIAL}"),
        (["compress", "--config", _config(tmp, "flat", layers=["classifier"]), "--output", out], "Layer 'classifier' outputs shape (2, 10): no spatial dimensions"),
        (["compress", "--config", _config(tmp, "mixed", layers=["auto", "features.9"]), "--output", out], "mixes \"auto\" with layer names"),
        (["compress", "--config", _config(tmp, "logits", logits_output=7), "--output", out], '"logits_output": 7 is not in the model\'s output'),
        # compress: an existing run, --resume and its conflicts
        ([*compress, "--output", str(run)], "already holds a run (run.json). Pass --resume"),
        (["compress", "--output", str(run), "--resume", "--epochs", "4"], "--epochs 4 conflicts with this run's epochs 2; drop the flag or start a new --output."),
        (["compress", "--output", str(run), "--resume", "--seed", "7"], "--seed 7 conflicts with this run's seed 0"),
        (["compress", "--output", str(run), "--resume", "--teacher-epochs", "3"], "--teacher-epochs 3 conflicts with this run's teacher epochs 1"),
        (["compress", "--output", str(run), "--resume", "--max-steps", "5"], "--max-steps 5 conflicts with this run's max steps 2"),
        (["compress", "--output", str(run), "--resume", "--config", _config(tmp, "changed", batch_size=16)], "differs from the config this run was started with"),
        (["compress", "--output", str(run), "--resume", "--teacher", str(other)], "holds other weights than this run's teacher"),
        (["compress", "--output", str(tmp / "empty"), "--resume"], "holds no run to continue"),
        (["compress", "--output", _mixed_copy(run, tmp / "mixed_teacher", teacher=other), "--resume"], "holds another teacher than the one this run recorded"),
        (["compress", "--output", _mixed_copy(run, tmp / "mixed_seed", seed=5), "--resume"], "was trained with seed 5, but this run's is 0"),
        (
            ["compress", "--output", _mixed_copy(run, tmp / "mixed_optimizer", optimizer={"type": "SGD", "base_lr": 0.01}), "--resume"],
            'was trained with optimizer {"type": "SGD", "base_lr": 0.01}',
        ),
        ([*compress, "--output", str(locked)], f"is in use by another nncf-wcam run (pid {os.getpid()} on"),
        # export
        (["export", "--checkpoint", str(tmp / "none.pt"), "--output", out], "Checkpoint not found"),
        (["export", "--checkpoint", str(run), "--output", out], f"Checkpoint not found: {run} (a folder: pass {run / 'checkpoint.pt'})"),
        (["export", "--checkpoint", str(garbage), "--output", out], "Cannot read Checkpoint"),
        (["export", "--checkpoint", ckpt, "--output", out, "--device", "NPU"], "not available on this machine"),
        (["export", "--checkpoint", ckpt, "--output", out, "--eval-samples", "0"], "--eval-samples must be a positive number"),
        (["export", "--checkpoint", ckpt, "--output", str(a_file)], "exists and is not a folder"),
        # evaluate
        (["evaluate", "--checkpoint", ckpt, "--layer", "features.99"], f"Layer 'features.99' does not exist in SmallCNN. Layers with spatial outputs (the ones that can be used): {SPATIAL}"),
        (["evaluate", "--checkpoint", ckpt, "--layer", "classifier"], "Layer 'classifier' outputs shape (2, 10): no spatial dimensions to draw a map over"),
        (["evaluate", "--checkpoint", ckpt, "--ir", str(tmp / "no_ir")], "No OpenVINO IR at"),
        (["evaluate", "--checkpoint", ckpt, "--output", str(tmp)], f"--output {tmp} is a folder"),
        (["evaluate", "--checkpoint", ckpt, "--figure", str(a_file / "maps.png")], "is a file, not a folder"),
        (["evaluate", "--checkpoint", ckpt, "--eval-samples", "0"], "--eval-samples must be a positive number"),
        (["evaluate", "--checkpoint", ckpt, "--device", "MYRIAD"], "MYRIAD"),
        (["evaluate", "--checkpoint", str(garbage)], "Cannot read Checkpoint"),
    ]


def test_every_bad_input_ends_in_one_line_and_exit_2(tiny_run, tmp_path):
    locked = tmp_path / "locked"
    cases = _cases(tiny_run, tmp_path, locked)
    before = _snapshot(tiny_run)
    # One case that succeeds, in the same batch: with --json, stdout holds the summary and nothing else (NNCF's log goes to stderr).
    resumed = shutil.copytree(tiny_run, tmp_path / "resumed")
    json_case = ["compress", "--output", str(resumed), "--resume", "--json"]
    (tmp_path / "cases.json").write_text(json.dumps([argv for argv, _ in cases] + [json_case]))
    with FolderLock(locked, command="pytest (holding the folder)"):
        subprocess.run([sys.executable, str(RUNNER), str(tmp_path / "cases.json"), str(tmp_path / "results.json")], check=True, timeout=600, cwd=tmp_path)
    results = json.loads((tmp_path / "results.json").read_text())
    failures = []
    for (argv, expected), result in zip(cases, results):
        lines = result["stderr"].strip().splitlines()
        ok = result["code"] == 2 and len(lines) == 1 and expected in lines[0] and lines[0].startswith("nncf-wcam") and not result["stdout"].strip()
        if not ok:
            failures.append(f"{argv}: exit {result['code']}, stderr {result['stderr'][-600:]!r}, stdout {result['stdout'][-200:]!r}")
    assert not failures, "\n".join(failures)
    summary = json.loads(results[-1]["stdout"])
    assert results[-1]["code"] == 0 and summary["command"] == "compress" and summary["matched_layers"] == ["features.9"]
    assert set(summary["evaluation"]["students"]) == {"attribution_matching", "naive"} and summary["ir"].endswith("model.xml")
    assert _snapshot(tiny_run) == before  # refused runs wrote nothing into the run they refused
    assert not (tmp_path / "out").exists() and not (tmp_path / "empty").exists()


@pytest.mark.parametrize("command", ["compress", "export", "evaluate"])
def test_help_lists_the_output_flags(command, capsys):
    from nncf_wcam import cli

    with pytest.raises(SystemExit):
        cli.main([command, "--help"])
    text = capsys.readouterr().out
    assert "--quiet" in text and "--json" in text
