"""NNCF 3.x's quantizers: the reference backward gives the matcher the CPU kernel's gradients, and on CUDA the
CPU's gradients (the CUDA test runs where a GPU is)."""

import copy

import nncf
import pytest
import torch
from torch.utils.data import DataLoader
from torch.utils.data import Subset

from nncf_wcam import AttributionMatcher
from nncf_wcam import frozen_copy
from nncf_wcam.nncf3 import calibration_dataset
from nncf_wcam.nncf_common.second_order import reference_path_everywhere

LAYER = "features.9"


def _int8_student(teacher, digits):
    loader = DataLoader(Subset(digits.train, range(128)), batch_size=32)
    return nncf.quantize(copy.deepcopy(teacher), calibration_dataset(loader), subset_size=len(loader)).train()


def _matching_gradients(teacher, student, x) -> dict:
    matcher = AttributionMatcher(frozen_copy(teacher), student, [LAYER], weight=1.0)
    student.zero_grad()
    student(x)
    matcher.loss().backward()
    matcher.remove()
    return {name: p.grad.detach().cpu().clone() for name, p in student.named_parameters() if p.grad is not None}


def test_the_reference_path_gives_the_matcher_the_cpu_kernels_gradients(trained_cnn, digits):
    student, x = _int8_student(trained_cnn, digits), digits.train.tensors[0][:32]
    kernel = _matching_gradients(trained_cnn, student, x)
    with reference_path_everywhere():
        reference = _matching_gradients(trained_cnn, student, x)
    assert kernel.keys() == reference.keys() and "classifier.weight" in kernel and kernel["classifier.weight"].abs().sum() > 0
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
    student, x = _int8_student(trained_cnn, digits), digits.train.tensors[0][:32]
    on_cpu = _matching_gradients(trained_cnn, student, x)
    on_cuda = _matching_gradients(copy.deepcopy(trained_cnn).cuda(), copy.deepcopy(student).cuda(), x.cuda())
    assert on_cuda.keys() == on_cpu.keys(), sorted(set(on_cpu) ^ set(on_cuda))
    for name, grad in on_cpu.items():
        relative = (on_cuda[name] - grad).norm() / grad.norm().clamp_min(1e-12)
        print(f"{name}: |grad| cpu {grad.norm():.4g}, cuda {on_cuda[name].norm():.4g}, relative difference {relative:.2e}")
        assert relative <= 1e-3, name
