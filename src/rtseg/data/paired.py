"""Datasets of image / label file pairs: the reading of image and label files and the base class that checks them.

The folder formats (CamVid, Cityscapes in rtseg.data.datasets, custom folders in rtseg.data.folder) build on it,
so neither of those modules needs the other."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from rtseg.data.image_io import DatasetError, read_image, read_label
from rtseg.data.labels import ClassInfo

__all__ = ["IMAGE_SUFFIXES", "DatasetError", "read_image", "read_label", "PairedFolder"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


class PairedFolder:
    """Items ``(image, label)`` read from ``pairs`` of (image path, label path); ``label(i)`` reads the label alone."""

    classes: ClassInfo

    def __init__(self, pairs: list[tuple[Path, Path]], description: str):
        if not pairs:
            raise DatasetError(f"no image / label pairs found in {description}")
        self.pairs = pairs

    def __len__(self) -> int:
        return len(self.pairs)

    def name(self, index: int) -> str:
        return self.pairs[index][0].stem

    # largest raw label value the files may hold (None: every value has a meaning, e.g. Cityscapes labelIds)
    max_raw_label: int | None = None

    def convert_label(self, label: np.ndarray) -> np.ndarray:
        return label

    def label(self, index: int) -> np.ndarray:
        """The label map of item ``index``, checked: raw values above ``max_raw_label`` raise naming the file."""
        path = self.pairs[index][1]
        raw = read_label(path)
        if self.max_raw_label is not None and raw.size and int(raw.max()) > self.max_raw_label:
            bad = [int(v) for v in np.unique(raw) if v > self.max_raw_label]
            raise DatasetError(f"label map {str(path)!r} has value(s) {bad[:10]} outside the classes and the ignore value (0..{self.max_raw_label})")
        return self.convert_label(raw)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        img_path, lab_path = self.pairs[index]
        image = read_image(img_path)
        label = self.label(index)
        if image.shape[:2] != label.shape:
            raise DatasetError(f"image {str(img_path)!r} is {image.shape[1]}x{image.shape[0]} but its label {str(lab_path)!r} is {label.shape[1]}x{label.shape[0]}")
        return image, label
