"""Export of an NNCF-compressed PyTorch model to OpenVINO IR, with a parity check and a manifest.

Route: `compression_ctrl.export_model()` writes ONNX with FakeQuantize nodes (the only NNCF 2.19
export that works for every algorithm: `strip()` refuses 4-bit and 2-bit quantizers), then
`openvino.convert_model` turns it into an OpenVINO model, which is saved with fp32 weights.

What `export_ir` does, in order:

1. checks the target device exists here (`check_device`) before any work;
2. exports ONNX, converts it, puts the FakeQuantize ranges on the grid NNCF trains with
   (`quantizer_ranges`), physically removes the filters that NNCF filter pruning zeroed
   (`ir_pruning`; NNCF only zeroes them; where that is impossible the zeroed filters stay, with a
   warning and a manifest note), tags the logits output with the tensor name "logits", and makes
   the batch dimension dynamic (or a static batch of 1);
3. saves the IR into a staging folder, reads it back and compiles it on the target device, and
   compares it with the PyTorch model on the caller's samples (max |diff| of logits, top-1
   agreement). Below `min_top1_agreement` it raises `ExportError` and writes nothing;
4. writes `manifest.json` (config, NNCF statistics, precision, input shape, parity, weight
   counts / FLOPs / zero fraction, runtime precisions, versions) and swaps the staging folder in.

The output folder holds exactly `model.xml`, `model.bin` and `manifest.json`; it is replaced as
a whole (`atomic_directory`), so an earlier good export survives any failed one. An existing
folder is replaced only when it provably is an earlier export of ours (its manifest says
`"producer": "nncf_wcam"` and it holds nothing else); anything else is refused with
`OutputFolderError` and left untouched. A symbolic link is followed (the link stays).

Devices: CPU, GPU, NPU, AUTO. `device` is where the parity check runs (it must exist here);
`target_device` is where the IR will run (it may not). NPU needs static shapes: for an NPU target
a dynamic batch request is turned into a static batch of 1 (warning and manifest note) and the
input layout is declared NCHW; compiling for the target is checked only where it exists.
Every failure is an `ExportError` with one line naming the cause and the fix.

On CPU the models are compiled with `INFERENCE_PRECISION_HINT=f32` by default: OpenVINO would
otherwise run float layers in bf16 on CPUs that have it, so figures would depend on the machine.
Quantized layers still run in int8 (see `runtime_precisions`).
"""

import nncf_wcam  # noqa: F401  (sets NNCF_TORCH_LEGACY_TRACING before nncf.torch is imported)

import contextlib
import json
import logging
import os
import shutil
import tempfile
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional, Union

import nncf
import numpy as np
import openvino as ov
import torch

from nncf_wcam.ir_pruning import remove_pruned_filters
from nncf_wcam.quantizer_ranges import align_fake_quantize_ranges

from nncf_wcam.staging import clean_stale_staging
from nncf_wcam.staging import folder_staging_name
from nncf_wcam.staging import remove_tree

logger = logging.getLogger(__name__)

XML_NAME = "model.xml"
BIN_NAME = "model.bin"
MANIFEST_NAME = "manifest.json"
LOGITS_TENSOR_NAME = "logits"
# What every manifest says about itself: an export folder is replaced only when its manifest says this.
MANIFEST_PRODUCER = "nncf_wcam"
MANIFEST_VERSION = 1
EXPORT_FILES = (XML_NAME, BIN_NAME, MANIFEST_NAME)  # all an export folder ever holds

SUPPORTED_DEVICES = ("CPU", "GPU", "NPU", "AUTO")
# Device names of plugins OpenVINO no longer ships.
REMOVED_DEVICES = ("MYRIAD", "VPU", "HDDL", "VPUX")
# IR operations whose second input is a weight tensor.
WEIGHTED_OP_TYPES = ("Convolution", "GroupConvolution", "MatMul")
# Layer types of the compiled (runtime) model that do the heavy arithmetic.
RUNTIME_COMPUTE_LAYER_TYPES = ("Convolution", "Deconvolution", "FullyConnected", "MatMul")

