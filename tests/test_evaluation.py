"""Evaluation protocols, frequency-weighted IoU and agreement with the official Cityscapes evaluator."""
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
from PIL import Image

from rtseg.data.labels import CITYSCAPES_CATEGORIES, CITYSCAPES_CLASSES, CITYSCAPES_LABELS
from rtseg.evaluation import EvalProtocol, evaluate_server_files, segment_logits
from rtseg.metrics import ConfusionMatrix


def test_frequency_weighted_iou_by_hand():
    cm = ConfusionMatrix(3)
    cm.update(torch.tensor([0, 0, 1, 1, 2, 0]), torch.tensor([0, 0, 0, 1, 1, 255]))
    # labels: class 0 has 3 pixels (2 right, 1 -> 1), class 1 has 2 (1 right, 1 -> 2); class 2 absent
    # IoU0 = 2/3, IoU1 = 1/3 (tp 1, fp 1, fn 1), IoU2 = 0 (predicted only)
    assert cm.frequency_weighted_iou() == pytest.approx(3 / 5 * 2 / 3 + 2 / 5 * 1 / 3)
    assert cm.summary()["frequency_weighted_iou"] == pytest.approx(cm.frequency_weighted_iou())


class _Pointwise(nn.Module):
    """A per-pixel classifier: the same at every position, so windows and flips must not change its output."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 5, 1)

    def forward(self, x):
        return self.conv(x)


def test_sliding_window_and_flip_agree_with_whole_image_for_a_pointwise_model():
    model, x = _Pointwise().eval(), torch.randn(2, 3, 37, 53)
    whole = segment_logits(model, x, (37, 53))
    sliding = segment_logits(model, x, (37, 53), EvalProtocol(window=(16, 24), stride=(10, 15)))
    assert torch.allclose(whole, sliding, atol=1e-5)
    flipped = segment_logits(model, x, (37, 53), EvalProtocol(flip=True))
    assert torch.allclose(flipped, 2 * whole.softmax(1), atol=1e-5)
    multi = segment_logits(model, x, (74, 106), EvalProtocol(scales=(0.5, 1.0), flip=True))
    assert multi.shape == (2, 5, 74, 106) and torch.allclose(multi.sum(1), torch.full((2, 74, 106), 4.0), atol=1e-4)


def test_sliding_window_covers_every_pixel_once_or_more():
    seen = []

    class Probe(nn.Module):
        def forward(self, x):
            seen.append(tuple(x.shape[-2:]))
            return torch.ones(x.shape[0], 2, *x.shape[-2:])

    out = segment_logits(Probe(), torch.zeros(1, 3, 50, 70), (50, 70), EvalProtocol(window=(32, 32)))
    assert torch.allclose(out, torch.ones_like(out)) and all(s == (32, 32) for s in seen) and len(seen) == 2 * 3  # rows 0, 18; columns 0, 21, 38 (stride 21)


def official_pixel_scores(preds: list[str], gts: list[str]) -> dict:
    """The official Cityscapes pixel-level evaluator run on prediction and label files.

    Its functions are called on the files directly: its main() looks for the dataset through environment
    variables and also wants instance-id files, which pixel-level IoU does not use.
    """
    import cityscapesscripts.evaluation.evalPixelLevelSemanticLabeling as official

    official.args.evalInstLevelScore = False
    official.args.JSONOutput = False
    official.args.quiet = True
    return official.evaluateImgLists(preds, gts, official.args)


def assert_class_ious_match(ours: dict, official: dict) -> int:
    """Per-class IoUs equal to 1e-6, and no IoU where the official one is NaN; returns how many were compared."""
    compared = 0
    for name in CITYSCAPES_CLASSES:
        theirs, mine = official["classScores"][name], ours["per_class_iou"][name]
        if math.isnan(theirs):
            assert mine is None, name
        else:
            assert mine == pytest.approx(theirs, abs=1e-6), name
            compared += 1
    return compared


def test_agreement_with_the_official_cityscapes_pixel_evaluator(tmp_path):
    pytest.importorskip("cityscapesscripts")

    rng = np.random.default_rng(0)
    ids = np.array([lab.id for lab in CITYSCAPES_LABELS])
    class_ids = np.array([lab.id for lab in CITYSCAPES_LABELS if lab.train_id != 255 and lab.name != "train"])
    gt_dir = tmp_path / "cs" / "gtFine" / "val" / "lindau"
    gt_dir.mkdir(parents=True)
    pred_dir = tmp_path / "results"
    pred_dir.mkdir()
    preds, gts = [], []
    for i in range(3):
        stem = f"lindau_{i:06d}_000019"
        # no 'train' (31) nor 'bus' (28) in the labels; 'bus' is predicted, 'train' is not
        gt = rng.choice(ids[(ids != 31) & (ids != 28)], (64, 96)).astype(np.uint8)
        pred = np.where(rng.random((64, 96)) < 0.6, gt, rng.choice(class_ids, (64, 96))).astype(np.uint8)
        pred[:4, :4] = 0  # a predicted void label counts as wrong
        Image.fromarray(gt).save(gt_dir / f"{stem}_gtFine_labelIds.png")
        Image.fromarray(pred).save(pred_dir / f"{stem}_leftImg8bit.png")
        gts.append(str(gt_dir / f"{stem}_gtFine_labelIds.png"))
        preds.append(str(pred_dir / f"{stem}_leftImg8bit.png"))

    result = official_pixel_scores(preds, gts)

    ours = evaluate_server_files(pred_dir, tmp_path / "cs", "val").summary(CITYSCAPES_CLASSES, CITYSCAPES_CATEGORIES)
    assert_class_ious_match(ours, result)
    assert ours["per_class_iou"]["train"] is None and ours["per_class_iou"]["bus"] == 0.0
    # the official average skips NaN classes, as our mIoU does
    assert ours["miou"] == pytest.approx(result["averageScoreClasses"], abs=1e-6)
    # the 7 categories (the official list also has 'void', which holds no evaluated class)
    assert set(ours["category_iou"]) == set(result["categoryScores"]) - {"void"} and len(ours["category_iou"]) == 7
    for cat, value in ours["category_iou"].items():
        assert value == pytest.approx(result["categoryScores"][cat], abs=1e-6), cat


def test_agreement_with_the_official_evaluator_on_real_cityscapes_label_maps(tmp_path):
    pytest.importorskip("cityscapesscripts")
    from conftest import shared_path

    root = shared_path("data", "cityscapes-mini")
    gts = sorted(str(p) for p in (root / "gtFine" / "val").glob("*/*_gtFine_labelIds.png"))
    rng = np.random.default_rng(1)
    class_ids = np.array([lab.id for lab in CITYSCAPES_LABELS if lab.train_id != 255])
    preds = []
    for gt in gts:
        label = np.asarray(Image.open(gt))
        # a plausible prediction: the label map shifted by a few pixels, with some pixels replaced
        pred = np.roll(label, (3, -5), axis=(0, 1)).astype(np.uint8)
        noise = rng.random(label.shape) < 0.1
        pred[noise] = rng.choice(class_ids, int(noise.sum()))
        path = tmp_path / Path(gt).name.replace("_gtFine_labelIds", "_leftImg8bit")
        Image.fromarray(pred).save(path)
        preds.append(str(path))
    result = official_pixel_scores(preds, gts)
    ours = evaluate_server_files(tmp_path, root, "val").summary(CITYSCAPES_CLASSES, CITYSCAPES_CATEGORIES)
    compared = assert_class_ious_match(ours, result)
    assert compared >= 10 and ours["miou"] == pytest.approx(result["averageScoreClasses"], abs=1e-6)
