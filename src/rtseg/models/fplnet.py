"""FPLNet (Atif, Mazhar, Sarma, Bhuyan, Ahamed: "Efficient Context Integration through Factorized
Pyramidal Learning for Ultra-Lightweight Semantic Segmentation").

No public implementation exists; the text, Table I (module formulas), Table II (layer list) and the
ablation Tables VI-X (parameter counts) are the specification. Every choice the paper leaves open is
written down, with the counts of the alternatives, in docs/fidelity.md (## FPLNet).

Networks: ``fplnet`` (encoder + asymmetric decoder), ``fplnet-encoder`` (1x1 projection to the classes,
8x bilinear upsampling), ``fplnet-esp`` and ``espnet-fpl`` (the module swaps of Table VI). The builder
options reproduce every row of Tables VI-X.
"""
from __future__ import annotations

from typing import Literal, get_args

import torch
import torch.nn as nn

from rtseg.models.base import SegmentationModel
from rtseg.models.blocks import ConvBNAct, resize, transposed_upsampling
from rtseg.models.espnet import ESPBlock, ESPDownsampler, ESPNetC
from rtseg.variants import Count, Dilation, Kernel, Variant, register_variants

__all__ = [
    "NormAct",
    "FactorizedConv",
    "FPLModule",
    "FPLDownsampler",
    "InitialModule",
    "FIRUnit",
    "Upsampler",
    "FPLNetEncoder",
    "FPLNetDecoder",
    "FPLNet",
    "ESPNetFPL",
    "FUSIONS",
]

PAPER = "FPLNet (Atif et al., Factorized Pyramidal Learning)"
BN_EPS = 1e-3  # as in the ESP modules the ablations swap in, so a swap changes the module only
DILATIONS = (2, 4, 8, 16)
Factorization = Literal["composite", "none", "all"]
PFFMode = Literal["adjacent", "local", "none"]
Activation = Literal["prelu", "relu"]
ModuleKind = Literal["fpl", "esp"]
Downsampling = Literal["delayed", "hasty"]
# Table VIII: feature/image fusion at the end of stages 2 and 3, as the parts each concatenates:
# "sum" = deep + shallow features, "deep" / "shallow" = either alone, "image" = the downsampled image (3 channels).
Fusion = Literal["fir", "if", "isff-add", "isff-concat", "if+isff-add", "if+isff-concat"]
FUSION_PARTS = {
    "fir": ("sum", "deep", "image"),
    "if": ("deep", "image"),
    "isff-add": ("sum",),
    "isff-concat": ("deep", "shallow"),
    "if+isff-add": ("sum", "image"),
    "if+isff-concat": ("deep", "shallow", "image"),
}
PFF_MODES, FUSIONS = get_args(PFFMode), get_args(Fusion)


def _activation(kind: Activation, channels: int) -> nn.Module:
    return nn.PReLU(channels) if kind == "prelu" else nn.ReLU(inplace=True)


class NormAct(nn.Sequential):
    """BN + PReLU (or ReLU) on a feature tensor (Fig. 2, after every module and fusion)."""

    def __init__(self, channels: int, activation: Activation = "prelu"):
        super().__init__(nn.BatchNorm2d(channels, eps=BN_EPS), _activation(activation, channels))


