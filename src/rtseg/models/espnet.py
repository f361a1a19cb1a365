"""ESPNet (Mehta et al., "ESPNet: Efficient Spatial Pyramid of Dilated Convolutions for Semantic Segmentation", ECCV 2018).

Module and parameter names follow the official release, so its ESPNet, ESPNet-C and CamVid ESPNet state
dicts load with strict key checking. They are registered pretrained weights (``rtseg.pretrained``): their
cards supply the output count, the CamVid file's ``decoder_skip`` and the normalisation each expects
(``espnet`` or ``espnet-camvid``: BGR, 0-255 mean/std, then /255).
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn as nn

from rtseg.models.base import SegmentationModel
from rtseg.models.blocks import resize, transposed_upsampling
from rtseg.variants import Count, Variant, register_variants

__all__ = ["CBR", "BR", "ESPDownsampler", "ESPBlock", "InputProjection", "ESPNetEncoder", "ESPNet", "ESPNetC"]

PAPER = "ESPNet (Mehta et al., ECCV 2018)"


class CBR(nn.Module):
    """Bias-free convolution -> BN(eps 1e-3) -> PReLU."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, stride: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, kernel_size, stride, (kernel_size - 1) // 2, bias=False)
        self.bn = nn.BatchNorm2d(out_ch, eps=1e-3)
        self.act = nn.PReLU(out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class BR(nn.Module):
    """BN(eps 1e-3) -> PReLU."""

    def __init__(self, channels: int):
        super().__init__()
        self.bn = nn.BatchNorm2d(channels, eps=1e-3)
        self.act = nn.PReLU(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(x))


class _Conv(nn.Module):
    """Bias-free (optionally dilated) convolution; wrapped so parameter names read ``<name>.conv.weight``."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, stride: int = 1, dilation: int = 1):
        super().__init__()
        pad = (kernel_size - 1) // 2 * dilation
        self.conv = nn.Conv2d(in_ch, out_ch, kernel_size, stride, pad, dilation=dilation, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class _ESPBase(nn.Module):
    """Reduce, split, transform with five dilated 3x3 convolutions, merge hierarchically (ESPNet Fig. 1)."""

    def __init__(self, in_ch: int, out_ch: int, reduce_kernel: int, stride: int):
        super().__init__()
        # The d=1 branch takes the remainder so the concat has exactly out_ch channels. Below 5 output channels
        # (2-4 classes) no split gives every branch a channel: each gets one and a 1x1 convolution maps the 5 to
        # out_ch (rtseg's choice; 5 or more channels build exactly the paper's module, with the same keys).
        n = max(1, out_ch // 5)
        n1 = max(1, out_ch - 4 * n)
        self.c1 = _Conv(in_ch, n, reduce_kernel, stride)
        self.d1 = _Conv(n, n1, 3, 1, 1)
        self.d2 = _Conv(n, n, 3, 1, 2)
        self.d4 = _Conv(n, n, 3, 1, 4)
        self.d8 = _Conv(n, n, 3, 1, 8)
        self.d16 = _Conv(n, n, 3, 1, 16)
        self.merge = _Conv(n1 + 4 * n, out_ch, 1) if n1 + 4 * n != out_ch else None

    def _pyramid(self, x: torch.Tensor) -> torch.Tensor:
        reduced = self.c1(x)
        add1 = self.d2(reduced)
        add2 = add1 + self.d4(reduced)
        add3 = add2 + self.d8(reduced)
        add4 = add3 + self.d16(reduced)
        out = torch.cat([self.d1(reduced), add1, add2, add3, add4], 1)
        return out if self.merge is None else self.merge(out)


class ESPDownsampler(_ESPBase):
    """Strided ESP module (3x3 stride-2 reduction), followed by BN + PReLU; no residual."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__(in_ch, out_ch, reduce_kernel=3, stride=2)
        self.bn = nn.BatchNorm2d(out_ch, eps=1e-3)
        self.act = nn.PReLU(out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self._pyramid(x)))


class ESPBlock(_ESPBase):
    """ESP module: 1x1 reduction to out/5, hierarchical feature fusion, optional residual, BN + PReLU."""

    def __init__(self, in_ch: int, out_ch: int, residual: bool = True):
        super().__init__(in_ch, out_ch, reduce_kernel=1, stride=1)
        self.bn = BR(out_ch)
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self._pyramid(x)
        if self.residual:
            out = out + x
        return self.bn(out)


