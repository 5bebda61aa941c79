"""`nncf-wcam compress` with the shipped INC configs on the embedded digits: the student, --compare-naive, the IR,
the report and the figure; bad "inc" sections end with one line before any work."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
# A teacher trained long enough to be confident: torch.ao's and OpenVINO's int8 kernels round differently, and
# a sample near a tie would flip in the IR's parity check.
FAST = ["--epochs", "2", "--teacher-epochs", "6", "--max-steps", "6", "--eval-samples", "32"]


def compress(*argv, cwd=ROOT):
    command = [sys.executable, "-m", "nncf_wcam.cli", "compress", *map(str, argv)]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("config, precision", [("inc_pruning_wcam.json", "fp32"), ("inc_qat_int8_wcam.json", "int8")])
def test_the_inc_configs_run_the_main_job_with_compare_naive(tmp_path, config, precision):
    output = tmp_path / "run"
    done = compress("--config", CONFIGS / config, "--output", output, "--compare-naive", "--json", *FAST)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout)  # --json: stdout is one JSON object
    students = summary["evaluation"]["students"]
    assert set(students) == {"attribution_matching", "naive"}
    report = json.loads((output / "report.json").read_text())
    entry = report["evaluation"]["students"]["attribution_matching"]
    assert entry["algorithms"][-1] == "attribution_matching" and entry["compression"]["framework"] == "intel_neural_compressor"
    assert entry["final_losses"]["loss"] > entry["final_losses"]["task_loss"]  # the matching term was trained
    naive = report["evaluation"]["students"]["naive"]
    assert naive["final_losses"]["loss"] == naive["final_losses"]["task_loss"]
    manifest = json.loads((output / "ir" / "manifest.json").read_text())
    assert manifest["route"] == "inc: ov.convert_model" and manifest["precision"] == precision
    assert manifest["parity"]["top1_agreement"] >= 0.99
    assert (output / "attribution_maps.png").stat().st_size > 10_000 and (output / "teacher.pt").is_file()
    if precision == "int8":
        assert entry["compression"]["grad_cam_layer"] == "features.7"  # the fused group that ends at the teacher's features.9


def test_resume_of_an_inc_run_reuses_its_teacher(tmp_path):
    output = tmp_path / "run"
    first = compress("--config", CONFIGS / "inc_pruning_wcam.json", "--output", output, "--quiet", *FAST)
    assert first.returncode == 0, first.stderr[-3000:]
    teacher = (output / "teacher.pt").read_bytes()
    again = compress("--output", output, "--resume", *FAST)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "the students train from the start" in again.stdout
    assert (output / "teacher.pt").read_bytes() == teacher


def _config(tmp_path, **changes) -> Path:
    config = json.loads((CONFIGS / "inc_pruning_wcam.json").read_text())
    config.update(changes)
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    return path


@pytest.mark.parametrize(
    "changes, words",
    [
        ({"inc": {"pruning": {"target_sparsty": 0.7}}}, "Did you mean 'target_sparsity'?"),
        ({"inc": {"pruning": {"target_sparsity": 1.5}}}, "inc.pruning.target_sparsity"),
        ({"inc": {"pruning": {"pruning_type": "lottery"}}}, "pruning_type"),
        ({"inc": {"pruning": {"start_step": 10, "end_step": 2}}}, "end_step 2 comes before start_step 10"),
        ({"inc": {"distillation": {}}}, "unknown algorithm 'distillation'"),
        ({"inc": []}, "\"inc\" must name INC's algorithms"),
        ({"compression": [{"algorithm": "filter_pruning"}, {"algorithm": "attribution_matching"}]}, "only the attribution_matching block"),
    ],
)
def test_a_bad_inc_section_is_one_line_and_writes_nothing(tmp_path, changes, words):
    output = tmp_path / "run"
    done = compress("--config", _config(tmp_path, **changes), "--output", output, *FAST)
    assert done.returncode == 2, done.stderr[-2000:]
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and words in lines[0], done.stderr[-2000:]
    assert not (output / "run.json").exists() and not (output / "teacher.pt").exists()
