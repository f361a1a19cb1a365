"""Which input positions each fused branch of an FPL module sees, for each pairwise-feature-fusion reading.

Gridding is a sampling pattern: a dilated kernel reads its input at offsets spaced by the rate and skips
those between. For every ``pff`` reading this script makes all weights positive (so that no gradient
cancels), takes the gradient of one output pixel of each branch's channel group with respect to the
module's input, and reports the share of positions inside the group's receptive field that it reads.
It does so for the FPL module as published (pyramid stage 1 = a 3x3 convolution) and, for comparison,
with stage 1 removed (a single-stage pyramid like ESPNet's). Residual sums are left out: they add the
centre, which every reading already has.

Run from the repository root:  PYTHONPATH=src python tools/fplnet_pff_support.py
"""
from __future__ import annotations

import torch
import torch.nn as nn

from rtseg.models.fplnet import PFF_MODES, FPLModule

SIZE = 41  # odd, larger than the widest receptive field (35 for dilation 16)


def coverage(pff: str, two_stage: bool = True, channels: int = 16) -> list[tuple[int, int]]:
    """(positions read, positions in the bounding box) of the centre pixel of each branch's channel group."""
    module = FPLModule(channels, channels, pff=pff).eval()
    module.residual = False
    if not two_stage:
        module.local = nn.Identity()
    with torch.no_grad():
        for p in module.parameters():
            p.abs_()
    x = torch.rand(1, channels, SIZE, SIZE, requires_grad=True)
    out = module(x)
    width = channels // len(module.branches)
    result = []
    for k in range(len(module.branches)):
        (grad,) = torch.autograd.grad(out[0, k * width:(k + 1) * width, SIZE // 2, SIZE // 2].sum(), x, retain_graph=True)
        support = grad[0].abs().sum(0) > 0
        ys, xs = torch.nonzero(support, as_tuple=True)
        box = int(ys.max() - ys.min() + 1) * int(xs.max() - xs.min() + 1)
        result.append((int(support.sum()), box))
    return result


def main() -> None:
    torch.manual_seed(0)
    print("| pyramid | pff | branch 1 (d=2) | branch 2 (d=4) | branch 3 (d=8) | branch 4 (d=16) |")
    print("|---|---|---:|---:|---:|---:|")
    for two_stage in (True, False):
        for pff in PFF_MODES:
            cells = " | ".join(f"{n}/{box} ({n / box:.0%})" for n, box in coverage(pff, two_stage))
            print(f"| {'two-stage (FPL)' if two_stage else 'stage 1 removed'} | {pff} | {cells} |")


if __name__ == "__main__":
    main()
