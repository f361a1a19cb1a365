"""Custom folder datasets, Cityscapes coarse annotations and the evaluation-server output format."""
import numpy as np
import pytest
from PIL import Image

from rtseg.data.datasets import CityscapesDataset, DatasetError, build_dataset
from rtseg.data.folder import FolderDataset


def _write_folder(root, n=3, size=(20, 30), colors=False, spec=None):
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    palette = {"sky": [70, 130, 180], "road": [128, 64, 128], "car": [0, 0, 142]}
    for split in ("train", "val"):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(root / "images" / split / f"f{i}.jpg")
            lab = rng.integers(0, 3, size, dtype=np.uint8)
            lab[0, 0] = 9  # the ignore value (or colour)
            if colors:
                rgb = np.array([palette["sky"], palette["road"], palette["car"]], np.uint8)[np.minimum(lab, 2)]
                rgb[lab == 9] = 255
                Image.fromarray(rgb).save(root / "labels" / split / f"f{i}.png")
            else:
                Image.fromarray(lab).save(root / "labels" / split / f"f{i}.png")
    text = spec or "classes: [sky, road, car]\nignore_index: 9\n"
    if colors and spec is None:
        text += "colors: {sky: [70, 130, 180], road: [128, 64, 128], car: [0, 0, 142]}\nignore_color: [255, 255, 255]\n"
    (root / "dataset.yaml").write_text(text)
    return root


def test_folder_dataset_reads_labels_and_maps_ignore_to_255(tmp_path):
    root = _write_folder(tmp_path / "ds")
    ds = build_dataset({"dataset": "folder", "root": str(root)}, "train")
    img, lab = ds[0]
    assert len(ds) == 3 and img.shape == (20, 30, 3) and lab.shape == (20, 30)
    assert lab[0, 0] == 255 and set(np.unique(lab).tolist()) <= {0, 1, 2, 255}
    assert ds.classes.names == ("sky", "road", "car")


def test_folder_dataset_colour_coded_labels(tmp_path):
    root = _write_folder(tmp_path / "ds", colors=True)
    _, lab = FolderDataset(root, "val")[1]
    assert lab[0, 0] == 255 and set(np.unique(lab).tolist()) <= {0, 1, 2, 255} and len(np.unique(lab)) == 4
    # a colour that is not in the table is named with the file
    Image.fromarray(np.full((20, 30, 3), 7, np.uint8)).save(root / "labels" / "val" / "f1.png")
    with pytest.raises(DatasetError, match=r"f1\.png.*\(7, 7, 7\)"):
        FolderDataset(root, "val")[1]


def test_folder_dataset_errors_name_the_files(tmp_path):
    root = _write_folder(tmp_path / "ds")
    (root / "labels" / "train" / "f1.png").unlink()
    Image.fromarray(np.zeros((20, 30), np.uint8)).save(root / "labels" / "train" / "orphan.png")
    with pytest.raises(DatasetError) as err:
        FolderDataset(root, "train")
    assert "f1.jpg" in str(err.value) and "orphan.png" in str(err.value)

    root = _write_folder(tmp_path / "ds2")
    Image.fromarray(np.zeros((21, 30), np.uint8)).save(root / "labels" / "train" / "f2.png")
    with pytest.raises(DatasetError, match=r"f2\.jpg.*30x20.*f2\.png.*30x21"):
        FolderDataset(root, "train")

    root = _write_folder(tmp_path / "ds3")
    (root / "images" / "val" / "f0.jpg").write_bytes(b"not an image")
    with pytest.raises(DatasetError, match=r"f0\.jpg.*not a readable image"):
        FolderDataset(root, "val")

    root = _write_folder(tmp_path / "ds4")
    Image.fromarray(np.full((20, 30), 5, np.uint8)).save(root / "labels" / "val" / "f2.png")
    ds = FolderDataset(root, "val")
    with pytest.raises(DatasetError, match=r"f2\.png.*\[5\].*0\.\.2.*ignore value 9"):
        ds[2]

    root = _write_folder(tmp_path / "ds5", spec="classes: road\n")
    with pytest.raises(DatasetError, match="dataset.yaml.*classes"):
        FolderDataset(root, "val")


