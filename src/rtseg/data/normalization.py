"""Input normalisation presets: how an RGB uint8 image becomes the tensor a model was trained on."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from rtseg.errors import OptionError

__all__ = ["Normalization", "PRESETS", "get_normalization"]


@dataclass(frozen=True)
class Normalization:
    """``out = ((pixel_0_255 - mean) / std) * post_scale`` per channel, channels taken in ``channel_order``."""

    name: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    channel_order: str = "RGB"
    post_scale: float = 1.0
    description: str = ""

    def __post_init__(self):
        # a card is JSON anybody can write: std 0 would turn every pixel into inf/nan and predict class 0 silently
        for key, values in (("mean", self.mean), ("std", self.std)):
            if len(values) != 3 or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in values):
                raise ValueError(f"normalization {key} must be 3 finite numbers (one per channel), got {list(values)}")
        if not all(v > 0 for v in self.std):
            raise ValueError(f"normalization std must be 3 numbers > 0, got {list(self.std)}")
        if not (isinstance(self.post_scale, (int, float)) and math.isfinite(self.post_scale) and self.post_scale > 0):
            raise ValueError(f"normalization post_scale must be a finite number > 0, got {self.post_scale!r}")
        if self.channel_order not in ("RGB", "BGR"):
            raise ValueError(f"normalization channel_order {self.channel_order!r}: expected RGB or BGR")

    def __call__(self, image: np.ndarray | torch.Tensor) -> torch.Tensor:
        """``H x W x 3`` uint8 RGB array (or ``N x 3 x H x W`` float tensor on the 0-255 scale) to a normalised tensor."""
        if isinstance(image, np.ndarray):
            if image.ndim != 3 or image.shape[2] != 3:
                raise ValueError(f"expected an H x W x 3 RGB image, got an array of shape {image.shape}")
            t = torch.from_numpy(np.array(image, dtype=np.float32)).permute(2, 0, 1)
        else:
            t = image.float()
        if self.channel_order == "BGR":
            t = t.flip(-3)
        shape = (3, 1, 1)
        mean = torch.tensor(self.mean, dtype=t.dtype, device=t.device).view(shape)
        scale = (self.post_scale / torch.tensor(self.std, dtype=t.dtype, device=t.device)).view(shape)
        return (t - mean) * scale

    def to_dict(self) -> dict:
        return {"name": self.name, "mean": list(self.mean), "std": list(self.std), "channel_order": self.channel_order, "post_scale": self.post_scale}

    @classmethod
    def from_dict(cls, data: dict) -> "Normalization":
        """The inverse of :meth:`to_dict`; the numbers travel with it, so a file needs no preset of this install."""
        if not isinstance(data, dict):
            raise ValueError(f"normalization must be a mapping with name, mean, std, got {type(data).__name__}")
        name = data["name"]
        if not isinstance(name, str) or not name:
            raise ValueError(f"normalization name must be a non-empty string, got {name!r}")
        order = data.get("channel_order", "RGB")
        if order not in ("RGB", "BGR"):
            raise ValueError(f"normalization channel_order {order!r}: expected RGB or BGR")
        numbers = {k: _numbers(data[k], k) for k in ("mean", "std")}
        known = PRESETS.get(name)
        return cls(name, numbers["mean"], numbers["std"], order, _numbers([data.get("post_scale", 1.0)], "post_scale")[0],
                   known.description if known else "")


def _numbers(values, key: str) -> tuple[float, ...]:
    if not isinstance(values, (list, tuple)) or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        raise ValueError(f"normalization {key} must be a list of numbers, got {values!r}")
    return tuple(float(v) for v in values)


PRESETS: dict[str, Normalization] = {
    p.name: p
    for p in (
        Normalization(
            "imagenet",
            mean=(0.485 * 255, 0.456 * 255, 0.406 * 255),
            std=(0.229 * 255, 0.224 * 255, 0.225 * 255),
            description="ImageNet statistics on RGB, the usual choice for ImageNet-pretrained backbones",
        ),
        Normalization(
            "espnet",
            mean=(72.3923111, 82.90893555, 73.15840149),
            std=(45.3192215, 46.15289307, 44.91483307),
            channel_order="BGR",
            post_scale=1.0 / 255.0,
            description="ESPNet's official preprocessing: BGR, Cityscapes mean/std on the 0-255 scale, then divided by 255 again",
        ),
        # The official CamVid release of ESPNet normalised with statistics of the 367 SegNet-split CamVid training
        # images, computed the way its loadData.py does: each image read as BGR uint8, the mean and the standard
        # deviation of each channel taken per image, then both averaged over the images. Computed once here from
        # shared/data/camvid/train (float64; tests/test_pretrained.py recomputes them).
        Normalization(
            "espnet-camvid",
            mean=(110.33102643430219, 108.40886315470783, 105.03319368755685),
            std=(72.12571015416097, 72.69074533734673, 69.90434816160987),
            channel_order="BGR",
            post_scale=1.0 / 255.0,
            description="ESPNet's CamVid preprocessing: BGR, CamVid training-set mean/std on the 0-255 scale, then divided by 255 again",
        ),
        Normalization("unit", mean=(0.0, 0.0, 0.0), std=(255.0, 255.0, 255.0), description="RGB scaled to 0..1, no centring"),
    )
}


def get_normalization(name: str | Normalization) -> Normalization:
    if isinstance(name, Normalization):
        return name
    try:
        return PRESETS[name]
    except KeyError:
        raise OptionError(f"unknown normalisation preset {name!r}; presets: {', '.join(PRESETS)}") from None
