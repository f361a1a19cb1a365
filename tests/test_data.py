import numpy as np
import pytest
import torch
from PIL import Image

from conftest import shared_path
from rtseg.data import CamVidDataset, CityscapesDataset, DatasetError, SyntheticScenes, colorize, get_normalization
from rtseg.data.labels import CITYSCAPES_CATEGORIES, CITYSCAPES_CLASSES, CITYSCAPES_PALETTE, label_ids_to_train_ids, train_ids_to_label_ids
from rtseg.data.synthetic import SYNTHETIC_CLASSES
from rtseg.data.transforms import TrainTransform


def test_synthetic_scenes_are_deterministic_and_any_size():
    a, b = SyntheticScenes(3, (96, 160), seed=7), SyntheticScenes(3, (96, 160), seed=7)
    img, lab = a[1]
    assert img.shape == (96, 160, 3) and img.dtype == np.uint8 and lab.shape == (96, 160)
    assert np.array_equal(img, b[1][0]) and np.array_equal(lab, b[1][1])
    assert not np.array_equal(img, a[2][0])
    assert not np.array_equal(SyntheticScenes(3, (96, 160), seed=8)[1][0], img)
    assert not np.array_equal(SyntheticScenes(3, (96, 160), split="val", seed=7)[1][0], img)
    assert SyntheticScenes(1, (33, 47))[0][0].shape == (33, 47, 3)


def test_synthetic_scenes_cover_the_street_classes():
    ds = SyntheticScenes(12, (128, 256))
    seen = set()
    for i in range(len(ds)):
        seen |= set(np.unique(ds[i][1]).tolist())
    required = {"road", "sidewalk", "building", "sky", "vegetation", "car", "person", "pole"}
    assert {SYNTHETIC_CLASSES[c] for c in required} <= seen
    assert seen <= set(range(19)) | {255}


def test_synthetic_colours_overlap_between_classes():
    # colour alone must not separate classes: the mean colour of cars spans the road's grey
    ds = SyntheticScenes(30, (96, 192))
    car_grey = 0
    for i in range(len(ds)):
        img, lab = ds[i]
        road = img[lab == SYNTHETIC_CLASSES["road"]].mean(0)
        for cls in (SYNTHETIC_CLASSES["car"],):
            px = img[lab == cls]
            if len(px) and np.abs(px.mean(0) - road).max() < 25:
                car_grey += 1
    assert car_grey >= 1


def test_label_ids_to_train_ids():
    ids = np.array([[0, 7, 8, 11], [23, 26, 33, 9]], dtype=np.uint8)
    assert label_ids_to_train_ids(ids).tolist() == [[255, 0, 1, 2], [10, 13, 18, 255]]
    assert train_ids_to_label_ids(np.array([0, 13, 18, 255])).tolist() == [7, 26, 33, 0]
    assert len(CITYSCAPES_CLASSES) == 19 and CITYSCAPES_CLASSES[13] == "car"
    assert CITYSCAPES_PALETTE[0] == (128, 64, 128)
    assert sorted(i for ids in CITYSCAPES_CATEGORIES.values() for i in ids) == list(range(19))


def test_colorize_uses_palette_and_black_for_ignore():
    out = colorize(np.array([[0, 255]]))
    assert out[0, 0].tolist() == [128, 64, 128] and out[0, 1].tolist() == [0, 0, 0]


def test_normalization_presets():
    img = np.full((2, 2, 3), 255, dtype=np.uint8)
    img[..., 0] = 0  # R = 0, G = B = 255
    esp = get_normalization("espnet")(img)
    # ESPNet's preset reads BGR: channel 0 is blue (255), channel 2 is red (0)
    assert torch.allclose(esp[0], torch.full((2, 2), (255 - 72.3923111) / 45.3192215 / 255))
    assert torch.allclose(esp[2], torch.full((2, 2), (0 - 73.15840149) / 44.91483307 / 255))
    imn = get_normalization("imagenet")(img)
    assert torch.allclose(imn[0], torch.full((2, 2), -0.485 / 0.229), atol=1e-5)
    with pytest.raises(ValueError, match="imagenet"):
        get_normalization("nope")


