"""Datasets: each item is an ``H x W x 3`` uint8 RGB image and an ``H x W`` uint8 label map of train ids."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from rtseg.data.labels import CAMVID, CITYSCAPES, ClassInfo, label_ids_to_train_ids
from rtseg.data.synthetic import SyntheticScenes
from rtseg.errors import UserError

__all__ = ["DatasetError", "read_image", "read_label", "CityscapesDataset", "CamVidDataset", "build_dataset", "dataset_classes"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


class DatasetError(UserError, ValueError):
    """A dataset folder or file that cannot be used as it is."""


def read_image(path: str | Path) -> np.ndarray:
    """An image file as ``H x W x 3`` uint8 RGB; an unreadable file raises naming it."""
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise DatasetError(f"{str(path)!r} is not a readable image: {exc}") from exc


def read_label(path: str | Path) -> np.ndarray:
    """A label map file as ``H x W`` uint8 (palette indices for mode P images)."""
    try:
        with Image.open(path) as im:
            if im.mode not in ("L", "P", "I", "I;16"):
                raise DatasetError(f"label map {str(path)!r} has image mode {im.mode}; expected a single-channel (L or P) PNG")
            arr = np.asarray(im)
    except (UnidentifiedImageError, OSError) as exc:
        raise DatasetError(f"{str(path)!r} is not a readable label map: {exc}") from exc
    return arr.astype(np.uint8) if arr.max(initial=0) < 256 else arr


class _PairedFolder:
    classes: ClassInfo

    def __init__(self, pairs: list[tuple[Path, Path]], description: str):
        if not pairs:
            raise DatasetError(f"no image / label pairs found in {description}")
        self.pairs = pairs

    def __len__(self) -> int:
        return len(self.pairs)

    def name(self, index: int) -> str:
        return self.pairs[index][0].stem

    # largest raw label value the files may hold (None: every value has a meaning, e.g. Cityscapes labelIds)
    max_raw_label: int | None = None

    def convert_label(self, label: np.ndarray) -> np.ndarray:
        return label

    def label(self, index: int) -> np.ndarray:
        """The label map of item ``index``, checked: raw values above ``max_raw_label`` raise naming the file."""
        path = self.pairs[index][1]
        raw = read_label(path)
        if self.max_raw_label is not None and raw.size and int(raw.max()) > self.max_raw_label:
            bad = [int(v) for v in np.unique(raw) if v > self.max_raw_label]
            raise DatasetError(f"label map {str(path)!r} has value(s) {bad[:10]} outside the classes and the ignore value (0..{self.max_raw_label})")
        return self.convert_label(raw)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        img_path, lab_path = self.pairs[index]
        image = read_image(img_path)
        label = self.label(index)
        if image.shape[:2] != label.shape:
            raise DatasetError(f"image {str(img_path)!r} is {image.shape[1]}x{image.shape[0]} but its label {str(lab_path)!r} is {label.shape[1]}x{label.shape[0]}")
        return image, label


class CityscapesDataset(_PairedFolder):
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


class CamVidDataset(_PairedFolder):
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
        from rtseg.data.folder import folder_classes

        if not data_cfg.get("root"):
            raise DatasetError("data.root must name the folder dataset (the folder holding dataset.yaml)")
        return folder_classes(data_cfg["root"])
    return CAMVID if kind == "camvid" else CITYSCAPES


def check_label_values(dataset, cache_dir: str | Path | None = None) -> None:
    """Read every label map of ``dataset`` once and raise one DatasetError naming each file whose values lie outside
    the classes and the ignore value. A passed check is remembered (per hash of the label file list), so
    an unchanged dataset is scanned only once."""
    from rtseg.data.cache import default_cache_dir, file_list_key

    if not hasattr(dataset, "label") or not getattr(dataset, "pairs", None):
        return
    info = dataset.classes
    key = file_list_key(dataset, info.num_classes, info.ignore_index)
    marker = Path(cache_dir or default_cache_dir()) / "label-checks" / f"{key}.ok"
    if marker.is_file():
        return
    problems = []
    for i in range(len(dataset)):
        try:
            dataset.label(i)
        except DatasetError as exc:
            problems.append(str(exc))
    if problems:
        shown = "\n  ".join(problems[:10])
        more = f"\n  ... and {len(problems) - 10} more" if len(problems) > 10 else ""
        raise DatasetError(f"{len(problems)} of {len(dataset)} label map(s) cannot be used:\n  {shown}{more}")
    try:
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(f"{len(dataset)} label maps checked\n")
    except OSError:
        pass  # an unwritable cache only costs a rescan next time


def build_dataset(data_cfg: dict[str, Any], split: str):
    """The dataset a config's ``data`` section names, for ``split`` (``train`` or ``val``), with its label values
    checked once (``data.check_labels``)."""
    dataset = _build_dataset(data_cfg, split)
    if data_cfg.get("check_labels", True):
        check_label_values(dataset)
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
        from rtseg.data.folder import FolderDataset

        return FolderDataset(root, split_name)
    raise DatasetError(f"unknown dataset {kind!r}; expected synthetic, cityscapes, camvid or folder")
