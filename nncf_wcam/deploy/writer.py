"""Writing an OpenVINO IR that provably matches its PyTorch model: every export route ends here.

A route (NNCF 2.19's ONNX route, NNCF 3.x's `ov.convert_model`) turns its model into an `ov.Model`, then:

1. `plan_export` checks, before any work, the devices (the check device must be here; a target such as
   NPU may be absent), the parity threshold and the output folder (`folder.check_replaceable`); NPU targets
   get a static batch of 1;
2. `write_ir` fixes the batch, saves the IR into a staging folder, reads it back, compiles it, compares it
   with the PyTorch logits on the caller's samples (below `min_top1_agreement` it raises `ExportError` and
   writes nothing), writes `manifest.json` and swaps the folder in (`io.atomic.atomic_directory`).

On CPU the IR is compiled with `INFERENCE_PRECISION_HINT=f32` by default: OpenVINO would otherwise run
float layers in bf16 on CPUs that have it, so figures would depend on the machine. Quantized layers still
run in int8 (see `runtime_precisions`).
"""

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional
from typing import Union

import numpy as np
import openvino as ov
import torch

from nncf_wcam.deploy.devices import check_device
from nncf_wcam.deploy.devices import device_base
from nncf_wcam.deploy.devices import device_present
from nncf_wcam.deploy.folder import BIN_NAME
from nncf_wcam.deploy.folder import MANIFEST_NAME
from nncf_wcam.deploy.folder import check_replaceable
from nncf_wcam.deploy.folder import manifest_header
from nncf_wcam.deploy.folder import save_model
from nncf_wcam.deploy.folder import versions
from nncf_wcam.deploy.parity import checked_parity
from nncf_wcam.deploy.parity import parity
from nncf_wcam.deploy.runtime import XML_NAME
from nncf_wcam.deploy.runtime import load_compiled
from nncf_wcam.deploy.runtime import precision_hint
from nncf_wcam.deploy.runtime import run_compiled
from nncf_wcam.deploy.runtime import runtime_precisions
from nncf_wcam.deploy.runtime import set_batch
from nncf_wcam.deploy.runtime import summarize_precisions
from nncf_wcam.errors import ExportError
from nncf_wcam.errors import error_summary
from nncf_wcam.io.atomic import atomic_directory
from nncf_wcam.io.atomic import errors_name
from nncf_wcam.io.jsonable import to_jsonable

logger = logging.getLogger("nncf_wcam")


@dataclass
class ExportResult:
    output_dir: Path
    xml_path: Path
    bin_path: Path
    manifest_path: Path
    manifest: dict


@dataclass
class ExportPlan:
    """What an export was asked for, checked before any work."""

    output_dir: Path
    device: str  # where the parity check compiles and runs (on this machine)
    target_device: str  # where the IR is meant to run (may be absent here)
    dynamic_batch: bool
    min_top1_agreement: float
    inference_precision: Optional[str]
    notes: list  # lines for the manifest (and the log)


def plan_export(
    output_dir: Union[str, os.PathLike],
    *,
    device: str = "CPU",
    target_device: Optional[str] = None,
    dynamic_batch: bool = True,
    min_top1_agreement: float = 0.99,
    inference_precision: Optional[str] = "f32",
) -> ExportPlan:
    """Checks an export's arguments and output folder before any work; NPU targets get a static batch of 1."""
    if not 0.0 <= min_top1_agreement <= 1.0:
        raise ValueError(f"min_top1_agreement must lie in [0, 1], got {min_top1_agreement}.")
    device = check_device(device)
    target_device = device if target_device is None else check_device(target_device, must_be_present=False)
    output_dir = Path(output_dir)
    check_replaceable(output_dir)  # a folder that is not an earlier export of ours is refused, untouched
    notes = []
    if dynamic_batch and "NPU" in (device_base(target_device), device_base(device)):
        notes.append("NPU needs static shapes: exported with a static batch of 1 instead of a dynamic batch.")
        logger.warning(notes[-1])
        dynamic_batch = False
    return ExportPlan(output_dir, device, target_device, dynamic_batch, min_top1_agreement, inference_precision, notes)


def _prepare_for_npu(model: ov.Model) -> None:
    """NPU-ready: the input layout declared as NCHW for the plugin (the static batch is set by the caller)."""
    for model_input in model.inputs:
        if model_input.get_partial_shape().rank.get_length() == 4:
            model_input.get_node().set_layout(ov.Layout("NCHW"))


def _check_target_compiles(ir_dir: Path, target_device: str, device: str) -> bool:
    """Compiles the IR for the target device where it exists; returns whether that check was made."""
    if target_device == device:
        return True  # the parity check compiled it there
    if device_base(target_device) == "AUTO" or not device_present(target_device):
        logger.warning("%s is not on this machine: the IR was not compiled for it here.", target_device)
        return False
    try:
        load_compiled(ir_dir, target_device)
    except RuntimeError as e:
        raise ExportError(f"The IR does not compile for {target_device} ({error_summary(e)}).") from e
    return True


