"""Training configs: small YAML files naming a recipe, merged over defaults, with ``key=value`` overrides."""
from __future__ import annotations

import copy
import difflib
import re
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from rtseg.config_defaults import DEFAULTS, ConfigError, merge_config, stage_config
from rtseg.config_schema import validate_config

__all__ = [
    "DEFAULTS", "ConfigError", "load_config", "apply_overrides", "list_recipes", "resolve_config_path", "merge_config", "stage_config",
    "dump_config",
]


# User YAML (recipes, dataset.yaml, class maps, overrides) is small; bounding it keeps a hostile file from taking the
# machine: a text limit, and no aliases (``*name``), whose nesting expands a few lines into gigabytes.
MAX_YAML_CHARS = 1_000_000


class _Loader(yaml.SafeLoader):
    """YAML 1.1 reads ``5e-4`` as a string; recipes write learning rates that way, so read it as a float.
    Aliases are refused (see :data:`MAX_YAML_CHARS`)."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(None, None, f"found the alias *{event.anchor}: rtseg's YAML files do not "
                                              "expand aliases (a few nested ones can grow into gigabytes); write the values out",
                                              event.start_mark)
        return super().compose_node(parent, index)


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*\.[0-9_]*(?:[eE][-+]?[0-9]+)?|[0-9][0-9_]*[eE][-+]?[0-9]+|\.[0-9_]+(?:[eE][-+]?[0-9]+)?|\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"),
    list("-+0123456789."),
)


def yaml_load(text: str):
    """Parse user YAML safely (no Python tags), without aliases and within :data:`MAX_YAML_CHARS`; raises
    ``yaml.YAMLError`` for either."""
    if len(text) > MAX_YAML_CHARS:
        raise yaml.YAMLError(f"the text is {len(text):,} characters; rtseg reads YAML files of at most {MAX_YAML_CHARS:,}")
    return yaml.load(text, Loader=_Loader)


class _Dumper(yaml.SafeDumper):
    """Writes a value each time it occurs (no anchors and aliases), so what rtseg writes, rtseg reads back."""

    def ignore_aliases(self, data):
        return True


def dump_config(config: dict[str, Any]) -> str:
    """``config`` as YAML text, keys in their order (what a run writes to ``config.yaml``; :func:`load_config` reads it back)."""
    return yaml.dump(config, Dumper=_Dumper, sort_keys=False)


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


def _set_path(target: dict[str, Any], keys: list[str], value: Any) -> None:
    """``target[k1][k2]...[kn] = value``, creating (or replacing non-mapping) levels on the way."""
    for k in keys[:-1]:
        if not isinstance(target.get(k), dict):
            target[k] = {}
        target = target[k]
    target[keys[-1]] = copy.deepcopy(value)


def _stage_index(config: dict[str, Any], key: str, item: str) -> int:
    """The stage ``key`` names: its position (0-based) or its ``name``."""
    stages = config.get("stages")
    if not isinstance(stages, list) or not stages:
        raise ConfigError(f"override {item!r}: this config has no stages")
    names = [(s.get("name") if isinstance(s, dict) else None) or f"stage{i + 1}" for i, s in enumerate(stages)]
    if key.isdigit() and int(key) < len(stages):
        return int(key)
    if key in names:
        return names.index(key)
    listing = ", ".join(f"{i} ({n})" for i, n in enumerate(names))
    raise ConfigError(f"override {item!r}: no stage {key!r}; this config's stages are {listing} (by position or name)")


def apply_overrides(config: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``section.key=value`` overrides (values parsed as YAML: ``train.epochs=3``, ``data.crop_size=[64,64]``).

    In a staged config, ``stages.I.section.key=value`` (``I`` a stage's position from 0 or its name) sets the key in
    that stage alone, and a plain ``section.key=value`` holds for every stage: it is set at the top of the config and
    in every stage that sets anything in that section, so no stage's own value overrides the command line. Overrides
    apply in order; a later one wins over an earlier one.
    """
    config = copy.deepcopy(config)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value (e.g. train.epochs=3)")
        dotted, text = item.split("=", 1)
        keys = dotted.strip().split(".")
        value = _parse_value(text)
        if keys[0] == "stages" and len(keys) > 1:
            index = _stage_index(config, keys[1], item)
            if len(keys) > 2:
                _set_path(config["stages"][index], keys[2:], value)
            elif isinstance(value, dict):
                config["stages"][index] = value
            else:
                raise ConfigError(f"override {item!r}: a stage is a mapping of sections, e.g. {keys[0]}.{keys[1]}={{train: {{epochs: 1}}}}")
            continue
        update: dict[str, Any] = {}
        _set_path(update, keys, value)
        config = merge_config(config, update, "", DEFAULTS if keys[0] != "stages" else None)
        if keys[0] != "stages" and isinstance(config.get("stages"), list):
            for stage in config["stages"]:
                if isinstance(stage, dict) and keys[0] in stage:
                    _set_path(stage, keys, value)
    return config


def load_config(name_or_path: str | Path, overrides: list[str] | None = None) -> dict[str, Any]:
    """Read a recipe (file or packaged name), merge it over :data:`DEFAULTS` and apply ``overrides``."""
    path = resolve_config_path(name_or_path)
    try:
        raw = yaml_load(path.read_text()) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config {str(path)!r} is not valid YAML: {' '.join(str(exc).split())[:400]}") from None
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
        for i in range(len(stages)):
            stage_config(config, i)  # validates the keys
    return validate_config(config)  # types and ranges of every key
