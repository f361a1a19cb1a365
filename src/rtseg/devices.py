"""Device names from configs and command lines to torch devices, with a clear error when one is missing."""
from __future__ import annotations

import torch

from rtseg.errors import UserError

__all__ = ["DeviceError", "resolve_device"]


class DeviceError(UserError, ValueError):
    """A device that was asked for is not available here."""


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise DeviceError(f"device {name!r} was asked for but CUDA is not available; use train.device=cpu")
    return torch.device(name)
