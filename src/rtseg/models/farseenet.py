"""FarSee-Net (Zhang & Zhang, "FarSee-Net: Real-Time Semantic Segmentation by Efficient Multi-scale Context
Aggregation and Feature Space Super-resolution", ICRA 2020).

Front-end: ResNet-18 (any registered backbone works); high-level features from its last stage, low-level
features from ``conv3_x`` (torchvision's ``layer2``, stride 8). Back-end: the cascaded factorized ASPP
(CF-ASPP, section III-B) with feature-space super-resolution by two sub-pixel convolutions (section III-C):
one between the two F-ASPPs, one producing the class maps (``subpixel_layout="cascade"``; "head" puts
both after the cascade). A half-resolution input yields a full-resolution output (``output_scale=2``);
``output_scale=1`` predicts at the input's own size with the same weights. ``method`` selects the four
back-ends of the ablation (Table I). The paper's Fig. 3 is not available; every choice it would settle
is recorded in docs/fidelity.md ("FarSee-Net").
"""
from __future__ import annotations

import os
from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F

from rtseg.models.backbones import create_backbone, default_feature_stages
from rtseg.models.base import SegmentationModel
from rtseg.models.blocks import resize
from rtseg.models.deeplab import ASPP, ConvBNReLU, DeepLabV3PlusDecoder, init_head
from rtseg.variants import Dilation, Variant, register_variants

__all__ = ["FactorizedAtrousConv", "FASPP", "CFASPP", "SubPixelConv", "FarSeeNet", "METHODS"]

PAPER = "FarSee-Net (Zhang & Zhang, ICRA 2020)"
ASPP_RATES = (6, 12, 18)
FEATURE_STAGES = {"resnet18": ("conv3_x", "layer4")}

# Table I: 1 = ASPP + DeepLabv3+ decoder, 2 = F-ASPP + decoder, 3 = CF-ASPP (no decoder, no SR), 4 = full.
# Where Table I method 4 puts its two sub-pixel convolutions (section III-C; docs/fidelity.md):
# "cascade": one between the two F-ASPPs, one after them; "head": both after the cascade.
SubpixelLayout = Literal["cascade", "head"]
METHODS = {
    1: {"context": "aspp", "super_resolution": False},
    2: {"context": "faspp", "super_resolution": False},
    3: {"context": "cfaspp", "super_resolution": False},
    4: {"context": "cfaspp", "super_resolution": True},
}


class FactorizedAtrousConv(nn.Sequential):
    """F-ASPP's factorized 3x3 atrous conv (section III-B): pointwise 1x1 reducing F_i to F_o channels, then a
    depthwise 3x3 with the same atrous rate; each followed by BN and ReLU (Fig. 3 caption)."""

    def __init__(self, in_ch: int, out_ch: int, rate: int):
        super().__init__(
            ConvBNReLU(in_ch, out_ch, 1),
            nn.Sequential(
                nn.Conv2d(out_ch, out_ch, 3, padding=rate, dilation=rate, groups=out_ch, bias=False),
                nn.BatchNorm2d(out_ch),
                nn.ReLU(inplace=True),
            ),
        )


class FASPP(ASPP):
    """Factorized ASPP (section III-B): the ASPP of DeepLabv3+ (1x1 branch, atrous branches, image pooling,
    1x1 projection) with every 3x3 atrous convolution factorized."""

    def __init__(self, in_ch: int, channels: int = 256, rates: tuple[Dilation, ...] = ASPP_RATES):
        super().__init__(in_ch, channels, rates, atrous=FactorizedAtrousConv)


class SubPixelConv(nn.Module):
    """Sub-pixel convolution (section III-C, Shi et al. 2016): a 1x1 conv to ``out_ch * t * t`` channels, then a
    periodic shuffle to ``t`` times the size. Intermediate ones have BN + ReLU; the last one yields class logits."""

    def __init__(self, in_ch: int, out_ch: int, factor: int, last: bool = False):
        super().__init__()
        mid = out_ch * factor * factor
        # the shuffle takes output channel c from conv channels c*t*t ... c*t*t + t*t - 1 (rtseg.models.class_layers)
        self.channels_per_class = factor * factor
        self.conv = nn.Conv2d(in_ch, mid, 1, bias=last)
        self.bn = None if last else nn.BatchNorm2d(mid)
        self.shuffle = nn.PixelShuffle(factor)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if self.bn is not None:
            x = F.relu(self.bn(x))
        return self.shuffle(x)


class CFASPP(nn.Module):
    """Cascaded F-ASPP (section III-B, Fig. 3): F-ASPP on the high-level features, upsampled to the low-level
    features' resolution and concatenated with them, then a second F-ASPP with fewer channels.

    ``upsample_factor`` set: the step between the two F-ASPPs is a sub-pixel convolution with that factor
    (feature-space super-resolution, section III-C); ``None``: bilinear (Table I method 3).
    """

    def __init__(
        self,
        high_ch: int,
        low_ch: int,
        channels: tuple[int, int] = (256, 128),
        rates: tuple[Dilation, ...] = ASPP_RATES,
        upsample_factor: int | None = None,
    ):
        super().__init__()
        self.high = FASPP(high_ch, channels[0], rates)
        self.upsample = None if upsample_factor is None else SubPixelConv(channels[0], channels[0], upsample_factor)
        self.low = FASPP(channels[0] + low_ch, channels[1], rates)
        self.out_channels = channels[1]

    def forward(self, high: torch.Tensor, low: torch.Tensor) -> torch.Tensor:
        x = self.high(high)
        if self.upsample is not None:
            x = self.upsample(x)
        if x.shape[-2:] != low.shape[-2:]:
            x = resize(x, low.shape[-2:])
        return self.low(torch.cat([x, low], 1))


