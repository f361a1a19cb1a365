"""Accuracy of every reduced-precision inference path against fp32, on real images: arg-max agreement and mIoU change.

Paths (each gets the same normalised input: the frame at ``--size``, shrunk as in training for weights trained on
shrunk images; logits are resized to the label size before the arg-max, as ``rtseg eval`` does):

- ``torch-bf16``: ``rtseg.optimize(model, precision="bf16")`` (bf16 weights, channels-last, not compiled);
- ``openvino-fp32`` / ``openvino-bf16``: the OpenVINO IR with the fp32 / bf16 inference precision hint;
- ``ort-int8``: ONNX Runtime static INT8 (QDQ, per-channel weights), calibrated on ``--calibration-count`` images;
- ``nncf-int8``: OpenVINO NNCF post-training INT8 quantization, calibrated on the same images.

The reference is the eager fp32 PyTorch model. The issue's goals: bf16 changes mIoU by less than 0.002, INT8
by less than 0.005 (column "pass"). With ``--rounds N`` the paths (and fp32 eager / ONNX Runtime fp32) are also
timed side by side, interleaved, on one input: only meaningful on a quiet machine.

    # official ESPNet CamVid weights (12 outputs, level-1 skip); their preprocessing is BGR, mean/std on the 0-255
    # scale, then /255 (pass it as JSON until rtseg has the preset)
    python benchmarks/precision_camvid.py --model espnet --num-classes 12 --option decoder_skip=level1-image \\
        --weights ../shared/weights/espnet/decoder_espnet_p_2_q_8_camvid.pth --data camvid --root ../shared/data/camvid \\
        --normalization '{"name": "espnet-camvid", "mean": [...], "std": [...], "channel_order": "BGR", "post_scale": 0.00392156862745098}'
    # an rtseg checkpoint (normalisation and classes come from it)
    python benchmarks/precision_camvid.py --model runs/camvid-fplnet/best.pt --data camvid --root ../shared/data/camvid --size 360x480
    python benchmarks/precision_camvid.py --table precision.json      # print the table of earlier runs
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

PATHS = ("torch-bf16", "openvino-fp32", "openvino-bf16", "ort-int8", "nncf-int8")
GOAL = {"bf16": 0.002, "fp32": 0.002, "int8": 0.005}  # largest allowed |mIoU change| per precision (issue 17)


def _normalization(text: str | None):
    from rtseg.data.normalization import Normalization, get_normalization

    if text is None:
        return None
    if text.lstrip().startswith("{"):
        d = json.loads(text)
        return Normalization(d["name"], tuple(d["mean"]), tuple(d["std"]), d.get("channel_order", "RGB"), float(d.get("post_scale", 1.0)))
    return get_normalization(text)


def _calibration_dir(args) -> Path:
    if args.calibration:
        return Path(args.calibration)
    root = Path(args.root)
    for candidate in (root / "train", root / "leftImg8bit" / "train", root / "leftImg8bit" / "val"):
        if candidate.is_dir():
            return candidate
    raise SystemExit(f"no training images found under {root} for INT8 calibration; pass --calibration DIR")


def build_paths(model, size, names, calibration: Path, count: int, threads: int, tmp: Path) -> tuple[dict, dict]:
    """name -> callable(normalised 1x3xHxW float32 array) -> logits tensor, and notes per path."""
    from rtseg.deploy.optimize import optimize
    from rtseg.deploy.quantize import calibration_images

    runners, notes = {}, {}
    files = calibration_images(calibration, count) if any(n.endswith("int8") for n in names) else []
    if "torch-bf16" in names:
        fast = optimize(model, size, channels_last=True, compile=False, precision="bf16", verify=False)
        runners["torch-bf16"] = lambda x, m=fast: m(torch.from_numpy(x))
    if any(n.startswith("openvino") or n == "nncf-int8" for n in names):
        from rtseg.deploy.openvino_backend import compile_ir, export_openvino, quantize_nncf

        export_openvino(model, tmp / "fp32.xml", size)
        for p in ("fp32", "bf16"):
            if f"openvino-{p}" in names:
                compiled, choice = compile_ir(tmp / "fp32.xml", p, threads)
                runners[f"openvino-{p}"] = lambda x, c=compiled: torch.from_numpy(c(x)[0])
                notes[f"openvino-{p}"] = choice.summary()
        if "nncf-int8" in names:
            quantize_nncf(tmp / "fp32.xml", tmp / "int8.xml", files)
            compiled, _ = compile_ir(tmp / "int8.xml", "fp32", threads)
            runners["nncf-int8"] = lambda x, c=compiled: torch.from_numpy(c(x)[0])
            notes["nncf-int8"] = f"NNCF defaults, {len(files)} calibration images from {calibration}"
    if "ort-int8" in names or "ort-fp32" in names:
        from rtseg.deploy.onnx_export import export_onnx, ort_session
        from rtseg.deploy.quantize import quantize_int8

        export_onnx(model, tmp / "fp32.onnx", size)
        if "ort-fp32" in names:
            s32 = ort_session(tmp / "fp32.onnx", threads=threads, spinning=False)
            runners["ort-fp32"] = lambda x, s=s32: torch.from_numpy(s.run(None, {"image": x})[0])
        if "ort-int8" in names:
            quantize_int8(tmp / "fp32.onnx", tmp / "int8.onnx", files)
            s8 = ort_session(tmp / "int8.onnx", threads=threads, spinning=False)
            runners["ort-int8"] = lambda x, s=s8: torch.from_numpy(s.run(None, {"image": x})[0])
            notes["ort-int8"] = f"static QDQ, per-channel weights, {len(files)} calibration images from {calibration}"
    return runners, notes


def measure(args) -> dict:
    from torch.utils.data import Subset

    from rtseg.cpu import cpu_info
    from rtseg.config import DEFAULTS
    from rtseg.data.datasets import build_dataset, dataset_classes
    from rtseg.data.normalization import get_normalization
    from rtseg.data.transforms import EvalTransform
    from rtseg.data.transformed import TransformedDataset
    from rtseg.efficiency import time_calls
    from rtseg.inference import load_model
    from rtseg.metrics import ConfusionMatrix

    torch.set_num_threads(args.threads)
    options = {}
    for item in args.option:
        key, _, value = item.partition("=")
        options[key] = value
    model = load_model(args.model, weights=args.weights, num_classes=args.num_classes, **options)
    from rtseg.card import card_of

    norm = _normalization(args.normalization)
    if norm is not None:  # travels on the card into the exports' metadata (and the INT8 calibration)
        model.rtseg_card = card_of(model).replace(normalization=get_normalization(norm))
    norm = card_of(model).normalization
    size = tuple(int(v) for v in args.size.split("x"))
    # weights trained on shrunk images (FarSee-Net's low-resolution input) see the frame shrunk as in training
    net_size = card_of(model).network_input_size(size) or size
    data_cfg = {**DEFAULTS["data"], "dataset": args.data, "root": args.root, "image_size": list(size), "input_scale": card_of(model).input_scale,
                "val_split": args.split}
    classes = dataset_classes(data_cfg)
    dataset = TransformedDataset(build_dataset(data_cfg, "val"), EvalTransform(data_cfg, norm))
    if args.val_images:
        dataset = Subset(dataset, range(min(args.val_images, len(dataset))))
    names = list(args.paths)
    if args.rounds:
        names += [n for n in ("ort-fp32",) if n not in names]
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        runners = {"fp32": lambda x: model(torch.from_numpy(x))}
        extra, notes = build_paths(model, net_size, names, _calibration_dir(args), args.calibration_count, args.threads, Path(tmp))
        runners.update(extra)
        cms = {k: ConfusionMatrix(classes.num_classes, classes.ignore_index) for k in runners}
        agree = {k: 0 for k in runners}
        total = 0
        with torch.inference_mode():
            for i in range(len(dataset)):
                x, label = dataset[i]
                xn = x[None].numpy().astype(np.float32)
                preds = {}
                for k, run in runners.items():
                    logits = run(xn).float()
                    if tuple(logits.shape[-2:]) != tuple(label.shape[-2:]):
                        logits = F.interpolate(logits, size=tuple(label.shape[-2:]), mode="bilinear", align_corners=False)
                    preds[k] = logits.argmax(1)[0]
                    cms[k].update(preds[k], label)
                for k in runners:
                    agree[k] += int((preds[k] == preds["fp32"]).sum())
                total += preds["fp32"].numel()
            timings = {}
            if args.rounds:
                xn = dataset[0][0][None].numpy().astype(np.float32)
                times = time_calls({k: (lambda run=run: run(xn)) for k, run in runners.items()}, 1, args.rounds)
                timings = {k: statistics.median(v) for k, v in times.items()}
    miou = {k: cm.summary(classes.names)["miou"] for k, cm in cms.items()}
    is_checkpoint = Path(args.model).is_file()
    rec = {"model": card_of(model).model if is_checkpoint else str(args.model),
           "weights": str(args.model) if is_checkpoint else (args.weights or "random"),
           "options": options, "normalization": norm.to_dict(),
           "data": args.data, "split": args.split, "images": len(dataset), "size": list(size), "network_input": list(net_size), "threads": args.threads,
           "torch": torch.__version__, "cpu": cpu_info().describe(), "miou_fp32": miou["fp32"], "paths": {}}
    for k in runners:
        if k == "fp32":
            continue
        precision = k.split("-")[1]
        change = miou[k] - miou["fp32"]
        rec["paths"][k] = {"argmax_agreement": agree[k] / total, "miou": miou[k], "miou_change": change,
                           "goal": GOAL[precision], "pass": abs(change) < GOAL[precision], "note": notes.get(k, "")}
        if timings:
            rec["paths"][k]["ms"] = timings[k]
    if timings:
        rec["fp32_eager_ms"] = timings["fp32"]
    return rec


def _size(record: dict) -> str:
    """The frame size, and the network's input when the weights see the frame shrunk (FarSee-Net)."""
    size, net = record["size"], record.get("network_input", record["size"])
    return f"{size[0]}x{size[1]}" + ("" if list(net) == list(size) else f" (input {net[0]}x{net[1]})")


