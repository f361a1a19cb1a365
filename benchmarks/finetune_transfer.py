"""Transfer to a task no zoo network was trained on: CamVid's 101 val images with the 11 classes merged into 5, as a
``folder`` dataset split 60 / 41 by frame order (the frames are one drive, so neighbouring frames stay on one side).

Three FPLNet runs with the same budget, recipe and seed: from the zoo's CamVid weights (``--weights camvid``, rows
carried over by ``model.class_map``), from scratch, and from the zoo weights with the encoder frozen. Writes the
curves and final scores as JSON and a figure (docs/training.md quotes them).

    python benchmarks/finetune_transfer.py --camvid ../shared/data/camvid --work /tmp/transfer --epochs 30 \\
        --json benchmarks/results-finetune-transfer.json --figure docs/img/finetune-transfer.png
"""
from __future__ import annotations

import argparse
import csv
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

# merged class -> CamVid classes (SegNet label values 0..10; 11 = void stays ignored)
MERGE = {
    "road": ["road"],
    "sidewalk": ["pavement"],
    "vehicle": ["car"],
    "person": ["pedestrian", "bicyclist"],
    "background": ["sky", "building", "pole", "tree", "sign-symbol", "fence"],
}
CAMVID = ["sky", "building", "pole", "road", "pavement", "tree", "sign-symbol", "fence", "car", "pedestrian", "bicyclist"]
# the zoo weights' rows that seed each merged class (the largest member)
CLASS_MAP = {"sidewalk": "pavement", "vehicle": "car", "person": "pedestrian", "background": "building"}
TRAIN_FRAMES = 60


def build_dataset(camvid: Path, out: Path) -> Path:
    """The merged 5-class folder dataset from CamVid's val split (written once)."""
    if (out / "dataset.yaml").is_file():
        return out
    lut = np.full(256, 255, np.uint8)
    for new, members in enumerate(MERGE.values()):
        for name in members:
            lut[CAMVID.index(name)] = new
    frames = sorted((camvid / "val").glob("*.png"))
    for i, image in enumerate(frames):
        split = "train" if i < TRAIN_FRAMES else "val"
        (out / "images" / split).mkdir(parents=True, exist_ok=True)
        (out / "labels" / split).mkdir(parents=True, exist_ok=True)
        (out / "images" / split / image.name).write_bytes(image.read_bytes())
        label = np.asarray(Image.open(camvid / "valannot" / image.name))
        Image.fromarray(lut[label]).save(out / "labels" / split / image.name)
    (out / "dataset.yaml").write_text("classes: [" + ", ".join(MERGE) + "]\nignore_index: 255\n")
    return out


_MAP = "model.class_map={" + ", ".join(f"{k}: {v}" for k, v in CLASS_MAP.items()) + "}"
# name -> (start weights or None, extra overrides)
RUNS = {
    "zoo weights": ("camvid", [_MAP]),
    "from scratch": (None, []),
    "zoo weights, encoder frozen": ("camvid", [_MAP, "train.freeze=[encoder]"]),
}


def run(name: str, root: Path, work: Path, epochs: int, val_every: int) -> dict:
    out = work / name.replace(",", "").replace(" ", "-")
    weights, extra = RUNS[name]
    overrides = ["data.dataset=folder", f"data.root={root}", "model.num_classes=null", f"train.epochs={epochs}",
                 f"train.val_every={val_every}", "optimizer.lr=5.0e-4", "loss.class_weights=null", "train.compile=off", *extra]
    cmd = [sys.executable, "-m", "rtseg.cli", "train", "camvid-fplnet", *overrides, "--out", str(out), "--overwrite", "--quiet"]
    if weights:
        cmd += ["--weights", weights]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{name}: {' '.join(cmd)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    with (out / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    summary = json.loads((out / "summary.json").read_text())
    return {
        "command": "rtseg " + " ".join(cmd[3:]), "wall_s": round(time.perf_counter() - t0, 1),
        "curve": [(int(r["epoch"]), float(r["val_miou"])) for r in rows if r.get("val_miou")],
        "images_per_s": [float(r["images_per_s"]) for r in rows], "final": summary["final"], "best_miou": summary["best_miou"],
        "start": summary.get("start", []), "freeze": summary.get("freeze"),
    }


def figure(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6))
    for name, r in results["runs"].items():
        epochs, miou = zip(*r["curve"])
        ax.plot(epochs, miou, marker="o", ms=3, label=f"{name} ({r['final']['miou']:.3f})")
    ax.set_xlabel("epoch")
    ax.set_ylabel("val mIoU (41 frames, 5 classes)")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title("FPLNet on a new 5-class task: zoo weights vs scratch", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--camvid", type=Path, required=True)
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--val-every", type=int, default=3)
    p.add_argument("--runs", nargs="*", default=list(RUNS))
    p.add_argument("--json", type=Path)
    p.add_argument("--figure", type=Path)
    args = p.parse_args(argv)
    root = build_dataset(args.camvid, args.work / "camvid-merged5")
    from rtseg.card import hardware_description

    results = {"task": f"CamVid val split by frame order: {TRAIN_FRAMES} train / 41 val frames, classes merged into {list(MERGE)}",
               "merge": MERGE, "class_map": CLASS_MAP, "epochs": args.epochs, "machine": platform.processor() or platform.machine(),
               "hardware": hardware_description("cpu"), "runs": {}}
    for name in args.runs:
        results["runs"][name] = run(name, root, args.work, args.epochs, args.val_every)
        r = results["runs"][name]
        print(f"{name}: final val mIoU {r['final']['miou']:.4f}, best {r['best_miou']:.4f}, {r['wall_s']:.0f} s", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    if args.figure:
        figure(results, args.figure)
    return 0


if __name__ == "__main__":
    sys.exit(main())
