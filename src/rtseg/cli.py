"""The ``rtseg`` command: models, train, eval, bench, predict."""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

__all__ = ["main"]


class CLIError(Exception):
    """An error to print as one line and exit with status 2."""


# -- models ---------------------------------------------------------------------------------
def cmd_models(args: argparse.Namespace) -> int:
    from rtseg.efficiency import count_parameters
    from rtseg.registry import create_model, get_entry, list_models

    if args.pretrained:
        return _print_pretrained(args)
    rows = []
    names = list_models(args.filter)
    if not names:
        raise CLIError(f"no registered model matches {args.filter!r}; run `rtseg models` for the full list")
    for name in names:
        entry = get_entry(name)
        params = count_parameters(create_model(name, num_classes=19))
        rows.append((name, entry.paper, f"{params:,}"))
    if args.json:
        print(json.dumps([{"name": n, "paper": p, "params": int(c.replace(",", ""))} for n, p, c in rows], indent=2))
        return 0
    widths = [max(len(r[i]) for r in rows + [("model", "paper", "params (19 classes)")]) for i in range(3)]
    header = ("model", "paper", "params (19 classes)")
    print("  ".join(h.ljust(w) for h, w in zip(header, widths)))
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print(f"{r[0].ljust(widths[0])}  {r[1].ljust(widths[1])}  {r[2].rjust(widths[2])}")
    return 0


def _print_pretrained(args: argparse.Namespace) -> int:
    import fnmatch

    from rtseg.pretrained import list_pretrained, pretrained_table

    entries = [e for e in list_pretrained() if not args.filter or fnmatch.fnmatch(e.model, args.filter)]
    if not entries:
        raise CLIError(f"no pretrained weights for models matching {args.filter!r}; run `rtseg models --pretrained` for all")
    if args.json:
        print(json.dumps([{"model": e.model, "tag": e.tag, "sha256": e.sha256, "url": e.url, "file": e.file, "card": e.card.to_dict()}
                          for e in entries], indent=2))
        return 0
    print(pretrained_table(entries))
    return 0


# -- train ----------------------------------------------------------------------------------
def cmd_train(args: argparse.Namespace) -> int:
    from rtseg.config import load_config
    from rtseg.engine.trainer import train

    config = load_config(args.config, args.overrides)
    out = args.out or config["output"]["dir"].format(recipe=config.get("recipe") or "run")
    resume: bool | str = False
    if args.resume is not None:
        resume = True if args.resume == "" else args.resume
    summary = train(config, out, resume=resume, progress=not args.quiet)
    best = summary.get("best_miou")
    if best is not None and not (isinstance(best, float) and math.isinf(best)):
        print(f"best validation mIoU {best:.4f}; checkpoints in {out}")
    else:
        print(f"done; checkpoints in {out}")
    return 0


# -- eval -----------------------------------------------------------------------------------
def _print_metrics_table(summary: dict[str, Any]) -> None:
    print(f"{'class':<16} {'IoU':>8}")
    for name, v in summary["per_class_iou"].items():
        print(f"{name:<16} {('   n/a' if v is None else f'{v:8.4f}'):>8}")
    print("-" * 25)
    print(f"{'mIoU':<16} {summary['miou']:8.4f}")
    if "category_miou" in summary:
        print(f"{'category mIoU':<16} {summary['category_miou']:8.4f}")
    print(f"{'pixel accuracy':<16} {summary['pixel_accuracy']:8.4f}")
    if "frequency_weighted_iou" in summary:
        print(f"{'fwIoU':<16} {summary['frequency_weighted_iou']:8.4f}")
    print(f"{'pixels':<16} {summary['pixels']:>8}")


