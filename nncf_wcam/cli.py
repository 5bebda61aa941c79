"""The `nncf-wcam` command line: compress, export, evaluate.

    nncf-wcam compress --config nncf_wcam/configs/quantization_int8_wcam.json --output runs/int8 [--compare-naive]
    nncf-wcam export   --checkpoint runs/int8/checkpoint.pt --output runs/int8/ir_npu --static-shape --device NPU
    nncf-wcam evaluate --checkpoint runs/int8/checkpoint.pt [--ir runs/int8/ir]

`compress` under torchrun (`torchrun --nproc_per_node N -m nncf_wcam.cli compress ...`) trains with
DistributedDataParallel; rank 0 alone writes the teacher, checkpoints, IR and report.

Output folder of `compress`:
    teacher.pt            the uncompressed teacher (trained here unless --teacher was given)
    checkpoint.pt         the compressed student, written after every epoch (--resume continues from it)
    naive/checkpoint.pt   with --compare-naive: the same compression without attribution_matching
    ir/                   OpenVINO IR of the student (model.xml, model.bin, manifest.json)
    report.json           accuracies, attribution agreement, compression statistics, timings, dataset
    attribution_maps.png  Grad-CAM maps of teacher and student(s) over test samples
    nncf_logs/            NNCF's graph dumps

User errors (missing or malformed config, unknown dataset or model, missing data, unsupported
device, unreadable checkpoint) print one line on stderr and exit with code 2.
"""

import argparse
import json
import logging
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional


import nncf_wcam  # noqa: F401  (must precede nncf.torch)

import jsonschema
import nncf
import torch
from torch.utils.data import DataLoader

from nncf_wcam import distributed
from nncf_wcam.attribution import LayerNameError
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
from nncf_wcam.data import NUM_CLASSES
from nncf_wcam.data import DataError
from nncf_wcam.data import DatasetSplit
from nncf_wcam.data import load_dataset
from nncf_wcam.export import ExportError
from nncf_wcam.export import UnsupportedDeviceError
from nncf_wcam.export import check_device
from nncf_wcam.export import export_ir
from nncf_wcam.export import to_jsonable
from nncf_wcam.nncf_plugin import AlgorithmConfigError
from nncf_wcam.report import compression_statistics
from nncf_wcam.report import default_layer
from nncf_wcam.report import evaluate_models
from nncf_wcam.report import summary_lines
from nncf_wcam.nncf_plugin.schema import ATTRIBUTION_MATCHING
from nncf_wcam.training import attribution_controller
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

DEFAULT_EPOCHS = 4  # when the config has no "epochs"
DEFAULT_TEACHER_EPOCHS = 6
DEFAULT_TEACHER_LR = 3e-3
TEACHER_BATCH_SIZE = 32  # the teacher's own training: small batches reach ~97 % on digits in 6 epochs
DEFAULT_EVAL_SAMPLES = 64
FIGURE_NAME = "attribution_maps.png"
REPORT_NAME = "report.json"
IR_DIR_NAME = "ir"
NAIVE_DIR_NAME = "naive"
NAIVE = "naive"

logger = logging.getLogger("nncf_wcam.cli")


class UsageError(Exception):
    """A problem with the user's inputs: reported as one line, exit code 2."""


# Errors that mean "fix your input", reported in one line with exit code 2.
USER_ERRORS = (UsageError, DataError, UnsupportedDeviceError, AlgorithmConfigError, LayerNameError, CheckpointError)


def one_line(error: BaseException) -> str:
    text = getattr(error, "message", None) if isinstance(error, jsonschema.ValidationError) else None
    text = " ".join((text or str(error) or type(error).__name__).split())
    return text


def _say(message: str = "") -> None:
    if distributed.is_main():
        print(message, flush=True)


# --------------------------------------------------------------------------- inputs


def read_config(path: str) -> dict:
    """The config JSON as a dict; a missing file or bad JSON is a UsageError."""
    config_path = Path(path)
    if not config_path.is_file():
        raise UsageError(f"Config file not found: {path}. Pass the path of an NNCF JSON config (see nncf_wcam/configs/).")
    try:
        data = json.loads(config_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise UsageError(f"Config {path} is not valid JSON: {e.msg} at line {e.lineno}, column {e.colno}.") from e
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"Cannot read config {path}: {e}.") from e
    if not isinstance(data, dict):
        raise UsageError(f"Config {path} must hold a JSON object, not a {type(data).__name__}.")
    return data


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


