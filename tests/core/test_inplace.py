"""Attribution matching on models with in-place ops right after the matched layer.

torchvision's VGG and ResNet put `nn.ReLU(inplace=True)` after every convolution / BatchNorm and
add the shortcut in place (`out += identity`). A capture hook that kept the matched activation
itself would fail on the teacher's leaf ("a leaf Variable that requires grad is being used in an
in-place operation") and see it overwritten on the student; the hooks hand the layers downstream a
copy instead. The models below copy torchvision's layout (module names included).
"""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import nncf_wcam  # noqa: F401  (must precede nncf.torch)
from nncf_wcam.core.matcher import AttributionMatcher
from nncf_wcam.core.matcher import frozen_copy
from nncf_wcam.nncf2.attribution_matching import attribution_controller
from nncf_wcam.nncf2.training import compress
from nncf_wcam.nncf2.training import load_config


class TorchvisionBasicBlock(nn.Module):
    """torchvision.models.resnet.BasicBlock: one shared in-place ReLU, in-place shortcut add."""

    def __init__(self, in_channels, out_channels, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.downsample = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride, bias=False), nn.BatchNorm2d(out_channels))

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += identity
        return self.relu(out)


class TorchvisionResNet(nn.Module):
    """torchvision.models.ResNet's layout (conv1, bn1, relu, maxpool, layer1..2, avgpool, fc), two small stages."""

    def __init__(self, num_classes=10, width=8):
        super().__init__()
        self.conv1 = nn.Conv2d(1, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.Identity()
        self.layer1 = nn.Sequential(TorchvisionBasicBlock(width, width))
        self.layer2 = nn.Sequential(TorchvisionBasicBlock(width, 2 * width, stride=2))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2 * width, num_classes)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer2(self.layer1(x))
        return self.fc(torch.flatten(self.avgpool(x), 1))


class TorchvisionVGG(nn.Module):
    """torchvision.models.VGG's layout (features, avgpool, classifier) with in-place ReLUs, as in vgg11."""

    def __init__(self, num_classes=10, width=8):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.ReLU(inplace=True),
        )
        self.avgpool = nn.AdaptiveAvgPool2d(2)
        self.classifier = nn.Sequential(nn.Linear(2 * width * 4, 32), nn.ReLU(inplace=True), nn.Linear(32, num_classes))

    def forward(self, x):
        x = self.avgpool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


# Matched layers followed directly by an in-place op: a ReLU(inplace=True), or the shortcut's `+=`.
CASES = [
    (TorchvisionVGG, "features.3"),  # conv -> ReLU(inplace=True)
    (TorchvisionVGG, "features.0"),  # first conv -> ReLU(inplace=True)
    (TorchvisionResNet, "layer2.0.bn1"),  # BatchNorm -> shared ReLU(inplace=True)
    (TorchvisionResNet, "layer2.0.bn2"),  # BatchNorm -> out += identity
    (TorchvisionResNet, "bn1"),  # the stem's BatchNorm -> ReLU(inplace=True)
]


def _batch(seed=0, size=8):
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(6, 1, size, size, generator=generator), torch.randint(0, 10, (6,), generator=generator)


@pytest.mark.parametrize("model_class, layer", CASES, ids=[f"{c.__name__}-{l}" for c, l in CASES])
@pytest.mark.parametrize("method", ["wcam", "ewa"])
def test_matching_works_with_inplace_ops_after_the_matched_layer(model_class, layer, method):
    torch.manual_seed(0)
    student = model_class()
    teacher = frozen_copy(student)
    with torch.no_grad():  # a student that differs from its teacher, so the loss is not zero
        for param in student.parameters():
            param.add_(0.05 * torch.randn_like(param))
    out_of_place = copy.deepcopy(student)
    out_of_place_teacher = copy.deepcopy(teacher)
    for model in (out_of_place, out_of_place_teacher):
        for module in model.modules():
            if isinstance(module, nn.ReLU):
                module.inplace = False

    x, y = _batch()
    losses, grads = [], []
    for s, t in ((student, teacher), (out_of_place, out_of_place_teacher)):
        matcher = AttributionMatcher(t, s, [layer], method=method, weight=100.0, stochastic_drop=0.0)
        s.train()
        loss = F.cross_entropy(s(x), y) + matcher.loss()
        loss.backward()
        losses.append(matcher.last_layer_losses[layer].item())
        grads.append(torch.cat([p.grad.flatten() for p in s.parameters()]))
        matcher.remove()
    # In place or not, the same maps, loss and gradients (the captured activation is the layer's output).
    assert losses[0] > 0
    assert losses[0] == pytest.approx(losses[1], rel=1e-5, abs=1e-9)
    assert torch.allclose(grads[0], grads[1], rtol=1e-4, atol=1e-7)
    assert all(torch.isfinite(g).all() for g in grads)


def test_nncf_quantization_with_matching_trains_a_torchvision_resnet_with_inplace_relus(digits):
    torch.manual_seed(0)
    model = TorchvisionResNet()
    config = load_config(
        {
            "input_info": {"sample_size": [1, 1, 16, 16]},
            "compression": [
                {"algorithm": "quantization", "initializer": {"range": {"num_init_samples": 16}, "batchnorm_adaptation": {"num_bn_adaptation_samples": 0}}},
                {"algorithm": "attribution_matching", "layers": ["layer2.0.bn1", "layer2.0.bn2"], "stochastic_drop": 0.3},
            ],
        }
    )
    ctrl, compressed = compress(model, config, digits.train, batch_size=16)
    optimizer = torch.optim.Adam(compressed.parameters(), lr=1e-3)
    compressed.train()
    x, y = digits.train.tensors[0][:16], digits.train.tensors[1][:16]
    for _ in range(2):
        optimizer.zero_grad()
        loss = F.cross_entropy(compressed(x), y) + ctrl.loss()
        loss.backward()
        optimizer.step()
        assert torch.isfinite(loss)
    assert attribution_controller(ctrl).matcher.last_layer_losses["layer2.0.bn2"] > 0
