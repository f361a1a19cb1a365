"""Paired image / label transforms: random scale, crop with ignore padding, flips, rotation, translation,
colour jitter and colour-channel noise; then normalisation to tensors.

Every random choice is drawn from the ``numpy.random.Generator`` passed in, which the trainer seeds from
(seed, epoch, index): the same sample gets the same augmentation on any worker and after a resume.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from PIL import Image

from rtseg.data.labels import IGNORE_INDEX
from rtseg.data.normalization import Normalization, get_normalization

__all__ = ["resize_image", "shrink_image", "resize_pair", "TrainTransform", "EvalTransform"]


def resize_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    h, w = size
    if image.shape[:2] == (h, w):
        return image
    return np.asarray(Image.fromarray(image).resize((w, h), Image.BILINEAR))


def shrink_image(image: np.ndarray, scale: int) -> np.ndarray:
    """The image shrunk by the integer factor ``scale`` (PIL bilinear): the low-resolution input of ``input_scale``
    training (FarSee-Net), used alike by training, evaluation and inference so the network always sees the same."""
    if not scale or scale <= 1:
        return image
    h, w = image.shape[:2]
    return resize_image(np.ascontiguousarray(image), (max(1, h // scale), max(1, w // scale)))


def _resize_label(label: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    h, w = size
    if label.shape == (h, w):
        return label
    return np.asarray(Image.fromarray(label).resize((w, h), Image.NEAREST))


def resize_pair(image: np.ndarray, label: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    return resize_image(image, size), _resize_label(label, size)


class TrainTransform:
    """Training augmentation from a config's ``data`` section, then normalisation.

    Order: resize to ``image_size`` -> random scale in ``scale_range`` -> random rotation by up to
    ``rotate`` degrees -> random translation by up to ``translate`` pixels -> random crop to
    ``crop_size`` (padding with the ignore label where the image is smaller) -> flips -> colour
    jitter (``color_jitter``) -> colour-channel noise (``channel_noise``). Pixels that geometric
    transforms uncover are black in the image and the ignore value in the labels.
    ``label_scale`` shrinks the labels (nearest) for encoder-only training; ``input_scale``
    shrinks the input and keeps full-resolution labels.
    """

    def __init__(self, data_cfg: dict[str, Any], normalization: str | Normalization):
        self.cfg = data_cfg
        self.norm = get_normalization(normalization)

    def __call__(self, image: np.ndarray, label: np.ndarray, rng: np.random.Generator, crop_size: tuple[int, int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``crop_size`` overrides the config's (multi-scale training passes one of ``data.crop_sizes``)."""
        cfg = self.cfg
        if cfg.get("image_size") and cfg.get("dataset") != "synthetic":
            image, label = resize_pair(image, label, tuple(cfg["image_size"]))
        lo, hi = cfg.get("scale_range") or (1.0, 1.0)
        if hi > lo or lo != 1.0:
            s = rng.uniform(lo, hi)
            h, w = label.shape
            image, label = resize_pair(image, label, (max(1, int(round(h * s))), max(1, int(round(w * s)))))
        if cfg.get("rotate"):
            image, label = random_rotate(image, label, float(cfg["rotate"]), rng)
        if cfg.get("translate"):
            image, label = random_translate(image, label, int(cfg["translate"]), rng)
        crop = crop_size or cfg.get("crop_size")
        if crop:
            image, label = _random_crop(image, label, tuple(crop), rng)
        if cfg.get("hflip") and rng.random() < 0.5:
            image, label = image[:, ::-1], label[:, ::-1]
        if cfg.get("vflip") and rng.random() < 0.5:
            image, label = image[::-1], label[::-1]
        if cfg.get("color_jitter"):
            image = color_jitter(image, float(cfg["color_jitter"]), rng)
        if cfg.get("channel_noise"):
            image = channel_noise(image, float(cfg["channel_noise"]), rng)
        return finish_pair(image, label, self.norm, cfg.get("input_scale", 1), cfg.get("label_scale", 1))


