"""Task: the networks an HTTP server holds, loaded once, and what it does with one request's image bytes.

The server (:mod:`rtseg.serve`) parses HTTP and renders responses; everything it computes is here and in the
predict task it shares: :func:`load_served` builds the same :class:`~rtseg.tasks._predict.Segmenter` that
``rtseg predict`` runs, on the deployment path ``rtseg bench --optimize`` picks (``backend="auto"``).
"""
from __future__ import annotations

import io
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image

from rtseg.card import ModelCard
from rtseg.data.image_io import decode_image
from rtseg.data.labels import colorize
from rtseg.errors import OptionError
from rtseg.inference import overlay
from rtseg.tasks.common import Optimization
from rtseg.tasks.options import check_count
from rtseg.cpu import check_threads

__all__ = ["ServeBackend", "ServeOptions", "ModelSpec", "ServedModel", "parse_model_spec", "load_served", "encode_png", "encode_image",
           "class_shares", "served_input_size", "render", "synthetic_sample", "decode_image", "DEFAULT_MODEL"]

ServeBackend = Literal["auto", "torch", "openvino", "onnxruntime"]
ImageFormat = Literal["png", "jpeg"]
DEFAULT_MODEL = "fplnet@camvid"
FALLBACK_SIZE = (512, 1024)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_FILE_SUFFIXES = (".pt", ".pth", ".ckpt", ".safetensors", ".onnx", ".xml")


@dataclass(frozen=True)
class ServeOptions:
    """How every served network runs: ``backend`` (auto: ``rtseg.optimize`` with the choices ``rtseg bench --optimize``
    makes by timing on this CPU; torch: eager PyTorch as ``rtseg predict``; onnxruntime / openvino: a dynamic export
    made at start), CPU ``threads``, the network input ``size`` (None: each card's training size), ``precision``
    (auto / openvino) and ``compile`` (auto: torch.compile kept only where a timing shows it is faster)."""

    backend: ServeBackend = "auto"
    threads: int | None = None
    size: tuple[int, int] | None = None
    precision: Literal["fp32", "bf16", "auto"] = "fp32"
    compile: Literal["off", "on", "auto"] = "auto"

    def check(self) -> None:
        check_threads(self.threads, "--threads")
        if self.backend not in ("auto", "torch", "openvino", "onnxruntime"):
            raise OptionError(f"--backend {self.backend!r}: expected auto, torch, openvino or onnxruntime")
        if self.precision != "fp32" and self.backend not in ("auto", "openvino"):
            raise OptionError(f"--precision {self.precision} applies with --backend auto or openvino, not {self.backend}")


@dataclass(frozen=True)
class ModelSpec:
    """One ``--model [NAME=]MODEL@WEIGHTS`` (or ``[NAME=]FILE``): the name it is served under, what to build, its weights."""

    name: str
    model: str
    weights: str | None
    text: str


