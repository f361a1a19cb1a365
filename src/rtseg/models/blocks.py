"""Building blocks shared by several model families."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["ConvBNAct", "SeparableConv2d", "ChannelShuffle", "channel_shuffle", "transposed_upsampling", "resize", "LayerStackEncoder"]


class ConvBNAct(nn.Sequential):
    """Convolution -> BatchNorm -> activation (``act=None`` leaves the activation out)."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel_size: int | tuple[int, int] = 3,
        stride: int = 1,
        dilation: int | tuple[int, int] = 1,
        groups: int = 1,
        act: type[nn.Module] | None = nn.ReLU,
        bn_eps: float = 1e-5,
        bias: bool = False,
    ):
        ks = (kernel_size, kernel_size) if isinstance(kernel_size, int) else tuple(kernel_size)
        dil = (dilation, dilation) if isinstance(dilation, int) else tuple(dilation)
        padding = tuple((k - 1) // 2 * d for k, d in zip(ks, dil))
        layers: list[nn.Module] = [
            nn.Conv2d(in_ch, out_ch, ks, stride, padding, dilation=dil, groups=groups, bias=bias),
            nn.BatchNorm2d(out_ch, eps=bn_eps),
        ]
        if act is not None:
            layers.append(act(out_ch) if act is nn.PReLU else act(inplace=True) if act is nn.ReLU else act())
        super().__init__(*layers)


class SeparableConv2d(nn.Sequential):
    """Depthwise ``k x k`` convolution followed by a pointwise ``1 x 1`` convolution, nothing between."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int = 3, stride: int = 1, dilation: int = 1, bias: bool = False):
        padding = (kernel_size - 1) // 2 * dilation
        super().__init__(
            nn.Conv2d(in_ch, in_ch, kernel_size, stride, padding, dilation=dilation, groups=in_ch, bias=bias),
            nn.Conv2d(in_ch, out_ch, 1, bias=bias),
        )


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """ShuffleNet's channel shuffle: interleave the channels of ``groups`` groups."""
    n, c, h, w = x.shape
    return x.view(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class ChannelShuffle(nn.Module):
    """Module form of :func:`channel_shuffle`."""

    def __init__(self, groups: int):
        super().__init__()
        self.groups = groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return channel_shuffle(x, self.groups)

    def extra_repr(self) -> str:
        return f"groups={self.groups}"


def transposed_upsampling(in_ch: int, out_ch: int, kernel_size: int, stride: int = 2, bias: bool = False) -> nn.ConvTranspose2d:
    """A transposed convolution whose output is exactly ``stride`` times its input, for any kernel size.

    One padding rule for every deconvolution in the models: padding ``p = (k - 1) // 2`` and output padding
    ``stride + 2p - k``, since the output side is ``stride * (H - 1) - 2p + k + output_padding``.
    """
    padding = (kernel_size - 1) // 2
    return nn.ConvTranspose2d(in_ch, out_ch, kernel_size, stride, padding, output_padding=stride + 2 * padding - kernel_size, bias=bias)


def resize(x: torch.Tensor, size, align_corners: bool = False) -> torch.Tensor:
    """Bilinear resizing to ``size`` (H, W); LiteSeg's official code aligns corners, the other families do not."""
    return F.interpolate(x, size=size, mode="bilinear", align_corners=align_corners)


class LayerStackEncoder(nn.Module):
    """An encoder that is ``initial_block`` then ``layers`` in order, with an optional 1x1 ``output_conv`` head."""

    initial_block: nn.Module
    layers: nn.ModuleList
    output_conv: nn.Module | None

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.initial_block(x)
        for layer in self.layers:
            x = layer(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        return self.output_conv(x) if self.output_conv is not None else x
