"""ESSNet family and WSPD-Net: layer structure, and fidelity to the thesis's Tables 3.2, 3.4, 3.5, 4.1 and section 4.3.

Parameter counts and MACs are measured with rtseg.efficiency on models built on the meta device
(shapes only, no arithmetic), which gives the same counts as real tensors (checked below) in a
fraction of the time. The thesis's "GFLOPs" are multiply-accumulates (see the delta tests), so
they are compared with our MACs.
"""
import itertools

import pytest
import torch
import torch.nn as nn

import rtseg
from rtseg.efficiency import count_flops, count_parameters
from rtseg.models.blocks import ChannelShuffle
from rtseg.models.erfnet import NonBottleneck1D
from rtseg.models.essnet import ConvModule, DWSDil, ESSNet, PyramidPoolingModule, TransposedUpsampler, Upsampling1x1Block

SIZE = (512, 1024)  # the thesis's 1024x512 input (H, W)
TOLERANCE = 0.15  # absolute figures
RATIO_TOLERANCE = 0.05  # ratios between the variants of one table

# Thesis parameter counts. Table 3.2's ESSNetB-D row (683,568) contradicts its own grouped rows
# (D - DG2 would have to be 2 x (DG2 - DG4) = 151,552, it is 288,000) and the text's "0.55 million";
# the text's figure is used (docs/fidelity.md).
THESIS_PARAMS = {
    "3.2": {
        "essnet-b-d": 550_000,
        "essnet-b-dg2": 395_568,
        "essnet-b-dg4": 319_792,
        "essnet-b-dg8": 281_904,
        "essnet-b-dg2s": 395_568,
        "essnet-b-dg4s": 319_792,
        "essnet-b-dg8s": 281_904,
    },
    "3.4": {
        "essnet-a-d": 1_291_648,
        "essnet-a-dg2": 1_238_960,
        "essnet-a-dg4": 1_202_096,
        "essnet-a-dg8": 1_183_664,
        "essnet-a-dg2s": 1_238_960,
        "essnet-a-dg4s": 1_202_096,
        "essnet-a-dg8s": 1_183_664,
    },
    "3.5": {"essnet-d": 431_312, "essnet-dg2": 279_760, "essnet-dg4": 203_984},
    "4.3": {"wspdnet": 670_000},
}
THESIS_GFLOPS = {
    "3.2": {
        "essnet-b-d": 10.597,
        "essnet-b-dg2": 8.852,
        "essnet-b-dg4": 7.980,
        "essnet-b-dg8": 7.543,
        "essnet-b-dg2s": 8.852,
        "essnet-b-dg4s": 7.980,
        "essnet-b-dg8s": 7.543,
    },
    "3.4": {
        "essnet-a-d": 19.025,
        "essnet-a-dg2": 18.998,
        "essnet-a-dg4": 18.595,
        "essnet-a-dg8": 18.394,
        "essnet-a-dg2s": 18.998,
        "essnet-a-dg4s": 18.595,
        "essnet-a-dg8s": 18.394,
    },
    "4.1": {"essnet-d-trans4x": 5.31, "essnet-d-trans8x": 4.89, "essnet-d-nodec": 4.70},
}
# Table 3.5's GFLOPs are not compared within 15 % with our count: the thesis counts transposed
# convolutions per output pixel, which the ESSNet rows' 1x1 upsampling blocks make matter more than in
# Tables 3.2 / 3.4 (ours 7.09 / 5.34 / 4.47 G); they are checked exactly under that convention
# (test_gflops_are_a_constant_offset_under_the_per_output_pixel_convention).
# Table 4.1's "ESSNet-enc-UPS (proposed)" row (7.41) is checked separately: test_table_4_1_ups_row.
THESIS_ERFNET = {"params": 2_038_448, "gflops": 27.705}  # baseline rows of Tables 3.2 and 3.5


_cache: dict[str, tuple[int, int]] = {}


