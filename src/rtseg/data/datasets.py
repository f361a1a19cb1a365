"""Datasets: each item is an ``H x W x 3`` uint8 RGB image and an ``H x W`` uint8 label map of train ids."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from rtseg.data.cache import default_cache_dir, file_list_key
from rtseg.data.folder import FolderDataset, folder_classes
from rtseg.data.labels import CAMVID, CITYSCAPES, ClassInfo, label_ids_to_train_ids
from rtseg.data.paired import IMAGE_SUFFIXES, DatasetError, PairedFolder, read_image, read_label  # noqa: F401  (re-exported)
from rtseg.data.synthetic import SyntheticScenes
from rtseg.progress import progress_range

__all__ = [
    "DatasetError", "read_image", "read_label", "PairedFolder", "CityscapesDataset", "CamVidDataset", "FolderDataset",
    "build_dataset", "dataset_classes",
]


class CityscapesDataset(PairedFolder):
    """Cityscapes in the official layout: ``leftImg8bit/SPLIT/CITY/*_leftImg8bit.png`` with ``gtFine`` labels,
    or with ``annotations="coarse"`` the ``gtCoarse`` labels, where the ``train`` split also takes in
    ``train_extra`` (the 19,998 coarsely annotated frames used for coarse pretraining, e.g. by LiteSeg).
    """

    classes = CITYSCAPES

    def __init__(self, root: str | Path, split: str = "train", annotations: str = "fine"):
        root = Path(root)
        if annotations not in ("fine", "coarse"):
            raise DatasetError(f"data.annotations={annotations!r}: expected fine or coarse")
        gt = "gtFine" if annotations == "fine" else "gtCoarse"
        splits = [split, "train_extra"] if annotations == "coarse" and split == "train" else [split]
        pairs, missing = [], []
        for sp in splits:
            img_dir, lab_dir = root / "leftImg8bit" / sp, root / gt / sp
            if not img_dir.is_dir():
                raise DatasetError(f"Cityscapes root {str(root)!r} has no folder leftImg8bit/{sp} (expected the official layout)")
            for img in sorted(img_dir.glob("*/*_leftImg8bit.png")):
                lab = lab_dir / img.parent.name / img.name.replace("_leftImg8bit.png", f"_{gt}_labelIds.png")
                (pairs.append((img, lab)) if lab.is_file() else missing.append(str(lab)))
        if missing:
            raise DatasetError(f"{len(missing)} Cityscapes image(s) have no {gt} label map, e.g. {missing[0]!r}")
        super().__init__(pairs, ", ".join(str(root / "leftImg8bit" / sp) for sp in splits))

    def convert_label(self, label: np.ndarray) -> np.ndarray:
        return label_ids_to_train_ids(label)


class CamVidDataset(PairedFolder):
    """CamVid in the SegNet layout (``train/`` + ``trainannot/``, 11 classes, value 11 = void)."""

    classes = CAMVID

    def __init__(self, root: str | Path, split: str = "train"):
        root = Path(root)
        img_dir, lab_dir = root / split, root / f"{split}annot"
        for d in (img_dir, lab_dir):
            if not d.is_dir():
                raise DatasetError(f"CamVid root {str(root)!r} has no folder {d.name}/ (expected the SegNet layout: {split}/ and {split}annot/)")
        # paired by file stem, so JPEG images may sit beside PNG label maps (a packed copy for a GPU machine)
        images = {p.stem: p for p in img_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES}
        labels = {p.stem: p for p in lab_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES}
        only_img = sorted(images[s].name for s in set(images) - set(labels))
        only_lab = sorted(labels[s].name for s in set(labels) - set(images))
        if only_img or only_lab:
            raise DatasetError(
                f"CamVid {split}: {len(only_img)} image(s) without label (e.g. {only_img[:3]}) and "
                f"{len(only_lab)} label(s) without image (e.g. {only_lab[:3]}) in {str(root)!r}"
            )
        super().__init__([(images[n], labels[n]) for n in sorted(images)], f"{img_dir}")

    max_raw_label = 11  # classes 0..10, 11 = void

    def convert_label(self, label: np.ndarray) -> np.ndarray:
        out = label.copy()
        out[out == 11] = 255  # void -> the common ignore value
        return out


class _SyntheticWithClasses(SyntheticScenes):
    classes = CITYSCAPES


def dataset_classes(data_cfg: dict[str, Any]) -> ClassInfo:
    kind = data_cfg.get("dataset", "synthetic")
    if kind == "folder":
        if not data_cfg.get("root"):
            raise DatasetError("data.root must name the folder dataset (the folder holding dataset.yaml)")
        return folder_classes(data_cfg["root"])
    return CAMVID if kind == "camvid" else CITYSCAPES


