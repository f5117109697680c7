"""ResNet-50 image features (He et al. 2016), with torchvision's module and state-dict names.

Written here because PyPI's torchvision does not import beside the CPU torch build this project
pins; a ``resnet50`` weights file saved from torchvision loads into it unchanged. Features are
the 2048-dim global-average-pooled output of the last stage (the ``fc`` head is kept only so
torchvision files load strictly). Inputs are (N, 3, H, W) float images normalised with the
ImageNet mean and std.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from motionfleet.common.weights import read_state_dict, seeded

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
FEATURE_DIM = 2048


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (stride here, torchvision's v1.5), 1x1 expand x4, identity or projected skip."""

    expansion = 4

    def __init__(self, in_ch: int, width: int, stride: int):
        super().__init__()
        out_ch = width * self.expansion
        self.conv1 = nn.Conv2d(in_ch, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_ch, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or in_ch != out_ch:
            self.downsample = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False), nn.BatchNorm2d(out_ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.relu(self.bn3(self.conv3(out)) + skip)


class ResNet50(nn.Module):
    def __init__(self, blocks=(3, 4, 6, 3)):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        in_ch = 64
        for i, (count, width) in enumerate(zip(blocks, (64, 128, 256, 512))):
            layer = []
            for j in range(count):
                layer.append(Bottleneck(in_ch, width, stride=2 if (j == 0 and i > 0) else 1))
                in_ch = width * Bottleneck.expansion
            setattr(self, f"layer{i + 1}", nn.Sequential(*layer))
        self.fc = nn.Linear(FEATURE_DIM, 1000)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) normalised images -> (N, 2048) pooled features."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(images))))
        for name in ("layer1", "layer2", "layer3", "layer4"):  # the released key names: layer1.0.conv1...
            x = getattr(self, name)(x)
        return x.mean(dim=(2, 3))

    forward = features


def build_resnet50(weights_path: Optional[str] = None, seed: int = 0) -> ResNet50:
    """Eval-mode ResNet-50: a torchvision-format weights file from disk, or seeded dummy weights
    (Kaiming-normal convolutions, as torchvision initialises them)."""
    with seeded(seed):
        model = ResNet50()
        for module in model.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
    if weights_path is not None:
        state = read_state_dict(weights_path)
        model.load_state_dict(state.get("state_dict", state) if isinstance(state, dict) else state, strict=True)
    return model.eval()


def normalise(images_uint8: torch.Tensor) -> torch.Tensor:
    """(N, H, W, 3) uint8 RGB -> (N, 3, H, W) float normalised with the ImageNet mean and std."""
    x = images_uint8.permute(0, 3, 1, 2).float() / 255.0
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (x - mean) / std
