"""Packaging: dependency ranges (the user's torch is kept), one version, configs shipped and usable by name,
dataset roots read relative to the config file."""

import json
import shutil
import subprocess
import sys
import tomllib
import zipfile
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

import nncf_wcam
from nncf_wcam import cli
from nncf_wcam.cli.configs import CONFIG_DIR
from nncf_wcam.cli.configs import ConfigNotFoundError
from nncf_wcam.cli.configs import read_config
from nncf_wcam.cli.configs import resolve_config
from nncf_wcam.cli.configs import shipped_configs
from nncf_wcam.cli.configs import with_data_root
from nncf_wcam.cli.configs import with_dataset_root_from
from nncf_wcam.nncf2.tested_torch import TestedTorchNoticeFilter
from nncf_wcam.nncf2.tested_torch import is_tested_combination

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
NNCF_219_TESTED_TORCH = "2.9.1"  # nncf.version.BKC_TORCH_SPEC of NNCF 2.19 is ==2.9.*


def requirement(name: str) -> Requirement:
    (found,) = [Requirement(r) for r in PYPROJECT["project"]["dependencies"] if Requirement(r).name == name]
    return found


def test_torch_is_a_range_holding_nncf_tested_torch_and_the_ci_torch():
    spec = requirement("torch").specifier
    assert not any(s.operator in ("==", "===") for s in spec), spec
    assert spec.contains(NNCF_219_TESTED_TORCH) and spec.contains(Version(metadata.version("torch")).base_version)
    ci_torch = {Requirement(line).name: Requirement(line) for line in (REPO / ".ci" / "constraints-nncf2.txt").read_text().split()}["torch"]
    assert spec.contains(next(iter(ci_torch.specifier)).version)


def test_nncf_range_admits_both_generations_and_the_extras_pick_one():
    spec = requirement("nncf").specifier
    assert spec.contains("2.19.0") and spec.contains("3.4.0") and not spec.contains("3.0.0") and not spec.contains("2.18.0")
    extras = PYPROJECT["project"]["optional-dependencies"]
    assert Requirement(extras["nncf2"][0]).specifier.contains("2.19.0") and not Requirement(extras["nncf2"][0]).specifier.contains("3.4.0")
    assert Requirement(extras["nncf3"][0]).specifier.contains("3.4.0") and not Requirement(extras["nncf3"][0]).specifier.contains("2.19.0")


def test_version_has_one_source():
    assert PYPROJECT["project"]["dynamic"] == ["version"]
    assert PYPROJECT["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "nncf_wcam.version.__version__"}
    assert "version" not in (REPO / "setup.py").read_text(encoding="utf-8")  # a shim: pyproject.toml describes the package
    assert f"## {nncf_wcam.__version__}" in (REPO / "CHANGELOG.md").read_text(encoding="utf-8")


def test_every_folder_of_the_package_is_packaged():
    folders = {".".join(p.parent.relative_to(REPO).parts) for p in (REPO / "nncf_wcam").rglob("__init__.py")}
    assert set(PYPROJECT["tool"]["setuptools"]["packages"]) == folders | {"nncf_wcam.configs"}


def _pip(*args, cwd, timeout=300):
    return subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True, cwd=cwd, timeout=timeout)


@pytest.fixture
def source_copy(tmp_path):
    """The sources a build needs, copied: setuptools writes build/ and *.egg-info beside them."""
    source = tmp_path / "src"
    for folder in ("nncf_wcam", "configs"):
        shutil.copytree(REPO / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "setup.py", "README.md", "LICENSE"):
        shutil.copy(REPO / name, source / name)
    return source


def test_install_dry_run_keeps_the_installed_torch(tmp_path, source_copy):
    """The resolver, offline against this environment: only nncf-wcam would be installed, torch stays."""
    report = tmp_path / "report.json"
    result = _pip("install", "--dry-run", "--no-index", "--no-build-isolation", "--quiet", "--report", str(report), ".[nncf2]", cwd=source_copy)
    assert result.returncode == 0, result.stderr
    would_install = {item["metadata"]["name"].lower(): item["metadata"]["version"] for item in json.loads(report.read_text())["install"]}
    # nncf-wcam itself (absent when this very source is already installed); nothing else, torch least of all.
    assert set(would_install) <= {"nncf-wcam"}, would_install


