"""OpenVINO IR from a torch model by `ov.convert_model`: the route of every framework whose compressed model is
an ordinary `nn.Module` (NNCF 3.x's quantized or pruned model, Intel Neural Compressor's pruned or converted
int8 model). Quantizers become FakeQuantize operations, which the CPU plugin runs in int8. The IR goes through
the same checks and atomic write as every route (`writer`): devices, the output-folder guard, parity with
PyTorch, the manifest.
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


def converted_model(model: nn.Module, sample_inputs: torch.Tensor) -> ov.Model:
    """`ov.convert_model` at a static batch of 1 (the statistics need one; the writer sets the batch after)."""
    was_training = model.training
    model.cpu().eval()
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)  # the tracer's notes on fake quantizers
            return ov.convert_model(model, example_input=sample_inputs[:1], input=[tuple(sample_inputs[:1].shape)])
    except Exception as error:  # noqa: BLE001  (OpenVINO's frontends raise many types; one message for all)
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise ExportError(f"OpenVINO could not convert {type(model).__name__}: {first_line}") from error
    finally:
        model.train(was_training)


def fake_quantize_precision(model: ov.Model) -> str:
    """'fp32' without FakeQuantize operations, else 'int8' (or 'int4/int8'...) from their levels."""
    levels = {int(op.get_attributes()["levels"]) for op in model.get_ops() if op.get_type_name() == "FakeQuantize"}
    bits = sorted({max(1, (n - 1).bit_length()) for n in levels})
    return "/".join(f"int{b}" for b in bits) or "fp32"


def export_torch_model(
    model: nn.Module,
    output_dir: Union[str, os.PathLike],
    sample_inputs: torch.Tensor,
    *,
    route: str,
    device: str = "CPU",
    target_device: Optional[str] = None,
    dynamic_batch: bool = True,
    min_top1_agreement: float = 0.99,
    inference_precision: Optional[str] = "f32",
    logits_output: LogitsSelector = None,
    matched_layers: Optional[list] = None,
) -> ExportResult:
    """Converts `model` (one input) to IR in `output_dir` (model.xml, model.bin, manifest.json).

    `route` names the framework's route in the manifest (e.g. "nncf3: ov.convert_model"); the other arguments
    are those of the NNCF 2.19 route (`nncf_wcam.nncf2.export.export_ir`). Raises ExportError (nothing written,
    an earlier export kept) when a step fails or the IR's top-1 agreement with PyTorch is too low.
    """
    plan = plan_export(output_dir, device=device, target_device=target_device, dynamic_batch=dynamic_batch, min_top1_agreement=min_top1_agreement, inference_precision=inference_precision)
    sample_inputs = sample_batch(sample_inputs)
    logits, logits_index = torch_logits(model, sample_inputs, logits_output)
    converted = converted_model(model, sample_inputs)
    if len(converted.inputs) != 1:
        raise ExportError(f"export_ir supports models with one input; this one has {len(converted.inputs)}.")
    converted.output(logits_index).get_tensor().add_names({LOGITS_TENSOR_NAME})
    fields = {
        "route": route,
        "precision": fake_quantize_precision(converted),
        "logits_output": logits_output,
        "logits_output_index": logits_index,
        "matched_layers": list(matched_layers) if matched_layers is not None else None,
        "ir": ir_statistics(converted),
    }
    return write_ir(converted, plan, sample_inputs, logits.detach().cpu().float().numpy(), fields)
