"""The one logits selector: the logits tensor out of a model's output (a tensor, a tuple/list, a dict)."""

from typing import Any
from typing import Optional
from typing import Union

import torch

from nncf_wcam.errors import NncfWcamError

LogitsSelector = Optional[Union[int, str]]


class LogitsOutputError(NncfWcamError, ValueError):
    """The model's output holds no logits where "logits_output" says (or the output is not a tensor)."""


def _available(output: Any) -> str:
    if isinstance(output, dict):
        return f"keys {list(output.keys())}"
    if isinstance(output, (tuple, list)):
        return f"indices 0..{len(output) - 1}"
    return "nothing to select (the output is a single tensor)"


def select_logits(output: Any, logits_output: LogitsSelector = None) -> torch.Tensor:
    """The B x num_classes logits in `output`: the output itself, or `output[logits_output]` (an index or key).

    Raises `LogitsOutputError` naming what the output holds when the selector does not lead to logits.
    """
    if logits_output is None:
        if isinstance(output, torch.Tensor):
            return output
        msg = (
            f"The model returned a {type(output).__name__}, not a tensor of logits. "
            "Set \"logits_output\" (the config block's key, or the function's argument) to the index (tuple) or key "
            f"(dict) of the output that holds the logits: {_available(output)}."
        )
        raise LogitsOutputError(msg)
    if isinstance(logits_output, float) and logits_output.is_integer():
        logits_output = int(logits_output)  # JSON Schema integers may arrive as 1.0
    if isinstance(output, torch.Tensor):
        msg = f"\"logits_output\": {logits_output!r} is not in the model's output: it is a single tensor (leave \"logits_output\" unset)."
        raise LogitsOutputError(msg)
    try:
        logits = output[logits_output]
    except (KeyError, IndexError, TypeError) as e:
        msg = f"\"logits_output\": {logits_output!r} is not in the model's output. Available: {_available(output)}."
        raise LogitsOutputError(msg) from e
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2:
        msg = (
            f"\"logits_output\": {logits_output!r} selects {type(logits).__name__} of shape "
            f"{getattr(logits, 'shape', None)}; expected B x num_classes logits."
        )
        raise LogitsOutputError(msg)
    return logits
