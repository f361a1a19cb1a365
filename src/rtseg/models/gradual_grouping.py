"""Gradual grouping (ESSNet thesis, section 3.5 and Fig. 3.8): train a pointwise convolution dense and move it to a grouped one.

A grouped 1x1 convolution is a dense 1x1 convolution whose weights outside the block diagonal
(output group j <- input group j) are zero. :class:`GradualGroupedConv2d` keeps the dense weight and
scales the off-diagonal blocks by ``alpha``; :class:`GradualGroupingSchedule` takes alpha from 1
(dense) to 0 (grouped) over the first epochs, after which training goes on with alpha = 0
(fine-tuning). :func:`convert` then swaps every such layer for a real ``nn.Conv2d(groups=g)``
holding the diagonal blocks, which computes the same function at 1/g of the cost.

In training, the trainer gets a :class:`GradualGroupingCallback` from the model (``ESSNet.training_callbacks``)
that sets alpha from the config's ``gradual_grouping`` section before each epoch. By hand::

    model = rtseg.create_model("essnet-dg2", gradual_grouping=True)
    schedule = GradualGroupingSchedule(ramp_epochs=50)
    for epoch in range(epochs):
        schedule.apply(model, epoch)      # alpha for this epoch
        ...                               # train one epoch
    convert(model)                        # same outputs, grouped convolutions
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from rtseg.engine.callbacks import Callback

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = [
    "GradualGroupedConv2d",
    "GradualGroupingSchedule",
    "GradualGroupingCallback",
    "gradual_layers",
    "set_alpha",
    "convert",
    "convert_state_dict",
]


class GradualGroupedConv2d(nn.Module):
    """Dense 1x1 convolution whose weights outside the ``groups`` diagonal blocks are scaled by ``alpha`` (thesis Fig. 3.8)."""

    def __init__(self, in_channels: int, out_channels: int, groups: int, bias: bool = True):
        super().__init__()
        if groups < 1 or in_channels % groups or out_channels % groups:
            raise ValueError(f"groups={groups} must divide in_channels={in_channels} and out_channels={out_channels}")
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, 1, 1))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        # alpha is saved with the weights so that a resumed run continues from the same mixture.
        self.register_buffer("alpha", torch.tensor(1.0))
        out_group, in_group = out_channels // groups, in_channels // groups
        mask = torch.block_diag(*[torch.ones(out_group, in_group) for _ in range(groups)])
        self.register_buffer("block_mask", mask[:, :, None, None], persistent=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Same initialisation as a dense nn.Conv2d: training starts from a dense layer.
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1.0 / math.sqrt(self.in_channels)
            nn.init.uniform_(self.bias, -bound, bound)

    def effective_weight(self) -> torch.Tensor:
        """The dense weight actually applied: diagonal blocks unchanged, the rest scaled by alpha."""
        mask = self.block_mask.to(self.weight.dtype)
        return self.weight * (mask + self.alpha.to(self.weight.dtype) * (1.0 - mask))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.effective_weight(), self.bias)

    def grouped_weight(self) -> torch.Tensor:
        """The diagonal blocks stacked as a grouped convolution weight (out, in / groups, 1, 1)."""
        g, og, ig = self.groups, self.out_channels // self.groups, self.in_channels // self.groups
        w = self.weight.detach()
        return torch.cat([w[j * og : (j + 1) * og, j * ig : (j + 1) * ig] for j in range(g)], 0)

    def to_grouped(self) -> nn.Conv2d:
        """A real grouped ``nn.Conv2d`` equal to this layer at alpha = 0."""
        conv = nn.Conv2d(self.in_channels, self.out_channels, 1, groups=self.groups, bias=self.bias is not None)
        conv = conv.to(device=self.weight.device, dtype=self.weight.dtype)
        with torch.no_grad():
            conv.weight.copy_(self.grouped_weight())
            if self.bias is not None:
                conv.bias.copy_(self.bias)
        conv.train(self.training)
        return conv

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, groups={self.groups}, alpha={float(self.alpha):.4g}, bias={self.bias is not None}"


def gradual_layers(model: nn.Module) -> list[GradualGroupedConv2d]:
    """Every :class:`GradualGroupedConv2d` in ``model``."""
    return [m for m in model.modules() if isinstance(m, GradualGroupedConv2d)]


def set_alpha(model: nn.Module, alpha: float) -> int:
    """Set alpha on every gradual layer of ``model``; returns how many layers were set."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    layers = gradual_layers(model)
    for layer in layers:
        layer.alpha.fill_(alpha)
    return len(layers)


