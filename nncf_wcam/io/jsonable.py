"""Values made JSON: NNCF states and statistics, numpy and torch values."""

import json
import math
from typing import Any

import numpy as np
import torch


def json_plain(value: Any) -> Any:
    """NNCF states hold enums and tuples: the JSON round trip turns them into plain ints and lists."""
    return json.loads(json.dumps(value))


def to_jsonable(value: Any) -> Any:
    """Turns NNCF statistics objects (plain attribute holders), numpy and torch values into JSON types.

    NaN and infinity, which JSON has no token for, become null.
    """
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (str, bool, int)) or value is None:
        return value
    if isinstance(value, (np.generic, torch.Tensor, np.ndarray)):
        return to_jsonable(value.tolist())
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [to_jsonable(v) for v in value]
    if hasattr(value, "__dict__"):
        return {k: to_jsonable(v) for k, v in vars(value).items() if not k.startswith("_")}
    return str(value)
