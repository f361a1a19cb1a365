"""Label mapping for folder datasets (label_map, reduce_zero_label) and the load-time class-presence check."""
import numpy as np
import pytest
from PIL import Image

from rtseg.data.datasets import DatasetError, build_dataset, check_label_values
from rtseg.data.folder import FolderDataset


def _write(root, labels: list[np.ndarray], spec: str, split="train"):
    (root / "images" / split).mkdir(parents=True, exist_ok=True)
    (root / "labels" / split).mkdir(parents=True, exist_ok=True)
    for i, lab in enumerate(labels):
        Image.fromarray(np.zeros((*lab.shape, 3), np.uint8)).save(root / "images" / split / f"f{i}.png")
        Image.fromarray(lab).save(root / "labels" / split / f"f{i}.png")
    (root / "dataset.yaml").write_text(spec)
    return root


def _mask(values, shape=(4, 6)):
    lab = np.full(shape, values[0], np.uint8)
    lab.reshape(-1)[: len(values)] = values
    return lab


def test_binary_0_255_masks_are_refused_with_the_fix(tmp_path):
    root = _write(tmp_path / "ds", [_mask([0, 255, 255]), _mask([0, 0, 255])], "classes: [background, object]\n")
    with pytest.raises(DatasetError) as err:
        build_dataset({"dataset": "folder", "root": str(root)}, "train")
    msg = str(err.value)
    assert "[0, 255]" in msg and "'object' (value 1)" in msg and "label_map: {0: 0, 255: 1}" in msg


def test_the_suggested_label_map_fixes_the_trap(tmp_path):
    masks = [_mask([0, 255, 255]), _mask([0, 0, 255])]
    root = _write(tmp_path / "ds", masks, "classes: [background, object]\nlabel_map: {0: 0, 255: 1}\n")
    ds = build_dataset({"dataset": "folder", "root": str(root)}, "train")
    assert np.array_equal(ds.label(0), np.where(masks[0] == 255, 1, 0))
    _, lab = ds[1]
    assert lab.dtype == np.uint8 and lab.reshape(-1)[:3].tolist() == [0, 0, 1]


def test_label_map_by_name_and_to_ignore(tmp_path):
    lab = _mask([10, 20, 30, 40])
    root = _write(tmp_path / "ds", [lab], "classes: [road, car]\nlabel_map: {10: road, 20: car, 30: 255, 40: 1}\n")
    out = FolderDataset(root).label(0)
    assert out.reshape(-1)[:4].tolist() == [0, 1, 255, 1]


def test_unlisted_raw_value_is_an_error_naming_file_and_value(tmp_path):
    root = _write(tmp_path / "ds", [_mask([0, 1, 7])], "classes: [a, b]\nlabel_map: {0: a, 1: b}\n")
    with pytest.raises(DatasetError, match=r"f0\.png.*\[7\].*label_map"):
        FolderDataset(root).label(0)


def test_reduce_zero_label(tmp_path):
    lab = _mask([0, 1, 2, 3, 255])
    root = _write(tmp_path / "ds", [lab], "classes: [a, b, c]\nreduce_zero_label: true\n")
    out = FolderDataset(root).label(0)
    assert out.reshape(-1)[:5].tolist() == [255, 0, 1, 2, 255]
    # raw 4 would become class 3, which does not exist: an error naming the file
    Image.fromarray(_mask([0, 4])).save(root / "labels" / "train" / "f0.png")
    with pytest.raises(DatasetError, match=r"f0\.png.*\[3\].*after reduce_zero_label"):
        FolderDataset(root).label(0)


def test_a_class_that_never_occurs_is_named(tmp_path):
    root = _write(tmp_path / "ds", [_mask([0, 1, 1]), _mask([1, 0])], "classes: [sky, road, car]\n")
    with pytest.raises(DatasetError, match=r"'car' \(value 2\).*never occur.*values found: \[0, 1\]"):
        check_label_values(FolderDataset(root), tmp_path / "cache", require_all_classes=True)
    # validation labels need not hold every class
    check_label_values(FolderDataset(root), tmp_path / "cache", require_all_classes=False)


def test_passed_check_is_remembered_per_label_map(tmp_path):
    root = _write(tmp_path / "ds", [_mask([0, 255])], "classes: [bg, fg]\nlabel_map: {0: 0, 255: 1}\n")
    check_label_values(FolderDataset(root), tmp_path / "cache", require_all_classes=True)
    assert len(list((tmp_path / "cache" / "label-checks").iterdir())) == 1
    # the same files under another mapping are checked afresh (and fail)
    (root / "dataset.yaml").write_text("classes: [bg, fg]\n")
    with pytest.raises(DatasetError, match="only the values"):
        check_label_values(FolderDataset(root), tmp_path / "cache", require_all_classes=True)


@pytest.mark.parametrize("spec, match", [
    ("classes: [a, b]\nlabel_map: {0: c}\n", "'c' is not one of the classes"),
    ("classes: [a, b]\nlabel_map: {0: 5}\n", "label_map 0: 5"),
    ("classes: [a, b]\nlabel_map: {x: a}\n", "label_map key 'x'"),
    ("classes: [a, b]\nlabel_map: [0, 1]\n", "'label_map' must map"),
    ("classes: [a, b]\nlabel_map: {0: a}\nreduce_zero_label: true\n", "cannot be combined"),
    ("classes: [a, b]\nreduce_zero_label: yes please\n", "'reduce_zero_label' must be true or false"),
])
def test_bad_mapping_specs_are_refused_naming_the_file(tmp_path, spec, match):
    root = _write(tmp_path / "ds", [_mask([0, 1])], spec)
    with pytest.raises(DatasetError, match=match) as err:
        FolderDataset(root)
    assert "dataset.yaml" in str(err.value)


def test_folder_module_does_not_import_datasets():
    """rtseg.data.datasets imports the folder format; the folder format builds on rtseg.data.paired alone (no cycle)."""
    import ast
    import inspect

    import rtseg.data.folder
    import rtseg.data.paired

    for module in (rtseg.data.folder, rtseg.data.paired):
        tree = ast.parse(inspect.getsource(module))
        imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)} | {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        assert "rtseg.data.datasets" not in imported, module.__name__
