"""Does data loading keep up with training? Loader images/s against FPLNet's training steps/s at 512x1024.

The loader reads full-size Cityscapes frames (2048x1024 PNGs from --root, the official layout, any split;
without it, synthetic 2048x1024 frames written to a temporary folder) and applies the fplnet-cityscapes
recipe's training transforms (resize to 512x1024, random scale 0.75-1.5, crop 512x1024 with ignore
padding, flip) plus normalisation. The model side is one SGD step of FPLNet on a 512x1024 batch.

    python benchmarks/loader_throughput.py --root ../shared/data/cityscapes-mini --split val --threads 2

Prints, per worker count, the loader's images/s, and the training images/s; the loader keeps up when its
rate exceeds the training rate (with workers running beside the training process on the same cores).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from rtseg.config import load_config  # noqa: E402
from rtseg.data.datasets import CityscapesDataset  # noqa: E402
from rtseg.data.transforms import TrainTransform  # noqa: E402
from rtseg.data.transformed import TransformedDataset  # noqa: E402
from rtseg.registry import create_model, get_entry  # noqa: E402


class _Repeat:
    """Cycles a few real frames so that an epoch is long enough to time."""

    def __init__(self, base, length):
        self.base, self.length, self.pairs = base, length, base.pairs

    def __len__(self):
        return self.length

    def __getitem__(self, i):
        return self.base[i % len(self.base)]


def _synthetic_tree(root: Path, n: int = 4) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(n):
        d_img, d_lab = root / "leftImg8bit" / "val" / "synth", root / "gtFine" / "val" / "synth"
        d_img.mkdir(parents=True, exist_ok=True)
        d_lab.mkdir(parents=True, exist_ok=True)
        stem = f"synth_{i:06d}_000019"
        # smooth content compresses like a photo more than noise does
        base = rng.integers(0, 255, (32, 64, 3), dtype=np.uint8)
        Image.fromarray(base).resize((2048, 1024), Image.BILINEAR).save(d_img / f"{stem}_leftImg8bit.png")
        Image.fromarray(rng.choice([7, 8, 11, 21, 23, 26], (64, 128)).astype(np.uint8)).resize((2048, 1024), Image.NEAREST).save(d_lab / f"{stem}_gtFine_labelIds.png")
    return root


def loader_rate(dataset, batch: int, workers: int, batches: int) -> float:
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch, shuffle=True, num_workers=workers, drop_last=True,
                                         persistent_workers=False, generator=torch.Generator().manual_seed(0))
    it = iter(loader)
    next(it)  # worker start-up and the first batch are not the steady state
    t0 = time.perf_counter()
    n = 0
    for _ in range(batches):
        images, _ = next(it)
        n += images.shape[0]
    return n / (time.perf_counter() - t0)


def train_rate(batch: int, steps: int) -> float:
    model = create_model("fplnet", num_classes=19).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.045, momentum=0.9, weight_decay=5e-4)
    crit = torch.nn.CrossEntropyLoss(ignore_index=255)
    x, y = torch.randn(batch, 3, 512, 1024), torch.randint(0, 19, (batch, 512, 1024))
    for i in range(steps + 1):
        if i == 1:
            t0 = time.perf_counter()  # the first step warms up
        opt.zero_grad()
        crit(model(x), y).backward()
        opt.step()
    return batch * steps / (time.perf_counter() - t0)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", help="Cityscapes root (official layout); default: synthetic 2048x1024 frames")
    p.add_argument("--split", default="val")
    p.add_argument("--threads", type=int, default=2, help="torch threads of the training process")
    p.add_argument("--workers", default="0,1,2", help="loader worker counts to time")
    p.add_argument("--batch", type=int, default=6, help="batch size (the recipe's full-network stage uses 6)")
    p.add_argument("--batches", type=int, default=3)
    p.add_argument("--train-batch", type=int, default=2, help="batch of the timed training steps (CPU: images/s barely depends on it)")
    p.add_argument("--train-steps", type=int, default=2)
    p.add_argument("--json", help="write the results here")
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    cfg = load_config("fplnet-cityscapes")
    tmp = None
    root = args.root
    if not root:
        tmp = tempfile.TemporaryDirectory()
        root = str(_synthetic_tree(Path(tmp.name)))
    base = CityscapesDataset(root, args.split)
    dataset = TransformedDataset(_Repeat(base, args.batch * (args.batches + 2) * 4), TrainTransform(cfg["data"], get_entry("fplnet").normalization))
    result = {"source": args.root or "synthetic 2048x1024 PNG frames", "frames": len(base), "batch": args.batch,
              "threads": args.threads, "torch": torch.__version__, "loader_images_per_s": {}}
    for w in [int(v) for v in args.workers.split(",")]:
        rate = loader_rate(dataset, args.batch, w, args.batches)
        result["loader_images_per_s"][w] = rate
        print(f"loader, {w} worker(s): {rate:6.2f} images/s", flush=True)
    result["train_batch"] = args.train_batch
    result["train_images_per_s"] = train_rate(args.train_batch, args.train_steps)
    print(f"FPLNet training at 512x1024, batch {args.train_batch}, {args.threads} thread(s): {result['train_images_per_s']:6.2f} images/s")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    if tmp:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