def counts(name: str, **options) -> tuple[int, int]:
    """(parameters, MACs at 1024x512) of a registered model, built on the meta device."""
    key = name + repr(sorted(options.items()))
    if key not in _cache:
        with torch.device("meta"):
            model = rtseg.create_model(name, **options)
        _cache[key] = (count_parameters(model), count_flops(model, SIZE)["macs"])
    return _cache[key]


def rel(ours: float, theirs: float) -> float:
    return ours / theirs - 1.0


def test_meta_device_counts_equal_real_counts():
    model = rtseg.create_model("essnet-b-dg2s")
    with torch.device("meta"):
        meta = rtseg.create_model("essnet-b-dg2s")
    assert count_parameters(meta) == count_parameters(model)
    assert count_flops(meta, (64, 128)) == count_flops(model, (64, 128))


# --- fidelity: absolute figures within 15 % ----------------------------------------------------------


@pytest.mark.parametrize("table,name", [(t, n) for t, rows in THESIS_PARAMS.items() for n in rows])
def test_parameters_match_thesis(table, name):
    ours = counts(name)[0]
    theirs = THESIS_PARAMS[table][name]
    assert abs(rel(ours, theirs)) <= TOLERANCE, f"{name}: ours {ours:,} vs Table {table} {theirs:,} ({rel(ours, theirs):+.1%})"


@pytest.mark.parametrize("table,name", [(t, n) for t, rows in THESIS_GFLOPS.items() for n in rows])
def test_macs_match_thesis_gflops(table, name):
    ours = counts(name)[1] / 1e9
    theirs = THESIS_GFLOPS[table][name]
    assert abs(rel(ours, theirs)) <= TOLERANCE, f"{name}: ours {ours:.3f} G vs Table {table} {theirs} G ({rel(ours, theirs):+.1%})"


def test_erfnet_baseline_row():
    params, macs = counts("erfnet")
    assert abs(rel(params, THESIS_ERFNET["params"])) <= TOLERANCE
    assert abs(rel(macs / 1e9, THESIS_ERFNET["gflops"])) <= TOLERANCE


@pytest.mark.parametrize(
    "table,figure,index", [(t, "params", 0) for t in ("3.2", "3.4")] + [(t, "gflops", 1) for t in ("3.2", "3.4", "4.1")]
)
def test_ratios_between_variants_match_thesis(table, figure, index):
    rows = (THESIS_PARAMS if figure == "params" else THESIS_GFLOPS)[table]
    bad = []
    for a, b in itertools.combinations(rows, 2):
        ours = counts(a)[index] / counts(b)[index]
        theirs = rows[a] / rows[b]
        if abs(rel(ours, theirs)) > RATIO_TOLERANCE:
            bad.append(f"{a}/{b}: ours {ours:.4f} vs {theirs:.4f} ({rel(ours, theirs):+.1%})")
    assert not bad, f"Table {table} {figure} ratios off by more than 5%: " + "; ".join(bad)


# --- fidelity: the thesis's differences between rows, reproduced exactly ------------------------------
# What distinguishes the rows of one table (grouping the pointwise convolutions, non-bottleneck-1D
# versus conv-module layers) is reproduced to the parameter and to the thesis's last printed digit
# of GFLOPs (MACs); only the part all rows share (downsamplers and ERFNet decoder) is counted
# differently by the thesis (docs/fidelity.md).

PARAM_DELTAS = [  # (model a, model b, thesis a - b)
    ("essnet-b-dg2", "essnet-b-dg4", 395_568 - 319_792),
    ("essnet-b-dg4", "essnet-b-dg8", 319_792 - 281_904),
    ("essnet-a-dg2", "essnet-a-dg4", 1_238_960 - 1_202_096),
    ("essnet-a-dg4", "essnet-a-dg8", 1_202_096 - 1_183_664),
    ("essnet-a-dg2", "essnet-b-dg2", 1_238_960 - 395_568),
    ("essnet-d", "essnet-dg2", 431_312 - 279_760),
    ("essnet-dg2", "essnet-dg4", 279_760 - 203_984),
    ("erfnet", "essnet-b-dg2", 2_038_448 - 395_568),
]
GFLOP_DELTAS = [
    ("essnet-b-d", "essnet-b-dg2", 10.597 - 8.852),
    ("essnet-b-dg2", "essnet-b-dg4", 8.852 - 7.980),
    ("essnet-b-dg4", "essnet-b-dg8", 7.980 - 7.543),
    ("essnet-a-dg2", "essnet-a-dg4", 18.998 - 18.595),
    ("essnet-a-dg4", "essnet-a-dg8", 18.595 - 18.394),
    ("essnet-a-dg2", "essnet-b-dg2", 18.998 - 8.852),
    ("essnet-d", "essnet-dg2", 5.773 - 4.029),
    ("essnet-dg2", "essnet-dg4", 4.029 - 3.156),
    ("erfnet", "essnet-b-d", 27.705 - 10.597),
]

