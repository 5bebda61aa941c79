"""Attributions of the deployed OpenVINO IR: Occlusion, the method that needs only forward passes, through a
compiled model, compared with the PyTorch teacher's maps."""

import os
from pathlib import Path
from typing import Dict
from typing import Optional
from typing import Union

import numpy as np
import torch
from torch import nn

from nncf_wcam.core.logits import LogitsSelector
from nncf_wcam.deploy.runtime import as_float32_batch
from nncf_wcam.deploy.runtime import compile_model
from nncf_wcam.deploy.runtime import run_in_batches
from nncf_wcam.deploy.runtime import static_batch
from nncf_wcam.evaluation.agreement import map_agreement
from nncf_wcam.evaluation.attributions import Target
from nncf_wcam.evaluation.attributions import attribution_maps
from nncf_wcam.evaluation.attributions import logits_forward
from nncf_wcam.evaluation.attributions import occlusion_maps
from nncf_wcam.evaluation.attributions import resolve_target


class OpenVINOForward:
    """An OpenVINO model as a torch forward function (torch batch in, torch logits out), for captum.

    `model`: a compiled model, or a path to an IR .xml compiled on `device` with the
    `inference_precision` hint (None: the device's default, i.e. what a deployment gets; OpenVINO's
    CPU plugin runs FP32 IRs in bf16 on CPUs with bf16 support; "f32" to measure the IR alone).
    `output`: index or name of the logits output. A static batch dimension is served in chunks of
    that size (the last chunk zero-padded), a dynamic one in a single call.
    """

    def __init__(
        self, model, output: Union[int, str] = 0, device: str = "CPU", inference_precision: Optional[str] = None
    ):
        if isinstance(model, (str, os.PathLike)):
            model = self._compile(Path(model), device, inference_precision)
        elif inference_precision is not None:
            msg = "inference_precision applies when compiling from a path; set it when you compile the model."
            raise ValueError(msg)
        self.compiled_model = model
        self.output = model.output(output)
        self.static_batch = static_batch(model)

    @staticmethod
    def _compile(path: Path, device: str, inference_precision: Optional[str]):
        if not path.is_file():
            raise FileNotFoundError(f"OpenVINO IR not found: {path}. Give the .xml written by the export.")
        return compile_model(str(path), device, inference_precision)

    @property
    def inference_precision(self) -> str:
        """The precision the device actually computes in (e.g. 'f32', 'bf16'), for reports."""
        try:
            return self.compiled_model.get_property("INFERENCE_PRECISION_HINT").get_type_name()
        except RuntimeError:  # devices without the property
            return "unknown"

    def __call__(self, inputs: torch.Tensor) -> torch.Tensor:
        logits = run_in_batches(lambda batch: np.array(self.compiled_model(batch)[self.output]), as_float32_batch(inputs), self.static_batch)
        return torch.from_numpy(logits)


def ir_occlusion_maps(ir, inputs: torch.Tensor, target: Target = None, **options) -> torch.Tensor:
    """Occlusion maps (B x H x W) of an OpenVINO model: an `OpenVINOForward`, a compiled model or a path
    to .xml (the latter two with OpenVINOForward's defaults). Options as `occlusion_maps`."""
    forward = ir if isinstance(ir, OpenVINOForward) else OpenVINOForward(ir)
    inputs = inputs.detach()
    return occlusion_maps(forward, inputs, resolve_target(forward, inputs, target), **options)


def compare_ir_occlusion(
    teacher: nn.Module,
    ir,
    inputs: torch.Tensor,
    top_k: float = 0.1,
    logits_output: LogitsSelector = None,
    **options,
) -> Dict[str, np.ndarray]:
    """Agreement of the IR's occlusion maps with the PyTorch teacher's, both for the teacher's top-1 class."""
    target = resolve_target(logits_forward(teacher, logits_output), inputs, None)
    teacher_maps = attribution_maps(teacher, inputs, "occlusion", target=target, logits_output=logits_output, **options)
    return map_agreement(teacher_maps, ir_occlusion_maps(ir, inputs, target, **options), top_k)
