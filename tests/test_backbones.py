"""Backbones: torchvision-compatible names and shapes, published complexities, output stride, stages, weights loading."""
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from rtseg.io import WeightsMismatchError
from rtseg.efficiency import count_flops, count_parameters
from rtseg.models.backbones import create_backbone, list_backbones, read_darknet_weights

DATA = Path(__file__).parent / "data"

# Expected state dicts written out from torchvision's published architectures (tests/data/*.txt:
# one "key shape" line per entry, in torchvision's order), with torchvision's documented parameter counts.
TORCHVISION = {
    "resnet18": ("torchvision_resnet18_state_dict.txt", 11_689_512),
    "mobilenetv2": ("torchvision_mobilenet_v2_state_dict.txt", 3_504_872),
    "shufflenetv2": ("torchvision_shufflenet_v2_x1_0_state_dict.txt", 2_278_604),
}


def expected_state(name):
    rows = []
    for line in (DATA / TORCHVISION[name][0]).read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        key, shape = line.split()
        rows.append((key, () if shape == "scalar" else tuple(int(s) for s in shape.split("x"))))
    return rows


def fake_torchvision_file(name, tmp_path, seed=0):
    """A file laid out like torchvision's ImageNet checkpoint for ``name``, filled with random values."""
    gen = torch.Generator().manual_seed(seed)
    state = {k: (torch.tensor(7) if not s else torch.randn(s, generator=gen)) for k, s in expected_state(name)}
    path = tmp_path / f"{name}-imagenet.pth"
    torch.save(state, path)
    return path, state


def meta_backbone(name, **kw):
    with torch.device("meta"):
        return create_backbone(name, **kw)


@pytest.mark.parametrize("name", sorted(TORCHVISION))
def test_state_dict_names_and_shapes_match_torchvision(name):
    model = meta_backbone(name, include_classifier=True)
    ours = [(k, tuple(v.shape)) for k, v in model.state_dict().items()]
    assert ours == expected_state(name)
    assert count_parameters(model) == TORCHVISION[name][1]


@pytest.mark.parametrize("name", sorted(TORCHVISION))
def test_torchvision_checkpoint_loads_strictly(name, tmp_path):
    path, state = fake_torchvision_file(name, tmp_path)
    full = create_backbone(name, include_classifier=True, pretrained=path)
    for key, value in full.state_dict().items():
        assert torch.equal(value, state[key]), key
    # As a feature extractor the ImageNet classifier is dropped, and its keys are reported as ignored.
    features = create_backbone(name)
    report = features.load_pretrained(path)
    assert report["missing"] == [] and report["unexpected"] == []
    assert report["ignored"] and all(k.split(".")[0] in ("fc", "classifier") for k in report["ignored"])
    assert all(torch.equal(v, state[k]) for k, v in features.state_dict().items())


# Complexity at 224 x 224 as published (multiply-adds): ResNet paper Table 1 (1.8 x 10^9), MobileNetV2
# (300M multiply-adds in its ImageNet comparison), ShuffleNet V2 Table 5 (146M at 1.0x), ShuffleNet Table 2 (140M for 1x, g=8) and
# YOLO9000 section 3 (Darknet-19: 5.58 billion operations, i.e. FLOPs = 2 x multiply-adds).
PUBLISHED_MACS_224 = {"resnet18": 1.8e9, "mobilenetv2": 300e6, "shufflenetv2": 146e6, "shufflenet-g8": 140e6, "darknet19": 5.58e9 / 2}


@pytest.mark.parametrize("name", sorted(PUBLISHED_MACS_224))
def test_complexity_matches_the_papers(name):
    model = meta_backbone(name, include_classifier=True)
    macs = count_flops(_Logits(model), (224, 224))["macs"]
    assert macs == pytest.approx(PUBLISHED_MACS_224[name], rel=0.03)


class _Logits(torch.nn.Module):
    def __init__(self, backbone):
        super().__init__()
        self.backbone = backbone

    def forward(self, x):
        return self.backbone.logits(x)


def test_shufflenet_v1_g8_layout():
    # ShuffleNet Table 1, g = 8: 384 / 768 / 1536 channels, 4 / 8 / 4 units, strides 8 / 16 / 32.
    model = meta_backbone("shufflenet-g8", include_classifier=True)
    stages = {s["name"]: s for s in model.describe()}
    assert [(stages[f"stage{i}"]["channels"], stages[f"stage{i}"]["stride"]) for i in (2, 3, 4)] == [(384, 8), (768, 16), (1536, 32)]
    assert [len(getattr(model, f"stage{i}")) for i in (2, 3, 4)] == [4, 8, 4]
    assert model.stage2[0].g_conv_1x1_compress.conv1x1.groups == 1  # the paper leaves stage 2's first 1x1 ungrouped
    assert model.stage3[0].g_conv_1x1_compress.conv1x1.groups == 8
    assert model.fc.weight.shape == (1000, 1536)