def cmd_eval(args: argparse.Namespace) -> int:
    import torch
    from torch.utils.data import DataLoader

    from rtseg.card import card_of
    from rtseg.config import DEFAULTS
    from rtseg.data.datasets import build_dataset, dataset_classes
    from rtseg.data.labels import CITYSCAPES_CATEGORIES, CITYSCAPES_CLASSES
    from rtseg.data.normalization import get_normalization
    from rtseg.data.transforms import EvalTransform
    from rtseg.data.transformed import TransformedDataset
    from rtseg.devices import resolve_device
    from rtseg.evaluation import evaluate_model
    from rtseg.evaluation import EvalProtocol, class_mapping, protocol_record, read_class_map
    from rtseg.inference import load_model, parse_size

    model = load_model(args.model, weights=args.weights, num_classes=args.num_classes)
    card = card_of(model)
    # weights rtseg trained remember their data: evaluate on that unless told otherwise
    trained_on: dict[str, Any] = ((card.training.config if card.training else None) or {}).get("data", {})
    data_cfg = {**DEFAULTS["data"], **trained_on}
    if args.data:
        data_cfg["dataset"] = args.data
    if args.root:
        data_cfg["root"] = args.root
    if args.samples:
        data_cfg["val_samples"] = args.samples
    size = parse_size(args.size)
    if data_cfg["dataset"] != "synthetic":
        data_cfg["image_size"] = list(size) if size else None
    elif size:
        data_cfg["image_size"] = list(size)
    data_cfg["val_split"] = args.split
    classes = dataset_classes(data_cfg)
    # the model's classes against the dataset's, before any work
    class_map = read_class_map(args.class_map) if getattr(args, "class_map", None) else None
    lut = class_mapping(card.classes, card.num_outputs, classes, class_map)
    if card.classes is None and class_map is None:
        print(f"note: {args.model} names no classes (untrained or a bare state dict); its {card.num_outputs} outputs are scored as "
              f"the dataset's classes in order", file=sys.stderr)
    norm = get_normalization(args.normalization or card.normalization)
    device = resolve_device(args.device)
    model.to(device)
    dataset = TransformedDataset(build_dataset(data_cfg, "val"), EvalTransform(data_cfg, norm))
    loader = DataLoader(dataset, batch_size=1, num_workers=args.workers)
    scales = [float(v) for v in str(getattr(args, "scales", None) or "1.0").split(",")]
    protocol = EvalProtocol(scales, getattr(args, "flip", False), parse_size(getattr(args, "window", None)), parse_size(getattr(args, "stride", None)))
    cm = evaluate_model(model, loader, classes.num_classes, device, classes.ignore_index, progress=not args.quiet, protocol=protocol, class_map=lut)
    cats = CITYSCAPES_CATEGORIES if tuple(classes.names) == CITYSCAPES_CLASSES else None
    summary = cm.summary(classes.names, cats)
    summary["model"] = str(args.model)
    summary["card"] = card.summary()
    summary["dataset"] = {"name": data_cfg["dataset"], "root": data_cfg.get("root"), "split": args.split, "images": len(dataset), "input_size": data_cfg.get("image_size")}
    summary["normalization"] = norm.to_dict()
    summary["protocol"] = protocol_record(protocol, data_cfg.get("image_size"), class_map)
    summary["torch_version"] = torch.__version__
    _print_metrics_table(summary)
    out = Path(args.json) if args.json else None
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(summary, indent=2))
        print(f"metrics written to {out}")
    return 0


# -- bench ----------------------------------------------------------------------------------
def _bench_one(name: str, args: argparse.Namespace, size) -> dict[str, Any]:
    import torch

    from rtseg.efficiency import COUNTED_OPERATIONS, count_flops, count_parameters, measure_latency
    from rtseg.inference import load_model

    from rtseg.card import card_of

    model = load_model(name, num_classes=args.num_classes)
    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[args.dtype]
    record: dict[str, Any] = {"model": name, "card": card_of(model).summary(), "params": count_parameters(model)}
    record.update(count_flops(model, size, 1))
    if getattr(args, "train", False):
        from rtseg.efficiency import measure_training_throughput

        num_classes = getattr(model, "num_classes", None) or args.num_classes
        record.update(measure_training_throughput(model, num_classes, size, args.batch, args.precision or "auto", args.device, args.warmup, args.iters, args.threads))
        return record
    if getattr(args, "backend", "torch") == "onnxruntime":
        from rtseg.deploy.ort import measure_ort_latency

        record.update(measure_ort_latency(model, size, args.batch, args.warmup, args.iters, args.threads, args.device))
        record["flops_counted_operations"] = COUNTED_OPERATIONS
        return record
    if getattr(args, "backend", "torch") == "openvino":
        from rtseg.deploy.openvino_backend import measure_openvino_latency

        record.update(measure_openvino_latency(model, size, args.batch, args.warmup, args.iters, args.threads, _inference_precision(args), args.device))
        record["flops_counted_operations"] = COUNTED_OPERATIONS
        return record
    if getattr(args, "optimize", False):
        model = _optimized(model, args, size)
        record["optimization"] = model.rtseg_optimization.summary()
    record["flops_counted_operations"] = COUNTED_OPERATIONS
    record["flops_batch"] = 1
    record.update(measure_latency(model, size, args.batch, args.device, args.warmup, args.iters, dtype, args.threads))
    if getattr(args, "optimize", False) and model.rtseg_optimization.precision != "fp32":
        record["precision"] = model.rtseg_optimization.precision_reason
        record["conditions"]["dtype"] = f"{model.rtseg_optimization.precision} (float32 input and logits)"
    return record


