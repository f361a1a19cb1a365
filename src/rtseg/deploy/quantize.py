"""INT8 post-training static quantization of an exported ONNX model with ONNX Runtime.

Activations are calibrated on real images (a dataset folder), normalised with the model's own preset
read from the ONNX metadata and resized to the model's input size (:mod:`rtseg.deploy.calibration`, shared
with NNCF). Weights are quantized per channel (QDQ format, signed 8-bit weights and unsigned activations),
which ONNX Runtime's CPU kernels run as integer convolutions. The metadata of the FP32 file is carried over.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from rtseg.deploy.calibration import calibration_images, calibration_set
from rtseg.deploy.onnx_export import _require, read_metadata

__all__ = ["quantize_int8", "calibration_images"]


def quantize_int8(fp32_path: str | Path, int8_path: str | Path, calibration: str | Path | list[Path], count: int = 32,
                  size: tuple[int, int] | None = None) -> dict[str, Any]:
    """Write the INT8 model of ``fp32_path`` to ``int8_path``; returns a record with the calibration used."""
    _require("onnxruntime")
    onnx = _require("onnx")
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    calib = calibration_set(read_metadata(fp32_path), fp32_path, calibration, count, size)
    files = calib.files
    input_name = onnx.load(str(fp32_path), load_external_data=False).graph.input[0].name

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = calib.inputs()

        def get_next(self):
            x = next(self.it, None)
            return None if x is None else {input_name: x}

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
