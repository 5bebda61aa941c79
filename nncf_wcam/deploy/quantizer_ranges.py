"""Puts the exported FakeQuantize nodes on the grid that NNCF's quantizers use in training.

NNCF 2.19's quantizer kernel (`Quantize_forward`, used by every quantizer in training and in
PyTorch evaluation) computes, for an input range [lo, hi] with `levels` levels:

    s = (levels - 1) / (hi - lo);  zp = round(-lo * s)
    y = (round((clip(x, lo, hi) - lo) * s) - zp) / s

so its outputs are the multiples of 1/s: zero is always on the grid. The exported ONNX
FakeQuantize (and the OpenVINO one) computes y = round((clip(x, lo, hi) - lo) * s) / s + lo, whose
grid is shifted by lo. The two agree only when -lo * s is an integer. NNCF's `TuneRange` moves lo
onto the grid in most cases, but not when -lo * s < 0.5 (an asymmetric activation quantizer whose
trained `input_low` went slightly below 0, typically right after a ReLU): then the exported model
adds `lo` to every value of that activation, and low-bit models change their predictions.

The exact fix keeps the input range (same clip and same rounding thresholds) and sets the
FakeQuantize's output range to the kernel's grid: output_low = -zp / s, output_high = output_low +
(hi - lo). For quantizers already on the grid this changes nothing (within float rounding).
"""

from typing import Optional

import numpy as np
import openvino as ov
from openvino import opset13 as ops

# A shift below this fraction of one quantization step is float noise, not an off-grid range.
OFF_GRID_TOLERANCE = 1e-3


def _constant(output: ov.Output) -> Optional[np.ndarray]:
    node = output.get_node()
    return node.get_data().astype(np.float32) if node.get_type_name() == "Constant" else None


def kernel_output_range(input_low: np.ndarray, input_high: np.ndarray, levels: int) -> tuple:
    """The output range of NNCF's quantizer kernel for this input range (float32, as the kernel computes it)."""
    input_low, input_high = np.float32(input_low), np.float32(input_high)
    scale = np.float32(levels - 1) / (input_high - input_low)
    zero_point = np.round(-input_low * scale)
    output_low = (-zero_point / scale).astype(np.float32)
    return output_low, (output_low + (input_high - input_low)).astype(np.float32)


def align_fake_quantize_ranges(model: ov.Model) -> list:
    """Rewrites off-grid FakeQuantize output ranges of `model` in place; returns the names of the nodes changed."""
    changed = []
    for op in model.get_ordered_ops():
        if op.get_type_name() != "FakeQuantize":
            continue
        input_low, input_high, output_low, output_high = (_constant(op.input_value(i)) for i in range(1, 5))
        if any(value is None for value in (input_low, input_high, output_low, output_high)):
            continue
        # Only NNCF's form (output range == input range) is the kernel's; leave other FakeQuantizes alone.
        if not (np.array_equal(input_low, output_low) and np.array_equal(input_high, output_high)):
            continue
        levels = int(op.get_attributes()["levels"])
        new_low, new_high = kernel_output_range(input_low, input_high, levels)
        step = (input_high - input_low) / (levels - 1)
        if np.all(np.abs(new_low - output_low) <= OFF_GRID_TOLERANCE * np.abs(step)):
            continue
        op.input(3).replace_source_output(ops.constant(new_low).output(0))
        op.input(4).replace_source_output(ops.constant(new_high).output(0))
        changed.append(op.get_friendly_name())
    if changed:
        model.validate_nodes_and_infer_types()
    return changed
