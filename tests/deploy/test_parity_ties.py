"""Top-1 agreement on quantized outputs: a tie or a one-step lead is not a disagreement, two steps are."""

import numpy as np
import pytest

from nncf_wcam.deploy.parity import output_step
from nncf_wcam.deploy.parity import parity


def quantized_logits(seed: int = 0, scale: float = 0.0213) -> np.ndarray:
    """32 x 10 logits as a quantized classifier's dequantize gives them: float32 values on a grid of `scale`
    (uint8, zero point 128)."""
    logits = np.random.default_rng(seed).normal(size=(32, 10)).astype(np.float32)
    levels = np.clip(np.round(logits / np.float32(scale)) + 128, 0, 255)
    return ((levels - 128) * np.float32(scale)).astype(np.float32)


def with_top1_moved(logits: np.ndarray, row: int, lead: float) -> tuple:
    """(PyTorch logits whose row has a runner-up `lead` below its top-1, IR logits where that runner-up wins)."""
    torch_logits, ir_logits = logits.copy(), logits.copy()
    top, runner_up = np.argsort(torch_logits[row])[::-1][:2]
    torch_logits[row, runner_up] = torch_logits[row, top] - lead
    ir_logits[row] = torch_logits[row]
    ir_logits[row, runner_up] = ir_logits[row, top] + 1e-6
    return torch_logits, ir_logits


def test_the_grid_step_of_a_quantized_output_is_found_and_a_float_output_has_none():
    assert output_step(quantized_logits(scale=0.0213)) == pytest.approx(0.0213, rel=1e-4)
    assert output_step(quantized_logits(scale=0.5)) == pytest.approx(0.5, rel=1e-4)
    assert output_step(np.random.default_rng(0).normal(size=(32, 10)).astype(np.float32)) == 0.0
    assert output_step(np.array([[0.1, 0.7]], dtype=np.float32)) == 0.0, "two values always look evenly spaced"


@pytest.mark.parametrize("lead_in_steps", [0, 1])
def test_a_tie_or_a_one_step_lead_turned_around_by_the_ir_still_agrees(lead_in_steps):
    step = output_step(quantized_logits())
    torch_logits, ir_logits = with_top1_moved(quantized_logits(), row=5, lead=lead_in_steps * step)
    record = parity(torch_logits, ir_logits)
    assert record["top1_agreement"] == 1.0 and record["top1_ties"] <= 1
    assert record["output_step"] == pytest.approx(0.0213, rel=1e-4)


def test_a_two_step_lead_turned_around_is_a_disagreement():
    step = output_step(quantized_logits())
    torch_logits, ir_logits = with_top1_moved(quantized_logits(), row=5, lead=2 * step)
    record = parity(torch_logits, ir_logits)
    assert record["top1_agreement"] == pytest.approx(31 / 32) and record["top1_ties"] == 0


def test_a_float_output_forgives_exact_ties_only():
    logits = np.random.default_rng(1).normal(size=(32, 10)).astype(np.float32)
    record = parity(*with_top1_moved(logits, row=3, lead=1e-3))
    assert record["output_step"] == 0.0 and record["top1_agreement"] == pytest.approx(31 / 32)
    record = parity(*with_top1_moved(logits, row=3, lead=0.0))
    assert record["top1_agreement"] == 1.0
