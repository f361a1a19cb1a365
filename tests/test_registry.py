import pytest
import torch

import rtseg
from rtseg.io import WeightsMismatchError
from rtseg.registry import UnknownModelError, UnknownOptionError, get_entry


def test_list_models_contains_baselines():
    names = rtseg.list_models()
    for name in ("erfnet", "erfnet-encoder", "espnet", "espnet-c"):
        assert name in names
    assert names == sorted(names)
    assert rtseg.list_models("esp*") and all(n.startswith("esp") for n in rtseg.list_models("esp*"))


def test_unknown_model_lists_close_names():
    with pytest.raises(UnknownModelError) as err:
        rtseg.create_model("erfnett")
    assert "erfnet" in str(err.value) and "erfnett" in str(err.value)


def test_unknown_option_names_it_and_lists_supported():
    with pytest.raises(UnknownOptionError) as err:
        rtseg.create_model("espnet", depth=3)
    msg = str(err.value)
    assert "'depth'" in msg and "p=2" in msg and "q=8" in msg


def test_options_are_passed_through():
    small = rtseg.create_model("espnet-c", q=3)
    full = rtseg.create_model("espnet-c")
    assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in full.parameters())
    assert get_entry("espnet").options == {"p": 2, "q": 8, "decoder_skip": "level1"}


def test_bad_class_count_is_rejected():
    with pytest.raises(ValueError, match="num_classes"):
        rtseg.create_model("erfnet", num_classes=0)


def test_weights_for_another_class_count_name_the_keys(tmp_path):
    path = tmp_path / "w.pth"
    torch.save(rtseg.create_model("espnet-c", num_classes=11).state_dict(), path)
    with pytest.raises(WeightsMismatchError) as err:
        rtseg.create_model("espnet-c", num_classes=19, weights=str(path))
    msg = str(err.value)
    assert "classifier.conv.weight" in msg and "(11, 256, 1, 1)" in msg and "num_classes" in msg


def test_weights_for_another_architecture_list_missing_and_unexpected(tmp_path):
    path = tmp_path / "w.pth"
    torch.save(rtseg.create_model("espnet-c").state_dict(), path)
    with pytest.raises(WeightsMismatchError) as err:
        rtseg.create_model("erfnet", weights=str(path))
    msg = str(err.value)
    assert "missing from the file" in msg and "unexpected in the file" in msg
    model = rtseg.create_model("espnet", weights=None)
    report = rtseg.io.load_weights(model, str(path), strict=False)
    assert report["missing"] and report["unexpected"]


def test_module_prefix_from_data_parallel_is_stripped(tmp_path):
    model = rtseg.create_model("espnet-c", num_classes=4)
    path = tmp_path / "dp.pth"
    torch.save({f"module.{k}": v for k, v in model.state_dict().items()}, path)
    loaded = rtseg.create_model("espnet-c", num_classes=4, weights=str(path))
    for k, v in model.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k])


def test_a_value_outside_the_literal_choices_names_option_value_and_choices():
    from rtseg.registry import InvalidOptionError

    with pytest.raises(InvalidOptionError) as err:
        rtseg.create_model("espnet", decoder_skip="level2")
    msg = str(err.value)
    assert "decoder_skip" in msg and "'level2'" in msg and "'level1', 'level1-image'" in msg
    assert isinstance(err.value, ValueError)
    with pytest.raises(InvalidOptionError, match="method must be one of 1, 2, 3, 4; got True"):
        rtseg.create_model("farseenet", method=True)  # a bool is not the int 1


def test_mixed_annotations_accept_their_other_types():
    from rtseg.registry import InvalidOptionError

    with pytest.raises(InvalidOptionError, match=r"low_level_reduce must be one of 'auto', None, or an integer 1..4096; got 'half'"):
        rtseg.create_model("liteseg-mobilenetv2", low_level_reduce="half")
    with torch.device("meta"):
        model = rtseg.create_model("liteseg-mobilenetv2", low_level_reduce=32)
    assert model.decoder.reduce[0][1].out_channels == 32


def test_option_specs_list_defaults_and_choices():
    from rtseg.registry import option_specs

    specs = {s.name: s for s in option_specs("essnet-d")}
    assert specs["decoder"].default == "upsampling" and specs["decoder"].choices == ("deconv", "upsampling", "trans4x", "trans8x", "nodec", "ppm")
    assert specs["groups"].choices is None and specs["groups"].annotation == "int 1..256"
    assert specs["decoder_layers"].describe() == "decoder_layers='mixed' (one of 'non-bt-1d', 'conv-module', 'mixed')"
    assert [s.name for s in option_specs("farseenet")] == list(get_entry("farseenet").options)
    assert option_specs("liteseg-darknet19")[0].name == "backbone"
