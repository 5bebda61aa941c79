"""The `nncf-wcam` command line: compress, export, evaluate.

    nncf-wcam compress --config quantization_int8_wcam --output runs/int8 [--compare-naive]
    nncf-wcam configs                                  (the shipped configs, usable by name in --config)
    nncf-wcam compress --output runs/int8 --resume       # continue that run with its own settings (run.json)
    nncf-wcam export   --checkpoint runs/int8/checkpoint.pt --output runs/int8/ir_npu --target-device NPU
    nncf-wcam evaluate --checkpoint runs/int8/checkpoint.pt [--ir runs/int8/ir]

`compress` under torchrun (`torchrun --nproc_per_node N -m nncf_wcam.cli compress ...`) trains with
DistributedDataParallel; rank 0 alone writes the teacher, checkpoints, IR and report.

Output folder of `compress`:
    run.json              the run's resolved settings (config and its hash, epochs, seed, teacher, data, ...)
    teacher.pt            the uncompressed teacher (trained here, or a copy of --teacher's weights)
    checkpoint.pt         the compressed student, written after every epoch (--resume continues from it)
    naive/checkpoint.pt   with --compare-naive: the same compression without attribution_matching
    ir/                   OpenVINO IR of the student (model.xml, model.bin, manifest.json)
    report.json           accuracies, attribution agreement, compression statistics, timings, dataset
    attribution_maps.png  Grad-CAM maps of teacher and student(s) over test samples
    nncf_logs/            NNCF's graph dumps
    .nncf-wcam.lock       while a run works in the folder (a second run is refused)

User errors (bad flags, missing or malformed config, unknown dataset, model or layer, missing data,
unsupported device, unreadable checkpoint, a resume that disagrees with its run, a folder in use)
print one line on stderr and exit with code 2.
"""

import argparse
import contextlib
import json
import logging
import os
import sys
import time
import warnings
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from typing import Any, Optional

import nncf_wcam  # noqa: F401  (must precede nncf.torch)

nncf_wcam.require_nncf_generation(2, "The nncf-wcam command line")  # NNCF 3.x: see nncf_wcam.nncf3

import jsonschema
import nncf
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from nncf_wcam import distributed
from nncf_wcam.attribution import LayerNameError
from nncf_wcam.attribution import select_logits
from nncf_wcam.checkpoint import CHECKPOINT_NAME
from nncf_wcam.checkpoint import TEACHER_NAME
from nncf_wcam.checkpoint import CheckpointError
from nncf_wcam.checkpoint import atomic_write_text
from nncf_wcam.checkpoint import build_model
from nncf_wcam.checkpoint import load_checkpoint
from nncf_wcam.checkpoint import load_teacher_state
from nncf_wcam.checkpoint import model_spec
from nncf_wcam.checkpoint import restore_compressed_model
from nncf_wcam.checkpoint import save_checkpoint
from nncf_wcam.checkpoint import save_teacher
from nncf_wcam.checkpoint import set_rng_states
from nncf_wcam.config_files import ConfigNotFoundError
from nncf_wcam.config_files import resolve_config
from nncf_wcam.config_files import shipped_configs
from nncf_wcam.config_files import with_dataset_root_from
from nncf_wcam.data import NUM_CLASSES
from nncf_wcam.data import DataError
from nncf_wcam.data import DatasetSplit
from nncf_wcam.data import load_dataset
from nncf_wcam.export import ExportError
from nncf_wcam.export import UnsupportedDeviceError
from nncf_wcam.export import check_device
from nncf_wcam.export import export_ir
from nncf_wcam.export import to_jsonable
from nncf_wcam.folder_lock import FolderLock
from nncf_wcam.folder_lock import FolderLockedError
from nncf_wcam.nncf_plugin import AlgorithmConfigError
from nncf_wcam.nncf_plugin.algo import choose_layers
from nncf_wcam.nncf_plugin.algo import requested_layers
from nncf_wcam.nncf_plugin.schema import ATTRIBUTION_MATCHING
from nncf_wcam.report import compression_statistics
from nncf_wcam.report import evaluate_models
from nncf_wcam.report import summary_lines
from nncf_wcam.run_settings import DEFAULT_EVAL_SAMPLES
from nncf_wcam.run_settings import DEFAULT_TEACHER_EPOCHS
from nncf_wcam.run_settings import RUN_FILE
from nncf_wcam.run_settings import RunSettings
from nncf_wcam.run_settings import RunSettingsError
from nncf_wcam.run_settings import check_checkpoint
from nncf_wcam.run_settings import fresh_settings
from nncf_wcam.run_settings import read_run_settings
from nncf_wcam.run_settings import resumed_settings
from nncf_wcam.run_settings import settings_from_checkpoint
from nncf_wcam.run_settings import state_digest
from nncf_wcam.run_settings import write_run_settings
from nncf_wcam.training import attribution_controller
from nncf_wcam.training import batchnorm_frozen
from nncf_wcam.training import compress as create_compressed
from nncf_wcam.training import load_config
from nncf_wcam.training import make_lr_scheduler
from nncf_wcam.training import make_optimizer
from nncf_wcam.training import train_epoch
from nncf_wcam.training import train_teacher
from nncf_wcam.training import without_algorithm
from nncf_wcam.export import OutputFolderError
from nncf_wcam.run_config import ENVIRONMENT_ERRNOS
from nncf_wcam.run_config import RunConfigError
from nncf_wcam.run_config import check_run_config
from nncf_wcam.run_config import environment_error_line
from nncf_wcam.training import NonFiniteLossError