def _optimized(model, args: argparse.Namespace, size=None):
    """``rtseg.optimize`` with the command's --compile / --compile-mode / --channels-last choices."""
    from rtseg.deploy.optimize import optimize

    pick = {"off": False, "on": True, "auto": "auto"}
    device = getattr(args, "device", "cpu")
    device = "cpu" if device in (None, "auto") else device
    timing_size = size if size is not None else (256, 512)
    return optimize(model, timing_size, channels_last=pick[args.channels_last], compile=pick[args.compile],
                    compile_mode=args.compile_mode, device=device, timing_iters=3, precision=_inference_precision(args))


def _inference_precision(args: argparse.Namespace) -> str:
    return getattr(args, "precision", None) or "fp32"


def _check_precision_option(args: argparse.Namespace) -> None:
    if getattr(args, "train", False):
        return  # training steps take every train.precision
    precision = _inference_precision(args)
    if precision == "fp16":
        raise CLIError("--precision fp16 applies to bench --train (CUDA); for fp16 inference in bench use --dtype fp16")
    openvino = getattr(args, "backend", "torch") == "openvino" or str(getattr(args, "model", "")).endswith(".xml")
    if precision != "fp32" and not openvino and not getattr(args, "optimize", False):
        raise CLIError(f"--precision {precision} applies with --optimize or --backend openvino (for plain PyTorch in bench, use --dtype)")


def _add_optimize_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--optimize", action="store_true", help="fold BatchNorm, drop dropout, group gradual layers (rtseg.optimize)")
    p.add_argument("--channels-last", choices=["off", "on", "auto"], default="auto",
                   help="with --optimize: channels-last memory format; auto keeps it only when a timing shows it is faster")
    p.add_argument("--compile", choices=["off", "on", "auto"], default="auto",
                   help="with --optimize: torch.compile (auto: kept only when a timing shows it is faster; "
                        "compiling takes seconds to tens of seconds per model and input size, --compile off skips it)")
    p.add_argument("--compile-mode", default=None,
                   help="torch.compile mode, e.g. reduce-overhead (CUDA graphs on a GPU) or max-autotune")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16"], default=None,
                   help="with --optimize or --backend openvino (default fp32): bf16 inference on CPUs; auto picks bf16 only on a CPU "
                        "with native bf16 whose arg-max agrees with fp32 on a check input. With bench --train (default auto): the "
                        "trainer's train.precision")


