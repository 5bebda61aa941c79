"""The whole run configuration, checked before any work: one line naming the key and the fix.

NNCF validates its own `compression` blocks, and `nncf_wcam.schema.validation` the plugin's; the keys around
them (`epochs`, `freeze_bn_epochs`, `batch_size`, `seed`, `optimizer`, `model`, `model_kwargs`, `dataset`,
`input_info`) and the command-line numbers would otherwise fail deep inside training, after minutes of work.
`check_run_config` refuses them up front; `environment_error_line` turns the OS's errors on the paths a run
writes or reads (permission, read-only folder, full disk) into one line naming the path and the fix.
"""

import errno
import math
import os
import tempfile
from pathlib import Path
from typing import Any
from typing import Optional

import torch

from nncf_wcam.core.generator import MAX_SEED
from nncf_wcam.core.logits import select_logits
from nncf_wcam.errors import NncfWcamError
from nncf_wcam.schema.validation import plugin_blocks
from nncf_wcam.zoo.datasets import MAX_IMAGE_SIZE
from nncf_wcam.zoo.models import LIMITS
from nncf_wcam.zoo.models import MODELS
from nncf_wcam.zoo.models import create_model

MAX_NESTING = 32  # NNCF configs nest 5 or 6 levels; deeper JSON only exhausts the recursion limit later
OPTIMIZERS = ("adam", "sgd")
SCHEDULES = ("constant", "none", "fixed", "multistep", "step", "cosine")
# Beyond these the first optimizer step overflows float32 (Adam with base_lr 1e300) or diverges at once.
OPTIMIZER_MAXIMA = {"base_lr": 10.0, "weight_decay": 1.0, "momentum": 1.0, "gamma": 10.0, "min_lr": 10.0}
MAX_INPUT_BATCH = 1024  # input_info's batch only shapes NNCF's tracing and export input
INPUT_TYPES = ("float", "float32")


class RunConfigError(NncfWcamError, ValueError):
    """A run setting outside the plugin blocks is wrong. The message is one line."""


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _whole(config: dict, key: str, minimum: int, maximum: Optional[int] = None, where: str = "") -> None:
    if key not in config:
        return
    value = config[key]
    if isinstance(value, float) and value.is_integer() and math.isfinite(value):
        value = int(value)
    if not _is_int(value) or value < minimum or (maximum is not None and value > maximum):
        bound = f"from {minimum} to {maximum}" if maximum is not None else f">= {minimum}"
        raise RunConfigError(f"\"{where}{key}\": {_show(config[key])} is not valid. Fix: set it to a whole number {bound}.")


def _nesting(value: Any, depth: int = 0) -> int:
    if depth > MAX_NESTING:
        return depth
    children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
    return max([depth] + [_nesting(child, depth + 1) for child in children])


def _check_optimizer(spec: Any) -> None:
    if spec is None:
        return
    if not isinstance(spec, dict):
        raise RunConfigError(f"\"optimizer\": {_show(spec)} is not an object. Fix: write {{\"type\": \"Adam\", \"base_lr\": 0.001}}.")
    kind = spec.get("type", "Adam")
    if not isinstance(kind, str) or kind.lower() not in OPTIMIZERS:
        raise RunConfigError(f"\"optimizer.type\": {_show(kind)} is not supported. Fix: use \"Adam\" or \"SGD\".")
    for key, maximum in OPTIMIZER_MAXIMA.items():
        value = spec.get(key, 1.0)
        if not _is_number(value) or value < 0 or value > maximum or (key == "base_lr" and value == 0):
            kind_text = "a positive number" if key == "base_lr" else "a number"
            bound = f"from 0 to {maximum}" if key != "base_lr" else f"up to {maximum}"
            raise RunConfigError(f"\"optimizer.{key}\": {_show(value)} is not valid. Fix: set it to {kind_text} {bound}.")
    schedule = spec.get("schedule_type", "constant")
    if not isinstance(schedule, str) or schedule.lower() not in SCHEDULES:
        raise RunConfigError(f"\"optimizer.schedule_type\": {_show(schedule)} is not supported. Fix: use one of {', '.join(SCHEDULES)}.")
    if "steps" in spec and not (isinstance(spec["steps"], list) and all(_is_int(s) and s >= 0 for s in spec["steps"])):
        raise RunConfigError(f"\"optimizer.steps\": {_show(spec['steps'])} is not valid. Fix: a list of epoch numbers, e.g. [2, 4].")
    _whole(spec, "step", 1, where="optimizer.")


def _check_dataset(spec: Any) -> None:
    if spec is None:
        return
    if not isinstance(spec, dict):
        raise RunConfigError(f"\"dataset\": {_show(spec)} is not an object. Fix: write {{\"name\": \"digits\"}}.")
    if not isinstance(spec.get("name", "digits"), str):
        raise RunConfigError(f"\"dataset.name\": {_show(spec['name'])} is not a name. Fix: use \"digits\", \"mnist\" or \"fashion_mnist\".")
    if "root" in spec and not isinstance(spec["root"], str):
        raise RunConfigError(f"\"dataset.root\": {_show(spec['root'])} is not a path. Fix: set it to the folder holding the IDX files.")
    _whole(spec, "image_size", 2, MAX_IMAGE_SIZE, where="dataset.")
    _whole(spec, "seed", 0, MAX_SEED, where="dataset.")
    if "test_fraction" in spec:
        value = spec["test_fraction"]
        if not _is_number(value) or not 0.01 <= value <= 0.99:
            raise RunConfigError(f"\"dataset.test_fraction\": {_show(value)} leaves no training or no test data. Fix: set it between 0.01 and 0.99.")


