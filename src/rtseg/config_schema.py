"""The type and range of every config key; :func:`validate_config` checks a merged config before any work.

Each key of :data:`rtseg.config.DEFAULTS` has a rule in :data:`SCHEMA`. A rule returns ``None`` when a value
fits, or a phrase saying what is expected. :func:`validate_config` collects every problem of a config (and
of each of its ``stages`` merged over it) and raises one :class:`~rtseg.config.ConfigError` listing them all,
each with the key path and the value. ``model.options`` is checked by the model registry when the model is
built (its keys depend on the model).
"""
from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

from rtseg.config_defaults import DEFAULTS, ConfigError, merge_config
from rtseg.limits import MAX_SIDE

__all__ = ["SCHEMA", "MAX_SIDE", "validate_config", "config_problems", "show"]


Rule = Callable[[Any], "str | None"]


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return (isinstance(v, (int, float)) and not isinstance(v, bool)) and math.isfinite(v)


def integer(lo: int | None = None, hi: int | None = None, nullable: bool = False) -> Rule:
    bounds = f" >= {lo}" if hi is None and lo is not None else (f" in [{lo}, {hi}]" if lo is not None else "")
    expected = f"an integer{bounds}" + (" or null" if nullable else "")

    def rule(v: Any) -> str | None:
        if v is None and nullable:
            return None
        if not _is_int(v) or (lo is not None and v < lo) or (hi is not None and v > hi):
            return expected
        return None

    return rule


def number(lo: float | None = None, hi: float | None = None, lo_open: bool = False, hi_open: bool = False, nullable: bool = False) -> Rule:
    parts = []
    if lo is not None:
        parts.append(f"{'>' if lo_open else '>='} {lo:g}")
    if hi is not None:
        parts.append(f"{'<' if hi_open else '<='} {hi:g}")
    expected = "a finite number" + (" " + " and ".join(parts) if parts else "") + (" or null" if nullable else "")

    def rule(v: Any) -> str | None:
        if v is None and nullable:
            return None
        if not _is_number(v):
            return expected
        if lo is not None and (v <= lo if lo_open else v < lo):
            return expected
        if hi is not None and (v >= hi if hi_open else v > hi):
            return expected
        return None

    return rule


def boolean(nullable: bool = False) -> Rule:
    def rule(v: Any) -> str | None:
        if isinstance(v, bool) or (v is None and nullable):
            return None
        return "true or false" + (" or null" if nullable else "")

    return rule


def choice(*values: Any) -> Rule:
    shown = ", ".join("null" if v is None else str(v).lower() if isinstance(v, bool) else str(v) for v in values)

    def rule(v: Any) -> str | None:
        # `True == 1` in Python: a boolean only matches a boolean choice
        ok = any(v is c if isinstance(c, bool) or c is None else (not isinstance(v, bool) and v == c) for c in values)
        return None if ok else f"one of {shown}"

    return rule


def text(nullable: bool = False, non_empty: bool = False) -> Rule:
    expected = ("a non-empty string" if non_empty else "a string") + (" or null" if nullable else "")

    def rule(v: Any) -> str | None:
        if v is None and nullable:
            return None
        if not isinstance(v, str) or (non_empty and not v.strip()):
            return expected
        return None

    return rule


def size_pair(nullable: bool = False) -> Rule:
    """[H, W] in pixels, each 1..MAX_SIDE."""
    expected = f"[H, W]: two integers in [1, {MAX_SIDE}]" + (" or null" if nullable else "")

    def rule(v: Any) -> str | None:
        if v is None and nullable:
            return None
        if not isinstance(v, (list, tuple)) or len(v) != 2 or not all(_is_int(s) and 1 <= s <= MAX_SIDE for s in v):
            return expected
        return None

    return rule


def list_of(item: Rule, what: str, nullable: bool = False, non_empty: bool = True) -> Rule:
    expected = f"a {'non-empty ' if non_empty else ''}list of {what}" + (" or null" if nullable else "")

    def rule(v: Any) -> str | None:
        if v is None and nullable:
            return None
        if not isinstance(v, (list, tuple)) or (non_empty and not v):
            return expected
        for i, x in enumerate(v):
            problem = item(x)
            if problem is not None:
                return f"{expected} (item {i}: {show(x)} is not {problem})"
        return None

    return rule