def parse_model_spec(text: str) -> ModelSpec:
    """``fplnet@camvid`` -> served as ``fplnet``: registered model ``fplnet`` with weights tag ``camvid`` (a tag, URL or
    weights file); ``street=runs/x/best.pt`` -> served as ``street``; a checkpoint, weights, ``.onnx`` or ``.xml`` file
    alone is served under its file name. Checked before anything loads: names, tags and files."""
    from rtseg.pretrained import list_pretrained
    from rtseg.registry import list_models

    raw = text.strip()
    alias, sep, rest = raw.partition("=")
    if not sep or "/" in alias or "@" in alias:
        alias, rest = None, raw
    if "@" in rest and not Path(rest).exists():
        model, _, weights = rest.partition("@")
    else:
        model, weights = rest, None
    if not model:
        raise OptionError(f"--model {text!r}: expected MODEL@WEIGHTS (e.g. fplnet@camvid), NAME=MODEL@WEIGHTS or a model file")
    is_file = weights is None and (Path(model).suffix in _FILE_SUFFIXES or Path(model).is_file())
    if is_file:
        if not Path(model).is_file():
            raise OptionError(f"--model {text!r}: no such file {model!r}")
    elif model not in list_models():
        raise OptionError(f"--model {text!r}: {model!r} is not a registered model or a file; `rtseg models` lists the names")
    elif weights is None:
        tags = sorted(e.tag for e in list_pretrained() if e.model == model)
        hint = f"its named weights: {', '.join(model + '@' + t for t in tags)}" if tags else "it has no named weights: give a weights file, model@FILE"
        raise OptionError(f"--model {text!r} names no weights (a server of random weights answers nonsense); {hint}")
    elif "://" not in weights and not Path(weights).is_file() and weights not in {e.tag for e in list_pretrained() if e.model == model}:
        tags = sorted(e.tag for e in list_pretrained() if e.model == model)
        raise OptionError(f"--model {text!r}: {weights!r} is neither a weights tag of {model} ({', '.join(tags) or 'none'}), a URL nor a file")
    name = alias or (Path(model).stem if is_file else model)
    if not _NAME.match(name):
        raise OptionError(f"--model {text!r}: served name {name!r} must be letters, digits, '.', '_' or '-' (up to 64); "
                          f"choose one with NAME={rest}")
    return ModelSpec(name=name, model=model, weights=weights, text=raw)


def served_input_size(card: ModelCard, size: tuple[int, int] | None) -> tuple[tuple[int, int], str]:
    """(the network input size, where it comes from): ``size`` when given, else the image size the weights were
    trained at (shrunk by the card's input scale), else the size their metrics were measured at, else 512x1024."""
    if size is not None:
        return tuple(size), "--size"
    data = ((card.training.config if card.training else None) or {}).get("data") or {}
    trained = data.get("image_size")
    if isinstance(trained, (list, tuple)) and len(trained) == 2:
        hw = (int(trained[0]), int(trained[1]))
        return (card.network_input_size(hw) or hw), "the training image size in the model card"
    for m in card.metrics:
        measured = m.protocol.get("input_size")
        if isinstance(measured, (list, tuple)) and len(measured) == 2:
            return (int(measured[0]), int(measured[1])), "the evaluation size in the model card"
    return FALLBACK_SIZE, "the default (the model card records no size; --size sets it)"


@dataclass
class ServedModel:
    """A network the server holds: its :class:`Segmenter`, the input size every image is resized to, and its card."""

    name: str
    spec: ModelSpec
    segmenter: Any  # rtseg.tasks._predict.Segmenter
    size: tuple[int, int]
    size_source: str
    load_s: float
    warmup_ms: float
    options: ServeOptions = field(default_factory=ServeOptions)

    @property
    def card(self) -> ModelCard:
        return self.segmenter.card

    def network_size_for(self, hw: tuple[int, int]) -> tuple[int, int] | None:
        """The ``size`` argument of :meth:`Segmenter.prepare` for an ``hw`` image: None when the image already comes
        to the served size the way ``rtseg predict`` feeds it (so the result is predict's exactly), else the size."""
        own = self.card.network_input_size(hw) or tuple(hw)
        return None if tuple(own) == tuple(self.size) else self.size

    def record(self) -> dict[str, Any]:
        """The card as ``GET /models`` shows it: classes with names and colours, input size, metrics, deployed path."""
        card = self.card
        info = card.class_info
        return {
            "name": self.name, "model": card.model, "weights": self.spec.weights or self.spec.model,
            "classes": [{"id": i, "name": n, "color": list(c)} for i, (n, c) in enumerate(zip(info.names, info.palette))],
            "void_outputs": list(card.void_outputs),
            "input_size": list(self.size), "input_size_source": self.size_source,
            "input_note": "each image is resized to input_size for the network; label maps, masks and overlays come back at the image's own size",
            "metrics": [{"dataset": m.dataset, "split": m.split, "miou": m.miou, "pixel_accuracy": m.pixel_accuracy, "images": m.images,
                         "protocol": m.protocol.get("command", "")} for m in card.metrics],
            "training": None if card.training is None else {"dataset": card.training.dataset, "by": card.training.by,
                                                               "epochs": card.training.epochs, "hardware": card.training.hardware},
            "license": card.license, "source": card.source,
            "backend": self.segmenter.backend, "deployed": self.segmenter.deployed, "max_batch": self.segmenter.max_batch,
            "load_s": round(self.load_s, 3), "warmup_ms": round(self.warmup_ms, 2), "summary": card.summary(),
        }