# Refusals of issue 13 (run configuration, non-finite losses, output folders not ours): one line, exit 2.
RUN_ERRORS = (RunConfigError, NonFiniteLossError, OutputFolderError)

PROG = "nncf-wcam"
EXIT_USAGE = 2
EXIT_FAILURE = 1
EXIT_INTERRUPTED = 130

DEFAULT_TEACHER_LR = 3e-3
TEACHER_BATCH_SIZE = 32  # the teacher's own training: small batches reach ~97 % on digits in 6 epochs
FIGURE_NAME = "attribution_maps.png"
REPORT_NAME = "report.json"
IR_DIR_NAME = "ir"
NAIVE_DIR_NAME = "naive"
NAIVE = "naive"

logger = logging.getLogger("nncf_wcam.cli")


class UsageError(Exception):
    """A problem with the user's inputs: reported as one line, exit code 2."""


# Errors that mean "fix your input", reported in one line with exit code 2.
USER_ERRORS = (
    UsageError,
    DataError,
    UnsupportedDeviceError,
    AlgorithmConfigError,
    LayerNameError,
    CheckpointError,
    RunSettingsError,
    FolderLockedError,
)


def one_line(error: BaseException) -> str:
    text = getattr(error, "message", None) if isinstance(error, jsonschema.ValidationError) else None
    text = " ".join((text or str(error) or type(error).__name__).split())
    return text


# --------------------------------------------------------------------------- console


class _Console:
    """What goes to the terminal: stage messages and bars (not with --quiet or --json), results (not with --json)."""

    quiet = False
    json = False
    summary: Optional[dict] = None

    @classmethod
    def configure(cls, args) -> None:
        cls.json = bool(getattr(args, "json", False))
        cls.quiet = bool(getattr(args, "quiet", False)) or cls.json
        cls.summary = None


def _say(message: str = "") -> None:
    """A stage message (rank 0; none with --quiet or --json)."""
    if distributed.is_main() and not _Console.quiet:
        tqdm.write(message, file=sys.stdout)


def _result(message: str = "") -> None:
    """A line of the result summary (none with --json, which prints the summary as JSON instead)."""
    if distributed.is_main() and not _Console.json:
        print(message, flush=True)


def _stage_bar(desc: str, total: int) -> tqdm:
    """One progress bar for a whole stage (all its epochs), with an ETA; none with --quiet or --json."""
    return tqdm(total=total, desc=desc, unit="step", leave=False, dynamic_ncols=True, disable=_Console.quiet or total == 0 or not distributed.is_main())


@contextlib.contextmanager
def _json_stdout(enabled: bool):
    """With --json, stdout holds only the summary: everything else written to it (NNCF's log, prints) goes to stderr."""
    if not enabled:
        yield
        return
    sys.stdout.flush()
    real = os.dup(1)
    os.dup2(2, 1)  # also what C++ code and subprocesses write
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        sys.stderr.flush()
        os.dup2(real, 1)
        os.close(real)


def _emit_json(summary: dict) -> None:
    """The command's JSON summary, printed by `main` once stdout is the terminal's again."""
    _Console.summary = to_jsonable(summary)


# --------------------------------------------------------------------------- inputs


def read_config(path: str) -> dict:
    """The config JSON as a dict; a missing file or bad JSON is a UsageError."""
    try:
        config_path = resolve_config(path)  # a file, or the name of a shipped config
    except ConfigNotFoundError as e:
        raise UsageError(str(e)) from e
    try:
        data = json.loads(config_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise UsageError(f"Config {path} is not valid JSON: {e.msg} at line {e.lineno}, column {e.colno}.") from e
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"Cannot read config {path}: {e}.") from e
    if not isinstance(data, dict):
        raise UsageError(f"Config {path} must hold a JSON object, not a {type(data).__name__}.")
    return with_dataset_root_from(data, config_path)  # a relative "root" is read from the config's folder


def validated_config(data: dict, source: str) -> nncf.NNCFConfig:
    try:
        return load_config(data)
    except jsonschema.ValidationError as e:
        raise UsageError(f"Config {source} is not a valid NNCF config: {one_line(e)}") from e
    except nncf.ValidationError as e:
        raise UsageError(f"Config {source}: {one_line(e)}") from e


def load_data(spec: Optional[dict]) -> DatasetSplit:
    if spec is not None and not isinstance(spec, dict):
        raise UsageError(f"The config's \"dataset\" must be an object like {{\"name\": \"digits\"}}, got {spec!r}.")
    try:
        return load_dataset(spec)
    except TypeError as e:
        raise UsageError(f"Bad \"dataset\" block {spec}: {e}.") from e


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


def checked_device(name: str) -> str:
    return check_device(name)  # UnsupportedDeviceError is a user error


def check_counts(**flags) -> None:
    """Counting flags (--epochs 3) must be positive: `check_counts(epochs=args.epochs, ...)`; None means not given."""
    for name, value in flags.items():
        if value is not None and value < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be a positive number, got {value}.")


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


def attribution_block(config: dict) -> Optional[dict]:
    sections = config.get("compression", [])
    sections = [sections] if isinstance(sections, dict) else sections
    return next((b for b in sections if isinstance(b, dict) and b.get("algorithm") == ATTRIBUTION_MATCHING), None)


def logits_output_of(config: dict):
    """The logits selector of the plugin blocks (attribution_matching first, then saliency_guided)."""
    sections = config.get("compression", [])
    sections = [sections] if isinstance(sections, dict) else sections
    for name in (ATTRIBUTION_MATCHING, "saliency_guided"):
        block = next((b for b in sections if isinstance(b, dict) and b.get("algorithm") == name), None)
        if block is not None and block.get("logits_output") is not None:
            return block["logits_output"]
    return None


