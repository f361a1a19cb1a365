"""DeepLabv3+ components (Chen et al., ECCV 2018), the baseline both LiteSeg (Table I, row 1) and FarSee-Net
(Table I, method 1) compare against: ASPP with image pooling, and the decoder that fuses low-level features.
"""
from __future__ import annotations

from typing import Callable, Literal

import torch
import torch.nn as nn
import torch.nn.functional as F

from rtseg.models.blocks import SeparableConv2d, resize

__all__ = ["ConvKind", "make_conv", "ConvBNReLU", "ImagePooling", "ASPP", "DeepLabV3PlusDecoder", "init_head"]

ConvKind = Literal["standard", "separable"]


def make_conv(kind: ConvKind, in_ch: int, out_ch: int, kernel_size: int, dilation: int = 1) -> nn.Module:
    """A bias-free ``kernel_size`` convolution: a standard one, or depthwise ``k x k`` + pointwise ``1 x 1``."""
    if kind == "separable":
        return SeparableConv2d(in_ch, out_ch, kernel_size, dilation=dilation)
    return nn.Conv2d(in_ch, out_ch, kernel_size, padding=(kernel_size - 1) // 2 * dilation, dilation=dilation, bias=False)


class ConvBNReLU(nn.Sequential):
    """``make_conv`` -> BN -> ReLU."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int = 1, dilation: int = 1, conv: ConvKind = "standard"):
        super().__init__(make_conv(conv, in_ch, out_ch, kernel_size, dilation), nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True))


class ImagePooling(nn.Module):
    """ASPP's image-level branch: global average pool -> 1x1 conv -> BN -> ReLU, broadcast back to the map size."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, 1, bias=False)
        self.bn = nn.BatchNorm2d(out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn(self.conv(F.adaptive_avg_pool2d(x, 1))))
        return y.expand(-1, -1, x.shape[2], x.shape[3])


class ASPP(nn.Module):
    """DeepLabv3+ atrous spatial pyramid pooling: 1x1, three 3x3 atrous branches and image pooling, concatenated and projected by a 1x1.

    ``atrous(in_ch, out_ch, rate)`` builds each atrous branch; by default a ``conv`` 3x3 -> BN -> ReLU
    (FarSee-Net's F-ASPP passes its factorized one).
    """

    def __init__(self, in_ch: int, channels: int = 256, rates: tuple[int, ...] = (6, 12, 18), conv: ConvKind = "standard",
                 atrous: Callable[[int, int, int], nn.Module] | None = None):
        super().__init__()
        atrous = atrous or (lambda i, o, r: ConvBNReLU(i, o, 3, dilation=r, conv=conv))
        self.branches = nn.ModuleList([ConvBNReLU(in_ch, channels, 1, conv=conv)])
        self.branches.extend(atrous(in_ch, channels, r) for r in rates)
        self.pool = ImagePooling(in_ch, channels)
        self.project = ConvBNReLU(channels * (len(rates) + 2), channels, 1, conv=conv)
        self.out_channels = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(torch.cat([b(x) for b in self.branches] + [self.pool(x)], 1))


class DeepLabV3PlusDecoder(nn.Module):
    """DeepLabv3+ decoder: upsample the context features to the low-level ones, concat with the low-level features
    reduced by a 1x1 (48 channels), refine with 3x3 convolutions (2 x 256) and classify with a 1x1.

    LiteSeg's decoder (section II-E) is this one with 96 filters, separable convolutions and aligned corners."""

    def __init__(
        self,
        in_ch: int,
        low_ch: int,
        num_classes: int,
        low_reduce: int | None = 48,
        channels: int = 256,
        num_convs: int = 2,
        conv: ConvKind = "standard",
        align_corners: bool = True,
    ):
        super().__init__()
        self.reduce = ConvBNReLU(low_ch, low_reduce, 1, conv=conv) if low_reduce else nn.Identity()
        fused = in_ch + (low_reduce or low_ch)
        self.refine = nn.Sequential(*[ConvBNReLU(fused if i == 0 else channels, channels, 3, conv=conv) for i in range(num_convs)])
        self.classifier = nn.Conv2d(channels, num_classes, 1)
        self.align_corners = align_corners

    def forward(self, x: torch.Tensor, low: torch.Tensor) -> torch.Tensor:
        x = resize(x, low.shape[-2:], self.align_corners)
        return self.classifier(self.refine(torch.cat([x, self.reduce(low)], 1)))


def init_head(module: nn.Module) -> None:
    """He-normal convolutions and unit BN, as the official LiteSeg code initialises its head."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