def cmd_bench(args: argparse.Namespace) -> int:
    from rtseg.inference import parse_size
    from rtseg.registry import list_models

    size = parse_size(args.size)
    _check_precision_option(args)
    if args.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise CLIError("--device cuda was asked for but CUDA is not available on this machine; use --device cpu")
    if args.all:
        names = list_models(args.filter)
    elif args.model:
        names = [args.model]
    else:
        raise CLIError("name a model (rtseg bench erfnet) or pass --all")
    records = []
    for name in names:
        rec = _bench_one(name, args, size)
        records.append(rec)
        if args.all and getattr(args, "optimize", False):
            import torch

            # Every model's compiled graph starts from the same forward code: without a reset, the models after
            # the first few would exceed torch.compile's recompilation limit and silently run uncompiled.
            torch._dynamo.reset()
        if not args.all and "images_per_s" in rec:
            c = rec["conditions"]
            print(f"model          {name} (training step)")
            print(f"throughput     {rec['images_per_s']:.2f} images/s  (median step {rec['step_ms_median']:.0f} ms, batch {c['batch']})")
            print(f"precision      {c['precision']}")
            print(f"conditions     {c['device_name']} ({c['device']}), {c['threads']} threads, {size[0]}x{size[1]}, "
                  f"warm-up {c['warmup']}, {c['iters']} steps, torch {c['torch_version']}")
        elif not args.all:
            c = rec["conditions"]
            print(f"model          {name}")
            print(f"parameters     {rec['params']:,}")
            print(f"MACs           {rec['macs'] / 1e9:.3f} G  (FLOPs {rec['flops'] / 1e9:.3f} G = 2 x MACs; counted: convolutions and matrix products)")
            print(f"latency        mean {rec['latency_ms_mean']:.2f} ms, median {rec['latency_ms_median']:.2f} ms, p90 {rec['latency_ms_p90']:.2f} ms")
            print(f"throughput     {rec['fps']:.2f} FPS")
            if "precision" in rec:
                print(f"precision      {rec['precision']}")
            if "optimization" in rec:
                print(f"optimized      {rec['optimization']}")
            if "backend" in rec:
                print(f"backend        {rec['backend']}")
            print(f"conditions     {c['device_name']} ({c['device']}), {c['threads']} threads, batch {c['batch']}, {size[0]}x{size[1]}, {c['dtype']}, "
                  f"warm-up {c['warmup']}, {c['iters']} iterations, torch {c['torch_version']}")
    if args.all:
        c = records[0]["conditions"]
        print(f"Input {size[0]}x{size[1]}, batch {args.batch}, {c['dtype']}, {c['device_name']} ({c['device']}), {c['threads']} threads, "
              f"torch {c['torch_version']}, warm-up {args.warmup}, {args.iters} iterations; MACs counted on convolutions and matrix products.\n")
        print("| model | params | GMACs | latency mean (ms) | median (ms) | p90 (ms) | FPS |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for r in records:
            print(f"| {r['model']} | {r['params']:,} | {r['macs'] / 1e9:.2f} | {r['latency_ms_mean']:.1f} | {r['latency_ms_median']:.1f} | {r['latency_ms_p90']:.1f} | {r['fps']:.2f} |")
    if args.json:
        out = Path(args.json)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(records if args.all else records[0], indent=2))
        print(f"record written to {out}")
    return 0


# -- predict --------------------------------------------------------------------------------
def _collect_inputs(inputs: list[str]) -> tuple[list[Path], list[str]]:
    from rtseg.data.datasets import IMAGE_SUFFIXES

    files, errors = [], []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                errors.append(f"{item}: folder contains no images ({', '.join(IMAGE_SUFFIXES)})")
            files += found
        elif p.is_file():
            files.append(p)
        else:
            errors.append(f"{item}: no such file or folder")
    return files, errors


def _segmenter(args: argparse.Namespace, size):
    """(segment(rgb) -> label map, model card) for the chosen model and backend."""
    import tempfile

    from rtseg.card import card_of
    from rtseg.inference import load_model, predict

    backend = getattr(args, "backend", "torch")
    if str(args.model).endswith(".onnx"):
        backend = "onnxruntime"
    if str(args.model).endswith(".xml"):
        backend = "openvino"
    if backend == "openvino":
        from rtseg.deploy.openvino_backend import openvino_segmenter

        seg = openvino_segmenter(args.model, size, weights=args.weights, num_classes=args.num_classes,
                                 threads=getattr(args, "threads", None), precision=_inference_precision(args))
        return (lambda rgb: seg.predict(rgb, size)), seg.card
    if backend == "onnxruntime":
        from rtseg.deploy.ort import OnnxSegmenter

        if str(args.model).endswith(".onnx"):
            path = args.model
        else:  # export the model once into a temporary dynamic-shape ONNX file
            from rtseg.deploy.onnx_export import export_onnx

            path = str(Path(tempfile.mkdtemp(prefix="rtseg-")) / "model.onnx")
            model = load_model(args.model, weights=args.weights, num_classes=args.num_classes)
            export_onnx(model, path, size or (256, 512), dynamic=True)
        seg = OnnxSegmenter(path, threads=getattr(args, "threads", None))
        return (lambda rgb: seg.predict(rgb, size)), seg.card
    model = load_model(args.model, weights=args.weights, num_classes=args.num_classes)
    card = card_of(model)
    if getattr(args, "optimize", False):
        model = _optimized(model, args, size)
    return (lambda rgb: predict(model, rgb, size=size)), card