def build_checked_model(spec: dict):
    try:
        return build_model(spec)
    except (ValueError, TypeError) as e:
        raise UsageError(one_line(e)) from e


def check_layers(model: torch.nn.Module, sample: torch.Tensor, requested) -> list:
    """The layers `requested` ("auto", ["auto"] or names) on a plain model, checked: they exist and have spatial outputs."""
    model.eval()
    return choose_layers(model, requested, lambda: model(sample))


# --------------------------------------------------------------------------- compress: resolving the run


@dataclass
class Run:
    """Everything `compress` resolved before any training: the settings and what they name."""

    output: Path
    settings: RunSettings
    raw: dict  # the config with the run's epochs and log_dir
    config: nncf.NNCFConfig
    naive_config: Optional[nncf.NNCFConfig]
    data: DatasetSplit
    spec: dict
    resume: bool
    teacher_state: Optional[dict] = None  # None: to be trained
    layers: list = field(default_factory=list)  # the matched layers (attribution_matching)
    report_layer: Optional[str] = None  # the Grad-CAM layer of the report
    layer_note: str = ""  # the line that tells the user which layer


def _apply_config_defaults(config: dict, settings: RunSettings, output: Path) -> dict:
    config = json.loads(json.dumps(config))
    config["epochs"] = settings.epochs
    config["log_dir"] = str(output / "nncf_logs")
    return config


def _check_compress_flags(args) -> None:
    check_counts(epochs=args.epochs, teacher_epochs=args.teacher_epochs, max_steps=args.max_steps, eval_samples=args.eval_samples)
    if args.device is not None:
        checked_device(args.device)
    if args.teacher and not Path(args.teacher).is_file():
        raise UsageError(f"Teacher file not found: {args.teacher}.")
    output = Path(args.output)
    if output.exists() and not output.is_dir():
        raise UsageError(f"Output path {output} exists and is not a folder.")
    if args.config is None and not args.resume:
        raise UsageError("--config is required for a new run (only --resume takes the config from the run's folder).")


def _saved_settings(args, output: Path) -> Optional[RunSettings]:
    """The settings of the run already in `output` (None when there is none); refuses a new run over an old one."""
    checkpoint_path = output / CHECKPOINT_NAME
    existing = next((name for name in (RUN_FILE, CHECKPOINT_NAME) if (output / name).is_file()), None)
    if existing and not args.resume:
        raise UsageError(f"{output} already holds a run ({existing}). Pass --resume to continue it, or choose another --output.")
    if not args.resume:
        return None
    saved = read_run_settings(output)
    if saved is None and checkpoint_path.is_file():  # a run from before run.json existed
        naive = (output / NAIVE_DIR_NAME / CHECKPOINT_NAME).is_file()
        saved = settings_from_checkpoint(load_checkpoint(checkpoint_path), args.config or str(checkpoint_path), compare_naive=naive)
    if saved is None:
        if args.config is None:
            raise UsageError(f"--resume: {output} holds no run to continue ({RUN_FILE} and {CHECKPOINT_NAME} are missing). Pass --config to start one.")
        _say(f"--resume: no run in {output} yet; starting from the beginning.")
    return saved


def _resolve_run(args, output: Path) -> Run:
    """Reads the config and the run's settings and checks them against each other; trains nothing, writes nothing."""
    saved = _saved_settings(args, output)
    config = read_config(args.config) if args.config is not None else None
    # The config as the run uses it: the one read, or on --resume without --config the run's own.
    checked = config if config is not None else getattr(saved, "config", None)
    if checked is not None:
        check_run_config(checked, args)  # the whole run configuration, before any work
    if saved is None:
        settings = fresh_settings(args, config, args.config)
    else:
        settings = resumed_settings(saved, args, config, args.config)
    raw = _apply_config_defaults(settings.config, settings, output)
    nncf_config = validated_config(raw, settings.config_path)
    data = load_data(raw.get("dataset"))
    check_input_info(raw, data)
    spec = model_spec(raw, data.image_shape[0], NUM_CLASSES)
    build_checked_model(spec)  # unknown model names fail here, before any training
    naive_config = None
    if settings.compare_naive:
        if attribution_block(raw) is None:
            raise UsageError(f"--compare-naive: config {settings.config_path} has no {ATTRIBUTION_MATCHING} block to leave out.")
        naive_config = without_algorithm(nncf_config, ATTRIBUTION_MATCHING)
        naive_config["log_dir"] = str(output / NAIVE_DIR_NAME / "nncf_logs")
    run = Run(output, settings, raw, nncf_config, naive_config, data, spec, resume=saved is not None)
    run.teacher_state = _known_teacher(args, run)
    if run.resume:  # checkpoints that another run wrote (a mixed folder) are refused before anything is written
        for path, used_config in ((output / CHECKPOINT_NAME, raw), (output / NAIVE_DIR_NAME / CHECKPOINT_NAME, naive_config)):
            if used_config is not None and path.is_file():
                check_checkpoint(load_checkpoint(path), path, settings=settings, config=dict(used_config), teacher_sha256=settings.teacher["sha256"])
    return run


