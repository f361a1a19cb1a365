"""Inference helpers: load a model from a name or checkpoint, predict label maps, colourise and overlay."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

from rtseg.card import CardError, ModelCard, card_of
from rtseg.data.image_io import check_size, image_to_rgb, read_image
from rtseg.data.labels import ClassInfo, colorize
from rtseg.data.normalization import get_normalization
from rtseg.data.transforms import shrink_image
from rtseg.errors import OptionError
from rtseg.evaluation import resize_to
from rtseg.registry import create_model

__all__ = ["load_model", "predict", "predict_logits", "overlay", "present_classes", "draw_legend", "parse_size", "classes_for", "model_input", "model_forward", "bounded_argmax"]


def parse_size(text: str | None, option: str = "--size") -> tuple[int, int] | None:
    """``"512x1024"`` (height x width) -> ``(512, 1024)``; each side within 1..MAX_SIDE (:func:`check_size`)."""
    if text is None:
        return None
    try:
        h, w = (int(v) for v in str(text).lower().split("x"))
    except ValueError:
        raise OptionError(f"{option} {text!r} is not HEIGHTxWIDTH with positive integers (e.g. 512x1024)") from None
    return check_size((h, w), option=option)


def load_model(spec: str | Path, weights: str | Path | None = None, num_classes: int | None = None, **options: Any) -> nn.Module:
    """A model in eval mode, with its card: from an rtseg checkpoint or weights file (the card inside it, or the
    registered one its SHA-256 matches), or from a registered name with optional ``weights`` (a tag, URL or file)."""
    path = Path(spec)
    if path.suffix.lower() in (".onnx", ".xml"):
        raise OptionError(f"{spec} is an exported network ({'ONNX' if path.suffix.lower() == '.onnx' else 'OpenVINO IR'}): this command "
                          "needs the PyTorch network (a registered name, checkpoint or weights file); rtseg predict runs exported files")
    if path.is_file() or path.suffix in (".pt", ".pth", ".ckpt", ".safetensors"):
        if weights is not None:
            raise OptionError(f"{spec} is a file: name a registered model to use --weights with (e.g. rtseg eval espnet --weights FILE)")
        card = _card_of_file(path)
        model = create_model(card.model, weights=str(path), num_classes=num_classes, **options)
        return model.eval()
    model = create_model(str(spec), num_classes=num_classes, weights=weights, **options)
    return model.eval()


def _card_of_file(path: Path):
    """The card a weights file is registered with or carries; a file with neither cannot name its model."""
    from rtseg.io import CheckpointError
    from rtseg.pretrained import identify_weights
    from rtseg.registry import checkpoint_card

    card = identify_weights(path, legacy_card=checkpoint_card)
    if card is None:
        raise CheckpointError(f"{str(path)!r} is a bare state dict with no model card: name the model, e.g. rtseg eval espnet --weights {path}")
    return card


def classes_for(model: nn.Module) -> ClassInfo:
    """The classes a model's card names (placeholders when nothing has named its outputs)."""
    return card_of(model).class_info


def _as_rgb(image: Any) -> np.ndarray:
    if isinstance(image, (str, Path)):
        return read_image(image)
    if isinstance(image, Image.Image):
        return image_to_rgb(image)  # 16-bit, float and EXIF-rotated images as read_image gives them
    arr = np.asarray(image)
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
        raise ValueError(f"expected an H x W x 3 uint8 RGB image, got an array of shape {arr.shape} and dtype {arr.dtype}")
    return arr


# Largest label map (pixels) the arg-max is taken at: logits of a larger image are upsampled only to this many pixels,
# and the label map is then resized (nearest) to the full image. 16 MP of 19-class float logits is ~1.2 GB; an 8000 x
# 8000 photo at full size would need 4.9 GB for the logits alone.
MAX_ARGMAX_PIXELS = 16_000_000


def model_input(card: ModelCard | None, rgb: np.ndarray, size: tuple[int, int] | None = None, normalization: str | None = None,
                device: torch.device | str = "cpu") -> torch.Tensor:
    """The normalised ``1 x 3 x h x w`` network input for an RGB image: the card's preset (or ``normalization``),
    shrunk as the weights were trained (:attr:`ModelCard.input_scale`) when no ``size`` is asked for, else
    resized bilinearly to ``size``. Every inference path (predict, the server) prepares its input here."""
    norm = get_normalization(normalization or card.normalization)
    # weights trained on shrunk images get the image shrunk by the training pipeline's own function
    x = norm(shrink_image(rgb, card.input_scale if size is None and card is not None else 1))[None].to(device)
    if size is not None:
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
    return x