def cmd_predict(args: argparse.Namespace) -> int:
    import numpy as np
    from PIL import Image

    from rtseg.data.datasets import DatasetError, read_image
    from rtseg.data.labels import colorize
    from rtseg.inference import overlay, parse_size

    size = parse_size(args.size)
    _check_precision_option(args)
    if getattr(args, "threads", None):
        import torch

        torch.set_num_threads(args.threads)
    from rtseg.deploy.video import is_stream

    streams = [i for i in args.inputs if is_stream(i)]
    files, errors = _collect_inputs([i for i in args.inputs if not is_stream(i)])
    segment, card = _segmenter(args, size)
    palette = card.class_info.palette
    if getattr(args, "format_for_server", False):
        from rtseg.data.labels import CITYSCAPES_CLASSES

        names = card.classes.names if card.classes is not None else None
        if names != CITYSCAPES_CLASSES and not (names is None and card.num_outputs >= 19):
            print(f"error: --format-for-server writes Cityscapes labelIds and needs a model of the 19 Cityscapes classes; "
                  f"{args.model} predicts {card.class_info.num_classes} classes [{', '.join(card.class_info.names)}]", file=sys.stderr)
            return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for e in errors:
        print(f"error: {e}", file=sys.stderr)
    if getattr(args, "as_video", False) and files:
        streams.append(files)
        files = []
    done = 0
    for stream in streams:
        from rtseg.deploy.video import VideoError, predict_video

        is_list = isinstance(stream, list)
        # an image list or a pattern (frames/%05d.png) is named after its folder, a video after its file
        name = (stream[0].parent.name if is_list else Path(stream).parent.name if "%" in str(stream) else Path(stream).stem) or "sequence"
        try:
            rec = predict_video(segment, "image list" if is_list else stream, out / f"{name}_overlay.mp4", palette, args.alpha,
                                frames=stream if is_list else None, fps=getattr(args, "fps", None))
        except VideoError as exc:
            errors.append(str(exc))
            print(f"error: {exc}", file=sys.stderr)
            continue
        print(f"{rec['output']}: {rec['frames']} frames, {rec['fps_end_to_end']:.2f} FPS end to end "
              f"(decode overlapped with inference; pre-process + inference + post-process alone {rec['fps_segment_only']:.2f} FPS)")
        done += 1
    for f in files:
        try:
            image = read_image(f)
        except DatasetError as exc:
            errors.append(str(exc))
            print(f"error: {exc}", file=sys.stderr)
            continue
        label_map = segment(image)
        stem = f.stem
        if getattr(args, "format_for_server", False):
            # the official evaluation's naming: CITY_SEQ_FRAME_leftImg8bit.png holding labelIds
            from rtseg.data.labels import train_ids_to_label_ids

            Image.fromarray(train_ids_to_label_ids(label_map)).save(out / f"{stem}.png")
            done += 1
            continue
        Image.fromarray(colorize(label_map, palette)).save(out / f"{stem}_mask.png")
        Image.fromarray(overlay(image, label_map, palette, args.alpha)).save(out / f"{stem}_overlay.png")
        if args.save_labels:
            Image.fromarray(label_map.astype(np.uint8)).save(out / f"{stem}_labels.png")
        done += 1
    print(f"wrote {done} prediction(s) to {out}" + (f"; {len(errors)} input(s) failed (see errors above)" if errors else ""))
    return 1 if errors else 0


