"""The ``rtseg`` command: parses arguments, calls one task of :mod:`rtseg.tasks` and prints its result."""
from __future__ import annotations

import argparse
import json
import math
import sys
import traceback
from pathlib import Path
from typing import Any

from rtseg.cli.format import (
    print_bench_record, print_bench_table, print_metrics_table, print_model_details, print_model_rows, print_recipes, print_select,
)
from rtseg.cli.parser import build_parser, parse

__all__ = ["main"]


def _console():
    from rtseg.tasks.common import Log

    return Log(info=lambda m: print(m, flush=True), error=lambda m: print(f"error: {m}", file=sys.stderr),
               note=lambda m: print(m, file=sys.stderr))


def _write_json(path: str | None, data: Any, what: str) -> None:
    if path:
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(data, indent=2))
        print(f"{what} written to {out}")


def _show(rows: Any, as_json: bool, render) -> int:
    """``rows`` as JSON, or through ``render`` as text."""
    if as_json:
        print(json.dumps(rows, indent=2))
    else:
        render(rows)
    return 0


def _size(text: str | None, option: str = "--size"):
    from rtseg.inference import parse_size

    return parse_size(text, option)


def _check_json_out(path: str | None) -> None:
    from rtseg.tasks.options import check_output

    check_output(path, "file", option="--json")


def _optimization(args: argparse.Namespace, implied_by_precision: bool = False):
    from rtseg.tasks.common import Optimization

    implied = implied_by_precision and args.precision in ("auto", "bf16") and args.backend == "torch" and not getattr(args, "train", False)
    if not args.optimize and not implied:
        return None
    return Optimization(args.channels_last, args.compile or "auto", args.compile_mode, args.precision or "fp32")


# -- models ---------------------------------------------------------------------------------
def cmd_models(args: argparse.Namespace) -> int:
    from rtseg.registry import list_models
    from rtseg.tasks import models

    if args.pretrained:
        entries = models.pretrained_rows(args.filter)
        if args.json:
            print(json.dumps([{"model": e.model, "tag": e.tag, "sha256": e.sha256, "url": e.url, "file": e.file, "card": e.card.to_dict()}
                              for e in entries], indent=2))
        else:
            from rtseg.pretrained import pretrained_table

            print(pretrained_table(entries))
        return 0
    if args.filter and args.filter in list_models():
        details = models.model_details(args.filter)
        if args.json:
            print(json.dumps(details, indent=2, default=repr))
            return 0
        print_model_details(details)
        return 0
    return _show(models.model_rows(args.filter), args.json, print_model_rows)


# -- train ----------------------------------------------------------------------------------
def cmd_train(args: argparse.Namespace) -> int:
    from rtseg.tasks import train

    if args.print_config:
        from rtseg.config import dump_config
        from rtseg.tasks import resolved_config

        config = resolved_config(args.config, args.overrides)
        if args.weights:
            config["model"]["weights"] = args.weights
        print(dump_config(config), end="")
        return 0
    resume: bool | str = False if args.resume is None else True if args.resume == "" else args.resume
    summary = train(args.config, args.overrides, out=args.out, resume=resume, progress=not args.quiet, overwrite=args.overwrite,
                    weights=args.weights)
    best, out = summary.get("best_miou"), summary["out_dir"]
    if best is not None and not (isinstance(best, float) and math.isinf(best)):
        print(f"best validation mIoU {best:.4f}; checkpoints in {out}")
    else:
        print(f"done; checkpoints in {out}")
    return 0


def cmd_recipes(args: argparse.Namespace) -> int:
    from rtseg.tasks import recipes

    return _show(recipes(), args.json, print_recipes)


# -- eval -----------------------------------------------------------------------------------
def cmd_eval(args: argparse.Namespace) -> int:
    from rtseg.evaluation import EvalProtocol
    from rtseg.tasks import evaluate

    _check_json_out(args.json)  # before the work, not after it
    protocol = EvalProtocol(_scales(args.scales), args.flip, _size(args.window, "--window"), _size(args.stride, "--stride"))
    summary = evaluate(args.model, weights=args.weights, num_classes=args.num_classes, dataset=args.data, root=args.root, split=args.split,
                       size=_size(args.size), samples=args.samples, normalization=args.normalization, class_map=args.class_map,
                       protocol=protocol, device=args.device, workers=args.workers, progress=not args.quiet, log=_console())
    print_metrics_table(summary)
    _write_json(args.json, summary, "metrics")
    return 0


def _scales(text: str | None) -> list[float]:
    from rtseg.errors import OptionError

    try:
        return [float(v) for v in str(text or "1.0").split(",")]
    except ValueError:
        raise OptionError(f"--scales {text!r} is not a comma-separated list of numbers (e.g. 0.75,1,1.25)") from None


