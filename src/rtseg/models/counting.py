"""Operation counts by the rules papers used for their tables (see docs/fidelity.md)."""
from __future__ import annotations

import torch
import torch.nn as nn

__all__ = ["table2_operations"]


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
