"""Hostile inputs: each case through the public API and through the CLI in a subprocess.

Every refusal must be one line on stderr, exit code 2, and leave every file outside our staging
area as it was. The CLI cases run in one subprocess (`_driver`, which calls `nncf_wcam.cli.main`
once per case with stderr captured) so that the whole suite stays within a minute; three cases
also go through `python -m nncf_wcam.cli` itself. Cleanup cases check that stale staging
leftovers of dead writers are removed (and said), and nothing else.

Run with -s to print the tally of cases and how each ended.
"""

import errno
import gzip
import hashlib
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import zlib
from argparse import Namespace
from pathlib import Path

import pytest
import torch

import nncf_wcam  # noqa: F401  (must precede nncf.torch)
from nncf_wcam import cli
from nncf_wcam.cli.configs import read_config
from nncf_wcam.cli.run_config import check_run_config
from nncf_wcam.core.training import NonFiniteLossError
from nncf_wcam.core.training import make_optimizer
from nncf_wcam.errors import NncfWcamError
from nncf_wcam.io.atomic import OutputFolderError
from nncf_wcam.io.atomic import atomic_directory
from nncf_wcam.io.atomic import atomic_torch_save
from nncf_wcam.io.staging import clean_stale_staging
from nncf_wcam.io.staging import file_staging_prefix
from nncf_wcam.io.staging import folder_staging_name
from nncf_wcam.io.staging import host_mark
from nncf_wcam.nncf2.checkpoint import load_checkpoint
from nncf_wcam.nncf2.checkpoint import model_spec
from nncf_wcam.nncf2.checkpoint import save_checkpoint
from nncf_wcam.nncf2.export import export_ir
from nncf_wcam.nncf2.training import compress as create_compressed
from nncf_wcam.nncf2.training import load_config
from nncf_wcam.nncf2.training import train_epoch
from nncf_wcam.schema.validation import logits_output_of
from nncf_wcam.zoo.datasets import load_dataset
from nncf_wcam.zoo.idx import read_idx

from conftest import ROOT
from conftest import TINY
from conftest import rerun_without_root_powers

FAST = ["--teacher-epochs", "1", "--max-steps", "2", "--eval-samples", "8", "--quiet"]
STAGING = re.compile(r"^\.[^/]+\.(tmp|old)-[0-9a-f]{8}-\d+-[0-9a-f]+$|^\.[^/]+\.[0-9a-f]{8}-\d+-\w+\.tmp$")
TALLY = {}  # case -> how it ended, printed at the end (-s)


def tiny(**changes) -> dict:
    data = json.loads(TINY.read_text())
    for key, value in changes.items():
        data[key] = value
    return data


def with_block(algorithm: str, **keys) -> dict:
    """tests/configs/tiny.json with one key of a plugin block changed (or a saliency_guided block added)."""
    data = tiny()
    blocks = [b for b in data["compression"] if b["algorithm"] != algorithm]
    blocks.append({"algorithm": algorithm, **keys})
    data["compression"] = blocks
    return data


def nested(depth: int) -> str:
    return json.dumps(tiny())[:-1] + ', "deep": ' + "[" * depth + "]" * depth + "}"