LogitsOutput = Optional[Union[int, str]]


class ExportError(RuntimeError):
    """The export could not produce a faithful IR; nothing was written."""


class OutputFolderError(ExportError):
    """The output path cannot be replaced safely (not a folder of ours, a dangling link): nothing was touched."""


class UnsupportedDeviceError(ExportError, ValueError):
    """The requested OpenVINO device is unknown, removed from OpenVINO, or absent on this machine."""


@dataclass
class ExportResult:
    output_dir: Path
    xml_path: Path
    bin_path: Path
    manifest_path: Path
    manifest: dict


# --------------------------------------------------------------------------- atomic writes


@contextlib.contextmanager
def atomic_directory(path: Union[str, os.PathLike]) -> Iterator[Path]:
    """Yields an empty staging folder; on success it replaces `path` as a whole, on failure it vanishes.

    The staging folder is a sibling of `path` (same filesystem, so the swap is a rename). An existing
    `path` is first renamed aside and deleted only once the new folder is in place, so an earlier
    version stays intact until the new one is complete. Any exception (KeyboardInterrupt included)
    removes the staging folder and leaves `path` untouched. Only a process killed between the two
    renames of the swap could leave the old version under `.<name>.old-<pid>-<id>` next to `path`;
    the next write to `path` removes such leftovers of dead processes (`staging.clean_stale_staging`).
    A symbolic link is followed: the folder it points to is replaced and the link kept; a dangling
    link is refused (`OutputFolderError`).
    """
    target = _followed(Path(path)).absolute()
    target.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_staging(target)
    token = uuid.uuid4().hex[:8]
    staging = target.parent / folder_staging_name(target.name, "tmp", token)
    staging.mkdir()
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    _swap_in(staging, target, target.parent / folder_staging_name(target.name, "old", token))


def _followed(path: Path) -> Path:
    """The folder a symbolic link names (the link itself is kept); a dangling link is refused."""
    if not path.is_symlink():
        return path
    if not path.exists():
        msg = (
            f"Output path {path} is a symbolic link to {os.readlink(path)}, which does not exist. "
            "Fix: create that folder, remove the link, or name another output folder."
        )
        raise OutputFolderError(msg)
    return path.resolve()


def _swap_in(staging: Path, target: Path, backup: Path) -> None:
    if not target.exists():
        os.replace(staging, target)
        return
    os.replace(target, backup)
    try:
        os.replace(staging, target)
    except BaseException:
        os.replace(backup, target)  # put the earlier version back
        shutil.rmtree(staging, ignore_errors=True)
        raise
    try:
        remove_tree(backup)  # also when its user made the earlier IR read-only
    except OSError as e:
        logger.warning("Could not remove the previous version %s (%s); the new one is in place. Remove it by hand.", backup, e.strerror or e)


def _not_ours(output_dir: Path) -> Optional[str]:
    """Why a non-empty folder is not an earlier export of ours (None if it provably is one)."""
    manifest_path = output_dir / MANIFEST_NAME
    if not manifest_path.is_file():
        return f"it holds no {MANIFEST_NAME}"
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        return f"its {MANIFEST_NAME} is not readable JSON"
    if not isinstance(manifest, dict):
        return f"its {MANIFEST_NAME} was not written by nncf-wcam"
    ours = manifest.get("producer") == MANIFEST_PRODUCER and isinstance(manifest.get("manifest_version"), int)
    # Exports written before the producer key existed: the IR format tag and our version entry.
    legacy = manifest.get("format") == "openvino_ir" and isinstance(manifest.get("versions"), dict) and "nncf_wcam" in manifest["versions"]
    if not (ours or legacy):
        return f"its {MANIFEST_NAME} was not written by nncf-wcam"
    others = sorted(entry.name for entry in output_dir.iterdir() if entry.name not in EXPORT_FILES or not entry.is_file())
    if others:
        shown = ", ".join(others[:3]) + (f" and {len(others) - 3} more" if len(others) > 3 else "")
        return f"it also holds {shown}, which an export does not write"
    return None


