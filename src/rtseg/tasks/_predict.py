"""Task: colourised masks and overlays (or label maps) for image files, folders, videos and frame patterns."""
from __future__ import annotations

import errno
import os
import shutil
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Literal, Sequence

import numpy as np
from PIL import Image

from rtseg.card import ModelCard, card_of
from rtseg.data.datasets import IMAGE_SUFFIXES, DatasetError, read_image
from rtseg.data.image_io import check_size
from rtseg.data.labels import CITYSCAPES_CLASSES, colorize, train_ids_to_label_ids
from rtseg.deploy.video import VideoError, is_stream, predict_video
from rtseg.errors import OptionError
from rtseg.inference import bounded_argmax, draw_legend, load_model, model_forward, model_input, overlay
from rtseg.io.files import atomic_write
from rtseg.storage import not_a_file
from rtseg.tasks.common import Log, Optimization, check_inference_precision, optimized
from rtseg.tasks.options import check_count, check_number, check_output
from rtseg.progress import progress_range
from rtseg.cpu import check_threads

__all__ = ["predict", "segmenter", "Segmenter", "collect_inputs"]

Backend = Literal["torch", "onnxruntime", "openvino"]


def collect_inputs(inputs: Sequence[str | Path]) -> tuple[list[Path], list[str]]:
    """(image files, errors): folders are searched recursively for images; a missing path is an error, not a stop.
    A file named twice (itself and through its folder) is listed once."""
    files, errors, seen = [], [], set()
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                errors.append(f"{item}: folder contains no images ({', '.join(IMAGE_SUFFIXES)})")
        elif p.is_file():
            found = [p]
        else:
            problem = not_a_file(p)
            errors.append(f"{item}: {'no such file or folder' if problem == 'does not exist' else problem}")
            found = []
        for f in found:
            key = f.resolve()
            if key not in seen:
                seen.add(key)
                files.append(f)
    return files, errors


OUTPUT_SUFFIXES = ("_mask.png", "_overlay.png", "_labels.png", "_overlay.mp4")


def skip_own_outputs(files: Sequence[Path], out: str | Path) -> tuple[list[Path], list[Path]]:
    """(inputs, skipped): files inside ``out`` named like predict's outputs are left out, so a second run with --out
    inside an input folder does not segment the first run's masks and overlays."""
    root = Path(out).resolve()
    keep, own = [], []
    for f in files:
        r = f.resolve()
        inside = root == r.parent or root in r.parents
        (own if inside and r.name.endswith(OUTPUT_SUFFIXES) else keep).append(f)
    return keep, own


def output_names(files: Sequence[Path]) -> dict[Path, str]:
    """A distinct output name (without suffix, ``/``-separated) for each input file, so that no prediction overwrites
    another: the file's path below the inputs' common folder without its extension (``sub/a.png`` -> ``sub/a``); files
    that would still share a name (``a.png`` and ``a.jpg``) all keep their extension (``a.png``, ``a.jpg``)."""
    if not files:
        return {}
    resolved = {f: f.resolve() for f in files}
    root = Path(os.path.commonpath([str(r.parent) for r in resolved.values()]))
    stems = {f: r.relative_to(root).with_suffix("").as_posix() for f, r in resolved.items()}
    counts = Counter(stems.values())
    return {f: (resolved[f].relative_to(root).as_posix() if counts[stem] > 1 else stem) for f, stem in stems.items()}


