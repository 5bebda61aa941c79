"""What an IR holds: weight values, their zero fraction, and multiply-accumulates of its convolutions and matmuls.

Counted at batch 1. The manifest reports them before and after the pruning transformation, beside
NNCF's own count, so a reader sees what compression removed for real.
"""

from typing import Optional

import numpy as np
import openvino as ov
import torch

from nncf_wcam.deploy.runtime import is_dynamic
from nncf_wcam.deploy.runtime import set_batch
from nncf_wcam.errors import ExportError

# IR operations whose second input is a weight tensor.
WEIGHTED_OP_TYPES = ("Convolution", "GroupConvolution", "MatMul")


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
    if is_dynamic(model):
        set_batch(model, 1)
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
