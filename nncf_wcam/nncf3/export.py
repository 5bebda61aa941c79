"""OpenVINO IR from an NNCF 3.x quantized or pruned torch model, the way NNCF 3.x documents it:
`ov.convert_model(model.cpu(), example_input=...)` (quantizers become FakeQuantize operations, which the
CPU plugin runs in int8), through the checks and atomic write every route shares (`deploy.torch_route`).
"""

import os
from typing import Union

import torch
from torch import nn

from nncf_wcam.deploy.torch_route import export_torch_model
from nncf_wcam.deploy.writer import ExportResult


def export_ir(model: nn.Module, output_dir: Union[str, os.PathLike], sample_inputs: torch.Tensor, **options) -> ExportResult:
    """Converts `model` (one input, logits output) to IR in `output_dir` (model.xml, model.bin, manifest.json).

    Args:
        model: the quantized (`nncf.quantize`) or pruned (`nncf.prune`) model, after fine-tuning.
        output_dir: the IR folder; replaced as a whole, and only when it is new, empty or an earlier export.
        sample_inputs: B x C x H x W inputs for the parity check (a few test images).
        options: keyword-only, as in the NNCF 2.19 route (`nncf_wcam.nncf2.export.export_ir`): device="CPU",
            target_device=None, dynamic_batch=True, min_top1_agreement=0.99, inference_precision="f32",
            logits_output=None (index or key of the logits of a tuple or dict output), matched_layers=None
            (recorded in the manifest).

    Raises:
        ExportError (nothing written, an earlier export kept) when a step fails or the IR's top-1 agreement
        with PyTorch on `sample_inputs` is below `min_top1_agreement`.
    """
    return export_torch_model(model, output_dir, sample_inputs, route="nncf3: ov.convert_model", **options)
