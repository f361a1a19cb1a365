"""Image and label reading: 16-bit, float, palette/alpha/CMYK, EXIF orientation, corrupt files, size bounds."""
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from rtseg.data.image_io import DatasetError, SizeError, check_size, displayed_size, image_to_rgb, read_image, read_label
from rtseg.errors import UserError


def _png16(path, arr, colour_type):
    """A 16-bit PNG written by hand (Pillow cannot write 16-bit RGB)."""
    h, w = arr.shape[:2]
    raw = b"".join(b"\x00" + arr[i].astype(">u2").tobytes() for i in range(h))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", w, h, 16, colour_type, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
    return path


def test_16bit_grey_png_is_scaled_by_its_type_range(tmp_path):
    grey = np.array([[0, 257, 32768, 65535]], dtype=np.uint16)
    Image.fromarray(grey).save(tmp_path / "g16.png")
    out = read_image(tmp_path / "g16.png")
    assert out.shape == (1, 4, 3) and out.dtype == np.uint8
    assert out[0, :, 0].tolist() == [0, 1, 128, 255]
    assert (out[..., 0] == out[..., 2]).all()


def test_16bit_rgb_png(tmp_path):
    rgb = np.array([[[0, 32768, 65535], [65535, 0, 257]]], dtype=np.uint16)
    out = read_image(_png16(tmp_path / "rgb16.png", rgb, colour_type=2))
    assert out.tolist() == [[[0, 128, 255], [255, 0, 1]]]


def test_float_tiff_in_unit_range_is_multiplied_by_255(tmp_path):
    values = np.array([[0.0, 0.5, 1.0]], dtype=np.float32)
    Image.fromarray(values).save(tmp_path / "f.tif")
    assert read_image(tmp_path / "f.tif")[0, :, 1].tolist() == [0, 128, 255]


def test_float_tiff_other_ranges(tmp_path):
    Image.fromarray(np.array([[0.0, 100.0, 255.0]], dtype=np.float32)).save(tmp_path / "a.tif")
    assert read_image(tmp_path / "a.tif")[0, :, 0].tolist() == [0, 100, 255]
    Image.fromarray(np.array([[-10.0, 0.0, 10.0]], dtype=np.float32)).save(tmp_path / "b.tif")
    assert read_image(tmp_path / "b.tif")[0, :, 0].tolist() == [0, 128, 255]
    Image.fromarray(np.array([[0.0, np.nan]], dtype=np.float32)).save(tmp_path / "c.tif")
    with pytest.raises(DatasetError, match=r"c\.tif.*NaN"):
        read_image(tmp_path / "c.tif")


@pytest.mark.parametrize("mode", ["P", "LA", "RGBA", "CMYK", "L", "1"])
def test_other_modes_become_rgb(tmp_path, mode):
    rgb = Image.fromarray(np.array([[[255, 0, 0], [0, 0, 255]]], dtype=np.uint8))
    im = rgb.convert(mode)
    suffix = ".jpg" if mode == "CMYK" else ".png"
    im.save(tmp_path / f"x{suffix}", **({"quality": 100} if suffix == ".jpg" else {}))
    out = read_image(tmp_path / f"x{suffix}")
    assert out.shape == (1, 2, 3) and out.dtype == np.uint8
    expected = np.asarray(im.convert("RGB")).astype(int)
    assert np.abs(out.astype(int) - expected).max() <= (40 if mode == "CMYK" else 0)


def test_exif_orientation_is_applied(tmp_path):
    stored = np.zeros((2, 3, 3), np.uint8)
    stored[0, 0] = 255  # top-left pixel white
    im = Image.fromarray(stored)
    exif = im.getexif()
    exif[0x0112] = 6  # display rotated 90 degrees clockwise
    im.save(tmp_path / "r.png", exif=exif)
    out = read_image(tmp_path / "r.png")
    assert out.shape == (3, 2, 3)
    assert out[0, 1].tolist() == [255, 255, 255]  # the stored top-left is now top-right
    assert displayed_size(tmp_path / "r.png") == (2, 3)


@pytest.mark.parametrize("content", [b"", b"not an image at all", b"\x89PNG\r\n\x1a\n" + b"\x00" * 40])
def test_corrupt_files_are_refused_naming_the_file(tmp_path, content):
    path = tmp_path / "broken.png"
    path.write_bytes(content)
    with pytest.raises(DatasetError, match="broken.png") as info:
        read_image(path)
    assert isinstance(info.value, UserError)
    with pytest.raises(DatasetError, match="broken.png"):
        read_label(path)


def test_truncated_png_is_refused(tmp_path):
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "t.png")
    data = (tmp_path / "t.png").read_bytes()
    (tmp_path / "t.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(DatasetError, match="t.png"):
        read_image(tmp_path / "t.png")


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        read_image(tmp_path / "nope.png")
    with pytest.raises(DatasetError, match="folder"):
        read_image(tmp_path)


def test_labels_keep_values_and_are_not_rotated(tmp_path):
    lab16 = np.array([[0, 300, 1000]], dtype=np.uint16)
    Image.fromarray(lab16).save(tmp_path / "l16.png")
    assert read_label(tmp_path / "l16.png").tolist() == [[0, 300, 1000]]
    lab8 = Image.fromarray(np.array([[1, 2, 3]], dtype=np.uint8))
    exif = lab8.getexif()
    exif[0x0112] = 6
    lab8.save(tmp_path / "l8.png", exif=exif)
    out = read_label(tmp_path / "l8.png")
    assert out.dtype == np.uint8 and out.tolist() == [[1, 2, 3]]
    Image.fromarray(np.zeros((2, 2, 3), np.uint8)).save(tmp_path / "rgb.png")
    with pytest.raises(DatasetError, match="rgb.png.*mode RGB"):
        read_label(tmp_path / "rgb.png")


def test_dataset_module_uses_these_readers():
    from rtseg.data import datasets

    assert datasets.read_image is read_image and datasets.DatasetError is DatasetError


@pytest.mark.parametrize("hw", [(0, 10), (10, -1), (100000, 100000), (16385, 1), (2.5, 3), ("a", 3), (3,), None, (True, 4)])
def test_check_size_refuses(hw):
    with pytest.raises(SizeError, match="--size"):
        check_size(hw)


def test_check_size_accepts_and_names_option():
    assert check_size((512, 1024)) == (512, 1024)
    assert check_size([16384, 1.0]) == (16384, 1)
    with pytest.raises(SizeError, match="--tile"):
        check_size((0, 4), option="--tile")


def test_in_memory_pil_images_convert_the_same_way():
    grey16 = Image.fromarray(np.array([[0, 65535]], dtype=np.uint16))
    assert image_to_rgb(grey16)[0, :, 0].tolist() == [0, 255]
    assert image_to_rgb(Image.fromarray(np.array([[0.0, 1.0]], dtype=np.float32)))[0, :, 2].tolist() == [0, 255]