# Every row whose figures are consistent with its table (the D rows of Tables 3.2 / 3.4 are not, see
# below) and the ERFNet baseline: thesis parameters and GFLOPs.
CONSISTENT_ROWS = {
    "erfnet": (2_038_448, 27.705),
    "essnet-b-dg2": (395_568, 8.852),
    "essnet-b-dg4": (319_792, 7.980),
    "essnet-b-dg8": (281_904, 7.543),
    "essnet-a-dg2": (1_238_960, 18.998),
    "essnet-a-dg4": (1_202_096, 18.595),
    "essnet-a-dg8": (1_183_664, 18.394),
    "essnet-d": (431_312, 5.773),
    "essnet-dg2": (279_760, 4.029),
    "essnet-dg4": (203_984, 3.156),
}
SHARED_PARAM_OFFSET = 25_743  # ours minus the thesis's on the parts every row shares (downsamplers, ERFNet decoder)
SHARED_GFLOP_OFFSET = 2.095  # the same, in G MACs with transposed convolutions counted per output pixel


@pytest.mark.parametrize("a,b,delta", PARAM_DELTAS)
def test_parameter_differences_between_rows_are_exact(a, b, delta):
    assert counts(a)[0] - counts(b)[0] == delta


@pytest.mark.parametrize("a,b,delta", GFLOP_DELTAS)
def test_gflop_differences_between_rows_match_to_the_printed_digit(a, b, delta):
    # each thesis figure is rounded to 0.001, so a difference of two is good to 0.001
    assert abs((counts(a)[1] - counts(b)[1]) / 1e9 - delta) <= 0.0011


@pytest.mark.parametrize("name", CONSISTENT_ROWS)
def test_parameters_are_the_thesis_plus_one_constant_offset(name):
    # One offset for ERFNet, the grouped rows of Tables 3.2 / 3.4 and all three rows of Table 3.5: the
    # ESSNet rows pin its decoder to one non-bottleneck-1D + one conv-module per stage ("mixed").
    assert counts(name)[0] - CONSISTENT_ROWS[name][0] == SHARED_PARAM_OFFSET


@pytest.mark.parametrize("name", CONSISTENT_ROWS)
def test_gflops_are_a_constant_offset_under_the_per_output_pixel_convention(name):
    # thop-style: a transposed convolution costs (its taps x input channels) per *output* element.
    with torch.device("meta"):
        model = rtseg.create_model(name).eval()
    per_output = counts(name)[1] + _transposed_macs_per_output(model, SIZE) - _transposed_macs_per_input(model, SIZE)
    assert abs(per_output / 1e9 - CONSISTENT_ROWS[name][1] - SHARED_GFLOP_OFFSET) <= 0.0015


def test_the_two_conv_module_decoder_reading_misses_table_3_5():
    # the former default: both decoder layers of each stage conv-modules; 42,080 parameters short of every row
    for name in ("essnet-d", "essnet-dg2", "essnet-dg4"):
        params = counts(name, decoder_layers="conv-module")[0]
        assert CONSISTENT_ROWS[name][0] + SHARED_PARAM_OFFSET - params == 42_080


