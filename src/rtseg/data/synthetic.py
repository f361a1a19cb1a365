"""Procedurally drawn street scenes with pixel-exact labels (Cityscapes trainIds); needs no download.

Each scene has a horizon, sky, a row of buildings, a road in perspective with lane markings,
sidewalks, trees, poles with signs, cars and people scaled by their distance. Colours are drawn
from overlapping ranges (grey cars on a grey road, grey buildings, green cars, ...), lighting and
noise vary per scene, so a network has to use shape, position and context, not colour alone.
A scene is a pure function of ``(seed, split, index, size)``.
"""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from rtseg.errors import OptionError

__all__ = ["SYNTHETIC_CLASSES", "draw_scene", "SyntheticScenes"]

# trainIds used by the scenes (a subset of the 19 Cityscapes classes)
ROAD, SIDEWALK, BUILDING, POLE, SIGN, VEGETATION, TERRAIN, SKY, PERSON, CAR = 0, 1, 2, 5, 7, 8, 9, 10, 11, 13
SYNTHETIC_CLASSES = {
    "road": ROAD, "sidewalk": SIDEWALK, "building": BUILDING, "pole": POLE, "traffic sign": SIGN,
    "vegetation": VEGETATION, "terrain": TERRAIN, "sky": SKY, "person": PERSON, "car": CAR,
}
_SPLIT_IDS = {"train": 0, "val": 1, "test": 2}


class _Canvas:
    """Draws every shape into the image and, with its class, into the label map."""

    def __init__(self, h: int, w: int):
        self.h, self.w = h, w
        self.image = Image.new("RGB", (w, h))
        self.label = Image.new("L", (w, h), 255)
        self._img = ImageDraw.Draw(self.image)
        self._lab = ImageDraw.Draw(self.label)

    def polygon(self, pts, color, cls):
        pts = [tuple(map(float, p)) for p in pts]
        self._img.polygon(pts, fill=tuple(int(c) for c in color))
        if cls is not None:
            self._lab.polygon(pts, fill=cls)

    def rect(self, x0, y0, x1, y1, color, cls):
        self.polygon([(x0, y0), (x1, y0), (x1, y1), (x0, y1)], color, cls)

    def ellipse(self, x0, y0, x1, y1, color, cls):
        box = [float(min(x0, x1)), float(min(y0, y1)), float(max(x0, x1)), float(max(y0, y1))]
        self._img.ellipse(box, fill=tuple(int(c) for c in color))
        if cls is not None:
            self._lab.ellipse(box, fill=cls)


def _jitter(rng, base, amount):
    return np.clip(np.asarray(base, dtype=float) + rng.uniform(-amount, amount, 3), 0, 255)


def _grey(rng, lo, hi, tint=12):
    v = rng.uniform(lo, hi)
    return _jitter(rng, (v, v, v), tint)


def _sky(c: _Canvas, rng, horizon: float):
    overcast = rng.random() < 0.35
    top = _grey(rng, 150, 220, 8) if overcast else _jitter(rng, (70, 130, 200), 35)
    bottom = _grey(rng, 180, 240, 8) if overcast else _jitter(rng, (170, 200, 230), 25)
    steps = 12
    for i in range(steps):
        t = i / (steps - 1)
        y0, y1 = horizon * i / steps, horizon * (i + 1) / steps + 1
        c.rect(0, y0, c.w, y1, top * (1 - t) + bottom * t, SKY)
    for _ in range(rng.integers(0, 4)):  # clouds
        cx, cy = rng.uniform(0, c.w), rng.uniform(0, horizon * 0.6)
        rw, rh = rng.uniform(0.05, 0.15) * c.w, rng.uniform(0.02, 0.06) * c.h
        c.ellipse(cx - rw, cy - rh, cx + rw, cy + rh, _grey(rng, 215, 250, 5), SKY)


def _building_color(rng):
    kind = rng.integers(0, 4)
    if kind == 0:
        return _grey(rng, 70, 170)
    if kind == 1:
        return _jitter(rng, (150, 110, 80), 30)  # brick
    if kind == 2:
        return _jitter(rng, (200, 185, 150), 25)  # sandstone
    return _jitter(rng, (120, 130, 150), 25)  # bluish glass


