"""Exponential moving average of a model's weights (``train.ema``), evaluated and saved in place of the raw weights.

After every optimizer step, each parameter's average moves toward the parameter:
``ema = decay * ema + (1 - decay) * param``. BatchNorm running statistics are statistics of some weights, not weights,
so what the average carries is a choice (``train.ema_bn``):

- ``copy``: the live network's buffers, copied at each step. Cheap, but the averaged weights are then scored with
  statistics of other weights, and picking the best of many validations can pick a lucky pairing (the zoo measured
  0.011 mIoU of one published score held that way: docs/zoo.md);
- ``average``: the running statistics averaged with the same decay (counters copied);
- ``reestimate``: before each validation, :func:`reestimate_batchnorm` recomputes them for the averaged weights from
  training batches, as SWA does: what is scored and shipped is one consistent network.
"""
from __future__ import annotations

import copy
import math
from typing import Any, Iterable

import torch
import torch.nn as nn

__all__ = ["EMA_BN_MODES", "ModelEMA", "reestimate_batchnorm"]

EMA_BN_MODES = ("copy", "average", "reestimate")


def _unwrap(model: nn.Module) -> nn.Module:
    """The network inside a DistributedDataParallel (or DataParallel) wrapper."""
    return model.module if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)) else model


class ModelEMA:
    """An averaged copy of ``model`` (``self.module``, always in eval mode, no gradients).

    ``update(model)`` after each optimizer step; ``state_dict()`` / ``load_state_dict()`` round-trip exactly
    (the averaged tensors, the decay and the number of updates), so a resumed run continues bit for bit.
    """

    def __init__(self, model: nn.Module, decay: float, bn: str = "copy"):
        if isinstance(decay, bool) or not isinstance(decay, (int, float)) or not math.isfinite(decay) or not 0.0 < decay < 1.0:
            raise ValueError(f"train.ema={decay!r}: expected null (off) or a decay between 0 and 1, e.g. 0.9995")
        if bn not in EMA_BN_MODES:
            raise ValueError(f"train.ema_bn={bn!r}: expected one of {', '.join(EMA_BN_MODES)}")
        self.decay, self.bn = float(decay), bn
        self.updates = 0
        self.module = copy.deepcopy(_unwrap(model)).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the average one step toward ``model``'s current weights; buffers as ``train.ema_bn`` says (``copy``
        and ``reestimate`` copy them, so that the average is usable between two re-estimations)."""
        model = _unwrap(model)
        params = dict(model.named_parameters())
        for name, avg in self.module.named_parameters():
            avg.lerp_(params[name].detach().to(avg.dtype), 1.0 - self.decay)
        buffers = dict(model.named_buffers())
        for name, buf in self.module.named_buffers():
            if self.bn == "average" and buf.is_floating_point():
                buf.lerp_(buffers[name].detach().to(buf.dtype), 1.0 - self.decay)
            else:
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


def reestimate_batchnorm(model: nn.Module, batches: Iterable[torch.Tensor], keep: Iterable[str] = ()) -> int:
    """Replace every BatchNorm layer's running statistics by their plain average over ``batches`` (image tensors);
    the weights are untouched and dropout stays off (unlike ``torch.optim.swa_utils.update_bn``, which puts the whole
    network in training mode). Layers under the module paths in ``keep`` (frozen parts) keep their statistics.
    Leaves ``model`` in eval mode; returns the number of layers re-estimated (0: nothing to do, ``batches`` unread).
    """
    kept = tuple(keep)
    norms = [m for name, m in model.named_modules()
             if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
             and not any(name == k or name.startswith(k + ".") for k in kept)]
    if not norms:
        return 0
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches seen
    model.eval()
    for m in norms:
        m.train()
    try:
        with torch.inference_mode():
            for images in batches:
                model(images)
    finally:
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
        model.eval()
    return len(norms)
