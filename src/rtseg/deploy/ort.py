"""ONNX Runtime as an inference backend: latency measurement and an image -> label map predictor."""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from rtseg.data.transforms import shrink_image
from rtseg.deploy.onnx_export import ExportError, export_onnx, ort_session, read_metadata

__all__ = ["OnnxSegmenter", "ExportedSegmenter", "measure_ort_latency", "ort_providers"]


def ort_providers(device: str = "cpu") -> list[str]:
    """Execution providers for ``device``: CUDA when asked for and present in this onnxruntime build."""
    import onnxruntime as ort

    if str(device).startswith("cuda"):
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise ExportError("--device cuda with --backend onnxruntime needs the onnxruntime-gpu package (CUDAExecutionProvider is not available)")
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def measure_ort_latency(model: nn.Module | str | Path, size: tuple[int, int], batch: int = 1, warmup: int = 5, iters: int = 20,
                        threads: int | None = None, device: str = "cpu") -> dict[str, Any]:
    """Latency of one ``session.run`` on a random batch (static-shape export of ``model``, or an existing .onnx file)."""
    from rtseg.efficiency import conditions, latency_record, time_calls

    with tempfile.TemporaryDirectory() as tmp:
        if isinstance(model, nn.Module):
            path = Path(tmp) / "model.onnx"
            export_onnx(model, path, size, dynamic=batch > 1, verify=False)  # a static export has batch 1
        else:
            path = Path(model)
        session = ort_session(path, threads=threads, providers=ort_providers(device))
        name = session.get_inputs()[0].name
        x = np.random.default_rng(0).standard_normal((batch, 3, *size)).astype(np.float32)
        times = time_calls({"run": lambda: session.run(None, {name: x})}, warmup, iters)["run"]
    cond = conditions(torch.device("cpu" if device in (None, "auto") else device), size, batch, warmup, iters, torch.float32)
    cond["threads"] = threads or "onnxruntime default"
    cond["mode"] = "onnxruntime session.run, graph optimisation level ALL"
    import onnxruntime as ort

    cond["onnxruntime_version"] = ort.__version__
    return {
        "backend": f"onnxruntime {ort.__version__} ({session.get_providers()[0]})",
        **latency_record(times, batch),
        "conditions": cond,
    }


class ExportedSegmenter:
    """Image -> label map with an exported file whose model card (in its metadata) says how to normalise and
    what the classes are.

    Subclasses set ``self.path`` and implement ``_run`` (normalised ``N x 3 x H x W`` float32 array -> output array).
    """

    path: Path

    def _read_metadata(self, meta: dict[str, Any]) -> None:
        if "card" not in meta:
            raise ExportError(f"{self.path}: no rtseg model card in its metadata (rtseg.card); export it with `rtseg export`")
        self.card = meta["card"]
        self.normalization = self.card.normalization
        self.class_info = self.card.class_info
        size = meta.get("input_size", "dynamic")
        self.input_size = None if size == "dynamic" else tuple(int(v) for v in str(size).split("x"))
        self.labels_output = str(meta.get("output", "")).startswith("labels")

    def _run(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    @property
    def max_batch(self) -> int | None:
        """How many images one :meth:`run` takes: None (any number) for a graph with a free batch, else 1."""
        return None if self._dynamic_batch() else 1

    def _dynamic_batch(self) -> bool:
        return False

    def prepare(self, rgb: np.ndarray, size: tuple[int, int] | None = None) -> torch.Tensor:
        """The normalised ``1 x 3 x h x w`` input for an ``H x W x 3`` uint8 RGB image (resized to ``size``, else to
        the file's fixed input size, else shrunk as the card says)."""
        import torch.nn.functional as F

        target = size or self.input_size
        x = self.normalization(shrink_image(rgb, self.card.input_scale if target is None else 1))[None]
        if target is not None and tuple(x.shape[-2:]) != tuple(target):
            if size is None:
                self._note_fixed_size(rgb.shape[:2])
            x = F.interpolate(x, size=tuple(target), mode="bilinear", align_corners=False)
        return x

    def _note_fixed_size(self, hw: tuple[int, int]) -> None:
        # said once per file: a fixed-size graph stretches frames of another aspect ratio, which a user must know
        th, tw = self.input_size
        if getattr(self, "_size_noted", False):
            return
        self._size_noted = True
        aspect_changes = abs((hw[1] / hw[0]) / (tw / th) - 1) > 0.01
        self._notes = getattr(self, "_notes", []) + [
            f"{self.path.name} takes {th}x{tw} (HxW) inputs: {hw[0]}x{hw[1]} images are resized to that"
            + (f", which changes their aspect ratio ({hw[1] / hw[0]:.2f} -> {tw / th:.2f})" if aspect_changes else "")
            + f"; export at the images' size (rtseg export ... --size {hw[0]}x{hw[1]}) or with --dynamic to avoid it"]

    def take_notes(self) -> list[str]:
        notes, self._notes = getattr(self, "_notes", []), []
        return notes

    def run(self, x: torch.Tensor) -> torch.Tensor:
        """The graph's output (logits, or labels for an arg-max export) for a prepared batch."""
        return torch.from_numpy(np.asarray(self._run(np.ascontiguousarray(x.numpy(), dtype=np.float32))))

    def labels(self, out: torch.Tensor, hw: tuple[int, int]) -> np.ndarray:
        """The ``H x W`` uint8 label map of one image's output (batch of 1) at the image's size ``hw``."""
        import torch.nn.functional as F

        h, w = hw
        if self.labels_output:
            labels = out[:, None].float()
            if tuple(labels.shape[-2:]) != (h, w):
                labels = F.interpolate(labels, size=(h, w), mode="nearest")
            return labels[0, 0].to(torch.uint8).numpy()
        out = out.float()
        if tuple(out.shape[-2:]) != (h, w):
            out = F.interpolate(out, size=(h, w), mode="bilinear", align_corners=False)
        return out[0].argmax(0).to(torch.uint8).numpy()

    def predict(self, rgb: np.ndarray, size: tuple[int, int] | None = None) -> np.ndarray:
        """``H x W`` uint8 label map for an ``H x W x 3`` uint8 RGB image."""
        return self.labels(self.run(self.prepare(rgb, size)), rgb.shape[:2])


class OnnxSegmenter(ExportedSegmenter):
    """Predict label maps with an exported ``.onnx`` file; normalisation and classes come from its metadata."""

    def __init__(self, path: str | Path, threads: int | None = None, device: str = "cpu"):
        self.path = Path(path)
        self.session = ort_session(self.path, threads=threads, providers=ort_providers(device))
        self._read_metadata(read_metadata(self.path))
        self.input_name = self.session.get_inputs()[0].name

    def _dynamic_batch(self) -> bool:
        return not isinstance(self.session.get_inputs()[0].shape[0], int)

    def _run(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: x})[0]
