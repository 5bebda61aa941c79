"""examples/nncf3_qat.py end to end (--quick: digits, one seed)."""

import json
import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "nncf3_qat.py"


def test_example_runs_qat_with_and_without_the_matcher(tmp_path):
    result = subprocess.run([sys.executable, str(EXAMPLE), "--quick", "--output", str(tmp_path)], capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert set(results["summary"]) == {"naive", "wcam"}
    for run in results["runs"].values():
        assert run["ir_parity"]["top1_agreement"] >= 0.99
    assert results["runs"]["wcam/seed0"]["beta"] > 0 and results["runs"]["naive/seed0"]["beta"] is None
    assert (tmp_path / "ir_wcam_seed0" / "model.xml").is_file()
