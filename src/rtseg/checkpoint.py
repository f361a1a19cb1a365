"""Saving and loading weights and training checkpoints: atomic writes, safe loads, clear mismatch errors."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn as nn

__all__ = [
    "CheckpointError",
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


class CheckpointError(RuntimeError):
    """A checkpoint or weights file that cannot be read."""


class WeightsMismatchError(RuntimeError):
    """Weights that do not fit the model's architecture or class count."""


def atomic_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` to a temporary file in the same folder, fsync, then rename over ``path``.

    A crash at any point leaves either the previous file or the new one, never a partial file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
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
    spec = getattr(model, "rtseg_spec", None)
    if spec:
        msg += f" (model {spec['name']!r} with num_classes={spec['num_classes']})"
    hint = ""
    if shapes and any(v[1][:1] != v[2][:1] for v in shapes):
        hint = " Different leading dimensions usually mean another class count: pass num_classes to match the weights."
    return msg + ":\n  " + "\n  ".join(lines) + hint, missing, unexpected, shapes


def load_weights(model: nn.Module, weights: str | os.PathLike | Mapping[str, torch.Tensor], strict: bool = True) -> dict[str, list]:
    """Load ``weights`` (a path or a state dict) into ``model`` with key and shape checking.

    With ``strict=True`` any missing or unexpected key or shape difference raises
    :class:`WeightsMismatchError` listing them. With ``strict=False`` the matching tensors are loaded and
    the rest is reported in the returned dict (``missing``, ``unexpected``, ``shape_mismatch``).
    """
    source = repr(str(weights)) if isinstance(weights, (str, os.PathLike)) else "the given state dict"
    obj = load_file(weights) if isinstance(weights, (str, os.PathLike)) else weights
    state = extract_state_dict(obj, source)
    message, missing, unexpected, shapes = _describe_mismatch(model, state, source)
    if strict and (missing or unexpected or shapes):
        raise WeightsMismatchError(message)
    bad = {k for k, _, _ in shapes}
    model.load_state_dict({k: v for k, v in state.items() if k not in bad}, strict=False)
    return {"missing": missing, "unexpected": unexpected, "shape_mismatch": [k for k, _, _ in shapes]}


def save_checkpoint(path: str | os.PathLike, model: nn.Module, **extra: Any) -> Path:
    """Write an rtseg checkpoint: the model's build spec, its state dict and any ``extra`` training state."""
    spec = getattr(model, "rtseg_spec", None)
    if spec is None:
        raise ValueError("save_checkpoint needs a model built by rtseg.create_model (it records how to rebuild it)")
    target = model.module if hasattr(model, "module") else model
    payload = {
        "format": CHECKPOINT_FORMAT,
        "model": dict(spec),
        "normalization": getattr(target, "normalization", "imagenet"),
        "model_state": target.state_dict(),
        **extra,
    }
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


def model_from_checkpoint(path: str | os.PathLike) -> nn.Module:
    """Rebuild the model stored in an rtseg checkpoint, load its weights and restore its normalisation preset."""
    from rtseg.registry import create_model

    ckpt = load_checkpoint(path)
    spec = ckpt["model"]
    model = create_model(spec["name"], num_classes=spec["num_classes"], **spec.get("options", {}))
    load_weights(model, ckpt["model_state"], strict=True)
    model.normalization = ckpt.get("normalization", model.normalization)
    model.rtseg_config = ckpt.get("config") or {}  # the training config, e.g. which dataset it saw
    return model
