"""The INC rows of the attribution benchmark run end to end (--quick: a tiny model, a few steps)."""

import json
import os
import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def test_the_inc_benchmark_quick_mode_writes_its_table_runs_and_irs(tmp_path):
    env = {key: value for key, value in os.environ.items() if key != "NNCF_WCAM_DATA_ROOT"}  # digits: fast
    done = subprocess.run([sys.executable, "inc_attribution.py", "--quick", "--output", str(tmp_path)], cwd=BENCHMARKS, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    runs = sorted(p.stem for p in (tmp_path / "runs").glob("*.json"))
    assert runs == ["inc_pruning_70_am_0", "inc_pruning_70_naive_0", "inc_qat_int8_am_0", "inc_qat_int8_naive_0"]
    record = json.loads((tmp_path / "runs" / "inc_qat_int8_am_0.json").read_text())["result"]
    assert record["student_layer"] == "features.7" and record["ir_parity"]["top1_agreement"] >= 0.99
    table = (tmp_path / "table.md").read_text()
    assert "| inc_pruning_70 | am |" in table and "## Targets" in table
    assert (tmp_path / "gradcam_grid_inc_qat_int8.png").stat().st_size > 0