def table(records: list[dict]) -> str:
    lines = ["| model | weights | data (images) | size | fp32 mIoU | path | = fp32 pixels | mIoU | change | goal | pass |",
             "|---|---|---|---|---:|---|---:|---:|---:|---:|---|"]
    for r in records:
        for k, p in r["paths"].items():
            lines.append(f"| {r['model']} | {Path(str(r['weights'])).name} | {r['data']} {r['split']} ({r['images']}) | {_size(r)} | "
                         f"{r['miou_fp32']:.4f} | {k} | {100 * p['argmax_agreement']:.2f} % | {p['miou']:.4f} | {p['miou_change']:+.4f} | "
                         f"< {p['goal']} | {'yes' if p['pass'] else 'no'} |")
    timed = [r for r in records if "fp32_eager_ms" in r]
    if timed:
        paths = list(dict.fromkeys(k for r in timed for k, p in r["paths"].items() if "ms" in p))
        lines += ["", "| model | weights | size | fp32 eager ms | " + " | ".join(f"{k} ms" for k in paths) + " |",
                  "|---|---|---|---:|" + "---:|" * len(paths)]
        for r in timed:
            cells = [f"{r['paths'][k]['ms']:.1f}" if "ms" in r["paths"].get(k, {}) else "-" for k in paths]
            lines.append(f"| {r['model']} | {Path(str(r['weights'])).name} | {_size(r)} | {r['fp32_eager_ms']:.1f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--table", type=Path, help="only print the table of a JSON file written earlier")
    parser.add_argument("--model", help="a registered model name or an rtseg checkpoint")
    parser.add_argument("--weights", help="weights file for a model name")
    parser.add_argument("--num-classes", type=int)
    parser.add_argument("--option", action="append", default=[], help="model option KEY=VALUE (repeatable), e.g. decoder_skip=level1-image")
    parser.add_argument("--normalization", help="a normalisation preset name, or JSON {name, mean, std, channel_order, post_scale}")
    parser.add_argument("--data", default="camvid", help="camvid or cityscapes")
    parser.add_argument("--root", default=str(Path(__file__).resolve().parents[1].parent / "shared/data/camvid"))
    parser.add_argument("--split", default="val")
    parser.add_argument("--size", default="360x480", help="frame HxW the images are resized to; the network gets it shrunk by its card's input_scale "
                        "(FarSee-Net's weights: half of it), as rtseg eval does; labels are scored at full resolution")
    parser.add_argument("--val-images", type=int, default=0, help="only the first N images (default: all)")
    parser.add_argument("--calibration", help="folder of INT8 calibration images (default: the dataset's train images)")
    parser.add_argument("--calibration-count", type=int, default=32)
    parser.add_argument("--paths", nargs="+", default=list(PATHS), choices=PATHS)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=0, help="also time every path side by side (interleaved rounds); 0 = no timing")
    parser.add_argument("--json", type=Path, default=Path("precision-camvid.json"), help="records are appended to this file")
    args = parser.parse_args()
    if args.table:
        print(table(json.loads(args.table.read_text())))
        return 0
    if not args.model:
        parser.error("--model is required (or --table FILE)")
    rec = measure(args)
    records = json.loads(args.json.read_text()) if args.json.is_file() else []
    records.append(rec)
    args.json.write_text(json.dumps(records, indent=1))
    print(table([rec]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