class Segmenter:
    """Image -> label map with one loaded network, in the three stages every caller runs: :meth:`prepare` (the
    normalised input), :meth:`run` (a batch through the network) and :meth:`labels` (one image's label map at its own
    size). ``rtseg predict`` calls it whole; the server times the stages apart and may batch :meth:`run`.

    ``deployed`` says what runs (backend, version, optimisations, precision); ``max_batch`` is how many images one
    :meth:`run` takes (None: any). :meth:`close` removes the temporary export a backend may have written."""

    def __init__(self, card: ModelCard, backend: str, deployed: str, prepare: Callable[..., Any], run: Callable[[Any], Any],
                 labels: Callable[[Any, tuple[int, int]], np.ndarray], *, size: tuple[int, int] | None = None,
                 max_batch: int | None = None, workdir: str | None = None, notes: Callable[[], list[str]] | None = None):
        self.card, self.backend, self.deployed, self.size, self.max_batch = card, backend, deployed, size, max_batch
        self._prepare, self._run, self._labels, self._workdir = prepare, run, labels, workdir
        self._notes_from = notes

    def take_notes(self) -> list[str]:
        """Cautions the backend raised since the last call (an exported file resizing frames to its fixed size)."""
        return self._notes_from() if self._notes_from is not None else []

    def prepare(self, rgb: np.ndarray, size: tuple[int, int] | None = None):
        """The normalised ``1 x 3 x h x w`` input of an ``H x W x 3`` uint8 image (resized to ``size`` when given)."""
        return self._prepare(rgb, size)

    def run(self, x):
        """The network's output for a prepared batch (``N x 3 x h x w``, N up to ``max_batch``)."""
        return self._run(x)

    def labels(self, out, hw: tuple[int, int]) -> np.ndarray:
        """The ``H x W`` uint8 label map of one image's output (``1 x ...``) at the image's size ``hw``."""
        return self._labels(out, hw)

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        return self.labels(self.run(self.prepare(rgb, self.size)), rgb.shape[:2])

    def close(self) -> None:
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None


def _exported(seg: Any, card: ModelCard, backend: str, deployed: str, size, workdir: str | None) -> Segmenter:
    return Segmenter(card, backend, deployed, seg.prepare, seg.run, seg.labels, size=size, max_batch=seg.max_batch, workdir=workdir,
                     notes=seg.take_notes)


def segmenter(model: str | Path, *, weights: str | Path | None = None, num_classes: int | None = None, size: tuple[int, int] | None = None,
              backend: Backend = "torch", threads: int | None = None, optimize: Optimization | None = None,
              precision: str | None = None) -> tuple[Segmenter, ModelCard]:
    """(segment(rgb) -> label map, model card) for ``model`` run by ``backend``; a ``.onnx`` file always runs in ONNX
    Runtime and a ``.xml`` IR in OpenVINO. ``segment`` is a :class:`Segmenter`; ``optimize`` (PyTorch only) is timed
    at ``size`` (default 256x512)."""
    if str(model).endswith(".onnx"):
        backend = "onnxruntime"
    if str(model).endswith(".xml"):
        backend = "openvino"
    if backend == "openvino":
        from rtseg.deploy.openvino_backend import _ov_version, openvino_segmenter

        workdir = None if str(model).endswith(".xml") else tempfile.mkdtemp(prefix="rtseg-")
        seg = openvino_segmenter(model, size, weights=weights, num_classes=num_classes, threads=threads, precision=precision or "fp32",
                                 workdir=workdir)
        deployed = f"OpenVINO {_ov_version()} CPU, {'IR ' + str(model) if workdir is None else 'dynamic IR exported at start'}, precision {seg.precision.summary()}"
        return _exported(seg, seg.card, "openvino", deployed, size, workdir), seg.card
    if backend == "onnxruntime":
        import onnxruntime

        from rtseg.deploy.ort import OnnxSegmenter

        workdir = None
        if str(model).endswith(".onnx"):
            path = str(model)
        else:  # export the model once into a temporary dynamic-shape ONNX file
            from rtseg.deploy.onnx_export import export_onnx

            workdir = tempfile.mkdtemp(prefix="rtseg-")
            path = str(Path(workdir) / "model.onnx")
            export_onnx(load_model(model, weights=weights, num_classes=num_classes), path, size or (256, 512), dynamic=True)
        seg = OnnxSegmenter(path, threads=threads)
        deployed = (f"ONNX Runtime {onnxruntime.__version__} ({seg.session.get_providers()[0]}), "
                    f"{'file ' + path if workdir is None else 'dynamic ONNX export made at start'}, fp32")
        return _exported(seg, seg.card, "onnxruntime", deployed, size, workdir), seg.card
    import torch

    net = load_model(model, weights=weights, num_classes=num_classes)
    card = card_of(net)
    deployed = f"PyTorch {torch.__version__} eager, fp32"
    if optimize is not None:
        net = optimized(net, optimize, "cpu", size)
        deployed = f"PyTorch {torch.__version__} rtseg.optimize: {net.rtseg_optimization.summary()}"
    device = next(net.parameters()).device
    seg = Segmenter(card, "torch", deployed, lambda rgb, hw: model_input(card, rgb, hw, None, device), lambda x: model_forward(net, x),
                    lambda out, hw: bounded_argmax(out, hw).cpu().numpy(), size=size)
    return seg, card