# --------------------------------------------------------------------------- config cases
# id -> (config: dict or raw JSON text, extra CLI arguments, a phrase the one line must hold)
CONFIG_CASES = {
    "epochs-string": (tiny(epochs="two"), [], '"epochs"'),
    "epochs-null": (tiny(epochs=None), [], '"epochs"'),
    "epochs-1e400": (json.dumps(tiny()).replace('"epochs": 2', '"epochs": 1e400'), [], '"epochs"'),
    "epochs-0": (tiny(epochs=0), [], '"epochs"'),
    "epochs-negative": (tiny(epochs=-3), [], '"epochs"'),
    "freeze-bn-epochs-negative": (tiny(freeze_bn_epochs=-1), [], '"freeze_bn_epochs"'),
    "freeze-bn-epochs-string": (tiny(freeze_bn_epochs="last"), [], '"freeze_bn_epochs"'),
    "batch-size-0": (tiny(batch_size=0), [], '"batch_size"'),
    "seed-string": (tiny(seed="abc"), [], '"seed"'),
    "optimizer-type-5": (tiny(optimizer={"type": 5}), [], "optimizer.type"),
    "optimizer-rmsprop": (tiny(optimizer={"type": "RMSprop"}), [], "optimizer.type"),
    "lr-string": (tiny(optimizer={"type": "Adam", "base_lr": "fast"}), [], "optimizer.base_lr"),
    "lr-nan": (json.dumps(tiny()).replace('"base_lr": 0.001', '"base_lr": NaN'), [], "optimizer.base_lr"),
    "schedule-wild": (tiny(optimizer={"type": "Adam", "schedule_type": "wild"}), [], "schedule_type"),
    "model-kwargs-list": (tiny(model_kwargs=[4]), [], "model_kwargs"),
    "width-0": (tiny(model_kwargs={"width": 0}), [], "model_kwargs.width"),
    "unknown-model": (tiny(model="vgg99"), [], "Unknown model"),
    "image-size-0": (tiny(dataset={"name": "digits", "image_size": 0}), [], "dataset.image_size"),
    "test-fraction-0": (tiny(dataset={"name": "digits", "image_size": 8, "test_fraction": 0}), [], "test_fraction"),
    "test-fraction-1": (tiny(dataset={"name": "digits", "image_size": 8, "test_fraction": 1}), [], "test_fraction"),
    "input-batch-0": (tiny(input_info={"sample_size": [0, 1, 8, 8]}), [], "sample_size"),
    "input-batch-2e6": (tiny(input_info={"sample_size": [2000000, 1, 8, 8]}), [], "batch 2000000 is out of bounds"),
    "input-info-two-entries": (tiny(input_info=[{"sample_size": [1, 1, 8, 8]}] * 2), [], "lists 2 inputs"),
    "input-info-long": (tiny(input_info={"sample_size": [1, 1, 8, 8], "type": "long"}), [], "input_info\".type"),
    "input-info-3d": (tiny(input_info={"sample_size": [1, 8, 8]}), [], "sample_size"),
    "lr-1e30": (tiny(optimizer={"type": "SGD", "base_lr": 1e30}), [], "optimizer.base_lr"),
    "lr-1e300": (tiny(optimizer={"type": "Adam", "base_lr": 1e300}), [], "optimizer.base_lr"),
    "weight-decay-1e300": (tiny(optimizer={"type": "Adam", "base_lr": 0.001, "weight_decay": 1e300}), [], "optimizer.weight_decay"),
    "layers-empty": (with_block("attribution_matching", layers=[]), [], "matches nothing"),
    "config-2MiB": (tiny(padding="x" * (2 * 1024**2)), [], "larger than 1 MiB"),
    "logits-output-7": (with_block("attribution_matching", layers=["features.9"], logits_output=7), [], "logits_output"),
    "sg-logits-output-7": (with_block("saliency_guided", logits_output=7), [], "logits_output"),
    "sg-seed-2**70": (with_block("saliency_guided", seed=2**70), [], "saliency_guided.seed"),
    "am-weight-1e39": (with_block("attribution_matching", layers=["features.9"], weight=1e39), [], "attribution_matching.weight"),
    "sg-weight-1e39": (with_block("saliency_guided", weight=1e39), [], "saliency_guided.weight"),
    "layer-weights-1e39": (with_block("attribution_matching", layers=["features.9"], layer_weights=[1e39]), [], "layer_weights"),
    "sg-twice": (tiny(compression=[{"algorithm": "saliency_guided"}, {"algorithm": "saliency_guided"}]), [], "appears 2 times"),
    "nesting-900": (nested(900), [], "nests"),
    "nesting-100000": (nested(100000), [], "nests"),
    "cli-seed-2**70": (tiny(), ["--seed", str(2**70)], "--seed"),
    "cli-eval-samples-0": (tiny(), ["--eval-samples", "0"], "--eval-samples"),
    "cli-eval-samples-negative": (tiny(), ["--eval-samples", "-5"], "--eval-samples"),
}


def _write_config(folder: Path, config) -> Path:
    path = folder / "config.json"
    path.write_text(config if isinstance(config, str) else json.dumps(config))
    return path


def _api_config_refusal(config_path: Path, extra: list, folder: Path) -> str:
    """The public API's answer: the config file read as the command line reads it, check_run_config, then NNCF's and
    the plugin's validation (load_config). Only the product's own one-line errors count as a refusal."""
    try:
        raw = read_config(str(config_path))
    except NncfWcamError as e:
        return str(e)
    options = dict(zip(extra[::2], extra[1::2]))
    args = Namespace(
        seed=int(options["--seed"]) if "--seed" in options else None,
        eval_samples=int(options.get("--eval-samples", 8)),
        output=str(folder / "out"),
    )
    try:
        check_run_config(raw, args)
        load_config(raw)
    except NncfWcamError as e:
        return str(e)
    pytest.fail(f"the API accepted {json.dumps(raw)[:80]} {extra}")


