"""The `nncf-wcam` command line end to end on tests/configs/tiny.json: compress, export, evaluate, errors."""

import importlib.util
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

import nncf_wcam  # noqa: F401  (must precede nncf.torch)
from nncf_wcam import cli
from nncf_wcam.cli import training_run
from nncf_wcam.cli.configs import shipped_configs
from nncf_wcam.deploy.runtime import load_compiled
from nncf_wcam.deploy.runtime import run_compiled
from nncf_wcam.nncf2.checkpoint import load_checkpoint
from nncf_wcam.nncf2.checkpoint import restore_compressed_model
from nncf_wcam.zoo.datasets import load_dataset

from conftest import FAST
from conftest import ROOT
from conftest import TINY
from conftest import ir_against_model
from conftest import repository_files


@pytest.fixture
def run_dir(tiny_run):
    """The session's `compress --compare-naive` run (conftest.tiny_run)."""
    return tiny_run


def test_compress_writes_every_output(run_dir):
    for name in ("run.json", "teacher.pt", "checkpoint.pt", "naive/checkpoint.pt", "ir/model.xml", "ir/model.bin", "ir/manifest.json", "report.json"):
        assert (run_dir / name).is_file(), name
    assert (run_dir / "attribution_maps.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p.name for p in run_dir.iterdir() if p.name.startswith(".")]  # no staging leftovers
    assert (run_dir / "nncf_logs").is_dir()  # NNCF's .dot files go there, not into the cwd

    checkpoint = load_checkpoint(run_dir / "checkpoint.pt")
    assert checkpoint["epoch"] == checkpoint["epochs"] == 2
    assert "builder_state" in checkpoint["compression_state"] and "ctrl_state" in checkpoint["compression_state"]
    assert "generator_state" in checkpoint["compression_state"]["ctrl_state"]["attribution_matching"]["loss_state"]
    assert checkpoint["teacher_state_dict"] and checkpoint["optimizer"]["state"] and "torch" in checkpoint["rng"]
    assert len(checkpoint["history"]) == 4 and checkpoint["matched_layers"] == ["features.9"]
    assert not (run_dir / ".nncf-wcam.lock").exists()  # released at the end
    settings = json.loads((run_dir / "run.json").read_text())
    assert (settings["epochs"], settings["teacher_epochs"], settings["max_steps"], settings["eval_samples"]) == (2, 1, 2, 8)
    assert settings["compare_naive"] and settings["teacher"]["source"] == "trained" and len(settings["teacher"]["sha256"]) == 64


def test_report_contents(run_dir):
    report = json.loads((run_dir / "report.json").read_text())
    evaluated = report["evaluation"]
    assert set(evaluated["students"]) == {"attribution_matching", "naive"}
    for entry in evaluated["students"].values():
        assert 0.0 <= entry["accuracy"] <= 1.0
        assert -1.0 <= entry["grad_cam_agreement"]["pearson"] <= 1.0
        assert set(entry["grad_cam_agreement"]) == {"pearson", "spearman", "cosine", "iou"}
        assert "quantization" in entry["compression"]["algorithms"]
    assert evaluated["students"]["attribution_matching"]["algorithms"] == ["quantization", "attribution_matching"]
    assert evaluated["students"]["naive"]["algorithms"] == ["quantization"]
    assert evaluated["layer"] == "features.9" and evaluated["samples"] == 8
    ir = evaluated["ir"]
    assert ir["precision"] == "int8" and ir["parity"]["num_samples"] == 8
    assert -1.0 <= ir["occlusion_agreement"]["pearson"] <= 1.0
    assert report["dataset"]["name"] == "digits" and report["dataset"]["image_shape"] == [1, 8, 8]
    assert report["matched_layers"] == ["features.9"]
    assert json.loads((run_dir / "ir" / "manifest.json").read_text())["matched_layers"] == ["features.9"]
    assert {"teacher_s", "attribution_matching_training_s", "naive_training_s", "export_s", "evaluation_s", "total_s"} <= set(report["timings"])


def test_existing_run_needs_resume(run_dir, capsys):
    code = cli.main(["compress", "--config", str(TINY), "--output", str(run_dir), *FAST])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert "--resume" in err and len(err.splitlines()) == 1


def test_resume_of_finished_run_only_reports(run_dir, capsys):
    before = load_checkpoint(run_dir / "checkpoint.pt")["state_dict"]
    code = cli.main(["compress", "--config", str(TINY), "--output", str(run_dir), "--resume", *FAST[:-1]])  # not --quiet
    assert code == 0
    after = load_checkpoint(run_dir / "checkpoint.pt")["state_dict"]
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert "resuming after epoch 2/2" in capsys.readouterr().out


def test_export_from_checkpoint(run_dir, tmp_path, capsys):
    output = tmp_path / "ir_static"
    code = cli.main(["export", "--checkpoint", str(run_dir / "checkpoint.pt"), "--output", str(output), "--static-shape", "--eval-samples", "4"])
    assert code == 0
    manifest = json.loads((output / "manifest.json").read_text())
    assert manifest["input_shape"] == [1, 1, 8, 8] and not manifest["dynamic_batch"]
    assert manifest["parity"]["top1_agreement"] == 1.0
    assert sorted(p.name for p in output.iterdir()) == ["manifest.json", "model.bin", "model.xml"]
    assert "Exported" in capsys.readouterr().out
    # The restored model is the trained one: the static IR computes what the IR written by compress computes.
    samples = load_dataset({"name": "digits", "image_size": 8}).test.tensors[0][:16]
    np.testing.assert_allclose(run_compiled(load_compiled(output), samples), run_compiled(load_compiled(run_dir / "ir"), samples), atol=1e-4)


def test_the_ir_computes_what_the_trained_student_computes(run_dir):
    """The IR compress wrote, compiled here, against the student restored from checkpoint.pt on 64 test images."""
    checkpoint = load_checkpoint(run_dir / "checkpoint.pt")
    with tempfile.TemporaryDirectory() as log_dir:
        _, model, _ = restore_compressed_model(checkpoint, log_dir=log_dir)
    samples = load_dataset(checkpoint["dataset"]).test.tensors[0][:64]
    agreement, diff = ir_against_model(run_dir / "ir", model, samples)
    assert agreement >= 0.99 and diff < 0.05, (agreement, diff)


def test_evaluate_from_checkpoint(run_dir, tmp_path, capsys):
    report = tmp_path / "eval.json"
    figure = tmp_path / "maps.png"
    code = cli.main(
        ["evaluate", "--checkpoint", str(run_dir / "checkpoint.pt"), "--ir", str(run_dir / "ir"), "--eval-samples", "8", "--output", str(report), "--figure", str(figure)]
    )
    assert code == 0
    evaluated = json.loads(report.read_text())
    assert figure.is_file()
    # The restored student and teacher are the trained ones: same scores as compress reported.
    compressed = json.loads((run_dir / "report.json").read_text())["evaluation"]
    assert evaluated["teacher"]["accuracy"] == compressed["teacher"]["accuracy"]
    ours, theirs = evaluated["students"]["attribution_matching"], compressed["students"]["attribution_matching"]
    assert ours["accuracy"] == theirs["accuracy"]
    assert ours["grad_cam_agreement"]["pearson"] == pytest.approx(theirs["grad_cam_agreement"]["pearson"], abs=1e-6)
    assert evaluated["ir"]["accuracy"] == compressed["ir"]["accuracy"]
    out = capsys.readouterr().out
    assert "IR (CPU)" in out and f"Figure: {figure}" in out and f"Report: {report}" in out


def test_evaluate_json_prints_only_the_summary(run_dir, capsys):
    code = cli.main(["evaluate", "--checkpoint", str(run_dir / "checkpoint.pt"), "--eval-samples", "4", "--layer", "features.5", "--json"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)  # stdout is one JSON object, nothing else
    assert summary["command"] == "evaluate" and summary["layer"] == "features.5" and summary["samples"] == 4
    assert -1.0 <= summary["students"]["attribution_matching"]["grad_cam_agreement"]["pearson"] <= 1.0


def test_auto_list_run_from_the_repository_root_writes_nothing_there(tmp_path):
    """`"layers": ["auto"]` is accepted, the chosen layer is printed and stored; a run started in a
    checkout (NNCF writes graph files into the working directory by default) adds no file there, ignored ones included."""
    config = json.loads(TINY.read_text())
    config["compression"][1]["layers"] = ["auto"]
    config_path = tmp_path / "auto.json"
    config_path.write_text(json.dumps(config))
    output = tmp_path / "run"
    before = repository_files()
    command = [sys.executable, "-m", "nncf_wcam.cli", "compress", "--config", str(config_path), "--output", str(output), "--epochs", "1", *FAST[:-1]]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert 'Matched layer: features (chosen by "layers": "auto")' in result.stdout.splitlines()  # the container: its output is features.9's
    # One progress bar per stage, across its epochs, with an ETA ([elapsed<remaining]; "?" until tqdm's
    # first refresh, which a fast machine may finish the teacher before); no per-epoch bars.
    assert re.search(r"teacher: +\d+%\|.*\| \d+/43 \[\d\d:\d\d<(\d\d:\d\d|\?)", result.stderr)
    assert re.search(r"attribution_matching: +\d+%\|.*\| \d/2 \[\d\d:\d\d<", result.stderr)
    assert "epoch 1/1" not in result.stderr
    assert json.loads((output / "report.json").read_text())["matched_layers"] == ["features"]
    assert json.loads((output / "ir" / "manifest.json").read_text())["matched_layers"] == ["features"]
    if before is not None:  # a git checkout
        assert repository_files() == before


def _bad_json(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('{"model": "small_cnn",')
    return path


def _config_with(tmp_path, **changes):
    data = json.loads(TINY.read_text())
    data.update(changes)
    path = tmp_path / "changed.json"
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize(
    "make_args, expected",
    [
        (lambda tmp: ["--config", str(tmp / "missing.json")], "Config file not found"),
        (lambda tmp: ["--config", str(_bad_json(tmp))], "not valid JSON"),
        (lambda tmp: ["--config", str(_config_with(tmp, dataset={"name": "imagenet"}))], "Unknown dataset 'imagenet'"),
        (lambda tmp: ["--config", str(_config_with(tmp, dataset={"name": "mnist", "root": str(tmp / "nowhere")}))], "Dataset folder not found"),
        (lambda tmp: ["--config", str(TINY), "--device", "MYRIAD"], "MYRIAD"),
        (lambda tmp: ["--config", str(TINY), "--device", "NPU"], "not available on this machine"),
        (lambda tmp: ["--config", str(TINY), "--device", "cuda:7"], "CUDA device(s) here"),
        (lambda tmp: ["--config", str(_config_with(tmp, model="vgg99"))], "Unknown model 'vgg99'"),
        (lambda tmp: ["--config", str(_config_with(tmp, input_info={"sample_size": [1, 1, 16, 16]}))], "does not match"),
    ],
    ids=["missing-config", "bad-json", "unknown-dataset", "missing-data-folder", "removed-device", "absent-device", "absent-cuda-device", "unknown-model", "shape-mismatch"],
)
def test_bad_inputs_exit_2_with_one_line(tmp_path, capsys, make_args, expected):
    output = tmp_path / "out"
    code = cli.main(["compress", *make_args(tmp_path), "--output", str(output), *FAST])
    assert code == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0] and "Traceback" not in captured.err
    assert not output.exists()  # nothing written for a rejected command


def test_bad_checkpoint_exit_2(tmp_path, capsys):
    fake = tmp_path / "checkpoint.pt"
    fake.write_bytes(b"not a checkpoint")
    for command in (["export", "--output", str(tmp_path / "ir")], ["evaluate"]):
        assert cli.main([command[0], "--checkpoint", str(fake), *command[1:]]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "Cannot read Checkpoint" in err
    assert cli.main(["evaluate", "--checkpoint", str(tmp_path / "none.pt")]) == 2
    assert "Checkpoint not found" in capsys.readouterr().err


def test_console_script_reports_errors_in_one_line(tmp_path):
    """The installed entry point: exit code 2, one line on stderr, no traceback."""
    env = dict(os.environ)
    command = [sys.executable, "-m", "nncf_wcam.cli", "compress", "--config", str(tmp_path / "nope.json"), "--output", str(tmp_path / "o")]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert [line for line in result.stderr.splitlines() if "nncf-wcam" in line] == [
        f"nncf-wcam compress: error: Config file not found: {tmp_path / 'nope.json'}. Pass the path of an NNCF JSON config "
        f"or the name of a shipped one: {', '.join(shipped_configs())} (nncf-wcam configs lists them)."
    ]


def test_usage_errors_exit_2_in_one_line(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["compress", "--config", str(TINY)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "the following arguments are required: --output" in err


def test_resume_with_a_changed_config_is_refused(run_dir, tmp_path, capsys):
    changed = _config_with(tmp_path, compression=[{"algorithm": "quantization"}])
    assert cli.main(["compress", "--config", str(changed), "--output", str(run_dir), "--resume", *FAST]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "differs from the config this run was started with" in err


def test_export_json_and_evaluate_quiet(run_dir, tmp_path, capsys):
    assert cli.main(["export", "--checkpoint", str(run_dir / "checkpoint.pt"), "--output", str(tmp_path / "ir"), "--eval-samples", "4", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["command"] == "export" and summary["precision"] == "int8" and summary["matched_layers"] == ["features.9"]
    assert summary["parity"]["top1_agreement"] == 1.0 and Path(summary["ir"]).is_file()
    assert cli.main(["evaluate", "--checkpoint", str(run_dir / "checkpoint.pt"), "--eval-samples", "4", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "Evaluating" not in out and "Grad-CAM r" in out  # the result table, no stage messages


def test_layer_errors_come_before_any_training_or_nncf_initialization(tmp_path, capsys, monkeypatch):
    """A typo in "layers" costs no minutes: neither the teacher's training nor NNCF's initialization runs."""
    monkeypatch.setattr(training_run, "train_teacher", lambda *a, **k: pytest.fail("the teacher trained before the layer check"))
    monkeypatch.setattr(training_run, "compress", lambda *a, **k: pytest.fail("NNCF initialized before the layer check"))
    config = json.loads(TINY.read_text())
    config["compression"][1]["layers"] = ["features.99"]
    path = tmp_path / "typo.json"
    path.write_text(json.dumps(config))
    assert cli.main(["compress", "--config", str(path), "--output", str(tmp_path / "out"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "Layer 'features.99' does not exist" in err and "'features.9'" in err
    assert not (tmp_path / "out").exists()


def test_export_for_an_npu_this_machine_lacks(run_dir, tmp_path, capsys):
    """`--target-device NPU` writes an NPU-ready IR (static batch, NCHW) here; it compiles for the NPU only where one exists."""
    import openvino as ov

    output = tmp_path / "ir_npu"
    argv = ["export", "--checkpoint", str(run_dir / "checkpoint.pt"), "--output", str(output), "--target-device", "NPU", "--eval-samples", "4"]
    shown = subprocess.run([sys.executable, "-m", "nncf_wcam.cli", *argv], capture_output=True, text=True, timeout=300)
    assert shown.returncode == 0, shown.stderr[-3000:]
    said = shown.stdout + shown.stderr
    assert said.count("static batch of 1") == 1 and "model.xml for NPU:" in said, said  # the note once, the target named
    manifest = json.loads((output / "manifest.json").read_text())
    assert manifest["target_device"] == "NPU" and manifest["input_shape"] == [1, 1, 8, 8] and not manifest["dynamic_batch"]
    assert manifest["target_compile_checked"] == ("NPU" in ov.Core().available_devices)
    assert manifest["parity"]["top1_agreement"] == 1.0
    assert cli.main(["export", "--checkpoint", str(run_dir / "checkpoint.pt"), "--output", str(tmp_path / "x"), "--target-device", "MYRIAD"]) == 2
    assert "MYRIAD" in capsys.readouterr().err


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_compress_trains_on_cuda(tmp_path):
    """`--device cuda`: the teacher and the students train on the GPU; the IR is checked on OpenVINO's CPU."""
    output = tmp_path / "cuda"
    assert cli.main(["compress", "--config", str(TINY), "--output", str(output), "--device", "cuda", *FAST]) == 0
    manifest = json.loads((output / "ir" / "manifest.json").read_text())
    assert manifest["device"] == "CPU" and manifest["parity"]["num_samples"] == 8
    assert json.loads((output / "run.json").read_text())["device"] == "cuda"


def test_an_inc_config_without_inc_installed_is_one_json_error_and_writes_nothing(tmp_path, capsys):
    """The INC configs ship with the package; without Intel Neural Compressor they say what to install."""
    if importlib.util.find_spec("neural_compressor") is not None:
        pytest.skip("Intel Neural Compressor is installed here (tests_inc runs these configs)")
    output = tmp_path / "run"
    code = cli.main(["compress", "--config", "inc_pruning_wcam", "--output", str(output), "--json"])
    error = json.loads(capsys.readouterr().out)
    assert code == 2 and error["exit_code"] == 2
    assert "Intel Neural Compressor 3.7" in error["error"] and "pip install" in error["error"]
    assert not output.exists()
