"""Input-space attribution matching (saliency, input x gradient) and the size-free map distance."""

import copy

import pytest
import torch
import torch.nn.functional as F
from captum.attr import InputXGradient
from captum.attr import Saliency

from nncf_wcam.core.maps import map_distance
from nncf_wcam.core.matcher import AttributionMatcher
from nncf_wcam.core.matcher import frozen_copy
from nncf_wcam.nncf2.attribution_matching import attribution_controller
from nncf_wcam.nncf2.training import compress
from nncf_wcam.nncf2.training import load_config
from nncf_wcam.zoo.models import SmallCNN

from conftest import input_info

LAYER = SmallCNN.LAST_CONV_BLOCK
CAPTUM = {"saliency": lambda m: Saliency(m), "input_x_gradient": lambda m: InputXGradient(m)}


def _perturbed(model):
    student = copy.deepcopy(model)
    with torch.no_grad():
        student.features[0].weight.mul_(0.7)
    return student


def test_map_distance_is_two_minus_two_cosine_for_any_map_size_and_batch():
    torch.manual_seed(0)
    a, b = torch.rand(4, 7, 7), torch.rand(4, 7, 7)
    cosine = F.cosine_similarity(a.flatten(1), b.flatten(1), dim=1)
    assert map_distance(a, b).item() == pytest.approx((2 - 2 * cosine).mean().item(), rel=1e-5)
    # Each position repeated 4 times (a 14 x 14 map of the same picture) and the batch doubled: same value.
    big_a, big_b = (F.interpolate(m[:, None], scale_factor=2, mode="nearest")[:, 0] for m in (a, b))
    assert map_distance(torch.cat([big_a, big_a]), torch.cat([big_b, big_b])).item() == pytest.approx(map_distance(a, b).item(), rel=1e-5)
    assert map_distance(a, torch.zeros_like(b)).item() == pytest.approx(1.0)  # a dead map: |n(a)|^2 = 1


@pytest.mark.parametrize("method", ["saliency", "input_x_gradient"])
def test_input_maps_equal_captum(trained_cnn, digits, method):
    """captum is the oracle for both networks' maps, the student's taken in training mode as the loss sees it."""
    student = _perturbed(trained_cnn)
    matcher = AttributionMatcher(frozen_copy(trained_cnn), student, [LAYER], stochastic_drop=0.0, input_method=method)
    x = digits.test.tensors[0][:16]
    student.train()
    student(x)
    loss = matcher.loss()
    assert not x.requires_grad  # the user's tensor is left alone: the pass ran on a leaf copy
    map_t, map_s = matcher.last_input_maps
    target = matcher.last_target
    teacher_oracle = CAPTUM[method](frozen_copy(trained_cnn)).attribute(x, target=target, **({"abs": True} if method == "saliency" else {}))
    student.train()
    student_oracle = CAPTUM[method](student).attribute(x, target=target, **({"abs": True} if method == "saliency" else {}))
    assert teacher_oracle.abs().sum() > 0
    assert torch.allclose(map_t, teacher_oracle, rtol=1e-4, atol=1e-6)
    assert torch.allclose(map_s, student_oracle, rtol=1e-4, atol=1e-6)
    assert matcher.last_input_loss.item() == pytest.approx(map_distance(teacher_oracle, student_oracle).item(), rel=1e-4)
    # layer and input terms add up with their own weights
    expected = matcher.weight * matcher.last_layer_losses[LAYER] + matcher.input_weight * matcher.last_input_loss
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


class SmoothCNN(torch.nn.Module):
    """Softplus and no max-pool: input maps that are smooth functions of the weights.

    With ReLU and max-pool the input gradient is piecewise constant in the weights (a gate or a pool's
    argmax that switches moves the map in a jump autograd does not see), which hides whether the
    double backprop itself points the right way; here it must.
    """

    def __init__(self):
        super().__init__()
        self.features = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.Softplus(), torch.nn.Conv2d(8, 16, 3, padding=1), torch.nn.Softplus())
        self.classifier = torch.nn.Linear(16, 10)

    def forward(self, x):
        return self.classifier(self.features(x).mean(dim=(2, 3)))


@pytest.mark.parametrize("method", ["saliency", "input_x_gradient"])
def test_input_matching_alone_trains_the_student_toward_the_teachers_maps(digits, method):
    """Behaviour: steps on the input-map loss alone bring the student's input maps to the teacher's
    (fails if the double backprop did not reach the weights or pushed the wrong way)."""
    torch.manual_seed(0)
    teacher = SmoothCNN()
    student = copy.deepcopy(teacher)
    with torch.no_grad():
        for param in student.parameters():
            param.add_(0.3 * torch.randn_like(param) * param.abs().mean())
    matcher = AttributionMatcher(frozen_copy(teacher), student, [], input_method=method, input_weight=1.0)
    x = digits.train.tensors[0][:64]
    optimizer = torch.optim.Adam(student.parameters(), lr=1e-2)
    distances = []
    for _ in range(30):
        optimizer.zero_grad()
        student.train()(x)
        matcher.loss().backward()
        optimizer.step()
        distances.append(matcher.last_input_loss.item())
    assert all(p.grad is None for p in matcher.teacher.parameters())
    print(f"\n[input matching] {method} distance {distances[0]:.4f} -> {distances[-1]:.4f}")
    assert distances[-1] < 0.5 * distances[0]