# --------------------------------------------------------------------------- data cases


def _idx_header(dtype: int, shape: tuple) -> bytes:
    return bytes([0, 0, dtype, len(shape)]) + struct.pack(f">{len(shape)}I", *shape)


def _gzip_bomb(path: Path, announced: tuple, body_mb: int) -> Path:
    """A .gz whose IDX header announces `announced` and whose body expands to `body_mb` MB of zeros."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)  # 31: gzip container
    chunks = [compressor.compress(_idx_header(0x08, announced))]
    zeros = bytes(1 << 20)
    chunks += [compressor.compress(zeros) for _ in range(body_mb)]
    chunks.append(compressor.flush())
    path.write_bytes(b"".join(chunks))
    return path


def _mnist_folder(folder: Path, images: bytes, labels: bytes = None) -> Path:
    root = folder / "mnist"
    root.mkdir()
    (root / "t10k-images-idx3-ubyte.gz").write_bytes(images)
    labels = labels or gzip.compress(_idx_header(0x08, (10,)) + bytes(10))
    (root / "t10k-labels-idx1-ubyte.gz").write_bytes(labels)
    return root


def data_bomb_small_header(folder):  # 10 images announced, 200 MB of zeros inside
    root = folder / "mnist"
    root.mkdir()
    _gzip_bomb(root / "t10k-images-idx3-ubyte.gz", (10, 28, 28), 200)
    (root / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(_idx_header(0x08, (10,)) + bytes(10)))
    return root


def data_bomb_big_header(folder):  # 3 GB announced: refused at the header
    return _mnist_folder(folder, gzip.compress(_idx_header(0x08, (4_000_000, 28, 28)) + bytes(1000)))


def data_255_dims(folder):
    return _mnist_folder(folder, gzip.compress(_idx_header(0x08, (1,) * 255) + bytes(1)))


DATA_CASES = {
    "gzip-bomb-small-header": (data_bomb_small_header, "holds more data bytes"),
    "gzip-bomb-3gb-header": (data_bomb_big_header, "nothing was decompressed"),
    "idx-255-dims": (data_255_dims, "255 dimensions"),
}


# --------------------------------------------------------------------------- checkpoint and export fixtures


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A real tiny compressed model (tests/configs/tiny.json: int8 + WCAM on 8 x 8 digits) and its checkpoint."""
    folder = tmp_path_factory.mktemp("hostile_run")
    raw = tiny()
    raw["log_dir"] = str(folder / "nncf_logs")
    (folder / "nncf_logs").mkdir()
    data = load_dataset(raw["dataset"])
    spec = model_spec(raw, 1, 10)
    torch.manual_seed(0)
    from nncf_wcam.nncf2.checkpoint import build_model

    model = build_model(spec)
    teacher_state = {k: v.clone() for k, v in model.state_dict().items()}
    ctrl, compressed = create_compressed(model, load_config(raw), data.train, batch_size=32)
    optimizer = make_optimizer(compressed.parameters(), raw["optimizer"])
    checkpoint = folder / "checkpoint.pt"
    save_checkpoint(
        checkpoint, config=raw, spec=spec, compression_ctrl=ctrl, model=compressed, teacher_state_dict=teacher_state,
        optimizer=optimizer, epoch=1, epochs=1, seed=0, history=[], dataset=raw["dataset"],
    )
    return Namespace(ctrl=ctrl, model=compressed, raw=raw, data=data, checkpoint=checkpoint, samples=data.test.tensors[0][:8])


def _evil_checkpoint(folder: Path) -> Path:
    path = folder / "evil.pt"
    torch.save({"format": "nncf_wcam.checkpoint", "model": torch.nn.Linear(1, 1)}, path)  # a pickled module
    return path


def _checkpoint_without_keys(folder: Path, tiny_run) -> Path:
    data = load_checkpoint(tiny_run.checkpoint)
    del data["teacher_state_dict"], data["optimizer"]
    path = folder / "partial.pt"
    torch.save(data, path)
    return path


