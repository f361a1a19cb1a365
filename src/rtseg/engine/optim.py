"""Optimizer and learning-rate schedule of a training config (sections ``optimizer`` and ``schedule``)."""
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from rtseg.config import ConfigError
from rtseg.engine.schedules import LearningRateSchedule

__all__ = ["param_groups", "build_optimizer", "build_schedule"]


def param_groups(model: nn.Module, lr_scale: dict[str, float] | None) -> list[dict[str, Any]]:
    """One group per ``optimizer.lr_scale`` prefix (its ``lr_scale`` multiplies the scheduled rate), the rest in a last group."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not lr_scale:
        return [{"params": [p for _, p in named], "lr_scale": 1.0}]
    groups: list[dict[str, Any]] = []
    taken: set[str] = set()
    for prefix, factor in lr_scale.items():
        members = [(n, p) for n, p in named if n.startswith(prefix) and n not in taken]
        if not members:
            raise ConfigError(f"optimizer.lr_scale prefix {prefix!r} matches no parameter of the model")
        taken |= {n for n, _ in members}
        groups.append({"params": [p for _, p in members], "lr_scale": float(factor)})
    rest = [p for n, p in named if n not in taken]
    if rest:
        groups.append({"params": rest, "lr_scale": 1.0})
    return groups


def build_optimizer(ocfg: dict[str, Any], model: nn.Module) -> torch.optim.Optimizer:
    """SGD, Adam or AdamW over ``model``'s trainable parameters, grouped by ``optimizer.lr_scale``."""
    name = ocfg["name"].lower()
    params = param_groups(model, ocfg.get("lr_scale"))
    if name == "sgd":
        return torch.optim.SGD(params, lr=ocfg["lr"], momentum=ocfg["momentum"], weight_decay=ocfg["weight_decay"], nesterov=bool(ocfg["nesterov"]))
    if name in ("adam", "adamw"):
        cls = torch.optim.Adam if name == "adam" else torch.optim.AdamW
        return cls(params, lr=ocfg["lr"], betas=tuple(ocfg["betas"]), eps=ocfg["eps"], weight_decay=ocfg["weight_decay"])
    raise ConfigError(f"optimizer.name={ocfg['name']!r} is not supported; expected sgd, adam or adamw")


def build_schedule(config: dict[str, Any], epochs: int, iters_per_epoch: int) -> LearningRateSchedule:
    """The ``schedule`` section over ``optimizer.lr``, for a run of ``epochs`` x ``iters_per_epoch`` iterations."""
    return LearningRateSchedule(config["schedule"], config["optimizer"]["lr"], epochs, iters_per_epoch)