def _cityscapes_tree(root, splits_gt):
    rng = np.random.default_rng(1)
    for split, gt in splits_gt:
        for i in range(2):
            stem = f"aachen_00000{i}_000019"
            img_dir, lab_dir = root / "leftImg8bit" / split / "aachen", root / gt / split / "aachen"
            img_dir.mkdir(parents=True, exist_ok=True)
            lab_dir.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 255, (16, 32, 3), dtype=np.uint8)).save(img_dir / f"{stem}_leftImg8bit.png")
            Image.fromarray(rng.choice([0, 7, 8, 26], (16, 32)).astype(np.uint8)).save(lab_dir / f"{stem}_{gt}_labelIds.png")


def test_cityscapes_coarse_takes_train_and_train_extra(tmp_path):
    _cityscapes_tree(tmp_path, [("train", "gtFine"), ("train", "gtCoarse"), ("train_extra", "gtCoarse"), ("val", "gtFine")])
    assert len(CityscapesDataset(tmp_path, "train")) == 2
    coarse = build_dataset({"dataset": "cityscapes", "root": str(tmp_path), "annotations": "coarse"}, "train")
    assert len(coarse) == 4 and any("train_extra" in str(p) for p, _ in coarse.pairs)
    assert all("gtCoarse" in str(lab) for _, lab in coarse.pairs)
    assert set(np.unique(coarse[3][1]).tolist()) <= {0, 1, 13, 255}
    # validation stays on the fine annotations
    val = build_dataset({"dataset": "cityscapes", "root": str(tmp_path), "annotations": "coarse"}, "val")
    assert all("gtFine" in str(lab) for _, lab in val.pairs)
    with pytest.raises(DatasetError, match="gtCoarse"):
        (tmp_path / "gtCoarse" / "train_extra" / "aachen" / "aachen_000001_000019_gtCoarse_labelIds.png").unlink()
        CityscapesDataset(tmp_path, "train", annotations="coarse")


def test_predict_format_for_server_writes_label_ids_with_official_names(tmp_path):
    from rtseg.cli import main
    from rtseg.data.labels import CITYSCAPES_LABELS

    _cityscapes_tree(tmp_path / "cs", [("val", "gtFine")])
    out = tmp_path / "server"
    rc = main(["predict", "espnet-c", str(tmp_path / "cs" / "leftImg8bit" / "val"), "--out", str(out), "--format-for-server"])
    assert rc == 0
    files = sorted(p.name for p in out.iterdir())
    assert files == ["aachen_000000_000019_leftImg8bit.png", "aachen_000001_000019_leftImg8bit.png"]
    values = set(np.unique(np.asarray(Image.open(out / files[0]))).tolist())
    label_ids_of_classes = {lab.id for lab in CITYSCAPES_LABELS if lab.train_id != 255}
    assert values and values <= label_ids_of_classes


def test_class_counts_are_cached_by_the_file_list(tmp_path, monkeypatch):
    import rtseg.engine.losses as losses

    root = _write_folder(tmp_path / "ds")
    ds = FolderDataset(root, "train")
    calls = []
    real = losses.class_frequencies
    monkeypatch.setattr(losses, "class_frequencies", lambda *a, **k: calls.append(1) or real(*a, **k))
    first = losses.cached_class_frequencies(ds, 3, 255, tmp_path / "cache")
    again = losses.cached_class_frequencies(FolderDataset(root, "train"), 3, 255, tmp_path / "cache")
    assert len(calls) == 1 and np.array_equal(first, again) and first.sum() == 3 * (20 * 30 - 1)
    # another file list (a label rewritten) is counted afresh
    Image.fromarray(np.zeros((20, 30), np.uint8)).save(root / "labels" / "train" / "f0.png")
    changed = losses.cached_class_frequencies(FolderDataset(root, "train"), 3, 255, tmp_path / "cache")
    assert len(calls) == 2 and changed[0] > first[0]
