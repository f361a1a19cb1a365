"""Task: what the registry holds: every model with its paper and size, or one model's options in full."""
from __future__ import annotations

import fnmatch
from typing import Any

from rtseg.efficiency import count_parameters
from rtseg.errors import OptionError
from rtseg.registry import create_model, get_entry, list_models

__all__ = ["model_rows", "model_details", "pretrained_rows", "TABLE_CLASSES"]

TABLE_CLASSES = 19  # parameter counts are given for a 19-class head (Cityscapes), as in the papers' tables


def model_rows(pattern: str | None = None) -> list[dict[str, Any]]:
    """``{"name", "paper", "params"}`` of every registered model matching the shell-style ``pattern``."""
    names = list_models(pattern)
    if not names:
        raise OptionError(f"no registered model matches {pattern!r}; run `rtseg models` for the full list")
    return [{"name": n, "paper": get_entry(n).paper, "params": count_parameters(create_model(n, num_classes=TABLE_CLASSES))} for n in names]


def model_details(name: str) -> dict[str, Any]:
    """One model's paper, description, registered defaults, parameter count and each option with its type, choices
    and default (as :func:`rtseg.create_model` accepts them)."""
    entry = get_entry(name)
    return {
        "name": entry.name, "paper": entry.paper, "description": entry.description, "normalization": entry.normalization,
        "defaults": dict(entry.defaults), "params": count_parameters(create_model(name, num_classes=TABLE_CLASSES)),
        "options": [{"name": s.name, "type": s.annotation, "choices": list(s.choices) if s.choices else None, "default": s.default}
                    for s in entry.option_specs],
    }


def pretrained_rows(pattern: str | None = None) -> list[Any]:
    """The named pretrained weights whose model matches ``pattern``."""
    from rtseg.pretrained import list_pretrained

    entries = [e for e in list_pretrained() if not pattern or fnmatch.fnmatch(e.model, pattern)]
    if not entries:
        raise OptionError(f"no pretrained weights for models matching {pattern!r}; run `rtseg models --pretrained` for all")
    return entries
