"""Class definitions: Cityscapes labels (labelId -> trainId, colours, categories) and CamVid's 11 classes."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "Label",
    "CITYSCAPES_LABELS",
    "CITYSCAPES_CLASSES",
    "CITYSCAPES_PALETTE",
    "CITYSCAPES_CATEGORIES",
    "CAMVID_CLASSES",
    "CAMVID_PALETTE",
    "IGNORE_INDEX",
    "label_ids_to_train_ids",
    "train_ids_to_label_ids",
    "colorize",
    "ClassInfo",
    "spread_palette",
    "CITYSCAPES",
    "CAMVID",
]

IGNORE_INDEX = 255


@dataclass(frozen=True)
class Label:
    name: str
    id: int
    train_id: int
    category: str
    color: tuple[int, int, int]


# The official Cityscapes label table (cityscapesScripts, labels.py): id, trainId, category, colour.
CITYSCAPES_LABELS: tuple[Label, ...] = (
    Label("unlabeled", 0, 255, "void", (0, 0, 0)),
    Label("ego vehicle", 1, 255, "void", (0, 0, 0)),
    Label("rectification border", 2, 255, "void", (0, 0, 0)),
    Label("out of roi", 3, 255, "void", (0, 0, 0)),
    Label("static", 4, 255, "void", (0, 0, 0)),
    Label("dynamic", 5, 255, "void", (111, 74, 0)),
    Label("ground", 6, 255, "void", (81, 0, 81)),
    Label("road", 7, 0, "flat", (128, 64, 128)),
    Label("sidewalk", 8, 1, "flat", (244, 35, 232)),
    Label("parking", 9, 255, "flat", (250, 170, 160)),
    Label("rail track", 10, 255, "flat", (230, 150, 140)),
    Label("building", 11, 2, "construction", (70, 70, 70)),
    Label("wall", 12, 3, "construction", (102, 102, 156)),
    Label("fence", 13, 4, "construction", (190, 153, 153)),
    Label("guard rail", 14, 255, "construction", (180, 165, 180)),
    Label("bridge", 15, 255, "construction", (150, 100, 100)),
    Label("tunnel", 16, 255, "construction", (150, 120, 90)),
    Label("pole", 17, 5, "object", (153, 153, 153)),
    Label("polegroup", 18, 255, "object", (153, 153, 153)),
    Label("traffic light", 19, 6, "object", (250, 170, 30)),
    Label("traffic sign", 20, 7, "object", (220, 220, 0)),
    Label("vegetation", 21, 8, "nature", (107, 142, 35)),
    Label("terrain", 22, 9, "nature", (152, 251, 152)),
    Label("sky", 23, 10, "sky", (70, 130, 180)),
    Label("person", 24, 11, "human", (220, 20, 60)),
    Label("rider", 25, 12, "human", (255, 0, 0)),
    Label("car", 26, 13, "vehicle", (0, 0, 142)),
    Label("truck", 27, 14, "vehicle", (0, 0, 70)),
    Label("bus", 28, 15, "vehicle", (0, 60, 100)),
    Label("caravan", 29, 255, "vehicle", (0, 0, 90)),
    Label("trailer", 30, 255, "vehicle", (0, 0, 110)),
    Label("train", 31, 16, "vehicle", (0, 80, 100)),
    Label("motorcycle", 32, 17, "vehicle", (0, 0, 230)),
    Label("bicycle", 33, 18, "vehicle", (119, 11, 32)),
)

_TRAIN = sorted((lab for lab in CITYSCAPES_LABELS if lab.train_id != 255), key=lambda lab: lab.train_id)
CITYSCAPES_CLASSES: tuple[str, ...] = tuple(lab.name for lab in _TRAIN)
CITYSCAPES_PALETTE: tuple[tuple[int, int, int], ...] = tuple(lab.color for lab in _TRAIN)
# The 7 categories of the official evaluation, each listing its trainIds.
CITYSCAPES_CATEGORIES: dict[str, tuple[int, ...]] = {}
for _lab in _TRAIN:
    CITYSCAPES_CATEGORIES.setdefault(_lab.category, tuple())
    CITYSCAPES_CATEGORIES[_lab.category] += (_lab.train_id,)

_ID_TO_TRAIN = np.full(256, IGNORE_INDEX, dtype=np.uint8)
for _lab in CITYSCAPES_LABELS:
    _ID_TO_TRAIN[_lab.id] = _lab.train_id
_TRAIN_TO_ID = np.zeros(256, dtype=np.uint8)
for _lab in _TRAIN:
    _TRAIN_TO_ID[_lab.train_id] = _lab.id


def label_ids_to_train_ids(label_ids: np.ndarray) -> np.ndarray:
    """Map Cityscapes labelIds (0..33; anything else is void) to the 19 trainIds, 255 for ignored."""
    arr = np.asarray(label_ids)
    if arr.dtype != np.uint8:
        arr = np.where((arr >= 0) & (arr < 256), arr, 0).astype(np.uint8)
    return _ID_TO_TRAIN[arr]


def train_ids_to_label_ids(train_ids: np.ndarray) -> np.ndarray:
    """Map trainIds 0..18 back to labelIds (for the official evaluation server); others become 0 (unlabeled)."""
    arr = np.asarray(train_ids).astype(np.int64)
    return np.where((arr >= 0) & (arr < 256), _TRAIN_TO_ID[np.clip(arr, 0, 255)], 0).astype(np.uint8)


CAMVID_CLASSES: tuple[str, ...] = (
    "sky", "building", "pole", "road", "pavement", "tree", "sign-symbol", "fence", "car", "pedestrian", "bicyclist",
)
CAMVID_PALETTE: tuple[tuple[int, int, int], ...] = (
    (128, 128, 128), (128, 0, 0), (192, 192, 128), (128, 64, 128), (60, 40, 222), (128, 128, 0),
    (192, 128, 128), (64, 64, 128), (64, 0, 128), (64, 64, 0), (0, 128, 192),
)


@dataclass(frozen=True)
class ClassInfo:
    """Names and colours of a dataset's classes, and the label value that is ignored."""

    names: tuple[str, ...]
    palette: tuple[tuple[int, int, int], ...]
    ignore_index: int = IGNORE_INDEX

    def __post_init__(self):
        if len(self.palette) != len(self.names):
            raise ValueError(f"{len(self.names)} class names but {len(self.palette)} palette colours")
        empty = [i for i, n in enumerate(self.names) if not isinstance(n, str) or not n.strip()]
        if empty:
            raise ValueError(f"class names must be non-empty text; class {empty[0]} is {self.names[empty[0]]!r}")
        # names are matched ignoring case (class maps, fine-tuning, distillation): two that differ only in case collide
        seen: dict[str, str] = {}
        for n in self.names:
            if n.lower() in seen:
                raise ValueError(f"class names must be unique (ignoring case): {seen[n.lower()]!r} and {n!r} both appear")
            seen[n.lower()] = n
        bad = [c for c in self.palette if len(c) != 3 or not all(isinstance(v, int) and 0 <= v <= 255 for v in c)]
        if bad:
            raise ValueError(f"palette colours must be [r, g, b] with values 0..255, got {list(bad[0])}")
        if isinstance(self.ignore_index, bool) or not isinstance(self.ignore_index, int) or self.ignore_index < 0:
            raise ValueError(f"ignore_index must be an integer >= 0, got {self.ignore_index!r}")
        if self.ignore_index < len(self.names):
            raise ValueError(f"ignore_index {self.ignore_index} is the label value of class {self.names[self.ignore_index]!r} "
                             f"(values 0..{len(self.names) - 1} are the classes): choose a value outside them, e.g. 255")

    @property
    def num_classes(self) -> int:
        return len(self.names)

    def to_dict(self) -> dict:
        return {"names": list(self.names), "palette": [list(c) for c in self.palette], "ignore_index": self.ignore_index}

    @classmethod
    def from_dict(cls, data: dict) -> "ClassInfo":
        names, palette = data["names"], data["palette"]
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ValueError(f"classes.names must be a list of class names, got {names!r:.200}")
        if not isinstance(palette, list) or not all(isinstance(c, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in c)
                                                    for c in palette):
            raise ValueError(f"classes.palette must be a list of [r, g, b] colours, got {palette!r:.200}")
        ignore = data.get("ignore_index", IGNORE_INDEX)
        return cls(tuple(names), tuple(tuple(c) for c in palette), ignore)

    @classmethod
    def unnamed(cls, num_classes: int) -> "ClassInfo":
        """Placeholder names ``class 0`` ... and evenly spread colours, for outputs nothing has named yet."""
        return cls(tuple(f"class {i}" for i in range(num_classes)), spread_palette(num_classes))


def spread_palette(n: int) -> tuple[tuple[int, int, int], ...]:
    """``n`` distinct display colours (a fixed random draw, the same on every call)."""
    rng = np.random.default_rng(0)
    return tuple(tuple(int(v) for v in rng.integers(0, 256, 3)) for _ in range(n))


CITYSCAPES = ClassInfo(CITYSCAPES_CLASSES, CITYSCAPES_PALETTE)
CAMVID = ClassInfo(CAMVID_CLASSES, CAMVID_PALETTE, ignore_index=11)


def colorize(label_map: np.ndarray, palette=CITYSCAPES_PALETTE, ignore_color=(0, 0, 0)) -> np.ndarray:
    """An ``H x W x 3`` uint8 image painting each class with its palette colour (others: ``ignore_color``)."""
    lut = np.tile(np.array(ignore_color, dtype=np.uint8), (256, 1))
    lut[: len(palette)] = np.array(palette, dtype=np.uint8)
    arr = np.asarray(label_map)
    return lut[np.clip(arr, 0, 255).astype(np.uint8)]
