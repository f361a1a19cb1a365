"""Training checkpoints: the model's card (plain data), its state dict and the training state, in one file."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import torch.nn as nn

from rtseg.card import CardError, ModelCard, card_of
from rtseg.io.files import CheckpointError, atomic_save, load_file

__all__ = ["CHECKPOINT_FORMAT", "is_checkpoint", "save_checkpoint", "load_checkpoint", "stored_card"]

CHECKPOINT_FORMAT = "rtseg-checkpoint-v1"


def is_checkpoint(obj: Any) -> bool:
    """Whether a loaded object is an rtseg checkpoint (it carries the format tag)."""
    return isinstance(obj, Mapping) and obj.get("format") == CHECKPOINT_FORMAT


def save_checkpoint(path: str | os.PathLike, model: nn.Module, **extra: Any) -> Path:
    """Write an rtseg checkpoint: the model's card (plain data), its state dict and any ``extra`` training state."""
    target = model.module if hasattr(model, "module") else model
    try:
        card = card_of(target)
    except CardError:
        raise ValueError("save_checkpoint needs a model built by rtseg.create_model (its card records how to rebuild it)") from None
    payload = {"format": CHECKPOINT_FORMAT, "card": card.to_dict(), "model_state": target.state_dict(), **extra}
    return atomic_save(payload, path)


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read an rtseg checkpoint written by :func:`save_checkpoint` (``weights_only=True``)."""
    obj = load_file(path)
    if not is_checkpoint(obj):
        raise CheckpointError(
            f"{str(path)!r} is not an rtseg checkpoint (no format tag {CHECKPOINT_FORMAT!r}); "
            "for a plain state dict use create_model(name, weights=path)"
        )
    return dict(obj)


def stored_card(ckpt: Mapping[str, Any], source: str | None = None) -> ModelCard | None:
    """The model card a loaded checkpoint stores; None for one written before cards existed (the registry layer's
    :func:`rtseg.registry.checkpoint_card` derives theirs, which needs the model built)."""
    return ModelCard.from_dict(ckpt["card"], source) if "card" in ckpt else None
