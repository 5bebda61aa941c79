"""Demo models for the configs, the command line and the benchmarks, named by the configs' "model" key.

The architectures a user would reach for (a VGG-style CNN, a ResNet in torchvision's layout, a
MobileNetV2-style network with depthwise convolutions and a dict output) in plain torch.
"""

import inspect
from typing import Sequence

from torch import nn

from nncf_wcam.errors import NncfWcamError
from nncf_wcam.errors import short_repr


def _conv_bn_relu(in_channels: int, out_channels: int) -> list:
    return [
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(),
    ]


class SmallCNN(nn.Module):
    """VGG-style CNN: `features` (three conv blocks, one max-pool), global average pool, linear head.

    `features.9` (the last ReLU) is the last spatial feature map, the layer a Grad-CAM user picks.
    With a GAP + linear head, Grad-CAM at that layer equals CAM.
    """

    LAST_CONV_BLOCK = "features.9"

    def __init__(self, in_channels: int = 1, num_classes: int = 10, width: int = 16):
        super().__init__()
        self.features = nn.Sequential(
            *_conv_bn_relu(in_channels, width),
            *_conv_bn_relu(width, 2 * width),
            nn.MaxPool2d(2),
            *_conv_bn_relu(2 * width, 4 * width),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(4 * width, num_classes)

    def forward(self, x):
        return self.classifier(self.pool(self.features(x)).flatten(1))


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu2 = nn.ReLU()
        self.downsample = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False), nn.BatchNorm2d(out_channels)
            )

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + identity)


class ResNet(nn.Module):
    """ResNet with BasicBlocks, named like torchvision's (`layer4.1.conv2`, `fc`).

    `ResNet(blocks=(2, 2, 2, 2), width=64)` is ResNet-18 (11.7 M parameters at 1000 classes).
    `small_stem=True` replaces the 7x7/stride-2 stem and its max-pool by one 3x3 conv, for small images.
    """

    def __init__(
        self,
        blocks: Sequence[int] = (2, 2, 2, 2),
        width: int = 64,
        in_channels: int = 3,
        num_classes: int = 1000,
        small_stem: bool = False,
    ):
        super().__init__()
        if small_stem:
            self.conv1 = nn.Conv2d(in_channels, width, 3, 1, 1, bias=False)
            self.maxpool = nn.Identity()
        else:
            self.conv1 = nn.Conv2d(in_channels, width, 7, 2, 3, bias=False)
            self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU()
        channels = width
        for stage, num_blocks in enumerate(blocks):
            out_channels = width * 2**stage
            stride = 1 if stage == 0 else 2
            layers = []
            for i in range(num_blocks):
                layers.append(BasicBlock(channels, out_channels, stride if i == 0 else 1))
                channels = out_channels
            self.add_module(f"layer{stage + 1}", nn.Sequential(*layers))
        self.num_stages = len(blocks)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for stage in range(self.num_stages):
            x = getattr(self, f"layer{stage + 1}")(x)
        return self.fc(self.avgpool(x).flatten(1))


def resnet18(in_channels: int = 3, num_classes: int = 1000) -> ResNet:
    return ResNet((2, 2, 2, 2), 64, in_channels, num_classes)


def tiny_resnet(in_channels: int = 1, num_classes: int = 10, width: int = 8) -> ResNet:
    """A two-stage residual network for tests and the embedded default."""
    return ResNet((1, 1), width, in_channels, num_classes, small_stem=True)


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand, 3x3 depthwise, 1x1 project; a skip connection when shapes allow."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, expansion: int):
        super().__init__()
        hidden = in_channels * expansion
        self.use_skip = stride == 1 and in_channels == out_channels
        self.block = nn.Sequential(
            nn.Conv2d(in_channels, hidden, 1, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU6(),
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU6(),
            nn.Conv2d(hidden, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
        )

    def forward(self, x):
        out = self.block(x)
        return x + out if self.use_skip else out


class MobileNetStyle(nn.Module):
    """A small MobileNetV2-style network: inverted residuals, depthwise convolutions, a dict output.

    `blocks` lists the inverted residual blocks as (width multiplier, stride); a block keeps a skip
    connection when its stride is 1 and its width that of the block before. `features` ends with a
    1x1 conv block (its ReLU6 is the last spatial feature map, `LAST_CONV_BLOCK` with the default
    blocks); the forward returns `{"embedding": ..., "logits": ...}` (select with `"logits_output": "logits"`).
    """

    LAST_CONV_BLOCK = "features.6"
    DEFAULT_BLOCKS = ((1, 1), (2, 2), (2, 1), (4, 2), (4, 1))

    def __init__(self, in_channels: int = 1, num_classes: int = 10, width: int = 8, expansion: int = 4, blocks=DEFAULT_BLOCKS):
        super().__init__()
        layers = [nn.Sequential(nn.Conv2d(in_channels, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU6())]
        channels = width
        for multiplier, stride in blocks:
            layers.append(InvertedResidual(channels, width * multiplier, stride, expansion))
            channels = width * multiplier
        layers.append(nn.Sequential(nn.Conv2d(channels, 2 * channels, 1, bias=False), nn.BatchNorm2d(2 * channels), nn.ReLU6()))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(2 * channels, num_classes)

    def forward(self, x):
        embedding = self.pool(self.features(x)).flatten(1)
        return {"embedding": embedding, "logits": self.classifier(embedding)}


MODELS = {
    "small_cnn": SmallCNN,
    "tiny_resnet": tiny_resnet,
    "resnet18": resnet18,
    "mobilenet_style": MobileNetStyle,
}


# Bounds of what a config or a checkpoint may ask for: the largest of these models stays under a few hundred MB.
LIMITS = {"in_channels": (1, 64), "num_classes": (1, 100000), "width": (1, 512), "expansion": (1, 16)}


class ModelSpecError(NncfWcamError, ValueError):
    """A model name or argument a config or checkpoint asks for is unknown or out of bounds."""


def _check_argument(name: str, value) -> None:
    low, high = LIMITS[name]
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ModelSpecError(f"Model argument {name}={short_repr(value)} is out of bounds. Fix: a whole number from {low} to {high}.")


def create_model(name: str, in_channels: int, num_classes: int, **kwargs) -> nn.Module:
    """Builds a model by the name used in configs' top-level `"model"` key; unknown names and arguments out of bounds are one line."""
    if not isinstance(name, str) or name not in MODELS:
        msg = f"Unknown model {short_repr(name)}. Known models: {', '.join(sorted(MODELS))}. Set the config's \"model\" to one of them."
        raise ModelSpecError(msg)
    accepted = set(inspect.signature(MODELS[name]).parameters) - {"in_channels", "num_classes"}
    unknown = sorted(set(kwargs) - accepted)
    if unknown:
        raise ModelSpecError(f"Model '{name}' takes no argument {short_repr(unknown[0])}. Its arguments: {', '.join(sorted(accepted)) or 'none'}.")
    for key, value in {"in_channels": in_channels, "num_classes": num_classes, **kwargs}.items():
        if key in LIMITS:
            _check_argument(key, value)
    return MODELS[name](in_channels=in_channels, num_classes=num_classes, **kwargs)