def test_thesis_gflops_are_multiply_accumulates():
    # Grouping the pointwise convolutions of ESSNetB by 2 removes half of their multiply-accumulates;
    # counted as FLOPs (2 per MAC) the thesis's difference would be twice as large.
    saved_macs = (counts("essnet-b-d")[1] - counts("essnet-b-dg2")[1]) / 1e9
    thesis = 10.597 - 8.852
    assert abs(saved_macs - thesis) < 0.002
    assert abs(2 * saved_macs - thesis) > 1.0


def test_table_3_2_d_row_is_inconsistent_and_the_text_figure_is_not():
    dg2, dg4 = 395_568, 319_792
    implied_d = dg2 + 2 * (dg2 - dg4)  # the pointwise weights halve with each doubling of the groups
    assert 683_568 - implied_d > 100_000  # Table 3.2's D row
    assert abs(implied_d / 550_000 - 1) < 0.01  # the text: "0.55 million parameters"


def _transposed_macs_per_output(model: nn.Module, size) -> int:
    """MACs of the transposed convolutions counted per output pixel (all k x k taps), as thop-style counters do."""
    total = 0

    def hook(module, inputs, output):
        nonlocal total
        kh, kw = module.kernel_size
        total += output.numel() * module.in_channels // module.groups * kh * kw

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.ConvTranspose2d)]
    with torch.inference_mode():
        model(torch.zeros(1, 3, *size, device=next(model.parameters()).device))
    for h in handles:
        h.remove()
    return total


def _transposed_macs_per_input(model: nn.Module, size) -> int:
    """MACs of the transposed convolutions as torch's flop counter counts them: per input pixel."""
    total = 0

    def hook(module, inputs, output):
        nonlocal total
        kh, kw = module.kernel_size
        total += inputs[0].numel() * module.out_channels // module.groups * kh * kw

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.ConvTranspose2d)]
    with torch.inference_mode():
        model(torch.zeros(1, 3, *size, device=next(model.parameters()).device))
    for h in handles:
        h.remove()
    return total


def test_table_4_1_ups_row():
    # "Optimizing only the upsampling block in ESSNetB-D decoder results in 7.4 GFlops": our
    # essnet-d-ups. The thesis saves 10.597 - 7.41 = 3.19 G by the swap of the two 3x3
    # deconvolutions for 1x1 ones; counted per input pixel (torch, our convention) that swap saves
    # only 0.81 G, counted per output pixel (thop-style) it saves 3.22 G. The row is therefore the one
    # figure we cannot bring within 15 % (ours 8.69 G, +17 %); its saving is checked instead.
    with torch.device("meta"):
        b_d, ups = rtseg.create_model("essnet-b-d").eval(), rtseg.create_model("essnet-d-ups").eval()
    ours_input_counted = (counts("essnet-b-d")[1] - counts("essnet-d-ups")[1]) / 1e9
    ours_output_counted = (_transposed_macs_per_output(b_d, SIZE) - _transposed_macs_per_output(ups, SIZE)) / 1e9
    thesis = 10.597 - 7.41
    assert abs(rel(ours_output_counted, thesis)) < 0.05
    assert ours_input_counted < 0.5 * thesis
    assert 0.15 < rel(counts("essnet-d-ups")[1] / 1e9, 7.41) < 0.20


# --- layers -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("groups", [1, 2, 4, 8])
def test_conv_module_weights_follow_table_3_7(groups):
    c = 64
    layer = ConvModule(c, dilation=4, groups=groups)
    depthwise = sum(m.weight.numel() for m in (layer.dw1, layer.dw2))
    pointwise = sum(m.weight.numel() for m in (layer.pw1, layer.pw2))
    # Table 3.7: depthwise-separable k^2 c + c c'; grouping divides the pointwise part by g
    assert depthwise == 2 * 9 * c
    assert pointwise == 2 * c * c // groups
    assert layer.dw2.dilation == (4, 4) and layer.dw1.dilation == (1, 1)
    assert layer.pw1.groups == layer.pw2.groups == groups


