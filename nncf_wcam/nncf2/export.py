"""Export of an NNCF 2.19-compressed PyTorch model to OpenVINO IR, with a parity check and a manifest.

Route: `compression_ctrl.export_model()` writes ONNX with FakeQuantize nodes (the only NNCF 2.19 export
that works for every algorithm: `strip()` refuses 4-bit and 2-bit quantizers), then
`openvino.convert_model`. On the converted model: the FakeQuantize ranges are put on the grid NNCF trains
with (`deploy.quantizer_ranges`), the filters NNCF filter pruning zeroed are removed physically
(`deploy.ir_pruning`; where that is impossible they stay, with a warning and a manifest note) and the
logits output is tagged "logits". `deploy.writer` then checks and writes the IR.
"""

import logging
import os
import tempfile
from pathlib import Path
from typing import Optional
from typing import Union

import openvino as ov
import torch

from nncf_wcam.core.logits import LogitsSelector
from nncf_wcam.deploy.ir_pruning import prune_ir
from nncf_wcam.deploy.ir_statistics import ir_statistics
from nncf_wcam.deploy.ir_statistics import torch_weight_values
from nncf_wcam.deploy.parity import sample_batch
from nncf_wcam.deploy.parity import torch_logits
from nncf_wcam.deploy.quantizer_ranges import align_fake_quantize_ranges
from nncf_wcam.deploy.runtime import LOGITS_TENSOR_NAME
from nncf_wcam.deploy.writer import ExportResult
from nncf_wcam.deploy.writer import plan_export
from nncf_wcam.deploy.writer import write_ir
from nncf_wcam.errors import ExportError
from nncf_wcam.errors import error_summary
from nncf_wcam.io.jsonable import to_jsonable
from nncf_wcam.nncf2.statistics import algorithm_names
from nncf_wcam.nncf2.statistics import nncf_pruned_weight_values
from nncf_wcam.nncf2.statistics import precision

logger = logging.getLogger("nncf_wcam")


def _onnx_to_ov(compression_ctrl, compressed_model: torch.nn.Module) -> ov.Model:
    """NNCF's ONNX export (into a temporary folder), converted by OpenVINO; the model's training mode is kept."""
    was_training = compressed_model.training
    try:
        with tempfile.TemporaryDirectory(prefix="nncf_wcam_onnx_") as onnx_dir:
            onnx_path = Path(onnx_dir) / "model.onnx"
            try:
                compression_ctrl.export_model(str(onnx_path))
            except Exception as e:  # NNCF / torch.onnx raise many types; the caller gets one ExportError
                msg = (
                    f"NNCF's ONNX export failed ({error_summary(e)}). Check that the model runs on the config's input_info "
                    "sample size and that the `onnx` package is installed."
                )
                raise ExportError(msg) from e
            try:
                return ov.convert_model(str(onnx_path))
            except Exception as e:
                msg = f"OpenVINO could not convert NNCF's ONNX ({error_summary(e)}). Update openvino, or report the operator it names."
                raise ExportError(msg) from e
    finally:
        compressed_model.train(was_training)  # export_model leaves the model in eval mode


def export_ir(
    compression_ctrl,
    compressed_model: torch.nn.Module,
    output_dir: Union[str, os.PathLike],
    sample_inputs: torch.Tensor,
    *,
    config: Optional[dict] = None,
    dynamic_batch: bool = True,
    device: str = "CPU",
    target_device: Optional[str] = None,
    min_top1_agreement: float = 0.99,
    apply_pruning: bool = True,
    logits_output: LogitsSelector = None,
    inference_precision: Optional[str] = "f32",
    matched_layers: Optional[list] = None,
) -> ExportResult:
    """Exports an NNCF-compressed model to OpenVINO IR in `output_dir` (model.xml, model.bin, manifest.json).

    Args:
        compression_ctrl: the controller `create_compressed_model` returned.
        compressed_model: the compressed model (single input).
        output_dir: the IR folder; replaced as a whole, and only when it is new, empty or an earlier export.
        sample_inputs: B x C x H x W inputs for the parity check (a few test images).
        config: the NNCF config dict, recorded in the manifest; its "logits_output" is used when
            `logits_output` is None.
        dynamic_batch: batch dimension -1, else a static batch of 1.
        device: where the parity check compiles and runs (must be on this machine).
        target_device: the device the IR is meant for (default `device`); may be absent here: "NPU" gives a
            static batch of 1 and an NCHW input layout, and compiling for it is checked only where it exists.
        min_top1_agreement: below this top-1 agreement with PyTorch on the samples nothing is written.
        apply_pruning: remove the filters NNCF filter pruning zeroed.
        logits_output: index or key of the logits in a tuple/list/dict output (None: the output is the logits).
        inference_precision: CPU float precision of the check (None: the device default, bf16 on some CPUs).
        matched_layers: the layers attribution matching trained (recorded in the manifest).

    Returns:
        ExportResult with the paths and the manifest (`result.manifest["parity"]`: max_abs_diff, top1_agreement).

    Raises:
        ExportError: a step failed or parity is below the threshold (nothing written, an earlier export kept);
        OutputFolderError: `output_dir` is not ours to replace; UnsupportedDeviceError: a device is unknown or absent.

    Example:
        >>> export_ir(compression_ctrl, model, "ir/", test_images[:64], config=config_dict).manifest["parity"]
    """
    plan = plan_export(output_dir, device=device, target_device=target_device, dynamic_batch=dynamic_batch, min_top1_agreement=min_top1_agreement, inference_precision=inference_precision)
    if logits_output is None and config is not None:
        logits_output = config.get("logits_output")
    statistics = dict(compression_ctrl.statistics())
    sample_inputs = sample_batch(sample_inputs)
    logits, logits_index = torch_logits(compressed_model, sample_inputs, logits_output)
    logger.info("Exporting ONNX and converting it to OpenVINO.")
    model = _onnx_to_ov(compression_ctrl, compressed_model)
    if len(model.inputs) != 1:
        raise ExportError(f"export_ir supports single-input models; this one has {len(model.inputs)} inputs.")
    model.output(logits_index).get_tensor().add_names({LOGITS_TENSOR_NAME})
    aligned = align_fake_quantize_ranges(model)  # NNCF's ONNX FakeQuantize can sit off its training grid
    if aligned:
        logger.info("Put %d FakeQuantize output ranges on NNCF's quantization grid.", len(aligned))
    converted_stats = ir_statistics(model)
    pruned = False
    if apply_pruning and "filter_pruning" in statistics:
        logger.info("Removing pruned filters from the IR.")
        model, pruned = prune_ir(model, nncf_pruned_weight_values(statistics), converted_stats, plan.notes)
    fields = {
        "logits_output": logits_output,
        "logits_output_index": logits_index,
        "algorithms": algorithm_names(compression_ctrl, config),
        "matched_layers": list(matched_layers) if matched_layers is not None else None,
        "precision": precision(statistics),
        "compression": {name: to_jsonable(stats) for name, stats in statistics.items()},
        "pruning_transformation_applied": pruned,
        "nncf_pruned_weight_values": nncf_pruned_weight_values(statistics),
        "fake_quantize_ranges_aligned": len(aligned),
        "source_weight_values": torch_weight_values(compressed_model),
        "ir_before_pruning_transformation": converted_stats,
        "ir": ir_statistics(model) if pruned else converted_stats,
        "config": to_jsonable(dict(config)) if config is not None else None,
    }
    return write_ir(model, plan, sample_inputs, logits.detach().cpu().float().numpy(), fields)
