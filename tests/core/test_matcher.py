"""The pure-torch matcher: maps, loss, captum as the oracle, no NNCF needed."""

import copy

import pytest
import torch
from captum.attr import LayerGradCam

from nncf_wcam.core.maps import ewa_map
from nncf_wcam.core.maps import normalize_maps
from nncf_wcam.core.maps import wcam_map
from nncf_wcam.core.matcher import AttributionMatcher
from nncf_wcam.core.matcher import frozen_copy
from nncf_wcam.zoo.models import SmallCNN

LAYER = SmallCNN.LAST_CONV_BLOCK


def test_wcam_map_is_relu_of_gradient_weighted_sum():
    activation = torch.tensor([[[[1.0, 2.0]], [[3.0, -1.0]]]])  # 1 x 2 x 1 x 2
    gradient = torch.tensor([[[[0.5, 0.5]], [[-1.0, 0.0]]]])  # channel weights 1.0 and -1.0
    expected = torch.relu(torch.tensor([[[1.0 - 3.0, 2.0 + 1.0]]]))
    assert torch.equal(wcam_map(activation, gradient), expected)
    dropped = wcam_map(activation, gradient, channel_mask=torch.tensor([[1.0, 0.0]]))
    assert torch.equal(dropped, torch.tensor([[[1.0, 2.0]]]))


def test_ewa_map_and_normalization():
    activation = torch.tensor([[[[1.0, 2.0]], [[3.0, 0.0]]]])
    assert torch.equal(ewa_map(activation), torch.tensor([[[5.0, 2.0]]]))
    normalized = normalize_maps(torch.tensor([[[3.0, 4.0]], [[0.0, 0.0]]]))
    assert torch.allclose(normalized, torch.tensor([[0.6, 0.8], [0.0, 0.0]]))  # a zero map stays zero


def _captum_gradcam(model, x, target):
    return LayerGradCam(model, model.get_submodule(LAYER)).attribute(x, target=target, relu_attributions=True).squeeze(1)


def test_maps_equal_captum_layer_gradcam_up_to_positive_scale(trained_cnn, digits):
    """captum is the oracle: our teacher and student maps are Grad-CAM times H*W (sum vs mean of gradients)."""
    student = copy.deepcopy(trained_cnn)
    with torch.no_grad():
        student.features[0].weight.mul_(0.7)  # a different student, so the test tells the two maps apart
    matcher = AttributionMatcher(frozen_copy(trained_cnn), student, [LAYER], stochastic_drop=0.0)
    x = digits.test.tensors[0][:16]
    student.train()
    student(x)
    matcher.loss()
    map_t, map_s = matcher.last_maps[LAYER]
    target = matcher.last_target
    assert torch.equal(target, trained_cnn.eval()(x).argmax(1))
    hw = map_t.shape[-1] * map_t.shape[-2]
    teacher_oracle = _captum_gradcam(frozen_copy(trained_cnn), x, target)
    student.train()  # the student's map is taken in training mode, as the loss sees it
    student_oracle = _captum_gradcam(student, x, target)
    assert teacher_oracle.abs().sum() > 0
    assert torch.allclose(map_t, teacher_oracle * hw, rtol=1e-4, atol=1e-5)
    assert torch.allclose(map_s, student_oracle * hw, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(map_t, map_s, rtol=1e-2)


def test_identical_models_give_zero_loss_and_eval_gives_zero(trained_cnn, digits):
    student = copy.deepcopy(trained_cnn).eval()
    matcher = AttributionMatcher(frozen_copy(trained_cnn), student, [LAYER], stochastic_drop=0.0)
    x = digits.test.tensors[0][:8]
    # eval mode: nothing captured, loss is zero and has no graph
    student(x)
    loss = matcher.loss()
    assert loss.item() == 0.0 and not loss.requires_grad
    # train mode, BN frozen to running stats through eval-mode modules: same maps -> zero loss
    student.train()
    for m in student.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.eval()
    student(x)
    loss = matcher.loss()
    assert loss.requires_grad and loss.item() < 1e-10
    with torch.no_grad():
        student(x)
    assert matcher.loss().item() == 0.0


def test_loss_trains_the_student_through_its_gradients(trained_cnn, digits):
    """The classifier lies after the matched layer: only double backprop can give it a gradient."""
    student = copy.deepcopy(trained_cnn).train()
    matcher = AttributionMatcher(frozen_copy(trained_cnn), student, [LAYER, "features.5"], layer_weights=[1.0, 0.5], stochastic_drop=0.3)
    student(digits.train.tensors[0][:16])
    loss = matcher.loss()
    assert torch.isfinite(loss) and loss.item() > 0
    loss.backward()
    assert student.classifier.weight.grad.abs().sum() > 0
    assert student.features[0].weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in matcher.teacher.parameters())


