"""ResNet-18 (He et al., CVPR 2016), with torchvision's module and parameter names.

A torchvision ImageNet state dict loads unchanged. Stage names are torchvision's
(``stem``, ``layer1`` ... ``layer4``); the ResNet paper's names are accepted as aliases:
conv2_x = layer1 (stride 4), conv3_x = layer2 (stride 8), conv4_x = layer3, conv5_x = layer4.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from rtseg.models.backbones.base import Backbone, Stage

__all__ = ["BasicBlock", "ResNet18"]


class BasicBlock(nn.Module):
    """The two-3x3 residual block of ResNet-18/34 (He et al., Fig. 2 left)."""

    expansion = 1

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.downsample = None
        if stride != 1 or in_ch != out_ch:
            # Projection shortcut (torchvision's option B): 1x1 strided conv + BN.
            self.downsample = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride, bias=False), nn.BatchNorm2d(out_ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class ResNet18(Backbone):
    """ResNet-18 feature extractor; ``include_classifier=True`` keeps the ImageNet ``fc``."""

    stage_aliases = {"conv1": "stem", "conv2_x": "layer1", "conv3_x": "layer2", "conv4_x": "layer3", "conv5_x": "layer4"}
    classifier_units = ("fc",)
    imagenet_url = "https://download.pytorch.org/models/resnet18-f37072fd.pth"

    def __init__(self, output_stride: int = 32, out_stages=None, include_classifier: bool = False, num_classes: int = 1000):
        super().__init__()
        widths = (64, 128, 256, 512)
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        in_ch = 64
        for i, width in enumerate(widths, start=1):
            stride = 1 if i == 1 else 2
            setattr(self, f"layer{i}", nn.Sequential(BasicBlock(in_ch, width, stride), BasicBlock(width, width)))
            in_ch = width
        self.fc = nn.Linear(512, num_classes)
        self.stage_specs = (
            Stage("stem", 4, 64, ("conv1", "bn1", "relu", "maxpool")),
            *(Stage(f"layer{i}", 4 * 2 ** (i - 1), w, (f"layer{i}.0", f"layer{i}.1")) for i, w in enumerate(widths, start=1)),
        )
        self._configure(output_stride, out_stages, include_classifier)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _classify(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))
