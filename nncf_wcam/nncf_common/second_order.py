"""NNCF's fake quantizers on CUDA, made differentiable twice, so that double backprop reaches past them.

NNCF computes a quantizer's backward (`QuantizeSymmetric`, `QuantizeAsymmetric`) with its C++ extension.
On CPU that code is built from ATen operations, which autograd records: under `create_graph=True` (the
matcher builds the student's maps that way) the backward is itself differentiable. On CUDA it is a raw
kernel, which autograd cannot see: the gradient it returns has no graph, so every second-order path
through a quantizer is cut. The matching loss then trains nothing after the matched layer (the classifier
and its quantizer scales get no gradient at all), silently.

`install()` wraps both Functions' backward. While autograd builds a second-order graph (inside a backward,
grad mode is on only under `create_graph=True`) and the tensors are on CUDA, the backward runs
`reference_backward`: the CPU kernel's formula, operation for operation, in torch operations that autograd
records. It takes the quantized values from NNCF's own forward kernel of the tensors' device, so that values
halfway between two levels round exactly as NNCF rounds them. Every other backward (first-order training
steps, CPU) runs NNCF's own kernel as before.
"""

import functools
from typing import Callable
from typing import Optional
from typing import Tuple

import torch
from nncf.torch.quantization import quantize_functions
from nncf.torch.quantization.extensions import QuantizedFunctionsCPU
from nncf.torch.quantization.extensions import QuantizedFunctionsCUDA

_INSTALLED = "_nncf_wcam_second_order"


def _forward(input_: torch.Tensor, input_low: torch.Tensor, input_range: torch.Tensor, levels: int) -> torch.Tensor:
    """NNCF's quantizer forward (`q_cpu_forward`): clamp, shift, scale, round, scale back."""
    scale = (levels - 1) / input_range
    output = torch.max(torch.min(input_, input_low + input_range), input_low)
    zero_point = (-input_low * scale).round()
    return ((output - input_low) * scale - zero_point).round() / scale


def _sum_like(tensor: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """NNCF's `sum_like`: sum over the leading dimensions where `ref` has size 1 (autograd reduces the rest)."""
    if tensor.numel() == 1:
        return tensor.sum().view_as(ref)
    for dim in range(ref.dim()):
        if ref.shape[dim] == 1:
            tensor = tensor.sum(dim, keepdim=True)
    return tensor


def reference_backward(
    grad_output: torch.Tensor,
    input_: torch.Tensor,
    input_low: torch.Tensor,
    input_range: torch.Tensor,
    levels: int,
    level_low: int,
    level_high: int,
    is_asymmetric: bool,
    quantize: Optional[Callable] = None,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(grad_input, grad_input_low, grad_input_range) as NNCF's `q_cpu_backward` computes them, in torch ops.

    Shapes: `grad_output` and `input_` alike (e.g. B x C x H x W); `input_low` and `input_range` broadcast to
    them (per tensor or per channel). grad_input_low is zeros for symmetric quantizers, as NNCF's.
    `quantize(input_, input_low, input_range, levels)`: the quantized values (default: the same formula in
    torch ops; `native_quantize` gives NNCF's own kernel's, used detached). grad_input, the part double
    backprop differentiates, does not depend on them.
    """
    if quantize is None:
        output = _forward(input_, input_low, input_range, levels)
    else:
        output = quantize(input_.detach(), input_low.detach(), input_range.detach(), levels).detach()
    mask_hi = input_ > input_low + input_range
    mask_lo = input_ < input_low
    err = (output - input_) * (1 / input_range)
    err = torch.where(mask_hi, torch.ones_like(err), err)
    err = torch.where(mask_lo, torch.full_like(err, level_low / level_high), err)
    grad_range = _sum_like(err * grad_output, input_range)
    outside = mask_hi | mask_lo
    grad_input = torch.where(outside, torch.zeros_like(grad_output), grad_output)
    if not is_asymmetric:
        return grad_input, torch.zeros_like(input_low), grad_range
    grad_low = _sum_like(torch.where(outside, grad_output, torch.zeros_like(grad_output)), input_low)
    return grad_input, grad_low, grad_range


def native_quantize(input_: torch.Tensor, input_low: torch.Tensor, input_range: torch.Tensor, levels: int) -> torch.Tensor:
    """NNCF's own forward kernel for the tensors' device."""
    functions = QuantizedFunctionsCUDA if input_.is_cuda else QuantizedFunctionsCPU
    return functions.get("Quantize_forward")(input_.contiguous(), input_low, input_range, levels)


def _builds_second_order_graph(grad_output: torch.Tensor) -> bool:
    return torch.is_grad_enabled() and grad_output.is_cuda


def _symmetric_backward(original: Callable, force: Callable[[], bool]) -> Callable:
    @functools.wraps(original)
    def backward(ctx, *grad_outputs):
        grad_output = grad_outputs[0]
        if not (force() or _builds_second_order_graph(grad_output)):
            return original(ctx, *grad_outputs)
        input_, input_low, input_range = ctx.saved_tensors
        grad_input, _, grad_scale = reference_backward(grad_output, input_, input_low, input_range, ctx.levels, ctx.level_low, ctx.level_high, False, native_quantize)
        return grad_input, grad_scale, None, None, None

    return backward


def _asymmetric_backward(original: Callable, force: Callable[[], bool]) -> Callable:
    @functools.wraps(original)
    def backward(ctx, *grad_outputs):
        grad_output = grad_outputs[0]
        if not (force() or _builds_second_order_graph(grad_output)):
            return original(ctx, *grad_outputs)
        input_, input_low, input_range = ctx.saved_tensors
        grad_input, grad_low, grad_range = reference_backward(grad_output, input_, input_low, input_range, ctx.levels, ctx.level_low, ctx.level_high, True, native_quantize)
        return grad_input, grad_low, grad_range, None, None, None

    return backward


class _Forced:
    """Set by `reference_path_everywhere()`: the reference backward on every device (what the CPU tests compare)."""

    active = False


def install() -> None:
    """Wraps NNCF's quantizer backwards (idempotent): second-order graphs on CUDA go through `reference_backward`."""
    for name, wrap in (("QuantizeSymmetric", _symmetric_backward), ("QuantizeAsymmetric", _asymmetric_backward)):
        function = getattr(quantize_functions, name)
        if getattr(function.backward, _INSTALLED, False):
            continue
        wrapped = wrap(function.backward, lambda: _Forced.active)
        setattr(wrapped, _INSTALLED, True)
        function.backward = staticmethod(wrapped)


class reference_path_everywhere:
    """`with reference_path_everywhere():` every quantizer backward runs `reference_backward`, on CPU too."""

    def __enter__(self) -> "reference_path_everywhere":
        install()
        _Forced.active = True
        return self

    def __exit__(self, *exc) -> None:
        _Forced.active = False
