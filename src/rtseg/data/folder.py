"""Custom datasets from a folder: images + label maps + a small ``dataset.yaml`` naming the classes.

Layout (the paths are configurable in the YAML)::

    ROOT/dataset.yaml
    ROOT/images/train/*.jpg     ROOT/labels/train/*.png
    ROOT/images/val/*.jpg       ROOT/labels/val/*.png

``dataset.yaml``::

    classes: [background, road, car]       # label value i is classes[i]
    ignore_index: 255                       # label value that is not scored (default 255)
    # optional: colour-coded (RGB) label maps, one colour per class; other colours are an error
    colors: {background: [0, 0, 0], road: [128, 64, 128], car: [0, 0, 142]}
    ignore_color: [255, 255, 255]           # optional: the colour of ignored pixels
    label_suffix: "_mask"                   # optional: image a.jpg pairs with label a_mask.png
    splits: {train: {images: images/train, labels: labels/train}}   # optional, default as above

Images and labels pair by file stem. Loading checks, naming the files: images without labels and labels
without images, unreadable files, image / label size mismatch (from the file headers, before any
training), and, when an item is read, label values that are neither a class nor the ignore value.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from rtseg.config import yaml_load
from rtseg.data.datasets import IMAGE_SUFFIXES, DatasetError, _PairedFolder, read_image, read_label
from rtseg.data.image_io import displayed_size  # rel14
from rtseg.data.labels import IGNORE_INDEX, ClassInfo, spread_palette

__all__ = ["FolderDataset", "read_folder_spec", "folder_classes"]

SPEC_NAME = "dataset.yaml"


def read_folder_spec(root: str | Path) -> dict[str, Any]:
    root = Path(root)
    path = root / SPEC_NAME
    if not path.is_file():
        raise DatasetError(f"folder dataset {str(root)!r} has no {SPEC_NAME} (it names the classes: 'classes: [a, b, ...]')")
    try:
        spec = yaml_load(path.read_text()) or {}
    except Exception as exc:  # a YAML syntax error, reported with the file
        raise DatasetError(f"{str(path)!r} is not valid YAML: {exc}") from exc
    classes = spec.get("classes")
    if not isinstance(classes, list) or not classes or not all(isinstance(c, str) for c in classes):
        raise DatasetError(f"{str(path)!r}: 'classes' must be a non-empty list of class names, got {classes!r}")
    allowed = {"classes", "ignore_index", "colors", "ignore_color", "label_suffix", "splits", "palette"}
    unknown = sorted(set(spec) - allowed)
    if unknown:
        raise DatasetError(f"{str(path)!r}: unknown key(s) {unknown}; allowed: {sorted(allowed)}")
    colors = spec.get("colors")
    if colors is not None:
        missing = [c for c in classes if c not in colors]
        extra = [c for c in colors if c not in classes]
        if missing or extra:
            raise DatasetError(f"{str(path)!r}: 'colors' must give one [r, g, b] per class; missing {missing}, not a class {extra}")
    spec["_path"] = str(path)
    return spec


def folder_classes(root: str | Path) -> ClassInfo:
    spec = read_folder_spec(root)
    names = tuple(spec["classes"])
    palette = spec.get("palette") or ([tuple(spec["colors"][n]) for n in names] if spec.get("colors") else None)
    if not palette:  # evenly spread colours for display
        palette = spread_palette(len(names))
    return ClassInfo(names, tuple(tuple(int(v) for v in c) for c in palette), int(spec.get("ignore_index", IGNORE_INDEX)))


def _header_size(path: Path) -> tuple[int, int]:
    try:
        with Image.open(path) as im:
            return im.size
    except (UnidentifiedImageError, OSError) as exc:
        raise DatasetError(f"{str(path)!r} is not a readable image: {exc}") from exc


class FolderDataset(_PairedFolder):
    """Items are ``(H x W x 3 uint8 image, H x W uint8 label)``, labels in ``0..len(classes)-1`` or the ignore value."""

    def __init__(self, root: str | Path, split: str = "train"):
        self.root = Path(root)
        spec = read_folder_spec(self.root)
        self.spec = spec
        self.classes = folder_classes(self.root)
        self.ignore_index = self.classes.ignore_index
        split_spec = (spec.get("splits") or {}).get(split) or {"images": f"images/{split}", "labels": f"labels/{split}"}
        img_dir, lab_dir = self.root / split_spec["images"], self.root / split_spec["labels"]
        for kind, d in (("images", img_dir), ("labels", lab_dir)):
            if not d.is_dir():
                raise DatasetError(f"folder dataset {str(self.root)!r}, split {split!r}: the {kind} folder {str(d)!r} does not exist (see {spec['_path']})")
        suffix = spec.get("label_suffix") or ""
        images = {p.stem: p for p in sorted(img_dir.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES}
        labels = {}
        for p in sorted(lab_dir.iterdir()):
            if p.suffix.lower() in IMAGE_SUFFIXES and p.stem.endswith(suffix):
                labels[p.stem[: len(p.stem) - len(suffix)] if suffix else p.stem] = p
        only_img = [str(images[k]) for k in sorted(set(images) - set(labels))]
        only_lab = [str(labels[k]) for k in sorted(set(labels) - set(images))]
        if only_img or only_lab:
            raise DatasetError(
                f"folder dataset {str(self.root)!r}, split {split!r}: {len(only_img)} image(s) without a label {only_img[:5]} and "
                f"{len(only_lab)} label(s) without an image {only_lab[:5]} (labels pair with images by name"
                + (f" + {suffix!r}" if suffix else "") + ")"
            )
        if not images:
            raise DatasetError(f"folder dataset {str(self.root)!r}, split {split!r}: no images in {str(img_dir)!r}")
        self.pairs = [(images[k], labels[k]) for k in sorted(images)]
        bad = []
        for img, lab in self.pairs:
            a, b = displayed_size(img), _header_size(lab)  # rel14: images are read upright (EXIF), labels as stored
            if a != b:
                bad.append(f"{str(img)!r} is {a[0]}x{a[1]} but {str(lab)!r} is {b[0]}x{b[1]}")
        if bad:
            raise DatasetError(f"image / label size mismatch in {len(bad)} pair(s): " + "; ".join(bad[:5]))
        self._color_lut = self._build_color_lut() if spec.get("colors") else None

    def _build_color_lut(self) -> dict[int, int]:
        lut = {}
        for i, name in enumerate(self.spec["classes"]):
            r, g, b = (int(v) for v in self.spec["colors"][name])
            lut[(r << 16) | (g << 8) | b] = i
        if self.spec.get("ignore_color") is not None:
            r, g, b = (int(v) for v in self.spec["ignore_color"])
            lut[(r << 16) | (g << 8) | b] = self.ignore_index
        return lut

    def _read_label(self, path: Path) -> np.ndarray:
        if self._color_lut is None:
            label = read_label(path)
        else:
            rgb = read_image(path).astype(np.int64)
            codes = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
            uniq, inverse = np.unique(codes, return_inverse=True)
            unknown = [c for c in uniq.tolist() if c not in self._color_lut]
            if unknown:
                shown = [((c >> 16) & 255, (c >> 8) & 255, c & 255) for c in unknown[:5]]
                raise DatasetError(f"colour-coded label {str(path)!r} has colour(s) {shown} that are not in 'colors' (or 'ignore_color') of {self.spec['_path']}")
            label = np.array([self._color_lut[c] for c in uniq.tolist()], dtype=np.uint8)[inverse.reshape(codes.shape)]
        n = self.classes.num_classes
        values = np.unique(label)
        bad = [int(v) for v in values if v >= n and v != self.ignore_index]
        if bad:
            raise DatasetError(f"label map {str(path)!r} has value(s) {bad[:10]} outside the {n} classes (0..{n - 1}) and the ignore value {self.ignore_index} of {self.spec['_path']}")
        if self.ignore_index != IGNORE_INDEX:  # the trainer and metrics ignore 255
            label = np.where(label == self.ignore_index, IGNORE_INDEX, label).astype(np.uint8)
        return label

    def label(self, index: int) -> np.ndarray:
        """The checked label map of item ``index`` (values outside the classes and the ignore value raise, naming the file)."""
        return self._read_label(self.pairs[index][1])
