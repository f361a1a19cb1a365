"""ONNX export with embedded metadata, checked against PyTorch with ONNX Runtime.

The exported graph takes the *normalised* image ``N x 3 x H x W`` (float32), exactly what the PyTorch
model takes; how to normalise is written into the file's metadata (``rtseg.normalization``), together
with the class names, the input size and how the model was built, so that a deployment needs nothing
but the ``.onnx`` file. With ``argmax=True`` the graph ends in an arg-max over classes and outputs the
``N x H x W`` label map (int64) instead of logits.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from rtseg.errors import UserError

__all__ = ["export_onnx", "read_metadata", "verify_onnx", "ExportError", "DEFAULT_OPSET"]

DEFAULT_OPSET = 17


class ExportError(UserError, RuntimeError):
    """Export or its verification failed."""


class _ArgmaxHead(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x).argmax(1)


def _require(module: str, extra: str = "onnx"):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise ExportError(f"{module} is not installed; install rtseg with the '{extra}' extra: pip install 'rtseg[{extra}]'") from None


def model_metadata(model: nn.Module, size: tuple[int, int] | None, dynamic: bool, argmax: bool, opset: int) -> dict[str, str]:
    """The key/value metadata written into the ONNX file (values are strings; structured ones are JSON).

    ``rtseg.card`` is the model card, the one record rtseg reads back; classes, palette and normalisation are
    repeated from it under their own keys for deployments that read just those."""
    from rtseg.card import card_of

    card = card_of(model)
    classes = card.class_info
    scale = getattr(model, "output_scale", 1)
    return {
        "rtseg.card": card.to_json(),
        "rtseg.classes": json.dumps(list(classes.names)),
        "rtseg.palette": json.dumps([list(c) for c in classes.palette]),
        "rtseg.num_classes": str(card.num_outputs),
        "rtseg.normalization": json.dumps(card.normalization.to_dict()),
        "rtseg.input": "normalised float32 N x 3 x H x W; normalise the 0-255 image as out = (pixel - mean) / std * post_scale, channels in channel_order",
        "rtseg.input_size": "dynamic" if dynamic else f"{size[0]}x{size[1]}",
        "rtseg.output": "labels int64 N x H x W" if argmax else f"logits float32 N x C x {scale}H x {scale}W",
        "rtseg.output_scale": str(scale),
        "rtseg.opset": str(opset),
        "rtseg.torch_version": torch.__version__,
    }


def prepare_for_export(model: nn.Module, path: Path, size: tuple[int, int], argmax: bool, optimize_first: bool):
    """The model in eval mode, the network to trace (BN-folded if asked, with an arg-max head if asked) and an example input."""
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    net = model
    if optimize_first:
        from rtseg.deploy.optimize import optimize

        net = optimize(model, (min(size[0], 128), min(size[1], 256)), channels_last=False, compile=False, verify=False)
    head = _ArgmaxHead(net) if argmax else net
    return model, head, torch.randn(1, 3, *size)

def export_onnx(
    model: nn.Module,
    path: str | Path,
    size: tuple[int, int] = (512, 1024),
    *,
    dynamic: bool = False,
    argmax: bool = False,
    opset: int = DEFAULT_OPSET,
    optimize_first: bool = True,
    verify: bool = True,
    verify_size: tuple[int, int] | None = None,
    tolerance: float = 1e-4,
) -> dict[str, Any]:
    """Write ``model`` as ONNX to ``path``; returns a record (path, metadata, verification).

    ``size`` is the (H, W) traced with; with ``dynamic`` height, width and batch stay free in the graph.
    ``optimize_first`` exports :func:`rtseg.optimize`'s BN-folded model (same outputs, fewer nodes).
    ``verify`` runs the file in ONNX Runtime and compares with PyTorch (max abs logit diff < ``tolerance`` times
    the largest logit, at least 1,
    >= 99.9 % equal argmax; for an argmax export, >= 99.9 % equal labels), at ``verify_size`` (default: ``size``,
    or for dynamic exports a different size than the traced one, to prove the shapes are really free).
    """
    onnx = _require("onnx")
    if opset < 17:
        raise ExportError(f"opset {opset} is too old; rtseg exports opset 17 or newer")
    path = Path(path)
    model, head, example = prepare_for_export(model, path, size, argmax, optimize_first)
    output_name = "labels" if argmax else "logits"
    dynamic_axes = None
    if dynamic:
        out_axes = {0: "batch", 1: "out_height", 2: "out_width"} if argmax else {0: "batch", 2: "out_height", 3: "out_width"}
        dynamic_axes = {"image": {0: "batch", 2: "height", 3: "width"}, output_name: out_axes}
    import warnings

    with warnings.catch_warnings(), torch.no_grad():
        # the tracer warns about every Python int taken from a shape; the verification below is the real check
        warnings.simplefilter("ignore")
        try:
            # The TorchScript-based exporter: handles every registered model and exports each in well under a second.
            torch.onnx.export(head, (example,), str(path), input_names=["image"], output_names=[output_name],
                              dynamic_axes=dynamic_axes, opset_version=opset, do_constant_folding=True, dynamo=False)
        except Exception as exc:
            raise ExportError(f"exporting {type(model).__name__} to ONNX failed: {type(exc).__name__}: {exc}") from exc
    proto = onnx.load(str(path))
    meta = model_metadata(model, size, dynamic, argmax, opset)
    del proto.metadata_props[:]
    for k, v in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, v
    proto.producer_name = "rtseg"
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))
    record: dict[str, Any] = {"path": str(path), "opset": opset, "dynamic": dynamic, "argmax": argmax, "metadata": meta,
                              "bytes": path.stat().st_size}
    if verify:
        if verify_size is None:
            verify_size = (size[0] + 8, size[1] - 8) if dynamic and size[1] > 16 else size
        record["verification"] = verify_onnx(model, path, verify_size, argmax=argmax, tolerance=tolerance)
    return record


def ort_session(path: str | Path, threads: int | None = None, providers: list[str] | None = None, spinning: bool = True):
    """An ONNX Runtime inference session for ``path`` (CPU unless ``providers`` say otherwise).

    ``spinning=False`` stops ONNX Runtime's worker threads from busy-waiting after each run; needed when
    other work is timed on the same cores right after it (side-by-side benchmarks), which the spinning
    threads would otherwise slow down.
    """
    ort = _require("onnxruntime")
    path = Path(path)
    if not path.is_file():
        raise ExportError(f"{path}: no such ONNX file")
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    options.log_severity_level = 3
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        return ort.InferenceSession(str(path), options, providers=providers or ["CPUExecutionProvider"])
    except Exception as exc:
        raise ExportError(f"{path}: ONNX Runtime cannot load it ({exc})") from exc


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The rtseg metadata of an exported file, JSON values decoded (``card``: a :class:`rtseg.ModelCard`)."""
    session = ort_session(path)
    raw = session.get_modelmeta().custom_metadata_map
    out: dict[str, Any] = {}
    for k, v in raw.items():
        if not k.startswith("rtseg."):
            continue
        try:
            out[k[6:]] = json.loads(v)
        except ValueError:
            out[k[6:]] = v
    if "card" in out:
        from rtseg.card import ModelCard

        out["card"] = ModelCard.from_dict(out["card"], "ONNX metadata")
    return out