def test_dgcs_shuffles_after_each_grouped_pointwise_and_dgc_does_not():
    dgcs, dgc = ConvModule(32, groups=4, shuffle=True), ConvModule(32, groups=4)
    assert isinstance(dgcs.shuffle1, ChannelShuffle) and isinstance(dgcs.shuffle2, ChannelShuffle)
    assert dgcs.shuffle1.groups == 4
    assert isinstance(dgc.shuffle1, nn.Identity) and isinstance(dgc.shuffle2, nn.Identity)
    # same weights, different function: the shuffle really mixes the groups
    dgc.load_state_dict(dgcs.state_dict())
    x = torch.randn(1, 32, 8, 8)
    dgc.eval(), dgcs.eval()
    assert not torch.allclose(dgc(x), dgcs(x))


def test_conv_module_is_residual():
    layer = ConvModule(16).eval()
    # a zero residual branch (BN at its initial running statistics passes zeros through)
    nn.init.zeros_(layer.pw2.weight)
    nn.init.zeros_(layer.pw2.bias)
    x = torch.rand(1, 16, 8, 8)  # non-negative: the final ReLU keeps the identity path unchanged
    assert torch.allclose(layer(x), x)


def _layer_kinds(model: ESSNet) -> list[str]:
    return [type(m).__name__ for m in model.encoder.layers]


def test_essnetb_encoder_follows_table_3_1():
    model = rtseg.create_model("essnet-b-dg2")
    kinds = _layer_kinds(model)
    assert kinds == ["DownsamplerBlock"] + ["ConvModule"] * 5 + ["DownsamplerBlock"] + ["ConvModule"] * 8
    dilations = [m.dw2.dilation[0] for m in model.encoder.layers[7:]]
    assert dilations == [2, 4, 8, 16, 2, 4, 8, 16]
    assert [type(m).__name__ for m in model.decoder.layers] == ["UpsamplerBlock"] + ["NonBottleneck1D"] * 2 + ["UpsamplerBlock"] + ["NonBottleneck1D"] * 2


def test_essneta_encoder_follows_table_3_3():
    model = rtseg.create_model("essnet-a-dg2")
    kinds = _layer_kinds(model)
    assert kinds == (
        ["DownsamplerBlock"] + ["NonBottleneck1D"] * 3 + ["ConvModule"] * 2 + ["DownsamplerBlock"] + ["NonBottleneck1D"] * 4 + ["ConvModule"] * 4
    )
    assert all(m.conv3x1_1.in_channels == 64 for m in model.encoder.layers[1:4])  # layers 3-5 at 64 channels
    assert [m.conv3x1_2.dilation[0] for m in model.encoder.layers[7:11]] == [2, 4, 8, 16]


def test_essnet_decoder_uses_1x1_upsampling_and_one_conv_module_per_stage():
    model = rtseg.create_model("essnet-dg4")
    kinds = [type(m).__name__ for m in model.decoder.layers]
    assert kinds == ["Upsampling1x1Block", "NonBottleneck1D", "ConvModule"] * 2
    former = rtseg.create_model("essnet-dg4", decoder_layers="conv-module")
    assert [type(m).__name__ for m in former.decoder.layers] == ["Upsampling1x1Block", "ConvModule", "ConvModule"] * 2
    assert all(m.conv.kernel_size == (1, 1) for m in model.decoder.layers if isinstance(m, Upsampling1x1Block))
    # only the encoder is grouped (section 3.5.1): the decoder's conv-modules are D layers
    assert all(m.groups == 1 for m in model.decoder.layers if isinstance(m, ConvModule))
    assert all(m.groups == 4 for m in model.encoder.layers if isinstance(m, ConvModule))


def test_bilinear_1x1_upsampling_equals_1x1_convolution_after_upsampling():
    block = Upsampling1x1Block(8, 4, mode="bilinear").eval()
    x = torch.randn(1, 8, 6, 10)
    up = nn.functional.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
    expected = torch.relu(block.bn(block.conv(up)))
    assert torch.allclose(block(x), expected, atol=1e-5)


@pytest.mark.parametrize("stride,kernel", [(2, 1), (2, 3), (4, 3), (8, 3)])
def test_transposed_upsampler_scales_exactly(stride, kernel):
    block = TransposedUpsampler(8, 4, stride=stride, kernel_size=kernel)
    assert block(torch.randn(1, 8, 5, 7)).shape == (1, 4, 5 * stride, 7 * stride)


