"""On NNCF 3.x nothing of the NNCF 2.19 adapter is imported, and it says so when asked for."""

import subprocess
import sys

import pytest

import nncf_wcam


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)


def test_nncf3_adapter_loads_nothing_of_nncf2():
    code = (
        "import os, sys\n"
        "import nncf_wcam, nncf_wcam.nncf3\n"
        "from nncf_wcam import AttributionMatcher\n"
        "bad = sorted(m for m in sys.modules if m.startswith(('nncf_wcam.nncf_plugin', 'nncf_wcam.training', 'nncf_wcam.checkpoint', 'nncf_wcam.cli')))\n"
        "print(bad, os.environ.get('NNCF_TORCH_LEGACY_TRACING'))\n"
    )
    result = _run(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[0] == "[] None"


def test_the_pure_torch_core_imports_no_nncf():
    result = _run("import sys\nimport nncf_wcam.matching, nncf_wcam.saliency, nncf_wcam.attribution\nprint('nncf' in sys.modules)")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


@pytest.mark.parametrize("module", ["nncf_wcam.nncf_plugin", "nncf_wcam.cli"])
def test_the_nncf2_adapter_refuses_nncf3_in_one_line(module):
    with pytest.raises(nncf_wcam.NNCFGenerationError, match=r"needs NNCF 2\.x, found NNCF 3\.4.*pip install 'nncf-wcam\[nncf2\]'"):
        __import__(module)
