"""INT8 post-training static quantization of an exported ONNX model with ONNX Runtime.

Activations are calibrated on real images (a dataset folder), normalised with the model's own preset
read from the ONNX metadata and resized to the model's input size. Weights are quantized per channel
(QDQ format, signed 8-bit weights and unsigned activations), which ONNX Runtime's CPU kernels run as
integer convolutions. The metadata of the FP32 file is carried over.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from rtseg.deploy.onnx_export import ExportError, _require, read_metadata

__all__ = ["quantize_int8", "calibration_images"]


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


def quantize_int8(fp32_path: str | Path, int8_path: str | Path, calibration: str | Path | list[Path], count: int = 32,
                  size: tuple[int, int] | None = None) -> dict[str, Any]:
    """Write the INT8 model of ``fp32_path`` to ``int8_path``; returns a record with the calibration used."""
    _require("onnxruntime")
    onnx = _require("onnx")
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    import torch.nn.functional as F

    from rtseg.data.datasets import read_image

    meta = read_metadata(fp32_path)
    if "card" not in meta:
        raise ExportError(f"{fp32_path}: no rtseg model card in its metadata (rtseg.card); export it with `rtseg export`")
    norm = meta["card"].normalization
    if size is None:
        if meta.get("input_size", "dynamic") == "dynamic":
            raise ExportError("a dynamic-shape model needs a calibration size (size=(H, W))")
        size = tuple(int(v) for v in str(meta["input_size"]).split("x"))
    files = calibration if isinstance(calibration, list) else calibration_images(calibration, count)
    input_name = onnx.load(str(fp32_path), load_external_data=False).graph.input[0].name

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter(files)

        def get_next(self):
            f = next(self.it, None)
            if f is None:
                return None
            x = norm(read_image(f))[None]
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
            return {input_name: x.numpy().astype(np.float32)}

    int8_path = Path(int8_path)
    int8_path.parent.mkdir(parents=True, exist_ok=True)
    quantize_static(str(fp32_path), str(int8_path), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    proto = onnx.load(str(int8_path))
    src = onnx.load(str(fp32_path))
    del proto.metadata_props[:]
    for p in src.metadata_props:
        proto.metadata_props.add(key=p.key, value=p.value)
    proto.metadata_props.add(key="rtseg.quantization", value=f"int8 static QDQ, per-channel weights, {len(files)} calibration images")
    onnx.save(proto, str(int8_path))
    return {"path": str(int8_path), "calibration_images": len(files), "bytes": int8_path.stat().st_size}