# -- export ---------------------------------------------------------------------------------
def cmd_export(args: argparse.Namespace) -> int:
    from rtseg.inference import load_model, parse_size

    if args.dynamic and args.size:
        raise CLIError("--size and --dynamic exclude each other: a dynamic export has no fixed size (--size only sets the traced one with --trace-size)")
    if args.dynamic and args.format == "torchscript":
        raise CLIError("--dynamic is for --format onnx or openvino; a TorchScript export is traced at one --size")
    if args.int8 and args.format == "torchscript":
        raise CLIError("--int8 is for --format onnx (ONNX Runtime) or openvino (NNCF)")
    if args.int8 and (args.dynamic or not args.calibration):
        raise CLIError("--int8 needs a fixed --size and --calibration FOLDER (images from the training data)")
    model = load_model(args.model, weights=args.weights, num_classes=args.num_classes)
    size = parse_size(args.size or args.trace_size)
    suffix = {"onnx": ".onnx", "openvino": ".xml", "torchscript": ".pt"}[args.format]
    stem = Path(args.model).stem if Path(args.model).is_file() else args.model
    out = Path(args.out) if args.out else Path(f"{stem}{'-dynamic' if args.dynamic else f'-{size[0]}x{size[1]}'}{'-argmax' if args.argmax else ''}{suffix}")
    if args.format == "onnx":
        from rtseg.deploy.onnx_export import export_onnx

        if args.int8:
            import tempfile

            from rtseg.deploy.quantize import quantize_int8

            if args.dynamic or not args.calibration:
                raise CLIError("--int8 needs a fixed --size and --calibration FOLDER (images from the training data)")
            with tempfile.TemporaryDirectory() as tmp:
                fp32 = Path(tmp) / "fp32.onnx"
                record = export_onnx(model, fp32, size, argmax=args.argmax, opset=args.opset, verify=not args.no_verify)
                q = quantize_int8(fp32, out, args.calibration, args.calibration_count)
            record["bytes"] = q["bytes"]
            print(f"INT8 static quantization calibrated on {q['calibration_images']} images from {args.calibration} "
                  "(the verification below is of the FP32 graph before quantization)")
        else:
            record = export_onnx(model, out, size, dynamic=args.dynamic, argmax=args.argmax, opset=args.opset, verify=not args.no_verify)
    elif args.format == "openvino":
        from rtseg.deploy.openvino_backend import export_ir

        record = export_ir(model, out, size, dynamic=args.dynamic, argmax=args.argmax, via=args.via, verify=not args.no_verify,
                           int8_calibration=args.calibration if args.int8 else None, calibration_count=args.calibration_count)
        if args.int8:
            print(f"INT8 NNCF post-training quantization calibrated on {record['int8']['calibration_images']} images from {args.calibration} "
                  "(the verification below is of the FP32 IR before quantization)")
    else:
        from rtseg.deploy.torchscript_export import export_torchscript

        record = export_torchscript(model, out, size, argmax=args.argmax, verify=not args.no_verify)
    print(f"wrote {out} ({record['bytes'] / 1e6:.1f} MB, {args.format}{', opset ' + str(args.opset) if args.format == 'onnx' else ''}, "
          f"input {'dynamic N x 3 x H x W' if args.dynamic else f'1 x 3 x {size[0]} x {size[1]}'}, output {'labels' if args.argmax else 'logits'})")
    v = record.get("verification")
    if v:
        runtime = {"onnx": "ONNX Runtime", "openvino": "OpenVINO (fp32)", "torchscript": "the reloaded TorchScript"}[args.format]
        diff = f"max |logit diff| {v['max_abs_diff']:.2e}, " if "max_abs_diff" in v else ""
        print(f"verified: {runtime} vs PyTorch{' at ' + 'x'.join(map(str, v['size'])) if 'size' in v else ''}: {diff}arg-max agreement {100 * v['argmax_agreement']:.3f} %")
    return 0


def cmd_export_weights(args: argparse.Namespace) -> int:
    from rtseg.hub import sha256_of
    from rtseg.io import read_card
    from rtseg.registry import export_weights

    out = Path(args.out) if args.out else Path(args.checkpoint).with_suffix(".safetensors")
    export_weights(args.checkpoint, out, half=args.half, license=args.license, source=args.source)
    card = read_card(out)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB, {'float16' if args.half else 'float32'} storage, sha256 {sha256_of(out)})")
    print(f"card: {card.summary()}")
    return 0


# -- demo -----------------------------------------------------------------------------------
def cmd_demo(args: argparse.Namespace) -> int:
    import numpy as np
    from PIL import Image

    from rtseg.config import load_config
    from rtseg.data.synthetic import SyntheticScenes

    out = Path(args.out)
    config = load_config("demo", args.overrides)
    run_dir = out / "run"
    print(f"[1/4] training {config['model']['name']} on synthetic street scenes ({config['train']['epochs']} epochs) -> {run_dir}", flush=True)
    cmd_train(argparse.Namespace(config="demo", overrides=args.overrides, out=str(run_dir), resume="" if (run_dir / "last.pt").is_file() else None, quiet=args.quiet))
    ckpt = run_dir / "best.pt"
    print("[2/4] evaluating the best checkpoint on the validation scenes", flush=True)
    cmd_eval(argparse.Namespace(model=str(ckpt), weights=None, num_classes=None, data=None, root=None, split="val", size=None, samples=None,
                                normalization=None, device="auto", workers=0, json=str(out / "metrics.json"), quiet=True, class_map=None))
    print("[3/4] benchmarking (CPU, batch 1, 360x640)", flush=True)
    cmd_bench(argparse.Namespace(model=str(ckpt), all=False, filter=None, size="360x640", device="cpu", threads=None, batch=1,
                                 warmup=2, iters=10, dtype="fp32", num_classes=None, json=str(out / "bench.json")))
    print("[4/4] predicting on held-out scenes", flush=True)
    inputs = out / "inputs"
    inputs.mkdir(parents=True, exist_ok=True)
    h, w = config["data"]["image_size"]
    scenes = SyntheticScenes(4, (h, w), split="test", seed=config["data"]["seed"])
    for i in range(len(scenes)):
        Image.fromarray(scenes[i][0]).save(inputs / f"scene_{i}.png")
    cmd_predict(argparse.Namespace(model=str(ckpt), inputs=[str(inputs)], out=str(out / "predictions"), weights=None, num_classes=None,
                                   size=None, alpha=0.5, save_labels=False))
    metrics = json.loads((out / "metrics.json").read_text())
    print(f"demo done: validation mIoU {metrics['miou']:.4f}, pixel accuracy {metrics['pixel_accuracy']:.4f}; "
          f"overlays in {out / 'predictions'}; records in {out}")
    return 0


