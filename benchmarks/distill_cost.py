"""What a teacher costs in training speed: the trainer's step (its default precision and compiled step, as in a long CPU
run) with no teacher, with one teacher and with an ensemble, timed side by side in interleaved rounds on one batch.

    python benchmarks/distill_cost.py --student fplnet --size 360x480 --batch 8 --threads 2 \\
        --teacher espnet@../shared/weights/espnet/decoder_espnet_p_2_q_8_camvid.pth \\
        --teacher espnet@../shared/weights/espnet/decoder_espnet_p_2_q_8_camvid.pth,liteseg-mobilenetv2@camvid \\
        --json benchmarks/results-distill-cost.json
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from rtseg.data.labels import CAMVID  # noqa: E402
from rtseg.data.normalization import get_normalization  # noqa: E402
from rtseg.efficiency import conditions, time_calls  # noqa: E402
from rtseg.engine.compiled_step import compile_for_training  # noqa: E402
from rtseg.engine.finetune import build_teacher  # noqa: E402
from rtseg.engine.precision import forward_loss, optimizer_step, prepare_model, resolve_precision  # noqa: E402
from rtseg.registry import create_model  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--student", default="fplnet")
    p.add_argument("--teacher", action="append", default=[], help="MODEL@WEIGHTS, or a comma-separated ensemble; repeatable")
    p.add_argument("--size", default="360x480")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--compile", choices=["on", "off"], default="on")
    p.add_argument("--json")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    size = tuple(int(v) for v in a.size.split("x"))
    device = torch.device("cpu")
    mode = resolve_precision("auto", device)
    torch.manual_seed(0)
    base = create_model(a.student, num_classes=CAMVID.num_classes)
    g = torch.Generator().manual_seed(0)
    images = torch.randn(a.batch, 3, *size, generator=g)
    labels = torch.randint(0, CAMVID.num_classes, (a.batch, *size), generator=g)
    criterion = nn.CrossEntropyLoss(ignore_index=255)
    scaler = torch.amp.GradScaler("cuda", enabled=False)
    runs = {}
    for spec in [None, *a.teacher]:
        model = prepare_model(copy.deepcopy(base).train(), mode)
        step = compile_for_training(model) if a.compile == "on" else model
        distill = None
        if spec:
            distill = build_teacher({"teacher": spec.split(","), "loss": "kl", "temperature": 1.0, "weight": 1.0}, CAMVID,
                                    get_normalization("imagenet"), device, mode.channels_last)
            if a.compile == "on":
                for net in distill.teacher.nets:
                    net.model = compile_for_training(net.model)
        runs[spec or "no teacher"] = (step, torch.optim.Adam(model.parameters(), lr=1e-4), distill)

    def train_step(step, opt, distill):
        optimizer_step(forward_loss(step, criterion, mode, images, labels, distill), opt, scaler)

    ms = time_calls({k: (lambda r=r: train_step(*r)) for k, r in runs.items()}, 1, a.rounds, rotate=True)
    ref = statistics.median(ms["no teacher"])
    record = {"student": a.student, "precision": mode.describe(), "compiled": a.compile == "on",
              "conditions": conditions(device, size, a.batch, 1, a.rounds, torch.float32), "runs": {}}
    for k, v in ms.items():
        step_s = statistics.median(v) / 1000
        record["runs"][k] = {"images_per_s": a.batch / step_s, "step_s": step_s, "relative_to_no_teacher": ref / 1000 / step_s}
        print(f"{k}: {a.batch / step_s:.2f} images/s (step {step_s:.2f} s, {ref / 1000 / step_s:.2f}x the speed without a teacher)", flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps(record, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