def _checkpoint_string_version(folder: Path, tiny_run) -> Path:
    data = load_checkpoint(tiny_run.checkpoint)
    data["version"] = "1"
    path = folder / "strver.pt"
    torch.save(data, path)
    return path


def _not_torch(folder: Path, _tiny_run=None) -> Path:
    path = folder / "garbage.pt"
    path.write_bytes(b"PK\x03\x04 not a zip at all")
    return path


CHECKPOINT_CASES = {
    "pickled-module": (lambda folder, run: _evil_checkpoint(folder), "loads weights only"),
    "missing-keys": (_checkpoint_without_keys, "lacks teacher_state_dict, optimizer"),
    "string-version": (_checkpoint_string_version, "not a whole number"),
    "not-a-torch-file": (_not_torch, "Cannot read Checkpoint"),
}


def _foreign_folder(folder: Path) -> Path:
    """Someone's folder that happens to hold a manifest.json is not replaced by an export."""
    target = folder / "web_extension"
    (target / "sub").mkdir(parents=True)
    (target / "manifest.json").write_text('{"name": "x"}')
    (target / "important.txt").write_text("do not lose me")
    (target / "sub" / "data.csv").write_text("a,b\n1,2\n")
    return target


def _our_export_plus_a_file(folder: Path) -> Path:
    target = folder / "ir_plus"
    target.mkdir()
    (target / "manifest.json").write_text(json.dumps({"producer": "nncf_wcam", "manifest_version": 1}))
    (target / "model.xml").write_text("<net/>")
    (target / "notes.txt").write_text("mine")
    return target


def _dangling_link(folder: Path) -> Path:
    link = folder / "ir_link"
    link.symlink_to(folder / "does_not_exist")
    return link


def _a_file(folder: Path) -> Path:
    path = folder / "ir_file"
    path.write_text("a file, not a folder")
    return path


EXPORT_CASES = {
    "foreign-manifest-folder": (_foreign_folder, "not an earlier export by nncf-wcam"),
    "our-manifest-plus-a-file": (_our_export_plus_a_file, "notes.txt"),
    "dangling-symlink": (_dangling_link, "does not exist"),
    "output-is-a-file": (_a_file, "not a folder"),
}


# --------------------------------------------------------------------------- helpers


