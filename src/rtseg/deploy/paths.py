"""The deployment paths a trained network can run on here, each built into a runner that takes a normalised
``1 x 3 x H x W`` float32 array and returns logits: one table for ``rtseg select`` and the benchmarks.

A path is offered only where it runs natively: the bf16 paths need a CPU with native bf16 (:mod:`rtseg.cpu`; an
emulated bf16 is several times slower than fp32, never a choice), the OpenVINO and ONNX Runtime paths their packages,
the INT8 paths calibration images.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn as nn

__all__ = ["DeployPath", "PATHS", "available_paths", "build_runner", "RECORDED_NAMES", "EXPORT_FORMAT"]

Runner = Callable[[np.ndarray], torch.Tensor]


@dataclass(frozen=True)
class DeployPath:
    """One way to run a network: its name, arithmetic and what it needs."""

    name: str
    precision: str  # fp32 | bf16 | int8
    backend: str  # torch | openvino | onnxruntime
    description: str

    @property
    def reduced(self) -> bool:
        return self.precision != "fp32"


PATHS: dict[str, DeployPath] = {p.name: p for p in (
    DeployPath("torch", "fp32", "torch", "PyTorch eager, fp32"),
    DeployPath("torch-optimized", "fp32", "torch", "rtseg.optimize: BatchNorm folded, channels-last and torch.compile where a timing shows them faster"),
    DeployPath("torch-bf16", "bf16", "torch", "rtseg.optimize in bf16: bf16 weights and activations, channels-last"),
    DeployPath("openvino-fp32", "fp32", "openvino", "OpenVINO IR (via ONNX), fp32 inference precision"),
    DeployPath("openvino-bf16", "bf16", "openvino", "OpenVINO IR, bf16 inference precision hint"),
    DeployPath("openvino-int8", "int8", "openvino", "OpenVINO IR quantized to INT8 by NNCF, calibrated on real images"),
    DeployPath("onnxruntime-fp32", "fp32", "onnxruntime", "ONNX Runtime, fp32"),
    DeployPath("onnxruntime-int8", "int8", "onnxruntime", "ONNX Runtime static INT8 (QDQ, per-channel weights), calibrated on real images"),
)}

# the names benchmarks/precision_camvid.py wrote its accuracy records under
RECORDED_NAMES = {"torch-bf16": "torch-bf16", "openvino-fp32": "openvino-fp32", "openvino-bf16": "openvino-bf16", "nncf-int8": "openvino-int8",
                  "ort-fp32": "onnxruntime-fp32", "ort-int8": "onnxruntime-int8"}

# what `rtseg export` writes for a path (format, int8); the bf16 paths are a runtime choice on an fp32 file
EXPORT_FORMAT = {"torch": ("torchscript", False), "torch-optimized": ("torchscript", False), "torch-bf16": ("torchscript", False),
                 "openvino-fp32": ("openvino", False), "openvino-bf16": ("openvino", False), "openvino-int8": ("openvino", True),
                 "onnxruntime-fp32": ("onnx", False), "onnxruntime-int8": ("onnx", True)}


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def available_paths(calibration: bool = False) -> dict[str, str | None]:
    """Every path with None where it can run here, else why not (a missing package, no native bf16, no calibration images)."""
    from rtseg.cpu import cpu_info

    info = cpu_info()
    why: dict[str, str | None] = {}
    for name, p in PATHS.items():
        reason = None
        if p.precision == "bf16" and not info.native_bf16:
            reason = f"bf16 would be emulated on this CPU ({info.kind}: no native bf16)"
        elif p.backend == "openvino" and not _has("openvino"):
            reason = "needs OpenVINO: pip install 'rtseg[openvino]'"
        elif p.backend == "onnxruntime" and not (_has("onnxruntime") and _has("onnx")):
            reason = "needs ONNX Runtime: pip install 'rtseg[onnx]'"
        elif name == "openvino-int8" and not _has("nncf"):
            reason = "needs NNCF: pip install 'rtseg[openvino]'"
        elif p.precision == "int8" and not calibration:
            reason = "INT8 needs calibration images: --verify DATA_ROOT (its train images) or --calibration FOLDER"
        why[name] = reason
    return why


def build_runner(name: str, model: nn.Module, size: tuple[int, int], threads: int | None, tmp: Path,
                 calibration: list[Path] | None = None) -> tuple[Runner, str]:
    """(runner, what was built) for path ``name`` of ``model`` at the network input ``size``; files go to ``tmp``."""
    from rtseg.card import card_of

    model = model.eval()
    if name == "torch":
        return (lambda x, m=model: m(torch.from_numpy(x))), PATHS[name].description
    if name in ("torch-optimized", "torch-bf16"):
        from rtseg.deploy.optimize import optimize

        bf16 = name == "torch-bf16"
        fast = optimize(model, size, channels_last=True if bf16 else "auto", compile=False if bf16 else "auto",
                        precision="bf16" if bf16 else "fp32", verify=not bf16)
        return (lambda x, m=fast: m(torch.from_numpy(x))), fast.rtseg_optimization.summary()
    stem = card_of(model).model
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if name.startswith("openvino"):
            from rtseg.deploy.openvino_backend import compile_ir, export_openvino, quantize_nncf

            xml = _exported(tmp / f"{stem}-fp32.xml", lambda path: export_openvino(model, path, size))
            if name == "openvino-int8":
                int8 = _exported(tmp / f"{stem}-int8.xml", lambda path: quantize_nncf(xml, path, list(calibration or [])))
                compiled, _ = compile_ir(int8, "fp32", threads)
                return (lambda x, c=compiled: torch.from_numpy(c(x)[0])), f"NNCF INT8, {len(calibration or [])} calibration images"
            compiled, choice = compile_ir(xml, name.split("-")[1], threads)
            return (lambda x, c=compiled: torch.from_numpy(c(x)[0])), choice.summary()
        if name.startswith("onnxruntime"):
            from rtseg.deploy.onnx_export import export_onnx, ort_session
            from rtseg.deploy.quantize import quantize_int8

            onnx = _exported(tmp / f"{stem}-fp32.onnx", lambda path: export_onnx(model, path, size))
            if name == "onnxruntime-int8":
                onnx = _exported(tmp / f"{stem}-int8.onnx", lambda path: quantize_int8(onnx, path, list(calibration or [])))
            session = ort_session(onnx, threads=threads, spinning=False)
            return (lambda x, s=session: torch.from_numpy(s.run(None, {"image": x})[0])), PATHS[name].description
    raise ValueError(f"unknown deployment path {name!r}; paths: {', '.join(PATHS)}")


def _exported(path: Path, write: Callable[[Path], Any]) -> Path:
    """``path``, written by ``write`` unless an earlier path of the same network already did (fp32 exports are shared)."""
    if not path.is_file():
        write(path)
    return path


def describe_paths() -> list[dict[str, Any]]:
    return [{"name": p.name, "precision": p.precision, "backend": p.backend, "description": p.description} for p in PATHS.values()]