def _sample_size(config: dict) -> Optional[list]:
    """The one image input's sample_size: the CLI's models take one float image batch."""
    info = config.get("input_info")
    if info is None:
        return None
    infos = info if isinstance(info, list) else [info]
    if len(infos) != 1:
        raise RunConfigError(f"\"input_info\" lists {len(infos)} inputs; the command line's models take one image. Fix: keep one entry.")
    entry = infos[0]
    size = entry.get("sample_size") if isinstance(entry, dict) else None
    if not (isinstance(size, list) and len(size) == 4 and all(_is_int(d) and d >= 1 for d in size)):
        raise RunConfigError(f"\"input_info\".sample_size: {_show(size)} is not valid. Fix: four positive whole numbers, batch first, e.g. [1, 1, 16, 16].")
    limits = ((size[0], 1, MAX_INPUT_BATCH, "batch"), (size[1], *LIMITS["in_channels"], "channels"))
    for value, low, high, what in limits + tuple((d, 2, MAX_IMAGE_SIZE, "height and width") for d in size[2:]):
        if not low <= value <= high:
            raise RunConfigError(f"\"input_info\".sample_size {_show(size)}: {what} {value} is out of bounds. Fix: {what} from {low} to {high}.")
    kind = entry.get("type", "float")
    if kind not in INPUT_TYPES:
        raise RunConfigError(f"\"input_info\".type: {_show(kind)} is not supported; the command line's models take float images. Fix: \"float\" or leave it out.")
    return size


def _check_model(config: dict) -> None:
    name = config.get("model", "small_cnn")
    if not isinstance(name, str) or name not in MODELS:
        raise RunConfigError(f"Unknown model {_show(name)}. Known models: {', '.join(sorted(MODELS))}. Fix: set the config's \"model\" to one of them.")
    kwargs = config.get("model_kwargs", {})
    if not isinstance(kwargs, dict):
        raise RunConfigError(f"\"model_kwargs\": {_show(kwargs)} is not an object. Fix: write e.g. {{\"width\": 8}}.")
    for key, (low, high) in LIMITS.items():
        _whole(kwargs, key, low, high, where="model_kwargs.")


def _check_model_runs(config: dict) -> None:
    """One forward on the config's input shape: the model builds, and every logits_output selects logits."""
    size = _sample_size(config)
    if size is None:
        return
    kwargs = config.get("model_kwargs", {})
    try:
        model = create_model(config.get("model", "small_cnn"), size[1], 10, **kwargs)
        with torch.no_grad():
            output = model.eval()(torch.zeros([1, *size[1:]]))
    except (TypeError, ValueError, RuntimeError) as e:
        first = " ".join(str(e).split())[:200]
        raise RunConfigError(f"The model {config.get('model', 'small_cnn')!r} with model_kwargs {_show(kwargs)} does not run on input_info {size}: {first}. Fix: the model's arguments or the input size.") from e
    for name, block in plugin_blocks(config).items():
        try:
            select_logits(output, block["logits_output"])
        except ValueError as e:
            raise RunConfigError(f"{name}: {e}") from e


def check_run_config(config: dict, args: Any = None) -> None:
    """Refuses, in one line, every run setting that would fail later (config keys and command-line numbers)."""
    if _nesting(config) > MAX_NESTING:
        raise RunConfigError(f"The config nests deeper than {MAX_NESTING} levels. Fix: NNCF configs need 6 or fewer; check the file.")
    _whole(config, "epochs", 1, 100000)
    _whole(config, "freeze_bn_epochs", 0, 100000)
    _whole(config, "batch_size", 1, 1 << 20)
    _whole(config, "seed", 0, MAX_SEED)
    _check_optimizer(config.get("optimizer"))
    _check_dataset(config.get("dataset"))
    _check_model(config)
    _check_model_runs(config)
    if args is not None:
        check_flags(args)
        if getattr(args, "output", None):
            check_writable_folder(Path(args.output))


COUNT_FLAGS = ("epochs", "teacher_epochs", "max_steps", "eval_samples")


def check_flags(args: Any) -> None:
    """The command line's numbers: every count positive, the seed in range (flags not given are None)."""
    for name in COUNT_FLAGS:
        value = getattr(args, name, None)
        if value is not None and value < 1:
            raise RunConfigError(f"--{name.replace('_', '-')} must be a positive number, got {value}.")
    if getattr(args, "seed", None) is not None and not 0 <= args.seed <= MAX_SEED:
        raise RunConfigError(f"--seed {args.seed} is out of range. Fix: a whole number from 0 to {MAX_SEED}.")


def check_writable_folder(folder: Path) -> None:
    """The folder (or the nearest ancestor that exists, where it will be created) accepts new files: probed by creating one."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return  # "not a folder" is reported by the command with its own message
    try:
        descriptor, probe = tempfile.mkstemp(dir=existing, prefix=".nncf_wcam_probe-")
    except OSError as e:
        raise RunConfigError(environment_error_line(e, existing)) from e
    os.close(descriptor)
    os.unlink(probe)


_FIXES = {
    errno.EACCES: "give yourself write permission there (chmod u+rwx) or name another folder",
    errno.EPERM: "give yourself permission there or name another folder",
    errno.EROFS: "the file system is read-only: name a folder on a writable disk",
    errno.ENOSPC: "the disk is full: free space there or name a folder on another disk",
    errno.EDQUOT: "your disk quota is used up: free space or name a folder on another disk",
}
ENVIRONMENT_ERRNOS = tuple(_FIXES)


def environment_error_line(error: OSError, path: Optional[os.PathLike] = None) -> str:
    """One line for an OS error on a path the run uses: what happened, where, and the fix."""
    where = path or error.filename or "a file of this run"
    fix = _FIXES.get(error.errno, "check the path and the disk")
    return f"{error.strerror or error}: {where}. Fix: {fix}."