def any_of(*rules: Rule) -> Rule:
    def rule(v: Any) -> str | None:
        problems = [r(v) for r in rules]
        return None if any(p is None for p in problems) else " or ".join(dict.fromkeys(problems))

    return rule


def mapping(nullable: bool = False) -> Rule:
    def rule(v: Any) -> str | None:
        return None if isinstance(v, dict) or (v is None and nullable) else "a mapping (key: value)" + (" or null" if nullable else "")

    return rule


def _scale_range(v: Any) -> str | None:
    expected = "[low, high]: two finite numbers with 0 < low <= high <= 16"
    if not isinstance(v, (list, tuple)) or len(v) != 2 or not all(_is_number(x) for x in v):
        return expected
    lo, hi = v
    return None if 0 < lo <= hi <= 16 else expected


def _betas(v: Any) -> str | None:
    ok = isinstance(v, (list, tuple)) and len(v) == 2 and all(_is_number(b) and 0 <= b < 1 for b in v)
    return None if ok else "[beta1, beta2]: two numbers in [0, 1)"


def _lr_scale(v: Any) -> str | None:
    expected = "null or a mapping {parameter-name prefix: factor >= 0} (0 freezes those parameters)"
    if v is None:
        return None
    if not isinstance(v, dict) or not all(isinstance(k, str) and _is_number(f) and f >= 0 for k, f in v.items()):
        return expected
    return None


_DEVICE = re.compile(r"^(auto|cpu|mps|(cuda|xpu)(:\d+)?)$")


def _class_map(what: str, lists: bool = False) -> Rule:
    expected = f"null or a mapping {{{what}}}"

    def rule(v: Any) -> str | None:
        if v is None:
            return None
        if not isinstance(v, dict):
            return expected
        for name, target in v.items():
            ok = target is None and not lists or isinstance(target, str) or (
                lists and isinstance(target, list) and target and all(isinstance(t, str) for t in target))
            if not isinstance(name, str) or not ok:
                return expected
        return None

    return rule


def _device(v: Any) -> str | None:
    return None if isinstance(v, str) and _DEVICE.match(v) else "auto, cpu, cuda, cuda:N, mps or xpu"


def _normalization(v: Any) -> str | None:
    from rtseg.data.normalization import PRESETS

    if v is None or (isinstance(v, str) and v in PRESETS):
        return None
    return "null (the model's own) or a preset: " + ", ".join(PRESETS)


def _output_dir(v: Any) -> str | None:
    expected = "a non-empty folder path (it may contain {recipe})"
    if not isinstance(v, str) or not v.strip():
        return expected
    try:
        v.format(recipe="x")
    except (KeyError, IndexError, ValueError):
        return expected + "; other {...} fields are not filled in"
    return None


_positive_weight = number(lo=0.0)