def test_ewa_method_needs_no_labels(trained_cnn, digits):
    student = copy.deepcopy(trained_cnn).train()
    matcher = AttributionMatcher(frozen_copy(trained_cnn), student, [LAYER], method="ewa", stochastic_drop=0.0)
    student(digits.train.tensors[0][:8])
    loss = matcher.loss()
    loss.backward()
    assert loss.item() > 0 and student.features[0].weight.grad.abs().sum() > 0


def test_stochastic_drop_uses_its_own_generator(trained_cnn, digits):
    """The global RNG is untouched, and the same seed draws the same masks."""
    torch.manual_seed(123)
    expected_next_global = torch.rand(1)
    losses = []
    for _ in range(2):
        student = copy.deepcopy(trained_cnn).train()
        matcher = AttributionMatcher(frozen_copy(trained_cnn), student, [LAYER], stochastic_drop=0.5, seed=3)
        torch.manual_seed(123)
        student(digits.train.tensors[0][:8])
        losses.append(matcher.loss().item())
        assert torch.equal(torch.rand(1), expected_next_global)
    assert losses[0] == losses[1]
    no_drop = AttributionMatcher(frozen_copy(trained_cnn), student, [LAYER], stochastic_drop=0.0)
    student(digits.train.tensors[0][:8])
    assert no_drop.loss().item() != losses[0]


@pytest.mark.parametrize("bad", [{"method": "wcma"}, {"stochastic_drop": 1.0}, {"layer_weights": [1.0, 2.0]}])
def test_matcher_rejects_bad_arguments(trained_cnn, bad):
    with pytest.raises(ValueError):
        AttributionMatcher(frozen_copy(trained_cnn), copy.deepcopy(trained_cnn), [LAYER], **bad)


def test_auxiliary_forward_leaves_the_captured_pass_alone(trained_cnn, digits):
    from nncf_wcam.core.hooks import auxiliary_forward

    student = copy.deepcopy(trained_cnn).train()
    matcher = AttributionMatcher(frozen_copy(trained_cnn), student, [LAYER], stochastic_drop=0.0)
    x = digits.train.tensors[0][:8]
    student(x)
    expected = matcher.loss().item()
    student(x)
    with auxiliary_forward():
        student(torch.rand_like(x))
    assert matcher.loss().item() == pytest.approx(expected, rel=1e-6)


def test_the_matcher_is_a_context_manager_that_removes_its_hooks(trained_cnn, digits):
    student = copy.deepcopy(trained_cnn).train()
    x = digits.train.tensors[0][:8]
    with pytest.raises(RuntimeError, match="inside"):
        with AttributionMatcher(frozen_copy(trained_cnn), student, [LAYER]) as matcher:
            student(x)
            assert matcher.loss().item() > 0
            raise RuntimeError("raised inside the block")
    hooks = [m._forward_hooks or m._forward_pre_hooks for m in student.modules()]
    assert not any(hooks) and matcher.forward.output is None
