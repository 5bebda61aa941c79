"""Checkpoints of compression-aware training runs, and restoring a compressed model from one.

A checkpoint (`checkpoint.pt`, written by rank 0 after every epoch, atomically) holds:

- `config`: the NNCF config as JSON (CLI overrides applied), `model`: how to rebuild the model
  (`create_model(name, in_channels, num_classes, **kwargs)`), `dataset`: the dataset block;
- `compression_state`: NNCF's `compression_ctrl.get_compression_state()` (builder and controller
  states; the controller state carries each algorithm's loss and scheduler state, and so the
  attribution_matching drop-mask generator), made JSON-plain;
- `state_dict`: the compressed model's state_dict (quantizer ranges, masks, BatchNorm buffers);
- `teacher_state_dict`: the uncompressed teacher's weights;
- `optimizer`, `lr_scheduler`: their state_dicts; `epoch`: epochs completed; `epochs`: planned;
- `rng`: torch / numpy / python RNG states at the end of that epoch; `history`: per-step losses.

Everything in it is tensors and plain Python values, so it loads with `torch.load(weights_only=True)`.

Restoring (`restore_compressed_model`): build the model, load the teacher weights into it, then
`create_compressed_model(model, config, compression_state=...)` (the attribution_matching builder
takes its frozen teacher from that model, so the teacher comes back), then
`nncf.torch.load_state(model, state_dict)` for the student.
"""

import os
import pickle
import random
import re
import warnings
from pathlib import Path
from typing import Any
from typing import Optional
from typing import Union

import numpy as np
import torch
from nncf import NNCFConfig
from nncf.torch import create_compressed_model
from nncf.torch import load_state
from torch import nn

from nncf_wcam.errors import NncfWcamError
from nncf_wcam.errors import error_summary
from nncf_wcam.io.atomic import atomic_torch_save
from nncf_wcam.nncf2.checkpoint_checks import CheckpointError
from nncf_wcam.nncf2.checkpoint_checks import check_checkpoint_fields
from nncf_wcam.nncf2.checkpoint_checks import check_state_dict
from nncf_wcam.io.jsonable import json_plain
from nncf_wcam.zoo.models import create_model

FORMAT = "nncf_wcam.checkpoint"
TEACHER_FORMAT = "nncf_wcam.teacher"
VERSION = 1
CHECKPOINT_NAME = "checkpoint.pt"
TEACHER_NAME = "teacher.pt"


# --------------------------------------------------------------------------- RNG states


def rng_states() -> dict:
    """torch, numpy and python RNG states as tensors and plain values (weights_only-loadable)."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "python": [py_state[0], list(py_state[1]), py_state[2]],
    }


def set_rng_states(states: dict) -> None:
    torch.set_rng_state(states["torch"])
    kind, keys, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))


# --------------------------------------------------------------------------- models and teachers


def model_spec(config: dict, in_channels: int, num_classes: int) -> dict:
    """How to rebuild the config's model: its top-level "model" (default small_cnn) and "model_kwargs"."""
    return {
        "name": config.get("model", "small_cnn"),
        "in_channels": int(in_channels),
        "num_classes": int(num_classes),
        "kwargs": dict(config.get("model_kwargs", {})),
    }


def build_model(spec: dict) -> nn.Module:
    return create_model(spec["name"], spec["in_channels"], spec["num_classes"], **spec.get("kwargs", {}))


def _load(path: Union[str, os.PathLike], what: str) -> Any:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{what} not found: {path}.")
    try:
        with warnings.catch_warnings():  # torch warns about the pickles it refuses: the one line below says it
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except PermissionError as e:
        raise CheckpointError(f"Cannot read {what} {path}: permission denied. Fix: make the file readable (chmod u+r).") from e
    except IsADirectoryError as e:
        raise CheckpointError(f"{what} {path} is a folder. Fix: name the .pt file.") from e
    except pickle.UnpicklingError as e:
        # torch's message advises weights_only=False: never for a file the user did not make.
        found = re.search(r"GLOBAL ([\w.]+)", str(e))
        what_else = f" ({found.group(1)})" if found else ""
        msg = (
            f"Cannot read {what} {path}: it holds Python objects{what_else} besides tensors and plain values, and "
            "nncf-wcam loads weights only (nothing in the file is executed). Fix: use a file written by nncf-wcam, or "
            "save plain weights with torch.save(model.state_dict(), path)."
        )
        raise CheckpointError(msg) from e
    except Exception as e:  # noqa: BLE001  (any other unreadable file gets the same one-line answer)
        first = error_summary(e, limit=160, with_type=False).split(". ")[0].rstrip(".")
        raise CheckpointError(f"Cannot read {what} {path}: {first}. Fix: use a complete file written by nncf-wcam (it may be truncated).") from e


def save_teacher(path: Union[str, os.PathLike], teacher: nn.Module, spec: dict, **meta) -> Path:
    state = {k: v.detach().cpu().clone() for k, v in teacher.state_dict().items()}
    return atomic_torch_save({"format": TEACHER_FORMAT, "version": VERSION, "model": spec, "state_dict": state, **meta}, path)


