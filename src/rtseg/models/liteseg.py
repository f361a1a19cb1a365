"""LiteSeg (Emara et al., "LiteSeg: A Novel Lightweight ConvNet for Semantic Segmentation", DICTA 2019).

Encoder = backbone + DASPP (section II-D), decoder = DeepLabv3+-style with two 3x3 convolutions
(section II-E). Details the paper leaves open follow the official code (see docs/fidelity.md, "LiteSeg"):
depthwise-separable convolutions without anything between depthwise and pointwise, no ReLU after
the atrous convolution's BN, bilinear resizing with aligned corners.
"""
from __future__ import annotations

import os
from typing import Literal, Union

import torch
import torch.nn as nn

from rtseg.models.backbones import create_backbone, default_feature_stages
from rtseg.models.base import SegmentationModel
from rtseg.models.blocks import resize
from rtseg.models.counting import table2_operations
from rtseg.models.deeplab import ASPP, ConvBNReLU, ConvKind, DeepLabV3PlusDecoder, ImagePooling, init_head, make_conv
from rtseg.variants import Channels, Dilation, Variant, register_variants

__all__ = ["DASPPBranch", "DASPP", "LiteSegDecoder", "LiteSeg", "LITESEG_BACKBONES", "table2_operations"]

PAPER = "LiteSeg (Emara et al., DICTA 2019)"
DASPP_RATES = (1, 3, 6, 9)
Head = Literal["daspp", "aspp"]
# Channels of the 1x1 reduction of the low-level features: a count, None (used as they are) or "auto"
# (the backbone's recorded choice below, else 48 as DeepLabv3+ for features wider than 48).
LowLevelReduce = Union[Channels, Literal["auto"], None]

# Per backbone, as in the official code: which stages feed the head, the output stride, and the
# 1x1 reduction of the low-level features (None: used as they are).
LITESEG_BACKBONES = {
    "darknet19": {"low": "stage3", "high": "stage6", "output_stride": 16, "low_level_reduce": 32},
    "mobilenetv2": {"low": "features.3", "high": "features.18", "output_stride": 32, "low_level_reduce": None},
    "shufflenet-g8": {"low": "stage2", "high": "stage4", "output_stride": 32, "low_level_reduce": 48},
}


class DASPPBranch(nn.Module):
    """One DASPP branch (section II-D): atrous conv -> BN, and for rates > 1 a further 3x3 conv -> BN -> ReLU."""

    def __init__(self, in_ch: int, channels: int, rate: int, conv: str):
        super().__init__()
        self.atrous = make_conv(conv, in_ch, channels, 1 if rate == 1 else 3, dilation=rate)
        self.bn = nn.BatchNorm2d(channels)
        # The paper's "deeper" ASPP: a plain 3x3 (dilation 1) refines each atrous branch.
        self.refine = ConvBNReLU(channels, channels, 3, conv=conv) if rate > 1 else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn(self.atrous(x))
        return self.refine(x) if self.refine is not None else x


class DASPP(nn.Module):
    """Deeper ASPP (Fig. 1, section II-D): rates 1, 3, 6, 9 with 96 filters, image pooling, and a short residual
    connection that concatenates the module's input with its branches before the 1x1 projection."""

    def __init__(self, in_ch: int, channels: int = 96, rates: tuple[Dilation, ...] = DASPP_RATES, conv: ConvKind = "separable"):
        super().__init__()
        self.branches = nn.ModuleList(DASPPBranch(in_ch, channels, r, conv) for r in rates)
        self.pool = ImagePooling(in_ch, channels)
        self.project = ConvBNReLU(in_ch + channels * (len(rates) + 1), channels, 1, conv=conv)
        self.out_channels = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(torch.cat([x] + [b(x) for b in self.branches] + [self.pool(x)], 1))


