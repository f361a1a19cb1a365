"""OpenVINO as an inference backend: IR export with rtseg metadata, fp32 / bf16 inference, NNCF INT8.

An IR is a pair ``model.xml`` (graph) + ``model.bin`` (weights). :func:`export_openvino` converts the model
either from rtseg's verified ONNX export (``via="onnx"``, the default: the same graph ONNX Runtime runs, with
free shapes when ``dynamic``) or directly from PyTorch with OpenVINO's converter (``via="torch"``: no ``onnx``
package needed). Both convert every registered model, with logits within 1.3e-5 of PyTorch at 64x128.
The metadata of the ONNX export (normalisation, classes, palette, input size, how the model was built)
travels in the IR's ``rt_info`` under ``rtseg``, so that a deployment needs only the two files.

Precision: OpenVINO's CPU plugin takes an inference precision hint; ``"bf16"`` runs the convolutions in
bfloat16 on CPUs that have it natively (AVX-512 BF16 / AMX), ``"auto"`` keeps bf16 only where the CPU has it
and the arg-max agrees with fp32 on a check input (:mod:`rtseg.deploy.precision`).
"""
from __future__ import annotations

import json
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from rtseg.deploy.onnx_export import DEFAULT_OPSET, ExportError, _require, check_logits, model_metadata, prepare_for_export
from rtseg.deploy.ort import ExportedSegmenter
from rtseg.deploy.precision import DEFAULT_MIN_AGREEMENT, PrecisionChoice, check_precision

__all__ = ["export_openvino", "read_ir_metadata", "compile_ir", "measure_openvino_latency", "OpenVINOSegmenter",
           "quantize_nncf", "ir_metadata", "openvino_available"]

_HINTS = {"fp32": "f32", "bf16": "bf16"}
_VIA = ("onnx", "torch")


def openvino_available() -> bool:
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


def _ov():
    return _require("openvino", extra="openvino")


def _ov_version() -> str:
    return _ov().__version__.split("-")[0]  # "2026.4.1-22982-<hash>-releases/..." -> "2026.4.1"


def ir_metadata(model: nn.Module, size: tuple[int, int] | None, dynamic: bool, argmax: bool, via: str) -> dict[str, str]:
    """The key/value metadata written into the IR: the ONNX export's (the model card among it), plus how the IR was made."""
    meta = model_metadata(model, size, dynamic, argmax, DEFAULT_OPSET)
    if via != "onnx":
        meta.pop("rtseg.opset")
    meta["rtseg.format"] = f"openvino IR, converted from {'the ONNX export' if via == 'onnx' else 'PyTorch'}"
    meta["rtseg.openvino_version"] = _ov_version()
    return meta


def _write_rt_info(ov_model, meta: dict[str, str]) -> None:
    for key, value in meta.items():
        ov_model.set_rt_info(str(value), ["rtseg", key.removeprefix("rtseg.")])


def read_ir(path: str | Path, core=None):
    """The ``openvino.Model`` of an IR ``.xml`` (with its ``.bin`` beside it), or :class:`ExportError` naming what is
    missing or unreadable."""
    ov = _ov()
    path = Path(path)
    if not path.is_file():
        raise ExportError(f"{path}: no such OpenVINO IR file (.xml)")
    weights = path.with_suffix(".bin")
    if not weights.is_file():
        raise ExportError(f"{path}: its weights file {weights.name} is not beside it (an OpenVINO IR is an .xml and a .bin of the "
                          "same name; copy both)")
    try:
        return (core or ov.Core()).read_model(str(path))
    except RuntimeError as exc:
        reason = next((line.strip() for line in str(exc).splitlines() if "Unable to read" in line or "Error" in line), "")
        raise ExportError(f"{path}: not a readable OpenVINO IR (.xml + .bin){': ' + reason[:300] if reason else ''}") from None


def read_ir_metadata(model_or_path) -> dict[str, Any]:
    """The rtseg metadata of an IR (a path to the ``.xml`` or a read ``openvino.Model``), JSON values decoded."""
    if isinstance(model_or_path, (str, Path)):
        model_or_path = read_ir(model_or_path)
    ov_model = model_or_path
    if not ov_model.has_rt_info(["rtseg"]):
        return {}
    out: dict[str, Any] = {}
    for key in ov_model.get_rt_info()["rtseg"]:
        raw = ov_model.get_rt_info(["rtseg", key]).astype(str)
        try:
            out[key] = json.loads(raw)
        except ValueError:
            out[key] = raw
    if "card" in out:
        from rtseg.card import ModelCard

        out["card"] = ModelCard.from_dict(out["card"], "OpenVINO IR rt_info")
    return out


