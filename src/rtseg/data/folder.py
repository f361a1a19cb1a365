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
    # optional, for label maps whose values are not 0..len(classes)-1 (not with 'colors'):
    label_map: {0: background, 255: object}   # raw value -> class (name or index, or the ignore value)
    reduce_zero_label: true                   # raw 0 -> ignored, raw v -> class v - 1 (mmsegmentation's switch)

With ``label_map``, a raw value that is not listed is an error naming the file and the values (a silent
ignore would hide a wrong map); the raw ignore value stays ignored unless the map lists it. To ignore another
raw value, map it to the ignore value. ``reduce_zero_label`` and ``label_map`` exclude each other.

Images and labels pair by file stem. Loading checks, naming the files: images without labels and labels
without images, unreadable files, image / label size mismatch (from the file headers, before any
training), and, when an item is read, label values that are neither a class nor the ignore value. The training
split's labels are scanned once (rtseg.data.datasets.check_label_values): every declared class must occur, and
labels holding only 0 and the ignore value (binary masks saved as 0/255 while 255 is the ignore value) are
refused with the fix.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from rtseg.config import yaml_load
from rtseg.data.paired import IMAGE_SUFFIXES, DatasetError, PairedFolder, read_image, read_label
from rtseg.data.image_io import displayed_size
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
    if not isinstance(spec, dict):
        raise DatasetError(f"{str(path)!r} must be a mapping ('classes: [a, b, ...]', ...), got {type(spec).__name__}")
    classes = spec.get("classes")
    if not isinstance(classes, list) or not classes or not all(isinstance(c, str) for c in classes):
        raise DatasetError(f"{str(path)!r}: 'classes' must be a non-empty list of class names, got {classes!r}")
    allowed = {"classes", "ignore_index", "colors", "ignore_color", "label_suffix", "splits", "palette", "label_map", "reduce_zero_label"}
    unknown = sorted(set(spec) - allowed)
    if unknown:
        raise DatasetError(f"{str(path)!r}: unknown key(s) {unknown}; allowed: {sorted(allowed)}")
    colors = spec.get("colors")
    if colors is not None:
        if not isinstance(colors, dict):
            raise DatasetError(f"{str(path)!r}: 'colors' must map each class to [r, g, b], got {colors!r:.200}")
        missing = [c for c in classes if c not in colors]
        extra = [c for c in colors if c not in classes]
        if missing or extra:
            raise DatasetError(f"{str(path)!r}: 'colors' must give one [r, g, b] per class; missing {missing}, not a class {extra}")
    spec["_classes"] = _spec_classes(spec, path)
    ignore_color = spec.get("ignore_color")
    if ignore_color is not None and not (isinstance(ignore_color, list) and len(ignore_color) == 3
                                         and all(isinstance(v, int) and 0 <= v <= 255 for v in ignore_color)):
        raise DatasetError(f"{str(path)!r}: 'ignore_color' must be [r, g, b] with values 0..255, got {ignore_color!r}")
    if spec.get("label_map") is not None:
        if colors is not None or spec.get("reduce_zero_label"):
            raise DatasetError(f"{str(path)!r}: 'label_map' cannot be combined with {'colors' if colors is not None else 'reduce_zero_label'}; use one way of mapping label values")
        spec["label_map"] = _checked_label_map(spec["label_map"], classes, spec["_classes"].ignore_index, path)
    rzl = spec.get("reduce_zero_label", False)
    if not isinstance(rzl, bool):
        raise DatasetError(f"{str(path)!r}: 'reduce_zero_label' must be true or false, got {rzl!r}")
    if rzl and colors is not None:
        raise DatasetError(f"{str(path)!r}: 'reduce_zero_label' applies to value-coded label maps, not to 'colors'")
    spec["_path"] = str(path)
    return spec


def _checked_label_map(mapping: Any, classes: list[str], ignore_index: int, path: Path) -> dict[int, int]:
    """``label_map`` as {raw value: class index or the ignore value}; names are looked up in ``classes``."""
    if not isinstance(mapping, dict) or not mapping:
        raise DatasetError(f"{str(path)!r}: 'label_map' must map raw label values to classes, e.g. {{0: {classes[0]}, 255: {classes[-1]}}}, got {mapping!r}")
    out = {}
    for raw, target in mapping.items():
        if isinstance(raw, bool) or not isinstance(raw, int) or not 0 <= raw <= 65535:
            raise DatasetError(f"{str(path)!r}: label_map key {raw!r} is not a label value (an integer 0..65535)")
        if isinstance(target, str):
            if target not in classes:
                raise DatasetError(f"{str(path)!r}: label_map {raw}: {target!r} is not one of the classes {classes}")
            target = classes.index(target)
        if isinstance(target, bool) or not isinstance(target, int) or not (0 <= target < len(classes) or target == ignore_index):
            raise DatasetError(f"{str(path)!r}: label_map {raw}: {target!r} must be a class name, a class index 0..{len(classes) - 1} or the ignore value {ignore_index}")
        out[raw] = target
    return out


def folder_classes(root: str | Path) -> ClassInfo:
    return read_folder_spec(root)["_classes"]


