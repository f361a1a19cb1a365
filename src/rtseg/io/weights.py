"""Weights files: state-dict extraction, checked loading into a module, safetensors with the model card in its
metadata. Nothing here builds a model (that is the registry's job), so models and backbones may use it."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Literal, Mapping

import torch
import torch.nn as nn

from rtseg.card import ModelCard
from rtseg.io.checkpoint import CHECKPOINT_FORMAT, is_checkpoint, stored_card
from rtseg.io.files import CheckpointError, WeightsMismatchError, atomic_write, load_file
from rtseg.storage import not_a_file

__all__ = ["CARD_METADATA_KEY", "extract_state_dict", "load_weights", "is_safetensors", "save_weights", "read_weights", "read_card"]

CARD_METADATA_KEY = "rtseg.card"

# Derives the card of a checkpoint written before model cards (see rtseg.registry.checkpoint_card).
LegacyCard = Callable[[Mapping[str, Any]], ModelCard]


def extract_state_dict(obj: Any, source: str = "weights") -> dict[str, torch.Tensor]:
    """The model state dict inside ``obj``: an rtseg checkpoint, a ``{"state_dict": ...}`` wrapper or a plain state dict.

    Keys saved from ``nn.DataParallel`` / DDP (``module.`` prefix) are stripped, which is the only
    conversion the official ERFNet and ESPNet releases need.
    """
    if isinstance(obj, Mapping) and obj.get("format") == CHECKPOINT_FORMAT:
        obj = obj["model_state"]
    elif isinstance(obj, Mapping):
        for key in ("state_dict", "model_state", "model"):
            if key in obj and isinstance(obj[key], Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{source} holds no state dict (a mapping of parameter names to tensors)")
    state = dict(obj)
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def _describe_mismatch(model: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> tuple[str, list, list, list]:
    own = model.state_dict()
    # Files saved before PyTorch 0.4.1 (the official ESPNet release among them) have no BatchNorm
    # step counter; it only matters for momentum=None, so its absence is not a mismatch.
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own]
    shapes = [(k, tuple(state[k].shape), tuple(own[k].shape)) for k in own if k in state and state[k].shape != own[k].shape]

    def short(items: list, n: int = 10) -> str:
        text = ", ".join(map(str, items[:n]))
        return text + (f", ... ({len(items) - n} more)" if len(items) > n else "")

    lines = []
    if shapes:
        lines.append("shape mismatches (key: file shape vs model shape): " + short([f"{k}: {a} vs {b}" for k, a, b in shapes]))
    if missing:
        lines.append(f"missing from the file ({len(missing)}): " + short(missing))
    if unexpected:
        lines.append(f"unexpected in the file ({len(unexpected)}): " + short(unexpected))
    msg = f"weights in {source} do not fit {type(model).__name__}"
    card = getattr(model, "rtseg_card", None)
    if card is not None:
        msg += f" (model {card.model!r} with num_classes={card.num_outputs})"
    hint = ""
    if shapes and any(v[1][:1] != v[2][:1] for v in shapes):
        hint = " Different leading dimensions usually mean another class count: pass num_classes to match the weights."
    return msg + ":\n  " + "\n  ".join(lines) + hint, missing, unexpected, shapes


def load_weights(model: nn.Module, weights: str | os.PathLike | Mapping[str, torch.Tensor], strict: bool = True) -> dict[str, list]:
    """Load ``weights`` (a path to any file :func:`read_weights` reads, or a state dict) into ``model`` with key and shape checking.

    With ``strict=True`` any missing or unexpected key or shape difference raises
    :class:`WeightsMismatchError` listing them. With ``strict=False`` the matching tensors are loaded and
    the rest is reported in the returned dict (``missing``, ``unexpected``, ``shape_mismatch``).
    """
    source = repr(str(weights)) if isinstance(weights, (str, os.PathLike)) else "the given state dict"
    obj = read_weights(weights)[0] if isinstance(weights, (str, os.PathLike)) else weights
    state = extract_state_dict(obj, source)
    message, missing, unexpected, shapes = _describe_mismatch(model, state, source)
    if strict and (missing or unexpected or shapes):
        raise WeightsMismatchError(message)
    bad = {k for k, _, _ in shapes}
    model.load_state_dict({k: v for k, v in state.items() if k not in bad}, strict=False)
    return {"missing": missing, "unexpected": unexpected, "shape_mismatch": [k for k, _, _ in shapes]}


def is_safetensors(path: str | os.PathLike) -> bool:
    """True when the file starts like a safetensors file (an 8-byte header length, then a JSON header)."""
    try:
        with open(path, "rb") as f:
            head = f.read(9)
            size = os.fstat(f.fileno()).st_size
    except OSError:
        return False
    return len(head) == 9 and head[8:9] == b"{" and 0 < int.from_bytes(head[:8], "little") < size


def save_weights(path: str | os.PathLike, weights: nn.Module | Mapping[str, torch.Tensor], card: ModelCard,
                 half: bool | Literal["weights"] = False) -> Path:
    """Write a safetensors file: the tensors (no pickle) and ``card`` as JSON in its metadata.

    ``half=True`` stores floating-point tensors as float16 (half the size; loading casts them back to the
    model's precision). ``half="weights"`` stores only the tensors of two or more dimensions (convolution and
    linear weights, nearly all the bytes) as float16 and keeps vectors (normalisation scales and statistics,
    biases) in float32, for networks whose accuracy moves when those are rounded.
    """
    if half not in (False, True, "weights"):
        raise ValueError(f"half={half!r}: expected False, True or 'weights'")
    from safetensors.torch import save_file

    state = weights.state_dict() if isinstance(weights, nn.Module) else weights
    tensors = {}
    for key, value in state.items():
        value = value.detach().to("cpu")
        if half and value.is_floating_point() and (half is True or value.dim() > 1):
            value = value.half()
        tensors[key] = value.contiguous().clone()  # safetensors refuses tensors that share memory
    return atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata={"format": "pt", CARD_METADATA_KEY: card.to_json()}))


def read_card(path: str | os.PathLike, *, legacy_card: LegacyCard | None = None) -> ModelCard | None:
    """The model card stored in a weights file (safetensors metadata or an rtseg checkpoint), or None."""
    return read_weights(path, tensors=False, legacy_card=legacy_card)[1]


def read_weights(path: str | os.PathLike, tensors: bool = True, *,
                 legacy_card: LegacyCard | None = None) -> tuple[dict[str, torch.Tensor] | None, ModelCard | None]:
    """``(state dict, card or None)`` of any weights file rtseg reads: a safetensors file, an rtseg checkpoint
    or a plain state dict (``torch.load(weights_only=True)``). With ``tensors=False`` only the card is read
    where the format allows (safetensors: just the header). A checkpoint written before model cards has the
    card ``legacy_card`` derives from it (None without it)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weights file {str(path)!r} {not_a_file(path) or 'does not exist'}")
    if is_safetensors(path):
        from safetensors import safe_open
        from safetensors.torch import load_file as load_safetensors

        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
            state = load_safetensors(str(path)) if tensors else None
        except Exception as exc:
            raise CheckpointError(f"{str(path)!r} is not a readable safetensors file: {type(exc).__name__}: {exc}") from exc
        card = ModelCard.from_json(meta[CARD_METADATA_KEY], f"weights file {str(path)!r}") if CARD_METADATA_KEY in meta else None
        return state, card
    obj = load_file(path)
    if is_checkpoint(obj):
        card = stored_card(obj, f"checkpoint {str(path)!r}")
        if card is None and legacy_card is not None:
            card = legacy_card(obj)
        return extract_state_dict(obj, repr(str(path))), card
    return extract_state_dict(obj, repr(str(path))), None
