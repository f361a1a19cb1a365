"""The ESSNet recipes load against the config schema and carry the thesis's hyper-parameters (section 3.4.1, 3.5.1)."""
import pytest

import rtseg
from rtseg.config import load_config, stage_config
from rtseg.models.gradual_grouping import GradualGroupingSchedule


def _stage(config, name):
    index = next(i for i, s in enumerate(config["stages"]) if s["name"] == name)
    return stage_config(config, index)


@pytest.mark.parametrize("recipe", ["essnet-cityscapes", "essnet-gradual-cityscapes"])
def test_recipe_loads_with_the_thesis_hyper_parameters(recipe):
    config = load_config(recipe)
    assert config["optimizer"]["name"] == "adam"
    assert config["optimizer"]["lr"] == pytest.approx(5e-4) and isinstance(config["optimizer"]["lr"], float)
    assert config["optimizer"]["weight_decay"] == pytest.approx(2e-4)
    assert config["schedule"]["name"] == "plateau" and config["schedule"]["gamma"] == 0.5
    assert config["loss"]["class_weights"] == "enet" and config["loss"]["class_weight_c"] == pytest.approx(1.10)
    assert config["data"]["hflip"] and config["data"]["vflip"] and config["data"]["scale_range"] == [0.5, 2.0]
    assert config["data"]["image_size"] == [512, 1024]  # the network sees 1024x512
    rtseg.create_model(config["model"]["name"], **config["model"]["options"])
    encoder = _stage(config, config["stages"][0]["name"])
    # the encoder stage trains on labels at 1/8 of the network input
    assert encoder["data"]["label_scale"] == 8
    assert encoder["model"]["options"]["decoder"] == "nodec"


def test_gradual_recipe_ramps_alpha_then_nearly_freezes_the_encoder():
    config = load_config("essnet-gradual-cityscapes")
    encoder = _stage(config, "encoder-gradual")
    model = rtseg.create_model(encoder["model"]["name"], **encoder["model"]["options"])
    schedule = GradualGroupingSchedule.from_config(encoder["gradual_grouping"])
    assert schedule.apply(model, 0) == 1.0
    assert schedule.alpha_at(encoder["train"]["epochs"] - 1) == 0.0  # fine-tuning epochs at alpha = 0 remain
    assert 0 < schedule.ramp_epochs < encoder["train"]["epochs"]
    warmup = _stage(config, "decoder-warmup")
    assert warmup["optimizer"]["lr"] * warmup["optimizer"]["lr_scale"]["encoder"] == pytest.approx(5e-20)
    joint = _stage(config, "joint")
    assert joint["optimizer"]["lr_scale"] is None
    assert "gradual_grouping" not in joint["model"]["options"]
