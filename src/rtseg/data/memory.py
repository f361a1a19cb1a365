"""Decode a file dataset once into memory, so training epochs spend no time reading and resizing PNGs."""
from __future__ import annotations

from typing import Any

import numpy as np

from rtseg.data.transforms import resize_image, resize_pair
from rtseg.config import ConfigError

__all__ = ["InMemoryDataset", "available_memory_bytes", "maybe_in_memory"]


def available_memory_bytes() -> int | None:
    """``MemAvailable`` of /proc/meminfo in bytes, or None where it cannot be read."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


class InMemoryDataset:
    """The items of ``base`` decoded once, images resized to ``image_size`` (H, W) when given and labels with them
    when ``resize_labels`` (training) or kept at full size (evaluation scores full-resolution labels).
    The arrays are exactly what the transforms would have computed from the files, so results do not change."""

    def __init__(self, base, image_size: tuple[int, int] | None, resize_labels: bool):
        self.base = base
        self.items: list[tuple[np.ndarray, np.ndarray]] = []
        for i in range(len(base)):
            image, label = base[i]
            if image_size is not None:
                if resize_labels:
                    image, label = resize_pair(image, label, image_size)
                else:
                    image = resize_image(image, image_size)
            self.items.append((np.ascontiguousarray(image), np.ascontiguousarray(label)))

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        return self.items[index]

    def __getattr__(self, name: str) -> Any:  # pairs, classes, name(), label() of the dataset underneath
        return getattr(self.__dict__["base"], name)

    def nbytes(self) -> int:
        return sum(a.nbytes + b.nbytes for a, b in self.items)


def _estimated_bytes(base, image_size: tuple[int, int] | None) -> int:
    if image_size is not None:
        return len(base) * image_size[0] * image_size[1] * 4
    image, _ = base[0]
    return len(base) * image.shape[0] * image.shape[1] * 4


def maybe_in_memory(base, setting: str, image_size: tuple[int, int] | None, resize_labels: bool, share: float = 0.25):
    """``base`` decoded into memory when ``data.cache`` is ``memory``, or ``auto`` and it is a file dataset whose
    decoded size fits in ``share`` of the available memory; else ``base`` itself."""
    if setting not in ("auto", "memory", "off"):
        raise ConfigError(f"data.cache={setting!r} is not one of auto, memory, off")
    if setting == "off" or not getattr(base, "pairs", None):
        return base  # synthetic scenes are drawn, not decoded
    if setting == "auto":
        free = available_memory_bytes()
        if free is None or _estimated_bytes(base, image_size) > share * free:
            return base
    return InMemoryDataset(base, image_size, resize_labels)
