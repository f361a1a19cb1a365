"""How good a distillation teacher is before any run: the CamVid val mIoU of every teacher and of every ensemble of
them up to a size, computed as the trainer's teacher computes them (each network's logits mapped onto the student's
classes and averaged; void outputs left out), optionally with horizontal-flip averaging.

    python benchmarks/teacher_ensembles.py --root ../shared/data/camvid \\
        --teacher release=espnet@../shared/weights/espnet/decoder_espnet_p_2_q_8_camvid.pth \\
        --teacher liteseg=liteseg-mobilenetv2@camvid --teacher fplnet-v2=fplnet@camvid-v2 \\
        --max-members 3 --flip --json benchmarks/results-teacher-ensembles.json

Each teacher runs once per image (twice with --flip); the ensembles are scored from the stored logits.
"""
from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from rtseg.config import load_config  # noqa: E402
from rtseg.data.datasets import build_dataset, dataset_classes  # noqa: E402
from rtseg.data.normalization import get_normalization  # noqa: E402
from rtseg.data.transformed import TransformedDataset  # noqa: E402
from rtseg.data.transforms import EvalTransform  # noqa: E402
from rtseg.cpu import cpu_info  # noqa: E402
from rtseg.engine.finetune import build_teacher  # noqa: E402
from rtseg.errors import UserError  # noqa: E402
from rtseg.metrics import ConfusionMatrix  # noqa: E402
from rtseg.registry import get_entry  # noqa: E402


def parse_teacher(text: str) -> tuple[str, str]:
    name, sep, spec = text.partition("=")
    if not sep or not name or not spec:
        raise argparse.ArgumentTypeError(f"--teacher {text!r}: expected LABEL=MODEL@WEIGHTS, e.g. liteseg=liteseg-mobilenetv2@camvid")
    return name, spec


def teacher_logits(teacher, samples, flip: bool) -> tuple[list[torch.Tensor], list[torch.Tensor] | None]:
    """Per val ``(image, label)`` sample, the teacher's mapped logits at label size, and with ``flip`` the same plus
    those of the mirrored image mirrored back (stored in fp16: the scores are arg-maxes of sums)."""
    plain, flipped = [], [] if flip else None
    for image, label in samples:
        size = tuple(label.shape)
        z = teacher(image[None], size, contextlib.nullcontext())
        plain.append(z[0].half())
        if flip:
            flipped.append((z + teacher(image[None].flip(-1), size, contextlib.nullcontext()).flip(-1))[0].half())
    return plain, flipped


def score(members: list[list[torch.Tensor]], labels: list[torch.Tensor], classes) -> dict:
    conf = ConfusionMatrix(classes.num_classes, classes.ignore_index)
    for i, label in enumerate(labels):
        conf.update(sum(m[i].float() for m in members)[None], label[None])
    iou = conf.iou()
    return {"miou": conf.mean_iou(), "per_class_iou": {n: float(v) for n, v in zip(classes.names, iou)}}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", required=True, help="the CamVid folder (train/val/test and their annot folders)")
    p.add_argument("--teacher", type=parse_teacher, action="append", required=True, help="LABEL=MODEL@WEIGHTS; repeatable")
    p.add_argument("--student", default="fplnet", help="whose normalisation the images arrive in (as in its training run)")
    p.add_argument("--max-members", type=int, default=3)
    p.add_argument("--flip", action="store_true", help="also score each ensemble with horizontal-flip averaging")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--limit", type=int, help="score only the first N val images (a quick look; the record says so)")
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    if args.max_members < 1:
        p.error(f"--max-members {args.max_members}: expected 1 or more")
    if args.limit is not None and args.limit < 1:
        p.error(f"--limit {args.limit}: expected 1 or more images")
    labels_given = [n for n, _ in args.teacher]
    if len(set(labels_given)) != len(labels_given):
        p.error(f"--teacher: each needs its own LABEL (given {', '.join(labels_given)})")
    torch.set_num_threads(args.threads)

    try:  # every teacher and the data are checked before the first image is scored
        dcfg = load_config("camvid-fplnet", [f"data.root={args.root}"])["data"]
        classes = dataset_classes(dcfg)
        normalization = get_normalization(get_entry(args.student).normalization)
        data = TransformedDataset(build_dataset(dcfg, "val"), EvalTransform(dcfg, normalization), seed=0)
        teachers = {name: build_teacher({"teacher": [spec]}, classes, normalization, torch.device("cpu")).teacher
                    for name, spec in args.teacher}
    except UserError as exc:
        p.error(str(exc))
    if args.limit is not None:
        data = torch.utils.data.Subset(data, range(min(args.limit, len(data))))
    samples = [data[i] for i in range(len(data))]  # read and transformed once for every teacher
    labels = [label for _, label in samples]
    t0 = time.perf_counter()
    plain, flipped = {}, {}
    for name, spec in args.teacher:
        plain[name], flipped[name] = teacher_logits(teachers[name], samples, flip=args.flip)
        print(f"{name}: {spec} ({time.perf_counter() - t0:.0f} s)", flush=True)
    rows = []
    names = [n for n, _ in args.teacher]
    for k in range(1, min(args.max_members, len(names)) + 1):
        for members in itertools.combinations(names, k):
            row = {"members": list(members), **score([plain[m] for m in members], labels, classes)}
            if args.flip:
                row["flip_miou"] = score([flipped[m] for m in members], labels, classes)["miou"]
            rows.append(row)
            print(f"{' + '.join(members):<50} {row['miou']:.4f}" + (f"  flip {row['flip_miou']:.4f}" if args.flip else ""), flush=True)
    if args.json:
        record = {"task": "CamVid val mIoU of distillation teachers and their ensembles (mapped logits averaged, void outputs "
                          f"left out, {len(data)} val images at 360x480)",
                  "teachers": dict(args.teacher), "student_normalization": args.student, "cpu": cpu_info().describe(), "threads": args.threads,
                  "rows": sorted(rows, key=lambda r: -r["miou"])}
        args.json.write_text(json.dumps(record, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
