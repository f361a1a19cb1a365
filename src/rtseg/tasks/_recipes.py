"""Tasks: the packaged recipes at a glance, and the config a ``train`` command line would run."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from rtseg.config import list_recipes, load_config, stage_config

__all__ = ["recipes", "resolved_config"]


def _first_sentence(text: str) -> str:
    text = " ".join(str(text or "").split())
    end = text.find(". ")
    return text if end < 0 else text[: end + 1]


def recipes() -> list[dict[str, Any]]:
    """One record per packaged recipe: ``name``, ``model`` (each stage's network, in order, when they differ),
    ``dataset``, ``stages`` (how many; 1 for a single-stage recipe), ``epochs`` (per stage) and ``description``
    (its first sentence; ``description_full`` holds it all)."""
    rows = []
    for name in list_recipes():
        config = load_config(name)
        parts = [stage_config(config, i) for i in range(len(config["stages"]))] if config.get("stages") else [config]
        models: list[str] = []
        for part in parts:
            if part["model"]["name"] not in models:
                models.append(part["model"]["name"])
        rows.append({
            "name": name, "model": " -> ".join(models), "dataset": config["data"]["dataset"], "stages": len(parts),
            "epochs": [int(p["train"]["epochs"]) for p in parts], "description": _first_sentence(config.get("description", "")),
            "description_full": " ".join(str(config.get("description") or "").split()),
        })
    return rows


def resolved_config(config: str | Path, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """The config ``rtseg train CONFIG OVERRIDES...`` would run: the recipe merged over the defaults, overrides
    applied (into the stages too), checked against the schema. Nothing is created."""
    return load_config(config, list(overrides))
