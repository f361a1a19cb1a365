"""Predict reads images as they are displayed, names every output distinctly and bounds the memory of its arg-max."""
import numpy as np
import pytest
import torch
import torch.nn as nn
from PIL import Image

import rtseg.inference as inference
from rtseg.evaluation import resize_to
from rtseg.inference import bounded_argmax, predict
from rtseg.tasks import predict as predict_task
from rtseg.tasks._predict import output_names


def test_output_names_keep_subfolders_and_suffixes_of_clashing_files(tmp_path):
    files = [tmp_path / "a.png", tmp_path / "a.jpg", tmp_path / "sub" / "a.png", tmp_path / "b.png"]
    names = output_names(files)
    assert names == {files[0]: "a.png", files[1]: "a.jpg", files[2]: "sub/a", files[3]: "b"}
    assert len(set(names.values())) == len(files)


def test_predict_writes_one_distinct_prediction_per_input(tmp_path):
    inputs = tmp_path / "in"
    (inputs / "sub").mkdir(parents=True)
    rgb = np.random.default_rng(0).integers(0, 255, (24, 32, 3), dtype=np.uint8)
    for name in ("a.png", "a.jpg", "sub/a.png"):
        Image.fromarray(rgb).save(inputs / name)
    # the same file named twice (itself and through its folder) is predicted once
    result = predict_task("espnet-c", [inputs, inputs / "a.png"], tmp_path / "out", num_classes=3)
    masks = sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*_mask.png"))
    assert masks == ["a.jpg_mask.png", "a.png_mask.png", "sub/a_mask.png"]
    assert result["written"] == len(masks) == 3


def test_bounded_argmax_equals_the_full_one_below_the_bound_and_bounds_it_above():
    logits = torch.randn(1, 4, 12, 16)
    full = resize_to(logits, (120, 160)).argmax(1)[0].to(torch.uint8)
    assert torch.equal(bounded_argmax(logits, (120, 160), max_pixels=120 * 160), full)
    small = bounded_argmax(logits, (120, 160), max_pixels=1200)
    assert small.shape == (120, 160) and small.dtype == torch.uint8
    agreement = (small == full).float().mean().item()
    assert 0.8 < agreement < 1.0  # the same map, with borders placed to within a few pixels


class _Recorder(nn.Module):
    """A 2-class model whose logits favour class 1 on the right half; records the largest tensor it sees upsampled."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        n, _, h, w = x.shape
        logits = torch.zeros(n, 2, h // 8, w // 8)
        logits[:, 1, :, (w // 8) // 2:] = 1.0
        return logits


def test_predict_on_a_large_image_upsamples_logits_only_to_the_bound(monkeypatch):
    seen = []
    real = inference.resize_to

    def spy(x, hw):
        seen.append(tuple(hw))
        return real(x, hw)

    monkeypatch.setattr(inference, "resize_to", spy)
    monkeypatch.setattr(inference, "MAX_ARGMAX_PIXELS", 64 * 64)
    image = np.zeros((512, 384, 3), np.uint8)
    labels = predict(_Recorder(), image, normalization="imagenet")
    assert labels.shape == (512, 384)
    assert max(h * w for h, w in seen) <= 64 * 64
    assert labels[:, :150].max() == 0 and labels[:, 250:].min() == 1


@pytest.mark.parametrize("kind", ["grey16", "float", "exif"])
def test_predict_reads_images_as_displayed(kind, tmp_path, monkeypatch):
    seen = {}

    def fake_model_logits(model, image, size, normalization):
        seen["rgb"] = inference._as_rgb(image)
        return torch.zeros(1, 2, 4, 4), seen["rgb"].shape[:2]

    monkeypatch.setattr(inference, "_model_logits", fake_model_logits)
    path = tmp_path / f"{kind}.png"
    if kind == "grey16":
        Image.fromarray(np.full((8, 6), 32768, np.uint16)).save(path)
        expected_mean, expected_shape = 128, (8, 6, 3)
    elif kind == "float":
        path = tmp_path / "f.tif"
        Image.fromarray(np.full((8, 6), 0.5, np.float32), mode="F").save(path)
        expected_mean, expected_shape = 128, (8, 6, 3)
    else:
        path = tmp_path / "rotated.jpg"
        im = Image.new("RGB", (6, 8), (200, 200, 200))
        exif = im.getexif()
        exif[0x0112] = 6  # displayed rotated by 90 degrees: 8 wide, 6 high
        im.save(path, exif=exif)
        expected_mean, expected_shape = None, (6, 8, 3)
    labels = predict(nn.Identity(), Image.open(path))
    assert seen["rgb"].shape == expected_shape and labels.shape == expected_shape[:2]
    if expected_mean is not None:
        assert abs(int(seen["rgb"].mean()) - expected_mean) <= 1
