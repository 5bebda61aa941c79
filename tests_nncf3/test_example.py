"""examples/nncf3_qat.py end to end (--quick: digits, one seed)."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from nncf_wcam.deploy.runtime import load_compiled
from nncf_wcam.deploy.runtime import run_compiled
from nncf_wcam.zoo.datasets import load_digits

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "nncf3_qat.py"
QUICK_TEST_SAMPLES = 64  # --quick evaluates on the first 64 test digits


def test_example_runs_qat_with_and_without_the_matcher(tmp_path):
    result = subprocess.run([sys.executable, str(EXAMPLE), "--quick", "--output", str(tmp_path)], capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert set(results["summary"]) == {"naive", "wcam"}
    assert results["runs"]["wcam/seed0"]["beta"] > 0 and results["runs"]["naive/seed0"]["beta"] is None
    # Each IR, compiled here, is as accurate on the evaluation digits as the PyTorch student the example measured.
    test = load_digits(image_size=16).test
    images, labels = test.tensors[0][:QUICK_TEST_SAMPLES], test.tensors[1][:QUICK_TEST_SAMPLES].numpy()
    for variant in ("naive", "wcam"):
        ir_accuracy = float(np.mean(run_compiled(load_compiled(tmp_path / f"ir_{variant}_seed0"), images).argmax(1) == labels))
        assert abs(ir_accuracy - results["runs"][f"{variant}/seed0"]["accuracy"]) <= 1 / QUICK_TEST_SAMPLES + 1e-9, variant
