"""Each benchmark script runs end to end in its tiny --quick mode and writes its results."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).parents[1] / "benchmarks"


def _run(script: str, output: Path) -> str:
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), "--quick", "--output", str(output)],
        capture_output=True, text=True, timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def _aggregate(output: Path) -> None:
    """attribution_preservation.py --aggregate-only: the tables and figures rebuilt from runs/ alone."""
    subprocess.run([sys.executable, str(BENCHMARKS / "attribution_preservation.py"), "--aggregate-only", "--output", str(output)], check=True, capture_output=True)


def test_attribution_preservation_quick(tmp_path):
    stdout = _run("attribution_preservation.py", tmp_path)
    summary = json.loads((tmp_path / "results.json").read_text())["summary"]["int8"]
    assert set(summary) == {"naive", "am", "am_input", "beta_100"}
    for name, variant in summary.items():
        assert 0.0 <= variant["accuracy"]["mean"] <= 1.0
        for method in ("grad_cam", "saliency", "integrated_gradients"):
            assert -1.0 <= variant[method]["mean"] <= 1.0
        if name != "naive":
            assert set(variant["gap_closed"]) == {"grad_cam", "saliency", "integrated_gradients"}
    table = (tmp_path / "table.md").read_text()
    assert "| int8 | am_input |" in table and "| int8 | beta_100 |" in table and "## Targets" in table
    for png in ("gradcam_grid_int8.png", "pareto.png"):
        assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "data:" in stdout
    assert re.search(r"\(weights [0-9a-f]{12}\)", (tmp_path / "header.txt").read_text())
    # every run was saved on its own, and the tables can be rebuilt from those files alone
    assert len(list((tmp_path / "runs").glob("int8_*_0.json"))) == 4
    (tmp_path / "table.md").unlink()
    _aggregate(tmp_path)
    assert (tmp_path / "table.md").read_text() == table
    assert "## β sweep" in table
    # without a swept β the sweep section would only repeat the main table
    (tmp_path / "runs" / "int8_beta_100_0.json").unlink()
    _aggregate(tmp_path)
    assert "## β sweep" not in (tmp_path / "table.md").read_text()


def test_a_results_folder_describes_all_its_runs_and_refuses_another_teacher(tmp_path):
    """Runs split over invocations: the header is built from every run's setup; a run against another teacher
    (another machine trains another one from the same seed) is refused before any training."""
    _run("attribution_preservation.py", tmp_path)
    records = [json.loads(path.read_text()) for path in sorted((tmp_path / "runs").glob("*.json"))]
    fingerprint = re.search(r"\(weights ([0-9a-f]{12})\)", (tmp_path / "header.txt").read_text()).group(1)
    assert {record["setup"]["teacher_weights"] for record in records} == {fingerprint}
    header = (tmp_path / "header.txt").read_text()
    assert f"{len(records)} runs on cpu, torch" in header and "am_input " in header.split("fine-tuning took", 1)[1]
    tampered = tmp_path / "runs" / "int8_naive_0.json"
    kept = tampered.read_text()
    tampered.write_text(kept.replace(fingerprint, "0" * 12))
    before = sorted(path.name for path in (tmp_path / "runs").iterdir())
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / "attribution_preservation.py"), "--quick", "--seeds", "1", "--output", str(tmp_path)],
        capture_output=True, text=True, timeout=900,
    )
    assert result.returncode != 0 and "teacher_weights" in result.stderr and "--output" in result.stderr, result.stderr[-2000:]
    assert sorted(path.name for path in (tmp_path / "runs").iterdir()) == before, "a refused run wrote nothing"
    tampered.write_text(kept)
    (tmp_path / "header.txt").unlink()
    _aggregate(tmp_path)
    assert (tmp_path / "header.txt").read_text() == header


def test_training_overhead_quick(tmp_path):
    _run("training_overhead.py", tmp_path)
    results = json.loads((tmp_path / "results.json").read_text())["results"]
    for algorithm in ("int8", "filter_pruning"):
        medians = results[algorithm]["median_step_s"]
        assert set(medians) == {"plain", "wcam", "input", "authors"} and all(v > 0 for v in medians.values())
        assert results[algorithm]["wcam_over_plain"] == pytest.approx(medians["wcam"] / medians["plain"])


def test_inference_quick(tmp_path):
    _run("inference.py", tmp_path)
    results = json.loads((tmp_path / "results.json").read_text())["results"]
    mobile = {f"mobilenet_style {name}" for name in ("fp32_torch_eager", "fp32_ir", "int8_ir", "pruned50_int8_ir")}
    assert set(results) == {"fp32_torch_eager", "fp32_ir", "int8_ir", "pruned50_ir", "pruned50_int8_ir"} | mobile
    pruned_mobile = results["mobilenet_style pruned50_int8_ir"]
    assert pruned_mobile["pruning_transformation_applied"] and pruned_mobile["notes"] == []
    assert pruned_mobile["weights"] < results["mobilenet_style int8_ir"]["weights"]
    # Real int8 kernels: u8 activations, and i8 as well on CPUs whose int8 convolution takes signed input.
    assert results["int8_ir"]["conv_runtime_precisions"] and set(results["int8_ir"]["conv_runtime_precisions"]) <= {"u8", "i8"}
    assert results["fp32_ir"]["conv_runtime_precisions"] == ["f32"]
    assert all(r["throughput_ips"] > 0 and r["latency_ms"] > 0 for r in results.values())


def test_matching_ceiling_quick(tmp_path):
    stdout = _run("matching_ceiling.py", tmp_path)
    results = json.loads((tmp_path / "results.json").read_text())["results"]["filter_pruning@0.5"]
    assert set(results) == {"naive", "default", "beta_1000"}
    assert results["naive"]["distance"] is None
    for name in ("default", "beta_1000"):
        assert 0.0 <= results[name]["distance"] <= 4.0  # 2 (1 - cos), per sample
    for result in results.values():
        assert -1.0 <= result["grad_cam_r_heldout"] <= 1.0 and -1.0 <= result["grad_cam_r_train"] <= 1.0
    assert "| filter_pruning | 0.5 | beta_1000 |" in (tmp_path / "table.md").read_text()
    assert (tmp_path / "ceiling.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "data:" in stdout


def test_int4_batchnorm_quick(tmp_path):
    stdout = _run("int4_batchnorm.py", tmp_path)
    runs = json.loads((tmp_path / "results.json").read_text())["runs"]
    assert {(r["recipe"], r["variant"]) for r in runs} == {(recipe, variant) for recipe in ("plain", "freeze_bn") for variant in ("naive", "am")}
    for run in runs:
        assert len(run["eval_accuracy_per_epoch"]) == 2 and run["accuracy"] == run["eval_accuracy_per_epoch"][-1]
    assert "| freeze_bn | am | 1 |" in (tmp_path / "table.md").read_text()
    assert (tmp_path / "eval_accuracy_per_epoch.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "data:" in stdout



def test_one_batch_fit_quick(tmp_path):
    _run("one_batch_fit.py", tmp_path)
    results = json.loads((tmp_path / "width4.json").read_text())["results"]
    assert set(results) == {"filter_pruning", "magnitude_sparsity"}
    for result in results.values():
        assert 0.0 <= result["distance"] <= 4.0 and -1.0 <= result["grad_cam_r_on_batch"] <= 1.0
    assert "| filter_pruning | 4 | 3 |" in (tmp_path / "width4.md").read_text()


def test_committed_results_name_no_machines_folder():
    """Result files are shared: data as $NNCF_WCAM_DATA_ROOT, outputs repository-relative (benchmarks/records.py)."""
    absolute = re.compile(r'(?:"|from |\s)/(?:home|root|tmp|work|mnt|data|Users)/')
    found = [
        str(path.relative_to(BENCHMARKS))
        for path in sorted((BENCHMARKS / "results").rglob("*"))
        if path.suffix in {".md", ".json", ".txt"} and absolute.search(path.read_text(encoding="utf-8"))
    ]
    assert not found, f"results naming a machine's folder: {found}"


def test_settings_records_are_repository_relative(tmp_path):
    sys.path.insert(0, str(BENCHMARKS))
    try:
        from records import settings_record
    finally:
        sys.path.remove(str(BENCHMARKS))
    import argparse

    record = settings_record(argparse.Namespace(output=BENCHMARKS / "results" / "x", other=tmp_path, steps=3))
    assert record == {"output": "benchmarks/results/x", "other": str(tmp_path), "steps": "3"}


def test_weights_fingerprint_tells_teachers_apart():
    """Result folders name their teacher by a fingerprint: equal weights agree, one changed value does not."""
    import torch

    sys.path.insert(0, str(BENCHMARKS))
    try:
        from records import weights_fingerprint
    finally:
        sys.path.remove(str(BENCHMARKS))
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4))
    twin = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4))
    twin.load_state_dict(model.state_dict())
    assert weights_fingerprint(model) == weights_fingerprint(twin)
    with torch.no_grad():
        twin[0].weight[0, 0, 0, 0] += 1e-6
    assert weights_fingerprint(model) != weights_fingerprint(twin)
    assert len(weights_fingerprint(model)) == 12
