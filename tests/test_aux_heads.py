"""Auxiliary heads: training-only outputs on named stages, absent from eval, saved weights and exports."""
import pytest
import torch

from rtseg.engine.losses import DeepSupervisionLoss, build_criterion
from rtseg.engine.precision import forward_loss, resolve_precision
from rtseg.models.aux_heads import AuxiliaryHeads, build_aux_heads, stage_aliases
from rtseg.registry import create_model

# one model per family (5 classes: ESPNet's branches need at least 5 until the 2-class fix)
FAMILIES = ["fplnet", "erfnet", "essnet-b-dg2", "wspdnet", "espnet-c", "espnet", "liteseg-mobilenetv2", "farseenet"]


@pytest.mark.parametrize("name", FAMILIES)
def test_train_mode_adds_aux_logits_and_eval_returns_the_plain_output(name):
    torch.manual_seed(0)
    model = create_model(name, 5)
    aliases = stage_aliases(model)
    assert len(aliases) >= 2, name
    wrapped = AuxiliaryHeads(model, [{"stage": s, "weight": 0.3} for s in aliases])
    x = torch.randn(2, 3, 40, 56)  # not a multiple of every size divisor: the heads crop like the model pads
    outs = wrapped.train()(x)
    assert isinstance(outs, tuple) and len(outs) == 1 + len(aliases)
    assert outs[0].shape[:2] == (2, 5)
    for aux in outs[1:]:
        assert aux.shape == (2, 5, 40, 56)
    assert wrapped.aux_weights == [0.3] * len(aliases)
    # no hook is left on the network, and eval gives exactly the plain network's output
    assert not any(m._forward_hooks for m in model.modules())
    wrapped.eval()
    with torch.no_grad():
        out = wrapped(x)
        plain = model(x)
    assert isinstance(out, torch.Tensor) and torch.equal(out, plain)


def test_saved_weights_and_parameter_count_are_those_of_the_plain_model():
    torch.manual_seed(0)
    plain = create_model("fplnet", 5)
    model = create_model("fplnet", 5)
    wrapped = AuxiliaryHeads(model, [{"stage": "stage2"}])
    assert list(wrapped.model.state_dict()) == list(plain.state_dict())
    assert sum(p.numel() for p in wrapped.model.parameters()) == sum(p.numel() for p in plain.parameters())
    assert sum(p.numel() for p in wrapped.heads.parameters()) > 0  # the heads' parameters live in the wrapper only
    assert all(k.startswith(("model.", "heads.")) for k in wrapped.state_dict())


def test_plain_network_exports_without_the_heads(tmp_path):
    model = create_model("erfnet", 5)
    wrapped = AuxiliaryHeads(model, [{"stage": "stage2"}]).train()
    wrapped(torch.randn(1, 3, 32, 32))
    model.eval()
    traced = torch.jit.trace(model, torch.randn(1, 3, 32, 32))
    names = {n for n, _ in traced.named_modules()}
    assert not any("heads" in n for n in names)
    assert traced(torch.randn(1, 3, 32, 32)).shape == (1, 5, 32, 32)


def test_module_paths_and_dict_keys_name_stages():
    model = create_model("liteseg-darknet19", 5)
    wrapped = AuxiliaryHeads(model, [{"stage": "backbone[stage3]"}, {"stage": "context"}]).train()
    outs = wrapped(torch.randn(2, 3, 64, 64))
    assert [o.shape[-2:] for o in outs[1:]] == [(64, 64), (64, 64)]
    assert wrapped.heads[0].conv[0].in_channels == 128  # darknet19's stage3 has 128 channels


@pytest.mark.parametrize("specs, match", [
    ([{"stage": "nowhere"}], "neither a stage of FPLNet"),
    ([{"stage": "stage2", "weight": -1}], "aux_heads.0.weight"),
    ([{"stage": "stage2", "wieght": 1}], "aux_heads.0"),
    ([{"stage": "encoder.norm2[x]"}], "takes no \\[KEY\\]"),
    ({"stage": "stage2"}, "expected a list"),
])
def test_bad_specs_are_refused_by_name(specs, match):
    with pytest.raises(ValueError, match=match):
        AuxiliaryHeads(create_model("fplnet", 5), specs)


def test_training_loss_adds_the_weighted_aux_losses():
    torch.manual_seed(0)
    model = create_model("erfnet", 5)
    wrapped = build_aux_heads(model, {"aux_heads": [{"stage": "stage2"}]}, {"aux_weight": 0.25})
    assert wrapped.aux_weights == [0.25]
    base = build_criterion({}, None, 5)
    criterion = DeepSupervisionLoss(base, wrapped.aux_weights)
    x, labels = torch.randn(2, 3, 32, 32), torch.randint(0, 5, (2, 16, 16))
    precision = resolve_precision("fp32", torch.device("cpu"))
    wrapped.train()
    torch.manual_seed(1)
    loss = forward_loss(wrapped, criterion, precision, x, labels)
    torch.manual_seed(1)  # the same dropout masks
    main, aux = wrapped(x)
    resize = lambda t: torch.nn.functional.interpolate(t, size=(16, 16), mode="bilinear", align_corners=False)  # noqa: E731
    assert loss.item() == pytest.approx(base(resize(main), labels).item() + 0.25 * base(resize(aux), labels).item(), rel=1e-5)
    loss.backward()
    assert wrapped.heads[0].classifier.weight.grad is not None
    assert build_aux_heads(model, {"aux_heads": None}, {}) is None