def test_pyramid_pooling_concatenates_to_256_channels():
    ppm = PyramidPoolingModule(128, 32)
    out = ppm(torch.randn(1, 128, 16, 32))
    assert out.shape == (1, 256, 16, 32)
    model = rtseg.create_model("essnet-ppm", groups=8)
    assert all(m.groups == 8 for m in model.encoder.layers if isinstance(m, ConvModule))


def test_encoder_trained_alone_loads_into_the_full_network():
    encoder_only = rtseg.create_model("essnet-dg2", decoder="nodec").state_dict()
    full = rtseg.create_model("essnet-dg2")
    missing, unexpected = full.load_state_dict(encoder_only, strict=False)
    assert unexpected == ["encoder.output_conv.weight", "encoder.output_conv.bias"]
    assert all(k.startswith("decoder.") for k in missing)


def test_wspdnet_follows_table_4_2():
    model = rtseg.create_model("wspdnet")
    kernels = [m.conv3x1_1.kernel_size[0] for m in model.encoder if isinstance(m, NonBottleneck1D)]
    assert kernels == [3, 3, 3, 5, 5]
    assert [m.conv3x1_1.kernel_size[0] for m in model.decoder if isinstance(m, NonBottleneck1D)] == [5, 5, 3, 3]
    dws = [m for m in model.encoder if isinstance(m, DWSDil)]
    # "18 layers" against ERFNet's 23, an encoder "five" layers shorter than ERFNet's 16, Table 4.2's "9-11"
    assert len(dws) == 3
    assert 1 + len(model.encoder) + len(model.decoder) + 1 == 18
    assert 1 + len(model.encoder) == 16 - 5
    assert [c.dilation[0] for c in dws[0].depthwise] == [2, 4, 8, 16]
    assert all(c.groups == c.in_channels == 128 for c in dws[0].depthwise)
    # the asymmetric pair works per channel and each dilated branch has its own 1x1 (docs/fidelity.md)
    assert dws[0].conv3x1.groups == dws[0].conv1x3.groups == 128
    assert len(dws[0].pointwise) == 4 and all(pw.kernel_size == (1, 1) and pw.groups == 1 for pw in dws[0].pointwise)


def test_wspdnet_readings_against_the_thesis_figures():
    # Only three layers fit the layer counts; with three, only the light DWS-Dil fits 0.67 M: a dense
    # 128-channel 3x1 / 1x3 pair alone (98,560 parameters) would put three layers 25 % over.
    assert abs(rel(counts("wspdnet")[0], 670_000)) < 0.05
    former = counts("wspdnet", dws_dil_layers=2, dws_dil_pair="dense", dws_dil_pointwise="shared")[0]
    assert former == 716_223 and abs(rel(former, 670_000)) < 0.07
    assert rel(counts("wspdnet", dws_dil_pair="dense", dws_dil_pointwise="shared")[0], 670_000) > 0.2
    with pytest.raises(ValueError, match="dws_dil_pair"):
        rtseg.create_model("wspdnet", dws_dil_pair="grouped")


def test_dws_dil_readings_are_residual_and_keep_the_shape():
    for pair, pointwise in (("depthwise", "per-branch"), ("dense", "shared")):
        layer = DWSDil(16, pair=pair, pointwise=pointwise).eval()
        x = torch.randn(2, 16, 12, 20)
        assert layer(x).shape == x.shape
        nn.init.zeros_(layer.bn2.weight)  # a zero residual branch leaves relu(x)
        nn.init.zeros_(layer.bn2.bias)
        assert torch.allclose(layer(x), torch.relu(x))


def test_gradual_grouping_needs_a_grouped_variant():
    with pytest.raises(ValueError, match="groups"):
        rtseg.create_model("essnet-b-d", gradual_grouping=True)


def test_unknown_decoder_is_rejected():
    with pytest.raises(ValueError, match="decoder must be one of"):
        rtseg.create_model("essnet-d", decoder="trans16x")
