"""run.json: a fresh run's settings, and what --resume accepts and refuses."""

import argparse
import json

import pytest
import torch

from nncf_wcam.cli.run_settings import RunSettingsError
from nncf_wcam.cli.run_settings import check_checkpoint
from nncf_wcam.cli.run_settings import fresh_settings
from nncf_wcam.cli.run_settings import read_run_settings
from nncf_wcam.cli.run_settings import resumed_settings
from nncf_wcam.cli.run_settings import state_digest
from nncf_wcam.cli.run_settings import write_run_settings

CONFIG = {"epochs": 8, "seed": 3, "batch_size": 16, "optimizer": {"type": "Adam", "base_lr": 0.001}, "dataset": {"name": "digits"}, "compression": []}


def _args(**given):
    flags = dict(config="c.json", teacher=None, compare_naive=False, epochs=None, teacher_epochs=None, seed=None, max_steps=None, device=None, eval_samples=None)
    flags.update(given)
    return argparse.Namespace(**flags)


def test_fresh_settings_take_flags_over_the_config_over_defaults():
    settings = fresh_settings(_args(epochs=2), CONFIG, "c.json")
    assert (settings.epochs, settings.seed, settings.batch_size, settings.teacher_epochs, settings.eval_samples, settings.device) == (2, 3, 16, 6, 64, "CPU")
    assert settings.teacher == {"source": "trained", "path": None, "sha256": None}


def test_resume_takes_the_runs_settings_and_refuses_conflicting_flags(tmp_path):
    write_run_settings(tmp_path, fresh_settings(_args(), CONFIG, "c.json"))
    saved = read_run_settings(tmp_path)
    assert resumed_settings(saved, _args(config=None), None, None).epochs == 8  # not the default 4
    assert resumed_settings(saved, _args(config=None, epochs=8, seed=3), None, None).seed == 3  # agreeing flags are fine
    reordered = json.loads(json.dumps(CONFIG, sort_keys=True))
    assert resumed_settings(saved, _args(), reordered, "copy.json").config == CONFIG  # the content counts, not the file
    with pytest.raises(RunSettingsError, match=r"^--epochs 4 conflicts with this run's epochs 8; drop the flag or start a new --output\.$"):
        resumed_settings(saved, _args(epochs=4), None, None)
    with pytest.raises(RunSettingsError, match="--config other.json differs from the config this run was started with"):
        resumed_settings(saved, _args(), {**CONFIG, "batch_size": 32}, "other.json")
    with pytest.raises(RunSettingsError, match="--compare-naive conflicts"):
        resumed_settings(saved, _args(compare_naive=True), None, None)
    assert resumed_settings(saved, _args(device="AUTO", eval_samples=8), None, None).eval_samples == 8  # measurement-only flags may change


def test_run_file_versions_and_damage_are_one_line_errors(tmp_path):
    (tmp_path / "run.json").write_text(json.dumps({"format": "nncf_wcam.run", "version": 99}))
    with pytest.raises(RunSettingsError, match="run-file version 99"):
        read_run_settings(tmp_path)
    (tmp_path / "run.json").write_text("{")
    with pytest.raises(RunSettingsError, match="Cannot read"):
        read_run_settings(tmp_path)
    assert read_run_settings(tmp_path / "none") is None


def test_teacher_digest_sees_one_changed_value():
    state = {"w": torch.arange(6.0).reshape(2, 3), "n": torch.tensor(5)}
    same = {"n": torch.tensor(5), "w": torch.arange(6.0).reshape(2, 3)}
    changed = {"w": torch.arange(6.0).reshape(2, 3), "n": torch.tensor(6)}
    assert state_digest(state) == state_digest(same) != state_digest(changed)


def test_a_checkpoint_of_another_run_is_refused():
    """A checkpoint trained with another optimizer type is refused in one line (its optimizer state would not load)."""
    settings = fresh_settings(_args(), CONFIG, "c.json")
    teacher = {"w": torch.ones(2)}
    checkpoint = {"config": {**CONFIG, "optimizer": {"type": "SGD", "base_lr": 0.1}}, "dataset": CONFIG["dataset"], "seed": 3, "epochs": 8, "teacher_state_dict": teacher}
    with pytest.raises(RunSettingsError, match=r'was trained with optimizer \{"type": "SGD", "base_lr": 0.1\}, but this run\'s is \{"type": "Adam"'):
        check_checkpoint(checkpoint, "ckpt.pt", settings=settings, config=CONFIG, teacher_sha256=state_digest(teacher))
    checkpoint["config"] = CONFIG
    check_checkpoint(checkpoint, "ckpt.pt", settings=settings, config=CONFIG, teacher_sha256=state_digest(teacher))  # its own run: fine
    with pytest.raises(RunSettingsError, match="another teacher"):
        check_checkpoint(checkpoint, "ckpt.pt", settings=settings, config=CONFIG, teacher_sha256=state_digest({"w": torch.zeros(2)}))
    with pytest.raises(RunSettingsError, match="batch size 16, but this run's is 32"):
        settings.batch_size = 32
        check_checkpoint(checkpoint, "ckpt.pt", settings=settings, config=CONFIG, teacher_sha256=state_digest(teacher))


def test_a_run_from_before_run_json_resumes_with_its_checkpoints_settings():
    from nncf_wcam.cli.run_settings import settings_from_checkpoint

    teacher = {"w": torch.ones(2)}
    checkpoint = {"config": {**CONFIG, "log_dir": "x/nncf_logs"}, "seed": 3, "epochs": 8, "max_steps": 2, "teacher_state_dict": teacher}
    settings = settings_from_checkpoint(checkpoint, "c.json", compare_naive=True)
    assert (settings.epochs, settings.seed, settings.max_steps, settings.batch_size, settings.compare_naive) == (8, 3, 2, 16, True)
    assert "log_dir" not in settings.config and settings.teacher["sha256"] == state_digest(teacher)
    check_checkpoint(checkpoint, "ckpt.pt", settings=settings, config=CONFIG, teacher_sha256=settings.teacher["sha256"])
