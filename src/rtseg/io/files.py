"""Writing files atomically and reading PyTorch files without executing code (``weights_only=True``)."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch

from rtseg.errors import UserError
from rtseg.storage import file_mode, reraise_write_error
from rtseg.storage import not_a_file

__all__ = ["CheckpointError", "WeightsMismatchError", "atomic_save", "atomic_write", "load_file"]


class CheckpointError(UserError, RuntimeError):
    """A checkpoint or weights file that cannot be read."""


class WeightsMismatchError(UserError, RuntimeError):
    """Weights that do not fit the model's architecture or class count."""


def atomic_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` to a temporary file in the same folder, fsync, then rename over ``path``.

    A crash at any point leaves either the previous file or the new one, never a partial file.
    """
    return atomic_write(path, lambda tmp: torch.save(obj, tmp))


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """``write(temporary path)`` in the target's folder, fsync, then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name[:40]}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, file_mode())
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        reraise_write_error(exc, path)  # a full or read-only disk becomes a user error naming the path
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


def _looks_like_text(path: Path) -> bool:
    with open(path, "rb") as f:
        sample = f.read(512)
    try:
        sample.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def load_file(path: str | os.PathLike) -> Any:
    """``torch.load(weights_only=True)`` on the CPU, with errors that name the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weights file {str(path)!r} {not_a_file(path) or 'does not exist'}")
    with open(path, "rb") as f:
        head = f.read(4)
    # torch.save writes a zip archive (PK..); files of torch < 1.6 are a bare pickle (protocol 2+: 0x80)
    if not (head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"):
        kind = "empty" if not head else "a text file" if _looks_like_text(path) else f"a file starting with bytes {head.hex()}"
        raise CheckpointError(f"{str(path)!r} is not a weights file ({kind}): expected a file saved with torch.save (.pt, .pth) "
                              "or a .safetensors file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for truncated or foreign files
        if "Weights only load failed" in str(exc):
            raise CheckpointError(
                f"{str(path)!r} holds Python objects besides tensors and plain data; rtseg never unpickles those (they can "
                f"run code). Load only weights files from a source you trust, saved as state dicts or .safetensors"
            ) from None
        raise CheckpointError(
            f"{str(path)!r} is not a readable PyTorch weights file (truncated, corrupt, or not saved with torch.save): "
            f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0].split('. This is an internal')[0][:300]}"
        ) from exc