def _spec_classes(spec: dict[str, Any], path: Path) -> ClassInfo:
    """The classes a dataset.yaml declares, checked: unique names, an ignore value that is no class, colours 0..255."""
    names = tuple(spec["classes"])
    ignore = spec.get("ignore_index", IGNORE_INDEX)
    if isinstance(ignore, bool) or not isinstance(ignore, int) or not 0 <= ignore <= 65535:
        raise DatasetError(f"{str(path)!r}: 'ignore_index' must be a label value (an integer 0..65535), got {ignore!r}")
    palette = spec.get("palette") or ([spec["colors"][n] for n in names] if spec.get("colors") else None)
    if palette is not None and (not isinstance(palette, list) or not all(isinstance(c, (list, tuple)) for c in palette)):
        raise DatasetError(f"{str(path)!r}: the colours must be [r, g, b] lists, got {palette!r:.200}")
    if not palette:  # evenly spread colours for display
        palette = spread_palette(len(names))
    try:
        return ClassInfo(names, tuple(tuple(c) for c in palette), ignore)
    except ValueError as exc:
        raise DatasetError(f"{str(path)!r}: {exc}") from None


def _header_size(path: Path) -> tuple[int, int]:
    try:
        with Image.open(path) as im:
            return im.size
    except (UnidentifiedImageError, OSError) as exc:
        raise DatasetError(f"{str(path)!r} is not a readable image: {exc}") from exc


class FolderDataset(PairedFolder):
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
        self._value_lut = self._build_value_lut()

    @property
    def label_mapping_key(self) -> str:
        """How raw values become classes, for the cache keys of facts computed over the labels."""
        return repr((self.spec.get("label_map"), bool(self.spec.get("reduce_zero_label")), self.spec.get("colors")))

    def _build_value_lut(self) -> np.ndarray | None:
        """raw value -> class for ``label_map`` / ``reduce_zero_label``; -1 marks values the map does not list."""
        mapping, ignore = self.spec.get("label_map"), self.ignore_index
        if mapping is not None:
            lut = np.full(max(65536, ignore + 1), -1, dtype=np.int32)
            lut[ignore] = ignore  # the raw ignore value stays ignored unless the map says otherwise
            for raw, target in mapping.items():
                lut[raw] = target
            return lut
        if self.spec.get("reduce_zero_label"):
            lut = np.arange(-1, max(65536, ignore + 1) - 1, dtype=np.int32)
            lut[0] = ignore
            lut[ignore] = ignore
            return lut
        return None

    def _apply_value_lut(self, raw: np.ndarray, path: Path) -> np.ndarray:
        lut = self._value_lut
        values = np.unique(raw)
        unknown = [int(v) for v in values if v < 0 or v >= lut.size or lut[v] < 0]
        if unknown:
            listed = f"'label_map' of {self.spec['_path']} does not list (it lists {sorted(self.spec['label_map'])})" if self.spec.get("label_map") else f"{self.spec['_path']} cannot map"
            raise DatasetError(f"label map {str(path)!r} has value(s) {unknown[:10]} that {listed}; map each raw value to a class or to the ignore value {self.ignore_index}")
        return lut[raw.astype(np.int64)].astype(np.uint8 if max(self.classes.num_classes, self.ignore_index + 1) <= 256 else np.int32)

    def _build_color_lut(self) -> dict[int, int]:
        lut = {}
        for i, name in enumerate(self.spec["classes"]):
            r, g, b = (int(v) for v in self.spec["colors"][name])
            lut[(r << 16) | (g << 8) | b] = i
        if self.spec.get("ignore_color") is not None:
            r, g, b = (int(v) for v in self.spec["ignore_color"])
            lut[(r << 16) | (g << 8) | b] = self.ignore_index
        return lut

    def scan_label(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """The distinct values stored in item ``index``'s label file (colour-coded labels: the classes of its
        colours) and its checked label map, reading the file once."""
        path = self.pairs[index][1]
        if self._color_lut is not None:
            label = self._read_label(path)
            return np.unique(label), label
        raw = read_label(path)
        return np.unique(raw), self._read_label(path, raw)

    def _read_label(self, path: Path, raw: np.ndarray | None = None) -> np.ndarray:
        if raw is not None:
            label = raw
        elif self._color_lut is None:
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
        if self._value_lut is not None:
            label = self._apply_value_lut(label, path)
        n = self.classes.num_classes
        values = np.unique(label)
        bad = [int(v) for v in values if v >= n and v != self.ignore_index]
        if bad:
            raise DatasetError(f"label map {str(path)!r} has value(s) {bad[:10]} outside the {n} classes (0..{n - 1}) and the ignore value {self.ignore_index} of {self.spec['_path']}"
                               + (" (after reduce_zero_label: raw value v is class v - 1)" if self.spec.get("reduce_zero_label") else ""))
        if self.ignore_index != IGNORE_INDEX:  # the trainer and metrics ignore 255
            label = np.where(label == self.ignore_index, IGNORE_INDEX, label).astype(np.uint8)
        return label

    def label(self, index: int) -> np.ndarray:
        """The checked label map of item ``index`` (values outside the classes and the ignore value raise, naming the file)."""
        return self._read_label(self.pairs[index][1])