def _buildings(c: _Canvas, rng, horizon: float, base_y: float):
    x = -rng.uniform(0, 0.1) * c.w
    while x < c.w:
        bw = rng.uniform(0.08, 0.3) * c.w
        top = rng.uniform(0.05, 0.85) * horizon
        color = _building_color(rng)
        c.rect(x, top, x + bw, base_y + 1, color, BUILDING)
        # windows: darker or lighter cells in a grid, still labelled building
        win = color * rng.uniform(0.45, 0.75) if rng.random() < 0.7 else _jitter(rng, (180, 200, 215), 20)
        cell_w, cell_h = rng.uniform(0.02, 0.05) * c.w, rng.uniform(0.03, 0.06) * c.h
        yy = top + cell_h * 0.6
        while yy + cell_h < base_y - cell_h * 0.5:
            xx = x + cell_w * 0.5
            while xx + cell_w < x + bw - cell_w * 0.3:
                c.rect(xx, yy, xx + cell_w * 0.6, yy + cell_h * 0.6, win, BUILDING)
                xx += cell_w
            yy += cell_h
        x += bw + rng.uniform(-0.02, 0.03) * c.w


def _road_edges(c: _Canvas, horizon: float, vx: float, y: float, bottom_half_width: float):
    """Left and right x of the road at height y (linear perspective to the vanishing point)."""
    t = (y - horizon) / max(c.h - horizon, 1)
    return vx - (vx - (c.w / 2 - bottom_half_width)) * t, vx + ((c.w / 2 + bottom_half_width) - vx) * t


def _road(c: _Canvas, rng, horizon: float, vx: float):
    half = rng.uniform(0.35, 0.7) * c.w
    road_color = _grey(rng, 60, 120, 8)
    c.polygon([(vx - 1, horizon), (vx + 1, horizon), (c.w / 2 + half, c.h), (c.w / 2 - half, c.h)], road_color, ROAD)
    # dashed centre line and solid edge lines (part of the road class)
    mark = _jitter(rng, (235, 235, 225), 15) if rng.random() < 0.75 else _jitter(rng, (230, 200, 60), 20)
    n_dash = 10
    for i in range(n_dash):
        if i % 2:
            continue
        y0 = horizon + (c.h - horizon) * (i / n_dash) ** 1.5
        y1 = horizon + (c.h - horizon) * ((i + 1) / n_dash) ** 1.5
        w0 = 0.004 * c.w * (y0 - horizon) / (c.h - horizon) + 0.5
        w1 = 0.004 * c.w * (y1 - horizon) / (c.h - horizon) + 0.5
        x0 = (_road_edges(c, horizon, vx, y0, half)[0] + _road_edges(c, horizon, vx, y0, half)[1]) / 2
        x1 = (_road_edges(c, horizon, vx, y1, half)[0] + _road_edges(c, horizon, vx, y1, half)[1]) / 2
        c.polygon([(x0 - w0, y0), (x0 + w0, y0), (x1 + w1, y1), (x1 - w1, y1)], mark, ROAD)
    return half, road_color


def _sidewalks(c: _Canvas, rng, horizon: float, vx: float, half: float, base_y: float):
    color = _grey(rng, 120, 190, 10) if rng.random() < 0.7 else _jitter(rng, (170, 120, 110), 20)
    extra = rng.uniform(0.15, 0.5) * c.w
    grass = rng.random() < 0.4
    for side in (-1, 1):
        near = c.w / 2 + side * half
        far_edge = near + side * extra
        pts = [(vx, horizon), (vx + side * 2, base_y), (far_edge + side * c.w, base_y), (far_edge, c.h), (near, c.h)]
        c.polygon(pts, color, SIDEWALK)
        if grass:  # a strip of terrain between sidewalk and buildings
            g = _jitter(rng, (120, 160, 80), 25)
            c.polygon([(vx + side * 2, base_y), (vx + side * 2 + side * c.w, base_y),
                       (far_edge + side * c.w, c.h), (far_edge + side * extra * 0.6, c.h)], g, TERRAIN)
    return color


