"""NNCF's quantizer backward in torch ops: equal to NNCF's CPU kernel to first and second order, and, on CUDA,
what gives the matching loss the same gradients as on CPU."""

import copy

import pytest
import torch
from nncf.torch.quantization.extensions import QuantizedFunctionsCPU

from nncf_wcam.core.matcher import AttributionMatcher
from nncf_wcam.core.matcher import frozen_copy
from nncf_wcam.nncf2.training import compress
from nncf_wcam.nncf2.training import load_config
from nncf_wcam.nncf_common.second_order import native_quantize
from nncf_wcam.nncf_common.second_order import reference_backward
from nncf_wcam.nncf_common.second_order import reference_path_everywhere
from nncf_wcam.zoo.models import SmallCNN

from conftest import input_info

LAYER = SmallCNN.LAST_CONV_BLOCK
ACTIVATIONS, WEIGHTS = (8, 4, 5, 5), (4, 3, 3, 3)
CASES = {  # (input shape, input_low, input_range, levels, level_low, level_high, is_asymmetric)
    "symmetric-per-tensor-int8": (ACTIVATIONS, torch.tensor([-1.0]), torch.tensor([2.0]), 256, -128, 127, False),
    "unsigned-per-tensor-int4": (ACTIVATIONS, torch.tensor([0.0]), torch.tensor([1.5]), 16, 0, 15, False),
    "symmetric-per-channel-weights": (WEIGHTS, -torch.rand(4, 1, 1, 1) - 0.5, 2 * torch.rand(4, 1, 1, 1) + 1.0, 256, -128, 127, False),
    "asymmetric-per-tensor": (ACTIVATIONS, torch.tensor([-0.3]), torch.tensor([1.7]), 256, 0, 255, True),
    "asymmetric-per-channel-int2": (ACTIVATIONS, -torch.rand(1, 4, 1, 1), torch.rand(1, 4, 1, 1) + 0.5, 4, 0, 3, True),
}


def _inputs(case):
    torch.manual_seed(0)
    shape, low, span, levels, level_low, level_high, asymmetric = CASES[case]
    x = (3 * torch.randn(shape)).requires_grad_(True)  # values inside and outside the range
    grad_output = torch.randn(shape).requires_grad_(True)
    return grad_output, x, low.clone().requires_grad_(True), span.clone().requires_grad_(True), levels, level_low, level_high, asymmetric


def _kernel(*args):
    return QuantizedFunctionsCPU.get("Quantize_backward")(*args)


@pytest.mark.parametrize("quantize", [None, native_quantize], ids=["torch-forward", "nncf-forward"])
@pytest.mark.parametrize("case", list(CASES))
def test_reference_backward_equals_nncfs_cpu_kernel(case, quantize):
    args = _inputs(case)
    with torch.no_grad():
        expected, got = _kernel(*args), reference_backward(*args, quantize)
    # grad_input and grad_range; grad_input_low only for asymmetric quantizers (NNCF returns garbage for symmetric ones)
    for index in (0, 2, 1) if args[-1] else (0, 2):
        torch.testing.assert_close(torch.broadcast_to(got[index], expected[index].shape), expected[index], rtol=1e-5, atol=1e-6)


def test_values_halfway_between_levels_round_as_nncf_rounds_them():
    """Weights half a step between two levels: NNCF's kernel and the same formula in torch ops can round them to
    different levels (float rounding of the intermediate products); the reference takes NNCF's own values."""
    torch.manual_seed(0)
    scale = torch.rand(64, 1, 1, 1) + 0.1
    low, span = -scale, 2 * scale
    x = low + (torch.randint(-120, 120, (64, 1, 3, 3)).float() + 0.5) * span / 254
    grad_output = torch.ones_like(x)
    expected = _kernel(grad_output, x, low, span, 255, -127, 127, False)[2]
    assert not torch.equal(reference_backward(grad_output, x, low, span, 255, -127, 127, False)[2], expected)  # the ties exist
    torch.testing.assert_close(reference_backward(grad_output, x, low, span, 255, -127, 127, False, native_quantize)[2], expected)


@pytest.mark.parametrize("case", list(CASES))
def test_its_second_order_terms_equal_the_kernels(case):
    """d/d(grad_output, input, low, range) of a scalar of grad_input (what double backprop through a quantizer
    differentiates): the graph autograd records for the CPU kernel, against the one it records for the reference.
    (The kernel's grad_input_range cannot be differentiated again on CPU either: it masks in place a tensor it
    saved for that.)"""
    args = _inputs(case)
    leaves = [a for a in args if isinstance(a, torch.Tensor)]
    weight = torch.randn(CASES[case][0])

    def second_order(backward):
        scalar = (backward(*args)[0] * weight).sum()
        return torch.autograd.grad(scalar, leaves, allow_unused=True)

    for expected, got in zip(second_order(_kernel), second_order(reference_backward)):
        if expected is None or got is None:
            assert (expected is None or not expected.any()) and (got is None or not got.any())
            continue
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def _int8_student(trained_cnn, digits):
    config = load_config({"input_info": input_info(), "compression": [{"algorithm": "quantization", "initializer": {"range": {"num_init_samples": 64}}}]})
    _, student = compress(copy.deepcopy(trained_cnn), config, digits.train, batch_size=32)
    return student.train()


def _matching_gradients(teacher, student, x) -> dict:
    matcher = AttributionMatcher(frozen_copy(teacher), student, [LAYER], weight=1.0)
    student.zero_grad()
    student(x)
    matcher.loss().backward()
    matcher.remove()
    return {name: p.grad.detach().cpu().clone() for name, p in student.named_parameters() if p.grad is not None}


def test_the_reference_path_gives_the_matcher_the_cpu_kernels_gradients(trained_cnn, digits):
    """On CPU, NNCF's kernel and the reference give every parameter the same gradient of the matching loss alone,
    the classifier (after the matched layer, reached only by double backprop) and the quantizer scales included."""
    student, x = _int8_student(trained_cnn, digits), digits.train.tensors[0][:32]
    kernel = _matching_gradients(trained_cnn, student, x)
    with reference_path_everywhere():
        reference = _matching_gradients(trained_cnn, student, x)
    assert kernel.keys() == reference.keys() and "classifier.weight" in kernel and any("scale" in name for name in kernel)
    assert kernel["classifier.weight"].abs().sum() > 0
    for name, grad in kernel.items():  # the same formula, summed in another order: float rounding apart
        assert (reference[name] - grad).norm() <= 1e-4 * grad.norm(), name


@pytest.fixture
def exact_cuda_float32():
    """CUDA convolutions and matmuls in float32 proper (TF32, torch's default for convolutions, rounds inputs to 10 bits)."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_gives_the_matcher_the_same_gradients_as_cpu(trained_cnn, digits, exact_cuda_float32):
    """The same student and batch on CPU and on CUDA: every parameter's gradient of the matching loss agrees to 1e-3."""
    student, x = _int8_student(trained_cnn, digits), digits.train.tensors[0][:32]
    on_cpu = _matching_gradients(trained_cnn, student, x)
    on_cuda = _matching_gradients(copy.deepcopy(trained_cnn).cuda(), copy.deepcopy(student).cuda(), x.cuda())
    assert on_cuda.keys() == on_cpu.keys(), sorted(set(on_cpu) ^ set(on_cuda))
    for name, grad in on_cpu.items():
        relative = (on_cuda[name] - grad).norm() / grad.norm().clamp_min(1e-12)
        print(f"{name}: |grad| cpu {grad.norm():.4g}, cuda {on_cuda[name].norm():.4g}, relative difference {relative:.2e}")
        assert relative <= 1e-3, name
