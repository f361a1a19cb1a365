"""Reading image and label files the way a user sees them, and bounds on image sizes.

:func:`read_image` returns ``H x W x 3`` uint8 RGB for every file a viewer would show:

- 8-bit grey, palette, grey+alpha, RGBA and CMYK files are converted to RGB; alpha is dropped (a transparent
  pixel keeps its stored colour), as image viewers do on an opaque background-less canvas.
- 16-bit files are scaled by the range of their type, 0..65535 -> 0..255 (``round(v * 255 / 65535)``), never
  clipped (clipping made every grey 16-bit PNG white). Pillow already reads 16-bit RGB PNGs as 8-bit RGB
  with that scaling (the high byte). 32-bit integer images (mode ``I``) are read on the same 16-bit scale,
  the range Pillow uses them for; values outside 0..65535 are refused.
- Float images (mode ``F``, e.g. float TIFFs): values within [0, 1] are multiplied by 255; values within
  [0, 255] (but above 1) are taken as 8-bit intensities; any other finite range is stretched linearly from its
  minimum..maximum to 0..255 (such an image has no fixed white). NaN or infinity is refused. Multi-channel
  float TIFFs are not readable by Pillow and are refused with a message naming the file.
- The EXIF orientation tag is applied (``ImageOps.exif_transpose``), so a photo is segmented upright as
  it is displayed, not as its pixels are stored.
- An unreadable, truncated or corrupt file raises :class:`DatasetError` naming the file.

:func:`read_label` returns a label map as stored: no EXIF rotation (label PNGs written by annotation tools
carry no orientation tag; they are drawn on the displayed image, which :func:`read_image` reproduces), no
scaling (values are class ids: a 16-bit label PNG keeps its values).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from rtseg.storage import not_a_file
from rtseg.errors import UserError
from rtseg.limits import MAX_SIDE

__all__ = ["DatasetError", "SizeError", "ImageTooLargeError", "MAX_SIDE", "decode_image", "read_image", "image_to_rgb", "read_label", "displayed_size", "check_size"]



class DatasetError(UserError, ValueError):
    """A dataset folder or file (image, label map) that cannot be used as it is."""


class SizeError(UserError, ValueError):
    """A size option or value out of bounds."""


class ImageTooLargeError(DatasetError):
    """An image whose header declares more pixels (or a longer side) than the reader accepts: refused before decoding."""


_READ_ERRORS = (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError)


def _open(path: str | Path, what: str) -> Image.Image:
    """The decoded image (pixels loaded, file closed); errors name the file."""
    problem = not_a_file(path)
    if problem is not None and problem != "does not exist":
        raise DatasetError(f"{what} {str(path)!r} {problem}")
    try:
        with Image.open(path) as im:
            im.load()
            return im
    except FileNotFoundError as exc:
        raise DatasetError(f"{what} {str(path)!r} does not exist") from exc
    except IsADirectoryError as exc:
        raise DatasetError(f"{what} {str(path)!r} is a folder, not an image file") from exc
    except _READ_ERRORS as exc:
        raise DatasetError(f"{what} {str(path)!r} is not a readable image (corrupt, truncated or of an unknown format): {exc}") from exc


def _scaled_to_uint8(arr: np.ndarray, path: str | Path) -> np.ndarray:
    """A single-channel 16-bit, 32-bit integer or float array as uint8 (see the module docstring)."""
    if arr.dtype.kind in "ui":
        values = arr.astype(np.int64)
        if values.size and (values.min() < 0 or values.max() > 65535):
            raise DatasetError(f"image {str(path)!r} holds 32-bit integers outside 0..65535 "
                               f"({values.min()}..{values.max()}); convert it to an 8- or 16-bit image")
        return ((values * 255 + 32767) // 65535).astype(np.uint8)
    values = arr.astype(np.float64)
    if not np.isfinite(values).all():
        raise DatasetError(f"image {str(path)!r} holds NaN or infinite values; expected finite intensities")
    lo, hi = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if lo >= 0 and hi <= 1:
        scaled = values * 255
    elif lo >= 0 and hi <= 255:
        scaled = values
    else:
        scaled = (values - lo) * (255 / (hi - lo)) if hi > lo else np.zeros_like(values)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def read_image(path: str | Path) -> np.ndarray:
    """An image file as ``H x W x 3`` uint8 RGB in its displayed orientation (see the module docstring)."""
    return image_to_rgb(_open(path, "image"), path)


def decode_image(data: bytes, name: str = "image", max_pixels: int = 25_000_000, formats: tuple[str, ...] = ("PNG", "JPEG")) -> np.ndarray:
    """Image bytes (e.g. an upload) as ``H x W x 3`` uint8 RGB, as :func:`read_image` reads files.

    Only ``formats`` are tried. The size in the header is checked against ``max_pixels`` and :data:`MAX_SIDE`
    *before* any pixel is decoded, so a small file declaring a huge image (a decompression bomb) costs nothing.
    Empty, unknown, truncated or corrupt data raise :class:`DatasetError` naming ``name``; too large an image
    :class:`ImageTooLargeError`."""
    import io

    if not data:
        raise DatasetError(f"{name} is empty (0 bytes); expected a {' or '.join(formats)} image")
    try:
        # Pillow itself refuses headers above twice its MAX_IMAGE_PIXELS (and only warns between); ours is stricter
        im = Image.open(io.BytesIO(data), formats=list(formats))
    except Image.DecompressionBombError as exc:
        import re

        found = re.search(r"\((\d+) pixels\)", str(exc))
        declared = f"{int(found.group(1)):,} pixels" if found else "more pixels than Pillow decodes"
        raise ImageTooLargeError(f"{name} ({len(data):,} bytes) declares {declared} in its header, a decompression bomb; "
                                 f"the limit is {max_pixels:,} pixels: send a smaller image") from None
    except UnidentifiedImageError:
        raise DatasetError(f"{name} is not a {' or '.join(formats)} image (its first bytes are {data[:8]!r})") from None
    except _READ_ERRORS as exc:
        raise DatasetError(f"{name} is not a readable {' or '.join(formats)} image: {exc}") from None
    width, height = im.size
    if width * height > max_pixels or max(width, height) > MAX_SIDE:
        raise ImageTooLargeError(f"{name} is {width}x{height} ({width * height:,} pixels, from its header); the limit is {max_pixels:,} "
                                 f"pixels and {MAX_SIDE} per side: send a smaller image")
    try:
        im.load()
    except _READ_ERRORS as exc:
        raise DatasetError(f"{name} is not a readable {im.format} image (corrupt or truncated): {exc}") from None
    return image_to_rgb(im, name)


def image_to_rgb(im: Image.Image, name: str | Path = "<image>") -> np.ndarray:
    """A PIL image as ``H x W x 3`` uint8 RGB, upright, 16-bit and float scaled as :func:`read_image` does."""
    try:
        im = ImageOps.exif_transpose(im)
    except _READ_ERRORS:
        pass  # an unreadable EXIF block leaves the pixels as stored
    if im.mode.startswith("I") or im.mode == "F":
        grey = _scaled_to_uint8(np.asarray(im), name)
        if grey.ndim != 2:
            raise DatasetError(f"image {str(name)!r} has an unsupported layout {im.mode} {grey.shape}")
        return np.repeat(grey[:, :, None], 3, axis=2)
    try:
        return np.asarray(im.convert("RGB"))
    except _READ_ERRORS as exc:
        raise DatasetError(f"image {str(name)!r} of mode {im.mode} cannot be converted to RGB: {exc}") from exc


def read_label(path: str | Path) -> np.ndarray:
    """A label map as ``H x W``: uint8 when its values fit, else its stored integers (16-bit PNGs keep their values).

    Only single-channel files (modes 1, L, P, I, I;16) are label maps; palette files give their indices.
    """
    im = _open(path, "label map")
    if im.mode not in ("1", "L", "P") and not im.mode.startswith("I"):
        raise DatasetError(f"label map {str(path)!r} has image mode {im.mode}; expected a single-channel (L, P or 16-bit) PNG")
    arr = np.asarray(im)
    if arr.dtype == bool:
        return arr.astype(np.uint8)
    if arr.size and arr.min() < 0:
        raise DatasetError(f"label map {str(path)!r} holds negative values; expected class ids >= 0")
    return arr.astype(np.uint8) if arr.max(initial=0) < 256 else arr


def displayed_size(path: str | Path) -> tuple[int, int]:
    """``(width, height)`` of an image as displayed (EXIF orientations 5-8 swap them), from its header only."""
    problem = not_a_file(path)
    if problem is not None and problem != "does not exist":
        raise DatasetError(f"image {str(path)!r} {problem}")
    try:
        with Image.open(path) as im:
            width, height = im.size
            try:
                orientation = im.getexif().get(0x0112, 1)
            except _READ_ERRORS:
                orientation = 1
    except FileNotFoundError as exc:
        raise DatasetError(f"image {str(path)!r} does not exist") from exc
    except _READ_ERRORS as exc:
        raise DatasetError(f"{str(path)!r} is not a readable image: {exc}") from exc
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


def check_size(hw, option: str = "--size", max_side: int = MAX_SIDE) -> tuple[int, int]:
    """``(H, W)`` as ints when both are whole numbers in ``1..max_side``, else :class:`SizeError` naming ``option``."""
    try:
        h, w = hw
    except (TypeError, ValueError):
        raise SizeError(f"{option}={hw!r}: expected a size H x W (two whole numbers)") from None
    for v in (h, w):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) and not (isinstance(v, float) and v.is_integer()):
            raise SizeError(f"{option}={h}x{w}: expected whole numbers of pixels")
        if not 1 <= v <= max_side:
            raise SizeError(f"{option}={h}x{w}: each side must be between 1 and {max_side} pixels")
    return int(h), int(w)
