"""Evaluation protocols: logits at the label resolution from a resized input (the default), sliding-window
inference at full resolution, optional flip and multi-scale testing; and scoring of prediction files
written for the Cityscapes evaluation server.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from rtseg.metrics import ConfusionMatrix
from rtseg.errors import UserError

__all__ = ["EvalProtocol", "segment_logits", "evaluate_model", "evaluate_server_files", "protocol_record", "ClassMismatchError", "class_mapping", "read_class_map"]


class EvalProtocol:
    """How logits for one image are formed.

    ``scales``: input scales relative to the given input (1.0 = as the loader delivers it); the class
    probabilities of all scales (and of their horizontal flips when ``flip``) are averaged at the label
    resolution. ``window``: (H, W) of a sliding window run over the input at each scale with ``stride``
    (default: two thirds of the window), overlapping logits averaged; None = whole image at once.
    """

    def __init__(self, scales: Sequence[float] = (1.0,), flip: bool = False, window: tuple[int, int] | None = None, stride: tuple[int, int] | None = None):
        self.scales = tuple(float(s) for s in scales) or (1.0,)
        self.flip = bool(flip)
        self.window = tuple(window) if window else None
        self.stride = tuple(stride) if stride else (tuple(max(1, (2 * w) // 3) for w in self.window) if self.window else None)

    @property
    def single_view(self) -> bool:
        """One forward view of the input (whole image or windows): its logits are returned as they are."""
        return self.scales == (1.0,) and not self.flip

    def describe(self) -> dict:
        return {"scales": list(self.scales), "flip": self.flip, "window": list(self.window) if self.window else None,
                "stride": list(self.stride) if self.stride else None}


def protocol_record(protocol: EvalProtocol, input_size, class_map: Mapping[str, str] | None = None) -> dict:
    """How a score was measured, for model cards and metric files."""
    record = {
        "input_size": list(input_size) if input_size else "each image at its own size",
        **protocol.describe(),
        "logits": "resized bilinearly to the label size before the arg-max",
        "ignored_labels": "label values outside the dataset's classes (void) are not scored",
        "void_outputs": "a pixel predicted as an output that is not one of the dataset's classes (e.g. a void output) counts as wrong",
        "aggregation": "one confusion matrix over the split; IoU per class; mIoU = mean over the classes that occur in the labels or predictions",
    }
    if class_map:
        record["class_map"] = dict(class_map)
    return record


class ClassMismatchError(UserError, ValueError):
    """A model whose classes are not the dataset's, evaluated without a class map."""


def _listing(names: Sequence[str]) -> str:
    return f"{len(names)} classes [{', '.join(names)}]"


def class_mapping(model_classes, num_outputs: int, dataset_classes, mapping: Mapping | None = None) -> torch.Tensor | None:
    """The table from model output index to dataset class index, or None when the outputs already are the dataset's classes.

    ``model_classes``: the model card's ClassInfo (None: unnamed outputs, taken as the dataset's classes when their
    counts are equal). With different classes and no ``mapping`` this raises :class:`ClassMismatchError` naming both
    lists. ``mapping``: ``{model class name or output index: dataset class name}``; outputs it leaves out (and void
    outputs) map to no class and count as wrong wherever they are predicted.
    """
    if mapping is None:
        if model_classes is None and num_outputs == dataset_classes.num_classes:
            return None
        if model_classes is not None and tuple(model_classes.names) == tuple(dataset_classes.names):
            return None
        model_text = _listing(model_classes.names) if model_classes is not None else f"{num_outputs} unnamed outputs"
        raise ClassMismatchError(
            f"the model predicts {model_text} but the dataset has {_listing(dataset_classes.names)}; "
            "pass a class map (--class-map FILE.yaml, lines 'model class: dataset class') to score one against the other"
        )
    names = list(model_classes.names) if model_classes is not None else [f"class {i}" for i in range(num_outputs)]
    lut = torch.full((num_outputs,), dataset_classes.num_classes, dtype=torch.int64)  # unmapped: counted wrong
    problems = []
    for src, dst in mapping.items():
        index = src if isinstance(src, int) else names.index(src) if src in names else None
        if index is None or not 0 <= index < num_outputs:
            problems.append(f"{src!r} is not a model class ({', '.join(names)})")
        elif dst not in dataset_classes.names:
            problems.append(f"{dst!r} is not a dataset class ({', '.join(dataset_classes.names)})")
        else:
            lut[index] = list(dataset_classes.names).index(dst)
    if problems:
        raise ClassMismatchError("class map: " + "; ".join(problems))
    return lut


def read_class_map(path: str | Path) -> dict:
    """A YAML file of ``model class: dataset class`` lines, checked to be a flat mapping of names."""
    import yaml

    from rtseg.config import yaml_load

    path = Path(path)
    if not path.is_file():
        raise ClassMismatchError(f"class map {str(path)!r} does not exist")
    try:
        data = yaml_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ClassMismatchError(f"class map {str(path)!r} is not valid YAML ({' '.join(str(exc).split())[:300]}); "
                                 "expected 'model class: dataset class' lines") from None
    if not isinstance(data, dict) or not all(isinstance(k, (str, int)) and isinstance(v, str) for k, v in data.items()):
        raise ClassMismatchError(f"class map {str(path)!r} must be a mapping of model class names to dataset class names, e.g. 'sidewalk: pavement'")
    return data


