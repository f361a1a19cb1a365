"""Saving and loading weights and training checkpoints: atomic writes, safe loads, clear mismatch errors."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
import torch.nn as nn

from rtseg.errors import UserError

__all__ = [
    "CheckpointError",
    "checkpoint_card",
    "save_weights",
    "read_weights",
    "read_card",
    "export_weights",
    "is_safetensors",
    "WeightsMismatchError",
    "atomic_save",
    "load_file",
    "extract_state_dict",
    "load_weights",
    "save_checkpoint",
    "load_checkpoint",
    "CHECKPOINT_FORMAT",
]

CHECKPOINT_FORMAT = "rtseg-checkpoint-v1"


class CheckpointError(UserError, RuntimeError):
    """A checkpoint or weights file that cannot be read."""


class WeightsMismatchError(UserError, RuntimeError):
    """Weights that do not fit the model's architecture or class count."""


def atomic_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` to a temporary file in the same folder, fsync, then rename over ``path``.

    A crash at any point leaves either the previous file or the new one, never a partial file.
    """
    return _atomic_write(path, lambda tmp: torch.save(obj, tmp))


def _atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """``write(temporary path)`` in the target's folder, fsync, then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    try:  # make the rename itself durable
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass
    return path


def load_file(path: str | os.PathLike) -> Any:
    """``torch.load(weights_only=True)`` on the CPU, with errors that name the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weights file {str(path)!r} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for truncated or foreign files
        raise CheckpointError(
            f"{str(path)!r} is not a readable PyTorch weights file (truncated, corrupt, or not saved with torch.save): "
            f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        ) from exc


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


def save_checkpoint(path: str | os.PathLike, model: nn.Module, **extra: Any) -> Path:
    """Write an rtseg checkpoint: the model's card (plain data), its state dict and any ``extra`` training state."""
    from rtseg.card import CardError, card_of

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
    if not isinstance(obj, Mapping) or obj.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{str(path)!r} is not an rtseg checkpoint (no format tag {CHECKPOINT_FORMAT!r}); "
            "for a plain state dict use create_model(name, weights=path)"
        )
    return dict(obj)


def checkpoint_card(ckpt: Mapping[str, Any]):
    """The model card of a loaded checkpoint; for one written before cards existed, derived from what it stored."""
    from rtseg.card import ModelCard

    if "card" in ckpt:
        return ModelCard.from_dict(ckpt["card"])
    return _card_from_legacy_checkpoint(ckpt)


def _card_from_legacy_checkpoint(ckpt: Mapping[str, Any]):
    # Checkpoints written before model cards hold a build spec, a normalisation preset name and the training
    # config. This is the one place their card is derived: the classes from the dataset the config names.
    from rtseg.card import ModelCard, TrainingRecord
    from rtseg.data.datasets import DatasetError, dataset_classes
    from rtseg.data.normalization import get_normalization
    from rtseg.registry import create_model

    spec = ckpt["model"]
    config = dict(ckpt.get("config") or {})
    data = config.get("data") or {}
    try:
        classes = dataset_classes(data) if data else None
    except DatasetError:  # a folder dataset that is no longer there: its names are lost
        classes = None
    if classes is not None and classes.num_classes > spec["num_classes"]:
        classes = None
    built = create_model(spec["name"], num_classes=spec["num_classes"], **spec.get("options", {}))
    training = None
    if config:
        epoch = ckpt.get("epoch")
        training = TrainingRecord(dataset=str(data.get("dataset", "synthetic")), recipe=config.get("recipe"), config=config,
                                  epochs=None if epoch is None else int(epoch) + 1, iterations=ckpt.get("iteration"))
    return ModelCard(
        model=spec["name"], num_outputs=int(spec["num_classes"]), options=dict(spec.get("options", {})),
        normalization=get_normalization(ckpt.get("normalization") or built.rtseg_card.normalization),
        size_divisor=built.rtseg_card.size_divisor, classes=classes, training=training,
        notes="derived from a checkpoint written before model cards: classes from the dataset its training config names",
    )


def model_from_checkpoint(path: str | os.PathLike) -> nn.Module:
    """Rebuild the model stored in an rtseg checkpoint, with its weights and its card."""
    from rtseg.registry import create_model

    card = checkpoint_card(load_checkpoint(path))  # refuses files that are not rtseg checkpoints
    return create_model(card.model, weights=str(path))


# -- safetensors weights files ------------------------------------------------------------------
CARD_METADATA_KEY = "rtseg.card"


def is_safetensors(path: str | os.PathLike) -> bool:
    """True when the file starts like a safetensors file (an 8-byte header length, then a JSON header)."""
    try:
        with open(path, "rb") as f:
            head = f.read(9)
            size = os.fstat(f.fileno()).st_size
    except OSError:
        return False
    return len(head) == 9 and head[8:9] == b"{" and 0 < int.from_bytes(head[:8], "little") < size


def save_weights(path: str | os.PathLike, weights: nn.Module | Mapping[str, torch.Tensor], card, half: bool = False) -> Path:
    """Write a safetensors file: the tensors (no pickle) and ``card`` as JSON in its metadata.

    ``half=True`` stores floating-point tensors as float16 (half the size; loading casts them back to the
    model's precision).
    """
    from safetensors.torch import save_file

    state = weights.state_dict() if isinstance(weights, nn.Module) else weights
    tensors = {}
    for key, value in state.items():
        value = value.detach().to("cpu")
        if half and value.is_floating_point():
            value = value.half()
        tensors[key] = value.contiguous().clone()  # safetensors refuses tensors that share memory
    return _atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata={"format": "pt", CARD_METADATA_KEY: card.to_json()}))


def read_card(path: str | os.PathLike):
    """The model card stored in a weights file (safetensors metadata or an rtseg checkpoint), or None."""
    return read_weights(path, tensors=False)[1]


def read_weights(path: str | os.PathLike, tensors: bool = True) -> tuple[dict[str, torch.Tensor] | None, Any]:
    """``(state dict, card or None)`` of any weights file rtseg reads: a safetensors file, an rtseg checkpoint
    or a plain state dict (``torch.load(weights_only=True)``). With ``tensors=False`` only the card is read
    where the format allows (safetensors: just the header)."""
    from rtseg.card import ModelCard

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weights file {str(path)!r} does not exist")
    if is_safetensors(path):
        from safetensors import safe_open
        from safetensors.torch import load_file as load_safetensors

        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
            state = load_safetensors(str(path)) if tensors else None
        except Exception as exc:
            raise CheckpointError(f"{str(path)!r} is not a readable safetensors file: {type(exc).__name__}: {exc}") from exc
        card = ModelCard.from_json(meta[CARD_METADATA_KEY]) if CARD_METADATA_KEY in meta else None
        return state, card
    obj = load_file(path)
    if isinstance(obj, Mapping) and obj.get("format") == CHECKPOINT_FORMAT:
        return extract_state_dict(obj, repr(str(path))), checkpoint_card(obj)
    return extract_state_dict(obj, repr(str(path))), None


def export_weights(checkpoint: str | os.PathLike, out: str | os.PathLike, half: bool = False, *,
                   license: str | None = None, source: str | None = None) -> Path:
    """A publishable weights file from a training checkpoint: safetensors with the checkpoint's card in its
    metadata (optionally float16 storage, and a licence and source written into the card)."""
    ckpt = load_checkpoint(checkpoint)
    card = checkpoint_card(ckpt)
    changes = {k: v for k, v in (("license", license), ("source", source)) if v is not None}
    return save_weights(out, extract_state_dict(ckpt, repr(str(checkpoint))), card.replace(**changes) if changes else card, half=half)
