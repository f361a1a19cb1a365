"""Config validation: every key has a type and a range; one error lists every bad key with its value."""
import copy

import pytest

from rtseg.config import DEFAULTS, ConfigError, list_recipes, load_config
from rtseg.config_schema import SCHEMA, config_problems, validate_config
from rtseg.errors import UserError


def _keys(tree, prefix=""):
    for key, value in tree.items():
        if isinstance(value, dict) and key not in ("options",):
            yield from _keys(value, f"{prefix}{key}.")
        else:
            yield prefix + key


def test_every_default_key_has_a_rule_and_defaults_validate():
    assert sorted(_keys(DEFAULTS)) == sorted(_keys(SCHEMA))
    assert config_problems(copy.deepcopy(DEFAULTS)) == []


@pytest.mark.parametrize("recipe", list_recipes())
def test_every_packaged_recipe_validates(recipe):
    config = load_config(recipe)
    assert config_problems(config) == []


BAD = [
    ("train.batch_size=0", "train.batch_size"),
    ("train.batch_size=2.5", "train.batch_size"),
    ("train.batch_size=true", "train.batch_size"),
    ("train.epochs=0", "train.epochs"),
    ("train.epochs=-1", "train.epochs"),
    ("train.epochs=abc", "train.epochs"),
    ("optimizer.lr=.nan", "optimizer.lr"),
    ("optimizer.lr=.inf", "optimizer.lr"),
    ("optimizer.lr=-0.1", "optimizer.lr"),
    ("optimizer.lr=0", "optimizer.lr"),
    ("optimizer.momentum=1.5", "optimizer.momentum"),
    ("optimizer.betas=[0.9]", "optimizer.betas"),
    ("optimizer.name=lion", "optimizer.name"),
    ("data.image_size=[0,0]", "data.image_size"),
    ("data.image_size=64", "data.image_size"),
    ("data.image_size=[100000,100000]", "data.image_size"),
    ("data.scale_range=[0,0]", "data.scale_range"),
    ("data.scale_range=[1.5,0.5]", "data.scale_range"),
    ("data.crop_sizes=[[512,1024],[0,64]]", "data.crop_sizes"),
    ("data.crop_size=[64]", "data.crop_size"),
    ("data.hflip=maybe", "data.hflip"),
    ("data.hflip=1", "data.hflip"),
    ("data.dataset=imagenet", "data.dataset"),
    ("data.color_jitter=2", "data.color_jitter"),
    ("data.normalization=nope", "data.normalization"),
    ("data.label_scale=0", "data.label_scale"),
    ("model.num_classes=1", "model.num_classes"),
    ("model.num_classes=two", "model.num_classes"),
    ("schedule.name=cosine", "schedule.name"),
    ("schedule.gamma=0", "schedule.gamma"),
    ("loss.class_weights=[1,-2]", "loss.class_weights"),
    ("loss.class_weights=inverse", "loss.class_weights"),
    ("loss.reduction=max", "loss.reduction"),
    ("train.precision=fp8", "train.precision"),
    ("train.device=tpu", "train.device"),
    ("train.threads=0", "train.threads"),
    ("train.val_every=0", "train.val_every"),
    ("train.num_workers=-1", "train.num_workers"),
    ("eval.scales=[-1]", "eval.scales"),
    ("eval.scales=[0]", "eval.scales"),
    ("eval.scales=[]", "eval.scales"),
    ("eval.window=[0,64]", "eval.window"),
    ("gradual_grouping.shape=square", "gradual_grouping.shape"),
    ("output.dir=''", "output.dir"),
    ("model.options=3", "model.options"),
    ("output.dir=runs/{model}", "output.dir"),
    ("optimizer.lr_scale={encoder: -1}", "optimizer.lr_scale"),
]


@pytest.mark.parametrize("override,key", BAD, ids=[b[0] for b in BAD])
def test_bad_value_is_refused_naming_key_and_value(override, key):
    with pytest.raises(ConfigError) as info:
        load_config("demo", [override])
    message = str(info.value)
    assert key in message and "expected" in message
    typed = override.split("=", 1)[1].replace(".nan", "nan").replace(".inf", "inf").replace(",", ", ")
    assert f"got {typed}" in message or f"got {typed!r}" in message, message


def test_all_problems_are_listed_at_once_and_it_is_a_user_error():
    with pytest.raises(UserError) as info:
        load_config("demo", ["train.batch_size=0", "optimizer.lr=.nan", "data.hflip=maybe"])
    message = str(info.value)
    assert "3 invalid config values" in message
    for key in ("train.batch_size", "optimizer.lr", "data.hflip"):
        assert key in message


def test_section_that_is_a_number(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("model: {name: erfnet}\ntrain: 5\n")
    with pytest.raises(ConfigError, match=r"train: got 5, expected a section"):
        load_config(path)


def test_stage_values_are_checked_with_their_stage_path(tmp_path):
    path = tmp_path / "staged.yaml"
    path.write_text("stages:\n  - name: a\n    train: {epochs: 2}\n  - name: b\n    train: {epochs: 0}\n")
    with pytest.raises(ConfigError, match=r"stages\[1\]\.train\.epochs: got 0"):
        load_config(path)
    path.write_text("stages:\n  - name: a\n    train: 3\n")
    with pytest.raises(ConfigError, match=r"stages\[0\]\.train: got 3"):
        load_config(path)
    with pytest.raises(ConfigError, match=r"stages: got \[\], expected null or a non-empty list"):
        validate_config({**copy.deepcopy(DEFAULTS), "stages": []})


def test_good_values_pass():
    config = load_config("demo", ["train.batch_size=1", "data.cache=off", "train.device=cuda:1", "loss.class_weights=[1, 2.5]",
                                  "data.crop_sizes=[[32,32],[64,48]]", "model.num_classes=2", "optimizer.lr_scale={encoder: 1.0e-16, level1: 0.0}"])
    assert config["train"]["batch_size"] == 1


def test_cross_key_rules():
    with pytest.raises(ConfigError, match=r"loss.class_weights: got 2 weights, expected one per class \(model.num_classes=3\)"):
        load_config("demo", ["model.num_classes=3", "loss.class_weights=[1, 2]"])
    with pytest.raises(ConfigError, match="a stride needs a window"):
        load_config("demo", ["eval.stride=[32,32]"])
    with pytest.raises(ConfigError, match="leave gaps"):
        load_config("demo", ["eval.window=[64,64]", "eval.stride=[65,32]"])
    load_config("demo", ["eval.window=[64,64]", "eval.stride=[64,32]", "output.dir=out/{recipe}-x"])
