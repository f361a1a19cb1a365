"""Task: score a model on a dataset's validation split (mIoU per class, pixel accuracy) under a test protocol."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn as nn
from torch.utils.data import DataLoader

from rtseg.card import card_of
from rtseg.config import DEFAULTS
from rtseg.data.datasets import build_dataset, dataset_classes
from rtseg.data.labels import CITYSCAPES_CATEGORIES, CITYSCAPES_CLASSES
from rtseg.data.normalization import get_normalization
from rtseg.data.transformed import TransformedDataset
from rtseg.data.transforms import EvalTransform
from rtseg.devices import resolve_device
from rtseg.evaluation import EvalProtocol, class_mapping, evaluate_model, protocol_record, read_class_map
from rtseg.inference import load_model
from rtseg.data.image_io import check_size
from rtseg.errors import OptionError
from rtseg.tasks.common import Log
from rtseg.tasks.options import check_count, check_device, check_scales

__all__ = ["evaluate", "eval_data_config", "DATASETS"]

DATASETS = ("synthetic", "cityscapes", "camvid", "folder")


def eval_data_config(card_data: Mapping[str, Any] | None, *, dataset: str | None = None, root: str | Path | None = None, split: str = "val",
                     size: tuple[int, int] | None = None, samples: int | None = None) -> dict[str, Any]:
    """The ``data`` section to evaluate with: the one the weights were trained with (if their card has it) over the
    defaults, then the caller's choices. Real datasets are scored at full resolution unless ``size`` is given."""
    data_cfg = {**DEFAULTS["data"], **(card_data or {})}
    if dataset:
        data_cfg["dataset"] = dataset
    if root:
        data_cfg["root"] = str(root)
    if samples:
        data_cfg["val_samples"] = samples
    if data_cfg["dataset"] != "synthetic":
        data_cfg["image_size"] = list(size) if size else None
    elif size:
        data_cfg["image_size"] = list(size)
    data_cfg["val_split"] = split
    return data_cfg


def evaluate(model: str | Path | nn.Module, *, weights: str | Path | None = None, num_classes: int | None = None, dataset: str | None = None,
             root: str | Path | None = None, split: str = "val", size: tuple[int, int] | None = None, samples: int | None = None,
             normalization: str | None = None, class_map: Mapping[str, str] | str | Path | None = None, protocol: EvalProtocol | None = None,
             device: str = "auto", workers: int = 0, progress: bool = False, log: Log = Log()) -> dict[str, Any]:
    """The metrics summary of ``model`` (a checkpoint, weights file, registered name or a built model) on ``split``.

    Weights rtseg trained remember their data: that dataset is used unless ``dataset``/``root`` say otherwise. The
    model's classes are matched to the dataset's before any work (``class_map``, a mapping or a YAML file of one, maps
    model class names to dataset class names).
    """
    protocol = protocol or EvalProtocol()
    check_scales(protocol.scales)
    if protocol.window:
        check_size(protocol.window, "--window")
        check_size(protocol.stride, "--stride")
    if size is not None:
        check_size(size, "--size")
    check_count(samples, "--samples")
    check_count(workers, "--workers", minimum=0)
    check_count(num_classes, "--num-classes")
    check_device(device)
    if dataset is not None and dataset not in DATASETS:
        raise OptionError(f"--data {dataset!r} is not one of {', '.join(DATASETS)}")
    if isinstance(class_map, (str, Path)):
        class_map = read_class_map(class_map)
    if not isinstance(model, nn.Module):
        name = str(model)
        model = load_model(model, weights=weights, num_classes=num_classes)
    else:
        name = card_of(model).model
    card = card_of(model)
    trained_on = ((card.training.config if card.training else None) or {}).get("data", {})
    data_cfg = eval_data_config(trained_on, dataset=dataset, root=root, split=split, size=size, samples=samples)
    classes = dataset_classes(data_cfg)
    lut = class_mapping(card.classes, card.num_outputs, classes, class_map)
    if card.classes is None and class_map is None:
        log.note(f"note: {name} names no classes (untrained or a bare state dict); its {card.num_outputs} outputs are scored as "
                 f"the dataset's classes in order")
    norm = get_normalization(normalization or card.normalization)
    target = resolve_device(device)
    model.to(target)
    data = TransformedDataset(build_dataset(data_cfg, "val"), EvalTransform(data_cfg, norm))
    loader = DataLoader(data, batch_size=1, num_workers=workers)
    cm = evaluate_model(model, loader, classes.num_classes, target, classes.ignore_index, progress=progress, protocol=protocol, class_map=lut)
    categories = CITYSCAPES_CATEGORIES if tuple(classes.names) == CITYSCAPES_CLASSES else None
    summary = cm.summary(classes.names, categories)
    summary["model"] = name
    summary["card"] = card.summary()
    summary["dataset"] = {"name": data_cfg["dataset"], "root": data_cfg.get("root"), "split": split, "images": len(data),
                          "input_size": data_cfg.get("image_size")}
    summary["normalization"] = norm.to_dict()
    summary["protocol"] = protocol_record(protocol, data_cfg.get("image_size"), class_map)
    summary["torch_version"] = torch.__version__
    return summary
