"""examples/inc310_qat.py end to end (--quick): Intel Neural Compressor 3.10's prepare_qat, with and without the matcher.

Runs where neural-compressor-pt 3.10 (with auto-round) is installed; skipped elsewhere:
    pip install "neural-compressor-pt==3.10.*" auto-round && pytest tests_inc310
"""

import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

quantize = pytest.importorskip("neural_compressor.torch.quantization.quantize", reason="needs Intel Neural Compressor 3.10 (neural-compressor-pt)")
if not hasattr(quantize, "prepare_qat"):
    pytest.skip("this Intel Neural Compressor has no prepare_qat (INC 3.10's training-time route)", allow_module_level=True)
pytest.importorskip("auto_round", reason="prepare_qat's MX quantizers come from auto-round")

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "inc310_qat.py"
AGREEMENT = re.compile(r"^(naive|wcam)\s+MXFP8 QAT: accuracy (\S+)\s+Grad-CAM r vs teacher (\S+)", re.MULTILINE)


def test_example_runs_prepare_qat_with_and_without_the_matcher(tmp_path):
    result = subprocess.run(
        [sys.executable, str(EXAMPLE), "--quick", "--output", str(tmp_path)],
        check=False,
        capture_output=True,
        text=True,
        timeout=900,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    for arm in ("naive", "wcam"):
        for name in ("model.xml", "model.bin", "manifest.json"):
            assert (tmp_path / f"ir_{arm}" / name).is_file(), f"ir_{arm}/{name} missing"
    printed = {arm: (float(acc), float(r)) for arm, acc, r in AGREEMENT.findall(result.stdout)}
    assert set(printed) == {"naive", "wcam"}, result.stdout[-3000:]
    accuracy, agreement = printed["wcam"]
    assert math.isfinite(agreement) and -1.0 <= agreement <= 1.0, result.stdout[-3000:]
    assert 0.0 <= accuracy <= 1.0
