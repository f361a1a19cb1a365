"""Auxiliary segmentation heads on intermediate stages (deep supervision), for training only.

A light head (3x3 conv-BN-ReLU, dropout, 1x1 conv to the classes, upsampled to the input size) reads the
output of a named stage of the network through a forward hook that exists only during a training-mode
forward of :class:`AuxiliaryHeads`. The wrapped network is untouched: ``create_model`` output, its saved
weights, parameter counts, ``eval()`` outputs and exports are those of the plain network; the heads'
parameters live in the wrapper alone.

A stage is named by an alias of the model family (``AUX_STAGES``, e.g. ``stage2`` = the last 1/4-resolution
encoder layer, ``stage3`` = the 1/8 encoder output) or by a submodule path (``encoder.layers.3``), with
``[KEY]`` to pick one output of a module that returns a dict (backbones: ``backbone[0]`` is the first
feature it returns, or ``backbone[stage3]`` by name).
"""
from __future__ import annotations

import math
import re
from typing import Any, Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["AUX_STAGES", "AuxHead", "AuxiliaryHeads", "stage_aliases", "build_aux_heads"]


def _encoder_stack(path: str) -> Callable[[nn.Module], dict[str, str]]:
    """Aliases for an encoder that is a list of layers with DownsamplerBlocks: ``stage2`` is the layer before
    the last downsampler (1/4 resolution), ``stage3`` the last layer (1/8)."""

    def aliases(model: nn.Module) -> dict[str, str]:
        layers = model.get_submodule(path)
        down = [i for i, layer in enumerate(layers) if type(layer).__name__.startswith("Downsampler")]
        out = {"stage3": f"{path}.{len(layers) - 1}"}
        if down and down[-1] > 0:
            out["stage2"] = f"{path}.{down[-1] - 1}"
        return out

    return aliases


# Model class name -> its stage aliases (a mapping, or a function of the model for variants of one family).
AUX_STAGES: dict[str, dict[str, str] | Callable[[nn.Module], dict[str, str]]] = {
    "FPLNet": {"stage2": "encoder.norm2", "stage3": "encoder.norm3"},
    "ERFNet": _encoder_stack("encoder.layers"),
    "ESSNet": _encoder_stack("encoder.layers"),
    "WSPDNet": _encoder_stack("encoder"),
    "ESPNetC": {"stage2": "b2", "stage3": "b3"},
    "ESPNetFPL": {"stage2": "b2", "stage3": "b3"},
    "ESPNet": {"stage2": "encoder.b2", "stage3": "encoder.b3"},
    "LiteSeg": {"low": "backbone[0]", "high": "backbone[-1]"},
    "FarSeeNet": {"low": "backbone[0]", "high": "backbone[-1]"},
}

_STAGE = re.compile(r"^(?P<path>[A-Za-z_][\w.]*)(?:\[(?P<key>[^\]]+)\])?$")


def stage_aliases(model: nn.Module) -> dict[str, str]:
    """The stage aliases of ``model``'s family ({} for a family without a table)."""
    entry = AUX_STAGES.get(type(model).__name__, {})
    return dict(entry(model) if callable(entry) else entry)


class AuxHead(nn.Module):
    """conv3x3-BN-ReLU, dropout, conv1x1 to the classes (the usual light auxiliary head, e.g. BiSeNet's)."""

    class_layers = ("classifier",)

    def __init__(self, in_channels: int, num_classes: int, mid_channels: int = 64, dropout: float = 0.1):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(in_channels, mid_channels, 3, padding=1, bias=False), nn.BatchNorm2d(mid_channels), nn.ReLU(inplace=True)
        )
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(mid_channels, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(self.conv(x)))


def _select(output: Any, key: str | None, stage: str) -> torch.Tensor:
    if key is None:
        if not isinstance(output, torch.Tensor):
            raise ValueError(f"model.aux_heads stage {stage!r} returns a {type(output).__name__}; pick one output with [KEY] (e.g. {stage}[0])")
        return output
    items = list(output.values()) if isinstance(output, dict) else list(output) if isinstance(output, (list, tuple)) else None
    if items is None:
        raise ValueError(f"model.aux_heads stage {stage!r}: the module returns a tensor, so it takes no [KEY]")
    if isinstance(output, dict) and key in output:
        return output[key]
    try:
        return items[int(key)]
    except (ValueError, IndexError):
        names = list(output) if isinstance(output, dict) else list(range(len(items)))
        raise ValueError(f"model.aux_heads stage {stage!r}: no output {key!r}; the module returns {names}") from None


