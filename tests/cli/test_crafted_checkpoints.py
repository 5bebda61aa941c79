"""Checkpoints that load (weights only) but were crafted or damaged: export and evaluate refuse each in one line,
exit code 2, before building anything large; a teacher file with NaN is blamed, not the learning rate."""

import copy

import pytest
import torch

from nncf_wcam import cli

from conftest import FAST
from conftest import TINY


def _mutate(data):
    def nan_teacher(d):
        name = next(iter(d["teacher_state_dict"]))
        d["teacher_state_dict"][name] = torch.full_like(d["teacher_state_dict"][name], float("nan"))

    def wrong_shapes(d):
        name = next(k for k, v in d["teacher_state_dict"].items() if v.dim() == 4)
        d["teacher_state_dict"][name] = torch.zeros(3, 3, 3, 3)

    def block(d, **keys):
        d["config"]["compression"][1].update(keys)

    return {
        "wrong-teacher-shapes": (wrong_shapes, "cannot be rebuilt"),
        "unknown-model": (lambda d: d["model"].__setitem__("name", "vgg99"), "Unknown model 'vgg99'"),
        "unknown-model-argument": (lambda d: d["model"]["kwargs"].__setitem__("depth", 3), "takes no argument 'depth'"),
        "terabyte-width": (lambda d: d["model"]["kwargs"].__setitem__("width", 200000), "width=200000 is out of bounds"),
        "huge-image-size": (lambda d: d["dataset"].__setitem__("image_size", 1400), "image_size 1400 is out of bounds"),
        "config-nncf-rejects": (lambda d: d["config"]["compression"].append({"algorithm": "no_such_algorithm"}), "cannot be rebuilt"),
        "garbage-compression-state": (lambda d: d.__setitem__("compression_state", {"x": 1}), "compression_state"),
        "state-dict-list": (lambda d: d.__setitem__("state_dict", [1, 2]), "not a mapping of names to tensors"),
        "logits-output-out-of-range": (lambda d: block(d, logits_output=5), "logits_output"),
        "nan-teacher": (nan_teacher, "NaN or infinite"),
        "epoch-word": (lambda d: d.__setitem__("epoch", "one"), "\"epoch\" is 'one'"),
        "negative-version": (lambda d: d.__setitem__("version", -3), "not a whole number"),
    }


CASES = _mutate(None)


@pytest.fixture(scope="module")
def checkpoint(tiny_run):
    return torch.load(tiny_run / "checkpoint.pt", weights_only=True)


@pytest.mark.parametrize("command", ["export", "evaluate"])
@pytest.mark.parametrize("case", list(CASES))
def test_a_crafted_checkpoint_is_refused_in_one_line(checkpoint, tmp_path, capsys, case, command):
    change, words = CASES[case]
    data = copy.deepcopy(checkpoint)
    change(data)
    path = tmp_path / "checkpoint.pt"
    torch.save(data, path)
    extra = ["--output", str(tmp_path / "ir")] if command == "export" else []
    assert cli.main([command, "--checkpoint", str(path), *extra, "--quiet"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and words in lines[0], lines
    assert not (tmp_path / "ir").exists()


def test_a_teacher_file_with_nan_is_blamed_not_the_learning_rate(checkpoint, tmp_path, capsys):
    teacher = {k: v.clone() for k, v in checkpoint["teacher_state_dict"].items()}
    name = next(iter(teacher))
    teacher[name][...] = float("inf")
    path = tmp_path / "teacher.pt"
    torch.save(teacher, path)
    assert cli.main(["compress", "--config", str(TINY), "--output", str(tmp_path / "run"), "--teacher", str(path), *FAST]) == 2
    line = capsys.readouterr().err.strip()
    assert "NaN or infinite" in line and "learning rate" not in line