def _known_teacher(args, run: Run) -> Optional[dict]:
    """The teacher weights the run already has (None: it has none yet, train one), checked against the run's record."""
    settings, output = run.settings, run.output
    recorded = settings.teacher.get("sha256")
    candidates = []  # (where, loader) in order of preference
    if args.teacher:
        candidates.append((f"--teacher {args.teacher}", lambda: load_teacher_state(args.teacher, run.spec)))
    if run.resume:
        if (output / TEACHER_NAME).is_file():
            candidates.append((str(output / TEACHER_NAME), lambda: load_teacher_state(output / TEACHER_NAME, run.spec)))
        if (output / CHECKPOINT_NAME).is_file():
            candidates.append((str(output / CHECKPOINT_NAME), lambda: load_checkpoint(output / CHECKPOINT_NAME)["teacher_state_dict"]))
        if settings.teacher.get("path") and not args.teacher:
            candidates.append((settings.teacher["path"], lambda: load_teacher_state(settings.teacher["path"], run.spec)))
    for where, load in candidates:
        state = load()
        digest = state_digest(state)
        if recorded is not None and digest != recorded:
            if where.startswith("--teacher"):
                raise RunSettingsError(f"{where} holds other weights than this run's teacher; drop the flag or start a new --output.")
            raise RunSettingsError(f"{where} holds another teacher than the one this run recorded in {RUN_FILE}: the folder mixes two runs. Start a new run in another --output.")
        settings.teacher["sha256"] = digest
        return state
    if recorded is not None:
        raise RunSettingsError(f"--resume: this run's teacher is gone ({TEACHER_NAME} and {CHECKPOINT_NAME} are missing in {output}). Start a new run in another --output.")
    return None


def check_model_settings(run: Run) -> None:
    """Model-dependent settings, checked on the uncompressed model before NNCF's initialization (which costs minutes on big data).

    The output's logits, and the matched layers: they exist, run, and have spatial outputs ("auto" resolved).
    """
    model = build_checked_model(run.spec).eval()
    sample = run.data.test.tensors[0][:2]
    logits_output = logits_output_of(run.raw)
    with torch.no_grad():
        output = model(sample)
    try:
        select_logits(output, logits_output)
    except ValueError as e:
        raise UsageError(one_line(e)) from e
    block = attribution_block(run.raw)
    if block is not None:
        requested = block.get("layers", "auto")
        run.layers = check_layers(model, sample, requested)
        how = " (chosen by \"layers\": \"auto\")" if requested_layers(requested) == "auto" else ""
        run.layer_note = f"Matched layer{'s' if len(run.layers) > 1 else ''}: {', '.join(run.layers)}{how}"
        run.report_layer = run.layers[0]
    else:
        run.report_layer = check_layers(model, sample, "auto")[0]
        run.layer_note = f"Grad-CAM layer of the report: {run.report_layer} (the last spatial feature map)"


# --------------------------------------------------------------------------- compress: training


@dataclass
class RunResult:
    label: str
    compression_ctrl: Any
    model: torch.nn.Module
    history: list
    checkpoint: Path
    train_seconds: float
    resumed_from_epoch: Optional[int] = None
    layers: list = field(default_factory=list)