def _on_sidewalk(c: _Canvas, rng, horizon, vx, half):
    """A random ground point beside the road, with its perspective scale."""
    y = rng.uniform(horizon + 0.1 * (c.h - horizon), c.h * 0.98)
    left, right = _road_edges(c, horizon, vx, y, half)
    scale = (y - horizon) / (c.h - horizon)
    side = rng.choice([-1, 1])
    x = (left if side < 0 else right) + side * rng.uniform(0.01, 0.12) * c.w * scale
    return x, y, scale


def _tree(c: _Canvas, rng, x, y, s):
    trunk_h, trunk_w = 0.25 * c.h * s, max(1.5, 0.012 * c.w * s)
    c.rect(x - trunk_w / 2, y - trunk_h, x + trunk_w / 2, y, _jitter(rng, (90, 65, 40), 20), VEGETATION)
    autumn = rng.random() < 0.2
    base = (190, 120, 40) if autumn else (70, 120, 50)
    for _ in range(rng.integers(2, 5)):
        r = rng.uniform(0.06, 0.12) * c.h * s
        cx, cy = x + rng.uniform(-r, r) * 0.6, y - trunk_h - rng.uniform(0, r)
        c.ellipse(cx - r, cy - r, cx + r, cy + r * 0.9, _jitter(rng, base, 30), VEGETATION)


def _pole(c: _Canvas, rng, x, y, s):
    h, w = rng.uniform(0.3, 0.5) * c.h * s, max(1.2, 0.006 * c.w * s)
    c.rect(x - w / 2, y - h, x + w / 2, y, _grey(rng, 90, 170), POLE)
    if rng.random() < 0.6:
        sw = rng.uniform(0.03, 0.05) * c.w * s
        color = [(220, 210, 40), (230, 230, 230), (40, 90, 190), (200, 40, 40)][rng.integers(0, 4)]
        top = y - h
        if rng.random() < 0.5:
            c.ellipse(x - sw / 2, top, x + sw / 2, top + sw, _jitter(rng, color, 15), SIGN)
        else:
            c.rect(x - sw / 2, top, x + sw / 2, top + sw * 0.8, _jitter(rng, color, 15), SIGN)


def _car_color(rng, road_color):
    kind = rng.integers(0, 5)
    if kind == 0:
        return _jitter(rng, road_color, 20)  # as grey as the road: shape has to decide
    if kind == 1:
        return _grey(rng, 20, 60)
    if kind == 2:
        return _grey(rng, 190, 240)
    if kind == 3:
        return _jitter(rng, (70, 120, 50), 25)  # as green as a tree
    return rng.uniform(20, 230, 3)


def _car(c: _Canvas, rng, x, y, s, road_color):
    w, h = rng.uniform(0.12, 0.2) * c.w * s, rng.uniform(0.06, 0.09) * c.h * s * 1.6
    body = _car_color(rng, road_color)
    c.rect(x - w / 2, y - h * 0.6, x + w / 2, y - h * 0.12, body, CAR)
    cabin_top = y - h
    c.polygon([(x - w * 0.35, y - h * 0.6), (x - w * 0.25, cabin_top), (x + w * 0.25, cabin_top), (x + w * 0.38, y - h * 0.6)], body * 0.9, CAR)
    c.polygon([(x - w * 0.28, y - h * 0.62), (x - w * 0.2, cabin_top + h * 0.08), (x + w * 0.2, cabin_top + h * 0.08), (x + w * 0.3, y - h * 0.62)],
              _grey(rng, 30, 90, 10), CAR)
    r = h * 0.18
    for wx in (x - w * 0.3, x + w * 0.3):
        c.ellipse(wx - r, y - 2 * r, wx + r, y, _grey(rng, 10, 40, 5), CAR)


def _person(c: _Canvas, rng, x, y, s):
    h = rng.uniform(0.16, 0.24) * c.h * s
    w = h * 0.28
    skin = _jitter(rng, [(230, 190, 160), (170, 120, 90), (110, 75, 50)][rng.integers(0, 3)], 15)
    shirt, trousers = rng.uniform(20, 230, 3), rng.uniform(20, 200, 3)
    c.rect(x - w * 0.35, y - h * 0.45, x - w * 0.05, y, trousers, PERSON)
    c.rect(x + w * 0.05, y - h * 0.45, x + w * 0.35, y, trousers, PERSON)
    c.rect(x - w / 2, y - h * 0.82, x + w / 2, y - h * 0.42, shirt, PERSON)
    r = h * 0.09
    c.ellipse(x - r, y - h, x + r, y - h * 0.82, skin, PERSON)


