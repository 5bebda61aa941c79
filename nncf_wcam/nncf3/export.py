"""OpenVINO IR from an NNCF 3.x quantized or pruned torch model, the way NNCF 3.x documents it:
`ov.convert_model(model.cpu(), example_input=...)` (quantizers become FakeQuantize operations, which the
CPU plugin runs in int8). The IR is checked against PyTorch with the same parity check as the NNCF 2.19
route (`nncf_wcam.export`), and written atomically: a failed check leaves nothing behind.
"""

import json
import os
import warnings
from pathlib import Path
from typing import Optional, Union

import nncf
import openvino as ov
import torch
from torch import nn

import nncf_wcam
from nncf_wcam.export import BIN_NAME
from nncf_wcam.export import LOGITS_TENSOR_NAME
from nncf_wcam.export import MANIFEST_NAME
from nncf_wcam.export import XML_NAME
from nncf_wcam.export import ExportError
from nncf_wcam.export import ExportResult
from nncf_wcam.export import checked_parity
from nncf_wcam.export import MANIFEST_PRODUCER
from nncf_wcam.export import MANIFEST_VERSION
from nncf_wcam.export import _check_replaceable
from nncf_wcam.export import _set_batch
from nncf_wcam.export import atomic_directory
from nncf_wcam.export import check_device
from nncf_wcam.export import ir_statistics
from nncf_wcam.export import load_compiled
from nncf_wcam.export import run_compiled
from nncf_wcam.export import runtime_precisions
from nncf_wcam.export import _summarize_precisions


def _versions() -> dict:
    return {"nncf": nncf.__version__, "openvino": ov.get_version(), "torch": torch.__version__, "nncf_wcam": nncf_wcam.__version__}


def export_ir(
    model: nn.Module,
    output_dir: Union[str, os.PathLike],
    sample_inputs: torch.Tensor,
    *,
    device: str = "CPU",
    dynamic_batch: bool = True,
    min_top1_agreement: float = 0.99,
    inference_precision: Optional[str] = "f32",
) -> ExportResult:
    """Converts `model` (single input, logits output) to IR in `output_dir` (model.xml, model.bin, manifest.json).

    Raises `ExportError` (nothing written, an earlier export kept) when the IR's top-1 agreement with
    PyTorch on `sample_inputs` is below `min_top1_agreement`.
    """
    if not 0.0 <= min_top1_agreement <= 1.0:
        raise ValueError(f"min_top1_agreement must lie in [0, 1], got {min_top1_agreement}.")
    device = check_device(device)
    output_dir = Path(output_dir)
    _check_replaceable(output_dir)  # a folder that is not an earlier export of ours is refused, untouched
    was_training = model.training
    model.cpu().eval()
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)  # the tracer's notes on NNCF's quantizers
            torch_logits = model(sample_inputs).float().numpy()
            # A static shape first (the statistics need one); the batch is made dynamic below.
            converted = ov.convert_model(model, example_input=sample_inputs[:1], input=[tuple(sample_inputs[:1].shape)])
    finally:
        model.train(was_training)
    if len(converted.inputs) != 1 or len(converted.outputs) != 1:
        raise ExportError("export_ir (NNCF 3.x) supports models with one input and one logits output.")
    converted.output(0).get_tensor().add_names({LOGITS_TENSOR_NAME})
    statistics = ir_statistics(converted)  # counted at the static example batch of 1
    if dynamic_batch:
        _set_batch(converted, -1)
    with atomic_directory(output_dir) as staging:
        ov.save_model(converted, str(staging / XML_NAME), compress_to_fp16=False)
        compiled = load_compiled(staging, device, inference_precision=inference_precision)
        parity = checked_parity(torch_logits, run_compiled(compiled, sample_inputs), min_top1_agreement, device, output_dir)
        manifest = {
            "producer": MANIFEST_PRODUCER,
            "manifest_version": MANIFEST_VERSION,
            "format": "openvino_ir",
            "route": "nncf3: ov.convert_model",
            "files": {"xml": XML_NAME, "bin": BIN_NAME},
            "device": device,
            "dynamic_batch": dynamic_batch,
            "ir": statistics,
            "parity": parity,
            "runtime_precisions": _summarize_precisions(runtime_precisions(compiled)),
            "versions": _versions(),
        }
        (staging / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2))
    return ExportResult(
        output_dir=output_dir,
        xml_path=output_dir / XML_NAME,
        bin_path=output_dir / BIN_NAME,
        manifest_path=output_dir / MANIFEST_NAME,
        manifest=manifest,
    )