def _check_server_format(card: ModelCard, model: str | Path) -> None:
    names = card.classes.names if card.classes is not None else None
    if names != CITYSCAPES_CLASSES and not (names is None and card.num_outputs >= 19):
        raise OptionError(f"--format-for-server writes Cityscapes labelIds and needs a model of the 19 Cityscapes classes; "
                          f"{model} predicts {card.class_info.num_classes} classes [{', '.join(card.class_info.names)}]")


def _save_png(array: np.ndarray, path: str) -> None:
    # a temporary file renamed when complete: an interrupted run leaves no half-written image under the final name
    atomic_write(path, lambda tmp: Image.fromarray(array).save(tmp, format="PNG"))


def _stream_name(stream: str | list[Path]) -> str:
    # an image list or a pattern (frames/%05d.png) is named after its folder, a video after its file
    if isinstance(stream, list):
        return stream[0].parent.name or "sequence"
    return (Path(stream).parent.name if "%" in str(stream) else Path(stream).stem) or "sequence"


# An image this far from the card's size (area ratio either way) gets a note that --size card may serve it better.
FAR_FROM_CARD = 2.25


def far_from_card(image_hw: tuple[int, int], card_hw: tuple[int, int] | None) -> bool:
    if card_hw is None:
        return False
    ratio = (image_hw[0] * image_hw[1]) / (card_hw[0] * card_hw[1])
    return ratio > FAR_FROM_CARD or ratio < 1 / FAR_FROM_CARD


