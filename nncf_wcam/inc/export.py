"""OpenVINO IR from an Intel Neural Compressor model: INC 3.7's pruned model (FP32, zeros kept: OpenVINO runs
it dense) or its converted int8 model (torch.ao quantize/dequantize pairs become FakeQuantize operations, which
the CPU plugin runs in int8), or INC 3.10's `prepare_qat` model. INC's own ONNX export calls
`torch.onnx.export` in a way torch 2.6+ no longer accepts, so the route is `ov.convert_model`
(`deploy.torch_route`): the same checks, parity and atomic write as every route.
"""

import os
from typing import Union

import torch
from torch import nn

from nncf_wcam.deploy.torch_route import export_torch_model
from nncf_wcam.deploy.writer import ExportResult


def _torch_module(model) -> nn.Module:
    """The nn.Module inside INC's model wrapper (`compression_manager.model`), or the module itself."""
    if isinstance(model, nn.Module):
        return model
    inner = getattr(model, "model", None)
    if isinstance(inner, nn.Module):
        return inner
    raise TypeError(f"export_ir needs a torch nn.Module or INC's model wrapper, got {type(model).__name__}.")


def export_ir(model, output_dir: Union[str, os.PathLike], sample_inputs: torch.Tensor, **options) -> ExportResult:
    """Converts an INC model (or `compression_manager.model`) to IR in `output_dir` (model.xml, model.bin, manifest.json).

    `sample_inputs`: B x C x H x W inputs for the parity check. `options`: those of the NNCF 3.x route
    (`nncf_wcam.nncf3.export.export_ir`): device, target_device, dynamic_batch, min_top1_agreement,
    inference_precision, logits_output, matched_layers. Raises ExportError (nothing written) when a step
    fails or the IR's top-1 agreement with PyTorch is too low.
    """
    return export_torch_model(_torch_module(model), output_dir, sample_inputs, route="inc: ov.convert_model", **options)