@pytest.mark.parametrize("name", list_backbones())
@pytest.mark.parametrize("output_stride", [32, 16])
def test_output_stride_by_dilation(name, output_stride):
    model = create_backbone(name, output_stride=output_stride, out_stages=[s.name for s in meta_backbone(name).stage_specs]).eval()
    assert count_parameters(model) == count_parameters(meta_backbone(name))  # dilation adds no weights
    with torch.inference_mode():
        feats = model(torch.randn(1, 3, 64, 128))
    for stage, tensor in feats.items():
        stride = model.stage_stride(stage)
        assert stride == min(model.stage(stage).stride, output_stride)
        assert tensor.shape[-2:] == (64 // stride, 128 // stride), stage
        assert tensor.shape[1] == model.stage_channels(stage)


def test_dilated_resnet_follows_torchvision_convention():
    model = create_backbone("resnet18", output_stride=8)
    # The block that used to stride keeps the previous rate; later blocks use the doubled one.
    assert (model.layer3[0].conv1.stride, model.layer3[0].conv1.dilation, model.layer3[1].conv1.dilation) == ((1, 1), (1, 1), (2, 2))
    assert (model.layer4[0].conv2.dilation, model.layer4[1].conv2.dilation, model.layer4[1].conv2.padding) == ((2, 2), (4, 4), (4, 4))
    assert model.layer4[0].downsample[0].stride == (1, 1)


def test_darknet_output_stride_16_drops_the_last_pool_like_liteseg():
    model = create_backbone("darknet19", output_stride=16)
    assert model.stage6[0].kernel_size == 1 and model.stage6[0].stride == 1
    assert [m.conv.dilation for m in list(model.stage6)[1:] if m.conv.kernel_size == (3, 3)] == [(2, 2)] * 3


def test_stage_aliases_and_truncation():
    model = create_backbone("resnet18", out_stages=["conv3_x"])
    assert model.out_stages == ("layer2",) and model.stage_stride("conv3_x") == 8
    assert not hasattr(model, "layer3") and not hasattr(model, "fc")
    assert {k.split(".")[0] for k, _ in model.named_parameters()} == {"conv1", "bn1", "layer1", "layer2"}
    feats = model(torch.randn(2, 3, 32, 32))
    assert list(feats) == ["layer2"] and feats["layer2"].shape == (2, 128, 4, 4)
    with pytest.raises(KeyError, match="conv3_x"):
        create_backbone("resnet18", out_stages=["layer9"])


def test_checkpoints_without_bn_step_counters_load_strictly(tmp_path):
    # Files saved before PyTorch 0.4.1 (like several ImageNet releases) have no num_batches_tracked.
    path, state = fake_torchvision_file("resnet18", tmp_path)
    old = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    torch.save(old, path)
    model = create_backbone("resnet18", pretrained=path)
    assert torch.equal(model.layer2[0].downsample[1].running_var, state["layer2.0.downsample.1.running_var"])


def test_truncated_backbone_ignores_the_dropped_stages_when_loading(tmp_path):
    path, state = fake_torchvision_file("mobilenetv2", tmp_path)
    model = create_backbone("mobilenetv2", out_stages=["features.3"], pretrained=path)
    assert torch.equal(model.features[3].conv[1][0].weight, state["features.3.conv.1.0.weight"])
    report = model.load_pretrained(path)
    assert "features.18.0.weight" in report["ignored"] and "classifier.1.weight" in report["ignored"]


def test_mismatched_weights_are_an_error_listing_the_keys(tmp_path):
    path, state = fake_torchvision_file("resnet18", tmp_path)
    del state["layer3.1.conv2.weight"]
    state["extra.weight"] = torch.zeros(3)
    bad = tmp_path / "bad.pth"
    torch.save(state, bad)
    with pytest.raises(WeightsMismatchError) as err:
        create_backbone("resnet18", pretrained=bad)
    assert "layer3.1.conv2.weight" in str(err.value) and "extra.weight" in str(err.value)
    model = create_backbone("resnet18")
    with pytest.warns(UserWarning, match="layer3.1.conv2.weight"):
        report = model.load_pretrained(bad, strict=False)
    assert report["missing"] == ["layer3.1.conv2.weight"] and report["unexpected"] == ["extra.weight"]
    assert torch.equal(model.layer1[0].conv1.weight, state["layer1.0.conv1.weight"])


def test_pretrained_from_a_url_is_cached_and_a_file_url_is_read_in_place(tmp_path, monkeypatch, http_files):
    served, base, _ = http_files
    monkeypatch.setenv("RTSEG_CACHE", str(tmp_path / "cache"))
    path, state = fake_torchvision_file("shufflenetv2", served)
    model = create_backbone("shufflenetv2", pretrained=f"{base}/{path.name}")
    assert torch.equal(model.conv5[0].weight, state["conv5.0.weight"])
    cached = list((tmp_path / "cache" / "weights").iterdir())  # the weights folder of the one cache folder
    assert len(cached) == 1 and cached[0].read_bytes() == path.read_bytes()
    cached[0].unlink()
    model = create_backbone("shufflenetv2", pretrained=path.as_uri())
    assert torch.equal(model.conv5[0].weight, state["conv5.0.weight"])
    assert not list((tmp_path / "cache" / "weights").iterdir())  # a local file is never copied


# ------------------------------------------------------------------ Darknet .weights

def write_darknet_file(path, values, major=0, minor=2, seen=64000):
    with open(path, "wb") as f:
        np.array([major, minor, 0], dtype="<i4").tofile(f)
        np.array([seen], dtype="<i8" if major * 10 + minor >= 2 else "<i4").tofile(f)
        np.asarray(values, dtype="<f4").tofile(f)


# darknet19.cfg's convolutions: (filters, size); every one with batch_normalize=1, then the classifier.
DARKNET19_CFG = [(32, 3), (64, 3), (128, 3), (64, 1), (128, 3), (256, 3), (128, 1), (256, 3), (512, 3), (256, 1), (512, 3), (256, 1),
                 (512, 3), (1024, 3), (512, 1), (1024, 3), (512, 1), (1024, 3)]  # fmt: skip


def darknet_layers(with_classifier=True, seed=0):
    """Per layer: dict of the arrays in file order (BN beta, gamma, mean, var, kernel; or bias, kernel)."""
    rng = np.random.default_rng(seed)

    def rand(*shape):
        return rng.standard_normal(shape, dtype=np.float32)

    layers, cin = [], 3
    for filters, size in DARKNET19_CFG:
        var = rng.random(filters, dtype=np.float32) + 0.5
        layers.append({"beta": rand(filters), "gamma": rand(filters), "mean": rand(filters), "var": var, "kernel": rand(filters, cin, size, size)})
        cin = filters
    if with_classifier:
        layers.append({"bias": rand(1000), "kernel": rand(1000, 1024, 1, 1)})
    return layers


@pytest.fixture(scope="module")
def darknet_file(tmp_path_factory):
    layers = darknet_layers()
    path = tmp_path_factory.mktemp("darknet") / "darknet19.weights"
    write_darknet_file(path, flatten(layers))
    return path, layers


def flatten(layers):
    return np.concatenate([a.ravel() for layer in layers for a in layer.values()])


def darknet_convs(model):
    return [m for m in model.modules() if type(m).__name__ == "DarknetConv"]


def test_darknet_weights_reader_fills_every_layer_in_order(darknet_file):
    path, layers = darknet_file
    header, values = read_darknet_weights(path)
    assert header == {"major": 0, "minor": 2, "revision": 0, "seen": 64000} and values.size == flatten(layers).size
    model = create_backbone("darknet19", include_classifier=True, pretrained=path)
    for conv, layer in zip(darknet_convs(model), layers):
        assert np.allclose(conv.bn.bias.detach().numpy(), layer["beta"], atol=1e-6)
        assert np.allclose(conv.bn.weight.detach().numpy(), layer["gamma"], atol=1e-6)
        assert np.allclose(conv.bn.running_mean.numpy(), layer["mean"], atol=1e-6)
        assert np.allclose(conv.bn.running_var.numpy(), layer["var"], atol=1e-6)
        assert np.allclose(conv.conv.weight.detach().numpy(), layer["kernel"], atol=1e-6)
    assert np.allclose(model.classifier.bias.detach().numpy(), layers[-1]["bias"], atol=1e-6)
    assert np.allclose(model.classifier.weight.detach().numpy(), layers[-1]["kernel"], atol=1e-6)


def test_darknet_weights_into_a_feature_extractor(darknet_file, tmp_path):
    path, layers = darknet_file
    model = create_backbone("darknet19", output_stride=16, out_stages=["stage3", "stage6"], pretrained=path)
    assert np.allclose(darknet_convs(model)[-1].conv.weight.detach().numpy(), layers[17]["kernel"], atol=1e-6)
    assert model.load_pretrained(path)["ignored"] == ["classifier (1000 classes)"]
    # A conv-only file (like darknet19_448.conv.23) into a model truncated after stage 4.
    conv_only = tmp_path / "darknet19.conv.23"
    write_darknet_file(conv_only, flatten(layers[:-1]), minor=1)  # format 0.1: a 32-bit "seen" counter
    short = create_backbone("darknet19", out_stages=["stage4"], pretrained=conv_only)
    assert np.allclose(darknet_convs(short)[-1].conv.weight.detach().numpy(), layers[7]["kernel"], atol=1e-6)


def test_darknet_weights_that_do_not_fit_are_reported(darknet_file, tmp_path):
    values = flatten(darknet_file[1][:-1])
    cut = tmp_path / "cut.weights"
    write_darknet_file(cut, values[: values.size - 1000])
    with pytest.raises(WeightsMismatchError, match=r"stage6\.5\.conv\.weight"):
        create_backbone("darknet19", pretrained=cut)
    padded = tmp_path / "padded.weights"
    write_darknet_file(padded, np.concatenate([values, np.zeros(7)]))
    with pytest.raises(WeightsMismatchError, match="7 trailing"):
        create_backbone("darknet19", pretrained=padded)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = create_backbone("darknet19").load_pretrained(cut, strict=False)
    assert report["missing"] == ["stage6.5.conv.weight"] and report["unexpected"] == [] and report["shape_mismatch"] == []