def test_zero_input_maps_give_no_nan(trained_cnn, digits):
    """A student whose logits do not depend on the input has all-zero input maps: finite loss and gradients."""
    student = copy.deepcopy(trained_cnn)
    with torch.no_grad():
        student.features[0].weight.zero_()
    for method in ("saliency", "input_x_gradient"):
        matcher = AttributionMatcher(frozen_copy(trained_cnn), student, [LAYER], input_method=method)
        student.train().zero_grad()
        student(digits.train.tensors[0][:8])
        loss = matcher.loss()
        assert torch.count_nonzero(matcher.last_input_maps[1]) == 0
        assert torch.isfinite(loss)
        loss.backward()
        assert all(torch.isfinite(p.grad).all() for p in student.parameters() if p.grad is not None)
        matcher.remove()


def test_input_matching_costs_nothing_in_eval_and_under_no_grad(trained_cnn, digits):
    student = copy.deepcopy(trained_cnn)
    matcher = AttributionMatcher(frozen_copy(trained_cnn), student, [LAYER], input_method="saliency")
    x = digits.test.tensors[0][:8]
    seen = []
    student.features[0].register_forward_hook(lambda m, i, o: seen.append(i[0].requires_grad))
    student.eval()(x)
    assert matcher.forward.input is None and matcher.loss().item() == 0.0
    with torch.no_grad():
        student.train()(x)
    assert matcher.loss().item() == 0.0
    student.train()(x)
    assert seen == [False, False, True]  # only the training pass runs on an input that requires grad
    assert matcher.loss().item() > 0


def test_matcher_rejects_bad_input_arguments(trained_cnn):
    with pytest.raises(ValueError, match="Unknown input_method 'gradcam'"):
        AttributionMatcher(frozen_copy(trained_cnn), copy.deepcopy(trained_cnn), [LAYER], input_method="gradcam")
    with pytest.raises(ValueError, match="Nothing to match"):
        AttributionMatcher(frozen_copy(trained_cnn), copy.deepcopy(trained_cnn), [])


def test_nncf_block_with_input_method_and_its_errors(trained_cnn, digits):
    from nncf_wcam.schema.validation import AlgorithmConfigError

    block = {"algorithm": "attribution_matching", "layers": [], "input_method": "input_x_gradient", "input_weight": 2.0}
    ctrl, model = compress(copy.deepcopy(trained_cnn), load_config({"input_info": input_info(), "compression": [block]}), digits.train, batch_size=32)
    matcher = attribution_controller(ctrl).matcher
    assert matcher.layers == [] and matcher.input_method == "input_x_gradient" and matcher.input_weight == 2.0
    model.train()
    model(digits.train.tensors[0][:8])
    loss = ctrl.loss()
    assert loss.item() == pytest.approx(2.0 * matcher.last_input_loss.item(), rel=1e-6)
    loss.backward()
    assert model.features[0].weight.grad.abs().sum() > 0
    with pytest.raises(AlgorithmConfigError, match=r"attribution_matching.input_method: 'grad' is not one of"):
        load_config({"input_info": input_info(), "compression": [{"algorithm": "attribution_matching", "input_method": "grad"}]})
    with pytest.raises(AlgorithmConfigError, match=r"layers: \[\] matches nothing"):
        compress(copy.deepcopy(trained_cnn), load_config({"input_info": input_info(), "compression": [{"algorithm": "attribution_matching", "layers": []}]}), digits.train)


class Normalizes(torch.nn.Module):
    """A user's model that normalizes its input before the network, in place (x.sub_(mean).div_(std)) or not."""

    def __init__(self, in_place: bool):
        super().__init__()
        self.in_place = in_place
        self.net = SmallCNN(1, 10, width=4)

    def forward(self, x):
        return self.net(x.sub_(0.5).div_(0.25) if self.in_place else (x - 0.5) / 0.25)


def _input_matching_loss(model, layers, method, x):
    teacher = copy.deepcopy(model)
    with torch.no_grad():
        teacher.net.features[0].weight.mul_(0.7)
    matcher = AttributionMatcher(teacher, model, layers, input_method=method, input_weight=1.0, stochastic_drop=0.0)
    model.train()(x)
    loss = matcher.loss()
    loss.backward()
    matcher.remove()
    return loss.item(), [torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize(
    "method, layers",
    [("saliency", []), ("input_x_gradient", []), ("saliency", ["net." + LAYER]), ("input_x_gradient", ["net." + LAYER]), (None, ["net." + LAYER])],
    ids=["saliency", "input_x_gradient", "saliency+layer", "input_x_gradient+layer", "layer-only"],
)
def test_a_model_that_changes_its_input_in_place(digits, method, layers):
    """The input leaf is never handed to the model itself (no "leaf Variable ... in-place" error), and the
    teacher sees the input as the user passed it: the loss and gradients equal those of the same model
    normalizing out of place, and the user's batch is left as it was."""
    torch.manual_seed(0)
    out_of_place = Normalizes(in_place=False)
    in_place = copy.deepcopy(out_of_place)
    in_place.in_place = True
    x = digits.train.tensors[0][:16].clone()
    expected_loss, expected_grads = _input_matching_loss(out_of_place, layers, method, x.clone())
    loss, grads = _input_matching_loss(in_place, layers, method, x.clone())
    assert expected_loss > 1e-3 and loss == pytest.approx(expected_loss, rel=1e-5)
    assert all(torch.allclose(g, e, rtol=1e-4, atol=1e-7) for g, e in zip(grads, expected_grads))