def check_label_values(dataset, cache_dir: str | Path | None = None, require_all_classes: bool = False) -> None:
    """Read every label map of ``dataset`` once and raise one DatasetError naming each file whose values lie outside
    the classes and the ignore value. With ``require_all_classes`` (the training split of a folder dataset), every
    declared class must also occur somewhere; labels whose only values are 0 and the ignore value get the
    ``label_map`` fix in the message (binary masks saved as 0/255). A passed check is remembered (per hash of the
    label file list and of the dataset's value mapping), so an unchanged dataset is scanned only once."""
    if not hasattr(dataset, "label") or not getattr(dataset, "pairs", None):
        return
    info = dataset.classes
    key = file_list_key(dataset, info.num_classes, info.ignore_index)
    marker = Path(cache_dir or default_cache_dir()) / "label-checks" / f"{key}{'-classes' if require_all_classes else ''}.ok"
    if marker.is_file():
        return
    problems, raw_values = [], set()
    counts = np.zeros(info.num_classes, dtype=np.int64)
    scan = getattr(dataset, "scan_label", None)
    for i in progress_range(len(dataset), "checking label maps"):
        try:
            if scan is not None:
                values, label = scan(i)
                raw_values.update(int(v) for v in values)
            else:
                label = dataset.label(i)
        except DatasetError as exc:
            problems.append(str(exc))
            continue
        if require_all_classes:
            flat = np.asarray(label).reshape(-1)
            counts += np.bincount(flat[flat < info.num_classes].astype(np.int64), minlength=info.num_classes)[: info.num_classes]
    if problems:
        shown = "\n  ".join(problems[:10])
        more = f"\n  ... and {len(problems) - 10} more" if len(problems) > 10 else ""
        raise DatasetError(f"{len(problems)} of {len(dataset)} label map(s) cannot be used:\n  {shown}{more}")
    if require_all_classes and (counts == 0).any():
        raise DatasetError(_missing_classes_message(dataset, counts, sorted(raw_values)))
    try:
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(f"{len(dataset)} label maps checked\n")
    except OSError:
        pass  # an unwritable cache only costs a rescan next time


def _missing_classes_message(dataset, counts: np.ndarray, raw_values: list[int]) -> str:
    info = dataset.classes
    spec_path = getattr(dataset, "spec", {}).get("_path", "dataset.yaml")
    where = f"the {len(dataset)} training label map(s) of {str(getattr(dataset, 'root', ''))!r}"
    missing = [f"{info.names[c]!r} (value {c})" for c in np.flatnonzero(counts == 0)]
    raw_ignore = info.ignore_index
    if raw_values and set(raw_values) <= {0, raw_ignore}:
        return (
            f"{where} hold only the values {raw_values}: 0 and the ignore value {raw_ignore}, so every non-zero pixel is "
            f"ignored and class(es) {', '.join(missing)} never occur (binary masks saved as 0/{raw_ignore}?). If {raw_ignore} "
            f"marks a class, map it in {spec_path}, e.g. 'label_map: {{0: 0, {raw_ignore}: {info.num_classes - 1}}}'"
            + (" (and set ignore_index to a value the masks do not use)" if raw_ignore != 255 else "")
        )
    return (
        f"class(es) {', '.join(missing)} of {spec_path} never occur in {where}; values found: {raw_values}. Fix the labels, "
        f"remove the class from 'classes', or map the raw values to classes with 'label_map' (or 'reduce_zero_label')"
    )


def build_dataset(data_cfg: dict[str, Any], split: str):
    """The dataset a config's ``data`` section names, for ``split`` (``train`` or ``val``), with its label values
    checked once (``data.check_labels``)."""
    dataset = _build_dataset(data_cfg, split)
    if data_cfg.get("check_labels", True):
        check_label_values(dataset, require_all_classes=split == "train" and isinstance(dataset, FolderDataset))
    return dataset


def _build_dataset(data_cfg: dict[str, Any], split: str):
    kind = data_cfg.get("dataset", "synthetic")
    split_name = data_cfg.get(f"{split}_split", split)
    if kind == "synthetic":
        n = data_cfg.get(f"{split}_samples", 200)
        return _SyntheticWithClasses(n, tuple(data_cfg.get("image_size") or (256, 512)), split=split, seed=data_cfg.get("seed", 0))
    root = data_cfg.get("root")
    if not root:
        raise DatasetError(f"data.root must name the {kind} folder (e.g. data.root=/data/{kind})")
    if kind == "cityscapes":
        # coarse labels are for training only: validation is always on the fine annotations
        return CityscapesDataset(root, split_name, annotations=data_cfg.get("annotations", "fine") if split == "train" else "fine")
    if kind == "camvid":
        return CamVidDataset(root, split_name)
    if kind == "folder":
        return FolderDataset(root, split_name)
    raise DatasetError(f"unknown dataset {kind!r}; expected synthetic, cityscapes, camvid or folder")
