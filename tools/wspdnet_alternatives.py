"""WSPD-Net (thesis section 4.3, Table 4.2): DWS-Dil readings and layer counts against the thesis's figures.

Fig. 4.2, which draws the DWS-Dil layer, is missing from the text. The figures the thesis does give:
"18 layers" against ERFNet's 23, "lowered the number of encoder layers by five", Table 4.2's numbering
(DWS-Dil layers "9-11", deconvolution "12", ... "18") next to its "2 x DWS-Dil", and "0.67 million
parameters". This script builds ``wspdnet`` with 2 and 3 DWS-Dil layers and with each internal reading
of the layer below, and prints the layer count and the parameters (also minus the 25,743 by which our
count of ERFNet's downsamplers and upsamplers exceeds the thesis's on every chapter-3 row).

Run from the repository root:  PYTHONPATH=src python tools/wspdnet_alternatives.py
"""
from __future__ import annotations

import torch.nn as nn

import rtseg
from rtseg.efficiency import count_parameters
from rtseg.models.essnet import DWSDil

C = 128
DILATIONS = (2, 4, 8, 16)
ERFNET_OFFSET = 25_743


def conv(in_ch: int, out_ch: int, k: tuple[int, int], groups: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, k, padding=(k[0] // 2, k[1] // 2), groups=groups, bias=True)


def dense_pair() -> list[nn.Module]:
    """ERFNet's first asymmetric set: 3x1 -> ReLU -> 1x3 -> BN (dense, with biases)."""
    return [conv(C, C, (3, 1)), conv(C, C, (1, 3)), nn.BatchNorm2d(C)]


def depthwise_pair() -> list[nn.Module]:
    return [conv(C, C, (3, 1), C), conv(C, C, (1, 3), C), nn.BatchNorm2d(C)]


def pyramid(own_pointwise: bool, concat: bool) -> list[nn.Module]:
    """Four parallel depthwise 3x3 convs (dilations 2..16) and the pointwise part, then BN."""
    layers: list[nn.Module] = [conv(C, C, (3, 3), C) for _ in DILATIONS]
    if own_pointwise:
        layers += [conv(C, C, (1, 1)) for _ in DILATIONS]
    else:
        layers.append(conv(C * len(DILATIONS) if concat else C, C, (1, 1)))
    return layers + [nn.BatchNorm2d(C)]


# label -> the layers of one DWS-Dil reading (only parameter counts are needed: a ModuleList suffices)
READINGS = {
    "dense 3x1/1x3 pair, 4 dilated depthwise summed, one 1x1 (former default)": dense_pair() + pyramid(False, False),
    "dense pair, 4 dilated depthwise concatenated, 1x1 from 512": dense_pair() + pyramid(False, True),
    "dense pair, 4 depthwise-separable branches (own 1x1 each), summed": dense_pair() + pyramid(True, False),
    "depthwise 3x1/1x3 pair, 4 dilated depthwise summed, one 1x1": depthwise_pair() + pyramid(False, False),
    "depthwise pair, 4 depthwise-separable branches (own 1x1 each), summed (default)": depthwise_pair() + pyramid(True, False),
}


def main() -> None:
    ours_layer = count_parameters(DWSDil(C, pair="dense", pointwise="shared"))
    labels = list(READINGS)
    assert ours_layer == count_parameters(nn.ModuleList(READINGS[labels[0]])), "reading 1 must be DWSDil(pair='dense', pointwise='shared')"
    assert count_parameters(DWSDil(C)) == count_parameters(nn.ModuleList(READINGS[labels[-1]])), "the last reading must be DWSDil's default"
    print("thesis: 0.67 M parameters; 18 layers; encoder five layers shorter than ERFNet's 16; Table 4.2 numbers DWS-Dil 9-11")
    print("| DWS-Dil reading | params per layer | layers | total layers | encoder layers | params | minus 25,743 | vs 0.67 M |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for n in (2, 3):
        model = rtseg.create_model("wspdnet", dws_dil_layers=n, dws_dil_pair="dense", dws_dil_pointwise="shared")
        rest = count_parameters(model) - n * ours_layer
        encoder_layers = 1 + len(model.encoder)
        total_layers = encoder_layers + len(model.decoder) + 1
        for label, layers in READINGS.items():
            per_layer = count_parameters(nn.ModuleList(layers))
            total = rest + n * per_layer
            print(f"| {label} | {per_layer:,} | {n} | {total_layers} | {encoder_layers} | {total:,} | {total - ERFNET_OFFSET:,} | "
                  f"{total / 670_000 - 1:+.1%} / {(total - ERFNET_OFFSET) / 670_000 - 1:+.1%} |")
    print(f"rest of the network (without DWS-Dil layers): {rest:,}")


if __name__ == "__main__":
    main()