def _convert(model: nn.Module, size: tuple[int, int], dynamic: bool, argmax: bool, via: str, optimize_first: bool, tmp: Path):
    """An ``openvino.Model`` of ``model`` (in eval mode), converted ``via`` ONNX or directly from PyTorch."""
    ov = _ov()
    if via not in _VIA:
        raise ValueError(f"via must be one of {', '.join(_VIA)}, got {via!r}")
    if via == "onnx":
        from rtseg.deploy.onnx_export import export_onnx

        onnx_path = tmp / "model.onnx"
        export_onnx(model, onnx_path, size, dynamic=dynamic, argmax=argmax, optimize_first=optimize_first, verify=False)
        return ov.convert_model(str(onnx_path))
    _, head, example = prepare_for_export(model, tmp / "unused", size, argmax, optimize_first)
    shape = [ov.PartialShape([-1, 3, -1, -1])] if dynamic else None
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the tracer warns about Python ints taken from shapes; verification checks
        return ov.convert_model(head, example_input=example, input=shape)


def export_openvino(
    model: nn.Module,
    path: str | Path,
    size: tuple[int, int] = (512, 1024),
    *,
    dynamic: bool = False,
    argmax: bool = False,
    via: str = "onnx",
    optimize_first: bool = True,
    verify: bool = True,
    tolerance: float = 1e-4,
) -> dict[str, Any]:
    """Write ``model`` as an OpenVINO IR (``path`` ``.xml`` and the ``.bin`` beside it); returns a record.

    Weights are stored in fp32 (the precision is chosen when the IR is compiled). ``verify`` compiles the IR
    with the fp32 hint and compares its logits with PyTorch's on a random input, like the ONNX export (the
    largest difference must stay below ``tolerance`` times the largest logit, at least 1).
    """
    ov = _ov()
    path = Path(path)
    if path.suffix != ".xml":
        raise ExportError(f"{path}: an OpenVINO IR is written as NAME.xml (+ NAME.bin); give a path ending in .xml")
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            ov_model = _convert(model, size, dynamic, argmax, via, optimize_first, Path(tmp))
    except ExportError:
        raise
    except Exception as exc:
        raise ExportError(f"converting {type(model).__name__} to OpenVINO ({via}) failed: {type(exc).__name__}: {exc}") from exc
    meta = ir_metadata(model, size, dynamic, argmax, via)
    _write_rt_info(ov_model, meta)
    ov.save_model(ov_model, str(path), compress_to_fp16=False)
    bin_path = path.with_suffix(".bin")
    record: dict[str, Any] = {"path": str(path), "bin": str(bin_path), "via": via, "dynamic": dynamic, "argmax": argmax,
                              "metadata": meta, "bytes": path.stat().st_size + bin_path.stat().st_size}
    if verify:
        verify_size = (size[0] + 8, size[1] - 8) if dynamic and size[1] > 16 else size
        record["verification"] = verify_ir(model, path, verify_size, argmax=argmax, tolerance=tolerance)
    return record


def verify_ir(model: nn.Module, path: str | Path, size: tuple[int, int], *, argmax: bool = False, tolerance: float = 1e-4,
              seed: int = 0) -> dict[str, Any]:
    """Run the IR (fp32 hint) and the PyTorch model on one random input; raise :class:`ExportError` on a mismatch."""
    compiled, _ = compile_ir(path, "fp32")
    x = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(seed))
    with torch.inference_mode():
        ref = model.eval()(x)
    got = torch.from_numpy(np.asarray(compiled(x.numpy())[0]))
    if argmax:
        result = {"size": list(size), "argmax_agreement": float((got == ref.argmax(1)).float().mean())}
    else:
        if tuple(got.shape) != tuple(ref.shape):
            raise ExportError(f"{path}: OpenVINO output shape {tuple(got.shape)} differs from PyTorch's {tuple(ref.shape)} at input {size}")
        result = {"size": list(size), **check_logits(ref, got, tolerance, f"{path}: OpenVINO", size)}
    if result["argmax_agreement"] < 0.999:
        raise ExportError(f"{path}: OpenVINO arg-max agrees with PyTorch on only {100 * result['argmax_agreement']:.2f} % of pixels")
    return result


