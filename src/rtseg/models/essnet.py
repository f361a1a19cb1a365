"""ESSNet family and WSPD-Net (N. Vallurupalli, "On Designing Efficient Deep Neural Networks for Semantic
Segmentation", MS thesis, IIIT Hyderabad, 2022; chapters 3 and 4).

The networks build on ERFNet: its downsampler, non-bottleneck-1D layer and decoder are imported
from :mod:`rtseg.models.erfnet`, and module names follow ERFNet's so that encoders trained alone
(``decoder="nodec"``) load into the full networks. Every reading of the thesis that its text leaves
open is listed, with the parameter and FLOP counts that decided it, in ``docs/fidelity.md``.

- Conv-modules D / DGC / DGCS (section 3.2, Fig. 3.4): :class:`ConvModule`.
- ESSNetB (Table 3.1), ESSNetA (Table 3.3), ESSNet (section 3.5.2, Fig. 3.9): :class:`ESSNet`.
- Decoder variants of Table 4.1 and the pyramid-pooling variant of section 4.2: ``decoder=`` options.
- WSPD-Net with the DWS-Dil layer (section 4.3, Table 4.2): :class:`WSPDNet`.
- Gradual grouping (section 3.5): ``gradual_grouping=True`` and :mod:`rtseg.models.gradual_grouping`.
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F

from rtseg.models.gradual_grouping import GradualGroupedConv2d, GradualGroupingCallback, convert_state_dict
from rtseg.models.base import SegmentationModel
from rtseg.models.blocks import ChannelShuffle, LayerStackEncoder, resize, transposed_upsampling
from rtseg.models.export_ops import adaptive_avg_pool2d
from rtseg.models.erfnet import DownsamplerBlock, NonBottleneck1D, UpsamplerBlock
from rtseg.variants import Count, Dilation, Groups, Probability, Variant, register_variants

__all__ = [
    "ConvModule",
    "TransposedUpsampler",
    "Upsampling1x1Block",
    "PyramidPoolingModule",
    "ESSNetEncoder",
    "ESSNetDecoder",
    "ESSNet",
    "DWSDil",
    "WSPDNet",
]

PAPER = "ESSNet thesis (Vallurupalli, IIIT Hyderabad 2022, chapters 3-4)"
ENCODER_DILATIONS = (2, 4, 8, 16)
BN_EPS = 1e-3  # thesis section 3.4.1: BN epsilon 0.001, momentum 0.1
Decoder = Literal["deconv", "upsampling", "trans4x", "trans8x", "nodec", "ppm"]
DecoderLayers = Literal["non-bt-1d", "conv-module", "mixed"]
UpsamplingMode = Literal["transposed", "bilinear"]
EncoderLayout = Literal["a", "b"]
DWSDilPair = Literal["depthwise", "dense"]
DWSDilPointwise = Literal["per-branch", "shared"]


def _pointwise(channels: int, groups: int, gradual: bool) -> nn.Module:
    if gradual and groups > 1:
        return GradualGroupedConv2d(channels, channels, groups)
    return nn.Conv2d(channels, channels, 1, groups=groups, bias=True)


class ConvModule(nn.Module):
    """Conv-module D, DGC or DGCS (thesis section 3.2, Fig. 3.4, Table 3.7).

    ERFNet's non-bottleneck-1D with each 3x1 / 1x3 pair replaced by a depthwise-separable 3x3
    (depthwise 3x3, the second one dilated, then pointwise 1x1), keeping ERFNet's biases, BN and
    ReLU placement. ``groups > 1`` groups both pointwise convolutions (DGC); ``shuffle`` adds a
    channel shuffle right after each grouped pointwise convolution (DGCS).
    """

    def __init__(
        self,
        channels: int,
        dilation: int = 1,
        groups: Groups = 1,
        shuffle: bool = False,
        dropout: Probability = 0.0,
        gradual: bool = False,
    ):
        super().__init__()
        c, d = channels, dilation
        self.groups = groups
        self.dw1 = nn.Conv2d(c, c, 3, padding=1, groups=c, bias=True)
        self.pw1 = _pointwise(c, groups, gradual)
        self.shuffle1 = ChannelShuffle(groups) if shuffle and groups > 1 else nn.Identity()
        self.bn1 = nn.BatchNorm2d(c, eps=BN_EPS)
        self.dw2 = nn.Conv2d(c, c, 3, padding=d, dilation=d, groups=c, bias=True)
        self.pw2 = _pointwise(c, groups, gradual)
        self.shuffle2 = ChannelShuffle(groups) if shuffle and groups > 1 else nn.Identity()
        self.bn2 = nn.BatchNorm2d(c, eps=BN_EPS)
        self.dropout = nn.Dropout2d(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.dw1(x))
        out = F.relu(self.bn1(self.shuffle1(self.pw1(out))))
        out = F.relu(self.dw2(out))
        out = self.bn2(self.shuffle2(self.pw2(out)))
        if self.dropout.p != 0:
            out = self.dropout(out)
        return F.relu(out + x)


# The trans4x block of Table 4.1: ERFNet's upsampler (transposed conv -> BN -> ReLU) with stride 4.
TransposedUpsampler = UpsamplerBlock


class Upsampling1x1Block(nn.Module):
    """The 1x1 upsampling block of ESSNet (thesis section 3.5.2, Fig. 3.9): ERFNet's 3x3 deconvolution cut to 1x1.

    ``mode="transposed"`` (default) is the literal edit: a 1x1 stride-2 transposed convolution.
    ``mode="bilinear"`` is a 1x1 convolution followed by bilinear x2 upsampling: same parameters and
    MACs, but no zero-filled positions between the upsampled pixels.
    """

    def __init__(self, in_ch: int, out_ch: int, mode: UpsamplingMode = "transposed"):
        super().__init__()
        self.mode = mode
        if mode == "transposed":
            self.conv = transposed_upsampling(in_ch, out_ch, 1, bias=True)
        else:
            self.conv = nn.Conv2d(in_ch, out_ch, 1, bias=True)
        self.bn = nn.BatchNorm2d(out_ch, eps=BN_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        if self.mode == "bilinear":
            # 1x1 convolution and bilinear interpolation commute; convolving first costs a quarter.
            out = F.interpolate(out, scale_factor=2, mode="bilinear", align_corners=False)
        return F.relu(self.bn(out))


class PyramidPoolingModule(nn.Module):
    """Pyramid pooling on the encoder output (thesis section 4.2, Fig. 4.1).

    Average pooling to 1/8, 1/4, 1/2 and 1x the map size, a 1x1 convolution to ``branch_ch``
    (a quarter of the input) with BN and ReLU on each level, bilinear upsampling back, and the
    concatenation with the map itself (128 + 4 x 32 = 256 channels).
    """

    def __init__(self, in_ch: int = 128, branch_ch: int = 32, scales: tuple[int, ...] = (8, 4, 2, 1)):
        super().__init__()
        self.scales = scales
        self.branches = nn.ModuleList(
            nn.Sequential(nn.Conv2d(in_ch, branch_ch, 1, bias=False), nn.BatchNorm2d(branch_ch, eps=BN_EPS), nn.ReLU(inplace=True))
            for _ in scales
        )
        self.out_channels = in_ch + branch_ch * len(scales)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        outs = [x]
        for scale, branch in zip(self.scales, self.branches):
            # ceil(h / scale) (>= 1), written with non-negative operands: ONNX integer division truncates toward zero
            pooled = x if scale == 1 else adaptive_avg_pool2d(x, ((h + scale - 1) // scale, (w + scale - 1) // scale))
            y = branch(pooled)
            if scale != 1:
                y = resize(y, (h, w))
            outs.append(y)
        return torch.cat(outs, 1)


class ESSNetEncoder(LayerStackEncoder):
    """ESSNet encoder, layers 1-16 of Table 3.1 (layout ``b``: conv-modules throughout) or Table 3.3 (layout ``a``).

    Layout ``a`` reads Table 3.3's layers 3-7 as three non-bottleneck-1D layers followed by two
    conv-modules, all at 64 channels and 1/4 resolution (the table's "128 channels" and overlapping
    numbering are typos; the grouped parameter counts of Table 3.4 confirm this reading).
    ``with_head`` adds the 1x1 classifier used when the encoder is trained or run alone.
    """

    def __init__(
        self,
        num_classes: int,
        layout: EncoderLayout = "b",
        groups: Groups = 1,
        shuffle: bool = False,
        dropout: Probability = 0.3,
        gradual: bool = False,
        with_head: bool = False,
    ):
        super().__init__()

        def conv_module(c: int, d: int) -> ConvModule:
            return ConvModule(c, d, groups=groups, shuffle=shuffle, dropout=dropout, gradual=gradual)

        self.initial_block = DownsamplerBlock(3, 16)
        layers: list[nn.Module] = [DownsamplerBlock(16, 64)]
        if layout == "b":
            layers += [conv_module(64, 1) for _ in range(5)]
        else:
            layers += [NonBottleneck1D(64, dropout, 1) for _ in range(3)] + [conv_module(64, 1) for _ in range(2)]
        layers.append(DownsamplerBlock(64, 128))
        if layout == "b":
            for _ in range(2):
                layers += [conv_module(128, d) for d in ENCODER_DILATIONS]
        else:
            layers += [NonBottleneck1D(128, dropout, d) for d in ENCODER_DILATIONS]
            layers += [conv_module(128, d) for d in ENCODER_DILATIONS]
        self.layers = nn.ModuleList(layers)
        self.output_conv = nn.Conv2d(128, num_classes, 1, bias=True) if with_head else None


def _residual_pair(channels: int, kind: DecoderLayers) -> list[nn.Module]:
    """The two residual layers after each decoder upsampling block ("mixed" is ESSNet's: Table 3.5 counts)."""
    if kind == "non-bt-1d":
        return [NonBottleneck1D(channels, 0, 1), NonBottleneck1D(channels, 0, 1)]
    if kind == "conv-module":
        return [ConvModule(channels), ConvModule(channels)]
    return [NonBottleneck1D(channels, 0, 1), ConvModule(channels)]  # "mixed"


class ESSNetDecoder(nn.Module):
    """ESSNet decoders: the x2 / x2 / x2 decoder of Tables 3.1 and 3.3 and of ESSNet, and the variants of Table 4.1 and section 4.2.

    - ``deconv``: ERFNet's decoder (layers 17-23): 3x3 deconvolution, two residual layers, 3x3 deconvolution, two residual layers, 2x2 deconvolution to the classes.
    - ``upsampling``: the same with the 1x1 upsampling block of Fig. 3.9 in place of the 3x3 deconvolutions.
    - ``trans4x``: a x4 3x3 deconvolution to 16 channels, two residual layers, the final x2 deconvolution.
    - ``trans8x``: a single x8 3x3 deconvolution to the classes.
    - ``ppm``: pyramid pooling, then layers 20-23 of ESSNetB with the first deconvolution made x4 (section 4.2).

    ``layers`` picks the residual layers: ERFNet's non-bottleneck-1D, conv-module D, or one of each.
    """

    def __init__(self, num_classes: int, kind: Decoder = "deconv", layers: DecoderLayers = "non-bt-1d",
                 upsampling_mode: UpsamplingMode = "transposed"):
        super().__init__()
        self.ppm = PyramidPoolingModule(128, 32) if kind == "ppm" else None
        if kind == "deconv":
            blocks = [UpsamplerBlock(128, 64), *_residual_pair(64, layers), UpsamplerBlock(64, 16), *_residual_pair(16, layers)]
        elif kind == "upsampling":
            blocks = [
                Upsampling1x1Block(128, 64, upsampling_mode),
                *_residual_pair(64, layers),
                Upsampling1x1Block(64, 16, upsampling_mode),
                *_residual_pair(16, layers),
            ]
        elif kind == "trans4x":
            blocks = [TransposedUpsampler(128, 16, stride=4), *_residual_pair(16, layers)]
        elif kind == "trans8x":
            blocks = []
        else:  # "ppm"
            blocks = [TransposedUpsampler(self.ppm.out_channels, 16, stride=4), *_residual_pair(16, layers)]
        self.layers = nn.ModuleList(blocks)
        if kind == "trans8x":
            self.output_conv = transposed_upsampling(128, num_classes, 3, stride=8, bias=True)
        else:
            self.output_conv = transposed_upsampling(16, num_classes, 2, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.ppm is not None:
            x = self.ppm(x)
        for layer in self.layers:
            x = layer(x)
        return self.output_conv(x)


class ESSNet(SegmentationModel):
    """ESSNetA / ESSNetB / ESSNet: an ERFNet-shaped encoder-decoder built from conv-modules (thesis chapter 3).

    ``groups`` and ``shuffle`` configure the encoder's conv-modules (D: groups=1; DGC: groups=C;
    DGCS: also shuffle). ``gradual_grouping`` builds the encoder's grouped pointwise convolutions as
    :class:`~rtseg.models.gradual_grouping.GradualGroupedConv2d` for training (section 3.5);
    :func:`rtseg.models.gradual_grouping.convert` turns the trained network into the grouped one.
    ``decoder="nodec"`` is the encoder alone with its 1x1 classifier, upsampled x8 bilinearly.
    """

    size_divisor = 8
    class_layers = ("decoder.output_conv", "encoder.output_conv")

    def __init__(
        self,
        num_classes: int = 19,
        encoder: EncoderLayout = "b",
        groups: Groups = 1,
        shuffle: bool = False,
        decoder: Decoder = "deconv",
        decoder_layers: DecoderLayers = "non-bt-1d",
        upsampling_mode: UpsamplingMode = "transposed",
        dropout: Probability = 0.3,
        gradual_grouping: bool = False,
    ):
        super().__init__()
        if gradual_grouping and groups < 2:
            raise ValueError("gradual_grouping needs a grouped variant (groups >= 2): it moves dense pointwise convolutions to groups")
        self.num_classes = num_classes
        self.decoder_kind = decoder
        self.encoder = ESSNetEncoder(
            num_classes, encoder, groups=groups, shuffle=shuffle, dropout=dropout, gradual=gradual_grouping, with_head=decoder == "nodec"
        )
        self.decoder = None if decoder == "nodec" else ESSNetDecoder(num_classes, decoder, decoder_layers, upsampling_mode)

    def segment(self, x: torch.Tensor) -> torch.Tensor:
        if self.decoder is None:
            return resize(self.encoder(x), x.shape[-2:])
        return self.decoder(self.encoder.features(x))

    def training_callbacks(self, config: dict) -> list:
        """The trainer's hook for gradual grouping: alpha set before each epoch from ``config["gradual_grouping"]`` (section 3.5.1)."""
        return GradualGroupingCallback.for_model(self, config)

    def adapt_state_dict(self, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """A stage hand-over: dense pointwise weights of a gradual-grouping stage cut to this network's grouped blocks."""
        return convert_state_dict(state_dict, self)


class DWSDil(nn.Module):
    """DWS-Dil layer of WSPD-Net (thesis section 4.3, Fig. 4.2; Fig. 4.2 is missing, readings in docs/fidelity.md).

    A residual layer: an asymmetric 3x1 / 1x3 pair ("the first set of asymmetric convolutions"), then
    depthwise-separable convolutions with four depthwise 3x3 of dilation 2, 4, 8 and 16 in parallel.
    ``pair``: "depthwise" (default: the pair convolves each channel alone) or "dense" (ERFNet's first half).
    ``pointwise``: "per-branch" (default: each dilated depthwise conv has its own 1x1, the branches are
    summed) or "shared" (the depthwise outputs are summed before one 1x1). The defaults are the one reading
    that fits the thesis's 18 layers with three DWS-Dil layers and its 0.67 M parameters.
    """

    def __init__(
        self,
        channels: int,
        dropout: Probability = 0.0,
        dilations: tuple[Dilation, ...] = ENCODER_DILATIONS,
        pair: DWSDilPair = "depthwise",
        pointwise: DWSDilPointwise = "per-branch",
    ):
        super().__init__()
        c = channels
        pair_groups = c if pair == "depthwise" else 1
        self.conv3x1 = nn.Conv2d(c, c, (3, 1), padding=(1, 0), groups=pair_groups, bias=True)
        self.conv1x3 = nn.Conv2d(c, c, (1, 3), padding=(0, 1), groups=pair_groups, bias=True)
        self.bn1 = nn.BatchNorm2d(c, eps=BN_EPS)
        self.depthwise = nn.ModuleList(nn.Conv2d(c, c, 3, padding=d, dilation=d, groups=c, bias=True) for d in dilations)
        if pointwise == "shared":
            self.pointwise = nn.Conv2d(c, c, 1, bias=True)
        else:
            self.pointwise = nn.ModuleList(nn.Conv2d(c, c, 1, bias=True) for _ in dilations)
        self.bn2 = nn.BatchNorm2d(c, eps=BN_EPS)
        self.dropout = nn.Dropout2d(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.conv3x1(x))
        out = F.relu(self.bn1(self.conv1x3(out)))
        if isinstance(self.pointwise, nn.ModuleList):
            pyramid = self.pointwise[0](F.relu(self.depthwise[0](out)))
            for dw, pw in zip(self.depthwise[1:], self.pointwise[1:]):
                pyramid = pyramid + pw(F.relu(dw(out)))
            out = self.bn2(pyramid)
        else:
            pyramid = self.depthwise[0](out)
            for conv in self.depthwise[1:]:
                pyramid = pyramid + conv(out)
            out = self.bn2(self.pointwise(F.relu(pyramid)))
        if self.dropout.p != 0:
            out = self.dropout(out)
        return F.relu(out + x)


class WSPDNet(SegmentationModel):
    """WSPD-Net (thesis section 4.3, Table 4.2): shallow symmetric encoder-decoder with 3K / 5K non-bottleneck-1D layers and DWS-Dil."""

    size_divisor = 8
    class_layers = ("output_conv",)

    def __init__(
        self,
        num_classes: int = 19,
        dws_dil_layers: Count = 3,
        dropout: Probability = 0.3,
        dws_dil_pair: DWSDilPair = "depthwise",
        dws_dil_pointwise: DWSDilPointwise = "per-branch",
    ):
        super().__init__()
        if dws_dil_layers < 1:
            raise ValueError(f"dws_dil_layers must be at least 1, got {dws_dil_layers!r}")
        self.num_classes = num_classes
        self.initial_block = DownsamplerBlock(3, 16)
        encoder: list[nn.Module] = [NonBottleneck1D(16, dropout, 1, kernel_size=3) for _ in range(3)]
        encoder.append(DownsamplerBlock(16, 64))
        encoder += [NonBottleneck1D(64, dropout, 1, kernel_size=5) for _ in range(2)]
        encoder.append(DownsamplerBlock(64, 128))
        encoder += [DWSDil(128, dropout, pair=dws_dil_pair, pointwise=dws_dil_pointwise) for _ in range(dws_dil_layers)]
        self.encoder = nn.ModuleList(encoder)
        self.decoder = nn.ModuleList(
            [
                UpsamplerBlock(128, 64),
                NonBottleneck1D(64, 0, 1, kernel_size=5),
                NonBottleneck1D(64, 0, 1, kernel_size=5),
                UpsamplerBlock(64, 16),
                NonBottleneck1D(16, 0, 1, kernel_size=3),
                NonBottleneck1D(16, 0, 1, kernel_size=3),
            ]
        )
        self.output_conv = transposed_upsampling(16, num_classes, 2, bias=True)

    def segment(self, x: torch.Tensor) -> torch.Tensor:
        x = self.initial_block(x)
        for layer in self.encoder:
            x = layer(x)
        for layer in self.decoder:
            x = layer(x)
        return self.output_conv(x)


_OURS = "our count at 19 classes; thesis figure and tolerance in tests/test_essnet.py"


def _table_3_1_to_3_4(layout: str, table: str, params: dict[str, int]) -> dict[str, Variant]:
    """ESSNetA / ESSNetB with conv-modules D, DG2-8 and DG2-8S (a shuffle adds no parameters)."""
    rows = {}
    for suffix, groups in (("d", 1), ("dg2", 2), ("dg4", 4), ("dg8", 8)):
        for shuffle in (False, True) if groups > 1 else (False,):
            label = suffix + "s" * shuffle
            rows[f"essnet-{layout}-{label}"] = Variant(
                ESSNet, {"encoder": layout, "groups": groups, "shuffle": shuffle}, params[suffix], _OURS,
                f"ESSNet{layout.upper()}-{label.upper()} ({table}): conv-module {label.upper()} in the encoder, ERFNet decoder")
    return rows


_ESSNET_DESCRIPTION = ("ESSNet-{} (section 3.5.2, Table 3.5): conv-modules in the encoder, 1x1 upsampling and one non-bottleneck-1D "
                       "+ one conv-module per decoder stage (decoder_layers='conv-module' for two conv-modules)")
_TABLE_4_1 = "ESSNet-D decoder variant of Table 4.1: "
_TABLE_4_1_SOURCE = "our count at 19 classes; thesis GFLOPs and tolerance in tests/test_essnet.py"
register_variants(PAPER, {
    **_table_3_1_to_3_4("b", "Table 3.1 / 3.2", {"d": 572_863, "dg2": 421_311, "dg4": 345_535, "dg8": 307_647}),
    **_table_3_1_to_3_4("a", "Table 3.3 / 3.4", {"d": 1_338_431, "dg2": 1_264_703, "dg4": 1_227_839, "dg8": 1_209_407}),
    **{f"essnet-{suffix}": Variant(ESSNet, {"groups": groups, "decoder": "upsampling", "decoder_layers": "mixed"}, params, _OURS,
                                   _ESSNET_DESCRIPTION.format(suffix.upper()))
       for suffix, groups, params in (("d", 1, 457_055), ("dg2", 2, 305_503), ("dg4", 4, 229_727))},
    "essnet-d-ups": Variant(ESSNet, {"decoder": "upsampling", "decoder_layers": "non-bt-1d"}, 499_135, _TABLE_4_1_SOURCE,
                            _TABLE_4_1 + "ESSNetB-D with only its upsampling blocks replaced by the 1x1 upsampling block"),
    "essnet-d-trans4x": Variant(ESSNet, {"decoder": "trans4x", "decoder_layers": "conv-module"}, 404_287, _TABLE_4_1_SOURCE,
                                _TABLE_4_1 + "a x4 deconvolution, two conv-modules and the final x2 deconvolution"),
    "essnet-d-trans8x": Variant(ESSNet, {"decoder": "trans8x", "decoder_layers": "conv-module"}, 404_623, _TABLE_4_1_SOURCE,
                                _TABLE_4_1 + "a single x8 deconvolution to the classes"),
    "essnet-d-nodec": Variant(ESSNet, {"decoder": "nodec", "decoder_layers": "conv-module"}, 385_167, _TABLE_4_1_SOURCE,
                              _TABLE_4_1 + "no decoder: 1x1 classifier on the encoder output, bilinear x8"),
    "essnet-ppm": Variant(ESSNet, {"groups": 2, "decoder": "ppm"}, 292_351, "our count at 19 classes (the thesis gives no figure)",
                          "ESSNetB-DG2 encoder with pyramid pooling and the shortened decoder (section 4.2; groups=4 or 8 for the other two)"),
    "wspdnet": Variant(WSPDNet, {}, 692_927, "our count at 19 classes; thesis says 0.67 M (tests/test_essnet.py)",
                       "WSPD-Net (Table 4.2): non-bottleneck-1D 3K / 5K layers and three DWS-Dil layers (18 layers)"),
})