# LiteSeg decoder (section II-E): the long residual connection concatenates low-level backbone features (optionally
# reduced by a 1x1) with the upsampled encoder output; two 3x3 convs (96) and a 1x1 classifier: DeepLabv3+'s decoder.
LiteSegDecoder = DeepLabV3PlusDecoder


class LiteSeg(SegmentationModel):
    """LiteSeg on any registered backbone: ``head="daspp"`` (the paper's model) or ``"aspp"`` (the DeepLabv3+
    baseline of Table I, row 1), with ``conv="separable"`` or ``"standard"`` convolutions in the head (Table II)."""

    class_layers = ("decoder.classifier",)
    part_aliases = {"encoder": "backbone"}

    def __init__(
        self,
        num_classes: int = 19,
        backbone: str = "mobilenetv2",
        output_stride: int | None = None,
        head: Head = "daspp",
        conv: ConvKind = "separable",
        low_level_stage: str | None = None,
        low_level_reduce: LowLevelReduce = "auto",
        pretrained: str | os.PathLike | None = None,
    ):
        super().__init__()
        known = LITESEG_BACKBONES.get(backbone, {})
        if output_stride is None:
            # The paper's baseline runs every backbone at output stride 32 (section III-C).
            output_stride = 32 if head == "aspp" else known.get("output_stride", 32)
        with torch.device("meta"):  # only to read the stage table, without allocating weights
            probe = create_backbone(backbone)
        low_default, high = (known["low"], known["high"]) if known else default_feature_stages(probe, 4)
        low = probe.resolve_stage(low_level_stage or low_default)
        self.backbone = create_backbone(backbone, output_stride=output_stride, out_stages=[low, high], pretrained=pretrained)
        self.low_stage, self.high_stage = low, high
        low_ch, high_ch = self.backbone.stage_channels(low), self.backbone.stage_channels(high)
        if low_level_reduce == "auto":  # the backbone's recorded choice, else 48 (DeepLabv3+) for wide features
            low_level_reduce = known["low_level_reduce"] if known else (48 if low_ch > 48 else None)
        self.num_classes = num_classes
        self.size_divisor = output_stride
        if head == "daspp":
            self.context = DASPP(high_ch, 96, DASPP_RATES, conv)
            self.decoder = LiteSegDecoder(96, low_ch, num_classes, low_level_reduce, 96, 2, conv, align_corners=True)
        else:
            # DeepLabv3+ at output stride 32: its rates (6, 12, 18) at stride 16 halved; 256 filters.
            self.context = ASPP(high_ch, 256, (3, 6, 9), conv)
            self.decoder = DeepLabV3PlusDecoder(256, low_ch, num_classes, 48, 256, 2, conv, align_corners=True)
        init_head(self.context)
        init_head(self.decoder)

    def segment(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.backbone(x)
        out = self.decoder(self.context(feats[self.high_stage]), feats[self.low_stage])
        return resize(out, x.shape[-2:], align_corners=True)


_DESCRIPTION = "LiteSeg: backbone + DASPP + decoder (options: head='aspp' baseline, conv='standard', any backbone)."
_OFFICIAL = "official LiteSeg code, without the unused ImageNet classifier; see docs/fidelity.md"
register_variants(PAPER, {
    "liteseg-darknet19": Variant(LiteSeg, {"backbone": "darknet19"}, 20_545_459, "paper Table III and official code: 20.55M", _DESCRIPTION),
    "liteseg-mobilenetv2": Variant(LiteSeg, {"backbone": "mobilenetv2"}, 3_101_707, _OFFICIAL, _DESCRIPTION),
    "liteseg-shufflenet": Variant(LiteSeg, {"backbone": "shufflenet-g8"}, 1_971_451, _OFFICIAL, _DESCRIPTION),
    "liteseg-shufflenetv2": Variant(LiteSeg, {"backbone": "shufflenetv2"}, 1_976_559, "our count (no paper figure: pairing not in the paper)",
                                    "LiteSeg head on ShuffleNetV2 1.0x (another front-end, not in the paper)"),
})
