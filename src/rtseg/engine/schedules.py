"""Learning-rate schedules as pure functions of (iteration, epoch), plus plateau state; trivially resumable."""
from __future__ import annotations

import math
from typing import Any

import torch

from rtseg.config import ConfigError

__all__ = ["LearningRateSchedule"]


class LearningRateSchedule:
    """``poly`` (per iteration, or stepped every ``step_every_epochs``), ``step``, ``plateau`` or ``constant``, with linear warm-up."""

    def __init__(self, cfg: dict[str, Any], base_lr: float, epochs: int, iters_per_epoch: int):
        self.name = cfg["name"]
        if self.name not in ("poly", "step", "plateau", "constant"):
            raise ConfigError(f"schedule.name={self.name!r} is not supported; expected poly, step, plateau or constant")
        self.cfg = cfg
        self.base_lr = float(base_lr)
        self.epochs = epochs
        self.iters_per_epoch = max(1, iters_per_epoch)
        self.total = max(1, epochs * self.iters_per_epoch)
        self.plateau_scale = 1.0
        self.plateau_best = -math.inf
        self.plateau_bad = 0

    def lr_at(self, iteration: int, epoch: int) -> float:
        cfg = self.cfg
        if self.name == "poly":
            k = cfg.get("step_every_epochs")
            progress = iteration / self.total if not k else (epoch // int(k) * int(k)) / max(1, self.epochs)
            lr = self.base_lr * max(0.0, 1.0 - progress) ** float(cfg["power"])
        elif self.name == "step":
            lr = self.base_lr * float(cfg["gamma"]) ** (epoch // int(cfg["step_size"]))
        elif self.name == "plateau":
            lr = self.base_lr * self.plateau_scale
        else:
            lr = self.base_lr
        warm = int(cfg.get("warmup_iters") or 0)
        if warm and iteration < warm:
            lr *= (iteration + 1) / warm
        return lr

    def apply(self, optimizer: torch.optim.Optimizer, iteration: int, epoch: int) -> float:
        lr = self.lr_at(iteration, epoch)
        for group in optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
        return lr

    def observe(self, metric: float) -> None:
        """Feed the validation metric (higher is better) to the plateau schedule."""
        if self.name != "plateau":
            return
        if metric > self.plateau_best + 1e-4:
            self.plateau_best, self.plateau_bad = metric, 0
        else:
            self.plateau_bad += 1
            if self.plateau_bad > int(self.cfg["patience"]):
                self.plateau_scale *= float(self.cfg["gamma"])
                self.plateau_bad = 0

    def state_dict(self) -> dict[str, float]:
        return {"plateau_scale": self.plateau_scale, "plateau_best": self.plateau_best, "plateau_bad": self.plateau_bad}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.plateau_scale = float(state["plateau_scale"])
        self.plateau_best = float(state["plateau_best"])
        self.plateau_bad = int(state["plateau_bad"])