def _check_replaceable(output_dir: Path) -> None:
    """The output folder is replaced as a whole: refuse to do that to a folder that is not an earlier export of ours."""
    output_dir = _followed(output_dir)
    if not output_dir.exists():
        return
    if not output_dir.is_dir():
        raise OutputFolderError(f"Output path {output_dir} exists and is not a folder. Fix: name a folder for the IR.")
    try:
        empty = not any(output_dir.iterdir())
    except OSError as e:
        raise OutputFolderError(f"Cannot list output folder {output_dir}: {e.strerror or e}. Fix: name a folder you can read and write.") from e
    if empty:
        return
    reason = _not_ours(output_dir)
    if reason is not None:
        msg = (
            f"Output folder {output_dir} is not an earlier export by nncf-wcam ({reason}); exporting replaces the "
            "folder as a whole, so nothing was touched. Fix: name a new or empty folder."
        )
        raise OutputFolderError(msg)


# --------------------------------------------------------------------------- devices


def _device_base(name: str) -> str:
    return name.split(":")[0].split(".")[0]


def device_present(name: str) -> bool:
    """Whether OpenVINO sees `name` (e.g. "NPU", "GPU.1") on this machine; AUTO always is."""
    base = _device_base(name)
    available = ov.Core().available_devices
    if base == "AUTO":
        return True
    return name in available if name != base else any(d == base or d.startswith(base + ".") for d in available)


def check_device(device: str, must_be_present: bool = True) -> str:
    """Returns the normalized device name, or raises `UnsupportedDeviceError` naming the devices this machine has.

    `must_be_present=False` only checks that the name is a device OpenVINO supports (a target to export
    for, which may live on another machine).
    """
    name = device.strip().upper()
    base = _device_base(name)
    available = ov.Core().available_devices
    if base in REMOVED_DEVICES:
        msg = (
            f"Device '{device}': the MYRIAD/VPU (and HDDL) plugins were removed from OpenVINO in 2023.0; "
            f"Intel's NPU plugin is their successor (device 'NPU', static shapes only). "
            f"Devices on this machine: {', '.join(available) or 'none'}."
        )
        raise UnsupportedDeviceError(msg)
    if base not in SUPPORTED_DEVICES:
        msg = (
            f"Unknown device '{device}'. Export targets: {', '.join(SUPPORTED_DEVICES)}. "
            f"Devices on this machine: {', '.join(available) or 'none'}."
        )
        raise UnsupportedDeviceError(msg)
    if base == "AUTO" or not must_be_present:
        return name  # AUTO picks among the available devices at compile time
    if not device_present(name):
        msg = (
            f"Device '{device}' is not available on this machine; OpenVINO sees: {', '.join(available) or 'none'}. "
            "Export for one of those, or run the export where the device is installed."
        )
        raise UnsupportedDeviceError(msg)
    return name


# --------------------------------------------------------------------------- compiling and running IRs


def _compile(model: ov.Model, device: str, inference_precision: Optional[str]) -> ov.CompiledModel:
    properties = {}
    if inference_precision is not None and device == "CPU":
        properties["INFERENCE_PRECISION_HINT"] = inference_precision
    return ov.Core().compile_model(model, device, properties)


def _set_batch(model: ov.Model, batch: int) -> None:
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


def _is_dynamic(model: ov.Model) -> bool:
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
    if batch is None and device == "NPU" and _is_dynamic(model):
        logger.warning("NPU needs static shapes: compiling %s with batch 1.", xml_path)
        batch = 1
    if batch is not None:
        _set_batch(model, batch)
    return _compile(model, device, inference_precision)


def _logits_port(compiled: ov.CompiledModel) -> ov.ConstOutput:
    for output in compiled.outputs:
        if LOGITS_TENSOR_NAME in output.get_names():
            return output
    return compiled.output(0)