def _train_teacher(run: Run) -> tuple:
    """(teacher state_dict, seconds): the run's teacher, trained here when it has none yet (rank 0, broadcast)."""
    start = time.perf_counter()
    settings, teacher_path = run.settings, run.output / TEACHER_NAME
    if run.teacher_state is not None:
        if distributed.is_main() and not teacher_path.is_file():
            model = build_checked_model(run.spec)
            model.load_state_dict(run.teacher_state)
            save_teacher(teacher_path, model, run.spec, source=settings.teacher.get("path"), dataset=run.data.description)
        return run.teacher_state, time.perf_counter() - start
    state = None
    if distributed.is_main():
        torch.manual_seed(settings.seed)
        model = build_checked_model(run.spec)
        epochs, steps = settings.teacher_epochs, -(-len(run.data.train) // TEACHER_BATCH_SIZE)
        _say(f"Training the teacher ({run.spec['name']}, {epochs} epochs) ...")
        with _stage_bar("teacher", epochs * steps) as bar:
            train_teacher(
                model,
                run.data.train,
                epochs=epochs,
                lr=DEFAULT_TEACHER_LR,
                batch_size=TEACHER_BATCH_SIZE,
                seed=settings.seed,
                logits_output=logits_output_of(run.raw),
                bar=bar,
            )
        state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        save_teacher(teacher_path, model, run.spec, epochs=epochs, seed=settings.seed, dataset=run.data.description)
        settings.teacher["sha256"] = state_digest(state)
        write_run_settings(run.output, settings)  # from here on, a resume uses this teacher and never trains another
    state = distributed.broadcast_object(state)
    run.teacher_state = state
    return state, time.perf_counter() - start


def run_compression(
    label: str,
    config: nncf.NNCFConfig,
    raw: dict,
    run: Run,
    checkpoint_path: Path,
    *,
    default_layers: Optional[list] = None,
) -> RunResult:
    """Compression-aware training of one config, checkpointed after every epoch (rank 0), resumable."""
    start = time.perf_counter()
    settings, data, spec, teacher_state = run.settings, run.data, run.spec, run.teacher_state
    epochs, seed, max_steps = settings.epochs, settings.seed, settings.max_steps
    logits_output = logits_output_of(run.raw)
    Path(config.get("log_dir", ".")).mkdir(parents=True, exist_ok=True)
    checkpoint = load_checkpoint(checkpoint_path) if run.resume and checkpoint_path.is_file() else None
    torch.manual_seed(seed)
    model = build_checked_model(spec)
    model.load_state_dict(teacher_state)  # the teacher's weights: the attribution_matching builder copies them
    batch_size = settings.batch_size
    if checkpoint is not None:
        from nncf.torch import create_compressed_model, load_state

        compression_ctrl, compressed = create_compressed_model(model, config, compression_state=checkpoint["compression_state"])
        load_state(compressed, checkpoint["state_dict"], is_resume=True)
    else:
        compression_ctrl, compressed = create_compressed(model, config, data.train, batch_size=batch_size)
    device = distributed.device()
    compressed.to(device)
    train_model = distributed.wrap_ddp(compressed, compression_ctrl)
    optimizer_spec = raw.get("optimizer")
    optimizer = make_optimizer(compressed.parameters(), optimizer_spec)
    lr_scheduler = make_lr_scheduler(optimizer, optimizer_spec, epochs)
    start_epoch, history = 0, []
    if checkpoint is not None:
        if checkpoint.get("world_size", 1) != distributed.world_size():
            _say(
                f"[{label}] note: the checkpoint was written by {checkpoint.get('world_size', 1)} process(es), this run has "
                f"{distributed.world_size()}: the data shards differ from an uninterrupted run."
            )
        optimizer.load_state_dict(checkpoint["optimizer"])
        if lr_scheduler is not None and checkpoint.get("lr_scheduler") is not None:
            lr_scheduler.load_state_dict(checkpoint["lr_scheduler"])
        start_epoch, history = checkpoint["epoch"], list(checkpoint["history"])
        set_rng_states(checkpoint["rng"])
        _say(f"[{label}] resuming after epoch {start_epoch}/{epochs} from {checkpoint_path}")
    local_batch = max(1, batch_size // distributed.world_size())
    sampler = distributed.make_sampler(data.train, seed)
    loader = DataLoader(data.train, batch_size=local_batch, sampler=sampler)
    am_ctrl = attribution_controller(compression_ctrl)
    layers = list(am_ctrl.matcher.layers) if am_ctrl is not None else list(default_layers or [])
    steps = len(loader) if max_steps is None else min(len(loader), max_steps)
    with _stage_bar(label, (epochs - start_epoch) * steps) as bar:
        for epoch in range(start_epoch, epochs):
            records = train_epoch(
                compression_ctrl,
                train_model,
                loader,
                optimizer,
                epoch,
                epochs,
                max_steps=max_steps,
                logits_output=logits_output,
                device=device,
                desc=label,
                bar=bar,
                freeze_bn=batchnorm_frozen(epoch, epochs, raw.get("freeze_bn_epochs", 0)),
            )
            history.extend(records)
            if lr_scheduler is not None:
                lr_scheduler.step()
            if distributed.is_main():
                save_checkpoint(
                    checkpoint_path,
                    config=raw,
                    spec=spec,
                    compression_ctrl=compression_ctrl,
                    model=compressed,
                    teacher_state_dict=teacher_state,
                    optimizer=optimizer,
                    lr_scheduler=lr_scheduler,
                    epoch=epoch + 1,
                    epochs=epochs,
                    seed=seed,
                    history=history,
                    label=label,
                    dataset=raw.get("dataset"),
                    max_steps=max_steps,
                    world_size=distributed.world_size(),
                    matched_layers=layers,
                )
            distributed.barrier()
            if records:
                task = sum(r["task_loss"] for r in records) / len(records)
                compression = sum(r["compression_loss"] for r in records) / len(records)
                _say(f"[{label}] epoch {epoch + 1}/{epochs}: mean task loss {task:.4f}, mean compression loss {compression:.4f} ({len(records)} steps)")
    return RunResult(
        label=label,
        compression_ctrl=compression_ctrl,
        model=compressed,
        history=history,
        checkpoint=checkpoint_path,
        train_seconds=time.perf_counter() - start,
        resumed_from_epoch=checkpoint["epoch"] if checkpoint is not None else None,
        layers=layers,
    )


# --------------------------------------------------------------------------- commands


def _quiet_nncf(verbose: bool) -> None:
    if not verbose:
        nncf.set_log_level(logging.WARNING)
        warnings.filterwarnings("ignore", message=r".*create_compressed_model' function is deprecated.*")
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message=r".*tensor\.detach\(\) first.*")


def cmd_compress(args) -> int:
    total_start = time.perf_counter()
    distributed.init_from_env()
    _quiet_nncf(args.verbose)
    _check_compress_flags(args)
    output = Path(args.output)
    # One run at a time in a folder (rank 0 holds the lock for all ranks).
    lock = FolderLock(output) if distributed.is_main() else contextlib.nullcontext()
    with lock:
        if getattr(lock, "taken_over", None):
            _say(f"note: took over the lock of a run that is no longer running ({lock.taken_over})")
        run = _resolve_run(args, output)
        check_model_settings(run)
        world = distributed.world_size()
        _say(
            f"nncf-wcam compress: {run.settings.config_path} -> {output} ({run.data.description}; model {run.spec['name']}; "
            f"{run.settings.epochs} epochs; seed {run.settings.seed}; {world} process{'es' if world > 1 else ''})"
            + (" (resumed)" if run.resume else "")
        )
        _say(run.layer_note)
        return _compress(run, total_start)


def _compress(run: Run, total_start: float) -> int:
    settings, output, raw, data = run.settings, run.output, run.raw, run.data
    distributed.barrier()  # every rank has read the folder's state before rank 0 writes run.json
    if distributed.is_main():
        write_run_settings(output, settings)
    distributed.barrier()
    world = distributed.world_size()

    timings = {}
    teacher_state, timings["teacher_s"] = _train_teacher(run)
    label = ATTRIBUTION_MATCHING if attribution_block(raw) is not None else "compressed"
    runs = [run_compression(label, run.config, raw, run, output / CHECKPOINT_NAME)]
    timings[f"{label}_training_s"] = runs[0].train_seconds
    if run.naive_config is not None:
        naive_raw = dict(run.naive_config)
        naive_run = run_compression(NAIVE, run.naive_config, naive_raw, run, output / NAIVE_DIR_NAME / CHECKPOINT_NAME, default_layers=runs[0].layers)
        timings[f"{NAIVE}_training_s"] = naive_run.train_seconds
        runs.append(naive_run)
    if not distributed.is_main():
        return 0

    for result in runs:
        result.model.to("cpu")  # export and evaluation run on the CPU (training may have used a GPU)
    main_run = runs[0]
    device = checked_device(settings.device)
    samples = data.test.tensors[0][: settings.eval_samples]
    _say(f"Exporting the OpenVINO IR to {output / IR_DIR_NAME} ...")
    start = time.perf_counter()
    exported = export_ir(
        main_run.compression_ctrl,
        main_run.model,
        output / IR_DIR_NAME,
        samples,
        config=raw,
        device=device,
        logits_output=logits_output_of(raw),
        matched_layers=main_run.layers,
    )
    timings["export_s"] = time.perf_counter() - start

    _say(f"Evaluating attributions on {settings.eval_samples} test samples ...")
    start = time.perf_counter()
    teacher = build_checked_model(run.spec)
    teacher.load_state_dict(teacher_state)
    layer = main_run.layers[0] if main_run.layers else run.report_layer
    evaluated = evaluate_models(
        teacher,
        {result.label: result.model for result in runs},
        data,
        layer,
        settings.eval_samples,
        logits_output=logits_output_of(raw),
        ir_dir=output / IR_DIR_NAME,
        ir_student=main_run.label,
        device=device,
        figure=output / FIGURE_NAME,
    )
    timings["evaluation_s"] = time.perf_counter() - start
    timings["total_s"] = time.perf_counter() - total_start

    for result in runs:
        entry = evaluated["students"][result.label]
        entry["algorithms"] = [b.get("algorithm") for b in _blocks(raw if result is main_run else dict(run.naive_config))]
        entry["compression"] = compression_statistics(result.compression_ctrl)
        entry["checkpoint"] = str(result.checkpoint)
        entry["resumed_from_epoch"] = result.resumed_from_epoch
        entry["steps"] = len(result.history)
        entry["final_losses"] = result.history[-1] if result.history else None
        entry["training_s"] = result.train_seconds
    evaluated["ir"]["manifest"] = str(exported.manifest_path)
    evaluated["ir"]["parity"] = exported.manifest["parity"]
    evaluated["ir"]["precision"] = exported.manifest["precision"]
    teacher_info = settings.teacher
    report = {
        "command": "compress",
        "config": settings.config_path,
        "config_sha256": settings.config_sha256,
        "output": str(output),
        "dataset": {
            "name": data.name,
            "description": data.description,
            "image_shape": list(data.image_shape),
            "train_samples": len(data.train),
            "test_samples": len(data.test),
        },
        "model": run.spec,
        "teacher": {
            "source": teacher_info["source"],
            "path": teacher_info.get("path") or str(output / TEACHER_NAME),
            "epochs": settings.teacher_epochs if teacher_info["source"] == "trained" else None,
            "sha256": teacher_info.get("sha256"),
        },
        "matched_layers": main_run.layers,
        "epochs": settings.epochs,
        "max_steps_per_epoch": settings.max_steps,
        "seed": settings.seed,
        "world_size": world,
        "evaluation": evaluated,
        "timings": timings,
        "versions": exported.manifest.get("versions"),
    }
    atomic_write_text(output / REPORT_NAME, json.dumps(to_jsonable(report), indent=2))

    _result()
    for line in summary_lines(evaluated):
        _result(line)
    ir = evaluated["ir"]
    _result(
        f"IR: {exported.xml_path} ({exported.manifest['precision']}; parity with PyTorch: max |logit diff| "
        f"{ir['parity']['max_abs_diff']:.2g}, top-1 agreement {ir['parity']['top1_agreement']:.4f})"
    )
    _result(f"Report: {output / REPORT_NAME}   Figure: {output / FIGURE_NAME}")
    parts = [f"{name[:-2].replace('_', ' ')} {seconds:.0f} s" for name, seconds in timings.items() if name != "total_s"]
    _result(f"Time: {', '.join(parts)}; total {timings['total_s']:.0f} s")
    _emit_json(
        {
            "command": "compress",
            "output": str(output),
            "report": str(output / REPORT_NAME),
            "figure": str(output / FIGURE_NAME),
            "ir": str(exported.xml_path),
            "matched_layers": main_run.layers,
            "evaluation": {k: v for k, v in evaluated.items() if k != "students"}
            | {"students": {label: _brief(entry) for label, entry in evaluated["students"].items()}},
            "timings": timings,
        }
    )
    return 0


def _brief(entry: dict) -> dict:
    """A student's scores without the long compression statistics (those are in report.json)."""
    return {k: v for k, v in entry.items() if k != "compression"}


def _blocks(config: dict) -> list:
    sections = config.get("compression", [])
    return [sections] if isinstance(sections, dict) else list(sections)


def _restore(checkpoint_path: str, log_dir: Path) -> tuple:
    checkpoint = load_checkpoint(checkpoint_path)
    data = load_data(checkpoint.get("dataset", checkpoint["config"].get("dataset")))
    compression_ctrl, model, teacher = restore_compressed_model(checkpoint, log_dir=log_dir)
    return checkpoint, data, compression_ctrl, model, teacher


def _check_checkpoint_flag(path: str) -> None:
    if not Path(path).is_file():
        hint = f" (a folder: pass {Path(path) / CHECKPOINT_NAME})" if Path(path).is_dir() else ""
        raise UsageError(f"Checkpoint not found: {path}{hint}.")


def cmd_export(args) -> int:
    _quiet_nncf(args.verbose)
    check_counts(eval_samples=args.eval_samples)
    device = checked_device(args.device)
    # The device the IR is for may be absent here (export on a workstation, deploy on an NPU machine).
    target_device = check_device(args.target_device, must_be_present=False) if args.target_device else None
    output = Path(args.output)
    _check_checkpoint_flag(args.checkpoint)
    if output.exists() and not output.is_dir():
        raise UsageError(f"Output path {output} exists and is not a folder. Name a folder for the IR.")
    with _scratch_dir() as log_dir:
        checkpoint, data, compression_ctrl, model, _ = _restore(args.checkpoint, log_dir)
        samples = data.test.tensors[0][: args.eval_samples]
        _say(f"Exporting {args.checkpoint} to {output} ...")
        result = export_ir(
            compression_ctrl,
            model,
            output,
            samples,
            config=checkpoint["config"],
            dynamic_batch=not args.static_shape,
            device=device,
            target_device=target_device,
            logits_output=logits_output_of(checkpoint["config"]),
            matched_layers=checkpoint.get("matched_layers"),
        )
    parity = result.manifest["parity"]
    _result(
        f"Exported {args.checkpoint} (epoch {checkpoint['epoch']}/{checkpoint['epochs']}) to {result.xml_path} for {device}: "
        f"{result.manifest['precision']}, input shape {result.manifest['input_shape']}, parity max |logit diff| "
        f"{parity['max_abs_diff']:.2g}, top-1 agreement {parity['top1_agreement']:.4f}."
    )
    for note in result.manifest.get("notes", []):
        _result(f"Note: {note}")
    _emit_json(
        {
            "command": "export",
            "checkpoint": str(args.checkpoint),
            "ir": str(result.xml_path),
            "manifest": str(result.manifest_path),
            "device": device,
            "precision": result.manifest["precision"],
            "input_shape": result.manifest["input_shape"],
            "parity": parity,
            "matched_layers": result.manifest.get("matched_layers"),
            "notes": result.manifest.get("notes", []),
        }
    )
    return 0


def cmd_evaluate(args) -> int:
    _quiet_nncf(args.verbose)
    check_counts(eval_samples=args.eval_samples)
    device = checked_device(args.device)
    _check_checkpoint_flag(args.checkpoint)
    check_output_file(args.output, "--output")
    check_output_file(args.figure, "--figure")
    ir_dir = Path(args.ir) if args.ir else Path(args.checkpoint).parent / IR_DIR_NAME
    if args.ir and not (ir_dir / "model.xml").is_file() and not (ir_dir.suffix == ".xml" and ir_dir.is_file()):
        raise UsageError(f"No OpenVINO IR at {args.ir}: pass the folder written by `nncf-wcam export` (model.xml inside).")
    if not args.ir and not (ir_dir / "model.xml").is_file():
        ir_dir = None
    with _scratch_dir() as log_dir:
        checkpoint, data, compression_ctrl, model, teacher = _restore(args.checkpoint, log_dir)
        config = checkpoint["config"]
        sample = data.test.tensors[0][:2]
        if args.layer:  # checked before any attribution is computed: unknown and non-spatial layers are errors, never scores
            layer = check_layers(teacher, sample, [args.layer] if args.layer != "auto" else "auto")[0]
        else:
            layers = checkpoint.get("matched_layers") or check_layers(teacher, sample, "auto")
            layer = layers[0]
        label = checkpoint.get("label", "student")
        _say(f"Evaluating {args.checkpoint} at layer {layer} on {args.eval_samples} test samples ...")
        evaluated = evaluate_models(
            teacher,
            {label: model},
            data,
            layer,
            args.eval_samples,
            logits_output=logits_output_of(config),
            ir_dir=ir_dir,
            ir_student=label,
            device=device,
            figure=Path(args.figure) if args.figure else None,
        )
    evaluated["checkpoint"] = str(args.checkpoint)
    evaluated["epoch"] = checkpoint["epoch"]
    evaluated["compression"] = compression_statistics(compression_ctrl)
    if args.output:
        atomic_write_text(args.output, json.dumps(to_jsonable(evaluated), indent=2))
    _result(f"nncf-wcam evaluate: {args.checkpoint} (epoch {checkpoint['epoch']}/{checkpoint['epochs']})")
    for line in summary_lines(evaluated):
        _result(line)
    if args.output:
        _result(f"Report: {args.output}")
    if args.figure:
        _result(f"Figure: {args.figure}")
    _emit_json({"command": "evaluate", "report": args.output, **{k: v for k, v in evaluated.items() if k != "compression"}})
    return 0


class _scratch_dir:
    """A temporary folder for NNCF's graph dumps when restoring a model (nothing kept)."""

    def __enter__(self) -> Path:
        import tempfile

        self._tmp = tempfile.TemporaryDirectory(prefix="nncf_wcam_")
        return Path(self._tmp.name)

    def __exit__(self, *exc) -> None:
        self._tmp.cleanup()


def cmd_configs(args) -> int:
    for name in shipped_configs():
        print(name)
    return 0


# --------------------------------------------------------------------------- parser


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit code 2 (argparse prints the whole usage)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _add_output_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quiet", action="store_true", help="no progress bars or stage messages: only the result summary and errors")
    parser.add_argument("--json", action="store_true", help="print only a machine-readable JSON summary on stdout (implies --quiet)")
    parser.add_argument("--verbose", action="store_true", help="NNCF's info messages")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="Attribution-preserving compression with NNCF: train, export, evaluate.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    compress = commands.add_parser("compress", help="train the teacher, compress with the config, export the IR, report")
    compress.add_argument("--config", help="NNCF JSON config with an attribution_matching block: a path, or a shipped config's name (nncf-wcam configs); with --resume, the run's own by default")
    compress.add_argument("--output", required=True, help="output folder (run.json, teacher.pt, checkpoint.pt, ir/, report.json, PNG)")
    compress.add_argument("--teacher", help="teacher weights (teacher.pt, checkpoint.pt or a state_dict); trained here when absent")
    compress.add_argument("--compare-naive", action="store_true", help="also compress without attribution_matching (same seeds) and compare")
    compress.add_argument("--resume", action="store_true", help="continue the run in --output from its last checkpoint, with the run's own settings")
    compress.add_argument("--epochs", type=int, help="compression epochs (default: the config's \"epochs\", else 4)")
    compress.add_argument("--teacher-epochs", type=int, help=f"teacher training epochs (default {DEFAULT_TEACHER_EPOCHS})")
    compress.add_argument("--max-steps", type=int, help="at most this many training steps per epoch (smoke tests)")
    compress.add_argument("--seed", type=int, help="seed of data order and initialization (default: the config's \"seed\" or 0)")
    compress.add_argument("--device", help="OpenVINO device for the IR: CPU, GPU, NPU, AUTO (default CPU)")
    compress.add_argument("--eval-samples", type=int, help=f"test samples for attribution agreement (default {DEFAULT_EVAL_SAMPLES})")
    _add_output_flags(compress)
    compress.set_defaults(func=cmd_compress)

    export = commands.add_parser("export", help="export a checkpoint's compressed model to OpenVINO IR")
    export.add_argument("--checkpoint", required=True, help="checkpoint.pt written by compress")
    export.add_argument("--output", required=True, help="IR folder (model.xml, model.bin, manifest.json), replaced as a whole")
    export.add_argument("--static-shape", action="store_true", help="static batch of 1 (NPU needs it; implied for NPU)")
    export.add_argument("--device", default="CPU", help="OpenVINO device to check the IR on: CPU, GPU, NPU, AUTO (default CPU)")
    export.add_argument("--target-device", help="device the IR is meant for, which may be absent here: NPU gives a static batch of 1 and NCHW layout, compiled only where an NPU exists (default: --device)")
    export.add_argument("--eval-samples", type=int, default=DEFAULT_EVAL_SAMPLES, help="test samples for the parity check")
    _add_output_flags(export)
    export.set_defaults(func=cmd_export)

    configs = commands.add_parser("configs", help="list the configs shipped with the package (usable by name in --config)")
    configs.set_defaults(func=cmd_configs)

    evaluate = commands.add_parser("evaluate", help="teacher vs student attribution agreement, PyTorch and IR")
    evaluate.add_argument("--checkpoint", required=True, help="checkpoint.pt written by compress")
    evaluate.add_argument("--ir", help="IR folder to evaluate (default: ir/ beside the checkpoint, if present)")
    evaluate.add_argument("--device", default="CPU", help="OpenVINO device for the IR (default CPU)")
    evaluate.add_argument("--layer", help="Grad-CAM layer with a spatial output (default: the matched layer; \"auto\": the last spatial one)")
    evaluate.add_argument("--eval-samples", type=int, default=DEFAULT_EVAL_SAMPLES, help=f"test samples (default {DEFAULT_EVAL_SAMPLES})")
    evaluate.add_argument("--output", help="write the results as JSON to this file")
    evaluate.add_argument("--figure", help="write a PNG of teacher and student Grad-CAM maps to this file")
    _add_output_flags(evaluate)
    evaluate.set_defaults(func=cmd_evaluate)
    return parser


def main(argv: Optional[list] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _Console.configure(args)
    try:
        with _json_stdout(_Console.json):
            code = args.func(args)
        if _Console.json and _Console.summary is not None and distributed.is_main():
            print(json.dumps(_Console.summary), flush=True)
    except (*USER_ERRORS, *RUN_ERRORS) as e:
        print(f"{PROG} {args.command}: error: {one_line(e)}", file=sys.stderr)
        return EXIT_USAGE
    except RecursionError:
        print(f"{PROG} {args.command}: error: the config nests too deeply to read. Fix: NNCF configs need 6 levels or fewer; check the file.", file=sys.stderr)
        return EXIT_USAGE
    except OSError as e:
        if e.errno not in ENVIRONMENT_ERRNOS:
            raise
        print(f"{PROG} {args.command}: error: {environment_error_line(e)}", file=sys.stderr)
        return EXIT_USAGE
    except ExportError as e:
        print(f"{PROG} {args.command}: export failed: {one_line(e)}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        hint = " (the last completed epoch's checkpoint is kept: continue with --resume)" if args.command == "compress" else ""
        print(f"{PROG} {args.command}: interrupted{hint}", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        distributed.cleanup()
    return code


if __name__ == "__main__":
    sys.exit(main())
