"""Training configs: small YAML files naming a recipe, merged over defaults, with ``key=value`` overrides."""
from __future__ import annotations

import copy
import difflib
import re
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from rtseg.errors import UserError

__all__ = ["DEFAULTS", "ConfigError", "load_config", "apply_overrides", "list_recipes", "resolve_config_path", "merge_config"]


class ConfigError(UserError, ValueError):
    """A config file or override that does not fit the schema."""


class _Loader(yaml.SafeLoader):
    """YAML 1.1 reads ``5e-4`` as a string; recipes write learning rates that way, so read it as a float."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*\.[0-9_]*(?:[eE][-+]?[0-9]+)?|[0-9][0-9_]*[eE][-+]?[0-9]+|\.[0-9_]+(?:[eE][-+]?[0-9]+)?|\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"),
    list("-+0123456789."),
)


def yaml_load(text: str):
    return yaml.load(text, Loader=_Loader)


# Every key a config may set, with its default. A recipe file sets only what differs.
DEFAULTS: dict[str, Any] = {
    "recipe": None,  # a short name, e.g. "fplnet-cityscapes"
    "description": "",  # where the recipe comes from (paper section)
    "model": {"name": "erfnet", "num_classes": None, "options": {}},
    "data": {
        "dataset": "synthetic",  # synthetic | cityscapes | camvid | folder
        "root": None,
        "train_split": "train",
        "annotations": "fine",  # cityscapes: fine | coarse (gtCoarse over train + train_extra, for coarse pretraining)
        "val_split": "val",
        "image_size": [256, 512],  # H, W the images are resized to before augmentation (synthetic: drawn size)
        "crop_size": None,  # H, W random crop after scaling (None: no crop)
        # Several crop sizes: each epoch passes over the training set once per [H, W] (LiteSeg's
        # multi-scale training; overrides crop_size); every batch holds one size.
        "crop_sizes": None,
        "scale_range": [1.0, 1.0],  # random rescale factor range
        "hflip": False,
        "vflip": False,
        "translate": 0,  # max random translation in pixels (uncovered label pixels are ignored)
        "rotate": 0.0,  # max random rotation in degrees (uncovered label pixels are ignored)
        "color_jitter": 0.0,  # brightness/contrast/saturation factors drawn from [1 - s, 1 + s]
        "channel_noise": 0.0,  # std of a per-image offset per colour channel, as a fraction of 255
        "normalization": None,  # preset name; None: the model's own
        # auto | memory | off: decode the files once into memory (at image_size) when they fit in a quarter
        # of the free memory; the arrays are those the transforms would read, so results do not change
        "cache": "auto",
        "check_labels": True,  # scan every label map once for values outside the classes (remembered per file list)
        "label_scale": 1,  # labels downsampled by this factor (8 for encoder-only training)
        "input_scale": 1,  # input downsampled by this factor, labels kept (low-resolution input)
        "train_samples": 200,  # synthetic only
        "val_samples": 40,  # synthetic only
        "seed": 0,  # synthetic only: which scenes are drawn
    },
    "optimizer": {
        "name": "sgd",
        "lr": 0.01,
        "momentum": 0.9,
        "weight_decay": 1e-4,
        "nesterov": False,
        "betas": [0.9, 0.999],
        "eps": 1e-8,
        # {parameter-name prefix: factor}: learning rate multiplied by factor for those parameters,
        # e.g. {encoder: 1.0e-16} nearly freezes an encoder (ESSNet thesis section 3.5.1). None: one rate.
        "lr_scale": None,
    },
    "schedule": {
        "name": "poly",  # poly | step | plateau | constant
        "power": 0.9,
        "step_every_epochs": None,  # poly: None updates every iteration; k updates once every k epochs
        "step_size": 50,  # step: epochs between decays
        "gamma": 0.1,  # step / plateau: decay factor
        "patience": 5,  # plateau
        "warmup_iters": 0,
    },
    # class_weights: None | enet | median-frequency | [list]. reduction: mean | sum over pixels (LiteSeg's
    # official code sums, hence its learning rates of 1e-7 / 1e-8).
    "loss": {"ignore_index": 255, "class_weights": None, "class_weight_c": 1.02, "reduction": "mean"},
    "train": {
        "epochs": 10,
        "batch_size": 8,
        "seed": 0,
        "num_workers": 0,
        # auto | fp32 | bf16 | fp16: auto trains in bf16 autocast (channels-last) on CPUs with native bf16,
        # bf16 or fp16 (with gradient scaling) on CUDA, fp32 elsewhere; the loss is always fp32
        "precision": "auto",
        "amp": False,  # older switch: with precision auto, true means fp16 on CUDA
        "val_every": 1,
        "device": "auto",
        "max_iters_per_epoch": None,
        "threads": None,
        "sync_bn": False,  # torchrun runs: convert BatchNorm to SyncBatchNorm
        "tensorboard": "auto",  # true | false | auto (log to OUT/tensorboard when tensorboard is installed)
    },
    # Multi-stage recipes (e.g. encoder first, then the full network): a list of partial configs
    # merged over the rest of this file, run in order, each stage starting from the previous one's weights.
    "stages": None,
    # Gradual grouping (ESSNet thesis section 3.5), for models built with gradual_grouping=True: alpha of
    # every rtseg.gradual_grouping.GradualGroupedConv2d goes from 1 (dense) to 0 (grouped) over ramp_epochs
    # starting at start_epoch (shape linear | cosine), then stays 0. See GradualGroupingSchedule.from_config.
    "gradual_grouping": {"ramp_epochs": 0, "start_epoch": 0, "shape": "linear"},
    # Validation protocol (rtseg.evaluation.EvalProtocol): input scales whose probabilities are averaged,
    # horizontal-flip averaging, and sliding-window inference with [H, W] windows (None: whole image).
    "eval": {"scales": [1.0], "flip": False, "window": None, "stride": None},
    "output": {"dir": "runs/{recipe}", "keep_last": True},
}


def merge_config(base: dict[str, Any], update: dict[str, Any], path: str = "", schema: dict[str, Any] | None = None) -> dict[str, Any]:
    """``base`` updated by ``update`` recursively (copies); with a ``schema``, unknown keys are refused by name."""
    out = copy.deepcopy(base)
    for key, value in update.items():
        where = f"{path}{key}"
        if schema is not None and key not in schema:
            close = difflib.get_close_matches(key, list(schema), n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise ConfigError(f"unknown config key {where!r}{hint}; allowed at this level: {', '.join(schema)}")
        sub_schema = schema.get(key) if schema is not None else None
        free_form = key in ("options", "stages") or not isinstance(sub_schema, dict)
        if isinstance(value, dict) and isinstance(out.get(key), dict) and not free_form:
            out[key] = merge_config(out[key], value, where + ".", sub_schema)
        else:
            out[key] = copy.deepcopy(value)
    return out


def list_recipes() -> list[str]:
    """Recipe names shipped with rtseg (``rtseg train NAME`` accepts them)."""
    folder = resources.files("rtseg") / "configs"
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


def resolve_config_path(name_or_path: str | Path) -> Path:
    """A config file path, or the packaged recipe of that name."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    packaged = resources.files("rtseg") / "configs" / f"{name_or_path}.yaml"
    if packaged.is_file():
        return Path(str(packaged))
    recipes = list_recipes()
    close = difflib.get_close_matches(str(name_or_path), recipes, n=3)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    raise ConfigError(f"config {str(name_or_path)!r} is neither a file nor a packaged recipe.{hint} Packaged recipes: {', '.join(recipes)}")


