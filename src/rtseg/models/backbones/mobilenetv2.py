"""MobileNetV2 (Sandler et al., CVPR 2018, Table 2), width 1.0, with torchvision's module and parameter names.

Stages are named after the last ``features`` index they include, so they can be matched against
torchvision's module tree: features.1 (stride 2, 16 ch), features.3 (4, 24), features.6 (8, 32),
features.13 (16, 96), features.17 (32, 320) and features.18 (32, the 1x1 conv to 1280).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from rtseg.models.backbones.base import Backbone, Stage

__all__ = ["ConvBNReLU6", "InvertedResidual", "MobileNetV2"]

# t (expansion), c (output channels), n (repeats), s (stride of the first repeat): the paper's Table 2.
INVERTED_RESIDUAL_SETTING = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


class ConvBNReLU6(nn.Sequential):
    """Conv -> BN -> ReLU6 (torchvision's Conv2dNormActivation with MobileNetV2's settings)."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int = 3, stride: int = 1, groups: int = 1):
        super().__init__(
            nn.Conv2d(in_ch, out_ch, kernel_size, stride, (kernel_size - 1) // 2, groups=groups, bias=False),
            nn.BatchNorm2d(out_ch),
            nn.ReLU6(inplace=True),
        )


class InvertedResidual(nn.Module):
    """MobileNetV2 bottleneck (Table 1): 1x1 expansion, 3x3 depthwise, linear 1x1 projection, identity shortcut."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, expand_ratio: int):
        super().__init__()
        hidden = int(round(in_ch * expand_ratio))
        self.use_res_connect = stride == 1 and in_ch == out_ch
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(ConvBNReLU6(in_ch, hidden, kernel_size=1))
        layers += [ConvBNReLU6(hidden, hidden, stride=stride, groups=hidden), nn.Conv2d(hidden, out_ch, 1, bias=False), nn.BatchNorm2d(out_ch)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class MobileNetV2(Backbone):
    """MobileNetV2 feature extractor; ``include_classifier=True`` keeps the ImageNet classifier (Dropout + Linear)."""

    classifier_units = ("classifier",)
    imagenet_url = "https://download.pytorch.org/models/mobilenet_v2-b0353104.pth"

    def __init__(self, output_stride: int = 32, out_stages=None, include_classifier: bool = False, num_classes: int = 1000):
        super().__init__()
        features: list[nn.Module] = [ConvBNReLU6(3, 32, stride=2)]
        in_ch = 32
        for t, c, n, s in INVERTED_RESIDUAL_SETTING:
            for i in range(n):
                features.append(InvertedResidual(in_ch, c, s if i == 0 else 1, t))
                in_ch = c
        features.append(ConvBNReLU6(in_ch, 1280, kernel_size=1))
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, num_classes))

        def units(first: int, last: int) -> tuple[str, ...]:
            return tuple(f"features.{i}" for i in range(first, last + 1))

        self.stage_specs = (
            Stage("features.1", 2, 16, units(0, 1)),
            Stage("features.3", 4, 24, units(2, 3)),
            Stage("features.6", 8, 32, units(4, 6)),
            Stage("features.13", 16, 96, units(7, 13)),
            Stage("features.17", 32, 320, units(14, 17)),
            Stage("features.18", 32, 1280, units(18, 18)),
        )
        self._configure(output_stride, out_stages, include_classifier)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def _classify(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))
