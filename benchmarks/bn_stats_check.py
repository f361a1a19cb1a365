"""How much of a published network's val mIoU rests on the BatchNorm statistics it happens to carry.

With ``train.ema_bn=copy`` (what the zoo's averaged rounds ran with, before ``train.ema_bn=reestimate`` became the
default), the trainer's moving average of the weights copies the BatchNorm running statistics from the live network at
each step: they describe the live weights, not the averaged ones that are scored and shipped. This script
re-estimates them for the shipped weights, from training images only, and scores the result on the val split:

- for each of ``--repeats`` draws, ``--batches`` batches of ``--batch-size`` training images, augmented with the
  weights' own training recipe (from their card: rescale, crop, flips), are passed through the network with the
  BatchNorm layers in training mode and their statistics reset to a cumulative average over those batches (as
  ``torch.optim.swa_utils.update_bn`` does for averaged weights); nothing else changes;
- the network is then scored on all val images by rtseg's protocol.

A shipped score far above the re-estimated ones says the shipped statistics, not the weights, hold the difference:
a gain that fine-tuning from those weights loses at its first step and that need not carry to other images.

    python benchmarks/bn_stats_check.py essnet-b-dg2@camvid-v4 essnet-b-dg2@camvid-v5 fplnet@camvid-v5 \\
        --root ../shared/data/camvid --json benchmarks/results-bn-stats-camvid.json
    python benchmarks/bn_stats_check.py --table benchmarks/results-bn-stats-camvid.json
"""
from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
from pathlib import Path

import torch
import torch.nn as nn


def reestimate_bn(model: nn.Module, batches) -> int:
    """The trainer's own re-estimation (``train.ema_bn=reestimate``): every BatchNorm layer's statistics replaced by
    their average over ``batches``, dropout off, weights untouched. Returns the number of BatchNorm layers."""
    from rtseg.engine.ema import reestimate_batchnorm

    return reestimate_batchnorm(model, batches)


def training_batches(model: nn.Module, root: str, count: int, batch_size: int, seed: int):
    """``count`` batches of training images augmented by the recipe on the weights' card (a random subset)."""
    from rtseg.card import card_of
    from rtseg.data.datasets import build_dataset
    from rtseg.data.transformed import TransformedDataset
    from rtseg.data.transforms import TrainTransform

    card = card_of(model)
    trained = (card.training.config or {}) if card.training else {}
    if "data" not in trained:
        raise SystemExit(f"{card.model}: the weights' card has no training data section to take the augmentation from")
    data_cfg = {**trained["data"], "root": root}
    dataset = TransformedDataset(build_dataset(data_cfg, "train"), TrainTransform(data_cfg, card.normalization), seed=seed)
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed)).tolist()
    need = count * batch_size
    if need > len(dataset):
        raise SystemExit(f"--batches {count} x --batch-size {batch_size} = {need} images, more than the {len(dataset)} training images")
    for b in range(count):
        yield torch.stack([dataset[i][0] for i in order[b * batch_size:(b + 1) * batch_size]])


def measure(entry: str, args) -> dict:
    from rtseg.cpu import cpu_info
    from rtseg.inference import load_model
    from rtseg.tasks import evaluate

    name, _, weights = entry.partition("@")
    shipped = load_model(name, weights=weights or None)
    base = evaluate(shipped, dataset=args.data, root=args.root)
    draws = []
    for r in range(args.repeats):
        model = copy.deepcopy(shipped)
        reestimate_bn(model, training_batches(model, args.root, args.batches, args.batch_size, seed=1000 + r))
        s = evaluate(model, dataset=args.data, root=args.root)
        draws.append({"seed": 1000 + r, "miou": s["miou"], "per_class_iou": s["per_class_iou"]})
        print(f"{entry} draw {r}: {s['miou']:.4f}", file=sys.stderr, flush=True)
    mious = [d["miou"] for d in draws]
    return {"weights": entry, "data": args.data, "split": "val", "images": base["dataset"]["images"], "shipped_miou": base["miou"],
            "shipped_per_class_iou": base["per_class_iou"], "reestimated": draws, "reestimated_mean": statistics.mean(mious),
            "reestimated_sd": statistics.stdev(mious) if len(mious) > 1 else 0.0, "batches": args.batches, "batch_size": args.batch_size,
            "threads": args.threads, "torch": torch.__version__, "cpu": cpu_info().describe()}


def table(records: list[dict]) -> str:
    lines = ["| weights | shipped mIoU | re-estimated (mean +- sd over draws) | shipped - re-estimated | pole shipped / re-estimated |",
             "|---|---:|---:|---:|---:|"]
    for r in records:
        pole = statistics.mean(d["per_class_iou"].get("pole", float("nan")) for d in r["reestimated"])
        lines.append(f"| {r['weights']} | {r['shipped_miou']:.4f} | {r['reestimated_mean']:.4f} +- {r['reestimated_sd']:.4f} "
                     f"({len(r['reestimated'])} x {r['batches']} batches of {r['batch_size']}) | {r['shipped_miou'] - r['reestimated_mean']:+.4f} | "
                     f"{r['shipped_per_class_iou'].get('pole', float('nan')):.3f} / {pole:.3f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("weights", nargs="*", help="MODEL@TAG, e.g. essnet-b-dg2@camvid-v5")
    p.add_argument("--data", default="camvid")
    p.add_argument("--root", help="the dataset's folder")
    p.add_argument("--batches", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", help="write the records here")
    p.add_argument("--table", help="print the table of an earlier --json file and exit")
    args = p.parse_args(argv)
    if args.table:
        print(table(json.loads(Path(args.table).read_text())))
        return 0
    if not args.weights or not args.root:
        p.error("name at least one MODEL@TAG and the dataset's --root")
    for option in ("batches", "batch_size", "repeats", "threads"):
        if getattr(args, option) < 1:
            p.error(f"--{option.replace('_', '-')} must be at least 1")
    torch.set_num_threads(args.threads)
    records = [measure(entry, args) for entry in args.weights]
    if args.json:
        Path(args.json).write_text(json.dumps(records, indent=1) + "\n")
    print(table(records))
    return 0


if __name__ == "__main__":
    sys.exit(main())
