"""Exponential moving average of weights: the update rule and an exact state round trip."""
import io

import pytest
import torch
import torch.nn as nn

from rtseg.engine.ema import ModelEMA


def _tiny():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 2, 1))


def _step(model, opt, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 3, 8, 8, generator=g)
    opt.zero_grad()
    model(x).square().mean().backward()
    opt.step()


def test_update_averages_parameters_and_copies_buffers():
    model = _tiny().train()
    ema = ModelEMA(model, 0.9)
    before = {k: v.clone().double() for k, v in model.state_dict().items()}
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    _step(model, opt, 1)
    ema.update(model)
    after = model.state_dict()
    avg = ema.module.state_dict()
    weight = "0.weight"
    expected = 0.9 * before[weight] + 0.1 * after[weight].double()
    assert torch.allclose(avg[weight].double(), expected, atol=1e-6)
    assert not torch.allclose(avg[weight], after[weight])  # it is an average, not a copy
    # BatchNorm statistics are copied, not averaged
    assert torch.equal(avg["1.running_mean"], after["1.running_mean"]) and int(avg["1.num_batches_tracked"]) == 1
    assert ema.updates == 1 and not ema.module.training
    assert all(not p.requires_grad for p in ema.module.parameters())


def test_state_round_trip_is_bit_exact_and_resume_continues_identically():
    model = _tiny().train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    ema = ModelEMA(model, 0.99)
    for s in range(3):
        _step(model, opt, s)
        ema.update(model)
    buf = io.BytesIO()
    torch.save({"ema": ema.state_dict(), "model": model.state_dict(), "opt": opt.state_dict()}, buf)
    buf.seek(0)
    saved = torch.load(buf, weights_only=True)

    restored_model = _tiny().train()
    restored_model.load_state_dict(saved["model"])
    restored_opt = torch.optim.SGD(restored_model.parameters(), lr=0.1, momentum=0.9)
    restored_opt.load_state_dict(saved["opt"])
    restored = ModelEMA(restored_model, 0.99)
    restored.load_state_dict(saved["ema"])
    assert restored.updates == 3
    for k, v in ema.module.state_dict().items():
        assert torch.equal(v, restored.module.state_dict()[k]), k
    for s in range(3, 5):  # both runs go on: the averages stay identical to the bit
        _step(model, opt, s)
        ema.update(model)
        _step(restored_model, restored_opt, s)
        restored.update(restored_model)
    for k, v in ema.module.state_dict().items():
        assert torch.equal(v, restored.module.state_dict()[k]), k


@pytest.mark.parametrize("decay", [0, 1, 1.5, -0.1, float("nan"), True, "0.9"])
def test_bad_decay_is_refused_naming_the_key(decay):
    with pytest.raises(ValueError, match="train.ema"):
        ModelEMA(_tiny(), decay)


def test_resume_with_another_decay_is_refused():
    ema = ModelEMA(_tiny(), 0.99)
    with pytest.raises(ValueError, match="train.ema=0.999.*0.99"):
        ModelEMA(_tiny(), 0.999).load_state_dict(ema.state_dict())


def test_average_mode_averages_the_running_statistics_and_copies_counters():
    model = _tiny().train()
    ema = ModelEMA(model, 0.9, bn="average")
    before = ema.module.state_dict()["1.running_mean"].clone()
    _step(model, torch.optim.SGD(model.parameters(), lr=0.5), 1)
    ema.update(model)
    live, avg = model.state_dict(), ema.module.state_dict()
    assert torch.allclose(avg["1.running_mean"], 0.9 * before + 0.1 * live["1.running_mean"], atol=1e-7)
    assert not torch.allclose(avg["1.running_mean"], live["1.running_mean"])
    assert int(avg["1.num_batches_tracked"]) == 1


def test_bad_bn_mode_is_refused_naming_the_key():
    with pytest.raises(ValueError, match="train.ema_bn='mean'.*reestimate"):
        ModelEMA(_tiny(), 0.9, bn="mean")


def test_reestimate_batchnorm_averages_over_batches_and_keeps_named_parts():
    from rtseg.engine.ema import reestimate_batchnorm

    torch.manual_seed(0)
    model = nn.Sequential(nn.BatchNorm2d(3), nn.Sequential(nn.Conv2d(3, 3, 1), nn.BatchNorm2d(3)), nn.Dropout(0.5))
    held = model[0].running_mean.clone()
    batches = [torch.randn(4, 3, 5, 5) * 2 + 1 for _ in range(3)]
    assert reestimate_batchnorm(model, iter(batches), keep=["0"]) == 1
    assert torch.equal(model[0].running_mean, held)  # the kept (frozen) layer did not move
    with torch.no_grad():
        feats = torch.cat([model[1][0](b) for b in batches])
    # the plain average over equal-sized batches of each batch's mean: the mean over all images
    assert torch.allclose(model[1][1].running_mean, feats.mean(dim=(0, 2, 3)), atol=1e-5)
    assert model[1][1].momentum == 0.1 and not model.training and not model[2].training
    assert reestimate_batchnorm(nn.Conv2d(3, 3, 1), iter([])) == 0