class AuxiliaryHeads(nn.Module):
    """``model`` with auxiliary heads on the named stages. In training mode it returns
    ``(main logits, aux logits 1, ...)``, each aux at the input size; in eval mode exactly ``model(x)``.

    ``specs``: ``[{"stage": NAME, "weight": W}, ...]`` (``weight`` defaults to ``default_weight``); the weights
    are kept in ``aux_weights`` for :class:`rtseg.engine.losses.DeepSupervisionLoss`. Save ``self.model`` for the
    network's weights and ``self.heads`` for the heads (resume).
    """

    def __init__(self, model: nn.Module, specs: list[dict[str, Any]], num_classes: int | None = None,
                 default_weight: float = 0.4, mid_channels: int = 64, dropout: float = 0.1):
        super().__init__()
        if not isinstance(specs, list) or not specs:
            raise ValueError(f"model.aux_heads={specs!r}: expected a list like [{{stage: stage2, weight: 0.4}}]")
        self.model = model
        aliases = stage_aliases(model)
        self.stage_names: list[str] = []
        self._taps: list[tuple[str, str | None]] = []
        self.aux_weights: list[float] = []
        for i, spec in enumerate(specs):
            if not isinstance(spec, dict) or "stage" not in spec or set(spec) - {"stage", "weight"}:
                raise ValueError(f"model.aux_heads.{i}={spec!r}: expected {{stage: NAME, weight: W}} (weight optional)")
            weight = spec.get("weight", default_weight)
            if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight) or weight < 0:
                raise ValueError(f"model.aux_heads.{i}.weight={weight!r}: expected a number >= 0")
            stage = str(spec["stage"])
            match = _STAGE.match(aliases.get(stage, stage))
            path = match["path"] if match else None
            try:
                if path is None:
                    raise AttributeError(stage)
                model.get_submodule(path)
            except AttributeError:
                known = ", ".join(aliases) or "none"
                raise ValueError(
                    f"model.aux_heads.{i}.stage={stage!r} is neither a stage of {type(model).__name__} ({known}) nor a submodule path "
                    f"(e.g. one of {[n for n, _ in model.named_children()]})"
                ) from None
            self.stage_names.append(stage)
            self._taps.append((path, match["key"]))
            self.aux_weights.append(float(weight))
        classes = num_classes if num_classes is not None else getattr(model, "num_classes", None)
        if classes is None:
            raise ValueError("AuxiliaryHeads needs num_classes (the model has no num_classes attribute)")
        channels = self._probe_channels()
        self.heads = nn.ModuleList(AuxHead(c, classes, mid_channels, dropout) for c in channels)

    def _features(self, x: torch.Tensor) -> tuple[Any, list[torch.Tensor]]:
        """``model(x)`` and the tapped stage outputs, through hooks that exist only during this call."""
        captured: dict[int, Any] = {}
        handles = []
        for i, (path, _) in enumerate(self._taps):
            hook = (lambda i: lambda module, args, output: captured.__setitem__(i, output))(i)
            handles.append(self.model.get_submodule(path).register_forward_hook(hook))
        try:
            out = self.model(x)
        finally:
            for h in handles:
                h.remove()
        feats = []
        for i, (_, key) in enumerate(self._taps):
            if i not in captured:
                raise ValueError(f"model.aux_heads stage {self.stage_names[i]!r} ({self._taps[i][0]}) is not run by the forward pass of {type(self.model).__name__}")
            feats.append(_select(captured[i], key, self.stage_names[i]))
        return out, feats

    @torch.no_grad()
    def _probe_channels(self) -> list[int]:
        """The channel count of each tapped stage, from one small forward pass in eval mode."""
        divisor = int(getattr(self.model, "size_divisor", 1) or 1)
        side = max(64, divisor) if 64 % divisor == 0 else divisor * math.ceil(64 / divisor)
        param = next(self.model.parameters(), None)
        x = torch.zeros(1, 3, side, side, device=param.device if param is not None else "cpu")
        was_training = self.model.training
        self.model.eval()
        try:
            _, feats = self._features(x)
        finally:
            self.model.train(was_training)
        return [f.shape[1] for f in feats]

    def forward(self, x: torch.Tensor):
        if not self.training:
            return self.model(x)
        out, feats = self._features(x)
        h, w = x.shape[-2:]
        d = int(getattr(self.model, "size_divisor", 1) or 1)
        padded = (math.ceil(h / d) * d, math.ceil(w / d) * d)  # the model pads to its size divisor; crop like it does
        aux = [F.interpolate(head(f), size=padded, mode="bilinear", align_corners=False)[..., :h, :w] for head, f in zip(self.heads, feats)]
        return (out, *aux)


def build_aux_heads(model: nn.Module, model_cfg: dict[str, Any], loss_cfg: dict[str, Any], num_classes: int | None = None) -> AuxiliaryHeads | None:
    """The wrapper ``model.aux_heads`` asks for (None when it is empty); weights default to ``loss.aux_weight``."""
    specs = model_cfg.get("aux_heads")
    if not specs:
        return None
    return AuxiliaryHeads(model, specs, num_classes, float(loss_cfg.get("aux_weight", 0.4)))