class EvalTransform:
    """Evaluation: resize the input to ``image_size`` if given, then shrink it by ``input_scale`` as in training;
    labels keep their full resolution."""

    def __init__(self, data_cfg: dict[str, Any], normalization: str | Normalization):
        self.cfg = data_cfg
        self.norm = get_normalization(normalization)

    def __call__(self, image: np.ndarray, label: np.ndarray, rng: np.random.Generator | None = None):
        if self.cfg.get("image_size") and self.cfg.get("dataset") != "synthetic":
            image = resize_image(image, tuple(self.cfg["image_size"]))
        image = shrink_image(image, self.cfg.get("input_scale", 1))  # as in training; the labels keep their full size
        return self.norm(np.ascontiguousarray(image)), torch.from_numpy(np.ascontiguousarray(label).astype(np.int64))


def random_rotate(image: np.ndarray, label: np.ndarray, max_degrees: float, rng: np.random.Generator):
    """Rotate both by an angle drawn uniformly from [-max_degrees, max_degrees] about the centre, same size."""
    angle = float(rng.uniform(-max_degrees, max_degrees))
    img = Image.fromarray(np.ascontiguousarray(image)).rotate(angle, resample=Image.BILINEAR, fillcolor=(0, 0, 0))
    lab = Image.fromarray(np.ascontiguousarray(label)).rotate(angle, resample=Image.NEAREST, fillcolor=IGNORE_INDEX)
    return np.asarray(img), np.asarray(lab)


def random_translate(image: np.ndarray, label: np.ndarray, max_pixels: int, rng: np.random.Generator):
    """Shift both by whole pixels drawn from [-max_pixels, max_pixels] on each axis, same size."""
    dy, dx = (int(v) for v in rng.integers(-max_pixels, max_pixels + 1, size=2))
    return _shift(image, dy, dx, 0), _shift(label, dy, dx, IGNORE_INDEX)


def _shift(arr: np.ndarray, dy: int, dx: int, fill: int) -> np.ndarray:
    out = np.full_like(arr, fill)
    h, w = arr.shape[:2]
    if abs(dy) >= h or abs(dx) >= w:
        return out
    src_y, dst_y = slice(max(0, -dy), h - max(0, dy)), slice(max(0, dy), h - max(0, -dy))
    src_x, dst_x = slice(max(0, -dx), w - max(0, dx)), slice(max(0, dx), w - max(0, -dx))
    out[dst_y, dst_x] = arr[src_y, src_x]
    return out


def color_jitter(image: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """Brightness, contrast and saturation each scaled by a factor from [1 - strength, 1 + strength]."""
    b, c, s = rng.uniform(max(0.0, 1 - strength), 1 + strength, size=3)
    x = image.astype(np.float32) * b
    grey = x @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    x = (x - grey.mean()) * c + grey.mean()
    grey = (x @ np.array([0.299, 0.587, 0.114], dtype=np.float32))[..., None]
    x = (x - grey) * s + grey
    return np.clip(x + 0.5, 0, 255).astype(np.uint8)


def channel_noise(image: np.ndarray, std: float, rng: np.random.Generator) -> np.ndarray:
    """Add one Gaussian offset per colour channel (std as a fraction of the 0-255 range) to the whole image."""
    offset = rng.normal(0.0, std * 255.0, size=3).astype(np.float32)
    return np.clip(image.astype(np.float32) + offset + 0.5, 0, 255).astype(np.uint8)


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
    image = shrink_image(image, input_scale)  # the image has the label's size here (cropped or resized together)
    if label_scale and label_scale > 1:
        label = _resize_label(np.ascontiguousarray(label), (h // label_scale, w // label_scale))
    x = norm(np.ascontiguousarray(image))
    y = torch.from_numpy(np.ascontiguousarray(label).astype(np.int64))
    return x, y
