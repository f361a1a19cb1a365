"""A dataset of (image, label) pairs passed through a paired transform, reproducibly per (seed, epoch, index)."""
from __future__ import annotations

import numpy as np
from torch.utils.data import Dataset

__all__ = ["TransformedDataset"]


class TransformedDataset(Dataset):
    """Applies a paired transform with a random generator fixed by (seed, epoch, index): the same on every worker and on resume."""

    def __init__(self, base, transform, seed: int = 0, crop_sizes: list | None = None):
        self.base, self.transform, self.seed, self.epoch = base, transform, seed, 0
        # multi-scale training: entry p * len(base) + i is item i cropped to crop_sizes[p]
        self.crop_sizes = [tuple(c) for c in crop_sizes] if crop_sizes else None

    def __len__(self) -> int:
        return len(self.base) * (len(self.crop_sizes) if self.crop_sizes else 1)

    def __getitem__(self, index: int):
        n = len(self.base)
        image, label = self.base[index % n]
        rng = np.random.default_rng([self.seed, self.epoch, index])
        if self.crop_sizes:
            return self.transform(image, label, rng, crop_size=self.crop_sizes[index // n])
        return self.transform(image, label, rng)