class FactorizedConv(nn.Module):
    """A (dilated, optionally strided) 3x3 convolution factorized into 3x1 -> non-linearity -> 1x3 (Sec. III-A-2)."""

    def __init__(self, in_ch: int, out_ch: int, dilation: int = 1, stride: int = 1, activation: Activation = "prelu"):
        super().__init__()
        d = dilation
        self.conv3x1 = nn.Conv2d(in_ch, out_ch, (3, 1), (stride, 1), (d, 0), dilation=(d, 1), bias=False)
        self.act = _activation(activation, out_ch)
        self.conv1x3 = nn.Conv2d(out_ch, out_ch, (1, 3), (1, stride), (0, d), dilation=(1, d), bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv1x3(self.act(self.conv3x1(x)))


def _conv3x3(in_ch: int, out_ch: int, dilation: int, stride: int, factorized: bool, activation: Activation) -> nn.Module:
    if factorized:
        return FactorizedConv(in_ch, out_ch, dilation, stride, activation)
    return nn.Conv2d(in_ch, out_ch, 3, stride, dilation, dilation=dilation, bias=False)


class FPLModule(nn.Module):
    """FPL module (Sec. III-A-2, Fig. 1-2, Table I): 1x1 reduction to out/b, a symmetric 3x3 (pyramid stage 1),
    b factorized dilated branches (stage 2), pairwise feature fusion, concatenation, residual, BN + PReLU.

    ``factorization``: "composite" (paper: stage 1 symmetric, stage 2 factorized), "none" or "all" (Table X).
    ``pff``: which pairs are added against gridding -- "adjacent" (branch k + branch k-1: the only reading
    that fills positions the dilated kernels skip), "local" (branch k + the stage-1 output) or "none"
    (plain concatenation). The residual sum is ours: the paper names none.
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        stride: int = 1,
        dilations: tuple[Dilation, ...] = DILATIONS,
        factorization: Factorization = "composite",
        pff: PFFMode = "adjacent",
        activation: Activation = "prelu",
    ):
        super().__init__()
        b = len(dilations)
        if out_ch % b:
            raise ValueError(f"FPL module output channels ({out_ch}) must be divisible by the number of branches ({b})")
        c = out_ch // b
        self.pff = pff
        self.reduce = nn.Conv2d(in_ch, c, 1, bias=False)
        # The stride sits on the 3x3 so that the 1x1 reduction sees every input pixel.
        self.local = _conv3x3(c, c, 1, stride, factorization == "all", activation)
        self.branches = nn.ModuleList(_conv3x3(c, c, d, 1, factorization != "none", activation) for d in dilations)
        self.residual = stride == 1 and in_ch == out_ch
        self.norm_act = NormAct(out_ch, activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        local = self.local(self.reduce(x))
        outs = [branch(local) for branch in self.branches]
        if self.pff == "adjacent":
            outs = [outs[0]] + [outs[k] + outs[k - 1] for k in range(1, len(outs))]
        elif self.pff == "local":
            outs = [o + local for o in outs]
        out = torch.cat(outs, 1)
        if self.residual:
            out = out + x
        return self.norm_act(out)


class FPLDownsampler(FPLModule):
    """FPL downsampler (Fig. 2 centre): the FPL module with a stride-2 pyramid stage 1 and no residual."""

    def __init__(self, in_ch: int, out_ch: int, **options):
        super().__init__(in_ch, out_ch, stride=2, **options)


class InitialModule(nn.Module):
    """Initial module (Sec. III-A-1, Fig. 2 left, Table II layers 1-4): stride-2 3x3 conv, two 3x3 convs at 1/2
    resolution (delayed downsampling; "hasty" leaves them out), concatenated with the 1/2-size image."""

    def __init__(self, channels: int = 32, downsampling: Downsampling = "delayed", activation: Activation = "prelu"):
        super().__init__()
        act = nn.PReLU if activation == "prelu" else nn.ReLU
        self.downsample = ConvBNAct(3, channels, 3, stride=2, act=act, bn_eps=BN_EPS)
        n_convs = 2 if downsampling == "delayed" else 0
        self.convs = nn.Sequential(*[ConvBNAct(channels, channels, 3, act=act, bn_eps=BN_EPS) for _ in range(n_convs)])
        self.out_channels = channels + 3
        self.norm_act = NormAct(self.out_channels, activation)

    def forward(self, x: torch.Tensor, image_half: torch.Tensor) -> torch.Tensor:
        return self.norm_act(torch.cat([self.convs(self.downsample(x)), image_half], 1))


class FIRUnit(nn.Module):
    """Feature-Image Reinforcement unit (Sec. III-A-3, Fig. 3): cat(deep + shallow, deep, image); no parameters.

    The other ``mode`` values are the fusion baselines of Table VIII: image fusion ("if"), intra-stage
    feature fusion by addition or concatenation ("isff-add", "isff-concat") and their combinations with "if".
    """

    def __init__(self, mode: Fusion = "fir"):
        super().__init__()
        self.mode = mode
        self.parts = FUSION_PARTS[mode]

    def out_channels(self, channels: int) -> int:
        return sum(3 if part == "image" else channels for part in self.parts)

    def forward(self, deep: torch.Tensor, shallow: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        tensors = {"deep": deep, "shallow": shallow, "image": image}
        outs = [deep + shallow if part == "sum" else tensors[part] for part in self.parts]
        return outs[0] if len(outs) == 1 else torch.cat(outs, 1)

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}"


def _transposed(in_ch: int, out_ch: int, kernel_size: int) -> nn.ConvTranspose2d:
    # A 1x1 kernel would leave every other output pixel empty: the decoder kernels of Table II are 2 or 3.
    if kernel_size < 2:
        raise ValueError(f"deconvolution kernel size must be >= 2, got {kernel_size}")
    return transposed_upsampling(in_ch, out_ch, kernel_size)


class Upsampler(nn.Module):
    """Upsampling block 'U' (Fig. 4): stride-2 deconvolution + BN + PReLU."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int = 3, activation: Activation = "prelu"):
        super().__init__()
        self.deconv = _transposed(in_ch, out_ch, kernel_size)
        self.norm_act = NormAct(out_ch, activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm_act(self.deconv(x))


def _module_factory(module: ModuleKind, dilations, factorization: Factorization, pff: PFFMode, activation: Activation, esp_downsampler: bool):
    """(regular block, downsampler) constructors ``(in_ch, out_ch) -> nn.Module`` for FPL or ESP modules (Table VI)."""
    opts = dict(dilations=tuple(dilations), factorization=factorization, pff=pff, activation=activation)

    def fpl_block(i: int, o: int) -> nn.Module:
        return FPLModule(i, o, **opts)

    def fpl_down(i: int, o: int) -> nn.Module:
        return FPLDownsampler(i, o, **opts)

    if module == "fpl":
        return fpl_block, fpl_down
    if activation != "prelu":
        raise ValueError("activation='relu' is only available with FPL modules (ESP modules are defined with PReLU)")
    return ESPBlock, (ESPDownsampler if esp_downsampler else fpl_down)


class FPLNetEncoder(nn.Module):
    """FPLNet encoder (Fig. 4, Table II layers 1-20): initial module, FPL downsampler + n2 FPL modules at 1/4,
    FIR unit, FPL downsampler + n3 FPL modules at 1/8, FIR unit; each fusion followed by BN + PReLU."""

    def __init__(self, block, down, downsampling: Downsampling = "delayed", fusion: Fusion = "fir", stage2_modules: Count = 4,
                 stage3_modules: Count = 8, activation: Activation = "prelu"):
        """``block`` / ``down``: constructors ``(in_ch, out_ch) -> nn.Module`` of the regular module and the downsampler."""
        super().__init__()
        # ESPNet's image pyramid: the image average-pooled (3x3, stride 2) once per downsampling.
        self.image_pool = nn.AvgPool2d(3, stride=2, padding=1)
        self.initial = InitialModule(32, downsampling, activation)
        self.down2 = down(self.initial.out_channels, 64)
        self.stage2 = nn.Sequential(*[block(64, 64) for _ in range(stage2_modules)])
        self.fuse2 = FIRUnit(fusion)
        c2 = self.fuse2.out_channels(64)
        self.norm2 = NormAct(c2, activation)
        self.down3 = down(c2, 128)
        self.stage3 = nn.Sequential(*[block(128, 128) for _ in range(stage3_modules)])
        self.fuse3 = FIRUnit(fusion)
        self.out_channels = self.fuse3.out_channels(128)
        self.norm3 = NormAct(self.out_channels, activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        img2 = self.image_pool(x)
        img4 = self.image_pool(img2)
        img8 = self.image_pool(img4)
        shallow = self.down2(self.initial(x, img2))
        x = self.norm2(self.fuse2(self.stage2(shallow), shallow, img4))
        shallow = self.down3(x)
        return self.norm3(self.fuse3(self.stage3(shallow), shallow, img8))


class FPLNetDecoder(nn.Module):
    """FPLNet's sequential asymmetric decoder (Table II layers 21-28): 1x1 projection to 64, upsampler,
    2 FPL, upsampler to 16, 2 FPL, deconvolution projection to the classes."""

    def __init__(self, in_ch: int, num_classes: int, block, kernels: tuple[int, int, int] = (3, 3, 2), activation: Activation = "prelu"):
        super().__init__()
        k1, k2, k3 = kernels
        self.project = nn.Conv2d(in_ch, 64, 1, bias=False)
        self.up1 = Upsampler(64, 64, k1, activation)
        self.stage1 = nn.Sequential(block(64, 64), block(64, 64))
        self.up2 = Upsampler(64, 16, k2, activation)
        self.stage2 = nn.Sequential(block(16, 16), block(16, 16))
        self.classifier = _transposed(16, num_classes, k3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stage1(self.up1(self.project(x)))
        return self.classifier(self.stage2(self.up2(x)))


class FPLNet(SegmentationModel):
    """FPLNet: encoder + decoder, or the encoder alone with a 1x1 projection and 8x bilinear upsampling (Sec. III-B)."""

    size_divisor = 8
    class_layers = ("decoder.classifier", "head")

    def __init__(
        self,
        num_classes: int = 19,
        encoder_only: bool = False,
        module: ModuleKind = "fpl",
        downsampling: Downsampling = "delayed",
        fusion: Fusion = "fir",
        stage2_modules: Count = 4,
        stage3_modules: Count = 8,
        factorization: Factorization = "composite",
        activation: Activation = "prelu",
        dilations: tuple[Dilation, ...] = DILATIONS,
        pff: PFFMode = "adjacent",
        esp_downsampler: bool = True,
        decoder_kernels: tuple[Kernel, Kernel, Kernel] = (3, 3, 2),
    ):
        super().__init__()
        self.num_classes = num_classes
        self.encoder_only = encoder_only
        block, down = _module_factory(module, dilations, factorization, pff, activation, esp_downsampler)
        self.encoder = FPLNetEncoder(block, down, downsampling, fusion, stage2_modules, stage3_modules, activation)
        c = self.encoder.out_channels
        if encoder_only:
            self.head = nn.Conv2d(c, num_classes, 1, bias=False)
            self.decoder = None
        else:
            self.head = None
            self.decoder = FPLNetDecoder(c, num_classes, block, tuple(decoder_kernels), activation)

    def segment(self, x: torch.Tensor) -> torch.Tensor:
        features = self.encoder(x)
        if self.decoder is not None:
            return self.decoder(features)
        return resize(self.head(features), x.shape[-2:])


class ESPNetFPL(ESPNetC):
    """ESPNet-C with its ESP modules replaced by FPL modules (Table VI, "ESPNet-FPL"); everything else as ESPNet-C."""

    def __init__(self, num_classes: int = 19, p: Count = 2, q: Count = 8, fpl_downsamplers: bool = True,
                 dilations: tuple[Dilation, ...] = DILATIONS, factorization: Factorization = "composite", pff: PFFMode = "adjacent"):
        super().__init__(num_classes, p, q)
        opts = dict(dilations=tuple(dilations), factorization=factorization, pff=pff)
        if fpl_downsamplers:
            self.level2_0 = FPLDownsampler(16 + 3, 64, **opts)
            self.level3_0 = FPLDownsampler(128 + 3, 128, **opts)
        self.level2 = nn.ModuleList([FPLModule(64, 64, **opts) for _ in range(p)])
        self.level3 = nn.ModuleList([FPLModule(128, 128, **opts) for _ in range(q)])


register_variants(PAPER, {
    "fplnet": Variant(FPLNet, {}, 499_611, "paper Table IV: 0.49 M (< 0.5 M)",
                      "FPLNet: FPL-module encoder with FIR units and a sequential asymmetric decoder."),
    "fplnet-encoder": Variant(FPLNet, {"encoder_only": True}, 419_652, "paper Tables VI-X: 0.42 M; Table VIII: 419,994",
                              "FPLNet encoder with a 1x1 projection to the classes, upsampled 8x bilinearly"),
    "fplnet-esp": Variant(FPLNet, {"encoder_only": True, "module": "esp"}, 385_883, "paper Table VI: 0.38 M",
                          "FPLNet encoder with ESP modules in place of FPL modules (Table VI, encoder only)"),
    "espnet-fpl": Variant(ESPNetFPL, {}, 380_722, "paper Table VI: 0.38 M",
                          "ESPNet-C with FPL modules in place of ESP modules (Table VI, encoder only, 8x bilinear upsampling)."),
})
