"""The IR against the PyTorch model it came from: the same samples through both, logits compared.

An export fails (and writes nothing) when the IR's top-1 agreement with PyTorch is below the caller's
threshold; the maximum absolute logit difference and the agreement go into the manifest.

A quantized output (INC's converted models end in a dequantize) takes values on a grid, and its top-1 can be
a tie, or a lead of one grid step that the IR's own rounding turns around. Such samples count as agreeing
when the IR's top-1 class lies within one grid step of PyTorch's maximum; the record says how many did.
"""

from typing import Any

import numpy as np
import torch

from nncf_wcam.core.logits import LogitsSelector
from nncf_wcam.core.logits import select_logits
from nncf_wcam.errors import ExportError
from nncf_wcam.errors import error_summary


def _flatten_tensors(outputs: Any) -> list:
    """Tensors of a nested output in the order torch.onnx numbers the graph outputs (dicts in insertion order)."""
    if isinstance(outputs, torch.Tensor):
        return [outputs]
    if isinstance(outputs, dict):
        outputs = list(outputs.values())
    if isinstance(outputs, (tuple, list)):
        return [tensor for item in outputs for tensor in _flatten_tensors(item)]
    return []


class ExportInputError(ExportError, ValueError):
    """The samples or the logits selector an export was given do not fit the model (fix the input)."""

    exit_code = 2


def sample_batch(samples) -> torch.Tensor:
    """The parity samples as a float32 tensor, B x ... with B >= 1 (numpy arrays and float64 are converted)."""
    if isinstance(samples, np.ndarray):
        samples = torch.from_numpy(np.ascontiguousarray(samples))
    if not isinstance(samples, torch.Tensor) or not (samples.is_floating_point() or samples.dtype in (torch.uint8, torch.int64, torch.int32)):
        msg = f"sample_inputs is a {type(samples).__name__}; export needs a batch of inputs as a torch tensor or numpy array (B x C x H x W)."
        raise ExportInputError(msg)
    if samples.dim() < 2 or len(samples) == 0:
        raise ExportInputError(f"sample_inputs has shape {tuple(samples.shape)}: export needs a non-empty batch, B x C x H x W.")
    return samples.detach().float()


def torch_logits(model: torch.nn.Module, inputs: torch.Tensor, logits_output: LogitsSelector = None) -> tuple:
    """(logits, index of the logits among the exported graph outputs) of the model in eval mode, without gradients.

    The model's training mode is restored afterwards. A model that fails on the samples, or whose output
    holds no logits where `logits_output` says, raises ExportInputError.
    """
    was_training = model.training
    param = next(model.parameters(), None)
    model.eval()
    try:
        with torch.no_grad():
            outputs = model(inputs.to(param.device if param is not None else "cpu"))
    except RuntimeError as e:
        msg = f"The model failed on sample_inputs {tuple(inputs.shape)} ({error_summary(e)}). Pass a batch shaped like the model's input."
        raise ExportInputError(msg) from e
    finally:
        model.train(was_training)
    try:
        logits = select_logits(outputs, logits_output)
    except ValueError as e:
        raise ExportInputError(str(e)) from e
    index = next(i for i, tensor in enumerate(_flatten_tensors(outputs)) if tensor is logits)
    return logits, index


# A grid is only inferred from enough distinct values: two or three float logits always look evenly spaced.
_MIN_GRID_VALUES = 8
_GRID_SLACK = 0.05  # of a step: float32 dequantization error is far below this, a float output far above


def output_step(logits: np.ndarray) -> float:
    """The grid step of a quantized output's values; 0.0 for a float output (no grid)."""
    values = np.unique(logits.astype(np.float64).ravel())
    if len(values) < _MIN_GRID_VALUES:
        return 0.0
    offsets = values - values[0]
    multiples = np.round(offsets / np.diff(values).min())
    step = float(np.dot(multiples, offsets) / np.dot(multiples, multiples))  # least squares: float32 drift
    on_grid = np.abs(offsets - multiples * step).max() <= _GRID_SLACK * step
    return step if on_grid else 0.0


def top1_agreement(torch_logits: np.ndarray, ir_logits: np.ndarray) -> tuple:
    """(agreement, samples that agree only as ties, PyTorch's output step) of the IR's top-1 with PyTorch's.

    A sample agrees when the IR's top-1 class has PyTorch's maximum logit, up to one step of PyTorch's
    output grid (exactly, for a float output). Shapes: N x ... x classes each.
    """
    step = output_step(torch_logits)
    ir_top1 = ir_logits.argmax(-1)
    exact = torch_logits.argmax(-1) == ir_top1
    torch_at_ir_top1 = np.take_along_axis(torch_logits, ir_top1[..., None], -1)[..., 0]
    within = torch_at_ir_top1 >= torch_logits.max(-1) - step * (1 + _GRID_SLACK)
    agrees = exact | within
    return float(np.mean(agrees)), int(np.sum(agrees & ~exact)), step


def parity(torch_logits: np.ndarray, ir_logits: np.ndarray) -> dict:
    """Maximum absolute logit difference and top-1 agreement of the IR with PyTorch."""
    if torch_logits.shape != ir_logits.shape:
        raise ExportError(f"The IR's logits have shape {ir_logits.shape}, PyTorch's {torch_logits.shape}.")
    for who, logits in (("The PyTorch model's", torch_logits), ("The IR's", ir_logits)):
        if not np.isfinite(logits).all():
            msg = f"{who} logits on the samples hold NaN or infinity: nothing was exported. Fix: check the model's weights (a training step that overflowed?)."
            raise ExportError(msg)
    agreement, ties, step = top1_agreement(torch_logits, ir_logits)
    return {
        "num_samples": int(len(torch_logits)),
        "max_abs_diff": float(np.abs(torch_logits - ir_logits).max()),
        "top1_agreement": agreement,
        "top1_ties": ties,
        "output_step": step,
    }


def checked_parity(torch_logits: np.ndarray, ir_logits: np.ndarray, min_top1_agreement: float, device: str, output_dir) -> dict:
    """The parity record of an export; an ExportError when top-1 agreement is below the threshold (nothing is written)."""
    record = parity(torch_logits, ir_logits)
    record.update(min_top1_agreement=min_top1_agreement, device=device)
    if record["top1_agreement"] < min_top1_agreement:
        msg = (
            f"IR parity check failed: top-1 agreement with PyTorch {record['top1_agreement']:.4f} < "
            f"{min_top1_agreement} on {record['num_samples']} samples (max |logit diff| "
            f"{record['max_abs_diff']:.3g}). Nothing was written to {output_dir}."
        )
        raise ExportError(msg)
    return record