def _device(device: str | None) -> str:
    device = "cpu" if device in (None, "auto") else str(device)
    if device.startswith("cuda"):
        raise ExportError("--backend openvino runs on CPUs (and Intel GPUs as --device GPU); use --backend torch or onnxruntime for CUDA")
    return device.upper()


def compile_ir(model_or_path, precision: str = "fp32", threads: int | None = None, device: str | None = "cpu",
               check_input: np.ndarray | None = None, min_agreement: float = DEFAULT_MIN_AGREEMENT):
    """(compiled model, :class:`PrecisionChoice`) for an IR path or ``openvino.Model`` at ``precision`` (fp32, bf16, auto).

    Compiled for latency (one inference at a time) on ``threads`` threads (default: OpenVINO's). ``"auto"``
    compiles both precisions and compares their arg-max on ``check_input`` (a normalised ``1 x 3 x H x W``
    array; default: a random one at the IR's input size, or 256x512 for a dynamic IR).
    """
    ov = _ov()
    core = ov.Core()
    if isinstance(model_or_path, (str, Path)):
        ov_model = read_ir(model_or_path, core)
    else:
        ov_model = model_or_path
    device = _device(device)

    def build(p: str):
        config = {"INFERENCE_PRECISION_HINT": _HINTS[p], "PERFORMANCE_HINT": "LATENCY"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        try:
            return core.compile_model(ov_model, device, config)
        except Exception as exc:
            raise ExportError(f"OpenVINO cannot compile the model for {device} in {p}: {exc}") from exc

    if precision == "fp32" or precision not in ("bf16", "auto"):
        choice = check_precision(precision)  # raises on an unknown precision
        return build("fp32"), choice
    if precision == "bf16":
        return build("bf16"), check_precision("bf16")
    from rtseg.deploy.precision import native_bf16

    if not native_bf16()[0]:
        return build("fp32"), check_precision("auto")
    fp32, bf16 = build("fp32"), build("bf16")
    if check_input is None:
        shape = ov_model.inputs[0].get_partial_shape()
        hw = (256, 512) if shape.is_dynamic else (shape[2].get_length(), shape[3].get_length())
        check_input = np.random.default_rng(0).standard_normal((1, 3, *hw)).astype(np.float32)
    ref, got = fp32(check_input)[0], bf16(check_input)[0]
    if ref.ndim != 4:  # an arg-max export outputs labels: compare them directly
        agreement = float((ref == got).mean())
        ok = agreement >= min_agreement
        choice = PrecisionChoice("bf16" if ok else "fp32", "auto", "label agreement " + ("passed" if ok else "failed"), agreement)
    else:
        choice = check_precision("auto", ref, got, min_agreement)
    return (bf16 if choice.precision == "bf16" else fp32), choice


def measure_openvino_latency(model: nn.Module | str | Path, size: tuple[int, int], batch: int = 1, warmup: int = 5, iters: int = 20,
                             threads: int | None = None, precision: str = "fp32", device: str | None = "cpu") -> dict[str, Any]:
    """Latency of one inference on a random batch (an IR converted from ``model``, or an existing ``.xml``)."""
    from rtseg.efficiency import conditions, latency_record, time_calls

    with tempfile.TemporaryDirectory() as tmp:
        if isinstance(model, nn.Module):
            path = Path(tmp) / "model.xml"
            export_openvino(model, path, size, dynamic=batch > 1, verify=False)
        else:
            path = Path(model)
        compiled, choice = compile_ir(path, precision, threads, device)
        x = np.random.default_rng(0).standard_normal((batch, 3, *size)).astype(np.float32)
        request = compiled.create_infer_request()
        times = time_calls({"infer": lambda: request.infer([x])}, warmup, iters)["infer"]
        actual_threads = compiled.get_property("INFERENCE_NUM_THREADS")
    cond = conditions(torch.device("cpu"), size, batch, warmup, iters, torch.float32)
    cond["dtype"] = choice.precision
    cond["threads"] = actual_threads
    cond["mode"] = f"openvino {_device(device)} plugin, latency hint, inference precision {choice.precision}"
    cond["openvino_version"] = _ov_version()
    return {
        "backend": f"openvino {_ov_version()} ({_device(device)}, {choice.precision})",
        "precision": choice.summary(),
        **latency_record(times, batch),
        "conditions": cond,
    }


class OpenVINOSegmenter(ExportedSegmenter):
    """Predict label maps with an OpenVINO IR; normalisation and classes come from its ``rt_info``."""

    def __init__(self, path: str | Path, threads: int | None = None, precision: str = "fp32", device: str | None = "cpu",
                 check_input: np.ndarray | None = None):
        self.path = Path(path)
        if self.path.suffix != ".xml":
            raise ExportError(f"{self.path}: an OpenVINO IR is the .xml file (with its .bin beside it)")
        self._read_metadata(read_ir_metadata(self.path))
        self.compiled, self.precision = compile_ir(self.path, precision, threads, device, check_input)
        self.request = self.compiled.create_infer_request()

    def _dynamic_batch(self) -> bool:
        return self.compiled.inputs[0].get_partial_shape()[0].is_dynamic

    def _run(self, x: np.ndarray) -> np.ndarray:
        return self.request.infer([np.ascontiguousarray(x, dtype=np.float32)])[0]


def quantize_nncf(fp32_xml: str | Path, int8_xml: str | Path, calibration: str | Path | list[Path], count: int = 32,
                  size: tuple[int, int] | None = None) -> dict[str, Any]:
    """INT8 post-training quantization of an IR with NNCF, calibrated on real images; the rtseg metadata is kept."""
    ov = _ov()
    nncf = _require("nncf", extra="openvino")
    from rtseg.deploy.calibration import calibration_set

    meta = read_ir_metadata(fp32_xml)
    calib = calibration_set(meta, fp32_xml, calibration, count, size, kind="IR", export_command="rtseg export --format openvino")
    files = calib.files
    ov_model = read_ir(fp32_xml)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantized = nncf.quantize(ov_model, nncf.Dataset(files, calib.input), subset_size=len(files))
    raw = {k: v.to_json() if k == "card" else v if isinstance(v, str) else json.dumps(v) for k, v in meta.items()}
    raw["quantization"] = f"int8 NNCF post-training quantization (nncf {nncf.__version__}), {len(files)} calibration images"
    _write_rt_info(quantized, raw)
    int8_xml = Path(int8_xml)
    int8_xml.parent.mkdir(parents=True, exist_ok=True)
    ov.save_model(quantized, str(int8_xml), compress_to_fp16=False)
    size_bytes = int8_xml.stat().st_size + int8_xml.with_suffix(".bin").stat().st_size
    return {"path": str(int8_xml), "calibration_images": len(files), "bytes": size_bytes}


def export_ir(model: nn.Module, path: str | Path, size: tuple[int, int], *, dynamic: bool = False, argmax: bool = False,
              via: str = "onnx", verify: bool = True, int8_calibration: str | Path | None = None,
              calibration_count: int = 32) -> dict[str, Any]:
    """``rtseg export --format openvino``: the fp32 IR, or with ``int8_calibration`` its NNCF INT8 quantization."""
    if int8_calibration is None:
        return export_openvino(model, path, size, dynamic=dynamic, argmax=argmax, via=via, verify=verify)
    if dynamic:
        raise ExportError("INT8 needs a fixed --size: calibration runs at one input size")
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = Path(tmp) / "fp32.xml"
        record = export_openvino(model, fp32, size, argmax=argmax, via=via, verify=verify)
        q = quantize_nncf(fp32, path, int8_calibration, calibration_count)
    record.update(path=str(path), bytes=q["bytes"], int8=q)
    return record


def openvino_segmenter(model: str, size: tuple[int, int] | None, *, weights: str | None = None, num_classes: int | None = None,
                       threads: int | None = None, precision: str = "fp32", workdir: str | Path | None = None) -> OpenVINOSegmenter:
    """``rtseg predict --backend openvino``: an IR file as it is, or a model / checkpoint exported once to a
    dynamic-shape IR in ``workdir`` (default: a new temporary folder, left to the caller to remove)."""
    if str(model).endswith(".xml"):
        return OpenVINOSegmenter(model, threads=threads, precision=precision)
    from rtseg.inference import load_model

    path = Path(workdir if workdir is not None else tempfile.mkdtemp(prefix="rtseg-")) / "model.xml"
    export_openvino(load_model(model, weights=weights, num_classes=num_classes), path, size or (256, 512), dynamic=True)
    return OpenVINOSegmenter(path, threads=threads, precision=precision)