def load_served(spec: ModelSpec, options: ServeOptions = ServeOptions()) -> ServedModel:
    """Build ``spec``'s network on ``options``' path, once, and run it once at its input size (so that a compiled
    graph is compiled before the first request, not during it)."""
    from rtseg.tasks._predict import segmenter

    options.check()
    t0 = time.perf_counter()
    backend = "torch" if options.backend == "auto" else options.backend
    optimize = Optimization("auto", options.compile, None, options.precision) if options.backend == "auto" else None
    # the input size must be known before an optimisation is timed at it: read the card first (cheap: no build)
    size, source = served_input_size(_card_of_spec(spec), options.size)
    seg, _ = segmenter(spec.model, weights=spec.weights, size=size, backend=backend, threads=options.threads, optimize=optimize,
                       precision=options.precision if options.backend == "openvino" else None)
    load_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    seg.labels(seg.run(seg.prepare(np.zeros((*size, 3), np.uint8), size)), size)
    return ServedModel(spec.name, spec, seg, size, source, load_s, (time.perf_counter() - t1) * 1e3, options)


def _card_of_spec(spec: ModelSpec) -> ModelCard:
    path = Path(spec.model)
    if path.suffix == ".onnx":
        from rtseg.deploy.onnx_export import read_metadata

        return read_metadata(path)["card"]
    if path.suffix == ".xml":
        from rtseg.deploy.openvino_backend import read_ir_metadata

        return read_ir_metadata(path)["card"]
    from rtseg.inference import load_model

    return load_model(spec.model, weights=spec.weights).rtseg_card


# -- one request ------------------------------------------------------------------------------------------
def class_shares(label_map: np.ndarray, card: ModelCard) -> list[dict[str, Any]]:
    """The classes present in a label map, largest first: id, name, colour, pixel count and share of the image."""
    info = card.class_info
    counts = np.bincount(label_map.ravel(), minlength=card.num_outputs)
    total = max(1, int(label_map.size))
    out = []
    for i in np.flatnonzero(counts):
        named = i < info.num_classes
        out.append({"id": int(i), "name": info.names[i] if named else "void", "color": list(info.palette[i]) if named else [0, 0, 0],
                    "pixels": int(counts[i]), "share": round(float(counts[i]) / total, 6)})
    return sorted(out, key=lambda c: -c["pixels"])


def encode_png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG", compress_level=1)  # fast: the network is the slow part, not zlib
    return buf.getvalue()


def encode_image(array: np.ndarray, fmt: ImageFormat = "png") -> bytes:
    if fmt == "png":
        return encode_png(array)
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def render(kind: Literal["labels", "mask", "overlay"], rgb: np.ndarray, label_map: np.ndarray, card: ModelCard, fmt: ImageFormat = "png",
           alpha: float = 0.5) -> bytes:
    """One output image: the label map (PNG of class ids, always PNG: JPEG would change the ids), the colour mask
    or the overlay, as ``rtseg predict`` writes them."""
    palette = card.class_info.palette
    if kind == "labels":
        return encode_png(label_map.astype(np.uint8))
    if kind == "mask":
        return encode_image(colorize(label_map, palette), fmt)
    return encode_image(overlay(rgb, label_map, palette, alpha), fmt)


def synthetic_sample(index: int, size: tuple[int, int] = (360, 480)) -> bytes:
    """A sample street scene for the page, drawn by rtseg's generator (no dataset image is shipped), as PNG."""
    from rtseg.data.synthetic import SyntheticScenes

    image, _ = SyntheticScenes(num_samples=index + 1, size=size, split="val", seed=2024)[index]
    return encode_png(image)

