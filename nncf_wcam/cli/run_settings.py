"""What a `compress` run was started with (`run.json` beside `checkpoint.pt`), and what `--resume` checks against it.

A fresh run resolves its settings once (flags over the config over defaults) and writes them; a
resumed run takes them from the file, so `--resume` alone continues the same run. A flag given
with `--resume` must agree with the run's value: a silent change (fewer epochs, another teacher,
another seed) would continue a different run than the one on disk.
"""

import hashlib
import json
import re
from dataclasses import asdict
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from typing import Optional

import torch

from nncf_wcam.core.generator import MAX_SEED
from nncf_wcam.errors import NncfWcamError
from nncf_wcam.errors import short_repr
from nncf_wcam.io.atomic import atomic_write_text
from nncf_wcam.io.jsonable import json_plain

RUN_FILE = "run.json"
FORMAT = "nncf_wcam.run"
VERSION = 1

DEFAULT_EPOCHS = 4  # when the config has no "epochs"
DEFAULT_TEACHER_EPOCHS = 6
DEFAULT_BATCH_SIZE = 64  # when the config has no "batch_size"
DEFAULT_EVAL_SAMPLES = 64
DEFAULT_DEVICE = "CPU"

# Flags that define the training: on --resume, a different value is refused.
TRAINING_FLAGS = {"--epochs": "epochs", "--teacher-epochs": "teacher_epochs", "--seed": "seed", "--max-steps": "max_steps"}
# Flags that only change what is measured after training (export device, evaluation samples): a resume may change them.
OUTPUT_FLAGS = {"--device": "device", "--eval-samples": "eval_samples"}


class RunSettingsError(NncfWcamError, ValueError):
    """A resume whose flags, files or checkpoint disagree with the run on disk (one line, exit code 2)."""


def config_digest(config: dict) -> str:
    """sha256 of the config's content (key order and whitespace do not count)."""
    return hashlib.sha256(json.dumps(json_plain(config), sort_keys=True).encode("utf-8")).hexdigest()


def state_digest(state: dict) -> str:
    """sha256 of a state_dict's names, dtypes, shapes and values: the identity of a teacher's weights."""
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode("utf-8"))
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


@dataclass
class RunSettings:
    config_path: str
    config_sha256: str
    config: dict  # the config as read, before the CLI's overrides
    epochs: int
    teacher_epochs: int
    seed: int
    dataset: Optional[dict]
    batch_size: int
    optimizer: Optional[dict]
    eval_samples: int
    device: str
    max_steps: Optional[int] = None
    compare_naive: bool = False
    # {"source": "trained" | "file", "path": the file given to --teacher (or None), "sha256": of its weights (None until trained)}
    teacher: dict = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps({"format": FORMAT, "version": VERSION, **json_plain(asdict(self))}, indent=2)


def fresh_settings(args, config: dict, config_path: str) -> RunSettings:
    """The settings of a new run: each flag given, else the config's value, else the default."""
    epochs = args.epochs if args.epochs is not None else config.get("epochs", DEFAULT_EPOCHS)
    seed = args.seed if args.seed is not None else config.get("seed", 0)
    return RunSettings(
        config_path=str(config_path),
        config_sha256=config_digest(config),
        config=json_plain(config),
        epochs=int(epochs),
        teacher_epochs=args.teacher_epochs if args.teacher_epochs is not None else DEFAULT_TEACHER_EPOCHS,
        seed=int(seed),
        dataset=json_plain(config.get("dataset")),
        batch_size=int(config.get("batch_size", DEFAULT_BATCH_SIZE)),
        optimizer=json_plain(config.get("optimizer")),
        eval_samples=args.eval_samples if args.eval_samples is not None else DEFAULT_EVAL_SAMPLES,
        device=args.device if args.device is not None else DEFAULT_DEVICE,
        max_steps=args.max_steps,
        compare_naive=bool(args.compare_naive),
        teacher={"source": "file" if args.teacher else "trained", "path": str(args.teacher) if args.teacher else None, "sha256": None},
    )


