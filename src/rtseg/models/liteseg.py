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
import torch.nn.functional as F

from rtseg.models.backbones import Backbone, create_backbone
from rtseg.models.base import SegmentationModel
from rtseg.models.deeplab import ASPP, ConvBNReLU, ConvKind, DeepLabV3PlusDecoder, ImagePooling, init_head, make_conv
from rtseg.registry import Variant, register_variants

__all__ = ["DASPPBranch", "DASPP", "LiteSegDecoder", "LiteSeg", "LITESEG_BACKBONES", "default_feature_stages", "table2_operations"]

PAPER = "LiteSeg (Emara et al., DICTA 2019)"
DASPP_RATES = (1, 3, 6, 9)
Head = Literal["daspp", "aspp"]
# Channels of the 1x1 reduction of the low-level features: a count, None (used as they are) or "auto"
# (the backbone's recorded choice below, else 48 as DeepLabv3+ for features wider than 48).
LowLevelReduce = Union[int, Literal["auto"], None]

# Per backbone, as in the official code: which stages feed the head, the output stride, and the
# 1x1 reduction of the low-level features (None: used as they are).
LITESEG_BACKBONES = {
    "darknet19": {"low": "stage3", "high": "stage6", "output_stride": 16, "low_level_reduce": 32},
    "mobilenetv2": {"low": "features.3", "high": "features.18", "output_stride": 32, "low_level_reduce": None},
    "shufflenet-g8": {"low": "stage2", "high": "stage4", "output_stride": 32, "low_level_reduce": 48},
}


def default_feature_stages(backbone: Backbone, low_stride: int) -> tuple[str, str]:
    """(low-level stage, high-level stage) for a backbone without a recorded choice: the deepest stage at
    ``low_stride`` (the next larger stride if there is none) and the last stage."""
    stages = backbone.stage_specs
    for stride in (low_stride, low_stride * 2):
        at = [s.name for s in stages if s.stride == stride]
        if at:
            return at[-1], stages[-1].name
    raise ValueError(f"{type(backbone).__name__} has no stage at stride {low_stride}")


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

    def __init__(self, in_ch: int, channels: int = 96, rates: tuple[int, ...] = DASPP_RATES, conv: ConvKind = "separable"):
        super().__init__()
        self.branches = nn.ModuleList(DASPPBranch(in_ch, channels, r, conv) for r in rates)
        self.pool = ImagePooling(in_ch, channels)
        self.project = ConvBNReLU(in_ch + channels * (len(rates) + 1), channels, 1, conv=conv)
        self.out_channels = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(torch.cat([x] + [b(x) for b in self.branches] + [self.pool(x)], 1))


class LiteSegDecoder(nn.Module):
    """LiteSeg decoder (section II-E): the long residual connection concatenates low-level backbone features
    (optionally reduced by a 1x1) with the upsampled encoder output; two 3x3 convs (96) and a 1x1 classifier."""

    def __init__(self, in_ch: int, low_ch: int, num_classes: int, low_reduce: int | None, channels: int = 96, conv: str = "separable"):
        super().__init__()
        self.reduce = ConvBNReLU(low_ch, low_reduce, 1, conv=conv) if low_reduce else nn.Identity()
        fused = in_ch + (low_reduce or low_ch)
        self.refine = nn.Sequential(ConvBNReLU(fused, channels, 3, conv=conv), ConvBNReLU(channels, channels, 3, conv=conv))
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, x: torch.Tensor, low: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=low.shape[-2:], mode="bilinear", align_corners=True)
        return self.classifier(self.refine(torch.cat([x, self.reduce(low)], 1)))


class LiteSeg(SegmentationModel):
    """LiteSeg on any registered backbone: ``head="daspp"`` (the paper's model) or ``"aspp"`` (the DeepLabv3+
    baseline of Table I, row 1), with ``conv="separable"`` or ``"standard"`` convolutions in the head (Table II)."""

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
            self.decoder = LiteSegDecoder(96, low_ch, num_classes, low_level_reduce, 96, conv)
        else:
            # DeepLabv3+ at output stride 32: its rates (6, 12, 18) at stride 16 halved; 256 filters.
            self.context = ASPP(high_ch, 256, (3, 6, 9), conv)
            self.decoder = DeepLabV3PlusDecoder(256, low_ch, num_classes, 48, 256, 2, conv, align_corners=True)
        init_head(self.context)
        init_head(self.decoder)

    def segment(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.backbone(x)
        out = self.decoder(self.context(feats[self.high_stage]), feats[self.low_stage])
        return F.interpolate(out, size=x.shape[-2:], mode="bilinear", align_corners=True)


def table2_operations(model: nn.Module, size: tuple[int, int] = (512, 1024)) -> int:
    """Operations of one forward pass counted by the rule of the FLOP counter in LiteSeg's official code,
    which is what the paper's Table II reports as "GFLOPs" (reimplemented here to compare with it).

    A k x k convolution counts (2 k^2 - 1) x C_in x C_out / groups per output pixel (so a 1x1 counts its
    multiply-adds once, a 3x3 counts 17 per 9 multiply-adds), plus C_out per pixel for a bias; BN counts
    2 per input element, ReLU / ReLU6 / LeakyReLU and max / average pooling modules 1 per input element,
    a linear layer its multiply-adds. Functional calls (interpolation, F.relu, concatenation) count 0.
    """
    total = 0

    def conv(m, inputs, out):
        nonlocal total
        kh, kw = m.kernel_size
        pixels = out.shape[0] * out.shape[2] * out.shape[3]
        total += (2 * kh * kw - 1) * m.in_channels * (m.out_channels // m.groups) * pixels
        total += m.out_channels * pixels if m.bias is not None else 0

    def per_input_element(factor):
        def hook(m, inputs, out):
            nonlocal total
            total += factor * inputs[0].numel()

        return hook

    def linear(m, inputs, out):
        nonlocal total
        total += inputs[0].shape[0] * m.in_features * m.out_features

    hooks = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            hooks.append(m.register_forward_hook(conv))
        elif isinstance(m, nn.BatchNorm2d):
            hooks.append(m.register_forward_hook(per_input_element(2 if m.affine else 1)))
        elif isinstance(m, (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.MaxPool2d, nn.AvgPool2d)):
            hooks.append(m.register_forward_hook(per_input_element(1)))
        elif isinstance(m, nn.Linear):
            hooks.append(m.register_forward_hook(linear))
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            model(torch.zeros(1, 3, *size, device=next(model.parameters()).device))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return total


_DESCRIPTION = "LiteSeg: backbone + DASPP + decoder (options: head='aspp' baseline, conv='standard', any backbone)."
_OFFICIAL = "official LiteSeg code, without the unused ImageNet classifier; see docs/fidelity.md"
register_variants(PAPER, {
    "liteseg-darknet19": Variant(LiteSeg, {"backbone": "darknet19"}, 20_545_459, "paper Table III and official code: 20.55M", _DESCRIPTION),
    "liteseg-mobilenetv2": Variant(LiteSeg, {"backbone": "mobilenetv2"}, 3_101_707, _OFFICIAL, _DESCRIPTION),
    "liteseg-shufflenet": Variant(LiteSeg, {"backbone": "shufflenet-g8"}, 1_971_451, _OFFICIAL, _DESCRIPTION),
    "liteseg-shufflenetv2": Variant(LiteSeg, {"backbone": "shufflenetv2"}, 1_976_559, "our count (no paper figure: pairing not in the paper)",
                                    "LiteSeg head on ShuffleNetV2 1.0x (another front-end, not in the paper)"),
})
