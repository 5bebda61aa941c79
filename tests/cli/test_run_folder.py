"""compress never writes over someone else's files: a folder without a run must hold nothing foreign, each of our
names must have its kind, a foreign ir/ is refused before training, and naive/ held by another run is refused."""

import json
import os
import shutil
import stat

import pytest

from nncf_wcam import cli
from nncf_wcam.io.folder_lock import FolderLock

from conftest import FAST
from conftest import TINY


def _refused(capsys, output, *extra) -> str:
    assert cli.main(["compress", "--config", str(TINY), "--output", str(output), *FAST, *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    return err[0]


def _files(folder):
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None) for p in sorted(folder.rglob("*"))}


@pytest.mark.parametrize("name", ["report.json", "attribution_maps.png", "teacher.pt", "notes.txt", ".hidden"])
def test_a_folder_of_someone_elses_files_is_refused_before_any_work(tmp_path, capsys, name):
    output = tmp_path / "theirs"
    output.mkdir()
    (output / name).write_text("the user's own")
    before = _files(output)
    line = _refused(capsys, output)
    assert "which nncf-wcam did not write" in line and name in line or "already holds a run" in line
    assert _files(output) == before


@pytest.mark.parametrize(
    "make, words",
    [
        (lambda o: (o / "report.json").mkdir(), "is a folder, where nncf-wcam keeps a file"),
        (lambda o: (o / "checkpoint.pt").mkdir(), "is a folder, where nncf-wcam keeps a file"),
        (lambda o: (o / "nncf_logs").write_text("x"), "is a file where nncf-wcam writes a folder"),
        (lambda o: (o / "naive").write_text("x"), "is a file where nncf-wcam writes a folder"),
        (lambda o: ((o / "ir").mkdir(), (o / "ir" / "model.xml").write_text("theirs")), "holds ir, which nncf-wcam did not write"),
    ],
    ids=["report-is-a-folder", "checkpoint-is-a-folder", "nncf_logs-is-a-file", "naive-is-a-file", "foreign-ir"],
)
def test_our_names_of_the_wrong_kind_are_refused_before_any_work(tmp_path, capsys, make, words):
    output = tmp_path / "run"
    output.mkdir()
    make(output)
    before = _files(output)
    assert words in _refused(capsys, output)
    assert _files(output) == before


def _files_or_kinds(folder):
    return {p.name: (p.read_bytes() if p.is_file() and not p.is_symlink() else os.path.lexists(p)) for p in sorted(folder.iterdir()) if not stat.S_ISFIFO(p.lstat().st_mode)}


@pytest.mark.parametrize(
    "name, make, words",
    [
        ("checkpoint.pt", os.mkfifo, "is a FIFO"),
        ("checkpoint.pt", lambda path: os.symlink("/nonexistent/checkpoint.pt", path), "which does not exist"),
        ("teacher.pt", os.mkfifo, "is a FIFO"),
        ("run.json", lambda path: os.symlink("gone.json", path), "which does not exist"),
    ],
    ids=["checkpoint-fifo", "checkpoint-dangling-link", "teacher-fifo", "run-json-dangling-link"],
)
def test_a_resume_over_a_checkpoint_that_is_not_a_file_is_refused(tmp_path, capsys, tiny_run, name, make, words):
    """Not "no checkpoint yet" (a silent restart from epoch 0 over the user's FIFO or link): one line, nothing touched."""
    output = tmp_path / "run"
    shutil.copytree(tiny_run, output)
    (output / name).unlink()
    make(output / name)
    before = _files_or_kinds(output)
    assert cli.main(["compress", "--output", str(output), "--resume", "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and name in err[0] and words in err[0], err
    assert _files_or_kinds(output) == before


def test_an_output_below_a_file_is_one_line(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    assert "is a file, not a folder" in _refused(capsys, tmp_path / "file" / "run")


def test_naive_held_by_another_run_is_refused(tmp_path, capsys):
    output = tmp_path / "run"
    with FolderLock(output / "naive", command="another run in naive"):
        assert "another run in naive" in _refused(capsys, output, "--compare-naive")
    assert not (output / "run.json").exists()


def test_a_folder_holding_only_the_lock_of_a_killed_run_is_taken(tmp_path):
    output = tmp_path / "run"
    output.mkdir()
    (output / ".nncf-wcam.lock").write_text(json.dumps({"pid": 1, "host": os.uname().nodename, "command": "old"}))
    assert cli.main(["compress", "--config", str(TINY), "--output", str(output), *FAST, "--epochs", "1"]) == 0
    assert (output / "checkpoint.pt").is_file()