def run_compiled(compiled: ov.CompiledModel, inputs: Union[torch.Tensor, np.ndarray]) -> np.ndarray:
    """Runs a compiled IR on a batch (torch or numpy) and returns the logits as numpy.

    The output tagged "logits" at export is used (else the first output). A model compiled with a
    static batch is run chunk by chunk, the last chunk padded with zeros.
    """
    batch = inputs.detach().cpu().numpy() if isinstance(inputs, torch.Tensor) else np.asarray(inputs)
    batch = batch.astype(np.float32, copy=False)
    port = _logits_port(compiled)
    batch_dim = compiled.input(0).get_partial_shape()[0]
    if batch_dim.is_dynamic:
        return np.array(compiled(batch)[port])
    chunk = batch_dim.get_length()
    results = []
    for start in range(0, len(batch), chunk):
        part = batch[start : start + chunk]
        padded = np.concatenate([part, np.zeros((chunk - len(part), *part.shape[1:]), np.float32)])
        results.append(np.array(compiled(padded)[port])[: len(part)])
    return np.concatenate(results)


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


def _summarize_precisions(layers: list) -> dict:
    counts = Counter(f"{layer['layer_type']}:{layer['precision']}" for layer in layers)
    return dict(sorted(counts.items()))


# --------------------------------------------------------------------------- IR statistics


def _weight_values(output: ov.Output) -> Optional[np.ndarray]:
    """Evaluates a weight subgraph (Constant -> Convert / Multiply / FakeQuantize ...) to its float values.

    Quantized weights are stored compressed (e.g. u4 constants plus a scale), so the raw constants do
    not show the real values; evaluating the small subgraph does. Returns None if an activation feeds it.
    """
    node = output.get_node()
    if node.get_type_name() == "Constant":
        return node.get_tensor_view()
    if node.get_type_name() == "Parameter":
        return None
    inputs = [_weight_values(value) for value in node.input_values()]
    if any(value is None for value in inputs):
        return None
    outputs = [ov.Tensor(node.get_output_element_type(i), node.get_output_shape(i)) for i in range(node.get_output_size())]
    if not node.evaluate(outputs, inputs):
        raise ExportError(f"Cannot evaluate the weights of {node.get_friendly_name()} ({node.get_type_name()}).")
    return outputs[output.get_index()]


def _macs(op: ov.Node) -> int:
    """Multiply-accumulates of a Convolution / GroupConvolution / MatMul with static shapes."""
    output_size = int(np.prod(list(op.get_output_shape(0))))
    weight_shape = list(op.get_input_shape(1))
    if op.get_type_name() == "Convolution":  # weights [C_out, C_in, k...]
        return output_size * int(np.prod(weight_shape[1:]))
    if op.get_type_name() == "GroupConvolution":  # weights [groups, C_out/g, C_in/g, k...]
        return output_size * int(np.prod(weight_shape[2:]))
    first_shape = list(op.get_input_shape(0))  # MatMul: reduce over the last (or transposed) axis of input 0
    reduced = first_shape[-2] if op.get_attributes().get("transpose_a") and len(first_shape) > 1 else first_shape[-1]
    return output_size * int(reduced)


def ir_statistics(model: ov.Model) -> dict:
    """Weight values, zero fraction and compute of the IR's convolutions and matmuls, at batch 1.

    `weight_values` counts the values of constant Conv/MatMul weights (quantized or not: the logical
    shape), `zero_fraction` the share of them that are exactly zero, `macs` the multiply-accumulates of
    all Conv/MatMul ops for one sample, `flops` = 2 * macs (NNCF's pruning statistics convention).
    """
    model = model.clone()
    if _is_dynamic(model):
        _set_batch(model, 1)
    weight_values, zeros, macs = 0, 0, 0
    for op in model.get_ordered_ops():
        if op.get_type_name() not in WEIGHTED_OP_TYPES:
            continue
        macs += _macs(op)
        weights = _weight_values(op.input_value(1))
        if weights is None:
            continue  # activation x activation matmul: no weights
        values = weights.data
        weight_values += int(values.size)
        zeros += int(np.count_nonzero(values == 0))
    return {
        "weight_values": weight_values,
        "zero_fraction": zeros / weight_values if weight_values else 0.0,
        "macs": macs,
        "flops": 2 * macs,
    }


