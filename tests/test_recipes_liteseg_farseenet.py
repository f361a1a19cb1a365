"""The LiteSeg and FarSee-Net training recipes load against the config schema and say what the papers say."""
import pytest
import torch

import rtseg
from rtseg.config import load_config

LITESEG = ["liteseg-darknet19", "liteseg-mobilenetv2", "liteseg-shufflenet"]


@pytest.mark.parametrize("recipe", LITESEG + ["farseenet"])
def test_recipe_loads_and_builds_its_model(recipe):
    cfg = load_config(recipe)
    assert cfg["recipe"] == recipe and cfg["model"]["name"] in rtseg.list_models()
    options = {k: v for k, v in cfg["model"]["options"].items() if k != "pretrained"}  # no downloads in tests
    with torch.device("meta"):
        model = rtseg.create_model(cfg["model"]["name"], num_classes=cfg["model"]["num_classes"], **options)
    assert model.num_classes == 19


@pytest.mark.parametrize("recipe", LITESEG)
def test_liteseg_recipe_follows_section_iii_b(recipe):
    cfg = load_config(recipe)
    opt, sched = cfg["optimizer"], cfg["schedule"]
    assert (opt["name"], opt["momentum"], opt["nesterov"], opt["weight_decay"]) == ("sgd", 0.9, True, 4e-5)
    assert opt["lr"] == (1e-8 if recipe == "liteseg-darknet19" else 1e-7)
    assert (sched["name"], sched["power"], sched["step_every_epochs"]) == ("poly", 0.9, 5)
    assert [s["name"] for s in cfg["stages"]] == ["coarse", "fine"]
    assert cfg["stages"][0]["train"]["epochs"] == 20 and cfg["stages"][0]["data"]["annotations"] == "coarse"
    assert len(cfg["data"]["crop_sizes"]) > 1  # multi-scale training


def test_farseenet_recipe_follows_section_iv_b():
    cfg = load_config("farseenet")
    assert (cfg["optimizer"]["lr"], cfg["optimizer"]["momentum"], cfg["train"]["batch_size"], cfg["train"]["epochs"]) == (0.1, 0.9, 16, 400)
    assert (cfg["schedule"]["name"], cfg["schedule"]["step_size"], cfg["schedule"]["gamma"]) == ("step", 50, 0.9)
    data = cfg["data"]
    assert data["input_scale"] == 2 and data["image_size"] == [1024, 2048]  # half-resolution input, full-resolution labels
    assert data["hflip"] and data["rotate"] > 0 and data["channel_noise"] > 0 and data["scale_range"] != [1.0, 1.0]
