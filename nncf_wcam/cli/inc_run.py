"""`compress` on Intel Neural Compressor 3.7: the students of an `"inc"` config, trained with INC's loop
(`nncf_wcam.inc.fine_tune`), then exported by `ov.convert_model` and evaluated as every run is.

INC keeps no per-epoch state to resume from: `--resume` reuses the run's teacher and trains the students again.
The students are measured where attributions live: Grad-CAM on the fake-quantized model (QAT; at the fused
module that ends at the matched layer) or the pruned model; the IR is INC's converted int8 or pruned model.
"""

import logging
import time
import warnings
from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn

from nncf_wcam.cli import distributed
from nncf_wcam.cli.console import say
from nncf_wcam.cli.console import stage_bar
from nncf_wcam.cli.errors import UsageError
from nncf_wcam.cli.inc_config import inc_configs
from nncf_wcam.cli.inc_config import inc_section
from nncf_wcam.cli.inputs import build_checked_model
from nncf_wcam.cli.resolve import Run
from nncf_wcam.cli.training_run import RunResult
from nncf_wcam.schema.blocks import ATTRIBUTION_MATCHING
from nncf_wcam.schema.validation import plugin_blocks

NAIVE = "naive"


@dataclass
class IncRunResult(RunResult):
    """A student of INC: `model` is what attributions are measured on, `delivered` what INC delivers (the IR's)."""

    delivered: Optional[nn.Module] = None
    student_layer: Optional[str] = None
    algorithms: Optional[list] = None


def refuse_unsupported(run: Run) -> None:
    if distributed.world_size() > 1:
        raise UsageError("An \"inc\" config trains in one process: INC 3.7's callbacks have no distributed mode. Fix: run nncf-wcam compress without torchrun.")


def quiet_inc(verbose: bool) -> None:
    """INC's info lines (per-layer sparsity, the precision table) and torch.ao's deprecation notes only with --verbose."""
    if verbose:
        return
    logging.getLogger("neural_compressor").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=r".*fuse_custom_config_dict.*")
    warnings.filterwarnings("ignore", message=r".*quantized tensor creation functions.*")


def _matching_config(run: Run):
    from nncf_wcam.inc import AttributionMatchingConfig

    block = {key: value for key, value in plugin_blocks(run.raw)[ATTRIBUTION_MATCHING].items() if key != "algorithm"}
    return AttributionMatchingConfig(**{**block, "layers": list(run.layers)}, example_inputs=run.data.test.tensors[0][:2])


def _teacher(run: Run) -> nn.Module:
    model = build_checked_model(run.spec)
    model.load_state_dict(run.teacher_state)
    return model.eval()


def _train_one(run: Run, label: str, matching: bool) -> IncRunResult:
    from nncf_wcam.inc import end_training
    from nncf_wcam.inc import fine_tune
    from nncf_wcam.inc import prepare_compression

    section, settings = inc_section(run.raw), run.settings
    confs = inc_configs(section) + ([_matching_config(run)] if matching else [])
    start = time.perf_counter()
    torch.manual_seed(settings.seed)
    manager = prepare_compression(_teacher(run), confs)
    steps = -(-len(run.data.train) // settings.batch_size)
    steps = min(steps, settings.max_steps) if settings.max_steps else steps
    with stage_bar(label, settings.epochs * steps) as bar:
        history = fine_tune(manager, run.data.train, epochs=settings.epochs, optimizer_spec=run.raw.get("optimizer"), batch_size=settings.batch_size, seed=settings.seed, max_steps=settings.max_steps, logits_output=run.logits_output, end=False, bar=bar, freeze_bn_epochs=run.raw.get("freeze_bn_epochs", 0))
    for epoch, record in enumerate(history):
        say(f"[{label}] epoch {epoch + 1}/{settings.epochs}: mean task loss {record['task_loss']:.4f}, mean total loss {record['loss']:.4f} ({record['steps']} steps)")
    measured, student_layer, delivered = end_training(manager, _teacher(run), run.report_layer)
    return IncRunResult(
        label=label,
        compression_ctrl=None,
        model=measured,
        history=history,
        checkpoint=None,
        train_seconds=time.perf_counter() - start,
        layers=list(run.layers) if matching else [],
        delivered=delivered,
        student_layer=student_layer,
        algorithms=[*section, *([ATTRIBUTION_MATCHING] if matching else [])],
    )


def train_inc_students(run: Run) -> list:
    """The student of the config (and, with --compare-naive, the one without attribution_matching)."""
    if run.resume:
        say("--resume: INC keeps no per-epoch state; the run's teacher is reused and the students train from the start.")
    runs = [_train_one(run, ATTRIBUTION_MATCHING if run.matching else "compressed", matching=run.matching)]
    if run.settings.compare_naive:
        runs.append(_train_one(run, NAIVE, matching=False))
    return runs


def inc_records(entry: dict, trained: IncRunResult) -> None:
    from nncf_wcam.inc.statistics import conv_weight_sparsity

    entry["algorithms"] = trained.algorithms
    entry["compression"] = {"framework": "intel_neural_compressor", "conv_weight_sparsity": conv_weight_sparsity(trained.delivered), "grad_cam_layer": trained.student_layer}
    entry["checkpoint"] = None
