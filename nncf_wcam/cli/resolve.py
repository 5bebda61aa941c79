"""`compress`, before any training: the run's settings (flags over config over defaults, or the run on disk for
--resume), the config NNCF will build, the data, the model, the teacher it already has and the matched layers.

Everything is checked against everything else here, so that a refusal costs no minutes and writes nothing.
"""

import json
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from typing import Optional

import nncf
import torch

from nncf_wcam.cli.configs import read_config
from nncf_wcam.cli.console import say
from nncf_wcam.cli.devices import check_run_device
from nncf_wcam.cli.errors import UsageError
from nncf_wcam.cli.inc_config import check_inc_section
from nncf_wcam.cli.inc_config import inc_section
from nncf_wcam.cli.inputs import build_checked_model
from nncf_wcam.cli.inputs import check_input_info
from nncf_wcam.cli.inputs import check_layers
from nncf_wcam.cli.inputs import check_output_folder
from nncf_wcam.cli.inputs import load_data
from nncf_wcam.cli.inputs import validated_config
from nncf_wcam.cli.run_config import check_flags
from nncf_wcam.cli.run_folder import check_run_folder
from nncf_wcam.cli.run_config import check_run_config
from nncf_wcam.cli.run_settings import RUN_FILE
from nncf_wcam.cli.run_settings import RunSettings
from nncf_wcam.cli.run_settings import RunSettingsError
from nncf_wcam.cli.run_settings import check_checkpoint
from nncf_wcam.cli.run_settings import fresh_settings
from nncf_wcam.cli.run_settings import read_run_settings
from nncf_wcam.cli.run_settings import resumed_settings
from nncf_wcam.cli.run_settings import settings_from_checkpoint
from nncf_wcam.cli.run_settings import state_digest
from nncf_wcam.core.layers import AUTO
from nncf_wcam.core.layers import requested_layers
from nncf_wcam.core.logits import select_logits
from nncf_wcam.nncf2.checkpoint import CHECKPOINT_NAME
from nncf_wcam.nncf2.checkpoint import TEACHER_NAME
from nncf_wcam.nncf2.checkpoint import load_checkpoint
from nncf_wcam.nncf2.checkpoint import load_teacher_state
from nncf_wcam.nncf2.checkpoint import model_spec
from nncf_wcam.nncf2.training import without_algorithm
from nncf_wcam.schema.blocks import ATTRIBUTION_MATCHING
from nncf_wcam.schema.validation import logits_output_of
from nncf_wcam.schema.validation import plugin_blocks
from nncf_wcam.zoo.datasets import DatasetSplit
from nncf_wcam.zoo.idx import NUM_CLASSES

NAIVE_DIR_NAME = "naive"


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

    @property
    def logits_output(self):
        return logits_output_of(self.raw)

    @property
    def inc(self) -> bool:
        """An Intel Neural Compressor config (its algorithms under "inc"; `cli.inc_run` trains it)."""
        return inc_section(self.raw) is not None

    @property
    def matching(self) -> bool:
        return ATTRIBUTION_MATCHING in plugin_blocks(self.raw)


def _apply_config_defaults(config: dict, settings: RunSettings, output: Path) -> dict:
    config = json.loads(json.dumps(config))
    config["epochs"] = settings.epochs
    config["log_dir"] = str(output / "nncf_logs")
    return config


def check_compress_flags(args) -> None:
    """What `compress` can check from its flags alone (before the output folder's lock creates it)."""
    check_flags(args)
    if args.device is not None:
        check_run_device(args.device)
    if args.teacher and not Path(args.teacher).is_file():
        raise UsageError(f"Teacher file not found: {args.teacher}.")
    check_output_folder(Path(args.output))
    if args.config is None and not args.resume:
        raise UsageError("--config is required for a new run (only --resume takes the config from the run's folder).")


def _saved_settings(args, output: Path) -> Optional[RunSettings]:
    """The settings of the run already in `output` (None when there is none); refuses a new run over an old one,
    and a folder of someone else's files."""
    checkpoint_path = output / CHECKPOINT_NAME
    existing = next((name for name in (RUN_FILE, CHECKPOINT_NAME) if (output / name).is_file()), None)
    check_run_folder(output, holds_run=existing is not None)
    if existing and not args.resume:
        raise UsageError(f"{output} already holds a run ({existing}). Pass --resume to continue it, or choose another --output.")
    if not args.resume:
        return None
    saved = read_run_settings(output)
    if saved is None and checkpoint_path.is_file():  # a folder with a checkpoint but no run.json
        naive = (output / NAIVE_DIR_NAME / CHECKPOINT_NAME).is_file()
        saved = settings_from_checkpoint(load_checkpoint(checkpoint_path), args.config or str(checkpoint_path), compare_naive=naive)
    if saved is None:
        if args.config is None:
            raise UsageError(f"--resume: {output} holds no run to continue ({RUN_FILE} and {CHECKPOINT_NAME} are missing). Pass --config to start one.")
        say(f"--resume: no run in {output} yet; starting from the beginning.")
    return saved