# One rule per key of DEFAULTS (nested as DEFAULTS); "stages" is checked by merging each stage over the config.
SCHEMA: dict[str, Any] = {
    "recipe": text(nullable=True, non_empty=True),
    "description": text(),
    "model": {
        "name": text(non_empty=True), "num_classes": integer(2, 65535, nullable=True), "options": mapping(),
        "aux_heads": list_of(mapping(), "[{stage: NAME, weight: W}] entries", nullable=True),
        "weights": text(nullable=True, non_empty=True),
        "class_map": _class_map("dataset class: weights' class (or null)"),
    },
    "data": {
        "dataset": choice("synthetic", "cityscapes", "camvid", "folder"),
        "root": text(nullable=True, non_empty=True),
        "train_split": text(non_empty=True),
        "annotations": choice("fine", "coarse"),
        "val_split": text(non_empty=True),
        "image_size": size_pair(nullable=True),
        "crop_size": size_pair(nullable=True),
        "crop_sizes": list_of(size_pair(), f"[H, W] sizes (integers in [1, {MAX_SIDE}])", nullable=True),
        "scale_range": _scale_range,
        "hflip": boolean(),
        "vflip": boolean(),
        "translate": number(lo=0, hi=MAX_SIDE),
        "rotate": number(lo=0, hi=180),
        "color_jitter": number(lo=0, hi=1),
        "channel_noise": number(lo=0, hi=1),
        "normalization": _normalization,
        "cache": choice("auto", "memory", "off", True, False),  # YAML reads off/on as booleans
        "check_labels": boolean(),
        "label_scale": integer(1, 64),
        "input_scale": integer(1, 64),
        "train_samples": integer(1),
        "val_samples": integer(1),
        "seed": integer(0),
    },
    "optimizer": {
        "name": choice("sgd", "adam", "adamw"),
        "lr": number(lo=0, lo_open=True),
        "momentum": number(lo=0, hi=1, hi_open=True),
        "weight_decay": number(lo=0),
        "nesterov": boolean(),
        "betas": _betas,
        "eps": number(lo=0, lo_open=True),
        "lr_scale": _lr_scale,
    },
    "schedule": {
        "name": choice("poly", "step", "plateau", "constant"),
        "power": number(lo=0),
        "step_every_epochs": integer(1, nullable=True),
        "step_size": integer(1),
        "gamma": number(lo=0, hi=1, lo_open=True),
        "patience": integer(0),
        "warmup_iters": integer(0),
    },
    "loss": {
        "ignore_index": integer(-100, 65535),
        "class_weights": any_of(choice(None, "enet", "median-frequency"), list_of(_positive_weight, "numbers >= 0")),
        "class_weight_c": number(lo=1, lo_open=True),
        "reduction": choice("mean", "sum"),
        "name": choice("ce", "ohem", "dice", "lovasz", "focal"),
        "terms": list_of(mapping(), "[{name: LOSS, weight: W}] entries", nullable=True),
        "ohem_thresh": number(lo=0, hi=1, lo_open=True),
        "ohem_min_kept": integer(1, nullable=True),
        "dice_smooth": number(lo=0),
        "lovasz_classes": choice("present", "all"),
        "focal_gamma": number(lo=0),
        "aux_weight": number(lo=0),
    },
    "train": {
        "epochs": integer(1, 1_000_000),
        "batch_size": integer(1, 65536),
        "seed": integer(0),
        "num_workers": integer(0, 1024),
        "precision": choice("auto", "fp32", "bf16", "fp16"),
        "amp": boolean(),
        "compile": choice("auto", "on", "off", True, False),  # YAML reads on/off as booleans
        "val_every": integer(1),
        "device": _device,
        "max_iters_per_epoch": integer(1, nullable=True),
        "threads": integer(1, 4096, nullable=True),
        "sync_bn": boolean(),
        "tensorboard": choice(True, False, "auto", "off", None),
        "ema": number(lo=0, hi=1, lo_open=True, hi_open=True, nullable=True),
        "ema_bn": choice("reestimate", "average", "copy"),
        "ema_bn_batches": integer(1, 100_000),
        "freeze": list_of(text(non_empty=True), "part names or module paths (e.g. [encoder])", nullable=True),
        "freeze_epochs": integer(1, nullable=True),
    },
    "distill": {
        "teacher": any_of(text(nullable=True, non_empty=True), list_of(text(non_empty=True), "teachers (MODEL@WEIGHTS or files)")),
        "loss": choice("kl", "cwd"),
        "temperature": number(lo=0, lo_open=True, hi=100),
        "weight": number(lo=0),
        "class_map": _class_map("student class: teacher class or [teacher classes]", lists=True),
        "void": choice("drop", "ignore"),
        "pixels": choice("labelled", "correct"),
    },
    "logging": {
        "loggers": list_of(choice("csv", "tensorboard", "wandb", "mlflow"), "logger names (csv, tensorboard, wandb, mlflow)", non_empty=False),
        "wandb": {"project": text(non_empty=True), "entity": text(nullable=True), "mode": choice(None, "online", "offline", "disabled")},
        "mlflow": {"tracking_uri": text(nullable=True), "experiment": text(non_empty=True)},
    },
    "stages": None,  # checked by merging
    "gradual_grouping": {"ramp_epochs": number(lo=0), "start_epoch": number(lo=0), "shape": choice("linear", "cosine")},
    "eval": {
        "scales": list_of(number(lo=0, hi=16, lo_open=True), "scales > 0 and <= 16"),
        "flip": boolean(),
        "window": size_pair(nullable=True),
        "stride": size_pair(nullable=True),
    },
    "output": {"dir": _output_dir},
}