def torch_weight_values(model: torch.nn.Module) -> int:
    """Weight values of the PyTorch model's convolutions and linear layers (the IR's `weight_values` counterpart)."""
    layer_types = (torch.nn.modules.conv._ConvNd, torch.nn.Linear)
    return sum(module.weight.numel() for module in model.modules() if isinstance(module, layer_types))


# --------------------------------------------------------------------------- PyTorch side and parity


def _flatten_tensors(outputs: Any) -> list:
    """Tensors of a nested output in the order torch.onnx numbers the graph outputs (dicts in insertion order)."""
    if isinstance(outputs, torch.Tensor):
        return [outputs]
    if isinstance(outputs, dict):
        outputs = list(outputs.values())
    if isinstance(outputs, (tuple, list)):
        return [tensor for item in outputs for tensor in _flatten_tensors(item)]
    return []


def _select_logits(outputs: Any, logits_output: LogitsOutput) -> tuple:
    """Returns (logits tensor, index of that tensor among the exported graph outputs)."""
    if logits_output is None:
        selected = outputs
    else:
        try:
            selected = outputs[logits_output]
        except (KeyError, IndexError, TypeError) as e:
            kind = type(outputs).__name__
            msg = f"logits_output={logits_output!r} does not select an entry of the model's {kind} output: {e!r}"
            raise ExportError(msg) from e
    if not isinstance(selected, torch.Tensor):
        msg = (
            f"The model's output{'' if logits_output is None else f'[{logits_output!r}]'} is a "
            f"{type(selected).__name__}, not a logits tensor. Pass logits_output (an index or key) to select it."
        )
        raise ExportError(msg)
    index = next(i for i, tensor in enumerate(_flatten_tensors(outputs)) if tensor is selected)
    return selected, index


def _torch_outputs(model: torch.nn.Module, inputs: torch.Tensor) -> Any:
    """Runs the compressed model in eval mode without gradients, restoring its training mode afterwards."""
    was_training = model.training
    device = next(model.parameters()).device
    model.eval()
    try:
        with torch.no_grad():
            return model(inputs.to(device))
    finally:
        model.train(was_training)


def _parity(torch_logits: np.ndarray, ir_logits: np.ndarray) -> dict:
    if torch_logits.shape != ir_logits.shape:
        raise ExportError(f"The IR's logits have shape {ir_logits.shape}, PyTorch's {torch_logits.shape}.")
    return {
        "num_samples": int(len(torch_logits)),
        "max_abs_diff": float(np.abs(torch_logits - ir_logits).max()),
        "top1_agreement": float(np.mean(torch_logits.argmax(-1) == ir_logits.argmax(-1))),
    }


def checked_parity(torch_logits: np.ndarray, ir_logits: np.ndarray, min_top1_agreement: float, device: str, output_dir) -> dict:
    """The parity record of an export; an ExportError when top-1 agreement is below the threshold (nothing is written)."""
    parity = _parity(torch_logits, ir_logits)
    parity.update(min_top1_agreement=min_top1_agreement, device=device)
    if parity["top1_agreement"] < min_top1_agreement:
        msg = (
            f"IR parity check failed: top-1 agreement with PyTorch {parity['top1_agreement']:.4f} < "
            f"{min_top1_agreement} on {parity['num_samples']} samples (max |logit diff| "
            f"{parity['max_abs_diff']:.3g}). Nothing was written to {output_dir}."
        )
        raise ExportError(msg)
    return parity


# --------------------------------------------------------------------------- NNCF statistics and manifest


def to_jsonable(value: Any) -> Any:
    """Turns NNCF statistics objects (plain attribute holders), numpy and torch values into JSON types."""
    if isinstance(value, (str, bool, int, float)) or value is None:
        return value
    if isinstance(value, (np.generic, torch.Tensor, np.ndarray)):
        return value.tolist()
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [to_jsonable(v) for v in value]
    if hasattr(value, "__dict__"):
        return {k: to_jsonable(v) for k, v in vars(value).items() if not k.startswith("_")}
    return str(value)