def test_train_transform_pads_crops_with_ignore_and_scales_labels():
    img = np.zeros((10, 12, 3), dtype=np.uint8)
    lab = np.zeros((10, 12), dtype=np.uint8)
    cfg = {"dataset": "camvid", "image_size": None, "crop_size": [16, 16], "scale_range": [1.0, 1.0]}
    x, y = TrainTransform(cfg, "imagenet")(img, lab, np.random.default_rng(0))
    assert x.shape == (3, 16, 16) and y.shape == (16, 16)
    assert (y == 255).sum() == 16 * 16 - 10 * 12
    cfg = {"dataset": "camvid", "image_size": None, "label_scale": 2}
    x, y = TrainTransform(cfg, "imagenet")(img, lab, np.random.default_rng(0))
    assert x.shape == (3, 10, 12) and y.shape == (5, 6)


def test_cityscapes_mini_loads_real_frames():
    root = shared_path("data", "cityscapes-mini")
    ds = CityscapesDataset(root, "val")
    assert len(ds) == 2
    img, lab = ds[0]
    assert img.shape == (1024, 2048, 3) and lab.shape == (1024, 2048)
    assert set(np.unique(lab).tolist()) <= set(range(19)) | {255}
    assert (lab == 0).mean() > 0.2  # road


def test_camvid_loads_with_void_as_ignore():
    root = shared_path("data", "camvid")
    ds = CamVidDataset(root, "val")
    assert len(ds) == 101
    img, lab = ds[0]
    assert img.shape == (360, 480, 3) and lab.shape == (360, 480)
    assert set(np.unique(lab).tolist()) <= set(range(11)) | {255}


def test_dataset_errors_name_the_files(tmp_path):
    (tmp_path / "train").mkdir()
    (tmp_path / "trainannot").mkdir()
    Image.new("RGB", (4, 4)).save(tmp_path / "train" / "a.png")
    with pytest.raises(DatasetError, match="a.png"):
        CamVidDataset(tmp_path, "train")
    Image.new("L", (5, 4)).save(tmp_path / "trainannot" / "a.png")
    with pytest.raises(DatasetError, match="a.png.*4x4.*5x4"):
        CamVidDataset(tmp_path, "train")[0]
    (tmp_path / "train" / "b.png").write_text("not an image")
    Image.new("L", (4, 4)).save(tmp_path / "trainannot" / "b.png")
    with pytest.raises(DatasetError, match="b.png"):
        CamVidDataset(tmp_path, "train")[1]
    with pytest.raises(DatasetError, match="leftImg8bit"):
        CityscapesDataset(tmp_path, "val")


