"""Losses and class weighting (ENet's 1/ln(c + p), median-frequency balancing)."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from rtseg.data.cache import default_cache_dir, file_list_key  # noqa: F401  (re-exported)
from rtseg.config import ConfigError

__all__ = ["class_frequencies", "cached_class_frequencies", "file_list_key", "enet_weights", "median_frequency_weights", "build_criterion"]


def class_frequencies(dataset, num_classes: int, ignore_index: int = 255, max_items: int | None = None) -> np.ndarray:
    """Pixel count of each class over the labels of ``dataset`` (items are ``(image, label)``)."""
    counts = np.zeros(num_classes, dtype=np.int64)
    n = len(dataset) if max_items is None else min(len(dataset), max_items)
    for i in range(n):
        label = np.asarray(dataset[i][1]).reshape(-1)
        label = label[(label != ignore_index) & (label < num_classes)]
        counts += np.bincount(label.astype(np.int64), minlength=num_classes)[:num_classes]
    return counts


def cached_class_frequencies(dataset, num_classes: int, ignore_index: int = 255, cache_dir: str | Path | None = None) -> np.ndarray:
    """:func:`class_frequencies`, computed once per dataset: the counts are kept in
    ``CACHE/class-counts/<hash of the file list>.json`` and read back while the label files are unchanged."""
    key = file_list_key(dataset, num_classes, ignore_index)
    if key is None:
        return class_frequencies(dataset, num_classes, ignore_index)
    path = Path(cache_dir or default_cache_dir()) / "class-counts" / f"{key}.json"
    if path.is_file():
        try:
            counts = json.loads(path.read_text())["counts"]
            if len(counts) == num_classes:
                return np.asarray(counts, dtype=np.int64)
        except (ValueError, KeyError, TypeError):
            pass  # a damaged cache file is recomputed and rewritten
    counts = class_frequencies(dataset, num_classes, ignore_index)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps({"counts": counts.tolist(), "images": len(dataset)}))
        tmp.replace(path)
    except OSError:
        pass  # an unwritable cache only costs the recount next time
    return counts


def enet_weights(counts: np.ndarray, c: float = 1.02) -> np.ndarray:
    """ENet's class weights ``1 / ln(c + p)`` with ``p`` the class's share of the labelled pixels."""
    p = counts / max(counts.sum(), 1)
    return 1.0 / np.log(c + p)


def median_frequency_weights(counts: np.ndarray) -> np.ndarray:
    """Median-frequency balancing ``median(f) / f`` over classes that occur; absent classes get weight 0."""
    freq = counts / max(counts.sum(), 1)
    present = freq > 0
    out = np.zeros_like(freq, dtype=np.float64)
    out[present] = np.median(freq[present]) / freq[present]
    return out


def build_criterion(loss_cfg: dict[str, Any], train_set, num_classes: int, out_dir: Path | None = None) -> nn.Module:
    """Cross-entropy with ``ignore_index`` and the weights the config names."""
    spec = loss_cfg.get("class_weights")
    weight = None
    if isinstance(spec, (list, tuple)):
        if len(spec) != num_classes:
            raise ConfigError(f"loss.class_weights has {len(spec)} values but the model has {num_classes} classes")
        weight = torch.tensor(spec, dtype=torch.float32)
    elif spec in ("enet", "median-frequency"):
        counts = cached_class_frequencies(train_set, num_classes, int(loss_cfg.get("ignore_index", 255)))
        w = enet_weights(counts, float(loss_cfg.get("class_weight_c", 1.02))) if spec == "enet" else median_frequency_weights(counts)
        weight = torch.tensor(w, dtype=torch.float32)
    elif spec not in (None, "none"):
        raise ConfigError(f"loss.class_weights={spec!r}: expected null, enet, median-frequency or a list of {num_classes} numbers")
    reduction = loss_cfg.get("reduction", "mean")
    if reduction not in ("mean", "sum"):
        raise ConfigError(f"loss.reduction={reduction!r}: expected mean or sum")
    return nn.CrossEntropyLoss(weight=weight, ignore_index=int(loss_cfg.get("ignore_index", 255)), reduction=reduction)