def _check_data_root_flag(args, saved: RunSettings) -> None:
    """--data-root with --resume must name the folder the run reads (its run.json recorded it)."""
    recorded = (saved.dataset or {}).get("root") if isinstance(saved.dataset, dict) else None
    if args.data_root and recorded and Path(args.data_root).expanduser().resolve() != Path(recorded):
        raise RunSettingsError(f"--data-root {args.data_root} conflicts with this run's dataset root {recorded}; drop the flag or start a new --output.")


def _naive_config(run_raw: dict, nncf_config: nncf.NNCFConfig, settings: RunSettings, output: Path) -> nncf.NNCFConfig:
    if ATTRIBUTION_MATCHING not in plugin_blocks(run_raw):
        raise UsageError(f"--compare-naive: config {settings.config_path} has no {ATTRIBUTION_MATCHING} block to leave out.")
    naive_config = without_algorithm(nncf_config, ATTRIBUTION_MATCHING)
    naive_config["log_dir"] = str(output / NAIVE_DIR_NAME / "nncf_logs")
    return naive_config


def resolve_run(args, output: Path) -> Run:
    """Reads the config and the run's settings and checks them against each other; trains nothing, writes nothing."""
    saved = _saved_settings(args, output)
    config = read_config(args.config, args.data_root) if args.config is not None else None
    # The config as the run uses it: the one read, or on --resume without --config the run's own.
    checked = config if config is not None else getattr(saved, "config", None)
    if checked is not None:
        check_run_config(checked, args)  # the whole run configuration, before any work
        if inc_section(checked) is not None:
            check_inc_section(checked)
    if saved is None:
        settings = fresh_settings(args, config, args.config)
    else:
        _check_data_root_flag(args, saved)
        settings = resumed_settings(saved, args, config, args.config)
    raw = _apply_config_defaults(settings.config, settings, output)
    nncf_config = validated_config(raw, settings.config_path)
    data = load_data(raw.get("dataset"))
    check_input_info(raw, data)
    spec = model_spec(raw, data.image_shape[0], NUM_CLASSES)
    build_checked_model(spec)  # unknown model names fail here, before any training
    naive_config = _naive_config(raw, nncf_config, settings, output) if settings.compare_naive else None
    run = Run(output, settings, raw, nncf_config, naive_config, data, spec, resume=saved is not None)
    run.teacher_state = _known_teacher(args, run)
    if run.resume:  # checkpoints that another run wrote (a mixed folder) are refused before anything is written
        for path, used_config in ((output / CHECKPOINT_NAME, raw), (output / NAIVE_DIR_NAME / CHECKPOINT_NAME, naive_config)):
            if used_config is not None and path.is_file():
                check_checkpoint(load_checkpoint(path), path, settings=settings, config=dict(used_config), teacher_sha256=settings.teacher["sha256"])
    return run


def _teacher_candidates(args, run: Run) -> list:
    """(where, loader) of every teacher the run may already have, in order of preference."""
    settings, output = run.settings, run.output
    candidates = []
    if args.teacher:
        candidates.append((f"--teacher {args.teacher}", lambda: load_teacher_state(args.teacher, run.spec)))
    if run.resume:
        if (output / TEACHER_NAME).is_file():
            candidates.append((str(output / TEACHER_NAME), lambda: load_teacher_state(output / TEACHER_NAME, run.spec)))
        if (output / CHECKPOINT_NAME).is_file():
            candidates.append((str(output / CHECKPOINT_NAME), lambda: load_checkpoint(output / CHECKPOINT_NAME)["teacher_state_dict"]))
        if settings.teacher.get("path") and not args.teacher:
            candidates.append((settings.teacher["path"], lambda: load_teacher_state(settings.teacher["path"], run.spec)))
    return candidates


def _known_teacher(args, run: Run) -> Optional[dict]:
    """The teacher weights the run already has (None: it has none yet, train one), checked against the run's record."""
    settings, output = run.settings, run.output
    recorded = settings.teacher.get("sha256")
    for where, load in _teacher_candidates(args, run):
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
    with torch.no_grad():
        select_logits(model(sample), run.logits_output)
    block = plugin_blocks(run.raw).get(ATTRIBUTION_MATCHING)
    if block is not None and block["layers"] == []:
        run.layers = []  # input-space matching alone: the report draws Grad-CAM at the last spatial layer
        block = None
    if block is not None:
        run.layers = check_layers(model, sample, block["layers"])
        how = " (chosen by \"layers\": \"auto\")" if requested_layers(block["layers"]) == AUTO else ""
        run.layer_note = f"Matched layer{'s' if len(run.layers) > 1 else ''}: {', '.join(run.layers)}{how}"
        run.report_layer = run.layers[0]
    else:
        run.report_layer = check_layers(model, sample, AUTO)[0]
        run.layer_note = f"Grad-CAM layer of the report: {run.report_layer} (the last spatial feature map)"
        if run.matching:
            run.layer_note = f"Input-space matching alone (\"layers\": []); {run.layer_note}"
