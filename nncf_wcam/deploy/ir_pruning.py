"""Physical removal of the filters that NNCF filter pruning zeroed, on the OpenVINO model.

NNCF 2.19 filter pruning only zeroes filters (and their BatchNorm entries); OpenVINO's pruning
transformation (`apply_pruning_transformation`) finds the zeroed output channels and removes them
with everything that only they feed. Two cases need help:

- Low-bit quantization (4-bit, 2-bit): OpenVINO stores those weights as i4/u4 constants (plus a
  Convert and a scale), and the transformation does not read 4-bit constants, so it removes
  nothing. The constants are widened to i8/u8 (same values) for the transformation and narrowed
  back afterwards; the rt_info tag that marks them survives the transformation's slicing. The
  low-bit activation FakeQuantize levels are widened to 256 the same way and restored.
- Per-channel activation quantizers (NNCF's default for depthwise convolution inputs on CPU): the
  transformation shrinks the activations but not the FakeQuantize's per-channel ranges, and the
  model no longer type-checks. Removal is not possible then; the caller keeps the zeroed filters.

The transformation runs on a clone, so a failure leaves the caller's model untouched.
"""

import logging
from dataclasses import dataclass
from typing import Optional

import numpy as np
import openvino as ov
from openvino import opset13 as ops
from openvino._offline_transformations import apply_pruning_transformation

from nncf_wcam.deploy.ir_statistics import ir_statistics
from nncf_wcam.errors import error_summary

logger = logging.getLogger("nncf_wcam")

# FakeQuantize levels OpenVINO's pruning transformation recognizes.
PRUNING_LEVELS = 256
# 4-bit constant types and the 8-bit types they are widened to for the transformation.
WIDER_TYPES = {"i4": ("i8", np.int8), "u4": ("u8", np.uint8)}
NARROW_TAG = "nncf_wcam_narrow_to"
ELEMENT_TYPES = {"i4": ov.Type.i4, "u4": ov.Type.u4, "i8": ov.Type.i8, "u8": ov.Type.u8}


@dataclass
class PruningOutcome:
    model: ov.Model
    removed: bool  # the transformation ran and the model type-checks (it may still have removed nothing)
    low_bit_widened: int  # 4-bit constants and low-bit FakeQuantize nodes widened for the transformation
    error: Optional[str] = None  # one line: why removal failed


def _widen_low_bit_fake_quantizes(model: ov.Model) -> dict:
    """Sets every FakeQuantize with fewer than 256 levels to 256; returns {friendly name: original levels}."""
    original = {}
    for op in model.get_ordered_ops():
        if op.get_type_name() == "FakeQuantize":
            levels = int(op.get_attributes()["levels"])
            if levels < PRUNING_LEVELS - 1:
                original[op.get_friendly_name()] = levels
                op.set_attribute("levels", PRUNING_LEVELS)
    return original


def _constant_values(constant: ov.Node) -> np.ndarray:
    """The values of a (possibly 4-bit, packed) constant as float32, by evaluating a Convert."""
    values = ov.Tensor(ov.Type.f32, constant.get_output_shape(0))
    ops.convert(constant, "f32").evaluate([values], [constant.get_tensor_view()])
    return values.data.copy()


def _replace_constant(old: ov.Node, values: np.ndarray, element_type: str) -> ov.Node:
    new = ops.constant(values, dtype=ELEMENT_TYPES[element_type])
    new.set_friendly_name(old.get_friendly_name())
    for target in list(old.output(0).get_target_inputs()):
        target.replace_source_output(new.output(0))
    return new


def _widen_4bit_constants(model: ov.Model) -> int:
    widened = 0
    for op in list(model.get_ordered_ops()):
        name = op.get_output_element_type(0).get_type_name() if op.get_type_name() == "Constant" else None
        if name in WIDER_TYPES:
            wide_name, wide_dtype = WIDER_TYPES[name]
            new = _replace_constant(op, _constant_values(op).astype(wide_dtype), wide_name)
            new.get_rt_info()[NARROW_TAG] = name
            widened += 1
    return widened


def _narrow_4bit_constants(model: ov.Model) -> None:
    for op in list(model.get_ordered_ops()):
        if op.get_type_name() == "Constant" and NARROW_TAG in op.get_rt_info():
            narrow = str(op.get_rt_info()[NARROW_TAG].astype(str))
            _replace_constant(op, _constant_values(op), narrow)


def _narrow_back(model: ov.Model, original: dict) -> None:
    restored = 0
    for op in model.get_ordered_ops():
        if op.get_type_name() == "FakeQuantize" and op.get_friendly_name() in original:
            op.set_attribute("levels", original[op.get_friendly_name()])
            restored += 1
    if restored != len(original):
        # The transformation removed or renamed a quantizer: the bit widths would be wrong, so do not use it.
        raise RuntimeError(f"{len(original) - restored} low-bit FakeQuantize nodes were lost by the pruning transformation")


def remove_pruned_filters(model: ov.Model) -> PruningOutcome:
    """Runs OpenVINO's pruning transformation on a clone of `model`; the caller's model is never modified."""
    pruned = model.clone()
    original_levels = _widen_low_bit_fake_quantizes(pruned)
    widened = len(original_levels) + _widen_4bit_constants(pruned)
    try:
        apply_pruning_transformation(pruned)
        pruned.validate_nodes_and_infer_types()
        _narrow_back(pruned, original_levels)
        _narrow_4bit_constants(pruned)
        pruned.validate_nodes_and_infer_types()
    except RuntimeError as e:  # OpenVINO raises RuntimeError (shape inference) from the transformation
        return PruningOutcome(model, removed=False, low_bit_widened=widened, error=error_summary(e, prefer=("FakeQuantize", "shapes"), with_type=False))
    return PruningOutcome(pruned, removed=True, low_bit_widened=widened)


def prune_ir(model: ov.Model, expected: Optional[int], ir_stats_dense: dict, notes: list) -> tuple:
    """Removes the zeroed filters; on failure keeps them and says why (in `notes` and the log). Returns (model, removed).

    `expected`: the weight values the compression framework counts after pruning (None: it pruned nothing);
    `ir_stats_dense`: `ir_statistics` of `model` as converted.
    """
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
