"""What a checkpoint or teacher file must hold before anything is built from it.

`torch.load(weights_only=True)` already refuses Python objects; these checks refuse files that load but were
crafted or damaged: fields of the wrong type or out of bounds (a model asked to be terabytes large), state dicts
that are not names to tensors, and weights that hold NaN or infinity (the file is at fault, not the training).
"""

from pathlib import Path

import torch

from nncf_wcam.errors import NncfWcamError
from nncf_wcam.errors import short_repr


class CheckpointError(NncfWcamError, ValueError):
    """A checkpoint or teacher file is missing, unreadable, or not what was expected."""


def _whole(value, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def check_state_dict(state, path: Path, what: str) -> dict:
    """A mapping of names to tensors whose floating values are all finite."""
    if not isinstance(state, dict) or not state:
        raise CheckpointError(f"{path}: its {what} is {short_repr(type(state).__name__)}, not a mapping of names to tensors. Fix: use a file written by nncf-wcam.")
    for name, tensor in state.items():
        if not isinstance(name, str) or not isinstance(tensor, torch.Tensor):
            raise CheckpointError(f"{path}: its {what} holds {short_repr(name)}: {type(tensor).__name__}, not a tensor. Fix: use a file written by nncf-wcam.")
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            msg = (
                f"{path}: its {what} holds NaN or infinite values ({name}): the file is damaged, or was saved from a run "
                "that had already diverged. Fix: use another file (an earlier checkpoint, another teacher)."
            )
            raise CheckpointError(msg)
    return state


def check_checkpoint_fields(data: dict, path: Path) -> None:
    """The fields `make_checkpoint` writes, each of its kind and in bounds."""
    spec = data["model"]
    if not isinstance(spec.get("name"), str) or not isinstance(spec.get("kwargs", {}), dict):
        raise CheckpointError(f"{path}: its model entry {short_repr(spec)} does not name a model. Fix: use a file written by nncf-wcam.")
    for key, high in (("epoch", 100000), ("epochs", 100000)):
        if not _whole(data[key], 0 if key == "epoch" else 1, high):
            raise CheckpointError(f"{path}: \"{key}\" is {short_repr(data[key])}, not a whole number of epochs. Fix: use a file written by nncf-wcam.")
    if data["epoch"] > data["epochs"]:
        raise CheckpointError(f"{path}: epoch {data['epoch']} of {data['epochs']}. Fix: use a file written by nncf-wcam.")
    state = data["compression_state"]
    if not isinstance(state, dict) or not isinstance(state.get("builder_state"), dict) or not isinstance(state.get("ctrl_state"), dict):
        raise CheckpointError(f"{path}: its compression_state is not NNCF's (builder_state, ctrl_state). Fix: use a file written by nncf-wcam.")
    layers = data.get("matched_layers", [])
    if layers is not None and not (isinstance(layers, list) and all(isinstance(name, str) for name in layers)):
        raise CheckpointError(f"{path}: matched_layers {short_repr(layers)} is not a list of layer names. Fix: use a file written by nncf-wcam.")
    check_state_dict(data["state_dict"], path, "state_dict")
    check_state_dict(data["teacher_state_dict"], path, "teacher_state_dict")
