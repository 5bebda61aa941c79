"""Compiling and running an IR: the float-precision hint, static and dynamic batches, the logits output,
and the precision each compute layer really runs in."""

import logging
import os
from collections import Counter
from pathlib import Path
from typing import Callable
from typing import Optional
from typing import Union

import numpy as np
import openvino as ov
import torch

from nncf_wcam.deploy.devices import check_device
from nncf_wcam.errors import ExportError

logger = logging.getLogger("nncf_wcam")

XML_NAME = "model.xml"
LOGITS_TENSOR_NAME = "logits"  # the tensor name an export gives the logits output
# Layer types of the compiled (runtime) model that do the heavy arithmetic.
RUNTIME_COMPUTE_LAYER_TYPES = ("Convolution", "Deconvolution", "FullyConnected", "MatMul")


def compile_model(model: Union[ov.Model, str, os.PathLike], device: str, inference_precision: Optional[str]) -> ov.CompiledModel:
    """Compiles for `device`; on CPU `inference_precision` (e.g. "f32") is the float-precision hint (None: the default,
    bf16 on CPUs that have it)."""
    properties = {}
    if inference_precision is not None and device == "CPU":
        properties["INFERENCE_PRECISION_HINT"] = inference_precision
    return ov.Core().compile_model(model, device, properties)


def precision_hint(compiled: ov.CompiledModel) -> Optional[str]:
    """The float precision a compiled model runs at ("f32", "bf16", "f16"), or None where the device does not say."""
    try:
        return str(compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name())
    except RuntimeError:
        return None


def set_batch(model: ov.Model, batch: int) -> None:
    """Sets the first dimension of every input to `batch` (-1: dynamic); raises ExportError if the model cannot."""
    new_shapes = {}
    for model_input in model.inputs:
        shape = model_input.get_partial_shape()
        new_shapes[model_input] = ov.PartialShape([batch] + [shape[i] for i in range(1, shape.rank.get_length())])
    try:
        model.reshape(new_shapes)
    except RuntimeError as e:
        kind = "a dynamic batch" if batch == -1 else f"batch {batch}"
        msg = f"The IR cannot be reshaped to {kind} (a reshape with a fixed batch inside the model?): {e}"
        raise ExportError(msg) from e


def is_dynamic(model: ov.Model) -> bool:
    return any(model_input.get_partial_shape().is_dynamic for model_input in model.inputs)


def load_compiled(
    ir_dir_or_xml: Union[str, os.PathLike],
    device: str = "CPU",
    batch: Optional[int] = None,
    inference_precision: Optional[str] = "f32",
) -> ov.CompiledModel:
    """Reads an exported IR (its folder or its .xml) and compiles it for `device`.

    `batch` fixes the batch dimension (static shapes); NPU gets batch 1 when the IR is dynamic and no
    batch is given. `inference_precision` is the CPU's float precision (None: the device default).
    """
    path = Path(ir_dir_or_xml)
    xml_path = path / XML_NAME if path.is_dir() else path
    if not xml_path.is_file():
        raise FileNotFoundError(f"No IR at {xml_path}. Pass the export folder or its {XML_NAME}.")
    device = check_device(device)
    model = ov.Core().read_model(xml_path)
    if batch is None and device == "NPU" and is_dynamic(model):
        logger.warning("NPU needs static shapes: compiling %s with batch 1.", xml_path)
        batch = 1
    if batch is not None:
        set_batch(model, batch)
    return compile_model(model, device, inference_precision)


def logits_port(compiled: ov.CompiledModel) -> ov.ConstOutput:
    """The output an export tagged "logits" (else the first output)."""
    for output in compiled.outputs:
        if LOGITS_TENSOR_NAME in output.get_names():
            return output
    return compiled.output(0)


def static_batch(compiled: ov.CompiledModel) -> Optional[int]:
    """The compiled model's fixed batch size, or None when the batch dimension is dynamic."""
    batch_dim = compiled.input(0).get_partial_shape()[0]
    return None if batch_dim.is_dynamic else batch_dim.get_length()


def run_in_batches(infer: Callable[[np.ndarray], np.ndarray], batch: np.ndarray, size: Optional[int]) -> np.ndarray:
    """`infer` over `batch`: in one call (size None), or in chunks of a static batch size, the last one zero-padded."""
    if size is None:
        return infer(batch)
    results = []
    for start in range(0, len(batch), size):
        part = batch[start : start + size]
        padded = np.concatenate([part, np.zeros((size - len(part), *part.shape[1:]), np.float32)])
        results.append(infer(padded)[: len(part)])
    return np.concatenate(results)


def as_float32_batch(inputs: Union[torch.Tensor, np.ndarray]) -> np.ndarray:
    batch = inputs.detach().cpu().numpy() if isinstance(inputs, torch.Tensor) else np.asarray(inputs)
    return np.ascontiguousarray(batch, dtype=np.float32)


def run_compiled(compiled: ov.CompiledModel, inputs: Union[torch.Tensor, np.ndarray]) -> np.ndarray:
    """Runs a compiled IR on a batch (torch or numpy) and returns the logits as numpy.

    The output tagged "logits" at export is used (else the first output). A model compiled with a
    static batch is run chunk by chunk, the last chunk padded with zeros.
    """
    port = logits_port(compiled)
    return run_in_batches(lambda batch: np.array(compiled(batch)[port]), as_float32_batch(inputs), static_batch(compiled))


def runtime_precisions(compiled: ov.CompiledModel) -> list:
    """The precision each compute layer (convolution, fully connected, matmul) actually runs in.

    Read from the compiled model's runtime graph: 'u8'/'i8' means a real int8 kernel, 'f32'/'bf16'
    a float one. Returns dicts with the layer's name, runtime layer type and precision.
    """
    layers = []
    for op in compiled.get_runtime_model().get_ordered_ops():
        rt_info = op.get_rt_info()
        layer_type = str(rt_info["layerType"].astype(str)) if "layerType" in rt_info else op.get_type_name()
        if layer_type not in RUNTIME_COMPUTE_LAYER_TYPES:
            continue
        precision = str(rt_info["runtimePrecision"].astype(str)) if "runtimePrecision" in rt_info else "unknown"
        layers.append({"name": op.get_friendly_name(), "layer_type": layer_type, "precision": precision})
    return layers


def summarize_precisions(layers: list) -> dict:
    """{"Convolution:u8": 3, ...}: how many compute layers run in each precision."""
    counts = Counter(f"{layer['layer_type']}:{layer['precision']}" for layer in layers)
    return dict(sorted(counts.items()))