def resize_to(x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """``x`` resized bilinearly (no corner alignment) to ``hw``; returned as it is when it already has that size."""
    if tuple(x.shape[-2:]) == tuple(hw):
        return x
    return F.interpolate(x, size=hw, mode="bilinear", align_corners=False)


def _sliding(model: nn.Module, images: torch.Tensor, window: tuple[int, int], stride: tuple[int, int]) -> torch.Tensor:
    n, _, h, w = images.shape
    wh, ww = min(window[0], h), min(window[1], w)
    ys = list(range(0, max(h - wh, 0) + 1, stride[0]))
    xs = list(range(0, max(w - ww, 0) + 1, stride[1]))
    if ys[-1] != h - wh:
        ys.append(h - wh)  # the last window ends at the border
    if xs[-1] != w - ww:
        xs.append(w - ww)
    total, count = None, torch.zeros(1, 1, h, w, device=images.device)
    for y in ys:
        for x in xs:
            logits = resize_to(model(images[:, :, y : y + wh, x : x + ww]), (wh, ww))
            if total is None:
                total = torch.zeros(n, logits.shape[1], h, w, device=images.device, dtype=logits.dtype)
            total[:, :, y : y + wh, x : x + ww] += logits
            count[:, :, y : y + wh, x : x + ww] += 1
    return total / count


def segment_logits(model: nn.Module, images: torch.Tensor, label_hw: tuple[int, int], protocol: EvalProtocol | None = None) -> torch.Tensor:
    """``N x C x H x W`` scores at the label resolution ``label_hw`` (logits for a single view,
    averaged softmax probabilities when several scales or flips are combined)."""
    protocol = protocol or EvalProtocol()
    run = (lambda x: _sliding(model, x, protocol.window, protocol.stride)) if protocol.window else model
    if protocol.single_view:
        return resize_to(run(images), label_hw)
    h, w = images.shape[-2:]
    total = None
    for s in protocol.scales:
        scaled = resize_to(images, (max(1, round(h * s)), max(1, round(w * s))))
        views = [(scaled, False)] + ([(scaled.flip(-1), True)] if protocol.flip else [])
        for view, flipped in views:
            out = run(view)
            if flipped:
                out = out.flip(-1)
            prob = resize_to(out, label_hw).softmax(1)
            total = prob if total is None else total + prob
    return total


def evaluate_server_files(prediction_dir: str | Path, cityscapes_root: str | Path, split: str = "val") -> ConfusionMatrix:
    """Score labelId PNGs in the server format (``CITY_SEQ_FRAME*.png`` in ``prediction_dir``, any depth)
    against ``gtFine/SPLIT`` of ``cityscapes_root``: the same files the official evaluator reads."""
    from PIL import Image

    from rtseg.data.datasets import DatasetError
    from rtseg.data.labels import label_ids_to_train_ids

    prediction_dir = Path(prediction_dir)
    predictions = {}
    for p in prediction_dir.rglob("*.png"):
        key = "_".join(p.name.split("_")[:3])
        if key in predictions:
            raise DatasetError(f"two prediction files for {key}: {str(predictions[key])!r} and {str(p)!r}")
        predictions[key] = p
    gts = sorted((Path(cityscapes_root) / "gtFine" / split).glob("*/*_gtFine_labelIds.png"))
    if not gts:
        raise DatasetError(f"no gtFine/{split}/*/*_gtFine_labelIds.png under {str(cityscapes_root)!r}")
    cm = ConfusionMatrix(19)
    for gt in gts:
        key = gt.name[: -len("_gtFine_labelIds.png")]
        if key not in predictions:
            raise DatasetError(f"no prediction for {str(gt)!r} in {str(prediction_dir)!r} (expected a file named {key}*.png)")
        pred = np.asarray(Image.open(predictions[key]))
        label = np.asarray(Image.open(gt))
        if pred.shape != label.shape:
            raise DatasetError(f"prediction {str(predictions[key])!r} is {pred.shape[1]}x{pred.shape[0]} but {str(gt)!r} is {label.shape[1]}x{label.shape[0]}")
        cm.update(torch.from_numpy(label_ids_to_train_ids(pred).astype(np.int64)), torch.from_numpy(label_ids_to_train_ids(label).astype(np.int64)))
    return cm


@torch.inference_mode()
def evaluate_model(model: nn.Module, loader, num_classes: int, device: torch.device, ignore_index: int = 255, progress: bool = False, protocol=None,
                   class_map: torch.Tensor | None = None) -> ConfusionMatrix:
    """Confusion matrix of ``model`` over ``loader``; logits are resized to the label size before the argmax
    (``protocol``: an :class:`rtseg.evaluation.EvalProtocol` for sliding-window, flip or multi-scale testing;
    ``class_map``: model output index -> dataset class, from :func:`rtseg.evaluation.class_mapping`)."""
    from tqdm.auto import tqdm

    model.eval()
    cm = ConfusionMatrix(num_classes, ignore_index)
    for images, labels in tqdm(loader, desc="eval", leave=False, disable=not progress):
        scores = segment_logits(model, images.to(device), tuple(labels.shape[-2:]), protocol)
        prediction = scores.argmax(1).cpu()
        cm.update(prediction if class_map is None else class_map[prediction], labels)
    return cm