def test_wheel_ships_the_configs(tmp_path, source_copy):
    result = _pip("wheel", "--no-deps", "--no-build-isolation", "--quiet", "--wheel-dir", str(tmp_path), ".", cwd=source_copy)
    assert result.returncode == 0, result.stderr
    (wheel,) = tmp_path.glob("nncf_wcam-*.whl")
    assert wheel.name.startswith(f"nncf_wcam-{nncf_wcam.__version__}-")
    names = zipfile.ZipFile(wheel).namelist()
    assert sorted(Path(n).stem for n in names if n.startswith("nncf_wcam/configs/") and n.endswith(".json")) == shipped_configs()
    assert "nncf_wcam/nncf3/__init__.py" in names and "nncf_wcam/cli/__main__.py" in names


def test_configs_are_found_by_name_or_path(tmp_path, monkeypatch):
    assert "quantization_int8_wcam" in shipped_configs()
    assert resolve_config("quantization_int8_wcam") == CONFIG_DIR / "quantization_int8_wcam.json"
    assert resolve_config("quantization_int8_wcam.json") == CONFIG_DIR / "quantization_int8_wcam.json"
    own = tmp_path / "quantization_int8_wcam.json"
    own.write_text("{}")
    monkeypatch.chdir(tmp_path)
    assert resolve_config("quantization_int8_wcam.json") == Path("quantization_int8_wcam.json")  # a file beats the shipped name
    with pytest.raises(ConfigNotFoundError, match="quantization_int8_wcam") as error:
        resolve_config("no_such_config")
    assert "tiny" not in str(error.value)  # test fixtures are not shipped
    with pytest.raises(ConfigNotFoundError):
        resolve_config("somewhere/quantization_int8_wcam")  # a path is never taken for a name


def test_cli_lists_the_configs(capsys):
    assert cli.main(["configs"]) == 0
    assert capsys.readouterr().out.split() == shipped_configs()


def test_dataset_root_is_read_relative_to_the_config_file(tmp_path, monkeypatch):
    folder = tmp_path / "project" / "configs"
    folder.mkdir(parents=True)
    path = folder / "c.json"
    path.write_text(json.dumps({"dataset": {"name": "mnist", "root": "../data/mnist"}, "input_info": {"sample_size": [1, 1, 28, 28]}}))
    monkeypatch.chdir(tmp_path)
    assert read_config(str(path))["dataset"]["root"] == str(tmp_path / "project" / "data" / "mnist")
    absolute = {"dataset": {"name": "mnist", "root": str(tmp_path / "x")}}
    assert with_dataset_root_from(absolute, path) == absolute
    assert with_dataset_root_from({"dataset": {"name": "digits"}}, path) == {"dataset": {"name": "digits"}}


def test_data_root_fills_a_dataset_without_one(tmp_path, monkeypatch):
    """--data-root (else NNCF_WCAM_DATA_ROOT) names an IDX dataset's folder when the config names none; a config's own root wins."""
    monkeypatch.delenv("NNCF_WCAM_DATA_ROOT", raising=False)
    assert read_config("mnist_int4_am")["dataset"] == {"name": "mnist"}
    assert read_config("mnist_int4_am", data_root=str(tmp_path))["dataset"]["root"] == str(tmp_path)
    monkeypatch.setenv("NNCF_WCAM_DATA_ROOT", str(tmp_path / "env"))
    assert read_config("mnist_int4_am")["dataset"]["root"] == str(tmp_path / "env")
    assert read_config("mnist_int4_am", data_root=str(tmp_path))["dataset"]["root"] == str(tmp_path)
    own = {"dataset": {"name": "mnist", "root": "/data/mnist"}}
    assert with_data_root(own, str(tmp_path)) == own
    assert with_data_root({"dataset": {"name": "digits"}}, str(tmp_path)) == {"dataset": {"name": "digits"}}


def test_nncf_torch_notice_is_hidden_only_for_the_tested_combination():
    from nncf.common.logging import nncf_logger

    assert is_tested_combination("2.19.0", "2.13.0+cpu")
    for nncf_version, torch_version in (("2.19.0", "2.9.1"), ("2.19.0", "2.12.0"), ("3.4.0", "2.13.0")):
        assert not is_tested_combination(nncf_version, torch_version)
    hidden = any(isinstance(f, TestedTorchNoticeFilter) for f in nncf_logger.filters)
    assert hidden == is_tested_combination(metadata.version("nncf"), metadata.version("torch"))