def predict(model: str | Path, inputs: Sequence[str | Path], out: str | Path, *, weights: str | Path | None = None, num_classes: int | None = None,
            size: tuple[int, int] | Literal["card"] | None = None, alpha: float = 0.5, legend: bool = True, save_labels: bool = False,
            as_video: bool = False, fps: float | None = None, threads: int | None = None, backend: Backend = "torch",
            optimize: Optimization | None = None, precision: str | None = None, format_for_server: bool = False, log: Log = Log(),
            progress: bool | None = None) -> dict[str, Any]:
    """Writes ``NAME_mask.png`` and ``NAME_overlay.png`` (and ``NAME_labels.png`` with ``save_labels``) per image
    (``NAME`` from :func:`output_names`: distinct for every input, keeping subfolders below the inputs' common folder),
    ``NAME_overlay.mp4`` per video, frame pattern or (``as_video``) the image list, into ``out``; with
    ``format_for_server`` only Cityscapes labelId PNGs named like the inputs. Overlays carry a legend of the classes
    present unless ``legend`` is False. ``size="card"`` resizes every input to the size the weights' card records;
    without a size, an image far from it gets a note saying so. Every file is written under a temporary name and
    renamed when complete. An input that fails is reported through ``log.error`` and listed in the result; the others
    go on. Returns ``{"written": N, "errors": [...], "videos": [...]}``."""
    check_inference_precision(precision, optimize=optimize is not None, openvino=backend == "openvino" or str(model).endswith(".xml"))
    check_threads(threads, "--threads")
    check_count(num_classes, "--num-classes")
    check_number(alpha, "--alpha", 0, 1)
    check_number(fps, "--fps", 0, 1000, lo_open=True)
    if size is not None and size != "card":
        check_size(size, "--size")
    check_output(out, "dir")
    if threads:
        import torch

        torch.set_num_threads(threads)
    streams: list[Any] = [i for i in inputs if is_stream(i)]
    files, errors = collect_inputs([i for i in inputs if not is_stream(i)])
    files, own = skip_own_outputs(files, out)
    if own:
        log.note(f"skipped {len(own)} file(s) in --out {str(out)!r} that are rtseg's own outputs (e.g. {own[0].name}): --out lies in an input folder")
    segment, card = segmenter(model, weights=weights, num_classes=num_classes, size=None if size == "card" else size, backend=backend,
                              threads=threads, optimize=optimize, precision=precision)
    try:
        if size == "card":
            if card.input_size is None:
                raise OptionError(f"--size card: the card of {model} records no training or evaluation size; give --size HxW")
            size = segment.size = card.input_size
        palette = card.class_info.palette
        decorate = (lambda img, labels: draw_legend(img, labels, card.class_info)) if legend else None
        noted_far = False
        if format_for_server:
            _check_server_format(card, model)
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        for e in errors:
            log.error(e)
        if as_video and files:
            streams.append(files)
            files = []
        written, videos, video_names = 0, [], Counter()
        for stream in streams:
            is_list = isinstance(stream, list)
            name = _stream_name(stream)
            video_names[name] += 1
            name = name if video_names[name] == 1 else f"{name}-{video_names[name]}"  # two videos of one name both kept
            try:
                rec = predict_video(segment, "image list" if is_list else stream, out / f"{name}_overlay.mp4", palette, alpha,
                                    frames=stream if is_list else None, fps=fps, decorate=decorate)
            except VideoError as exc:
                errors.append(str(exc))
                log.error(str(exc))
                continue
            log.info(f"{rec['output']}: {rec['frames']} frames, {rec['fps_end_to_end']:.2f} FPS end to end "
                     f"(decode overlapped with inference; pre-process + inference + post-process alone {rec['fps_segment_only']:.2f} FPS)")
            videos.append(rec)
            written += 1
        names = output_names(files)
        # a folder of images takes minutes: a bar on stderr (progress None: when more than 50 images)
        for i in progress_range(len(files), "predicting", progress, unit="image"):
            f = files[i]
            try:
                image = read_image(f)
            except DatasetError as exc:
                errors.append(str(exc))
                log.error(str(exc))
                continue
            if size is None and not noted_far and far_from_card(image.shape[:2], card.input_size):
                noted_far = True
                h, w = card.input_size
                log.note(f"{f} is {image.shape[0]}x{image.shape[1]} (HxW), far from the {h}x{w} the weights were trained and evaluated at; "
                         "a network usually segments best at that scale: --size card resizes every input to it")
            label_map = segment(image)
            for note in segment.take_notes():
                log.note(note)
            base = out / names[f]
            try:
                base.parent.mkdir(parents=True, exist_ok=True)
                if format_for_server:
                    # the official evaluation's naming: CITY_SEQ_FRAME_leftImg8bit.png holding labelIds
                    _save_png(train_ids_to_label_ids(label_map), f"{base}.png")
                else:
                    _save_png(colorize(label_map, palette), f"{base}_mask.png")
                    blended = overlay(image, label_map, palette, alpha)
                    _save_png(decorate(blended, label_map) if decorate else blended, f"{base}_overlay.png")
                    if save_labels:
                        _save_png(label_map.astype(np.uint8), f"{base}_labels.png")
            except OSError as exc:
                if exc.errno != errno.ENAMETOOLONG:
                    raise
                message = f"{f}: its output name ({base.name}_overlay.png) is too long for this file system; skipped (rename the input)"
                errors.append(message)
                log.error(message)
                continue
            written += 1
        return {"written": written, "errors": errors, "videos": videos, "out": str(out)}
    finally:
        segment.close()  # a temporary export (onnxruntime / openvino of a model name) is removed
