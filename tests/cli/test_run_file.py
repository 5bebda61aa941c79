"""--resume and run.json: every field is checked, an edited config is caught by its sha256, and a checkpoint is
compared with the config the run actually uses. Each refusal is one line, exit code 2, and changes no file."""

import json
import shutil

import pytest

from nncf_wcam import cli
from nncf_wcam.cli.run_settings import config_digest

CASES = {
    "epochs-float": ("epochs", 2.0),
    "epochs-string": ("epochs", "abc"),
    "epochs-zero": ("epochs", 0),
    "epochs-negative": ("epochs", -4),
    "teacher-epochs-word": ("teacher_epochs", "six"),
    "teacher-epochs-negative": ("teacher_epochs", -1),
    "seed-huge": ("seed", 2**70),
    "seed-negative": ("seed", -1),
    "device-number": ("device", 5),
    "config-list": ("config", []),
    "max-steps-zero": ("max_steps", 0),
    "batch-size-zero": ("batch_size", 0),
    "compare-naive-string": ("compare_naive", "yes"),
    "teacher-source": ("teacher", {"source": "elsewhere", "path": None, "sha256": None}),
    "version-true": ("version", True),
    "version-negative": ("version", -3),
    "missing-field": ("eval_samples", None),
}


@pytest.fixture
def run_copy(tiny_run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(tiny_run, copy)
    return copy


def _files(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _resume_refused(run, capsys) -> str:
    before = _files(run)
    assert cli.main(["compress", "--output", str(run), "--resume", "--quiet"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in lines[0], lines
    assert _files(run) == before
    return lines[0]


def _edit(run, change):
    path = run / "run.json"
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize("case", list(CASES))
def test_a_damaged_run_file_is_refused(run_copy, capsys, case):
    key, value = CASES[case]
    _edit(run_copy, lambda data: data.pop(key) if value is None else data.__setitem__(key, value))
    assert "run.json" in _resume_refused(run_copy, capsys)


def test_a_5000_digit_number_is_refused(run_copy, capsys):
    path = run_copy / "run.json"
    text = path.read_text()
    path.write_text(text.replace('"seed": 0', '"seed": ' + "9" * 5000, 1))
    assert "run.json" in _resume_refused(run_copy, capsys)


def test_an_edited_config_is_caught_by_its_sha256(run_copy, capsys):
    _edit(run_copy, lambda data: data["config"]["dataset"].__setitem__("seed", 7))
    assert "no longer matches the sha256" in _resume_refused(run_copy, capsys)


@pytest.mark.parametrize("change", [("dataset", "seed", 7), ("dataset", "test_fraction", 0.5), (None, "freeze_bn_epochs", 1)], ids=["dataset-seed", "test-fraction", "freeze-bn"])
def test_a_consistently_edited_config_is_caught_by_the_checkpoint(run_copy, capsys, change):
    """The config and its sha256 edited together (and the fields copied from it): the checkpoint was trained with another config."""
    block, key, value = change

    def edit(data):
        (data["config"][block] if block else data["config"])[key] = value
        data["dataset"] = data["config"].get("dataset")
        data["config_sha256"] = config_digest(data["config"])

    _edit(run_copy, edit)
    assert "was trained with" in _resume_refused(run_copy, capsys)


def test_max_steps_edited_is_caught_by_the_checkpoint(run_copy, capsys):
    _edit(run_copy, lambda data: data.__setitem__("max_steps", 5))
    assert "max steps per epoch" in _resume_refused(run_copy, capsys)


def test_a_run_file_that_is_a_folder_is_refused(run_copy, capsys):
    (run_copy / "run.json").unlink()
    (run_copy / "run.json").mkdir()
    assert "run.json" in _resume_refused(run_copy, capsys)
