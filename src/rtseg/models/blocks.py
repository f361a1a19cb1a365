"""Building blocks shared by several model families."""
from __future__ import annotations

import torch
import torch.nn as nn

__all__ = ["ConvBNAct", "SeparableConv2d", "ChannelShuffle", "channel_shuffle"]


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