# -- bench ----------------------------------------------------------------------------------
def cmd_bench(args: argparse.Namespace) -> int:
    from rtseg.tasks import BenchOptions, bench

    _check_json_out(args.json)
    options = BenchOptions(size=_size(args.size), device=args.device, threads=args.threads, batch=args.batch, warmup=args.warmup,
                           iters=args.iters, dtype=args.dtype, num_classes=args.num_classes, backend=args.backend, train=args.train,
                           optimize=_optimization(args, implied_by_precision=True), precision=args.precision,
                           train_compile=args.compile or "off", weights=args.weights)
    def progress(i: int, n: int, rec: dict[str, Any]) -> None:
        timing = f"{rec['latency_ms_mean']:.1f} ms" if "latency_ms_mean" in rec else "done"
        print(f"[{i}/{n}] {rec['model']}: {timing}", file=sys.stderr, flush=True)

    records = bench(None if args.all else [args.model] if args.model else [], options, pattern=args.filter,
                    on_record=progress if args.all and not args.quiet else None)
    if args.all:
        print_bench_table(records, options.size)
    else:
        print_bench_record(records[0], options.size)
    _write_json(args.json, records if args.all else records[0], "record")
    return 0


# -- predict --------------------------------------------------------------------------------
def cmd_predict(args: argparse.Namespace) -> int:
    from rtseg.tasks import predict

    size = "card" if args.size == "card" else _size(args.size)
    result = predict(args.model, args.inputs, args.out, weights=args.weights, num_classes=args.num_classes, size=size, alpha=args.alpha,
                     legend=not args.no_legend,
                     save_labels=args.save_labels, as_video=args.as_video, fps=args.fps, threads=args.threads, backend=args.backend,
                     optimize=_optimization(args), precision=args.precision, format_for_server=args.format_for_server, log=_console(),
                     progress=False if args.quiet else None)
    errors = result["errors"]
    print(f"wrote {result['written']} prediction(s) to {result['out']}" + (f"; {len(errors)} input(s) failed (see errors above)" if errors else ""))
    return 1 if errors else 0


# -- select ---------------------------------------------------------------------------------
def cmd_select(args: argparse.Namespace) -> int:
    from rtseg.tasks import select

    split = (lambda text: [t.strip() for t in text.split(",") if t.strip()] if text else None)
    result = select(args.budget_ms, size=_size(args.size), threads=args.threads, dataset=args.dataset, networks=split(args.networks),
                    paths=split(args.paths), verify=args.verify, verify_images=args.verify_images, calibration=args.calibration,
                    rounds=args.rounds, cache=not args.no_cache, export=args.export, json_out=args.json, log=_console())
    print_select(result)
    return 0


# -- serve ----------------------------------------------------------------------------------
def cmd_serve(args: argparse.Namespace) -> int:
    from rtseg.serve.runner import ServerOptions, require_serve_extra, serve
    from rtseg.tasks.options import check_count, check_number

    require_serve_extra()
    from rtseg.serve.app import ServeSettings
    from rtseg.tasks._serve import DEFAULT_MODEL, ServeOptions

    check_number(args.max_body_mb, "--max-body-mb", 0, 1e6, lo_open=True)
    check_number(args.max_pixels, "--max-pixels", 0, 1e4, lo_open=True)
    check_number(args.read_timeout, "--read-timeout", 0, 86400, lo_open=True)
    check_number(args.drain_timeout, "--drain-timeout", 0, 86400)
    check_number(args.batch_window_ms, "--batch-window-ms", 0, 1000)
    for value, option in ((args.max_batch, "--max-batch"), (args.max_queue, "--max-queue"), (args.workers, "--workers")):
        check_count(value, option)
    options = ServeOptions(backend=args.backend, threads=args.threads, size=_size(args.size), precision=args.precision, compile=args.compile)
    settings = ServeSettings(max_body_bytes=int(args.max_body_mb * 1e6), max_pixels=int(args.max_pixels * 1e6), read_timeout_s=args.read_timeout,
                             batch_window_ms=args.batch_window_ms, max_batch=args.max_batch, max_queue=args.max_queue)
    server = ServerOptions(host=args.host, port=args.port, workers=args.workers, drain_timeout_s=args.drain_timeout,
                           max_connections=args.max_connections, log_level=args.log_level)

    def ready(models) -> None:
        for m in models:
            print(f"{m.name}: {m.card.summary()}; input {m.size[0]}x{m.size[1]}; {m.segmenter.deployed} "
                  f"(loaded in {m.load_s:.1f} s)", file=sys.stderr, flush=True)
        print(f"starting the server: the page at http://{server.host}:{server.port}/, the API at /docs", file=sys.stderr, flush=True)

    print("loading " + ", ".join(args.model or [DEFAULT_MODEL]) + (" (timing the deployment choices: up to a minute)" if args.backend == "auto" else "") + " ...",
          file=sys.stderr, flush=True)
    return serve(args.model or [DEFAULT_MODEL], options, settings, server, on_ready=ready)


