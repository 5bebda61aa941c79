"""OpenVINO IR from an NNCF 3.x quantized or pruned torch model, the way NNCF 3.x documents it:
`ov.convert_model(model.cpu(), example_input=...)` (quantizers become FakeQuantize operations, which the
CPU plugin runs in int8). The IR goes through the same checks and atomic write as every route
(`nncf_wcam.deploy.writer`): devices, the output-folder guard, parity with PyTorch, the manifest.
"""

import os
import warnings
from typing import Optional
from typing import Union

import openvino as ov
import torch
from torch import nn

from nncf_wcam.core.logits import LogitsSelector
from nncf_wcam.deploy.ir_statistics import ir_statistics
from nncf_wcam.deploy.parity import sample_batch
from nncf_wcam.deploy.parity import torch_logits
from nncf_wcam.deploy.runtime import LOGITS_TENSOR_NAME
from nncf_wcam.deploy.writer import ExportResult
from nncf_wcam.deploy.writer import plan_export
from nncf_wcam.deploy.writer import write_ir
from nncf_wcam.errors import ExportError


def _converted(model: nn.Module, sample_inputs: torch.Tensor) -> ov.Model:
    """`ov.convert_model` at a static batch of 1 (the statistics need one; the writer sets the batch after)."""
    was_training = model.training
    model.cpu().eval()
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)  # the tracer's notes on NNCF's quantizers
            return ov.convert_model(model, example_input=sample_inputs[:1], input=[tuple(sample_inputs[:1].shape)])
    finally:
        model.train(was_training)


def export_ir(
    model: nn.Module,
    output_dir: Union[str, os.PathLike],
    sample_inputs: torch.Tensor,
    *,
    device: str = "CPU",
    target_device: Optional[str] = None,
    dynamic_batch: bool = True,
    min_top1_agreement: float = 0.99,
    inference_precision: Optional[str] = "f32",
    logits_output: LogitsSelector = None,
    matched_layers: Optional[list] = None,
) -> ExportResult:
    """Converts `model` (one input, logits output) to IR in `output_dir` (model.xml, model.bin, manifest.json).

    Args:
        model: the quantized (`nncf.quantize`) or pruned (`nncf.prune`) model, after fine-tuning.
        output_dir: the IR folder; replaced as a whole, and only when it is new, empty or an earlier export.
        sample_inputs: B x C x H x W inputs for the parity check (a few test images).
        device, target_device, dynamic_batch, min_top1_agreement, inference_precision: as in the
            NNCF 2.19 route (`nncf_wcam.nncf2.export.export_ir`).
        logits_output: index or key of the logits when the model returns a tuple or dict.
        matched_layers: the layers attribution matching trained (recorded in the manifest).

    Raises:
        ExportError (nothing written, an earlier export kept) when a step fails or the IR's top-1 agreement
        with PyTorch on `sample_inputs` is below `min_top1_agreement`.
    """
    plan = plan_export(output_dir, device=device, target_device=target_device, dynamic_batch=dynamic_batch, min_top1_agreement=min_top1_agreement, inference_precision=inference_precision)
    sample_inputs = sample_batch(sample_inputs)
    logits, logits_index = torch_logits(model, sample_inputs, logits_output)
    converted = _converted(model, sample_inputs)
    if len(converted.inputs) != 1:
        raise ExportError(f"export_ir (NNCF 3.x) supports models with one input; this one has {len(converted.inputs)}.")
    converted.output(logits_index).get_tensor().add_names({LOGITS_TENSOR_NAME})
    fields = {
        "route": "nncf3: ov.convert_model",
        "logits_output": logits_output,
        "logits_output_index": logits_index,
        "matched_layers": list(matched_layers) if matched_layers is not None else None,
        "ir": ir_statistics(converted),
    }
    return write_ir(converted, plan, sample_inputs, logits.detach().cpu().float().numpy(), fields)