@dataclass(frozen=True)
class GradualGroupingSchedule:
    """Alpha by epoch (thesis section 3.5.1): 1 before ``start_epoch``, down to 0 over ``ramp_epochs``, then 0 for fine-tuning.

    ``shape`` is ``linear`` or ``cosine`` (half cosine, gentler at both ends). Epochs may be
    fractional, so a trainer may also update alpha every iteration (``epoch + i / iters``).
    """

    ramp_epochs: float
    start_epoch: float = 0.0
    shape: str = "linear"

    def __post_init__(self) -> None:
        if self.ramp_epochs < 0 or self.start_epoch < 0:
            raise ValueError("ramp_epochs and start_epoch must be non-negative")
        if self.shape not in ("linear", "cosine"):
            raise ValueError(f"shape must be 'linear' or 'cosine', got {self.shape!r}")

    @classmethod
    def from_config(cls, cfg: dict[str, Any]) -> "GradualGroupingSchedule":
        """Build from a recipe's ``gradual_grouping`` section."""
        return cls(float(cfg["ramp_epochs"]), float(cfg.get("start_epoch", 0.0)), str(cfg.get("shape", "linear")))

    def alpha_at(self, epoch: float) -> float:
        if epoch < self.start_epoch:
            return 1.0
        if self.ramp_epochs == 0:
            return 0.0
        progress = min(1.0, (epoch - self.start_epoch) / self.ramp_epochs)
        if self.shape == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * progress))
        return 1.0 - progress

    def apply(self, model: nn.Module, epoch: float) -> float:
        """Set the alpha of ``epoch`` on every gradual layer of ``model`` and return it."""
        alpha = self.alpha_at(epoch)
        set_alpha(model, alpha)
        return alpha


class GradualGroupingCallback(Callback):
    """Sets the alpha of ``schedule`` on every gradual layer of the trained model before each epoch (all processes)."""

    def __init__(self, schedule: GradualGroupingSchedule):
        self.schedule = schedule

    @classmethod
    def for_model(cls, model: nn.Module, config: dict[str, Any]) -> list[Callback]:
        """The callback for ``model`` from the config's ``gradual_grouping`` section, or none when it has no gradual layers."""
        return [cls(GradualGroupingSchedule.from_config(config["gradual_grouping"]))] if gradual_layers(model) else []

    def on_epoch_start(self, trainer, epoch: int) -> None:
        self.schedule.apply(trainer.model, epoch)


def convert(model: nn.Module, require_zero_alpha: bool = True) -> nn.Module:
    """Replace every :class:`GradualGroupedConv2d` of ``model`` (in place) by a grouped ``nn.Conv2d``.

    Channel shuffles are separate modules in the rtseg networks and stay where they are. The
    converted layer drops the off-diagonal weights, so the output only stays the same at alpha = 0;
    converting a layer with alpha > 0 raises unless ``require_zero_alpha`` is False.
    """
    found = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, GradualGroupedConv2d):
                if require_zero_alpha and float(child.alpha) != 0.0:
                    raise ValueError(
                        f"gradual layer {name!r} still has alpha={float(child.alpha):.4g}; finish the schedule "
                        "(alpha = 0) before converting, or pass require_zero_alpha=False to drop the off-diagonal weights"
                    )
                setattr(parent, name, child.to_grouped())
                found += 1
    card = getattr(model, "rtseg_card", None)
    if found and card is not None:
        # A checkpoint of the converted model must rebuild the grouped architecture.
        model.rtseg_card = card.replace(options={**card.options, "gradual_grouping": False})
    return model


def convert_state_dict(state_dict: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Turn the weights of a gradual model into weights for ``model``, its directly built grouped counterpart.

    Dense pointwise weights are cut down to their diagonal blocks wherever ``model`` holds a grouped
    convolution of that name, and the ``alpha`` buffers are dropped. Keys that need no change pass through.
    """
    out: dict[str, torch.Tensor] = {}
    convs = {name: m for name, m in model.named_modules() if isinstance(m, nn.Conv2d) and m.groups > 1}
    for key, value in state_dict.items():
        module_name, _, leaf = key.rpartition(".")
        if leaf == "alpha" and module_name in convs:
            continue
        conv = convs.get(module_name)
        if leaf == "weight" and conv is not None and value.shape[1] == conv.in_channels and conv.kernel_size == (1, 1):
            g, og, ig = conv.groups, conv.out_channels // conv.groups, conv.in_channels // conv.groups
            value = torch.cat([value[j * og : (j + 1) * og, j * ig : (j + 1) * ig] for j in range(g)], 0)
        out[key] = value
    return out
