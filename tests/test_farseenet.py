"""FarSee-Net: F-ASPP factorization, CF-ASPP cascade, sub-pixel super-resolution, the four Table I methods, other front-ends."""
import pytest
import torch
import torch.nn as nn

import rtseg
from rtseg.efficiency import count_flops
from rtseg.models.deeplab import ASPP, ConvBNReLU, DeepLabV3PlusDecoder
from rtseg.models.farseenet import CFASPP, FASPP, FactorizedAtrousConv, SubPixelConv


def meta_model(name, **options):
    with torch.device("meta"):
        return rtseg.create_model(name, **options).eval()


def test_factorized_atrous_conv_is_8_8_times_cheaper():
    # Section III-B: F_i = 512, F_o = 256 gives "about 8.8x" fewer operations than the 3x3 atrous conv.
    with torch.device("meta"):
        plain = nn.Sequential(nn.Conv2d(512, 256, 3, padding=12, dilation=12, bias=False))
        factorized = FactorizedAtrousConv(512, 256, 12)
    plain_macs = count_flops(ChannelInput(plain, 512), (16, 32))["macs"]
    fact_macs = count_flops(ChannelInput(factorized, 512), (16, 32))["macs"]
    assert plain_macs / fact_macs == pytest.approx(8.8, rel=0.01)
    pointwise, depthwise = factorized[0][0], factorized[1][0]
    assert (pointwise.kernel_size, pointwise.in_channels, pointwise.out_channels) == ((1, 1), 512, 256)
    assert (depthwise.kernel_size, depthwise.groups, depthwise.dilation) == ((3, 3), 256, (12, 12))


class ChannelInput(nn.Module):
    """Feeds a C-channel zero map to ``module`` (count_flops builds 3-channel images)."""

    def __init__(self, module, channels):
        super().__init__()
        self.module, self.channels = module, channels
        self.anchor = nn.Parameter(torch.zeros(1, device=next(module.parameters()).device))

    def forward(self, x):
        return self.module(x.new_zeros(x.shape[0], self.channels, *x.shape[2:]))


def test_front_end_features():
    model = meta_model("farseenet")
    # High level: ResNet-18's last stage; low level: the paper's conv3_x = torchvision's layer2 (stride 8).
    assert (model.high_stage, model.low_stage) == ("layer4", "layer2")
    assert model.backbone.stage_stride("layer2") == 8 and model.backbone.stage_channels("layer2") == 128
    assert model.backbone.output_stride == 32 and not hasattr(model.backbone, "fc")


def test_cf_aspp_cascade():
    model = meta_model("farseenet")
    cf = model.context
    assert isinstance(cf, CFASPP) and isinstance(cf.high, FASPP) and isinstance(cf.low, FASPP)
    assert cf.high.out_channels == 256 and cf.low.out_channels == 128  # the second F-ASPP has fewer channels
    # The low-level features join the upsampled first F-ASPP output before the second F-ASPP (Fig. 3).
    assert cf.low.branches[0][0].in_channels == 256 + 128
    for faspp in (cf.high, cf.low):
        assert [b[1][0].dilation[0] for b in faspp.branches[1:]] == [6, 12, 18]


def _subpixel_output_sizes(model, size):
    subpixel = [m for m in model.modules() if isinstance(m, SubPixelConv)]
    sizes = []
    handles = [m.register_forward_hook(lambda m, i, o: sizes.append(tuple(o.shape[-2:]))) for m in subpixel]
    with torch.inference_mode():
        out = model(torch.zeros(1, 3, *size, device=next(model.parameters()).device))
    for h in handles:
        h.remove()
    return subpixel, sizes, out


def test_super_resolution_sits_in_the_cascade():
    # "we apply this operation twice in the proposed CF-ASPP" (III-C): one sub-pixel conv replaces the bilinear
    # step between the two F-ASPPs (stride 32 -> 8), the last one (t = 4, Fig. 3 caption) yields the N class maps.
    model = meta_model("farseenet")
    subpixel, sizes, out = _subpixel_output_sizes(model, (512, 1024))
    assert len(subpixel) == 2 and subpixel[0] is model.context.upsample and subpixel[1] is model.head
    assert [m.shuffle.upscale_factor for m in subpixel] == [4, 4]
    assert subpixel[0].conv.in_channels == 256 and subpixel[0].conv.out_channels == 256 * 16  # F_i kept (III-C)
    assert subpixel[1].conv.out_channels == 19 * 16 and subpixel[1].conv.kernel_size == (1, 1)
    assert sizes == [(64, 128), (256, 512)]
    assert out.shape == (1, 19, 1024, 2048)  # 512 x 1024 in, full-resolution Cityscapes out