def draw_scene(height: int, width: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One scene: an ``H x W x 3`` uint8 RGB image and its ``H x W`` uint8 label map (trainIds)."""
    # draw at a comfortable resolution and resample, so small sizes keep clean shapes
    c = _Canvas(height, width)
    horizon = rng.uniform(0.3, 0.55) * height
    vx = rng.uniform(0.3, 0.7) * width
    base_y = horizon + rng.uniform(0.0, 0.05) * height
    _sky(c, rng, base_y + 1)  # down to the building line, so gaps between buildings show sky
    _buildings(c, rng, horizon, base_y)
    half, road_color = _road(c, rng, horizon, vx)
    _sidewalks(c, rng, horizon, vx, half, base_y)

    things = []  # (y, kind, x, scale): drawn far to near so nearer objects occlude farther ones
    for _ in range(rng.integers(1, 6)):
        x, y, s = _on_sidewalk(c, rng, horizon, vx, half)
        things.append((y, "tree", x, s))
    for _ in range(rng.integers(1, 5)):
        x, y, s = _on_sidewalk(c, rng, horizon, vx, half)
        things.append((y, "pole", x, s))
    for _ in range(rng.integers(0, 6)):
        x, y, s = _on_sidewalk(c, rng, horizon, vx, half)
        things.append((y, "person", x, s))
    for _ in range(rng.integers(1, 6)):
        y = rng.uniform(horizon + 0.08 * (height - horizon), height * 1.02)
        left, right = _road_edges(c, horizon, vx, y, half)
        x = rng.uniform(left + 0.15 * (right - left), right - 0.15 * (right - left))
        things.append((y, "car", x, (y - horizon) / (height - horizon)))
    for y, kind, x, s in sorted(things, key=lambda t: t[0]):
        s = max(s, 0.05)
        if kind == "tree":
            _tree(c, rng, x, y, s)
        elif kind == "pole":
            _pole(c, rng, x, y, s)
        elif kind == "person":
            _person(c, rng, x, y, s)
        else:
            _car(c, rng, x, y, s, road_color)

    image = c.image
    if rng.random() < 0.5:
        image = image.filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(0.3, 1.0))))
    img = np.asarray(image, dtype=np.float32)
    # global lighting, a horizontal shading gradient and sensor noise
    gain = rng.uniform(0.6, 1.3)
    shade = 1.0 + rng.uniform(-0.25, 0.25) * np.linspace(-1, 1, width)[None, :, None]
    img = img * gain * shade + rng.uniform(-20, 20) + rng.normal(0, rng.uniform(2, 9), img.shape)
    label = np.asarray(c.label, dtype=np.uint8).copy()
    return np.clip(img, 0, 255).astype(np.uint8), label


class SyntheticScenes:
    """A deterministic dataset of :func:`draw_scene` scenes: item ``i`` of a split is always the same scene."""

    def __init__(self, num_samples: int = 200, size: tuple[int, int] = (256, 512), split: str = "train", seed: int = 0):
        if split not in _SPLIT_IDS:
            raise OptionError(f"synthetic split {split!r}: expected one of {', '.join(_SPLIT_IDS)}")
        if num_samples < 1:
            raise ValueError(f"num_samples must be at least 1, got {num_samples}")
        self.num_samples = int(num_samples)
        self.size = (int(size[0]), int(size[1]))
        self.split = split
        self.seed = int(seed)

    def __len__(self) -> int:
        return self.num_samples

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        if not 0 <= index < self.num_samples:
            raise IndexError(f"index {index} out of range for {self.num_samples} scenes")
        rng = np.random.default_rng([self.seed, _SPLIT_IDS[self.split], index])
        return draw_scene(*self.size, rng)

    def name(self, index: int) -> str:
        return f"synthetic_{self.split}_{self.seed}_{index:06d}"
