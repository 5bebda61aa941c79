"""Each benchmark script runs end to end in its tiny --quick mode and writes its results."""

import json
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


def test_attribution_preservation_quick(tmp_path):
    stdout = _run("attribution_preservation.py", tmp_path)
    results = json.loads((tmp_path / "results.json").read_text())
    summary = results["summary"]["int8"]
    assert set(summary) == {"naive", "wcam"}
    for variant in summary.values():
        assert 0.0 <= variant["accuracy"]["mean"] <= 1.0
        assert -1.0 <= variant["grad_cam.pearson"]["mean"] <= 1.0
        assert "ir_occlusion.pearson" in variant and "localization.pointing_game" in variant
    assert "| int8 | wcam |" in (tmp_path / "table.md").read_text()
    for png in ("gradcam_grid_int8.png", "gradcam_agreement.png"):
        assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "data:" in stdout


def test_training_overhead_quick(tmp_path):
    _run("training_overhead.py", tmp_path)
    results = json.loads((tmp_path / "results.json").read_text())["results"]
    for algorithm in ("int8", "filter_pruning"):
        medians = results[algorithm]["median_step_s"]
        assert set(medians) == {"plain", "wcam", "authors"} and all(v > 0 for v in medians.values())
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