def _whole(low: int, high: int):
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and low <= v <= high


def _optional(check):
    return lambda v: v is None or check(v)


_HEX64 = re.compile(r"[0-9a-f]{64}")
# Every field of run.json and what it must be: an edited or damaged file is refused, never half-used.
FIELD_CHECKS = {
    "config_path": lambda v: isinstance(v, str),
    "config_sha256": lambda v: isinstance(v, str) and bool(_HEX64.fullmatch(v)),
    "config": lambda v: isinstance(v, dict),
    "epochs": _whole(1, 100000),
    "teacher_epochs": _whole(1, 100000),
    "seed": _whole(0, MAX_SEED),
    "dataset": _optional(lambda v: isinstance(v, dict)),
    "batch_size": _whole(1, 1 << 20),
    "optimizer": _optional(lambda v: isinstance(v, dict)),
    "eval_samples": _whole(1, 10**7),
    "device": lambda v: isinstance(v, str) and 0 < len(v) < 64,
    "max_steps": _optional(_whole(1, 10**9)),
    "compare_naive": lambda v: isinstance(v, bool),
    "teacher": lambda v: isinstance(v, dict)
    and v.get("source") in ("trained", "file", "checkpoint")
    and _optional(lambda p: isinstance(p, str))(v.get("path"))
    and _optional(lambda s: isinstance(s, str) and bool(_HEX64.fullmatch(s)))(v.get("sha256")),
}


def _damaged(path: Path, what: str) -> RunSettingsError:
    return RunSettingsError(f"{path}: {what}; the run file was edited or is damaged, so the run cannot be continued. Start a new run in another --output.")


def _checked(data: dict, path: Path) -> RunSettings:
    """The run file's settings, every field checked, the config against its sha256 and the fields the config sets."""
    missing = [name for name in FIELD_CHECKS if name not in data]
    if missing:
        raise _damaged(path, f"it lacks {', '.join(missing)}")
    for name, check in FIELD_CHECKS.items():
        if not check(data[name]):
            raise _damaged(path, f"\"{name}\" is {short_repr(data[name])}")
    settings = RunSettings(**{name: data[name] for name in FIELD_CHECKS})
    if config_digest(settings.config) != settings.config_sha256:
        raise _damaged(path, "its config no longer matches the sha256 recorded beside it")
    derived = {"dataset": settings.config.get("dataset"), "optimizer": settings.config.get("optimizer"), "batch_size": settings.config.get("batch_size", DEFAULT_BATCH_SIZE)}
    for name, value in derived.items():
        if json_plain(value) != json_plain(getattr(settings, name)):
            raise _damaged(path, f"\"{name}\" {short_repr(getattr(settings, name))} is not its config's {short_repr(value)}")
    return settings


def read_run_settings(folder) -> Optional[RunSettings]:
    """The settings in `folder/run.json`, or None when there is none; a damaged or edited file is refused in one line."""
    path = Path(folder) / RUN_FILE
    if not path.exists() and not path.is_symlink():
        return None
    if not path.is_file():
        raise _damaged(path, "it is not a regular file")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as e:
        raise RunSettingsError(f"Cannot read {path} ({type(e).__name__}): --resume needs it. Start a new run in another --output.") from e
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise RunSettingsError(f"{path} is not an nncf-wcam run file. Start a new run in another --output.")
    version = data.get("version")
    if not _whole(1, VERSION)(version):
        raise RunSettingsError(f"{path} has run-file version {short_repr(version)}; this nncf-wcam reads versions 1 to {VERSION}. Start a new run, or use the nncf-wcam that wrote it.")
    return _checked(data, path)