def test_cascade_layout_costs_what_table_i_allows_and_the_head_layout_does_not():
    # Table I: method 3 -> 4 takes 13.5 -> 14.6 ms (+8 %). The cascade adds 3.8 % of method 3's MACs, the
    # two sub-pixel convs after the cascade 33 % (docs/fidelity.md gives the CPU latency ratios).
    m3 = count_flops(meta_model("farseenet-method3"), (512, 1024))["macs"]
    cascade = count_flops(meta_model("farseenet"), (512, 1024))["macs"]
    head = count_flops(meta_model("farseenet", subpixel_layout="head"), (512, 1024))["macs"]
    assert 1.0 < cascade / m3 < 1.08 < head / m3
    assert round(cascade / 1e9, 2) == 22.56 and round(head / 1e9, 2) == 28.95


def test_head_layout_option_keeps_the_former_reading():
    model = meta_model("farseenet", subpixel_layout="head")
    subpixel, sizes, out = _subpixel_output_sizes(model, (512, 1024))
    assert model.context.upsample is None and [m.shuffle.upscale_factor for m in subpixel] == [4, 4]
    assert sizes == [(256, 512), (1024, 2048)] and out.shape == (1, 19, 1024, 2048)
    with pytest.raises(ValueError, match="subpixel_layout"):
        rtseg.create_model("farseenet", subpixel_layout="tail")


@pytest.mark.parametrize("layout", ["cascade", "head"])
@pytest.mark.parametrize("size", [(64, 96), (50, 77), (97, 130)])
def test_half_size_input_gives_twice_its_size_for_any_size(layout, size):
    model = rtseg.create_model("farseenet", num_classes=3, subpixel_layout=layout).eval()
    with torch.inference_mode():
        assert model(torch.randn(1, 3, *size)).shape == (1, 3, 2 * size[0], 2 * size[1])


def test_full_size_input_with_the_same_weights():
    # A user with a full-size image either halves it (the paper's protocol) or builds output_scale=1, which in
    # the cascade layout has the very same weights: only the final bilinear factor changes.
    trained = rtseg.create_model("farseenet", num_classes=3).eval()
    full = rtseg.create_model("farseenet", num_classes=3, output_scale=1).eval()
    full.load_state_dict(trained.state_dict())
    image = torch.randn(1, 3, 96, 128)
    with torch.inference_mode():
        halved = trained(nn.functional.interpolate(image, scale_factor=0.5, mode="bilinear", align_corners=False))
        own = full(image)
    assert halved.shape == own.shape == (1, 3, 96, 128)


def test_table_i_methods():
    m1, m2, m3, m4 = (meta_model(f"farseenet-method{i}") for i in (1, 2, 3, 4))
    assert isinstance(m1.context, ASPP) and isinstance(m1.decoder, DeepLabV3PlusDecoder)
    assert [b[0].dilation[0] for b in m1.context.branches[1:]] == [6, 12, 18] and m1.context.branches[1][0].groups == 1
    assert isinstance(m2.context, FASPP) and isinstance(m2.decoder, DeepLabV3PlusDecoder)
    assert isinstance(m3.context, CFASPP) and m3.decoder is None and not any(isinstance(m, SubPixelConv) for m in m3.modules())
    assert isinstance(m4.context, CFASPP) and m4.decoder is None
    assert sum(p.numel() for p in m4.parameters()) == sum(p.numel() for p in meta_model("farseenet").parameters())
    for model in (m1, m2, m3, m4):
        assert model.output_scale == 2


@pytest.mark.parametrize("backbone", ["mobilenetv2", "darknet19", "shufflenet-g8", "shufflenetv2"])
def test_back_end_plugs_onto_other_front_ends(backbone):
    model = meta_model("farseenet", backbone=backbone, num_classes=7)
    assert model.backbone.stage_stride(model.low_stage) == 8
    with torch.inference_mode():
        assert model(torch.zeros(1, 3, 96, 160, device="meta")).shape == (1, 7, 192, 320)


def test_full_resolution_input_option_of_the_head_layout():
    model = rtseg.create_model("farseenet", output_scale=1, num_classes=3, subpixel_layout="head").eval()
    with torch.inference_mode():
        assert model(torch.randn(1, 3, 64, 96)).shape == (1, 3, 64, 96)
    # Stride 8 to 1: the last sub-pixel conv keeps t = 4, the first one takes the remaining 2.
    assert [m.shuffle.upscale_factor for m in model.modules() if isinstance(m, SubPixelConv)] == [2, 4]


def test_every_convolution_but_the_last_is_followed_by_bn_and_relu():
    # Fig. 3 caption: "Each convolution layer is followed by batch normalization and Relu."
    model = meta_model("farseenet")
    blocks = [m for m in model.context.modules() if isinstance(m, ConvBNReLU)]
    assert blocks and all(isinstance(b[1], nn.BatchNorm2d) and isinstance(b[2], nn.ReLU) for b in blocks)
    first = [m for m in model.modules() if isinstance(m, SubPixelConv)][0]
    assert first.bn is not None and first.conv.bias is None