# -- parser ---------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rtseg", description="Lightweight real-time semantic segmentation.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("models", help="list registered models with their paper and parameter count")
    p.add_argument("filter", nargs="?", help="shell-style pattern, e.g. 'essnet*'")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--pretrained", action="store_true", help="list the named pretrained weights (model, tag, dataset, classes, metric, source, licence)")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("train", help="train from a config file or packaged recipe")
    p.add_argument("config", help="a YAML config file or the name of a packaged recipe (e.g. demo)")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. train.epochs=3 data.crop_size=[256,256]")
    p.add_argument("--out", help="output folder (default: the config's output.dir)")
    p.add_argument("--resume", nargs="?", const="", default=None, metavar="CHECKPOINT", help="resume from OUT/last.pt or the given checkpoint")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train)

    weights_help = "for a model name: a pretrained tag (rtseg models --pretrained), a URL or a local weights file"
    p = sub.add_parser("eval", help="evaluate a checkpoint or a model with weights")
    p.add_argument("model", help="an rtseg checkpoint (.pt) or weights file (.safetensors), or a registered model name")
    p.add_argument("--weights", help=weights_help)
    p.add_argument("--num-classes", type=int, help="output count of a model name without weights that say it (default 19)")
    p.add_argument("--class-map", help="YAML file mapping model class names to dataset class names, to score a model on a dataset with other classes")
    p.add_argument("--data", help="dataset: synthetic, cityscapes or camvid (default: the checkpoint's, else synthetic)")
    p.add_argument("--root", help="dataset folder")
    p.add_argument("--split", default="val")
    p.add_argument("--size", help="resize inputs to HxW before the model; labels keep full resolution")
    p.add_argument("--samples", type=int, help="synthetic: number of scenes")
    p.add_argument("--normalization", help="override the model's normalisation preset")
    p.add_argument("--flip", action="store_true", help="average with the horizontally flipped input")
    p.add_argument("--scales", default="1.0", help="multi-scale testing: comma-separated input scales, e.g. 0.75,1,1.25")
    p.add_argument("--window", help="sliding-window inference with HxW windows (e.g. 512x512) instead of the whole image")
    p.add_argument("--stride", help="sliding-window stride HxW (default: two thirds of the window)")
    p.add_argument("--device", default="auto")
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--json", help="write the metrics as JSON to this file")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("bench", help="parameters, MACs/FLOPs and latency of a model")
    p.add_argument("model", nargs="?", help="registered model name or checkpoint")
    p.add_argument("--all", action="store_true", help="every registered model, as a markdown table")
    p.add_argument("--filter", help="with --all: shell-style name pattern")
    p.add_argument("--size", default="512x1024", help="input HxW (default 512x1024)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, help="CPU threads (torch.set_num_threads)")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--dtype", choices=["fp32", "fp16", "bf16"], default="fp32")
    p.add_argument("--num-classes", type=int, help="output count of a model name without weights that say it (default 19)")
    p.add_argument("--json", help="write the record(s) as JSON to this file")
    _add_optimize_options(p)
    p.add_argument("--backend", choices=["torch", "onnxruntime", "openvino"], default="torch",
                   help="run PyTorch, an ONNX export under ONNX Runtime or an OpenVINO IR (CPU)")
    p.add_argument("--train", action="store_true", help="time training steps (forward, fp32 loss, backward, Adam step) instead of inference")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("demo", help="train a small model on synthetic scenes, evaluate, benchmark and predict")
    p.add_argument("overrides", nargs="*", help="key=value overrides of the demo recipe")
    p.add_argument("--out", default="demo-output", help="output folder (default demo-output)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("export", help="export a model or checkpoint to ONNX or TorchScript, verified after export")
    p.add_argument("model", help="an rtseg checkpoint (.pt) or a registered model name")
    p.add_argument("--format", choices=["onnx", "torchscript", "openvino"], default="onnx",
                   help="onnx, torchscript or openvino (an IR: NAME.xml + NAME.bin)")
    p.add_argument("--via", choices=["onnx", "torch"], default="onnx",
                   help="openvino: convert the verified ONNX export (default) or the PyTorch model directly")
    p.add_argument("--size", help="fixed input HxW (default 512x1024)")
    p.add_argument("--dynamic", action="store_true", help="ONNX / OpenVINO: free batch, height and width")
    p.add_argument("--trace-size", default="512x1024", help="with --dynamic: the HxW traced with (default 512x1024)")
    p.add_argument("--argmax", action="store_true", help="end the graph in an arg-max: outputs the int64 label map instead of logits")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (>= 17, default 17)")
    p.add_argument("--out", help="output file (default: MODEL-SIZE[-argmax].onnx / .xml / .pt in the current folder)")
    p.add_argument("--weights", help=weights_help)
    p.add_argument("--num-classes", type=int)
    p.add_argument("--no-verify", action="store_true", help="skip the ONNX Runtime / reload check against PyTorch")
    p.add_argument("--int8", action="store_true",
                   help="INT8 post-training quantization (needs --calibration): ONNX Runtime static QDQ for onnx, NNCF for openvino")
    p.add_argument("--calibration", help="with --int8: folder of calibration images (e.g. the dataset's train images)")
    p.add_argument("--calibration-count", type=int, default=32, help="with --int8: number of calibration images (default 32)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("export-weights", help="a publishable safetensors weights file, with its model card, from a training checkpoint")
    p.add_argument("checkpoint", help="an rtseg checkpoint (e.g. runs/NAME/best.pt)")
    p.add_argument("--out", help="output file (default: the checkpoint's name with .safetensors)")
    p.add_argument("--half", action="store_true", help="store floating-point tensors as float16 (half the size)")
    p.add_argument("--license", help="licence written into the card, e.g. MIT")
    p.add_argument("--source", help="source written into the card, e.g. the project URL or run name")
    p.set_defaults(func=cmd_export_weights)

    p = sub.add_parser("predict", help="colourised masks and overlays for images or folders")
    p.add_argument("model", help="an rtseg checkpoint (.pt), a registered model name or an exported .onnx file")
    p.add_argument("inputs", nargs="+", help="image files, folders, videos (.mp4, .avi, ...) or image-sequence patterns (frames/%%05d.png)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--weights", help=weights_help)
    p.add_argument("--num-classes", type=int)
    p.add_argument("--size", help="resize inputs to HxW before the model; outputs keep the image size")
    p.add_argument("--alpha", type=float, default=0.5, help="overlay opacity")
    p.add_argument("--save-labels", action="store_true", help="also write the raw class-index PNG")
    p.add_argument("--as-video", action="store_true", help="write the input images, in name order, as one overlay video")
    p.add_argument("--fps", type=float, help="frame rate of written videos (default: the input's, else 25)")
    p.add_argument("--threads", type=int, help="CPU threads")
    p.add_argument("--backend", choices=["torch", "onnxruntime", "openvino"], default="torch",
                   help="PyTorch, ONNX Runtime or OpenVINO (a .onnx model file always runs in ONNX Runtime, a .xml IR in OpenVINO)")
    _add_optimize_options(p)
    p.add_argument("--format-for-server", action="store_true",
                   help="Cityscapes: write only labelId PNGs named like the input (the official evaluation server's format)")
    p.set_defaults(func=cmd_predict)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from rtseg.io import CheckpointError, WeightsMismatchError
    from rtseg.deploy.onnx_export import ExportError
    from rtseg.config import ConfigError
    from rtseg.data.datasets import DatasetError
    from rtseg.engine.trainer import TrainingError
    from rtseg.registry import UnknownModelError, UnknownOptionError

    try:
        return int(args.func(args) or 0)
    except (CLIError, ExportError, CheckpointError, WeightsMismatchError, ConfigError, DatasetError, TrainingError, UnknownModelError, UnknownOptionError, ValueError, OSError) as exc:
        print(f"rtseg {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