def _precision(statistics: dict) -> str:
    """'fp32', 'int8', 'int4'... or 'weights int4, activations int8' for mixed bit widths."""
    quantization = statistics.get("quantization")
    if quantization is None:
        return "fp32"
    weight_bits = sorted(quantization.num_wq_per_bitwidth)
    activation_bits = sorted(quantization.num_aq_per_bitwidth)
    if len(weight_bits) == 1 and weight_bits == activation_bits:
        return f"int{weight_bits[0]}"

    def describe(bits):
        return "/".join(f"int{b}" for b in bits) or "fp32"

    return f"weights {describe(weight_bits)}, activations {describe(activation_bits)}"


def _algorithm_names(compression_ctrl, config: Optional[dict]) -> list:
    if config is not None and "compression" in config:
        sections = config["compression"]
        sections = sections if isinstance(sections, list) else [sections]
        return [section.get("algorithm") for section in sections]
    controllers = getattr(compression_ctrl, "child_ctrls", None) or [compression_ctrl]
    return [type(ctrl).__name__ for ctrl in controllers]


def _versions() -> dict:
    return {
        "nncf": nncf.__version__,
        "openvino": ov.get_version(),
        "torch": torch.__version__,
        "nncf_wcam": nncf_wcam.__version__,
    }


# --------------------------------------------------------------------------- export


def _one_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return f"{type(error).__name__}: {lines[0][:300] if lines else ''}"


def _onnx_to_ov(compression_ctrl, onnx_dir: Path) -> ov.Model:
    onnx_path = onnx_dir / "model.onnx"
    try:
        compression_ctrl.export_model(str(onnx_path))
    except Exception as e:  # NNCF / torch.onnx raise many types; the caller gets one ExportError
        msg = (
            f"NNCF's ONNX export failed ({_one_line(e)}). Check that the model runs on the config's input_info "
            "sample size and that the `onnx` package is installed."
        )
        raise ExportError(msg) from e
    try:
        return ov.convert_model(str(onnx_path))
    except Exception as e:
        msg = f"OpenVINO could not convert NNCF's ONNX ({_one_line(e)}). Update openvino, or report the operator it names."
        raise ExportError(msg) from e


def _nncf_pruned_weight_values(statistics: dict) -> Optional[int]:
    """Weight values NNCF counts after pruning (convolutions and linear layers, zeroed filters excluded)."""
    pruning = statistics.get("filter_pruning")
    return None if pruning is None else int(pruning.model_statistics.current_params_num)


def _prune(model: ov.Model, statistics: dict, ir_stats_dense: dict, notes: list) -> tuple:
    """Removes the zeroed filters (ir_pruning); on failure keeps them and says why. Returns (model, removed)."""
    expected = _nncf_pruned_weight_values(statistics)
    if expected is None or expected >= ir_stats_dense["weight_values"]:
        return model, False  # NNCF zeroed nothing (yet): nothing to remove
    outcome = remove_pruned_filters(model)
    if not outcome.removed:
        notes.append(
            "Pruned filters could not be removed from the IR (OpenVINO's pruning transformation failed: "
            f"{outcome.error}); they are exported as zeros, same outputs, no speed-up. With per-channel activation "
            'quantizers (NNCF\'s CPU default before depthwise convolutions) set "activations": {"per_channel": false}.'
        )
        logger.warning(notes[-1])
        return model, False
    removed_weights = ir_statistics(outcome.model)["weight_values"]
    if removed_weights == ir_stats_dense["weight_values"]:
        notes.append("OpenVINO's pruning transformation removed no filters: the zeroed filters stay in the IR.")
        logger.warning(notes[-1])
        return model, False
    if removed_weights != expected:
        notes.append(
            f"The pruned IR has {removed_weights} weight values, NNCF counts {expected}: the pruning transformation "
            "removed a different set of filters than NNCF zeroed (parity below still checks the outputs)."
        )
        logger.warning(notes[-1])
    return outcome.model, True


