"""ShuffleNetV2 (Ma et al., ECCV 2018, Table 5), widths 0.5x-2.0x, with torchvision's module and parameter names.

Stages: ``stem`` (conv1 + max-pool, stride 4, 24 ch), ``stage2`` (8), ``stage3`` (16), ``stage4`` (32)
and ``conv5`` (the 1x1 conv before pooling, stride 32).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from rtseg.models.backbones.base import Backbone, Stage
from rtseg.models.blocks import channel_shuffle

__all__ = ["ShuffleV2Unit", "ShuffleNetV2", "SHUFFLENETV2_WIDTHS"]

# Output channels of conv1, stage2, stage3, stage4 and conv5 per width multiplier (paper Table 5).
SHUFFLENETV2_WIDTHS = {
    0.5: (24, 48, 96, 192, 1024),
    1.0: (24, 116, 232, 464, 1024),
    1.5: (24, 176, 352, 704, 1024),
    2.0: (24, 244, 488, 976, 2048),
}
STAGE_REPEATS = (4, 8, 4)
IMAGENET_URLS = {
    0.5: "https://download.pytorch.org/models/shufflenetv2_x0.5-f707e7126e.pth",
    1.0: "https://download.pytorch.org/models/shufflenetv2_x1-5666bf0f80.pth",
    1.5: "https://download.pytorch.org/models/shufflenetv2_x1_5-3c479a10.pth",
    2.0: "https://download.pytorch.org/models/shufflenetv2_x2_0-8be3c8ee.pth",
}


def _dw(ch: int, stride: int) -> nn.Conv2d:
    return nn.Conv2d(ch, ch, 3, stride, 1, groups=ch, bias=False)


class ShuffleV2Unit(nn.Module):
    """ShuffleNetV2 unit (Fig. 3c/3d): channel split (or two strided branches), concat, shuffle with 2 groups."""

    def __init__(self, in_ch: int, out_ch: int, stride: int):
        super().__init__()
        branch = out_ch // 2
        # Fixed at construction: dilating the unit later removes the stride but keeps the two-branch form.
        self.split_input = stride == 1
        if self.split_input:
            if in_ch != 2 * branch:
                raise ValueError(f"a stride-1 ShuffleNetV2 unit needs in_ch == out_ch, got {in_ch} -> {out_ch}")
            self.branch1 = nn.Sequential()
        else:
            self.branch1 = nn.Sequential(
                _dw(in_ch, stride),
                nn.BatchNorm2d(in_ch),
                nn.Conv2d(in_ch, branch, 1, bias=False),
                nn.BatchNorm2d(branch),
                nn.ReLU(inplace=True),
            )
        self.branch2 = nn.Sequential(
            nn.Conv2d(branch if self.split_input else in_ch, branch, 1, bias=False),
            nn.BatchNorm2d(branch),
            nn.ReLU(inplace=True),
            _dw(branch, stride),
            nn.BatchNorm2d(branch),
            nn.Conv2d(branch, branch, 1, bias=False),
            nn.BatchNorm2d(branch),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.split_input:
            kept, processed = x.chunk(2, dim=1)
            out = torch.cat((kept, self.branch2(processed)), dim=1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), dim=1)
        return channel_shuffle(out, 2)


class ShuffleNetV2(Backbone):
    """ShuffleNetV2 feature extractor; ``include_classifier=True`` keeps the ImageNet ``fc``."""

    classifier_units = ("fc",)

    def __init__(self, width: float = 1.0, output_stride: int = 32, out_stages=None, include_classifier: bool = False, num_classes: int = 1000):
        super().__init__()
        if width not in SHUFFLENETV2_WIDTHS:
            raise ValueError(f"ShuffleNetV2 width must be one of {sorted(SHUFFLENETV2_WIDTHS)}, got {width!r}")
        self.width = width
        self.imagenet_url = IMAGENET_URLS[width]
        chs = SHUFFLENETV2_WIDTHS[width]
        self.conv1 = nn.Sequential(nn.Conv2d(3, chs[0], 3, 2, 1, bias=False), nn.BatchNorm2d(chs[0]), nn.ReLU(inplace=True))
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        in_ch = chs[0]
        specs = [Stage("stem", 4, chs[0], ("conv1", "maxpool"))]
        for idx, (repeats, out_ch) in enumerate(zip(STAGE_REPEATS, chs[1:4])):
            name = f"stage{idx + 2}"
            units = [ShuffleV2Unit(in_ch, out_ch, 2)] + [ShuffleV2Unit(out_ch, out_ch, 1) for _ in range(repeats - 1)]
            setattr(self, name, nn.Sequential(*units))
            specs.append(Stage(name, 8 * 2**idx, out_ch, tuple(f"{name}.{i}" for i in range(repeats))))
            in_ch = out_ch
        self.conv5 = nn.Sequential(nn.Conv2d(in_ch, chs[4], 1, bias=False), nn.BatchNorm2d(chs[4]), nn.ReLU(inplace=True))
        specs.append(Stage("conv5", 32, chs[4], ("conv5",)))
        self.fc = nn.Linear(chs[4], num_classes)
        self.stage_specs = tuple(specs)
        self._configure(output_stride, out_stages, include_classifier)

    def _classify(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.mean((2, 3)))