def _compiled_and_checked(staging: Path, plan: ExportPlan, sample_inputs: torch.Tensor, torch_logits: np.ndarray) -> tuple:
    """(compiled model, whether the target compile was checked, parity record) of the IR saved in `staging`."""
    try:
        compiled = load_compiled(staging, plan.device, inference_precision=plan.inference_precision)
    except RuntimeError as e:
        msg = f"OpenVINO could not compile the IR for {plan.device} ({error_summary(e)}). Export for another device, or update openvino."
        raise ExportError(msg) from e
    target_checked = _check_target_compiles(staging, plan.target_device, plan.device)
    try:
        ir_logits = run_compiled(compiled, sample_inputs)
    except RuntimeError as e:
        # PyTorch ran these samples: with a dynamic batch, the likely cause is a trace that fixed the batch size.
        fix = "If the model's trace fixes its batch size (INC 3.10's MX quantizers do), export with dynamic_batch=False" if plan.dynamic_batch else "Pass a batch shaped like the model's input"
        msg = f"The IR failed on sample_inputs {tuple(sample_inputs.shape)} ({error_summary(e)}). {fix}."
        raise ExportError(msg) from e
    parity = checked_parity(torch_logits, ir_logits, plan.min_top1_agreement, plan.device, plan.output_dir)
    parity["inference_precision"] = precision_hint(compiled)
    return compiled, target_checked, parity


def _parity_at_device_default(staging: Path, plan: ExportPlan, sample_inputs: torch.Tensor, torch_logits: np.ndarray, checked: dict) -> dict:
    """Parity as a user's own `core.compile_model(xml, device)` gets it: the device's default float precision
    (bf16 on CPUs that have it), which the gated check above may have overridden. Recorded, not gated."""
    compiled = load_compiled(staging, plan.device, inference_precision=None)
    hint = precision_hint(compiled)
    if hint == checked["inference_precision"]:
        return {key: checked[key] for key in ("num_samples", "max_abs_diff", "top1_agreement", "top1_ties", "output_step", "inference_precision")}
    record = {**parity(torch_logits, run_compiled(compiled, sample_inputs)), "inference_precision": hint}
    if record["top1_agreement"] < plan.min_top1_agreement:
        logger.warning(
            "At %s's default precision (%s) the IR agrees with PyTorch on %.4f of the samples only: compile it with "
            "INFERENCE_PRECISION_HINT=%s to deploy what was checked.", plan.device, hint, record["top1_agreement"], checked["inference_precision"],
        )
    return record


def write_ir(model: ov.Model, plan: ExportPlan, sample_inputs: torch.Tensor, torch_logits: np.ndarray, fields: dict) -> ExportResult:
    """Saves `model` as the IR in `plan.output_dir` if it matches `torch_logits` on `sample_inputs` (else nothing is written).

    `fields`: the route's own manifest entries (algorithms, compression statistics, weight counts, ...).
    """
    set_batch(model, -1 if plan.dynamic_batch else 1)
    if device_base(plan.target_device) == "NPU":
        _prepare_for_npu(model)
    with atomic_directory(plan.output_dir, before_swap=check_replaceable) as staging, errors_name(plan.output_dir):
        save_model(model, staging / XML_NAME)
        logger.info("Checking the saved IR against PyTorch on %d samples (%s).", len(sample_inputs), plan.device)
        compiled, target_checked, parity = _compiled_and_checked(staging, plan, sample_inputs, torch_logits)
        at_default = _parity_at_device_default(staging, plan, sample_inputs, torch_logits, parity)
        manifest = {
            **manifest_header(),
            "device": plan.device,
            "target_device": plan.target_device,
            "target_compile_checked": target_checked,
            "inference_precision": plan.inference_precision if plan.device == "CPU" else None,
            "input_shape": [-1 if d.is_dynamic else d.get_length() for d in model.input(0).get_partial_shape()],
            "input_layout": model.input(0).get_node().get_layout().to_string() or None,
            "dynamic_batch": plan.dynamic_batch,
            **fields,
            "parity": parity,
            "parity_at_device_default": at_default,
            "runtime_precisions": summarize_precisions(runtime_precisions(compiled)),
            "notes": plan.notes,
            "versions": versions(),
        }
        (staging / MANIFEST_NAME).write_text(json.dumps(to_jsonable(manifest), indent=2, allow_nan=False))
    logger.info("Exported IR to %s: parity max |diff| %.3g, top-1 agreement %.4f.", plan.output_dir, parity["max_abs_diff"], parity["top1_agreement"])
    out = plan.output_dir
    return ExportResult(output_dir=out, xml_path=out / XML_NAME, bin_path=out / BIN_NAME, manifest_path=out / MANIFEST_NAME, manifest=manifest)
