"""Paired image / label transforms: random scale, crop with ignore padding, flips; then normalisation to tensors."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from PIL import Image

from rtseg.data.labels import IGNORE_INDEX
from rtseg.data.normalization import Normalization, get_normalization

__all__ = ["resize_pair", "TrainTransform", "EvalTransform"]


def _resize_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    h, w = size
    if image.shape[:2] == (h, w):
        return image
    return np.asarray(Image.fromarray(image).resize((w, h), Image.BILINEAR))


def _resize_label(label: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    h, w = size
    if label.shape == (h, w):
        return label
    return np.asarray(Image.fromarray(label).resize((w, h), Image.NEAREST))


def resize_pair(image: np.ndarray, label: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    return _resize_image(image, size), _resize_label(label, size)


class TrainTransform:
    """Training augmentation from a config's ``data`` section, then normalisation.

    Order: resize to ``image_size`` -> random scale in ``scale_range`` -> random crop to
    ``crop_size`` (padding with the ignore label where the image is smaller) -> flips.
    ``label_scale`` shrinks the labels (nearest) for encoder-only training; ``input_scale``
    shrinks the input and keeps full-resolution labels.
    """

    def __init__(self, data_cfg: dict[str, Any], normalization: str | Normalization):
        self.cfg = data_cfg
        self.norm = get_normalization(normalization)

    def __call__(self, image: np.ndarray, label: np.ndarray, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        cfg = self.cfg
        if cfg.get("image_size") and cfg.get("dataset") != "synthetic":
            image, label = resize_pair(image, label, tuple(cfg["image_size"]))
        lo, hi = cfg.get("scale_range") or (1.0, 1.0)
        if hi > lo or lo != 1.0:
            s = rng.uniform(lo, hi)
            h, w = label.shape
            image, label = resize_pair(image, label, (max(1, int(round(h * s))), max(1, int(round(w * s)))))
        if cfg.get("crop_size"):
            image, label = _random_crop(image, label, tuple(cfg["crop_size"]), rng)
        if cfg.get("hflip") and rng.random() < 0.5:
            image, label = image[:, ::-1], label[:, ::-1]
        if cfg.get("vflip") and rng.random() < 0.5:
            image, label = image[::-1], label[::-1]
        return finish_pair(image, label, self.norm, cfg.get("input_scale", 1), cfg.get("label_scale", 1))


class EvalTransform:
    """Evaluation: resize the input to ``image_size`` if given; labels keep their full resolution."""

    def __init__(self, data_cfg: dict[str, Any], normalization: str | Normalization):
        self.cfg = data_cfg
        self.norm = get_normalization(normalization)

    def __call__(self, image: np.ndarray, label: np.ndarray, rng: np.random.Generator | None = None):
        if self.cfg.get("image_size") and self.cfg.get("dataset") != "synthetic":
            image = _resize_image(image, tuple(self.cfg["image_size"]))
        return self.norm(np.ascontiguousarray(image)), torch.from_numpy(np.ascontiguousarray(label).astype(np.int64))


def _random_crop(image, label, size, rng):
    ch, cw = size
    h, w = label.shape
    if h < ch or w < cw:  # pad: image with zeros, label with the ignore value
        ph, pw = max(ch - h, 0), max(cw - w, 0)
        image = np.pad(image, ((0, ph), (0, pw), (0, 0)))
        label = np.pad(label, ((0, ph), (0, pw)), constant_values=IGNORE_INDEX)
        h, w = label.shape
    y, x = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
    return image[y : y + ch, x : x + cw], label[y : y + ch, x : x + cw]


def finish_pair(image, label, norm: Normalization, input_scale: int = 1, label_scale: int = 1):
    h, w = label.shape
    if input_scale and input_scale > 1:
        image = _resize_image(np.ascontiguousarray(image), (h // input_scale, w // input_scale))
    if label_scale and label_scale > 1:
        label = _resize_label(np.ascontiguousarray(label), (h // label_scale, w // label_scale))
    x = norm(np.ascontiguousarray(image))
    y = torch.from_numpy(np.ascontiguousarray(label).astype(np.int64))
    return x, y