def settings_from_checkpoint(checkpoint: dict, config_path: str, compare_naive: bool = False) -> RunSettings:
    """Settings of a run folder that holds a checkpoint but no run.json: what its checkpoint recorded (evaluation samples and device: the defaults)."""
    config = {k: v for k, v in checkpoint["config"].items() if k != "log_dir"}
    return RunSettings(
        config_path=str(config_path),
        config_sha256=config_digest(config),
        config=config,
        epochs=int(checkpoint["epochs"]),
        teacher_epochs=DEFAULT_TEACHER_EPOCHS,
        seed=int(checkpoint["seed"]),
        dataset=checkpoint.get("dataset", config.get("dataset")),
        batch_size=int(config.get("batch_size", DEFAULT_BATCH_SIZE)),
        optimizer=config.get("optimizer"),
        eval_samples=DEFAULT_EVAL_SAMPLES,
        device=DEFAULT_DEVICE,
        max_steps=checkpoint.get("max_steps"),
        compare_naive=compare_naive,
        teacher={"source": "checkpoint", "path": None, "sha256": state_digest(checkpoint["teacher_state_dict"])},
    )


def write_run_settings(folder, settings: RunSettings) -> Path:
    return atomic_write_text(Path(folder) / RUN_FILE, settings.to_json())


def _show(value) -> str:
    return json.dumps(value) if isinstance(value, (dict, list)) else str(value)


def resumed_settings(saved: RunSettings, args, config: Optional[dict], config_path: Optional[str]) -> RunSettings:
    """The saved settings, after checking every flag given with --resume against them.

    `config`: the config read from `--config` when it was given (it must be the run's), else None.
    """
    if config is not None and config_digest(config) != saved.config_sha256:
        msg = (
            f"--config {config_path} differs from the config this run was started with ({saved.config_path}, "
            f"sha256 {saved.config_sha256[:12]}). Drop --config to resume with the run's own, or start a new --output."
        )
        raise RunSettingsError(msg)
    for flag, name in TRAINING_FLAGS.items():
        given = getattr(args, name)
        if given is not None and given != getattr(saved, name):
            raise RunSettingsError(f"{flag} {given} conflicts with this run's {name.replace('_', ' ')} {_show(getattr(saved, name))}; drop the flag or start a new --output.")
    if args.compare_naive and not saved.compare_naive:
        raise RunSettingsError("--compare-naive conflicts with this run, which was started without it; drop the flag or start a new --output.")
    settings = RunSettings(**asdict(saved))
    for flag, name in OUTPUT_FLAGS.items():
        if getattr(args, name) is not None:
            setattr(settings, name, getattr(args, name))
    return settings


def check_checkpoint(checkpoint: dict, path, *, settings: RunSettings, config: dict, teacher_sha256: Optional[str]) -> None:
    """Refuses a checkpoint that another run wrote: its teacher, data, batch size, optimizer, seed, epochs and config must be this run's.

    `config`: the config this checkpoint's training uses (the naive run's lacks attribution_matching).
    """
    if teacher_sha256 is not None and state_digest(checkpoint["teacher_state_dict"]) != teacher_sha256:
        msg = f"--resume: {path} was trained with another teacher than this run's ({RUN_FILE}): the folder mixes two runs. Start a new run in another --output."
        raise RunSettingsError(msg)
    saved_config = {k: v for k, v in checkpoint.get("config", {}).items() if k != "log_dir"}
    recorded = {
        "dataset": (checkpoint.get("dataset", saved_config.get("dataset")), settings.dataset),
        "batch size": (saved_config.get("batch_size", DEFAULT_BATCH_SIZE), settings.batch_size),
        "optimizer": (saved_config.get("optimizer"), settings.optimizer),
        "seed": (checkpoint.get("seed"), settings.seed),
        "epochs": (checkpoint.get("epochs"), settings.epochs),
        "max steps per epoch": (checkpoint.get("max_steps"), settings.max_steps),
        "config": (saved_config, {k: v for k, v in config.items() if k != "log_dir"}),  # every key: dataset, freeze_bn_epochs, ...
    }
    for what, (theirs, ours) in recorded.items():
        if json_plain(theirs) != json_plain(ours):
            msg = (
                f"--resume: {path} was trained with {what} {_show(theirs)}, but this run's is {_show(ours)}: "
                "the folder mixes two runs or the config changed. Start a new run in another --output."
            )
            raise RunSettingsError(msg)
