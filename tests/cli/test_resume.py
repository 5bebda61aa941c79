"""A compress run interrupted after epoch 1 and resumed ends bit-exactly where an uninterrupted run ends."""


import pytest
import torch

import nncf_wcam  # noqa: F401  (must precede nncf.torch)
from nncf_wcam import cli
from nncf_wcam.cli import training_run
from nncf_wcam.cli.errors import EXIT_INTERRUPTED
from nncf_wcam.core.training import train_teacher
from nncf_wcam.nncf2.checkpoint import build_model
from nncf_wcam.nncf2.checkpoint import load_checkpoint
from nncf_wcam.nncf2.checkpoint import model_spec
from nncf_wcam.nncf2.checkpoint import save_teacher
from nncf_wcam.zoo.datasets import load_dataset

from conftest import TINY


@pytest.fixture(scope="module")
def teacher_file(tmp_path_factory):
    spec = model_spec({"model": "small_cnn", "model_kwargs": {"width": 4}}, 1, 10)
    data = load_dataset({"name": "digits", "image_size": 8})
    model = train_teacher(build_model(spec), data.train, epochs=1, batch_size=32)
    return save_teacher(tmp_path_factory.mktemp("teacher") / "teacher.pt", model, spec)


def _args(output, teacher):
    # 2 epochs (the config's), 3 steps each; the config has stochastic channel drop (the matcher's own RNG).
    return ["compress", "--config", str(TINY), "--output", str(output), "--teacher", str(teacher), "--max-steps", "3", "--eval-samples", "4", "--quiet"]


@pytest.fixture(scope="module")
def straight(tmp_path_factory, teacher_file):
    """The uninterrupted run."""
    output = tmp_path_factory.mktemp("straight") / "run"
    assert cli.main(_args(output, teacher_file)) == 0
    return output


def test_interrupted_and_resumed_run_equals_uninterrupted(tmp_path, teacher_file, straight, monkeypatch):
    interrupted = tmp_path / "interrupted"

    real_save = training_run.save_checkpoint

    def save_then_interrupt(path, **fields):
        real_save(path, **fields)
        if fields["epoch"] == 1:
            raise KeyboardInterrupt  # as if Ctrl-C hit right after the epoch-1 checkpoint

    monkeypatch.setattr(training_run, "save_checkpoint", save_then_interrupt)
    assert cli.main(_args(interrupted, teacher_file)) == EXIT_INTERRUPTED
    monkeypatch.undo()
    assert load_checkpoint(interrupted / "checkpoint.pt")["epoch"] == 1
    assert not (interrupted / "report.json").exists() and not (interrupted / "ir").exists()

    # Scramble every global RNG: the resumed run must restore what it needs.
    torch.manual_seed(12345)
    torch.rand(100)
    # `--resume` alone: the run's config, teacher, epochs, steps and evaluation samples come from its
    # run.json, and the teacher it has is never trained again.
    monkeypatch.setattr(training_run, "train_teacher", lambda *a, **k: pytest.fail("the resumed run trained a teacher"))
    assert cli.main(["compress", "--output", str(interrupted), "--resume", "--quiet"]) == 0
    monkeypatch.undo()

    a = load_checkpoint(straight / "checkpoint.pt")
    b = load_checkpoint(interrupted / "checkpoint.pt")
    assert a["epoch"] == b["epoch"] == 2
    assert a["state_dict"].keys() == b["state_dict"].keys()
    different = [k for k in a["state_dict"] if not torch.equal(a["state_dict"][k], b["state_dict"][k])]
    assert not different, f"tensors differ after resume: {different}"
    assert a["history"] == b["history"]  # every step's losses, bit for bit
    assert a["compression_state"] == b["compression_state"]  # drop-mask generator included
    for group_a, group_b in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert all(torch.equal(group_a[k], group_b[k]) for k in group_a)
    assert torch.equal(a["rng"]["torch"], b["rng"]["torch"])
    assert (interrupted / "report.json").is_file() and (interrupted / "ir" / "model.xml").is_file()


def test_resume_before_the_teacher_finished_trains_it_once(tmp_path, monkeypatch):
    """A run interrupted while its teacher trained has no teacher yet: --resume trains it, with the run's teacher epochs."""
    output = tmp_path / "run"
    args = ["compress", "--config", str(TINY), "--output", str(output), "--teacher-epochs", "1", "--epochs", "1", "--max-steps", "1", "--eval-samples", "4", "--quiet"]
    real_train = training_run.train_teacher

    def interrupted_training(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(training_run, "train_teacher", interrupted_training)
    assert cli.main(args) == EXIT_INTERRUPTED
    assert (output / "run.json").is_file() and not (output / "teacher.pt").exists()
    calls = []
    monkeypatch.setattr(training_run, "train_teacher", lambda *a, **k: calls.append(k["epochs"]) or real_train(*a, **k))
    assert cli.main(["compress", "--output", str(output), "--resume", "--quiet"]) == 0
    assert calls == [1] and (output / "teacher.pt").is_file()


def test_restore_brings_back_the_attribution_teacher(tmp_path, straight):
    """The restored attribution_matching teacher is the saved teacher, not the student's weights."""
    from nncf_wcam.nncf2.attribution_matching import attribution_controller
    from nncf_wcam.nncf2.checkpoint import restore_compressed_model

    checkpoint = load_checkpoint(straight / "checkpoint.pt")
    ctrl, _, teacher = restore_compressed_model(checkpoint, log_dir=tmp_path)
    restored = attribution_controller(ctrl).teacher.state_dict()
    saved = checkpoint["teacher_state_dict"]
    assert all(torch.equal(restored[k], saved[k]) for k in saved)
    assert all(torch.equal(teacher.state_dict()[k], saved[k]) for k in saved)
    student = checkpoint["state_dict"]
    assert not torch.equal(student["features.0.weight"], saved["features.0.weight"])  # the student did move
