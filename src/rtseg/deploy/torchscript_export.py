"""TorchScript export for C++ (libtorch) users: ``torch::jit::load("model.pt")`` and call ``forward``.

The model is traced at one input size (the padding to the output stride is resolved for that size),
so a TorchScript file is for that size; use ONNX (``--dynamic``) for free sizes. The same metadata as
the ONNX export travels inside the archive as the extra file ``rtseg.json``.
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from rtseg.deploy.onnx_export import ExportError, model_metadata, prepare_for_export

__all__ = ["export_torchscript", "load_torchscript"]


def export_torchscript(model: nn.Module, path: str | Path, size: tuple[int, int] = (512, 1024), *, argmax: bool = False,
                       optimize_first: bool = True, verify: bool = True, tolerance: float = 1e-4) -> dict[str, Any]:
    """Trace ``model`` at ``size`` and save it; with ``verify`` the file is loaded back and compared with the model."""
    path = Path(path)
    model, head, example = prepare_for_export(model, path, size, argmax, optimize_first)
    meta = model_metadata(model, size, False, argmax, opset=0)
    meta.pop("rtseg.opset")
    meta["rtseg.format"] = "torchscript (traced)"
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        try:
            traced = torch.jit.trace(head, example, check_trace=False)
            traced = torch.jit.freeze(traced)
            torch.jit.save(traced, str(path), _extra_files={"rtseg.json": json.dumps(meta)})
        except Exception as exc:
            raise ExportError(f"tracing {type(model).__name__} to TorchScript failed: {type(exc).__name__}: {exc}") from exc
    record: dict[str, Any] = {"path": str(path), "size": list(size), "argmax": argmax, "metadata": meta, "bytes": path.stat().st_size}
    if verify:
        loaded, _ = load_torchscript(path)
        x = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(0))
        with torch.inference_mode():
            ref, got = model(x), loaded(x)
        if argmax:
            agreement = float((ref.argmax(1) == got).float().mean())
            record["verification"] = {"argmax_agreement": agreement}
        else:
            from rtseg.deploy.precision import compare_outputs

            record["verification"] = compare_outputs(ref, got)
            if record["verification"]["max_abs_diff"] > tolerance:
                raise ExportError(f"{path}: the loaded TorchScript differs from the model by {record['verification']['max_abs_diff']:.3g}")
            agreement = record["verification"]["argmax_agreement"]
        if agreement < 0.999:
            raise ExportError(f"{path}: the loaded TorchScript's arg-max agrees on only {100 * agreement:.2f} % of pixels")
    return record


def load_torchscript(path: str | Path) -> tuple[torch.jit.ScriptModule, dict[str, Any]]:
    """The TorchScript module and its rtseg metadata (``rtseg.card``: a :class:`rtseg.ModelCard`)."""
    path = Path(path)
    if not path.is_file():
        raise ExportError(f"{path}: no such TorchScript file")
    extra = {"rtseg.json": ""}
    module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    meta = json.loads(extra["rtseg.json"]) if extra["rtseg.json"] else {}
    if "rtseg.card" in meta:
        from rtseg.card import ModelCard

        meta["rtseg.card"] = ModelCard.from_json(meta["rtseg.card"], f"TorchScript file {str(path)!r}")
    return module.eval(), meta
