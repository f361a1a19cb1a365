"""Gradual grouping (ESSNet thesis section 3.5): the layer, its schedule and the conversion to grouped convolutions."""
import pytest
import torch
import torch.nn as nn

import rtseg
from rtseg.efficiency import count_flops, count_parameters
from rtseg.models.gradual_grouping import (
    GradualGroupedConv2d,
    GradualGroupingSchedule,
    convert,
    convert_state_dict,
    gradual_layers,
    set_alpha,
)


def _randomise_batchnorm(model: nn.Module) -> None:
    # fresh BN layers are the identity in eval mode; random statistics make the comparison meaningful
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            nn.init.uniform_(m.weight, 0.5, 1.5)
            nn.init.uniform_(m.bias, -0.2, 0.2)


def test_alpha_one_is_the_dense_convolution_and_alpha_zero_the_grouped_one():
    layer = GradualGroupedConv2d(8, 12, groups=4)
    x = torch.randn(2, 8, 5, 5)
    dense = nn.functional.conv2d(x, layer.weight, layer.bias)
    assert torch.allclose(layer(x), dense, atol=1e-6)
    set_alpha(layer, 0.0)
    grouped = nn.functional.conv2d(x, layer.grouped_weight(), layer.bias, groups=4)
    assert torch.allclose(layer(x), grouped, atol=1e-6)
    assert not torch.allclose(dense, grouped, atol=1e-3)


def test_off_diagonal_weights_are_scaled_by_alpha_and_get_no_gradient_at_zero():
    layer = GradualGroupedConv2d(4, 4, groups=2)
    set_alpha(layer, 0.25)
    w, eff = layer.weight.detach()[:, :, 0, 0], layer.effective_weight().detach()[:, :, 0, 0]
    assert torch.allclose(eff[:2, :2], w[:2, :2]) and torch.allclose(eff[2:, 2:], w[2:, 2:])
    assert torch.allclose(eff[:2, 2:], 0.25 * w[:2, 2:]) and torch.allclose(eff[2:, :2], 0.25 * w[2:, :2])
    set_alpha(layer, 0.0)
    layer(torch.randn(1, 4, 3, 3)).sum().backward()
    grad = layer.weight.grad[:, :, 0, 0]
    assert torch.count_nonzero(grad[:2, 2:]) == 0 and torch.count_nonzero(grad[2:, :2]) == 0
    assert torch.count_nonzero(grad[:2, :2]) > 0


def test_schedule_goes_from_one_to_zero_then_stays():
    schedule = GradualGroupingSchedule(ramp_epochs=10, start_epoch=2)
    alphas = [schedule.alpha_at(e) for e in range(16)]
    assert alphas[:3] == [1.0, 1.0, 1.0]
    assert alphas[7] == pytest.approx(0.5)
    assert alphas[12:] == [0.0] * 4
    assert all(a >= b for a, b in zip(alphas, alphas[1:]))
    cosine = GradualGroupingSchedule(ramp_epochs=10, shape="cosine")
    assert cosine.alpha_at(0) == 1.0 and cosine.alpha_at(5) == pytest.approx(0.5) and cosine.alpha_at(10) == pytest.approx(0.0)
    assert GradualGroupingSchedule.from_config({"ramp_epochs": 4, "start_epoch": 0, "shape": "linear"}).alpha_at(1) == pytest.approx(0.75)


def test_schedule_sets_alpha_on_every_gradual_layer():
    model = rtseg.create_model("essnet-b-dg4", gradual_grouping=True)
    layers = gradual_layers(model)
    assert len(layers) == 26  # two pointwise convolutions in each of the 13 encoder conv-modules
    alpha = GradualGroupingSchedule(ramp_epochs=4).apply(model, 3)
    assert alpha == pytest.approx(0.25)
    assert all(float(layer.alpha) == pytest.approx(0.25) for layer in layers)


@pytest.mark.parametrize("name", ["essnet-b-dg4", "essnet-a-dg2s", "essnet-dg2"])
def test_converted_network_equals_alpha_zero_network_and_the_directly_built_one(name):
    torch.manual_seed(0)
    gradual = rtseg.create_model(name, gradual_grouping=True)
    _randomise_batchnorm(gradual)
    set_alpha(gradual, 0.0)
    gradual.eval()
    x = torch.randn(1, 3, 64, 96)
    with torch.inference_mode():
        before = gradual(x)
    direct = rtseg.create_model(name).eval()
    assert count_parameters(gradual) > count_parameters(direct)  # dense while training

    convert(gradual)
    assert not gradual_layers(gradual)
    with torch.inference_mode():
        after = gradual(x)
    assert (after - before).abs().max() < 1e-5
    assert count_parameters(gradual) == count_parameters(direct)
    assert count_flops(gradual, (64, 128))["macs"] == count_flops(direct, (64, 128))["macs"]
    assert gradual.rtseg_card.options["gradual_grouping"] is False
    # the converted weights are the grouped model's weights: they load strictly and give the same output
    direct.load_state_dict(gradual.state_dict(), strict=True)
    with torch.inference_mode():
        assert (direct(x) - after).abs().max() < 1e-5


def test_conversion_refuses_a_layer_that_is_not_yet_grouped():
    model = rtseg.create_model("essnet-dg2", gradual_grouping=True)
    set_alpha(model, 0.1)
    with pytest.raises(ValueError, match="alpha"):
        convert(model)


def test_gradual_checkpoint_loads_into_the_grouped_model():
    gradual = rtseg.create_model("essnet-b-dg8s", gradual_grouping=True)
    _randomise_batchnorm(gradual)
    set_alpha(gradual, 0.0)
    gradual.eval()
    direct = rtseg.create_model("essnet-b-dg8s").eval()
    direct.load_state_dict(convert_state_dict(gradual.state_dict(), direct), strict=True)
    x = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        assert (direct(x) - gradual(x)).abs().max() < 1e-5