def _ramp_pair(h=40, w=60):
    img = np.zeros((h, w, 3), np.uint8)
    img[..., 0] = np.arange(w, dtype=np.uint8)[None, :] * 4
    img[..., 1] = np.arange(h, dtype=np.uint8)[:, None] * 6
    img[..., 2] = 100
    lab = (np.arange(w)[None, :] // 20 + 3 * (np.arange(h)[:, None] // 20)).astype(np.uint8).repeat(1, 0)
    return img, np.broadcast_to(lab, (h, w)).copy()


def test_translation_moves_image_and_label_together_and_ignores_uncovered_pixels():
    from rtseg.data.transforms import random_translate

    img, lab = _ramp_pair()
    for seed in range(5):
        ti, tl = random_translate(img, lab, 7, np.random.default_rng(seed))
        assert ti.shape == img.shape and tl.shape == lab.shape
        ys, xs = np.nonzero(tl != 255)
        uncovered = tl == 255
        assert (ti[uncovered] == 0).all()
        # a covered pixel keeps its (image, label) pairing: find the shift from the red ramp
        dx = (int(ti[ys[0], xs[0], 0]) // 4) - xs[0]
        dy = (int(ti[ys[0], xs[0], 1]) // 6) - ys[0]
        assert abs(dx) <= 7 and abs(dy) <= 7
        assert np.array_equal(tl[ys, xs], lab[ys + dy, xs + dx])


def test_rotation_keeps_size_and_fills_labels_with_ignore():
    from rtseg.data.transforms import random_rotate

    img, lab = _ramp_pair()
    ri, rl = random_rotate(img, lab, 30, np.random.default_rng(3))
    assert ri.shape == img.shape and rl.shape == lab.shape
    assert (rl == 255).any() and set(np.unique(rl).tolist()) <= set(np.unique(lab).tolist()) | {255}
    assert (ri[rl == 255].max(axis=-1) < 60).mean() > 0.8  # mostly black where uncovered (edges are interpolated)
    same, _ = random_rotate(img, lab, 0, np.random.default_rng(3))
    assert np.array_equal(same, img)


def test_colour_jitter_and_channel_noise_change_colours_only():
    from rtseg.data.transforms import channel_noise, color_jitter

    img, _ = _ramp_pair()
    assert np.array_equal(color_jitter(img, 0.0, np.random.default_rng(0)), img)
    jittered = color_jitter(img, 0.4, np.random.default_rng(0))
    assert jittered.shape == img.shape and jittered.dtype == np.uint8 and not np.array_equal(jittered, img)
    noisy = channel_noise(img, 0.05, np.random.default_rng(1))
    diff = noisy.astype(int) - img.astype(int)
    # one offset per channel over the whole image (where nothing was clipped)
    for c in range(3):
        inside = (img[..., c] > 30) & (img[..., c] < 220)
        assert len(np.unique(diff[..., c][inside])) == 1
    assert np.abs(diff).max() > 0


def test_train_transform_is_deterministic_per_generator_seed():
    cfg = {"dataset": "synthetic", "rotate": 10, "translate": 5, "color_jitter": 0.3, "channel_noise": 0.02, "hflip": True,
           "vflip": True, "scale_range": [0.8, 1.2], "crop_size": [32, 48]}
    t = TrainTransform(cfg, "imagenet")
    img, lab = _ramp_pair()
    a = t(img, lab, np.random.default_rng([0, 1, 2]))
    b = t(img, lab, np.random.default_rng([0, 1, 2]))
    c = t(img, lab, np.random.default_rng([0, 1, 3]))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])
    x, y = t(img, lab, np.random.default_rng(0), crop_size=(24, 24))
    assert tuple(x.shape) == (3, 24, 24) and tuple(y.shape) == (24, 24)


def test_label_values_are_checked_once_on_load_naming_the_files(tmp_path, monkeypatch):
    from rtseg.data.datasets import build_dataset

    monkeypatch.setenv("RTSEG_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "camvid"
    for split in ("train", "trainannot"):
        (root / split).mkdir(parents=True)
    for i, top in enumerate((10, 11, 14, 200)):  # 11 is void (fine); 14 and 200 are not classes
        Image.new("RGB", (6, 4)).save(root / "train" / f"f{i}.png")
        lab = np.zeros((4, 6), dtype=np.uint8)
        lab[0, 0] = top
        Image.fromarray(lab).save(root / "trainannot" / f"f{i}.png")
    cfg = {"dataset": "camvid", "root": str(root), "train_split": "train"}
    with pytest.raises(DatasetError) as err:
        build_dataset(cfg, "train")
    msg = str(err.value)
    assert "2 of 4" in msg and "f2.png" in msg and "[14]" in msg and "f3.png" in msg and "f0.png" not in msg
    lab = np.zeros((4, 6), dtype=np.uint8)
    for i in (2, 3):
        Image.fromarray(lab).save(root / "trainannot" / f"f{i}.png")
    assert len(build_dataset(cfg, "train")) == 4
    assert len(list((tmp_path / "cache" / "label-checks").iterdir())) == 1
    assert len(build_dataset({**cfg, "check_labels": False}, "train")) == 4
