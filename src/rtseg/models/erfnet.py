"""ERFNet (Romera et al., "ERFNet: Efficient Residual Factorized ConvNet for Real-time Semantic Segmentation", T-ITS 2018).

Module and parameter names follow the official PyTorch release, so its state dicts load
unchanged (after the ``module.`` prefix of DataParallel is stripped, which the loader does).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from rtseg.models.base import SegmentationModel
from rtseg.models.blocks import LayerStackEncoder, resize, transposed_upsampling
from rtseg.variants import Variant, register_variants

__all__ = ["DownsamplerBlock", "NonBottleneck1D", "UpsamplerBlock", "ERFNetEncoder", "ERFNetDecoder", "ERFNet"]

PAPER = "ERFNet (Romera et al., T-ITS 2018)"
ENCODER_DILATIONS = (2, 4, 8, 16)


class DownsamplerBlock(nn.Module):
    """ERFNet downsampler: concat(3x3 stride-2 conv, 2x2 max-pool) -> BN -> ReLU."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch - in_ch, 3, stride=2, padding=1, bias=True)
        self.pool = nn.MaxPool2d(2, stride=2)
        self.bn = nn.BatchNorm2d(out_ch, eps=1e-3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(torch.cat([self.conv(x), self.pool(x)], 1)))


class NonBottleneck1D(nn.Module):
    """ERFNet's non-bottleneck-1D residual layer: two pairs of 3x1 / 1x3 convolutions, the second pair dilated."""

    def __init__(self, channels: int, dropout: float, dilation: int, kernel_size: int = 3):
        super().__init__()
        k, p, d = kernel_size, kernel_size // 2, dilation
        self.conv3x1_1 = nn.Conv2d(channels, channels, (k, 1), padding=(p, 0), bias=True)
        self.conv1x3_1 = nn.Conv2d(channels, channels, (1, k), padding=(0, p), bias=True)
        self.bn1 = nn.BatchNorm2d(channels, eps=1e-3)
        self.conv3x1_2 = nn.Conv2d(channels, channels, (k, 1), padding=(p * d, 0), dilation=(d, 1), bias=True)
        self.conv1x3_2 = nn.Conv2d(channels, channels, (1, k), padding=(0, p * d), dilation=(1, d), bias=True)
        self.bn2 = nn.BatchNorm2d(channels, eps=1e-3)
        self.dropout = nn.Dropout2d(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.conv3x1_1(x))
        out = F.relu(self.bn1(self.conv1x3_1(out)))
        out = F.relu(self.conv3x1_2(out))
        out = self.bn2(self.conv1x3_2(out))
        if self.dropout.p != 0:
            out = self.dropout(out)
        return F.relu(out + x)


class UpsamplerBlock(nn.Module):
    """ERFNet upsampler: 3x3 stride-2 transposed convolution -> BN -> ReLU (other kernels and strides: ESSNet's Table 4.1)."""

    def __init__(self, in_ch: int, out_ch: int, stride: int = 2, kernel_size: int = 3):
        super().__init__()
        self.conv = transposed_upsampling(in_ch, out_ch, kernel_size, stride, bias=True)
        self.bn = nn.BatchNorm2d(out_ch, eps=1e-3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


class ERFNetEncoder(LayerStackEncoder):
    """ERFNet encoder (paper Table 1, layers 1-16), with the 1x1 head used when it is trained alone."""

    def __init__(self, num_classes: int, with_head: bool = True, dropout_scale: float = 1.0):
        super().__init__()
        self.initial_block = DownsamplerBlock(3, 16)
        layers: list[nn.Module] = [DownsamplerBlock(16, 64)]
        layers += [NonBottleneck1D(64, 0.03 * dropout_scale, 1) for _ in range(5)]
        layers.append(DownsamplerBlock(64, 128))
        for _ in range(2):
            layers += [NonBottleneck1D(128, 0.3 * dropout_scale, d) for d in ENCODER_DILATIONS]
        self.layers = nn.ModuleList(layers)
        self.output_conv = nn.Conv2d(128, num_classes, 1, bias=True) if with_head else None


class ERFNetDecoder(nn.Module):
    """ERFNet decoder (paper Table 1, layers 17-23)."""

    def __init__(self, num_classes: int):
        super().__init__()
        self.layers = nn.ModuleList(
            [
                UpsamplerBlock(128, 64),
                NonBottleneck1D(64, 0, 1),
                NonBottleneck1D(64, 0, 1),
                UpsamplerBlock(64, 16),
                NonBottleneck1D(16, 0, 1),
                NonBottleneck1D(16, 0, 1),
            ]
        )
        self.output_conv = transposed_upsampling(16, num_classes, 2, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return self.output_conv(x)


class ERFNet(SegmentationModel):
    """ERFNet: the full encoder-decoder network, or the encoder alone with a 1x1 head and 8x bilinear upsampling."""

    size_divisor = 8
    class_layers = ("decoder.output_conv", "encoder.output_conv")

    def __init__(self, num_classes: int = 19, encoder_only: bool = False):
        super().__init__()
        self.num_classes = num_classes
        self.encoder_only = encoder_only
        self.encoder = ERFNetEncoder(num_classes, with_head=encoder_only)
        self.decoder = None if encoder_only else ERFNetDecoder(num_classes)

    def segment(self, x: torch.Tensor) -> torch.Tensor:
        if self.encoder_only:
            return resize(self.encoder(x), x.shape[-2:])
        return self.decoder(self.encoder.features(x))


register_variants(PAPER, {
    "erfnet": Variant(ERFNet, expected_params=2_064_191, params_source="official PyTorch release (without the encoder-only head)",
                      description="ERFNet encoder-decoder."),
    "erfnet-encoder": Variant(ERFNet, {"encoder_only": True}, expected_params=1_876_495, params_source="official release encoder + 1x1 head",
                              description="ERFNet encoder with a 1x1 classifier, upsampled 8x bilinearly."),
})