# --------------------------------------------------------------------------- training


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


def _apply_config_defaults(config: dict, output: Path) -> dict:
    config = json.loads(json.dumps(config))
    config["log_dir"] = str(output / "nncf_logs")
    return config


def _train_teacher(args, raw: dict, data: DatasetSplit, spec: dict, output: Path, seed: int) -> tuple:
    """(teacher state_dict, where it came from, seconds): loaded from --teacher, reused on --resume, or trained."""
    teacher_path = output / TEACHER_NAME
    start = time.perf_counter()
    if args.teacher:
        state = load_teacher_state(args.teacher, spec)
        return state, str(args.teacher), time.perf_counter() - start
    if args.resume and teacher_path.is_file():
        state = load_teacher_state(teacher_path, spec)
        return state, str(teacher_path), time.perf_counter() - start
    state = None
    if distributed.is_main():
        torch.manual_seed(seed)
        model = build_checked_model(spec)
        _say(f"Training the teacher ({spec['name']}, {args.teacher_epochs} epochs) ...")
        train_teacher(
            model,
            data.train,
            epochs=args.teacher_epochs,
            lr=DEFAULT_TEACHER_LR,
            batch_size=TEACHER_BATCH_SIZE,
            seed=seed,
            progress=not args.quiet,
            logits_output=logits_output_of(raw),
        )
        state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        save_teacher(teacher_path, model, spec, epochs=args.teacher_epochs, seed=seed, dataset=data.description)
    state = distributed.broadcast_object(state)
    return state, "trained", time.perf_counter() - start


