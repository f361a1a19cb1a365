"""LiteSeg fidelity: parameter counts against the paper / official code, Table II operations, structure of DASPP and options."""
import pytest
import torch
import torch.nn as nn

import rtseg
from rtseg.efficiency import count_flops, count_parameters
from rtseg.models.backbones import create_backbone
from rtseg.models.liteseg import DASPP, LiteSegDecoder, table2_operations

# Paper Table III / official code, 19 classes. The paper's MobileNetV2 and ShuffleNet figures (4.38M, 3.51M)
# include the backbone's ImageNet classifier, which the segmentation network never runs.
PAPER_PARAMS = {"liteseg-darknet19": 20.55e6, "liteseg-mobilenetv2": 4.38e6, "liteseg-shufflenet": 3.51e6}
OFFICIAL_WITHOUT_CLASSIFIER = {"liteseg-darknet19": 20.55e6, "liteseg-mobilenetv2": 3.10e6, "liteseg-shufflenet": 1.97e6}
BACKBONE = {"liteseg-darknet19": "darknet19", "liteseg-mobilenetv2": "mobilenetv2", "liteseg-shufflenet": "shufflenet-g8"}
# Table II (GFLOPs at 1024 x 512): standard, depthwise-separable.
TABLE_II = {"liteseg-darknet19": (123.26, 103.09), "liteseg-mobilenetv2": (18.86, 4.9), "liteseg-shufflenet": (9.36, 2.75)}


def meta_model(name, **options):
    with torch.device("meta"):
        return rtseg.create_model(name, **options)


@pytest.mark.parametrize("name", sorted(OFFICIAL_WITHOUT_CLASSIFIER))
def test_parameters_within_one_percent_of_the_official_code(name):
    ours = count_parameters(meta_model(name))
    assert ours == pytest.approx(OFFICIAL_WITHOUT_CLASSIFIER[name], rel=0.01)
    with torch.device("meta"):
        classifier = count_parameters(create_backbone(BACKBONE[name], include_classifier=True)) - count_parameters(create_backbone(BACKBONE[name]))
    if name == "liteseg-darknet19":
        classifier = 0  # the official Darknet-19 has no classifier layer
    assert ours + classifier == pytest.approx(PAPER_PARAMS[name], rel=0.01)


def with_official_darknet_paddings(model):
    """The official Darknet-19 gives three 1x1 convs padding 1 and its dilated 3x3s padding 1; the maps grow
    by 2 pixels and shrink back (stage 6 ends at the same size). We keep sizes fixed; this re-creates theirs."""
    bb = model.backbone
    bb.stage5[2].conv.padding = bb.stage5[4].conv.padding = bb.stage6[2].conv.padding = (1, 1)
    for i in (1, 3, 5):
        bb.stage6[i].conv.padding = (1, 1)
    return model


@pytest.mark.parametrize("name", sorted(TABLE_II))
@pytest.mark.parametrize("conv", ["standard", "separable"])
def test_table_ii_operations(name, conv):
    model = meta_model(name, conv=conv)
    paper = TABLE_II[name][conv == "separable"]
    if name == "liteseg-darknet19":
        ours_own_padding = table2_operations(model) / 1e9
        ours = table2_operations(with_official_darknet_paddings(model)) / 1e9
        assert ours - ours_own_padding == pytest.approx(5.2, abs=0.3)
        assert ours == pytest.approx(paper, rel=0.002 if conv == "separable" else 0.015)
    elif (name, conv) == ("liteseg-shufflenet", "separable"):
        # Unexplained 6 % below the paper (the standard-conv figure matches); see docs/fidelity.md.
        assert table2_operations(model) / 1e9 == pytest.approx(paper, rel=0.07)
    else:
        assert table2_operations(model) / 1e9 == pytest.approx(paper, rel=0.005)


def test_table_ii_counts_neither_multiply_adds_nor_flops():
    model = meta_model("liteseg-mobilenetv2")
    counted = count_flops(model, (512, 1024))
    paper = TABLE_II["liteseg-mobilenetv2"][1] * 1e9
    assert abs(counted["macs"] - paper) / paper > 0.1 and abs(counted["flops"] - paper) / paper > 0.5
    assert table2_operations(model) == pytest.approx(paper, rel=0.005)


