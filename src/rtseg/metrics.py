"""Segmentation metrics from a confusion matrix: per-class IoU, mIoU, pixel accuracy, category IoU."""
from __future__ import annotations

import math
from typing import Iterable, Mapping, Sequence

import numpy as np
import torch

__all__ = ["ConfusionMatrix", "iou_from_confusion"]


def iou_from_confusion(conf: np.ndarray) -> np.ndarray:
    """Per-class IoU = TP / (TP + FP + FN); NaN where the class is neither in the labels nor predicted."""
    conf = conf.astype(np.float64)
    tp = np.diag(conf)
    denom = conf.sum(0) + conf.sum(1) - tp
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denom > 0, tp / np.where(denom > 0, denom, 1), np.nan)


class ConfusionMatrix:
    """Accumulates a ``num_classes x num_classes`` confusion matrix (rows: label, columns: prediction).

    Pixels whose label is ``ignore_index`` (or any value outside ``0..num_classes-1``) are skipped.
    Predictions outside ``0..num_classes-1`` (e.g. a void class the model was trained with) count as
    wrong: they land in an extra column that is never correct.
    """

    def __init__(self, num_classes: int, ignore_index: int = 255):
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        # one extra prediction column collects out-of-range predictions
        self._matrix = torch.zeros(num_classes, num_classes + 1, dtype=torch.int64)

    def reset(self) -> None:
        self._matrix.zero_()

    @torch.no_grad()
    def update(self, prediction: torch.Tensor | np.ndarray, target: torch.Tensor | np.ndarray) -> None:
        """Add a batch: ``prediction`` (class indices, or logits ``N x C x H x W``) and ``target`` (labels)."""
        pred = torch.as_tensor(prediction)
        tgt = torch.as_tensor(target)
        if pred.is_floating_point():
            pred = pred.argmax(1) if pred.dim() == 4 else pred.argmax(0)
        if pred.shape != tgt.shape:
            raise ValueError(f"prediction shape {tuple(pred.shape)} differs from label shape {tuple(tgt.shape)}")
        pred = pred.reshape(-1).to("cpu", torch.int64)
        tgt = tgt.reshape(-1).to("cpu", torch.int64)
        valid = (tgt >= 0) & (tgt < self.num_classes)
        pred, tgt = pred[valid], tgt[valid]
        n = self.num_classes
        pred = torch.where((pred >= 0) & (pred < n), pred, torch.full_like(pred, n))
        self._matrix += torch.bincount(tgt * (n + 1) + pred, minlength=n * (n + 1)).view(n, n + 1)

    @classmethod
    def from_counts(cls, counts: torch.Tensor, ignore_index: int = 255) -> "ConfusionMatrix":
        """A matrix holding ``counts`` (the shape of :attr:`raw`: ``C x (C + 1)``), e.g. matrices summed across processes."""
        n = counts.shape[0]
        if counts.dim() != 2 or counts.shape[1] != n + 1:
            raise ValueError(f"counts of shape {tuple(counts.shape)} are not a raw confusion matrix (C x C+1)")
        cm = cls(n, ignore_index)
        cm._matrix += counts.to("cpu", torch.int64)
        return cm

    def merge(self, other: "ConfusionMatrix") -> None:
        """Add the counts of ``other`` (same classes), e.g. the matrix of another share of the images."""
        if other.num_classes != self.num_classes:
            raise ValueError(f"cannot merge a {other.num_classes}-class confusion matrix into a {self.num_classes}-class one")
        self._matrix += other._matrix

    @property
    def matrix(self) -> np.ndarray:
        """The square confusion matrix (out-of-range predictions are excluded here but still count as errors)."""
        return self._matrix[:, : self.num_classes].numpy().copy()

    @property
    def raw(self) -> torch.Tensor:
        """The matrix with its extra column, for reductions across processes."""
        return self._matrix

    def pixel_accuracy(self) -> float:
        total = int(self._matrix.sum())
        return float(np.trace(self.matrix) / total) if total else math.nan

    def iou(self) -> np.ndarray:
        conf = self.matrix
        tp = np.diag(conf).astype(np.float64)
        fn = self._matrix.sum(1).numpy() - tp  # includes out-of-range predictions
        fp = conf.sum(0) - tp
        denom = tp + fp + fn
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(denom > 0, tp / np.where(denom > 0, denom, 1), np.nan)

    def present_classes(self) -> np.ndarray:
        """Classes that occur in the labels."""
        return np.flatnonzero(self._matrix.sum(1).numpy() > 0)

    def mean_iou(self, over: str = "valid") -> float:
        """Mean IoU.

        ``over="valid"`` (the official Cityscapes evaluator): every class whose IoU is defined, i.e.
        that is in the labels or predicted; a class predicted but absent from the labels scores 0.
        ``over="present"``: only classes that occur in the labels.
        ``over="all"``: every class, undefined ones counted as 0.
        """
        iou = self.iou()
        if over == "valid":
            vals = iou[~np.isnan(iou)]
        elif over == "present":
            vals = iou[self.present_classes()]
        elif over == "all":
            vals = np.nan_to_num(iou, nan=0.0)
        else:
            raise ValueError(f"mean_iou over={over!r}: expected 'valid', 'present' or 'all'")
        return float(vals.mean()) if vals.size else math.nan

    def mean_accuracy(self) -> float:
        """Mean of per-class recall over classes present in the labels."""
        row = self._matrix.sum(1).numpy()
        present = row > 0
        return float((np.diag(self.matrix)[present] / row[present]).mean()) if present.any() else math.nan

    def frequency_weighted_iou(self) -> float:
        """Sum over classes of (share of labelled pixels) x IoU; classes absent from the labels weigh 0."""
        row = self._matrix.sum(1).numpy().astype(np.float64)
        if row.sum() == 0:
            return math.nan
        iou = np.nan_to_num(self.iou(), nan=0.0)
        return float((row / row.sum() * iou).sum())

    def category_iou(self, categories: Mapping[str, Sequence[int]]) -> dict[str, float]:
        """IoU of groups of classes (e.g. Cityscapes categories), computed from the merged matrix."""
        n = self.num_classes
        cat_of = np.full(n + 1, len(categories), dtype=np.int64)
        for k, ids in enumerate(categories.values()):
            cat_of[list(ids)] = k
        m = len(categories) + 1
        merged = np.zeros((m, m), dtype=np.int64)
        raw = self._matrix.numpy()
        np.add.at(merged, (cat_of[:n, None].repeat(n + 1, 1), cat_of[None, :].repeat(n, 0)), raw)
        ious = iou_from_confusion(merged)[: len(categories)]
        return {name: float(v) for name, v in zip(categories, ious)}

    def summary(self, class_names: Iterable[str] | None = None, categories: Mapping[str, Sequence[int]] | None = None) -> dict:
        names = list(class_names) if class_names is not None else [str(i) for i in range(self.num_classes)]
        iou = self.iou()
        out = {
            "pixel_accuracy": self.pixel_accuracy(),
            "mean_accuracy": self.mean_accuracy(),
            "miou": self.mean_iou("valid"),
            "miou_present": self.mean_iou("present"),
            "frequency_weighted_iou": self.frequency_weighted_iou(),
            "per_class_iou": {n: (None if math.isnan(v) else float(v)) for n, v in zip(names, iou)},
            "pixels": int(self._matrix.sum()),
        }
        if categories:
            cat = self.category_iou(categories)
            out["category_iou"] = {k: (None if math.isnan(v) else v) for k, v in cat.items()}
            vals = [v for v in cat.values() if not math.isnan(v)]
            out["category_miou"] = float(np.mean(vals)) if vals else math.nan
        return out
