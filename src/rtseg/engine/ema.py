"""Exponential moving average of a model's weights (``train.ema``), evaluated and saved in place of the raw weights.

After every optimizer step, each parameter's average moves toward the parameter:
``ema = decay * ema + (1 - decay) * param``; buffers (BatchNorm running statistics, counters) are copied,
since they are statistics of the current weights, not weights to average.
"""
from __future__ import annotations

import copy
import math
from typing import Any

import torch
import torch.nn as nn

__all__ = ["ModelEMA"]


def _unwrap(model: nn.Module) -> nn.Module:
    """The network inside a DistributedDataParallel (or DataParallel) wrapper."""
    return model.module if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)) else model


class ModelEMA:
    """An averaged copy of ``model`` (``self.module``, always in eval mode, no gradients).

    ``update(model)`` after each optimizer step; ``state_dict()`` / ``load_state_dict()`` round-trip exactly
    (the averaged tensors, the decay and the number of updates), so a resumed run continues bit for bit.
    """

    def __init__(self, model: nn.Module, decay: float):
        if isinstance(decay, bool) or not isinstance(decay, (int, float)) or not math.isfinite(decay) or not 0.0 < decay < 1.0:
            raise ValueError(f"train.ema={decay!r}: expected null (off) or a decay between 0 and 1, e.g. 0.9995")
        self.decay = float(decay)
        self.updates = 0
        self.module = copy.deepcopy(_unwrap(model)).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the average one step toward ``model``'s current weights and copy its buffers."""
        model = _unwrap(model)
        params = dict(model.named_parameters())
        for name, avg in self.module.named_parameters():
            avg.lerp_(params[name].detach().to(avg.dtype), 1.0 - self.decay)
        buffers = dict(model.named_buffers())
        for name, buf in self.module.named_buffers():
            buf.copy_(buffers[name])
        self.updates += 1

    def state_dict(self) -> dict[str, Any]:
        return {"decay": self.decay, "updates": self.updates, "module": self.module.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict`; a checkpoint averaged with another decay is refused, naming both."""
        if float(state["decay"]) != self.decay:
            raise ValueError(f"train.ema={self.decay} but the checkpoint's average was kept with decay {state['decay']}; resume with train.ema={state['decay']}")
        self.module.load_state_dict(state["module"], strict=True)
        self.updates = int(state["updates"])