class InputProjection(nn.Module):
    """The input image downsampled ``times`` times by 3x3 stride-2 average pooling (image pyramid)."""

    def __init__(self, times: int):
        super().__init__()
        self.pool = nn.ModuleList([nn.AvgPool2d(3, stride=2, padding=1) for _ in range(times)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for pool in self.pool:
            x = pool(x)
        return x


class ESPNetEncoder(nn.Module):
    """ESPNet-C: the encoder, ``p`` ESP modules at 1/4 and ``q`` at 1/8, classifier at 1/8."""

    def __init__(self, num_classes: int, p: Count = 2, q: Count = 8):
        super().__init__()
        self.level1 = CBR(3, 16, 3, 2)
        self.sample1 = InputProjection(1)
        self.sample2 = InputProjection(2)
        self.b1 = BR(16 + 3)
        self.level2_0 = ESPDownsampler(16 + 3, 64)
        self.level2 = nn.ModuleList([ESPBlock(64, 64) for _ in range(p)])
        self.b2 = BR(128 + 3)
        self.level3_0 = ESPDownsampler(128 + 3, 128)
        self.level3 = nn.ModuleList([ESPBlock(128, 128) for _ in range(q)])
        self.b3 = BR(256)
        self.classifier = _Conv(256, num_classes, 1)

    def stages(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Intermediate maps the ESPNet decoder reuses."""
        return _encoder_stages(self, x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(x)["logits"]


def _encoder_stages(net: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    # Shared by ESPNetEncoder and ESPNetC, which hold the same submodules at different depths.
    output0 = net.level1(x)
    output0_cat = net.b1(torch.cat([output0, net.sample1(x)], 1))
    output1_0 = net.level2_0(output0_cat)
    output1 = output1_0
    for layer in net.level2:
        output1 = layer(output1)
    output1_cat = net.b2(torch.cat([output1, output1_0, net.sample2(x)], 1))
    output2_0 = net.level3_0(output1_cat)
    output2 = output2_0
    for layer in net.level3:
        output2 = layer(output2)
    output2_cat = net.b3(torch.cat([output2_0, output2], 1))
    return {"output0": output0, "output0_cat": output0_cat, "output1_cat": output1_cat, "logits": net.classifier(output2_cat)}


class ESPNetC(SegmentationModel):
    """ESPNet-C: the encoder's 1/8 logits upsampled bilinearly to the input size."""

    size_divisor = 8
    class_layers = ("classifier",)

    def __init__(self, num_classes: int = 19, p: Count = 2, q: Count = 8):
        super().__init__()
        self.num_classes = num_classes
        # Parameters live at the top level so the official encoder weights load without a prefix.
        enc = ESPNetEncoder(num_classes, p, q)
        for name, module in enc.named_children():
            self.add_module(name, module)
        # with the encoder's modules at the top level, "encoder" (train.freeze) names all of them but the classifier
        self.part_aliases = {"encoder": tuple(n for n, _ in self.named_children() if n != "classifier")}

    def segment(self, x: torch.Tensor) -> torch.Tensor:
        logits = _encoder_stages(self, x)["logits"]
        return resize(logits, x.shape[-2:])


# Which 1/2-resolution map the last decoder convolution sees: the official Cityscapes release
# uses the first convolution's 16 channels, the official CamVid release those plus the image (19).
DecoderSkip = Literal["level1", "level1-image"]
DECODER_SKIPS = {"level1": ("output0", 16), "level1-image": ("output0_cat", 16 + 3)}


class ESPNet(SegmentationModel):
    """ESPNet: ESPNet-C plus the light decoder that merges 1/8, 1/4 and 1/2 features (paper Fig. 4d)."""

    size_divisor = 8
    # the decoder works on class maps: every layer after the encoder's classifier has the class count as its width
    class_layers = ("encoder.classifier", "level3_C", "br", "conv", "up_l3", "combine_l2_l3", "up_l2", "classifier")

    def __init__(self, num_classes: int = 19, p: Count = 2, q: Count = 8, decoder_skip: DecoderSkip = "level1"):
        super().__init__()
        c = num_classes
        self.num_classes = c
        self._skip, skip_ch = DECODER_SKIPS[decoder_skip]
        self.encoder = ESPNetEncoder(c, p, q)
        self.level3_C = _Conv(128 + 3, c, 1)
        self.br = nn.BatchNorm2d(c, eps=1e-3)
        self.conv = CBR(skip_ch + c, c, 3, 1)
        self.up_l3 = nn.Sequential(transposed_upsampling(c, c, 2))
        self.combine_l2_l3 = nn.Sequential(BR(2 * c), ESPBlock(2 * c, c, residual=False))
        self.up_l2 = nn.Sequential(transposed_upsampling(c, c, 2), BR(c))
        self.classifier = transposed_upsampling(c, c, 2)

    def segment(self, x: torch.Tensor) -> torch.Tensor:
        s = self.encoder.stages(x)
        up3 = self.up_l3(self.br(s["logits"]))
        comb = self.up_l2(self.combine_l2_l3(torch.cat([self.level3_C(s["output1_cat"]), up3], 1)))
        return self.classifier(self.conv(torch.cat([comb, s[self._skip]], 1)))


_ESPNET_NOTE = "official release (p=2, q=8)"
register_variants(PAPER, {
    "espnet": Variant(ESPNet, expected_params=362_949, params_source=_ESPNET_NOTE, normalization="espnet",
                      description="ESPNet with the light decoder."),
    "espnet-c": Variant(ESPNetC, expected_params=349_193, params_source=_ESPNET_NOTE, normalization="espnet",
                        description="ESPNet-C: the encoder alone, upsampled 8x bilinearly."),
})