def run_compression(
    label: str,
    config: nncf.NNCFConfig,
    raw: dict,
    data: DatasetSplit,
    spec: dict,
    teacher_state: dict,
    checkpoint_path: Path,
    *,
    epochs: int,
    seed: int,
    resume: bool,
    max_steps: Optional[int],
    progress: bool,
    logits_output=None,
    default_layers: Optional[list] = None,
) -> RunResult:
    """Compression-aware training of one config, checkpointed after every epoch (rank 0), resumable."""
    start = time.perf_counter()
    Path(config.get("log_dir", ".")).mkdir(parents=True, exist_ok=True)
    checkpoint = load_checkpoint(checkpoint_path) if resume and checkpoint_path.is_file() else None
    if checkpoint is not None:
        for key in ("compression", "model", "model_kwargs", "dataset", "input_info"):
            if checkpoint["config"].get(key) != json.loads(json.dumps(raw.get(key))):
                msg = (
                    f"--resume: the config's \"{key}\" differs from the one {checkpoint_path} was trained with. "
                    "Resume with the same config, or start a new run in another --output."
                )
                raise UsageError(msg)
    torch.manual_seed(seed)
    model = build_checked_model(spec)
    model.load_state_dict(teacher_state)  # the teacher's weights: the attribution_matching builder copies them
    batch_size = int(raw.get("batch_size", 64))
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
            progress=progress and distributed.is_main(),
            device=device,
            desc=label,
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
    device = checked_device(args.device)
    raw = read_config(args.config)
    check_run_config(raw, args)  # the whole run configuration, before any work
    output = Path(args.output)
    if output.exists() and not output.is_dir():
        raise UsageError(f"Output path {output} exists and is not a folder.")
    if (output / CHECKPOINT_NAME).is_file() and not args.resume:
        raise UsageError(f"{output} already holds a run ({CHECKPOINT_NAME}). Pass --resume to continue it, or choose another --output.")
    for name, value in (("--epochs", args.epochs), ("--teacher-epochs", args.teacher_epochs), ("--max-steps", args.max_steps)):
        if value is not None and value < 1:
            raise UsageError(f"{name} must be a positive number, got {value}.")
    if args.teacher and not Path(args.teacher).is_file():
        raise UsageError(f"Teacher file not found: {args.teacher}.")
    if args.epochs is not None:
        raw["epochs"] = args.epochs
    epochs = int(raw.get("epochs", DEFAULT_EPOCHS))
    seed = args.seed if args.seed is not None else int(raw.get("seed", 0))
    raw = _apply_config_defaults(raw, output)
    config = validated_config(raw, args.config)
    data = load_data(raw.get("dataset"))
    check_input_info(raw, data)
    spec = model_spec(raw, data.image_shape[0], NUM_CLASSES)
    build_checked_model(spec)  # unknown model names fail here, before any training
    naive_config = None
    if args.compare_naive:
        if attribution_block(raw) is None:
            raise UsageError(f"--compare-naive: config {args.config} has no {ATTRIBUTION_MATCHING} block to leave out.")
        naive_config = without_algorithm(config, ATTRIBUTION_MATCHING)
        naive_config["log_dir"] = str(output / NAIVE_DIR_NAME / "nncf_logs")
    if args.resume and not (output / CHECKPOINT_NAME).is_file():
        _say(f"--resume: no checkpoint in {output} yet; starting from the beginning.")
    if distributed.is_main():
        output.mkdir(parents=True, exist_ok=True)
    distributed.barrier()
    world = distributed.world_size()
    _say(
        f"nncf-wcam compress: {args.config} -> {output} ({data.description}; model {spec['name']}; "
        f"{epochs} epochs; seed {seed}; {world} process{'es' if world > 1 else ''})"
    )

    timings = {}
    teacher_state, teacher_source, timings["teacher_s"] = _train_teacher(args, raw, data, spec, output, seed)
    common = dict(epochs=epochs, seed=seed, resume=args.resume, max_steps=args.max_steps, progress=not args.quiet, logits_output=logits_output_of(raw))
    label = ATTRIBUTION_MATCHING if attribution_block(raw) is not None else "compressed"
    runs = [run_compression(label, config, raw, data, spec, teacher_state, output / CHECKPOINT_NAME, **common)]
    timings[f"{label}_training_s"] = runs[0].train_seconds
    if naive_config is not None:
        naive_raw = dict(naive_config)
        naive_run = run_compression(NAIVE, naive_config, naive_raw, data, spec, teacher_state, output / NAIVE_DIR_NAME / CHECKPOINT_NAME, default_layers=runs[0].layers, **common)
        timings[f"{NAIVE}_training_s"] = naive_run.train_seconds
        runs.append(naive_run)
    if not distributed.is_main():
        return 0

    for run in runs:
        run.model.to("cpu")  # export and evaluation run on the CPU (training may have used a GPU)
    main_run = runs[0]
    samples = data.test.tensors[0][: max(args.eval_samples, 1)]
    start = time.perf_counter()
    exported = export_ir(main_run.compression_ctrl, main_run.model, output / IR_DIR_NAME, samples, config=raw, device=device, logits_output=logits_output_of(raw))
    timings["export_s"] = time.perf_counter() - start

    start = time.perf_counter()
    teacher = build_checked_model(spec)
    teacher.load_state_dict(teacher_state)
    layer = main_run.layers[0] if main_run.layers else default_layer(teacher, data)
    evaluated = evaluate_models(
        teacher,
        {run.label: run.model for run in runs},
        data,
        layer,
        args.eval_samples,
        logits_output=logits_output_of(raw),
        ir_dir=output / IR_DIR_NAME,
        ir_student=main_run.label,
        device=device,
        figure=output / FIGURE_NAME,
    )
    timings["evaluation_s"] = time.perf_counter() - start
    timings["total_s"] = time.perf_counter() - total_start

    for run in runs:
        entry = evaluated["students"][run.label]
        entry["algorithms"] = [b.get("algorithm") for b in _blocks(raw if run is main_run else dict(naive_config))]
        entry["compression"] = compression_statistics(run.compression_ctrl)
        entry["checkpoint"] = str(run.checkpoint)
        entry["resumed_from_epoch"] = run.resumed_from_epoch
        entry["steps"] = len(run.history)
        entry["final_losses"] = run.history[-1] if run.history else None
        entry["training_s"] = run.train_seconds
    evaluated["ir"]["manifest"] = str(exported.manifest_path)
    evaluated["ir"]["parity"] = exported.manifest["parity"]
    evaluated["ir"]["precision"] = exported.manifest["precision"]
    report = {
        "command": "compress",
        "config": str(args.config),
        "output": str(output),
        "dataset": {
            "name": data.name,
            "description": data.description,
            "image_shape": list(data.image_shape),
            "train_samples": len(data.train),
            "test_samples": len(data.test),
        },
        "model": spec,
        "teacher": {"source": teacher_source, "path": str(output / TEACHER_NAME) if teacher_source == "trained" else teacher_source, "epochs": args.teacher_epochs if teacher_source == "trained" else None},
        "epochs": epochs,
        "max_steps_per_epoch": args.max_steps,
        "seed": seed,
        "world_size": world,
        "evaluation": evaluated,
        "timings": timings,
        "versions": exported.manifest.get("versions"),
    }
    atomic_write_text(output / REPORT_NAME, json.dumps(to_jsonable(report), indent=2))

    _say()
    for line in summary_lines(evaluated):
        _say(line)
    ir = evaluated["ir"]
    _say(
        f"IR: {exported.xml_path} ({exported.manifest['precision']}; parity with PyTorch: max |logit diff| "
        f"{ir['parity']['max_abs_diff']:.2g}, top-1 agreement {ir['parity']['top1_agreement']:.4f})"
    )
    _say(f"Report: {output / REPORT_NAME}   Figure: {output / FIGURE_NAME}")
    parts = [f"{name[:-2].replace('_', ' ')} {seconds:.0f} s" for name, seconds in timings.items() if name != "total_s"]
    _say(f"Time: {', '.join(parts)}; total {timings['total_s']:.0f} s")
    return 0