def load_teacher_state(path: Union[str, os.PathLike], spec: Optional[dict] = None) -> dict:
    """The teacher weights from a teacher.pt, a checkpoint.pt (its teacher), or a plain state_dict file.

    With `spec`, checks that the weights fit the model the config builds.
    """
    data = _load(path, "Teacher file")
    if isinstance(data, dict) and data.get("format") == TEACHER_FORMAT:
        state = data["state_dict"]
    elif isinstance(data, dict) and data.get("format") == FORMAT:
        state = data["teacher_state_dict"]
    elif isinstance(data, dict) and data and all(isinstance(v, torch.Tensor) for v in data.values()):
        state = data
    else:
        raise CheckpointError(f"{path} holds no teacher weights (expected a teacher.pt, a checkpoint.pt or a state_dict).")
    check_state_dict(state, Path(path), "teacher state_dict")
    if spec is not None:
        model = build_model(spec)
        try:
            model.load_state_dict(state)
        except RuntimeError as e:
            msg = f"The teacher weights in {path} do not fit model '{spec['name']}' ({str(e).splitlines()[0]})"
            raise CheckpointError(msg) from e
    return state


# --------------------------------------------------------------------------- checkpoints


def make_checkpoint(
    *,
    config: dict,
    spec: dict,
    compression_ctrl,
    model: nn.Module,
    teacher_state_dict: dict,
    optimizer: torch.optim.Optimizer,
    lr_scheduler=None,
    epoch: int,
    epochs: int,
    seed: int,
    history: list,
    **meta,
) -> dict:
    return {
        "format": FORMAT,
        "version": VERSION,
        "config": json_plain(dict(config)),
        "model": spec,
        "compression_state": json_plain(compression_ctrl.get_compression_state()),
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "teacher_state_dict": teacher_state_dict,
        "optimizer": optimizer.state_dict(),
        "lr_scheduler": lr_scheduler.state_dict() if lr_scheduler is not None else None,
        "epoch": int(epoch),
        "epochs": int(epochs),
        "seed": int(seed),
        "rng": rng_states(),
        "history": json_plain(history),
        **json_plain(meta),
    }


def save_checkpoint(path: Union[str, os.PathLike], **fields) -> Path:
    """Builds the checkpoint (see `make_checkpoint`) and writes it atomically."""
    return atomic_torch_save(make_checkpoint(**fields), path)


# What every checkpoint holds (make_checkpoint); older or hand-made files without them are refused.
REQUIRED_KEYS = ("config", "model", "compression_state", "state_dict", "teacher_state_dict", "optimizer", "epoch", "epochs", "rng", "history")


def load_checkpoint(path: Union[str, os.PathLike]) -> dict:
    data = _load(path, "Checkpoint")
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an nncf-wcam checkpoint (written by `nncf-wcam compress`).")
    version = data.get("version", 0)
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise CheckpointError(f"{path} has checkpoint version {version!r:.40}, not a whole number from 1 to {VERSION}: it was not written by nncf-wcam.")
    if version > VERSION:
        raise CheckpointError(f"{path} has checkpoint version {version}; this nncf-wcam reads up to {VERSION}.")
    missing = [key for key in REQUIRED_KEYS if key not in data]
    if missing:
        raise CheckpointError(f"{path} lacks {', '.join(missing)}: it is incomplete or was not written by `nncf-wcam compress`.")
    if not isinstance(data["config"], dict) or not isinstance(data["model"], dict):
        raise CheckpointError(f"{path}: its config or model entry is not a mapping; it was not written by `nncf-wcam compress`.")
    check_checkpoint_fields(data, Path(path))
    return data


def restore_compressed_model(checkpoint: dict, log_dir: Optional[Union[str, os.PathLike]] = None) -> tuple:
    """(compression_ctrl, compressed model, teacher) rebuilt from a checkpoint, on the CPU.

    The teacher weights go into the fresh model before `create_compressed_model`, so that the
    attribution_matching builder's clean copy (its frozen teacher) is the saved teacher; the
    student's state_dict is loaded after. `log_dir`: where NNCF writes its graph files.
    """
    config_dict = dict(checkpoint["config"])
    if log_dir is not None:
        config_dict["log_dir"] = str(log_dir)
    try:
        config = NNCFConfig.from_dict(config_dict)
        model = build_model(checkpoint["model"])
        model.load_state_dict(checkpoint["teacher_state_dict"])
        compression_ctrl, compressed = create_compressed_model(model, config, compression_state=checkpoint["compression_state"])
        load_state(compressed, checkpoint["state_dict"], is_resume=True)
        teacher = build_model(checkpoint["model"])
        teacher.load_state_dict(checkpoint["teacher_state_dict"])
    except NncfWcamError:
        raise
    except Exception as e:  # NNCF, jsonschema and torch raise many types for a file that loads but does not fit
        msg = f"The checkpoint's model cannot be rebuilt ({error_summary(e, limit=200)}). Fix: use a checkpoint written by nncf-wcam compress, unedited."
        raise CheckpointError(msg) from e
    return compression_ctrl, compressed, teacher.eval()