def snapshot(folder: Path) -> dict:
    """Every file and link under `folder` (staging names of ours excepted): path -> content hash or link target."""
    files = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            path = Path(dirpath) / name
            if STAGING.match(name):
                continue
            rel = str(path.relative_to(folder))
            if path.is_symlink():
                files[rel] = "link:" + os.readlink(path)
            else:
                files[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return files


def one_line_error(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr[-2000:]
    assert "Traceback" not in stderr
    return lines[0]


def _driver(cases: dict, env_extra: dict = None) -> dict:
    """Runs `cli.main(argv)` for each case in one fresh process; returns {id: (exit code, stderr)}."""
    script = (
        "import contextlib, io, json, sys\n"
        "from nncf_wcam import cli\n"
        "cases = json.loads(sys.stdin.read())\n"
        "results = {}\n"
        "for name, argv in cases.items():\n"
        "    err = io.StringIO()\n"
        "    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):\n"
        "        code = cli.main(argv)\n"
        "    results[name] = [code, err.getvalue()]\n"
        "print(json.dumps(results))\n"
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""), **(env_extra or {}))
    result = subprocess.run([sys.executable, "-c", script], input=json.dumps(cases), capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- the public API


@pytest.mark.parametrize("case", list(CONFIG_CASES))
def test_api_refuses_config(case, tmp_path):
    config, extra, phrase = CONFIG_CASES[case]
    config_path = _write_config(tmp_path, config)
    before = snapshot(tmp_path)
    message = _api_config_refusal(config_path, extra, tmp_path)
    assert "\n" not in message and len(message) < 400, message
    assert phrase.strip('"') in message, message
    assert snapshot(tmp_path) == before
    TALLY[f"config/{case} (API)"] = "refused: " + message[:70]


@pytest.mark.parametrize("case", list(DATA_CASES))
def test_api_refuses_data(case, tmp_path):
    make, phrase = DATA_CASES[case]
    root = make(tmp_path)
    before = snapshot(tmp_path)
    with pytest.raises(ValueError) as error:
        read_idx(root / "t10k-images-idx3-ubyte.gz")
    message = str(error.value)
    assert phrase in message and "\n" not in message and len(message) < 400, message
    assert snapshot(tmp_path) == before
    TALLY[f"data/{case} (API)"] = "refused: " + message[-70:]


@pytest.mark.parametrize("case", list(CHECKPOINT_CASES))
def test_api_refuses_checkpoint(case, tmp_path, tiny_run):
    make, phrase = CHECKPOINT_CASES[case]
    path = make(tmp_path, tiny_run)
    with pytest.raises(ValueError) as error:
        load_checkpoint(path)
    message = str(error.value)
    assert phrase in message and "\n" not in message, message
    assert "weights_only=False" not in message and "will likely succeed" not in message
    TALLY[f"checkpoint/{case} (API)"] = "refused: " + message[-70:]


@pytest.mark.parametrize("case", list(EXPORT_CASES))
def test_api_refuses_export_folder(case, tmp_path, tiny_run):
    make, phrase = EXPORT_CASES[case]
    target = make(tmp_path)
    before = snapshot(tmp_path)
    with pytest.raises(OutputFolderError) as error:
        export_ir(tiny_run.ctrl, tiny_run.model, target, tiny_run.samples, config=tiny_run.raw)
    assert phrase in str(error.value) and "\n" not in str(error.value)
    assert snapshot(tmp_path) == before  # the foreign folder keeps important.txt and sub/data.csv
    TALLY[f"export/{case} (API)"] = "refused: " + str(error.value)[-70:]


def test_api_stops_at_the_first_non_finite_loss(tiny_run):
    """A learning rate of 1e30 blows the weights up after the first step: training stops at the next, naming it."""
    from torch.utils.data import DataLoader

    data = tiny_run.data
    optimizer = torch.optim.SGD(tiny_run.model.parameters(), lr=1e30)
    saved = {k: v.clone() for k, v in tiny_run.model.state_dict().items()}
    with pytest.raises(NonFiniteLossError) as error:
        train_epoch(tiny_run.ctrl, tiny_run.model, DataLoader(data.train, batch_size=32), optimizer, 0, 1, max_steps=5)
    message = str(error.value)
    assert re.search(r"The (task|compression) loss is (nan|inf|-inf) at step \d+ of epoch 1", message), message
    tiny_run.model.load_state_dict(saved)  # the fixture is shared
    TALLY["training/lr-1e30 (API)"] = "stopped: " + message[:70]


# --------------------------------------------------------------------------- the CLI, in a subprocess


def test_cli_refuses_every_hostile_input(tmp_path, tiny_run):
    """All config, data, checkpoint and export-folder cases through `cli.main` in a fresh process."""
    argvs, folders, phrases = {}, {}, {}
    for case, (config, extra, phrase) in CONFIG_CASES.items():
        folder = tmp_path / f"config-{case}"
        folder.mkdir()
        argvs[case] = ["compress", "--config", str(_write_config(folder, config)), "--output", str(folder / "out"), *FAST, *extra]
        folders[case], phrases[case] = folder, phrase
    for case, (make, phrase) in DATA_CASES.items():
        folder = tmp_path / f"data-{case}"
        folder.mkdir()
        root = make(folder)
        config = tiny(dataset={"name": "mnist", "root": str(root)}, input_info={"sample_size": [1, 1, 28, 28]})
        argvs[case] = ["compress", "--config", str(_write_config(folder, config)), "--output", str(folder / "out"), *FAST]
        folders[case], phrases[case] = folder, phrase
    for case, (make, phrase) in CHECKPOINT_CASES.items():
        folder = tmp_path / f"checkpoint-{case}"
        folder.mkdir()
        argvs[case] = ["export", "--checkpoint", str(make(folder, tiny_run)), "--output", str(folder / "ir")]
        folders[case], phrases[case] = folder, phrase
    for case, (make, phrase) in EXPORT_CASES.items():
        folder = tmp_path / f"export-{case}"
        folder.mkdir()
        argvs[case] = ["export", "--checkpoint", str(tiny_run.checkpoint), "--output", str(make(folder)), "--eval-samples", "8"]
        folders[case], phrases[case] = folder, phrase
    before = {case: snapshot(folder) for case, folder in folders.items()}
    results = _driver(argvs)
    failures = []
    for case, (code, stderr) in results.items():
        lines = [line for line in stderr.splitlines() if line.strip()]
        ok = code == 2 and len(lines) == 1 and "Traceback" not in stderr and phrases[case].strip('"') in lines[0]
        unchanged = snapshot(folders[case]) == before[case]
        if not (ok and unchanged):
            failures.append(f"{case}: exit {code}, unchanged {unchanged}, stderr {stderr[-400:]!r}")
        TALLY[f"{case} (CLI)"] = f"exit {code}: " + (lines[0][-70:] if lines else "")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("case", ["foreign-manifest-folder"])
def test_console_script_refuses(case, tmp_path, tiny_run):
    """`python -m nncf_wcam.cli` itself on the data-loss case (any case of the tables above can be named here)."""
    if case in EXPORT_CASES:
        target = EXPORT_CASES[case][0](tmp_path)
        argv = ["export", "--checkpoint", str(tiny_run.checkpoint), "--output", str(target)]
    elif case in CONFIG_CASES:
        argv = ["compress", "--config", str(_write_config(tmp_path, CONFIG_CASES[case][0])), "--output", str(tmp_path / "out"), *FAST]
    else:
        root = DATA_CASES[case][0](tmp_path)
        config = tiny(dataset={"name": "mnist", "root": str(root)}, input_info={"sample_size": [1, 1, 28, 28]})
        argv = ["compress", "--config", str(_write_config(tmp_path, config)), "--output", str(tmp_path / "out"), *FAST]
    before = snapshot(tmp_path)
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    result = subprocess.run([sys.executable, "-m", "nncf_wcam.cli", *argv], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 2, result.stderr[-2000:]
    line = one_line_error(result.stderr)
    assert line.startswith("nncf-wcam ")
    assert snapshot(tmp_path) == before
    TALLY[f"{case} (console script)"] = f"exit 2: {line[-70:]}"


def test_full_disk_is_one_line(tmp_path, monkeypatch, capsys):
    """ENOSPC while writing (injected into torch.save: no full disk to borrow here) ends in one line naming the path."""

    def full(obj, f, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", getattr(f, "name", None))

    monkeypatch.setattr(torch, "save", full)
    config_path = _write_config(tmp_path, tiny())
    code = cli.main(["compress", "--config", str(config_path), "--output", str(tmp_path / "out"), *FAST])
    line = one_line_error(capsys.readouterr().err)
    assert code == 2 and "No space left on device" in line and "Fix:" in line and str(tmp_path / "out") in line
    assert not any((tmp_path / "out").glob("*.pt"))
    TALLY["environment/full-disk (CLI in-process)"] = f"exit {code}: {line[-70:]}"


@pytest.mark.parametrize("case", ["read-only-output", "data-folder-without-x", "unreadable-idx", "unreadable-config"])
def test_permission_problems_are_one_line(case, tmp_path, capsys, request):
    """Run as a user that permission bits stop (under root: again in a child without root's powers)."""
    if rerun_without_root_powers(request):
        return
    config = tiny()
    output = tmp_path / "out"
    if case == "read-only-output":
        output.mkdir()
        output.chmod(0o555)
        phrase = "Permission denied"
    elif case == "unreadable-config":
        phrase = "Permission denied"
    else:
        root = _mnist_folder(tmp_path, gzip.compress(_idx_header(0x08, (10, 28, 28)) + bytes(7840)))
        config = tiny(dataset={"name": "mnist", "root": str(root)}, input_info={"sample_size": [1, 1, 28, 28]})
        if case == "data-folder-without-x":
            root.chmod(0o600)
            phrase = "chmod u+rx"
        else:
            (root / "t10k-images-idx3-ubyte.gz").chmod(0)
            phrase = "permission denied"
    config_path = _write_config(tmp_path, config)
    if case == "unreadable-config":
        config_path.chmod(0)
    try:
        code = cli.main(["compress", "--config", str(config_path), "--output", str(output), *FAST])
        line = one_line_error(capsys.readouterr().err)
        assert code == 2 and phrase.lower() in line.lower() and "corrupted" not in line, line
    finally:
        for path in tmp_path.rglob("*"):
            path.chmod(0o755)
    TALLY[f"environment/{case} (CLI in-process)"] = f"exit {code}: {line[-70:]}"


@pytest.mark.parametrize("case", ["read-only-parent", "unreadable-checkpoint"])
def test_export_permission_problems_are_one_line(case, tmp_path, capsys, request, tiny_run):
    if rerun_without_root_powers(request):
        return
    checkpoint = tmp_path / "checkpoint.pt"
    shutil.copyfile(tiny_run.checkpoint, checkpoint)
    parent = tmp_path / "deploy"
    parent.mkdir()
    (parent if case == "read-only-parent" else checkpoint).chmod(0o555 if case == "read-only-parent" else 0)
    try:
        code = cli.main(["export", "--checkpoint", str(checkpoint), "--output", str(parent / "ir"), "--eval-samples", "8"])
        line = one_line_error(capsys.readouterr().err)
        assert code == 2 and "permission denied" in line.lower() and "Traceback" not in line, line
        assert not (parent / "ir").exists()
    finally:
        for path in (parent, checkpoint):
            path.chmod(0o755)
    TALLY[f"environment/export-{case} (CLI in-process)"] = f"exit {code}: {line[-70:]}"


# --------------------------------------------------------------------------- cleanup and symlinks


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_stale_staging_leftovers_are_removed_and_said(tmp_path, tiny_run, caplog):
    """A killed export's `.ir.tmp-*`, a read-only `.ir.old-*` and a killed checkpoint write's `.checkpoint.pt.*.tmp`
    are removed by the next write to the same target, which says so; a live writer's files, another machine's
    and foreign files stay."""
    dead = _dead_pid()
    ir = tmp_path / "ir"
    ir.mkdir()  # the swap had finished: the .old- folder is a leftover, not the only copy
    stale_tmp = tmp_path / folder_staging_name("ir", "tmp", "0123abcd", pid=dead)
    stale_tmp.mkdir()
    (stale_tmp / "model.xml").write_text("<half/>")
    stale_old = tmp_path / folder_staging_name("ir", "old", "89abcdef", pid=dead)
    (stale_old / "sub").mkdir(parents=True)
    (stale_old / "model.bin").write_bytes(b"old")
    (stale_old / "sub").chmod(0o555)
    stale_old.chmod(0o555)
    live = tmp_path / folder_staging_name("ir", "tmp", "fedcba98", pid=os.getppid())  # a writer that still runs: left alone
    live.mkdir()
    other_host = tmp_path / f".ir.tmp-{'0' * 8 if host_mark() != '0' * 8 else '1' * 8}-{dead}-abcdef01"
    other_host.mkdir()  # a pid of another machine sharing the storage: cannot be checked, left alone
    foreign = tmp_path / ".ir.tmp-notours"
    foreign.write_text("someone else's")
    stale_file = tmp_path / (file_staging_prefix("checkpoint.pt", pid=dead) + "abc123_x.tmp")
    stale_file.write_bytes(b"half a checkpoint")

    with caplog.at_level("WARNING", logger="nncf_wcam"):
        export_ir(tiny_run.ctrl, tiny_run.model, ir, tiny_run.samples, config=tiny_run.raw)
        atomic_torch_save({"x": torch.zeros(1)}, tmp_path / "checkpoint.pt")
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == sorted(["ir", live.name, other_host.name, foreign.name, "checkpoint.pt"]), names
    said = [r.getMessage() for r in caplog.records if "staging leftover" in r.getMessage()]
    assert len(said) == 2 and stale_tmp.name in said[0] and stale_old.name in said[0] and stale_file.name in said[1]
    assert all("\n" not in s for s in said)
    TALLY["cleanup/stale .ir.tmp + read-only .ir.old"] = "removed, said in one line"
    TALLY["cleanup/stale .checkpoint.pt.*.tmp"] = "removed, said in one line"
    TALLY["cleanup/live writer's staging folder"] = "kept"
    TALLY["cleanup/another machine's staging folder"] = "kept"
    TALLY["cleanup/foreign dot-file"] = "kept"


KILLED_BETWEEN_RENAMES = """
import os, signal, sys
from pathlib import Path
from nncf_wcam.io import atomic
target = Path(sys.argv[1])
real_replace, calls = os.replace, []

def replace_then_die(source, destination):
    real_replace(source, destination)
    calls.append(destination)
    if len(calls) == 1:  # the previous version is aside, the new one not yet in: kill -9 here
        os.kill(os.getpid(), signal.SIGKILL)

atomic.os.replace = replace_then_die
with atomic.atomic_directory(target) as staging:
    (staging / "model.xml").write_text("<new/>")
"""


def test_a_kill_between_the_swaps_renames_loses_nothing(tmp_path, caplog):
    """A real process SIGKILLed after renaming the previous IR aside and before renaming the new one in:
    the next write puts the previous version back first (said in one line), then replaces it as usual."""
    target = tmp_path / "ir"
    target.mkdir()
    (target / "model.xml").write_text("<previous/>")
    child = subprocess.run([sys.executable, "-c", KILLED_BETWEEN_RENAMES, str(target)], capture_output=True, text=True, timeout=120)
    assert child.returncode == -9, child.stderr[-2000:]
    assert not target.exists() and any(".ir.old-" in p.name for p in tmp_path.iterdir())
    with caplog.at_level("WARNING", logger="nncf_wcam"):
        clean_stale_staging(target)
    assert (target / "model.xml").read_text() == "<previous/>"
    assert [p.name for p in tmp_path.iterdir()] == ["ir"]
    said = [r.getMessage() for r in caplog.records if "put back" in r.getMessage()]
    assert len(said) == 1 and "\n" not in said[0]
    with atomic_directory(target) as staging:
        (staging / "model.xml").write_text("<next/>")
    assert (target / "model.xml").read_text() == "<next/>" and [p.name for p in tmp_path.iterdir()] == ["ir"]
    TALLY["kill -9/between the swap's renames"] = "previous IR put back by the next write"


def test_read_only_earlier_ir_is_replaced_without_leftovers(tmp_path, tiny_run):
    ir = tmp_path / "ir"
    export_ir(tiny_run.ctrl, tiny_run.model, ir, tiny_run.samples, config=tiny_run.raw)
    ir.chmod(0o555)
    export_ir(tiny_run.ctrl, tiny_run.model, ir, tiny_run.samples, config=tiny_run.raw)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ir"]
    assert sorted(p.name for p in ir.iterdir()) == ["manifest.json", "model.bin", "model.xml"]
    TALLY["cleanup/read-only earlier IR"] = "replaced, no .ir.old left"


def test_symlinked_output_is_followed_and_kept(tmp_path, tiny_run):
    real = tmp_path / "real_ir"
    link = tmp_path / "ir"
    real.mkdir()
    link.symlink_to(real, target_is_directory=True)
    export_ir(tiny_run.ctrl, tiny_run.model, link, tiny_run.samples, config=tiny_run.raw)  # into the empty target
    export_ir(tiny_run.ctrl, tiny_run.model, link, tiny_run.samples, config=tiny_run.raw)  # replaces the target's content
    assert link.is_symlink() and link.resolve() == real.resolve()
    assert sorted(p.name for p in real.iterdir()) == ["manifest.json", "model.bin", "model.xml"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ir", "real_ir"]
    TALLY["cleanup/symlinked output"] = "followed, link kept"


def test_export_replaces_its_own_earlier_export(tmp_path, tiny_run):
    """The control case of the data-loss fix: an earlier export of ours is still replaced."""
    ir = tmp_path / "ir"
    export_ir(tiny_run.ctrl, tiny_run.model, ir, tiny_run.samples, config=tiny_run.raw)
    manifest = json.loads((ir / "manifest.json").read_text())
    assert manifest["producer"] == "nncf_wcam" and manifest["manifest_version"] == 1
    (ir / "model.bin").write_bytes(b"stale")
    export_ir(tiny_run.ctrl, tiny_run.model, ir, tiny_run.samples, config=tiny_run.raw)
    assert (ir / "model.bin").read_bytes() != b"stale"
    TALLY["control/re-export over our own export"] = "replaced"


def test_cli_reads_saliency_guided_logits_output():
    """A dict-output model trained with saliency_guided alone: the CLI reads that block's logits_output."""
    config = tiny(model="mobilenet_style", compression=[{"algorithm": "saliency_guided", "logits_output": "logits"}])
    assert logits_output_of(config) == "logits"
    both = tiny(compression=[{"algorithm": "attribution_matching", "logits_output": 1}, {"algorithm": "saliency_guided", "logits_output": 1}])
    assert logits_output_of(both) == 1
    check_run_config(config)  # the dict output has "logits": accepted up front


@pytest.fixture(scope="module", autouse=True)
def print_tally():
    """How each case ended, printed after the module's tests (run with -s): the numbers a trial report gives."""
    yield
    endings = {}
    for ending in TALLY.values():
        kind = ending.split(":")[0]
        endings[kind] = endings.get(kind, 0) + 1
    print(f"\nhostile cases tried: {len(TALLY)}; endings: {endings}")
    for case, ending in sorted(TALLY.items()):
        print(f"  {case}: {ending}")