class FarSeeNet(SegmentationModel):
    """FarSee-Net; ``method`` 1-4 are the back-ends of Table I, ``output_scale`` the output/input size ratio.

    With ``subpixel_layout="cascade"`` the weights do not depend on ``output_scale`` (only the final bilinear
    step does), so a network trained on half-size inputs can also be built with ``output_scale=1``.
    """

    part_aliases = {"encoder": "backbone"}

    def __init__(
        self,
        num_classes: int = 19,
        backbone: str = "resnet18",
        method: Literal[1, 2, 3, 4] = 4,
        output_scale: Literal[1, 2, 4] = 2,
        low_level_stage: str | None = None,
        rates: tuple[Dilation, ...] = ASPP_RATES,
        pretrained: str | os.PathLike | None = None,
        subpixel_layout: SubpixelLayout = "cascade",
    ):
        super().__init__()
        with torch.device("meta"):  # only to read the stage table, without allocating weights
            probe = create_backbone(backbone)
        low_default, high = FEATURE_STAGES.get(backbone) or default_feature_stages(probe, 8)
        low, high = probe.resolve_stage(low_level_stage or low_default), probe.resolve_stage(high)
        self.backbone = create_backbone(backbone, output_stride=32, out_stages=[low, high], pretrained=pretrained)
        self.low_stage, self.high_stage = low, high
        low_ch, high_ch = self.backbone.stage_channels(low), self.backbone.stage_channels(high)
        low_stride, high_stride = self.backbone.stage_stride(low), self.backbone.stage_stride(high)
        self.num_classes = num_classes
        self.method = method
        self.size_divisor = 32
        self.output_scale = output_scale
        spec = METHODS[method]
        rates = tuple(rates)
        self.subpixel_layout = subpixel_layout if spec["super_resolution"] else None
        if spec["context"] == "cfaspp":
            self.decoder = None
            if spec["super_resolution"] and subpixel_layout == "cascade":
                # One sub-pixel conv replaces the bilinear step between the F-ASPPs, the last one (t = 4) yields
                # the class maps at stride low_stride / 4; bilinear takes them to the output size.
                self.context = CFASPP(high_ch, low_ch, (256, 128), rates, upsample_factor=high_stride // low_stride)
                self.head = SubPixelConv(128, num_classes, 4, last=True)
            elif spec["super_resolution"]:
                # Two sub-pixel convs after the cascade climb from the low-level stride to output_scale x the input size.
                self.context = CFASPP(high_ch, low_ch, (256, 128), rates)
                total = low_stride * output_scale
                first = 4 if total >= 16 else 2
                self.head = nn.Sequential(SubPixelConv(128, 128, first), SubPixelConv(128, num_classes, total // first, last=True))
            else:
                self.context = CFASPP(high_ch, low_ch, (256, 128), rates)
                self.head = nn.Conv2d(128, num_classes, 1)
        else:
            self.context = ASPP(high_ch, 256, rates) if spec["context"] == "aspp" else FASPP(high_ch, 256, rates)
            self.decoder = DeepLabV3PlusDecoder(256, low_ch, num_classes, 48, 256, 2, "standard", align_corners=False)
            self.head = None
        two_step = isinstance(self.head, nn.Sequential)
        self.class_layers = ("decoder.classifier",) if self.decoder is not None else ("head.1",) if two_step else ("head",)
        for part in (self.context, self.decoder, self.head):
            if part is not None:
                init_head(part)

    def segment(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.backbone(x)
        high, low = feats[self.high_stage], feats[self.low_stage]
        if self.decoder is not None:
            out = self.decoder(self.context(high), low)
        else:
            out = self.head(self.context(high, low))
        size = (x.shape[-2] * self.output_scale, x.shape[-1] * self.output_scale)
        if out.shape[-2:] != size:
            out = resize(out, size)
        return out


_OURS = "our count (FarSee-Net reports no parameter figures; see docs/fidelity.md)"
_RESNET18 = "FarSee-Net Table I method {}: ResNet-18 + "
register_variants(PAPER, {
    "farseenet": Variant(FarSeeNet, {}, 13_600_496, _OURS,
                         "FarSee-Net: front-end + CF-ASPP + feature-space super-resolution (output twice the input size)."),
    "farseenet-method1": Variant(FarSeeNet, {"method": 1}, 16_610_739, _OURS, _RESNET18.format(1) + "ASPP + DeepLabv3+ decoder"),
    "farseenet-method2": Variant(FarSeeNet, {"method": 2}, 13_473_459, _OURS, _RESNET18.format(2) + "F-ASPP + DeepLabv3+ decoder"),
    "farseenet-method3": Variant(FarSeeNet, {"method": 3}, 12_506_963, _OURS, _RESNET18.format(3) + "CF-ASPP, no decoder, no super-resolution"),
    "farseenet-method4": Variant(FarSeeNet, {"method": 4}, 13_600_496, _OURS, "FarSee-Net Table I method 4: the full network (same as farseenet)"),
    "farseenet-mobilenetv2": Variant(FarSeeNet, {"backbone": "mobilenetv2"}, 5_569_456, _OURS,
                                     "FarSee-Net back-end on MobileNetV2 (the paper's plug-in claim; not in its tables)"),
})
