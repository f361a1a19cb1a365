"""Device names from configs and command lines to torch devices, with a clear error when one is missing."""
from __future__ import annotations

import importlib
import os
import shutil

import torch

from rtseg.errors import UserError

__all__ = ["DeviceError", "resolve_device", "compile_unavailable_reason"]


class DeviceError(UserError, ValueError):
    """A device that was asked for is not available here."""


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise DeviceError(f"device {name!r} was asked for but CUDA is not available; use train.device=cpu")
    return torch.device(name)


def _cpp_compiler() -> str | None:
    """The C++ compiler inductor would use for CPU code, or None when there is none."""
    for name in (os.environ.get("CXX"), "c++", "g++", "clang++"):
        if name and shutil.which(name):
            return name
    return None


def compile_unavailable_reason(device: torch.device | None = None) -> str | None:
    """None when ``torch.compile`` (inductor) can run on ``device`` here, else why not."""
    if not hasattr(torch, "compile"):
        return "this PyTorch has no torch.compile"
    try:
        importlib.import_module("torch._inductor")
    except Exception as exc:  # pragma: no cover - depends on the installation
        return f"the inductor backend cannot be imported ({exc})"
    if (device is None or device.type == "cpu") and _cpp_compiler() is None:
        return "no C++ compiler was found (inductor compiles CPU code with one: install g++ or set CXX)"
    return None