def _blocks(config: dict) -> list:
    sections = config.get("compression", [])
    return [sections] if isinstance(sections, dict) else list(sections)


def _restore(checkpoint_path: str, log_dir: Path) -> tuple:
    checkpoint = load_checkpoint(checkpoint_path)
    data = load_data(checkpoint.get("dataset", checkpoint["config"].get("dataset")))
    compression_ctrl, model, teacher = restore_compressed_model(checkpoint, log_dir=log_dir)
    return checkpoint, data, compression_ctrl, model, teacher


def cmd_export(args) -> int:
    _quiet_nncf(args.verbose)
    device = checked_device(args.device)
    output = Path(args.output)
    if not Path(args.checkpoint).is_file():
        raise UsageError(f"Checkpoint not found: {args.checkpoint}.")
    with _scratch_dir() as log_dir:
        checkpoint, data, compression_ctrl, model, _ = _restore(args.checkpoint, log_dir)
        samples = data.test.tensors[0][: max(args.eval_samples, 1)]
        result = export_ir(
            compression_ctrl,
            model,
            output,
            samples,
            config=checkpoint["config"],
            dynamic_batch=not args.static_shape,
            device=device,
            logits_output=logits_output_of(checkpoint["config"]),
        )
    parity = result.manifest["parity"]
    print(
        f"Exported {args.checkpoint} (epoch {checkpoint['epoch']}/{checkpoint['epochs']}) to {result.xml_path} for {device}: "
        f"{result.manifest['precision']}, input shape {result.manifest['input_shape']}, parity max |logit diff| "
        f"{parity['max_abs_diff']:.2g}, top-1 agreement {parity['top1_agreement']:.4f}."
    )
    for note in result.manifest.get("notes", []):
        print(f"Note: {note}")
    return 0


def cmd_evaluate(args) -> int:
    _quiet_nncf(args.verbose)
    device = checked_device(args.device)
    if not Path(args.checkpoint).is_file():
        raise UsageError(f"Checkpoint not found: {args.checkpoint}.")
    ir_dir = Path(args.ir) if args.ir else Path(args.checkpoint).parent / IR_DIR_NAME
    if args.ir and not (ir_dir / "model.xml").is_file() and not (ir_dir.suffix == ".xml" and ir_dir.is_file()):
        raise UsageError(f"No OpenVINO IR at {args.ir}: pass the folder written by `nncf-wcam export` (model.xml inside).")
    if not args.ir and not (ir_dir / "model.xml").is_file():
        ir_dir = None
    with _scratch_dir() as log_dir:
        checkpoint, data, compression_ctrl, model, teacher = _restore(args.checkpoint, log_dir)
        config = checkpoint["config"]
        layers = checkpoint.get("matched_layers") or []
        layer = args.layer or (layers[0] if layers else default_layer(teacher, data))
        label = checkpoint.get("label", "student")
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
    print(f"nncf-wcam evaluate: {args.checkpoint} (epoch {checkpoint['epoch']}/{checkpoint['epochs']})")
    for line in summary_lines(evaluated):
        print(line)
    if args.output:
        print(f"Report: {args.output}")
    return 0


