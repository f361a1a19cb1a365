"""Real data: a small model trained briefly on a quarter of CamVid beats a constant and a colour-only predictor.

Runs when ../shared/data/camvid (SegNet layout) is present. Every fourth image of train and val (92 + 26, linked
into a temporary SegNet layout), 5 epochs: about a fifth of the full recipe's compute (460 training images seen
instead of 2202); the full camvid-small run (docs/training.md) is the one whose number is published.
"""
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import shared_path
from rtseg.config import load_config
from rtseg.data.datasets import CamVidDataset
from rtseg.engine.trainer import train
from rtseg.metrics import ConfusionMatrix

STEP = 4  # every fourth image: 92 train, 26 val
EPOCHS = 5
BATCH = 4  # twice the recipe's steps for the same compute: 115 Adam steps
MARGIN = 0.0  # to raise once measured at batch 4 on a quiet machine (see the note at the assertion)


def colour_and_constant_baselines(root, levels: int = 16) -> tuple[float, float]:
    """Validation mIoU of (a) the class most often seen with each quantised RGB colour in the training labels,
    (b) the most frequent training class everywhere. Neither looks at any neighbourhood."""
    train_set, val_set = CamVidDataset(root, "train"), CamVidDataset(root, "val")
    q = 256 // levels
    counts = np.zeros((levels**3, 11), np.int64)

    def codes(img):
        return ((img[..., 0] // q).astype(np.int64) * levels + img[..., 1] // q) * levels + img[..., 2] // q

    for i in range(0, len(train_set), 2):
        img, lab = train_set[i]
        keep = lab < 11
        np.add.at(counts, (codes(img)[keep], lab[keep].astype(np.int64)), 1)
    prior = int(counts.sum(0).argmax())
    table = np.where(counts.sum(1) > 0, counts.argmax(1), prior)
    colour, constant = ConfusionMatrix(11), ConfusionMatrix(11)
    for i in range(len(val_set)):
        img, lab = val_set[i]
        target = torch.from_numpy(lab.astype(np.int64))
        colour.update(torch.from_numpy(table[codes(img)]), target)
        constant.update(torch.full(lab.shape, prior), target)
    return colour.mean_iou(), constant.mean_iou()


def every_nth(root: Path, out: Path, step: int) -> Path:
    """A SegNet-layout CamVid of every ``step``-th image of train and val, linked (not copied) from ``root``."""
    for split in ("train", "val"):
        names = sorted(p.name for p in (root / split).iterdir())[::step]
        for folder in (split, f"{split}annot"):
            (out / folder).mkdir(parents=True)
            for name in names:
                os.symlink(root / folder / name, out / folder / name)
    return out


@pytest.mark.slow
def test_short_camvid_training_beats_colour_and_constant_predictors(tmp_path, monkeypatch):
    root = every_nth(Path(shared_path("data", "camvid")), tmp_path / "camvid", STEP)
    val_images = len(list((root / "val").iterdir()))
    monkeypatch.setenv("RTSEG_CACHE", str(tmp_path / "cache"))
    cfg = load_config("camvid-small", [f"data.root={root}", "train.tensorboard=false", f"train.epochs={EPOCHS}", f"train.val_every={EPOCHS}",
                                       f"train.batch_size={BATCH}"])
    summary = train(cfg, tmp_path / "run", progress=False)
    final = summary["final"]
    colour, constant = colour_and_constant_baselines(root)
    losses = [float(row.split(",")[1]) for row in (tmp_path / "run" / "metrics.csv").read_text().splitlines()[1:]]
    record = {"val_miou": final["miou"], "val_pixel_accuracy": final["pixel_accuracy"], "colour_only_miou": colour,
              "constant_miou": constant, "epochs": EPOCHS, "train_losses": losses, "per_class_iou": final["per_class_iou"]}
    print("CamVid:", json.dumps(record, indent=1))
    assert final["pixels"] > 0.8 * val_images * 360 * 480  # scored at the labels' full 360x480 resolution (void excluded)
    assert constant < 0.05 and 0.1 < colour < 0.25  # what these baselines get on CamVid val
    assert losses[-1] < 0.8 * losses[0]
    # measured on this quarter at the recipe's batch 8 (55 steps): 0.167 against colour-only 0.154 and constant 0.027;
    # the full recipe reaches 0.296 (docs/training.md)
    assert final["miou"] > colour + MARGIN and final["miou"] > 5 * constant
