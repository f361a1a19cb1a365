"""Training speed and loss agreement of the trainer's precisions, measured side by side in one run.

    python benchmarks/train_throughput.py --model fplnet --size 360x480 --batch 8 --threads 2 --rounds 5 \
        --precisions fp32 bf16 bf16+compile
    python benchmarks/train_throughput.py --loss-curve --root ../shared/data/camvid   # + one CamVid epoch per precision

Throughput: each precision gets its own copy of the model and optimizer; rounds alternate between them
(warm-up first), each round timing ``--steps`` training steps (forward, fp32 loss, backward, Adam step) on
one random batch; the median step time of each precision is reported, with its ratio to fp32 (the trainer's
mode before train.precision existed). ``P+compile`` is precision P with the training step under torch.compile
(``train.compile``, rtseg.engine.compiled_step), compiled in the warm-up round. Loss curve: the camvid-<model> recipe's first epoch, with the same seed
and so the same batches, once in fp32 and once in bf16; the per-iteration losses of both are written out.
"""
from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from rtseg.efficiency import conditions, time_calls  # noqa: E402
from rtseg.engine.compiled_step import compile_for_training  # noqa: E402
from rtseg.engine.precision import forward_loss, optimizer_step, prepare_model, resolve_precision  # noqa: E402
from rtseg.registry import create_model  # noqa: E402


def split_mode(name: str) -> tuple[str, bool]:
    """``"bf16+compile"`` -> (``"bf16"``, True): the precision and whether the step is compiled (``+fused``, the
    fused Adam step, is read by :func:`throughput`)."""
    name = name.removesuffix("+fused")
    return name.removesuffix("+compile"), name.endswith("+compile")


def _mode(precision: str):
    """The trainer's precision, or ``fp32-cl``: fp32 in channels-last layout (a lever measured for CPUs without bf16)."""
    from rtseg.engine.precision import TrainPrecision

    if precision == "fp32-cl":
        return TrainPrecision("fp32", None, True, False)
    return resolve_precision(precision, torch.device("cpu"))


def throughput(model_name: str, size, batch: int, precisions: list[str], rounds: int, steps: int, num_classes: int = 11) -> dict:
    torch.manual_seed(0)
    base = create_model(model_name, num_classes=num_classes)
    g = torch.Generator().manual_seed(0)
    images, labels = torch.randn(batch, 3, *size, generator=g), torch.randint(0, num_classes, (batch, *size), generator=g)
    runs = {}
    for name in precisions:
        precision, compiled = split_mode(name)
        mode = _mode(precision)
        model = prepare_model(copy.deepcopy(base).train(), mode)
        step = compile_for_training(model) if compiled else model
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-4, fused=True) if name.endswith("+fused") else torch.optim.Adam(model.parameters(), lr=1e-4)
        runs[name] = (mode, step, optimizer, [])
    scaler = torch.amp.GradScaler("cuda", enabled=False)
    criterion = nn.CrossEntropyLoss()

    def train_steps(mode, model, opt) -> None:
        for _ in range(steps):
            optimizer_step(forward_loss(model, criterion, mode, images, labels), opt, scaler)

    # one warm-up round for every mode first (oneDNN builds its kernels on first use)
    ms = time_calls({name: (lambda r=r: train_steps(*r[:3])) for name, r in runs.items()}, 1, rounds)
    for name, (_, _, _, times) in runs.items():
        times.extend(t / 1000.0 / steps for t in ms[name])
    out = {}
    ref = statistics.median(runs[precisions[0]][3])
    for name, (mode, _, _, times) in runs.items():
        step = statistics.median(times)
        described = mode.describe() + (", compiled" if split_mode(name)[1] else "")
        out[name] = {"precision": described, "step_s_median": step, "images_per_s": batch / step, "speedup_vs_" + precisions[0]: ref / step, "step_s_all": times}
    return out


def loss_curve(model_name: str, root: str, precisions: list[str], threads: int) -> dict:
    from rtseg.config import load_config
    from rtseg.engine.trainer import Trainer

    curves = {}
    for name in precisions:
        precision, compiled = split_mode(name)
        cfg = load_config(f"camvid-{model_name}", [f"data.root={root}", f"train.precision={precision}", f"train.threads={threads}",
                                                   "train.tensorboard=false", f"train.compile={'on' if compiled else 'off'}"])
        trainer = Trainer(cfg, Path("/tmp") / f"rtseg-loss-curve-{name}", progress=False)
        losses, t0 = [], time.perf_counter()
        for images, labels in trainer._loader(trainer.train_set, True, 0):
            lr = trainer.schedule.apply(trainer.optimizer, trainer.iteration, 0)
            loss = forward_loss(trainer.step_net, trainer.criterion, trainer.precision, images, labels)
            optimizer_step(loss, trainer.optimizer, trainer.scaler)
            trainer.iteration += 1
            losses.append(round(loss.item(), 5))
        curves[name] = {"precision": trainer.precision.describe(), "compile": trainer.compile.describe(), "losses": losses, "epoch_s": time.perf_counter() - t0, "lr_last": lr}
    return curves


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="fplnet")
    p.add_argument("--size", default="360x480")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--precisions", nargs="+", default=["fp32", "bf16", "bf16+compile"],
                   help="fp32, bf16, fp16 (CUDA), each optionally +compile; the first is the reference")
    p.add_argument("--loss-curve", action="store_true")
    p.add_argument("--root", help="CamVid root for --loss-curve")
    p.add_argument("--json", default="benchmarks/results-train-throughput.json")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    size = tuple(int(v) for v in a.size.split("x"))
    record = {"model": a.model, "conditions": conditions(torch.device("cpu"), size, a.batch, 1, a.rounds, torch.float32)}
    record["conditions"]["mode"] = f"train steps, {a.steps} per round, rounds interleaved across precisions, median"
    record["throughput"] = throughput(a.model, size, a.batch, a.precisions, a.rounds, a.steps)
    for name, r in record["throughput"].items():
        print(f"{a.model} {name:5s} ({r['precision']}): {r['images_per_s']:.2f} img/s, median step {r['step_s_median']:.2f} s, "
              f"x{r['speedup_vs_' + a.precisions[0]]:.2f} vs {a.precisions[0]}", flush=True)
    if a.loss_curve:
        if not a.root:
            p.error("--loss-curve needs --root (the CamVid folder)")
        record["loss_curve"] = loss_curve(a.model, a.root, a.precisions, a.threads)
        curves = record["loss_curve"]
        first = curves[a.precisions[0]]["losses"]
        print(f"first CamVid epoch: {a.precisions[0]} loss {first[0]:.3f} -> {first[-1]:.3f} in {curves[a.precisions[0]]['epoch_s']:.0f} s")
        for name in a.precisions[1:]:
            other = curves[name]["losses"]
            gaps = [abs(x - y) / x for x, y in zip(first, other)]
            curves[name]["relative_gap_to_" + a.precisions[0]] = {"mean": statistics.fmean(gaps), "largest": max(gaps)}
            print(f"  {name}: loss {other[0]:.3f} -> {other[-1]:.3f} in {curves[name]['epoch_s']:.0f} s (compilation included); "
                  f"relative gap to {a.precisions[0]}: mean {statistics.fmean(gaps):.3f}, largest {max(gaps):.3f}")
    Path(a.json).write_text(json.dumps(record, indent=1))
    print(f"written {a.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
