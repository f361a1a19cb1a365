"""Parameter counts of the FPLNet interpretations that docs/fidelity.md compares.

Builds the registered networks, then edits copies of them to the alternative readings of the
paper (a layer added, removed or resized) and counts parameters with rtseg.efficiency.count_parameters.
Run from the repository root:  PYTHONPATH=src python tools/fplnet_alternatives.py
"""
from __future__ import annotations

import torch.nn as nn

import rtseg
from rtseg.efficiency import count_parameters
from rtseg.models.fplnet import FUSIONS, FactorizedConv, FPLDownsampler, FPLModule, NormAct

# Table VIII, given to the parameter.
TABLE_VIII = {"if": 414_810, "isff-add": 414_636, "isff-concat": 419_820, "if+isff-add": 414_810,
              "if+isff-concat": 419_994, "fir": 419_994}


def encoder(num_classes: int, **options) -> nn.Module:
    return rtseg.create_model("fplnet-encoder", num_classes, **options)


def replace_between(model: nn.Module, make) -> nn.Module:
    for m in model.modules():
        if isinstance(m, FactorizedConv):
            m.act = make(m.conv3x1.out_channels)
    return model


def wrap_in_modules(model: nn.Module, attr: str, make) -> nn.Module:
    for m in model.modules():
        if isinstance(m, FPLModule):
            conv = getattr(m, attr)
            c = m.reduce.out_channels
            setattr(m, attr, nn.Sequential(conv, make(c)))
    return model


def strided_3x3_reduction(model: nn.Module) -> nn.Module:
    for m in model.modules():
        if isinstance(m, FPLDownsampler):
            m.reduce = nn.Conv2d(m.reduce.in_channels, m.reduce.out_channels, 3, 2, 1, bias=False)
    return model


def classifier_bias(model: nn.Module) -> nn.Module:
    model.head = nn.Conv2d(model.head.in_channels, model.head.out_channels, 1, bias=True)
    return model


def no_fusion_norm(model: nn.Module) -> nn.Module:
    model.encoder.norm2 = nn.Identity()
    model.encoder.norm3 = nn.Identity()
    return model


def bn_only_fusion_norm(model: nn.Module) -> nn.Module:
    enc = model.encoder
    enc.norm2 = enc.norm2[0]
    enc.norm3 = enc.norm3[0]
    return model


ENCODER_ALTERNATIVES = {
    "chosen: PReLU between 3x1 and 1x3, nothing after the 1x1 and the 3x3": lambda m: m,
    "no non-linearity between 3x1 and 1x3": lambda m: replace_between(m, lambda c: nn.Identity()),
    "single-parameter PReLU between 3x1 and 1x3": lambda m: replace_between(m, lambda c: nn.PReLU(1)),
    "BN + PReLU between 3x1 and 1x3": lambda m: replace_between(m, lambda c: nn.Sequential(nn.BatchNorm2d(c), nn.PReLU(c))),
    "+ PReLU after the symmetric 3x3": lambda m: wrap_in_modules(m, "local", lambda c: nn.PReLU(c)),
    "+ BN + PReLU after the symmetric 3x3": lambda m: wrap_in_modules(m, "local", NormAct),
    "+ BN + PReLU after the 1x1 reduction": lambda m: wrap_in_modules(m, "reduce", NormAct),
    "downsampler reduction: 3x3 stride 2 (as ESPNet) instead of 1x1": strided_3x3_reduction,
    "classifier with bias": classifier_bias,
}


def table_viii_rows(num_classes: int, edit) -> dict[str, int]:
    return {f: count_parameters(edit(encoder(num_classes, fusion=f))) for f in FUSIONS}


def main() -> None:
    print("## Encoder (FIR), alternatives of the FPL module, vs Table VIII 'FIR' = 419,994\n")
    print("| reading | 19 classes | 20 classes | 20 classes - paper |")
    print("|---|---:|---:|---:|")
    for name, edit in ENCODER_ALTERNATIVES.items():
        n19, n20 = (count_parameters(edit(encoder(c))) for c in (19, 20))
        print(f"| {name} | {n19:,} | {n20:,} | {n20 - 419_994:+,} |")

    print("\n## Table VIII rows: our count - paper, per normalisation after the fusion\n")
    edits = {"BN + PReLU after each fusion (chosen)": lambda m: m, "BN only": bn_only_fusion_norm, "nothing": no_fusion_norm}
    print("| fusion | paper | " + " | ".join(f"{k}, {c} cl." for k in edits for c in (19, 20)) + " |")
    print("|---|---:|" + "---:|" * (2 * len(edits)))
    results = {(k, c): table_viii_rows(c, e) for k, e in edits.items() for c in (19, 20)}
    for f in FUSIONS:
        cells = " | ".join(f"{results[(k, c)][f] - TABLE_VIII[f]:+,}" for k in edits for c in (19, 20))
        print(f"| {f} | {TABLE_VIII[f]:,} | {cells} |")

    print("\n## Choices that leave the count unchanged (encoder, 19 classes)\n")
    for label, opts in [("dilations (2,4,8,16)", {}), ("dilations (1,2,4,8)", {"dilations": (1, 2, 4, 8)}),
                        ("PFF adjacent", {}), ("PFF with the stage-1 output", {"pff": "local"}), ("no PFF", {"pff": "none"})]:
        print(f"- {label}: {count_parameters(encoder(19, **opts)):,}")

    print("\n## Table VI module swaps (19 classes)\n")
    for label, name, opts in [("FPLNet-ESP, ESP downsamplers (chosen)", "fplnet-esp", {}),
                              ("FPLNet-ESP, FPL downsamplers kept", "fplnet-esp", {"esp_downsampler": False}),
                              ("ESPNet-FPL, FPL downsamplers (chosen)", "espnet-fpl", {}),
                              ("ESPNet-FPL, ESP downsamplers kept", "espnet-fpl", {"fpl_downsamplers": False})]:
        print(f"- {label}: {count_parameters(rtseg.create_model(name, 19, **opts)):,}")

    print("\n## Full FPLNet by deconvolution kernels (upsampler 1, upsampler 2, final), 19 classes\n")
    print("| kernels | plain 1x1 projection (chosen) | projection + BN + PReLU |")
    print("|---|---:|---:|")
    for k in [(2, 2, 2), (2, 3, 2), (3, 2, 2), (3, 2, 3), (3, 3, 2), (3, 3, 3), (4, 4, 2)]:
        plain = rtseg.create_model("fplnet", 19, decoder_kernels=k)
        normed = rtseg.create_model("fplnet", 19, decoder_kernels=k)
        normed.decoder.project = nn.Sequential(normed.decoder.project, NormAct(64))
        print(f"| {k} | {count_parameters(plain):,} | {count_parameters(normed):,} |")


if __name__ == "__main__":
    main()