# -- export ---------------------------------------------------------------------------------
def cmd_export(args: argparse.Namespace) -> int:
    from rtseg.tasks import export

    if not args.quiet:  # exporting, calibrating and verifying take seconds to minutes: say what is running
        steps = [f"exporting {args.model} to {args.format}"] + ([f"INT8 calibration on up to {args.calibration_count} images"] if args.int8 else [])
        steps += [] if args.no_verify else ["verifying against PyTorch"]
        print(", then ".join(steps) + " ...", file=sys.stderr, flush=True)
    rec = export(args.model, args.out, format=args.format, size=_size(args.size), trace_size=_size(args.trace_size, "--trace-size") if args.trace_size else None, dynamic=args.dynamic,
                 argmax=args.argmax, opset=args.opset, via=args.via, weights=args.weights, num_classes=args.num_classes, verify=not args.no_verify,
                 int8=args.int8, calibration=args.calibration, calibration_count=args.calibration_count)
    if args.int8:
        method = "INT8 static quantization" if args.format == "onnx" else "INT8 NNCF post-training quantization"
        graph = "FP32 graph" if args.format == "onnx" else "FP32 IR"
        print(f"{method} calibrated on {rec['calibration_images']} images from {args.calibration} (the verification below is of the {graph} before quantization)")
    size = rec["input_size"]
    shape = f"dynamic N x 3 x H x W, traced at {size[0]}x{size[1]}" if args.dynamic else f"1 x 3 x {size[0]} x {size[1]}"
    print(f"wrote {rec['out']} ({rec['bytes'] / 1e6:.1f} MB, {args.format}{', opset ' + str(args.opset) if args.format == 'onnx' else ''}, "
          f"input {shape} from {rec['size_from']}, output {'labels' if args.argmax else 'logits'})")
    v = rec.get("verification")
    if v:
        runtime = {"onnx": "ONNX Runtime", "openvino": "OpenVINO (fp32)", "torchscript": "the reloaded TorchScript"}[args.format]
        diff = f"max |logit diff| {v['max_abs_diff']:.2e}, " if "max_abs_diff" in v else ""
        print(f"verified: {runtime} vs PyTorch{' at ' + 'x'.join(map(str, v['size'])) if 'size' in v else ''}: {diff}arg-max agreement {100 * v['argmax_agreement']:.3f} %")
    return 0


def cmd_export_weights(args: argparse.Namespace) -> int:
    from rtseg.tasks import export_weights_file

    rec = export_weights_file(args.checkpoint, args.out, half=args.half, license=args.license, source=args.source)
    print(f"wrote {rec['out']} ({rec['bytes'] / 1e6:.2f} MB, {'float16' if args.half else 'float32'} storage, sha256 {rec['sha256']})")
    print(f"card: {rec['card'].summary()}")
    return 0


# -- demo -----------------------------------------------------------------------------------
def cmd_demo(args: argparse.Namespace) -> int:
    from rtseg.tasks import demo

    def show(step: str, result: Any) -> None:
        out = Path(args.out)
        if step == "metrics":
            print_metrics_table(result)
            print(f"metrics written to {out / 'metrics.json'}")
        elif step == "bench":
            print_bench_record(result, (360, 640))
            print(f"record written to {out / 'bench.json'}")
        else:
            print(f"wrote {result['written']} prediction(s) to {result['out']}")

    result = demo(args.out, args.overrides, progress=not args.quiet, log=_console(), on_result=show)
    metrics, out = result["metrics"], Path(args.out)
    print(f"demo done: validation mIoU {metrics['miou']:.4f}, pixel accuracy {metrics['pixel_accuracy']:.4f}; "
          f"overlays in {out / 'predictions'}; records in {out}")
    return 0


COMMANDS = {"models": cmd_models, "train": cmd_train, "eval": cmd_eval, "bench": cmd_bench, "demo": cmd_demo, "export": cmd_export,
            "export-weights": cmd_export_weights, "predict": cmd_predict, "recipes": cmd_recipes, "serve": cmd_serve, "select": cmd_select}


def main(argv: list[str] | None = None) -> int:
    """Runs one command. A user error (:class:`rtseg.errors.UserError`, or a file that cannot be read or written)
    prints one ``error:`` line and exits 2; anything else is a bug in rtseg: its traceback and a request to report it,
    exit 1."""
    from rtseg.errors import USER_ERRORS

    try:
        args = parse(build_parser(COMMANDS), sys.argv[1:] if argv is None else list(argv))
    except SystemExit as exc:  # argparse's usage errors (printed, exit 2) and --help (exit 0), as a return code
        return exc.code if isinstance(exc.code, int) else 2
    try:
        return int(args.func(args) or 0)
    except USER_ERRORS as exc:
        print(f"rtseg {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception:
        from rtseg import __version__

        traceback.print_exc()
        print(f"rtseg {args.command}: internal error in rtseg {__version__} (a bug, not a problem with your input): please report it with "
              f"the command line and the traceback above.", file=sys.stderr)
        return 1