class _scratch_dir:
    """A temporary folder for NNCF's graph dumps when restoring a model (nothing kept)."""

    def __enter__(self) -> Path:
        import tempfile

        self._tmp = tempfile.TemporaryDirectory(prefix="nncf_wcam_")
        return Path(self._tmp.name)

    def __exit__(self, *exc) -> None:
        self._tmp.cleanup()


# --------------------------------------------------------------------------- parser


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit code 2 (argparse prints the whole usage)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="Attribution-preserving compression with NNCF: train, export, evaluate.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    compress = commands.add_parser("compress", help="train the teacher, compress with the config, export the IR, report")
    compress.add_argument("--config", required=True, help="NNCF JSON config with an attribution_matching block (see nncf_wcam/configs/)")
    compress.add_argument("--output", required=True, help="output folder (teacher.pt, checkpoint.pt, ir/, report.json, PNG)")
    compress.add_argument("--teacher", help="teacher weights (teacher.pt, checkpoint.pt or a state_dict); trained here when absent")
    compress.add_argument("--compare-naive", action="store_true", help="also compress without attribution_matching (same seeds) and compare")
    compress.add_argument("--resume", action="store_true", help="continue the run in --output from its last checkpoint")
    compress.add_argument("--epochs", type=int, help="compression epochs (default: the config's \"epochs\")")
    compress.add_argument("--teacher-epochs", type=int, default=DEFAULT_TEACHER_EPOCHS, help=f"teacher training epochs (default {DEFAULT_TEACHER_EPOCHS})")
    compress.add_argument("--max-steps", type=int, help="at most this many training steps per epoch (smoke tests)")
    compress.add_argument("--seed", type=int, help="seed of data order and initialization (default: the config's \"seed\" or 0)")
    compress.add_argument("--device", default="CPU", help="OpenVINO device for the IR: CPU, GPU, NPU, AUTO (default CPU)")
    compress.add_argument("--eval-samples", type=int, default=DEFAULT_EVAL_SAMPLES, help=f"test samples for attribution agreement (default {DEFAULT_EVAL_SAMPLES})")
    compress.add_argument("--quiet", action="store_true", help="no progress bars")
    compress.add_argument("--verbose", action="store_true", help="NNCF's info messages")
    compress.set_defaults(func=cmd_compress)

    export = commands.add_parser("export", help="export a checkpoint's compressed model to OpenVINO IR")
    export.add_argument("--checkpoint", required=True, help="checkpoint.pt written by compress")
    export.add_argument("--output", required=True, help="IR folder (model.xml, model.bin, manifest.json), replaced as a whole")
    export.add_argument("--static-shape", action="store_true", help="static batch of 1 (NPU needs it; implied for NPU)")
    export.add_argument("--device", default="CPU", help="OpenVINO device to check the IR on: CPU, GPU, NPU, AUTO (default CPU)")
    export.add_argument("--eval-samples", type=int, default=DEFAULT_EVAL_SAMPLES, help="test samples for the parity check")
    export.add_argument("--verbose", action="store_true", help="NNCF's info messages")
    export.set_defaults(func=cmd_export)

    evaluate = commands.add_parser("evaluate", help="teacher vs student attribution agreement, PyTorch and IR")
    evaluate.add_argument("--checkpoint", required=True, help="checkpoint.pt written by compress")
    evaluate.add_argument("--ir", help="IR folder to evaluate (default: ir/ beside the checkpoint, if present)")
    evaluate.add_argument("--device", default="CPU", help="OpenVINO device for the IR (default CPU)")
    evaluate.add_argument("--layer", help="Grad-CAM layer (default: the matched layer)")
    evaluate.add_argument("--eval-samples", type=int, default=DEFAULT_EVAL_SAMPLES, help=f"test samples (default {DEFAULT_EVAL_SAMPLES})")
    evaluate.add_argument("--output", help="write the results as JSON to this file")
    evaluate.add_argument("--figure", help="write a PNG of teacher and student Grad-CAM maps to this file")
    evaluate.add_argument("--verbose", action="store_true", help="NNCF's info messages")
    evaluate.set_defaults(func=cmd_evaluate)
    return parser


def main(argv: Optional[list] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
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


if __name__ == "__main__":
    sys.exit(main())
