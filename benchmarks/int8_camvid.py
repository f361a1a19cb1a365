"""INT8 (ONNX Runtime static quantization) vs FP32 on CamVid images: latency and prediction change.

For each model: FP32 ONNX export at 360x480 (CamVid's size), INT8 QDQ quantization calibrated on CamVid
train images, then interleaved ONNX Runtime timing of both and, on CamVid val images, the pixel agreement
of the INT8 and FP32 label maps plus the mIoU of each against the CamVid labels. rtseg has no trained
CamVid weights here, so with the default random weights the mIoUs are near chance and only the
agreement and the speed are informative; pass --checkpoint MODEL=PATH to measure trained models.

    python benchmarks/int8_camvid.py --camvid ../shared/data/camvid --models fplnet erfnet liteseg-mobilenetv2
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--camvid", type=Path, default=Path(__file__).resolve().parents[1].parent / "shared/data/camvid")
    parser.add_argument("--models", nargs="+", default=["fplnet", "erfnet", "liteseg-mobilenetv2"])
    parser.add_argument("--checkpoint", nargs="*", default=[], help="MODEL=PATH: trained checkpoints to use instead of random weights")
    parser.add_argument("--calibration", type=int, default=16)
    parser.add_argument("--size", default="360x480", help="model input HxW (predictions are scored at the labels' 360x480)")
    parser.add_argument("--val-images", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", type=Path, default=Path("int8-camvid.json"))
    args = parser.parse_args()
    import rtseg
    from PIL import Image

    from rtseg.deploy.onnx_export import export_onnx, ort_session
    from rtseg.deploy.ort import OnnxSegmenter
    from rtseg.deploy.quantize import calibration_images, quantize_int8
    from rtseg.efficiency import time_calls
    from rtseg.inference import load_model
    from rtseg.metrics import ConfusionMatrix

    torch.set_num_threads(args.threads)
    ckpts = dict(c.split("=", 1) for c in args.checkpoint)
    size = tuple(int(v) for v in args.size.split("x"))
    val = sorted((args.camvid / "val").glob("*.png"))[: args.val_images]
    records = []
    for name in args.models:
        torch.manual_seed(0)
        model = load_model(ckpts[name]) if name in ckpts else rtseg.create_model(name, num_classes=11).eval()
        with tempfile.TemporaryDirectory() as tmp:
            fp32, int8 = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
            export_onnx(model, fp32, size)
            quantize_int8(fp32, int8, calibration_images(args.camvid / "train", args.calibration))
            sessions = {"fp32": ort_session(fp32, threads=args.threads), "int8": ort_session(int8, threads=args.threads)}
            x = np.random.default_rng(0).standard_normal((1, 3, *size)).astype(np.float32)
            times = time_calls({k: (lambda s=s: s.run(None, {"image": x})) for k, s in sessions.items()}, 1, args.rounds)
            segs = {k: OnnxSegmenter(p, threads=args.threads) for k, p in (("fp32", fp32), ("int8", int8))}
            cms = {k: ConfusionMatrix(11, ignore_index=11) for k in segs}
            agree, total = 0, 0
            for f in val:
                rgb = np.asarray(Image.open(f).convert("RGB"))
                label = np.asarray(Image.open(args.camvid / "valannot" / f.name))
                preds = {k: s.predict(rgb) for k, s in segs.items()}
                for k in segs:
                    cms[k].update(torch.from_numpy(preds[k].astype(np.int64)), torch.from_numpy(label.astype(np.int64)))
                agree += int((preds["fp32"] == preds["int8"]).sum())
                total += preds["fp32"].size
            rec = {"model": name, "weights": ckpts.get(name, "random (seed 0)"), "size": list(size), "threads": args.threads,
                   "fp32_ms": statistics.median(times["fp32"]), "int8_ms": statistics.median(times["int8"]),
                   "fp32_bytes": fp32.stat().st_size, "int8_bytes": int8.stat().st_size,
                   "pixel_agreement": agree / total, "miou_fp32": cms["fp32"].summary()["miou"], "miou_int8": cms["int8"].summary()["miou"],
                   "calibration_images": args.calibration, "val_images": len(val)}
        rec["speedup"] = rec["fp32_ms"] / rec["int8_ms"]
        records.append(rec)
        print(json.dumps(rec), flush=True)
        args.json.write_text(json.dumps(records, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
