"""On NNCF 3.x every module outside the NNCF 2.19 adapter, the command line and INC 3.7's training API imports;
those refuse in one line."""

import pkgutil
import subprocess
import sys

import pytest

import nncf_wcam
from nncf_wcam import NNCFGenerationError

NNCF2_ONLY = ("nncf_wcam.nncf2", "nncf_wcam.cli")
# Intel Neural Compressor 3.7's training API (this environment has no INC): they refuse in one line too.
INC_TRAINING = ("nncf_wcam.inc.framework", "nncf_wcam.inc.callbacks", "nncf_wcam.inc.compression", "nncf_wcam.inc.training")
MODULES = sorted(m.name for m in pkgutil.walk_packages(nncf_wcam.__path__, "nncf_wcam.") if not m.name.endswith("__main__"))


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("module", MODULES)
def test_every_module_imports_or_refuses_in_one_line(module):
    """Each module in a fresh interpreter: the layers below the adapters (and nncf3) import, nncf2/ and cli/ refuse."""
    code = f"import importlib\ntry:\n    importlib.import_module({module!r})\nexcept Exception as e:\n    print(type(e).__name__ + ': ' + str(e))\n"
    result = _run(code)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    if module.startswith(NNCF2_ONLY):
        assert len(lines) == 1 and lines[0].startswith("NNCFGenerationError: ") and "needs NNCF 2.x, found NNCF 3.4" in lines[0], result.stdout
    elif module in INC_TRAINING:
        assert len(lines) == 1 and lines[0].startswith("IncVersionError: ") and "Intel Neural Compressor 3.7.x, found none" in lines[0], result.stdout
    else:
        assert lines == [], result.stdout


def test_nncf3_adapter_loads_nothing_of_nncf2():
    code = (
        "import os, sys\n"
        "import nncf_wcam, nncf_wcam.nncf3\n"
        "from nncf_wcam import AttributionMatcher, attribution_maps, write_attribution_figure\n"
        "bad = sorted(m for m in sys.modules if m.startswith(('nncf_wcam.nncf2', 'nncf_wcam.cli')))\n"
        "print(bad, os.environ.get('NNCF_TORCH_LEGACY_TRACING'))\n"
    )
    result = _run(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[0] == "[] None"


def test_the_pure_torch_core_imports_no_nncf():
    result = _run("import sys\nimport nncf_wcam.core.matcher, nncf_wcam.core.saliency, nncf_wcam.core.hooks\nprint('nncf' in sys.modules)")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


@pytest.mark.parametrize("module", NNCF2_ONLY)
def test_the_nncf2_adapter_refuses_nncf3_in_one_line(module):
    with pytest.raises(NNCFGenerationError, match=r"needs NNCF 2\.x, found NNCF 3\.4.*pip install -e '\.\[nncf2\]'"):
        __import__(module)


def test_the_nncf2_route_names_say_where_the_nncf3_ones_are():
    with pytest.raises(NNCFGenerationError, match=r"nncf_wcam\.nncf3\.export_ir"):
        from nncf_wcam import export_ir  # noqa: F401