@torch.inference_mode()
def model_forward(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The model's logits for a prepared batch, in eval mode under ``torch.inference_mode`` (training mode restored)."""
    was_training = model.training
    model.eval()
    logits = model(x)
    model.train(was_training)
    return logits


def _card_or_none(model: nn.Module, normalization: str | None) -> ModelCard | None:
    try:
        return card_of(model)
    except CardError:
        if normalization is None:
            raise
        return None  # a module without a card runs with the caller's normalisation, fed the image as it is


@torch.inference_mode()
def _model_logits(model: nn.Module, image: Any, size: tuple[int, int] | None, normalization: str | None) -> tuple[torch.Tensor, tuple[int, int]]:
    """(logits ``1 x C x h x w`` at the model's output resolution, the image's ``(H, W)``)."""
    rgb = _as_rgb(image)
    card = _card_or_none(model, normalization)
    x = model_input(card, rgb, size, normalization, next(model.parameters()).device)
    return model_forward(model, x), tuple(rgb.shape[:2])


@torch.inference_mode()
def predict_logits(model: nn.Module, image: Any, size: tuple[int, int] | None = None, normalization: str | None = None) -> torch.Tensor:
    """Logits ``C x H x W`` at the image's own resolution (the input is resized to ``size`` first if given)."""
    logits, hw = _model_logits(model, image, size, normalization)
    return resize_to(logits, hw)[0]


def bounded_argmax(logits: torch.Tensor, hw: tuple[int, int], max_pixels: int | None = None) -> torch.Tensor:
    """The ``H x W`` uint8 label map of ``logits`` (``1 x C x h x w``) for an image of size ``hw``, in bounded memory.

    Up to ``max_pixels`` (default :data:`MAX_ARGMAX_PIXELS`) the logits are upsampled bilinearly to ``hw`` and the
    arg-max is taken there, exactly as before. For a larger image they are upsampled only to the largest size of the
    same aspect within ``max_pixels``, the arg-max is taken at that size and the label map is resized to ``hw`` by
    nearest neighbour: memory stays that of ``max_pixels`` logits plus one byte per image pixel, and class borders are
    placed to within ``sqrt(H * W / max_pixels)`` pixels.
    """
    max_pixels = MAX_ARGMAX_PIXELS if max_pixels is None else max_pixels
    h, w = hw
    if h * w <= max_pixels:
        return resize_to(logits, hw).argmax(1)[0].to(torch.uint8)
    scale = (max_pixels / (h * w)) ** 0.5
    mid = (max(1, min(h, int(h * scale))), max(1, min(w, int(w * scale))))
    labels = resize_to(logits, mid).argmax(1).to(torch.uint8)
    return F.interpolate(labels[None], size=hw, mode="nearest")[0, 0]


def predict(model: nn.Module | str, image: Any, size: tuple[int, int] | None = None, normalization: str | None = None) -> np.ndarray:
    """The ``H x W`` label map (uint8 class indices) a model predicts for an image (path, PIL image or RGB array).

    The model's own normalisation preset is applied; ``model`` may also be a registered name. The arg-max is taken at
    a bounded resolution for very large images (:func:`bounded_argmax`), so memory does not grow with C x H x W.
    """
    if isinstance(model, str):
        model = load_model(model)
    logits, hw = _model_logits(model, image, size, normalization)
    return bounded_argmax(logits, hw).cpu().numpy()


def overlay(image: np.ndarray, label_map: np.ndarray, palette, alpha: float = 0.5) -> np.ndarray:
    """The image blended with the colourised label map."""
    colour = colorize(label_map, palette).astype(np.float32)
    return np.clip(image.astype(np.float32) * (1 - alpha) + colour * alpha, 0, 255).astype(np.uint8)


def present_classes(label_map: np.ndarray, classes: ClassInfo, min_share: float = 0.0) -> list[tuple[int, str, tuple[int, int, int], float]]:
    """``(index, name, colour, pixel share)`` of each named class in ``label_map``, largest share first (void outputs and
    classes below ``min_share`` left out)."""
    counts = np.bincount(np.asarray(label_map, dtype=np.int64).ravel(), minlength=classes.num_classes)[: classes.num_classes]
    total = max(1, int(np.asarray(label_map).size))
    found = [(i, classes.names[i], tuple(classes.palette[i]), counts[i] / total) for i in np.flatnonzero(counts)]
    return sorted((f for f in found if f[3] >= min_share), key=lambda f: -f[3])


def draw_legend(image: np.ndarray, label_map: np.ndarray, classes: ClassInfo) -> np.ndarray:
    """``image`` with a legend in its top-left corner: a colour swatch and the name of each class present in
    ``label_map`` (largest first), on a dark panel, sized to the image (a copy; ``image`` is unchanged)."""
    from PIL import ImageDraw, ImageFont

    entries = present_classes(label_map, classes)
    if not entries:
        return image
    h, w = image.shape[:2]
    size = int(np.clip(min(h, w) / 30, 9, 28))
    try:
        font = ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType: the fixed bitmap font
        font = ImageFont.load_default()
    pad, swatch = max(2, size // 4), size
    rows = entries[: max(1, (h - 2 * pad) // (size + pad))]  # as many as fit in the image's height
    labels = [f"{name} {100 * share:.0f}%" for _, name, _, share in rows]
    text_w = max(font.getbbox(t)[2] for t in labels)
    panel = Image.new("RGBA", (min(w, 3 * pad + swatch + text_w), min(h, pad + len(rows) * (size + pad))), (0, 0, 0, 150))
    draw = ImageDraw.Draw(panel)
    for k, ((_, _, colour, _), text) in enumerate(zip(rows, labels)):
        y = pad + k * (size + pad)
        draw.rectangle([pad, y, pad + swatch - 1, y + size - 1], fill=(*colour, 255), outline=(255, 255, 255, 255))
        draw.text((2 * pad + swatch, y + size // 2), text, fill=(255, 255, 255, 255), font=font, anchor="lm")
    out = Image.fromarray(image).convert("RGBA")
    out.alpha_composite(panel, (0, 0))
    return np.asarray(out.convert("RGB"))