def show(value: Any) -> str:
    """A value as a user would write it in YAML: true, null, [0, 0], 'abc', nan."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(show(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {show(v)}" for k, v in value.items()) + "}"
    return repr(value)


def _check(config: Any, schema: dict[str, Any], prefix: str, problems: list[str]) -> None:
    for key, rule in schema.items():
        where = f"{prefix}{key}"
        if key not in config:
            continue  # merge_config fills every key from DEFAULTS; a partial config is checked for what it has
        value = config[key]
        if isinstance(rule, dict):
            if not isinstance(value, dict):
                problems.append(f"{where}: got {show(value)}, expected a section (a mapping of {', '.join(rule)})")
            else:
                _check(value, rule, where + ".", problems)
        elif rule is not None:
            problem = rule(value)
            if problem is not None:
                problems.append(f"{where}: got {show(value)}, expected {problem}")


def _cross_checks(config: dict[str, Any], prefix: str, problems: list[str]) -> None:
    """Rules between keys."""
    ev = config.get("eval")
    if isinstance(ev, dict) and ev.get("stride") is not None and size_pair()(ev["stride"]) is None:
        window = ev.get("window")
        if window is None:
            problems.append(f"{prefix}eval.stride: got {show(ev['stride'])}, expected null without eval.window (a stride needs a window)")
        elif size_pair()(window) is None and any(s > w for s, w in zip(ev["stride"], window)):
            problems.append(f"{prefix}eval.stride: got {show(ev['stride'])}, expected no side larger than eval.window {show(window)} (windows would leave gaps)")
    model, loss = config.get("model"), config.get("loss")
    if isinstance(model, dict) and isinstance(model.get("options"), dict) and "weights" in model["options"]:
        problems.append(f"{prefix}model.options.weights: weights are not a build option; start from trained weights with "
                        f"model.weights={show(model['options']['weights'])} (rtseg train --weights)")
    if isinstance(model, dict) and isinstance(loss, dict) and _is_int(model.get("num_classes")) and isinstance(loss.get("class_weights"), list):
        if len(loss["class_weights"]) != model["num_classes"]:
            problems.append(f"{prefix}loss.class_weights: got {len(loss['class_weights'])} weights, expected one per class "
                            f"(model.num_classes={model['num_classes']})")


def config_problems(config: Any) -> list[str]:
    """Every problem of ``config`` and of each of its stages merged over it, one line each (empty: valid)."""
    if not isinstance(config, dict):
        return [f"config: got {show(config)}, expected a mapping of sections"]
    problems: list[str] = []
    _check(config, SCHEMA, "", problems)
    stages = config.get("stages")
    if stages is None:
        _cross_checks(config, "", problems)
        return problems
    if not isinstance(stages, list) or not stages or not all(isinstance(s, dict) for s in stages):
        problems.append(f"stages: got {show(stages)}, expected null or a non-empty list of mappings (partial configs)")
        return problems
    base = {k: v for k, v in config.items() if k != "stages"}
    for i, stage in enumerate(stages):
        where = f"stages[{i}]."
        if "name" in stage and (not isinstance(stage["name"], str) or not stage["name"].strip()):
            problems.append(f"{where}name: got {show(stage['name'])}, expected a non-empty string")
        body = {k: v for k, v in stage.items() if k != "name"}
        if "stages" in body:
            problems.append(f"{where}stages: a stage cannot have stages of its own")
            continue
        try:
            merged = merge_config(base, body, where, DEFAULTS)
        except ConfigError as exc:
            problems.append(str(exc))
            continue
        stage_problems: list[str] = []
        _check(body, SCHEMA, "", stage_problems)  # what the stage itself sets, reported once with its path
        problems.extend(where + p for p in stage_problems)
        _cross_checks(merged, where, problems)
    return problems


def validate_config(config: Any) -> Any:
    """Return ``config`` unchanged, or raise :class:`ConfigError` listing every key whose value does not fit."""
    problems = config_problems(config)
    if problems:
        if len(problems) == 1:  # one problem, one line
            raise ConfigError(f"invalid config value: {problems[0]}")
        raise ConfigError(f"{len(problems)} invalid config values:\n  " + "\n  ".join(problems))
    return config