def _parse_value(text: str) -> Any:
    try:
        return yaml_load(text)
    except yaml.YAMLError:
        return text


def apply_overrides(config: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``section.key=value`` overrides (values parsed as YAML: ``train.epochs=3``, ``data.crop_size=[64,64]``)."""
    config = copy.deepcopy(config)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value (e.g. train.epochs=3)")
        dotted, text = item.split("=", 1)
        keys = dotted.strip().split(".")
        update: dict[str, Any] = {}
        cursor = update
        for k in keys[:-1]:
            cursor = cursor.setdefault(k, {})
        cursor[keys[-1]] = _parse_value(text)
        config = merge_config(config, update, "", DEFAULTS if keys[0] not in ("stages",) else None)
    return config


def load_config(name_or_path: str | Path, overrides: list[str] | None = None) -> dict[str, Any]:
    """Read a recipe (file or packaged name), merge it over :data:`DEFAULTS` and apply ``overrides``."""
    path = resolve_config_path(name_or_path)
    try:
        raw = yaml_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config {str(path)!r} is not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"config {str(path)!r} must be a mapping of sections, got {type(raw).__name__}")
    config = merge_config(DEFAULTS, raw, "", DEFAULTS)
    if config["recipe"] is None:
        config["recipe"] = path.stem
    config = apply_overrides(config, overrides or [])
    stages = config.get("stages")
    if stages is not None:
        if not isinstance(stages, list) or not all(isinstance(s, dict) for s in stages):
            raise ConfigError(f"config {str(path)!r}: 'stages' must be a list of mappings")
        for i, stage in enumerate(stages):
            body = {k: v for k, v in stage.items() if k != "name"}
            merge_config(config, body, f"stages[{i}].", DEFAULTS)  # validates the keys
    return config
