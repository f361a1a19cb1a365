"""Input normalisation presets: how an RGB uint8 image becomes the tensor a model was trained on."""
from __future__ import annotations

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
        order = data.get("channel_order", "RGB")
        if order not in ("RGB", "BGR"):
            raise ValueError(f"normalisation channel_order {order!r}: expected RGB or BGR")
        known = PRESETS.get(data["name"])
        return cls(data["name"], tuple(float(v) for v in data["mean"]), tuple(float(v) for v in data["std"]), order,
                   float(data.get("post_scale", 1.0)), known.description if known else "")


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