def check_logits(reference: torch.Tensor, candidate: torch.Tensor, tolerance: float, what: str, size) -> dict[str, float]:
    """:func:`~rtseg.deploy.optimize.compare_outputs`, raising :class:`ExportError` when the largest logit difference
    exceeds ``tolerance`` times the largest logit (at least 1).

    Relative, because trained weights on a random input give logits in the hundreds, where a runtime's other
    summation order alone differs by more than 1e-4 (the official ESPNet CamVid weights: 2.2e-3 at 360x480).
    """
    from rtseg.deploy.precision import compare_outputs

    result = compare_outputs(reference, candidate)
    scale = max(1.0, float(reference.abs().max()))
    result["logit_scale"] = scale
    if result["max_abs_diff"] > tolerance * scale:
        raise ExportError(f"{what} logits differ from PyTorch by {result['max_abs_diff']:.3g} "
                          f"(> {tolerance:g} x the largest logit {scale:.3g}) at input {tuple(size)}")
    return result


def verify_onnx(model: nn.Module, path: str | Path, size: tuple[int, int], *, argmax: bool = False, tolerance: float = 1e-4,
                seed: int = 0) -> dict[str, Any]:
    """Run the ONNX file and the PyTorch model on the same random input; raise :class:`ExportError` on a mismatch."""
    session = ort_session(path)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, 3, *size, generator=g)
    with torch.inference_mode():
        ref = model.eval()(x)
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    if argmax:
        labels = ref.argmax(1).numpy()
        if got.shape != labels.shape:
            raise ExportError(f"{path}: label map of shape {got.shape}, PyTorch gives {labels.shape}")
        agreement = float((got == labels).mean())
        result = {"size": list(size), "argmax_agreement": agreement}
    else:
        if tuple(got.shape) != tuple(ref.shape):
            raise ExportError(f"{path}: ONNX Runtime output shape {got.shape} differs from PyTorch's {tuple(ref.shape)} at input {size}")
        result = {"size": list(size), **check_logits(ref, torch.from_numpy(np.asarray(got)), tolerance, f"{path}: ONNX Runtime", size)}
    if result["argmax_agreement"] < 0.999:
        raise ExportError(f"{path}: ONNX Runtime arg-max agrees with PyTorch on only {100 * result['argmax_agreement']:.2f} % of pixels")
    return result
