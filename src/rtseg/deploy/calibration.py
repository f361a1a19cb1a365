"""The INT8 calibration set shared by ONNX Runtime static quantization and NNCF: real images from a folder,
normalised with the model's own preset (read from the exported file's card) and resized to its input size."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np

from rtseg.data.normalization import Normalization
from rtseg.deploy.onnx_export import ExportError

__all__ = ["Calibration", "calibration_images", "calibration_set"]


def calibration_images(source: str | Path, count: int = 32) -> list[Path]:
    """Up to ``count`` image files from a folder (recursively, sorted, evenly spread)."""
    from rtseg.data.datasets import IMAGE_SUFFIXES

    source = Path(source)
    if not source.is_dir():
        raise ExportError(f"calibration folder {source} does not exist; pass a folder of images from the training data")
    files = sorted(f for f in source.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ExportError(f"calibration folder {source} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    step = max(1, len(files) // count)
    return files[::step][:count]


@dataclass(frozen=True)
class Calibration:
    """The calibration images and how each becomes a model input (``1 x 3 x H x W`` float32)."""

    files: list[Path]
    normalization: Normalization
    size: tuple[int, int]

    def input(self, file: Path) -> np.ndarray:
        import torch.nn.functional as F

        from rtseg.data.datasets import read_image

        x = F.interpolate(self.normalization(read_image(file))[None], size=self.size, mode="bilinear", align_corners=False)
        return x.numpy().astype(np.float32)

    def inputs(self) -> Iterator[np.ndarray]:
        return (self.input(f) for f in self.files)


def calibration_set(meta: Mapping[str, Any], source: str | Path, calibration: str | Path | list[Path], count: int = 32,
                    size: tuple[int, int] | None = None, *, kind: str = "model",
                    export_command: str = "rtseg export") -> Calibration:
    """The calibration of an exported file whose metadata is ``meta``: its card's normalisation, ``size`` (or the
    file's fixed input size) and the images (a list, or up to ``count`` from a folder). Checked before any work."""
    if "card" not in meta:
        raise ExportError(f"{source}: no rtseg model card in its metadata; export it with `{export_command}`")
    if size is None:
        if meta.get("input_size", "dynamic") == "dynamic":
            raise ExportError(f"a dynamic-shape {kind} needs a calibration size (size=(H, W))")
        size = tuple(int(v) for v in str(meta["input_size"]).split("x"))
    files = calibration if isinstance(calibration, list) else calibration_images(calibration, count)
    return Calibration(files, meta["card"].normalization, tuple(size))
