"""The GPU training script's CPU dry run and the CamVid packer (the GPU itself is never needed by tests)."""
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

from pack_camvid import pack  # noqa: E402


def _tiny_camvid(root: Path, n: int = 3) -> Path:
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        (root / split).mkdir(parents=True)
        (root / f"{split}annot").mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(root / split / f"f{i}.png")
            Image.fromarray(rng.integers(0, 12, (48, 64), dtype=np.uint8), mode="L").save(root / f"{split}annot" / f"f{i}.png")
    return root


def test_packed_camvid_keeps_stems_and_lossless_labels(tmp_path):
    src = _tiny_camvid(tmp_path / "src")
    size = pack(src, tmp_path / "packed")
    assert size > 0
    assert sorted(p.name for p in (tmp_path / "packed" / "train").iterdir()) == ["f0.jpg", "f1.jpg", "f2.jpg"]
    assert np.array_equal(np.asarray(Image.open(tmp_path / "packed" / "valannot" / "f1.png")), np.asarray(Image.open(src / "valannot" / "f1.png")))
    from rtseg.data.datasets import CamVidDataset

    packed = CamVidDataset(tmp_path / "packed", "train")  # JPEG images pair with PNG labels by stem
    image, label = packed[0]
    assert image.shape == (48, 64, 3) and label.shape == (48, 64)


def test_train_zoo_dry_run_writes_one_archive(tmp_path):
    data = _tiny_camvid(tmp_path / "camvid")
    out = tmp_path / "out"
    env = {"PATH": "/usr/bin:/bin", "RTSEG_CAMVID": str(data), "PYTHON": sys.executable, "RTSEG_ZOO_RECIPES": "camvid-espnet", "HOME": str(tmp_path)}
    proc = subprocess.run(["bash", str(ROOT / "benchmarks/gpu/train_zoo.sh"), "--dry-run", str(out)], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    with tarfile.open(out / "zoo.tar") as tar:
        names = tar.getnames()
    assert "./camvid-espnet/metrics.csv" in names and "./camvid-espnet/summary.json" in names, names
    assert not (out / "zoo").exists()


def test_train_zoo_without_data_says_how_to_pack_it(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "RTSEG_CAMVID": str(tmp_path / "none"), "PYTHON": sys.executable}
    proc = subprocess.run(["bash", str(ROOT / "benchmarks/gpu/train_zoo.sh"), str(tmp_path / "out"), "60"], env=env, capture_output=True, text=True)
    assert proc.returncode == 2 and "tools/pack_camvid.py" in proc.stderr