def _prepare_for_npu(model: ov.Model) -> None:
    """NPU-ready: static batch 1 (set by the caller) and the input layout declared as NCHW for the plugin."""
    for model_input in model.inputs:
        if model_input.get_partial_shape().rank.get_length() == 4:
            model_input.get_node().set_layout(ov.Layout("NCHW"))


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
    logits_output: LogitsOutput = None,
    inference_precision: Optional[str] = "f32",
    matched_layers: Optional[list] = None,
) -> ExportResult:
    """Exports an NNCF-compressed model to OpenVINO IR in `output_dir` (model.xml, model.bin, manifest.json).

    `sample_inputs`: a batch for the parity check (single-input models). `config`: the NNCF config dict,
    recorded in the manifest; its `"logits_output"` is used when `logits_output` is not given.
    `dynamic_batch`: batch dimension -1, else a static batch of 1. `device`: where the parity check
    compiles and runs (must be on this machine). `target_device`: the device the IR is meant for
    (default: `device`); it may be absent here: "NPU" gives a static batch of 1 and an NCHW input
    layout, and compiling for it is checked only where it exists (the manifest says whether it was).
    `apply_pruning`: remove the filters NNCF filter pruning zeroed (if that is impossible the zeroed
    filters stay, with a warning and a manifest note). `logits_output`: index or key of the logits when
    the model returns a tuple/list/dict (None: the output is the logits). `inference_precision`: float
    precision on CPU (None: device default).
    `matched_layers`: the layers attribution matching trained (recorded in the manifest).
    Raises `ExportError` (nothing written, an earlier export in `output_dir` kept) when the IR's top-1
    agreement with PyTorch on the samples is below `min_top1_agreement`, or any step fails.
    """
    if not 0.0 <= min_top1_agreement <= 1.0:
        raise ValueError(f"min_top1_agreement must lie in [0, 1], got {min_top1_agreement}.")
    device = check_device(device)
    target_device = device if target_device is None else check_device(target_device, must_be_present=False)
    if logits_output is None and config is not None:
        logits_output = config.get("logits_output")
    output_dir = Path(output_dir)
    _check_replaceable(output_dir)
    notes = []
    needs_static = _device_base(target_device) == "NPU" or _device_base(device) == "NPU"
    if needs_static and dynamic_batch:
        notes.append("NPU needs static shapes: exported with a static batch of 1 instead of a dynamic batch.")
        logger.warning(notes[-1])
        dynamic_batch = False

    statistics = dict(compression_ctrl.statistics())
    try:
        torch_outputs = _torch_outputs(compressed_model, sample_inputs)
    except RuntimeError as e:
        msg = f"The model failed on sample_inputs {tuple(sample_inputs.shape)} ({_one_line(e)}). Pass a batch shaped like the config's input_info."
        raise ExportError(msg) from e
    torch_logits, logits_index = _select_logits(torch_outputs, logits_output)

    logger.info("Exporting ONNX and converting it to OpenVINO.")
    was_training = compressed_model.training
    try:
        with tempfile.TemporaryDirectory(prefix="nncf_wcam_onnx_") as onnx_dir:
            model = _onnx_to_ov(compression_ctrl, Path(onnx_dir))
    finally:
        compressed_model.train(was_training)  # export_model leaves the model in eval mode
    if len(model.inputs) != 1:
        raise ExportError(f"export_ir supports single-input models; this one has {len(model.inputs)} inputs.")
    model.output(logits_index).get_tensor().add_names({LOGITS_TENSOR_NAME})
    # NNCF's ONNX FakeQuantize can sit off the grid its training kernel uses (see quantizer_ranges).
    aligned = align_fake_quantize_ranges(model)
    if aligned:
        logger.info("Put %d FakeQuantize output ranges on NNCF's quantization grid.", len(aligned))

    ir_stats_converted = ir_statistics(model)
    pruned = False
    if apply_pruning and "filter_pruning" in statistics:
        logger.info("Removing pruned filters from the IR.")
        model, pruned = _prune(model, statistics, ir_stats_converted, notes)
    ir_stats = ir_statistics(model) if pruned else ir_stats_converted
    _set_batch(model, -1 if dynamic_batch else 1)
    if _device_base(target_device) == "NPU":
        _prepare_for_npu(model)

    with atomic_directory(output_dir) as staging:
        ov.save_model(model, str(staging / XML_NAME), compress_to_fp16=False)
        logger.info("Checking the saved IR against PyTorch on %d samples (%s).", len(sample_inputs), device)
        try:
            compiled = load_compiled(staging, device, inference_precision=inference_precision)
        except RuntimeError as e:
            msg = f"OpenVINO could not compile the IR for {device} ({_one_line(e)}). Export for another device, or update openvino."
            raise ExportError(msg) from e
        target_compile_checked = _check_target_compiles(staging, target_device, device)
        try:
            ir_logits = run_compiled(compiled, sample_inputs)
        except RuntimeError as e:
            msg = f"The IR failed on sample_inputs {tuple(sample_inputs.shape)} ({_one_line(e)}). Pass a batch shaped like the config's input_info."
            raise ExportError(msg) from e
        parity = checked_parity(torch_logits.detach().cpu().float().numpy(), ir_logits, min_top1_agreement, device, output_dir)
        layers = runtime_precisions(compiled)
        manifest = {
            "producer": MANIFEST_PRODUCER,
            "manifest_version": MANIFEST_VERSION,
            "format": "openvino_ir",
            "files": {"xml": XML_NAME, "bin": BIN_NAME},
            "device": device,
            "target_device": target_device,
            "target_compile_checked": target_compile_checked,
            "inference_precision": inference_precision if device == "CPU" else None,
            "input_shape": [-1 if d.is_dynamic else d.get_length() for d in model.input(0).get_partial_shape()],
            "input_layout": model.input(0).get_node().get_layout().to_string() or None,
            "dynamic_batch": dynamic_batch,
            "logits_output": logits_output,
            "logits_output_index": logits_index,
            "algorithms": _algorithm_names(compression_ctrl, config),
            "matched_layers": list(matched_layers) if matched_layers is not None else None,
            "precision": _precision(statistics),
            "compression": {name: to_jsonable(stats) for name, stats in statistics.items()},
            "pruning_transformation_applied": pruned,
            "nncf_pruned_weight_values": _nncf_pruned_weight_values(statistics),
            "fake_quantize_ranges_aligned": len(aligned),
            "source_weight_values": torch_weight_values(compressed_model),
            "ir_before_pruning_transformation": ir_stats_converted,
            "ir": ir_stats,
            "parity": parity,
            "runtime_precisions": _summarize_precisions(layers),
            "notes": notes,
            "config": to_jsonable(dict(config)) if config is not None else None,
            "versions": _versions(),
        }
        (staging / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2))
    logger.info(
        "Exported IR to %s: parity max |diff| %.3g, top-1 agreement %.4f.",
        output_dir,
        parity["max_abs_diff"],
        parity["top1_agreement"],
    )
    return ExportResult(
        output_dir=output_dir,
        xml_path=output_dir / XML_NAME,
        bin_path=output_dir / BIN_NAME,
        manifest_path=output_dir / MANIFEST_NAME,
        manifest=manifest,
    )


def _check_target_compiles(ir_dir: Path, target_device: str, device: str) -> bool:
    """Compiles the IR for the target device where it exists; returns whether that check was made."""
    if target_device == device:
        return True  # the parity check compiled it there
    if _device_base(target_device) == "AUTO" or not device_present(target_device):
        logger.warning("%s is not on this machine: the IR was not compiled for it here.", target_device)
        return False
    try:
        load_compiled(ir_dir, target_device)
    except RuntimeError as e:
        raise ExportError(f"The IR does not compile for {target_device} ({_one_line(e)}).") from e
    return True