@pytest.mark.parametrize("name, output_stride, low_stage, low_reduce", [
    ("liteseg-darknet19", 16, "stage3", 32), ("liteseg-mobilenetv2", 32, "features.3", None), ("liteseg-shufflenet", 32, "stage2", 48),
])  # fmt: skip
def test_backbone_wiring_as_in_the_official_code(name, output_stride, low_stage, low_reduce):
    model = meta_model(name)
    assert model.size_divisor == output_stride and model.backbone.output_stride == output_stride
    assert model.low_stage == low_stage and model.backbone.stage_stride(low_stage) in (4, 8)
    reduce = model.decoder.reduce
    assert (reduce[0][1].out_channels if low_reduce else None) == low_reduce
    assert isinstance(model.context, DASPP) and isinstance(model.decoder, LiteSegDecoder)


def test_daspp_structure():
    daspp = DASPP(320, 96, conv="separable")
    assert [b.atrous[0].dilation[0] for b in daspp.branches] == [1, 3, 6, 9]
    assert [b.atrous[0].kernel_size[0] for b in daspp.branches] == [1, 3, 3, 3]
    # An extra 3x3 (dilation 1) after each atrous 3x3, none after the 1x1 branch.
    assert [b.refine is not None for b in daspp.branches] == [False, True, True, True]
    assert all(b.refine[0][0].dilation == (1, 1) for b in daspp.branches[1:])
    # Short residual: the projection sees the input (320) plus five 96-channel branches.
    assert daspp.project[0][0].in_channels == 320 + 5 * 96 and daspp.project[0][1].out_channels == 96
    out = daspp.eval()(torch.randn(1, 320, 5, 7))
    assert out.shape == (1, 96, 5, 7)


def convs(module):
    return [m for m in module.modules() if isinstance(m, nn.Conv2d)]


def test_separable_and_standard_head_convolutions():
    sep = meta_model("liteseg-mobilenetv2")
    std = meta_model("liteseg-mobilenetv2", conv="standard")
    head_sep = convs(sep.context) + convs(sep.decoder)
    # Separable: depthwise k x k then pointwise 1x1, both bias-free (only the classifier has a bias).
    assert any(c.groups == c.in_channels > 1 for c in head_sep)
    assert [c for c in head_sep if c.bias is not None] == [sep.decoder.classifier]
    assert all(c.groups == 1 for c in convs(std.context) + convs(std.decoder))
    assert count_parameters(std) > 2 * count_parameters(sep) - count_parameters(sep.backbone)


def test_table_i_baseline_option():
    model = meta_model("liteseg-darknet19", head="aspp", conv="standard")
    assert model.size_divisor == 32  # the baseline runs every backbone at output stride 32
    assert [b[0].dilation[0] for b in model.context.branches] == [1, 3, 6, 9]
    assert model.context.out_channels == 256 and model.decoder.reduce[1].num_features == 48
    assert [m[1].num_features for m in model.decoder.refine] == [256, 256]


@pytest.mark.parametrize("options", [{}, {"head": "aspp"}, {"conv": "standard", "output_stride": 16}])
def test_options_run_end_to_end(options):
    model = rtseg.create_model("liteseg-shufflenet", num_classes=4, **options).eval()
    with torch.inference_mode():
        assert model(torch.randn(1, 3, 70, 90)).shape == (1, 4, 70, 90)


def test_any_backbone_by_name(tmp_path):
    state = {k: torch.randn_like(v, device="cpu") if v.dtype.is_floating_point else torch.zeros((), dtype=torch.long)
             for k, v in create_backbone("resnet18", include_classifier=True).state_dict().items()}  # fmt: skip
    path = tmp_path / "resnet18.pth"
    torch.save(state, path)
    model = rtseg.create_model("liteseg-mobilenetv2", backbone="resnet18", pretrained=str(path)).eval()
    assert model.low_stage == "layer1" and model.high_stage == "layer4"
    assert torch.equal(model.backbone.layer4[1].conv2.weight, state["layer4.1.conv2.weight"])
    with torch.inference_mode():
        assert model(torch.randn(1, 3, 64, 64)).shape == (1, 19, 64, 64)
    # Checkpoints record how to rebuild the model, but not the initialisation weights.
    assert model.rtseg_card.options == {"backbone": "resnet18"}
