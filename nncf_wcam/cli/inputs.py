"""The command line's checks of what it was given: the NNCF config, the dataset, the model, layers, output files.

Each refusal is a one-line error (exit code 2) raised before any training.
"""

import contextlib
import json
import tempfile
from pathlib import Path
from typing import Iterator
from typing import Optional

import jsonschema
import nncf
import torch

from nncf_wcam.cli.errors import UsageError
from nncf_wcam.core.layers import choose_layers
from nncf_wcam.errors import one_line
from nncf_wcam.nncf2.checkpoint import CHECKPOINT_NAME
from nncf_wcam.nncf2.checkpoint import build_model
from nncf_wcam.nncf2.checkpoint import load_checkpoint
from nncf_wcam.nncf2.checkpoint import restore_compressed_model
from nncf_wcam.nncf2.training import load_config
from nncf_wcam.zoo.datasets import DatasetSplit
from nncf_wcam.zoo.datasets import load_dataset


def validated_config(data: dict, source: str) -> nncf.NNCFConfig:
    """An NNCFConfig of the dict (plugin blocks checked first); NNCF's schema errors become one line."""
    try:
        return load_config(data)
    except jsonschema.ValidationError as e:
        raise UsageError(f"Config {source} is not a valid NNCF config: {e.message}") from e
    except nncf.ValidationError as e:
        raise UsageError(f"Config {source}: {one_line(str(e))}") from e


def load_data(spec: Optional[dict]) -> DatasetSplit:
    if spec is not None and not isinstance(spec, dict):
        raise UsageError(f"The config's \"dataset\" must be an object like {{\"name\": \"digits\"}}, got {spec!r}.")
    try:
        return load_dataset(spec)
    except TypeError as e:
        raise UsageError(f"Bad \"dataset\" block {json.dumps(spec)}: {e}.") from e


def check_input_info(config: dict, data: DatasetSplit) -> None:
    """The config's input_info must describe the dataset's images (else NNCF traces the wrong shape)."""
    info = config.get("input_info")
    infos = info if isinstance(info, list) else [info] if isinstance(info, dict) else []
    if len(infos) != 1 or "sample_size" not in infos[0]:
        return
    expected = tuple(infos[0]["sample_size"][1:])
    if expected != tuple(data.image_shape):
        msg = (
            f"input_info.sample_size {infos[0]['sample_size']} does not match the dataset's images "
            f"{list(data.image_shape)} ({data.description}). Fix the config's input_info or the dataset's image_size."
        )
        raise UsageError(msg)


def check_output_file(path: Optional[str], flag: str) -> None:
    """A file the command will write (report, figure): not a folder, and its folder not a file."""
    if path is None:
        return
    target = Path(path)
    if target.is_dir():
        raise UsageError(f"{flag} {path} is a folder. Pass a file name, e.g. {target / ('maps.png' if flag == '--figure' else 'eval.json')}.")
    parent = next((p for p in [target.parent, *target.parent.parents] if p.exists()), None)
    if parent is not None and not parent.is_dir():
        raise UsageError(f"{flag} {path}: {parent} is a file, not a folder.")


def check_output_folder(path: Path) -> None:
    """An output folder: not a file, and the nearest ancestor that exists (where it will be created) a folder."""
    if path.exists() and not path.is_dir():
        raise UsageError(f"Output path {path} exists and is not a folder. Name a folder.")
    parent = next((p for p in path.parents if p.exists()), None)
    if parent is not None and not parent.is_dir():
        raise UsageError(f"Output path {path}: {parent} is a file, not a folder. Name a folder.")


def build_checked_model(spec: dict) -> torch.nn.Module:
    try:
        return build_model(spec)
    except (ValueError, TypeError) as e:
        raise UsageError(one_line(str(e))) from e


def check_layers(model: torch.nn.Module, sample: torch.Tensor, requested) -> list:
    """The layers `requested` ("auto", ["auto"] or names) on a plain model, checked: they exist and have spatial outputs."""
    model.eval()
    return choose_layers(model, requested, lambda: model(sample))


def check_checkpoint_flag(path: str) -> None:
    if not Path(path).is_file():
        hint = f" (a folder: pass {Path(path) / CHECKPOINT_NAME})" if Path(path).is_dir() else ""
        raise UsageError(f"Checkpoint not found: {path}{hint}.")


@contextlib.contextmanager
def restored_checkpoint(path: str) -> Iterator[tuple]:
    """(checkpoint, data, compression_ctrl, model, teacher) of a checkpoint.pt; NNCF's graph dumps go to a temporary folder."""
    check_checkpoint_flag(path)
    checkpoint = load_checkpoint(path)
    data = load_data(checkpoint.get("dataset", checkpoint["config"].get("dataset")))
    with tempfile.TemporaryDirectory(prefix="nncf_wcam_") as log_dir:
        compression_ctrl, model, teacher = restore_compressed_model(checkpoint, log_dir=log_dir)
        yield checkpoint, data, compression_ctrl, model, teacher
