"""AttributionMatchingConfig: the attribution_matching block as one object beside Intel Neural Compressor's own
configs (`WeightPruningConfig`, `QuantizationAwareTrainingConfig`, `DistillationConfig`).

Its fields are the config block's keys (`nncf_wcam.schema.blocks`), validated by the same schema, so a wrong
key or value gets the same one-line error as in a JSON config; three fields are INC's own:

- `teacher`: the uncompressed model (or a path to its state_dict); by default a frozen copy of the model given
  to `prepare_compression`, taken before INC changes it;
- `student_layers`: the student's names of the matched layers where INC renamed them (FX quantization fuses
  Conv+BN+ReLU into one module); by default they are found on the prepared model (`inc.fusion`);
- `example_inputs`: one batch of inputs, needed by `layers="auto"` (a forward pass finds the last spatial layer).
"""

import copy
import os
from dataclasses import dataclass
from dataclasses import field
from dataclasses import fields
from pathlib import Path
from typing import Any
from typing import Optional
from typing import Sequence
from typing import Union

import torch
from torch import nn

from nncf_wcam.core.matcher import freeze
from nncf_wcam.errors import NncfWcamError
from nncf_wcam.errors import error_summary
from nncf_wcam.errors import short_repr
from nncf_wcam.schema.blocks import ATTRIBUTION_MATCHING
from nncf_wcam.schema.blocks import ATTRIBUTION_MATCHING_DEFAULTS
from nncf_wcam.schema.blocks import ATTRIBUTION_MATCHING_SCHEMA
from nncf_wcam.schema.validation import check_block

_INC_FIELDS = ("teacher", "student_layers", "example_inputs")


class MatchingConfigError(NncfWcamError, ValueError):
    """A field of AttributionMatchingConfig that the schema does not cover cannot be used."""


class TeacherError(MatchingConfigError):
    """The teacher given to AttributionMatchingConfig cannot be used."""


@dataclass
class AttributionMatchingConfig:
    """Attribution matching beside INC's configs: `prepare_compression(model, [WeightPruningConfig(...),
    AttributionMatchingConfig()])`. Defaults are the config block's (`{"algorithm": "attribution_matching"}`)."""

    teacher: Union[nn.Module, str, os.PathLike, None] = None
    layers: Union[str, Sequence[str]] = ATTRIBUTION_MATCHING_DEFAULTS["layers"]
    student_layers: Optional[Sequence[str]] = None
    method: str = ATTRIBUTION_MATCHING_DEFAULTS["method"]
    weight: float = ATTRIBUTION_MATCHING_DEFAULTS["weight"]
    layer_weights: Optional[Sequence[float]] = ATTRIBUTION_MATCHING_DEFAULTS["layer_weights"]
    stochastic_drop: float = ATTRIBUTION_MATCHING_DEFAULTS["stochastic_drop"]
    logits_output: Union[int, str, None] = ATTRIBUTION_MATCHING_DEFAULTS["logits_output"]
    seed: int = ATTRIBUTION_MATCHING_DEFAULTS["seed"]
    input_method: Optional[str] = ATTRIBUTION_MATCHING_DEFAULTS["input_method"]
    input_weight: float = ATTRIBUTION_MATCHING_DEFAULTS["input_weight"]
    example_inputs: Any = field(default=None, repr=False)

    def __post_init__(self):
        block = self.block()
        check_block({"algorithm": ATTRIBUTION_MATCHING, **block}, ATTRIBUTION_MATCHING, ATTRIBUTION_MATCHING_SCHEMA)
        if self.student_layers is not None and (isinstance(self.student_layers, str) or not all(isinstance(n, str) for n in self.student_layers)):
            msg = f"AttributionMatchingConfig.student_layers is {short_repr(self.student_layers)}; give a list of the student's module names, one per entry of layers."
            raise MatchingConfigError(msg)

    def block(self) -> dict:
        """The JSON block's keys (what the schema checks), without INC's own fields."""
        values = {key: value for key, value in asdict_shallow(self).items() if key not in _INC_FIELDS}
        if isinstance(values["layers"], tuple):
            values["layers"] = list(values["layers"])
        if isinstance(values["layer_weights"], tuple):
            values["layer_weights"] = list(values["layer_weights"])
        return values


def asdict_shallow(config: AttributionMatchingConfig) -> dict:
    """dataclasses.asdict without deep-copying the teacher model or the example inputs."""
    return {item.name: getattr(config, item.name) for item in fields(config)}


def resolve_teacher(config: AttributionMatchingConfig, model: nn.Module) -> nn.Module:
    """The frozen teacher: the config's model, a copy of `model` loaded from the config's state_dict file, or a
    copy of `model` itself (called before INC changes `model`)."""
    teacher = config.teacher
    if teacher is None:
        return freeze(copy.deepcopy(model))
    if isinstance(teacher, nn.Module):
        return freeze(teacher)
    if isinstance(teacher, (str, os.PathLike)):
        return freeze(_teacher_from_file(Path(teacher), model))
    msg = f"AttributionMatchingConfig.teacher is a {type(teacher).__name__}; give the uncompressed nn.Module, a path to its state_dict, or None (a copy of the model)."
    raise TeacherError(msg)


def _teacher_from_file(path: Path, model: nn.Module) -> nn.Module:
    if not path.is_file():
        msg = f"Teacher file {str(path)!r} does not exist (or is not a file). Fix: save the uncompressed model's state_dict there (torch.save(model.state_dict(), path)), or pass the model itself."
        raise TeacherError(msg)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        teacher = copy.deepcopy(model)
        teacher.load_state_dict(state.get("state_dict", state) if isinstance(state, dict) else state)
    except Exception as error:  # noqa: BLE001  (unpickling and load_state_dict raise many types)
        msg = f"Teacher file {str(path)!r} is not a state_dict of this model ({error_summary(error, 160)}). Fix: save it with torch.save(model.state_dict(), path) from the same architecture."
        raise TeacherError(msg) from error
    return teacher
