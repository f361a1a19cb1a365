"""The ``rtseg`` command's arguments: one sub-command per task (rtseg.tasks), with its options and help."""
from __future__ import annotations

import argparse
import os
import re
from typing import Callable

__all__ = ["build_parser", "parse", "OVERRIDE"]

# a config override: section.key=value (what rtseg train and rtseg demo take after the config)
OVERRIDE = re.compile(r"^[A-Za-z_][\w-]*(\.[\w-]+)+=")


def _add_optimize_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--optimize", action="store_true", help="fold BatchNorm, drop dropout, group gradual layers (rtseg.optimize)")
    p.add_argument("--channels-last", choices=["off", "on", "auto"], default="auto",
                   help="with --optimize: channels-last memory format; auto keeps it only when a timing shows it is faster")
    p.add_argument("--compile", choices=["off", "on", "auto"], default=None,
                   help="with --optimize (default auto): torch.compile (auto: kept only when a timing shows it is faster; "
                        "compiling takes seconds to tens of seconds per model and input size, --compile off skips it). "
                        "With bench --train (default off): the trainer's train.compile, compiled in the warm-up")
    p.add_argument("--compile-mode", default=None,
                   help="torch.compile mode, e.g. reduce-overhead (CUDA graphs on a GPU) or max-autotune")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16"], default=None,
                   help="with --optimize or --backend openvino (default fp32): bf16 inference on CPUs; auto picks bf16 only on a CPU "
                        "with native bf16 whose arg-max agrees with fp32 on a check input (bench: auto or bf16 alone implies "
                        "--optimize). With bench --train (default auto): the trainer's train.precision")


class _Parser(argparse.ArgumentParser):
    """argparse's parser, whose errors add a hint when a file name starting with ``-`` was taken for an option."""

    argv: list[str] = []

    def error(self, message: str):
        dashed = [a for a in self.argv if a.startswith("-") and len(a) > 1 and os.path.exists(a)]
        if dashed:
            message += (f" ({dashed[0]!r} is an existing file whose name starts with '-', so it was read as an option: put -- "
                        f"before such names, e.g. rtseg predict MODEL --out DIR -- {dashed[0]}, or write ./{dashed[0]})")
        super().error(message)


def build_parser(commands: dict[str, Callable[[argparse.Namespace], int]]) -> argparse.ArgumentParser:
    """The parser; each sub-command's ``func`` is ``commands[its name]``."""
    parser = _Parser(prog="rtseg", description="Lightweight real-time semantic segmentation.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("models", help="list registered models with their paper and parameter count, or one model's options")
    p.add_argument("filter", nargs="?", help="shell-style pattern, e.g. 'essnet*'; one model's exact name prints its paper, defaults and options")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--pretrained", action="store_true", help="list the named pretrained weights (model, tag, dataset, classes, metric, source, licence)")
    p.set_defaults(func=commands["models"])

    p = sub.add_parser("train", help="train from a config file or packaged recipe")
    p.add_argument("config", help="a YAML config file or the name of a packaged recipe (e.g. demo)")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. train.epochs=3 data.crop_size=[256,256]")
    p.add_argument("--out", help="output folder (default: the config's output.dir)")
    p.add_argument("--resume", nargs="?", const="", default=None, metavar="CHECKPOINT", help="resume from OUT/last.pt or the given checkpoint")
    p.add_argument("--overwrite", action="store_true",
                   help="start anew in an output folder that holds a run (its files are moved to OUT/.replaced-<time>/)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--weights", help="start from trained weights (model.weights): a tag of the model (rtseg models --pretrained), a URL or "
                                     "a file; on a dataset with other classes only the class layers start afresh")
    p.add_argument("--print-config", action="store_true", help="print the merged config (YAML, overrides applied) and exit without training")
    p.set_defaults(func=commands["train"])

    p = sub.add_parser("recipes", help="list the packaged training recipes (model, dataset, stages, description)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=commands["recipes"])

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
    p.set_defaults(func=commands["eval"])

    p = sub.add_parser("bench", help="parameters, MACs/FLOPs and latency of a model")
    p.add_argument("model", nargs="?", help="registered model name or checkpoint")
    p.add_argument("--all", action="store_true", help="every registered model, as a markdown table")
    p.add_argument("--weights", help="the model's trained weights: a tag (rtseg models --pretrained), URL or file; timing does not "
                                     "depend on them, but the card and a reduced-precision check do")
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
    p.add_argument("--quiet", action="store_true", help="with --all: no progress line per model on stderr")
    p.set_defaults(func=commands["bench"])

    p = sub.add_parser("demo", help="train a small model on synthetic scenes, evaluate, benchmark and predict")
    p.add_argument("overrides", nargs="*", help="key=value overrides of the demo recipe")
    p.add_argument("--out", default="demo-output", help="output folder (default demo-output)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=commands["demo"])

    p = sub.add_parser("export", help="export a model or checkpoint to ONNX, OpenVINO IR or TorchScript, verified after export")
    p.add_argument("model", help="an rtseg checkpoint (.pt) or a registered model name")
    p.add_argument("--format", choices=["onnx", "torchscript", "openvino"], default="onnx",
                   help="onnx, torchscript or openvino (an IR: NAME.xml + NAME.bin)")
    p.add_argument("--via", choices=["onnx", "torch"], default="onnx",
                   help="openvino: convert the verified ONNX export (default) or the PyTorch model directly")
    p.add_argument("--size", help="fixed input HxW (default: the size the weights' card records, i.e. the size they were "
                                  "evaluated at; 512x1024 when it records none)")
    p.add_argument("--dynamic", action="store_true", help="ONNX / OpenVINO: free batch, height and width")
    p.add_argument("--trace-size", help="with --dynamic: the HxW traced and verified at (default as for --size)")
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
    p.add_argument("--quiet", action="store_true", help="no line on stderr saying what is running")
    p.set_defaults(func=commands["export"])

    p = sub.add_parser("export-weights", help="a publishable safetensors weights file, with its model card, from a training checkpoint")
    p.add_argument("checkpoint", help="an rtseg checkpoint (e.g. runs/NAME/best.pt)")
    p.add_argument("--out", help="output file (default: the checkpoint's name with .safetensors)")
    p.add_argument("--half", action="store_true", help="store floating-point tensors as float16 (half the size)")
    p.add_argument("--license", help="licence written into the card, e.g. MIT")
    p.add_argument("--source", help="source written into the card, e.g. the project URL or run name")
    p.set_defaults(func=commands["export-weights"])

    p = sub.add_parser("predict", help="colourised masks and overlays for images or folders")
    p.add_argument("model", help="an rtseg checkpoint (.pt), a registered model name or an exported .onnx file")
    p.add_argument("inputs", nargs="+", help="image files, folders, videos (.mp4, .avi, ...) or image-sequence patterns (frames/%%05d.png)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--quiet", action="store_true", help="no progress bar over many images")
    p.add_argument("--weights", help=weights_help)
    p.add_argument("--num-classes", type=int)
    p.add_argument("--size", help="resize inputs to HxW before the model, or 'card': to the size the weights were trained "
                                  "and evaluated at; outputs keep the image size (default: each image at its own size)")
    p.add_argument("--alpha", type=float, default=0.5, help="overlay opacity")
    p.add_argument("--no-legend", action="store_true", help="overlays without the legend of the classes present")
    p.add_argument("--save-labels", action="store_true", help="also write the raw class-index PNG")
    p.add_argument("--as-video", action="store_true", help="write the input images, in name order, as one overlay video")
    p.add_argument("--fps", type=float, help="frame rate of written videos (default: the input's, else 25)")
    p.add_argument("--threads", type=int, help="CPU threads")
    p.add_argument("--backend", choices=["torch", "onnxruntime", "openvino"], default="torch",
                   help="PyTorch, ONNX Runtime or OpenVINO (a .onnx model file always runs in ONNX Runtime, a .xml IR in OpenVINO)")
    _add_optimize_options(p)
    p.add_argument("--format-for-server", action="store_true",
                   help="Cityscapes: write only labelId PNGs named like the input (the official evaluation server's format)")
    p.set_defaults(func=commands["predict"])

    p = sub.add_parser("select", help="the most accurate trained network and deployment path within a latency budget, measured here",
                       description="Times every trained network for the dataset on every deployment path this CPU runs natively "
                                   "(PyTorch eager / optimized / bf16, OpenVINO fp32 / bf16 / INT8, ONNX Runtime fp32 / INT8), side by "
                                   "side, keeps the paths whose accuracy passed (recorded with the weights, or measured with --verify) "
                                   "and picks the most accurate one within --budget-ms (the fastest when none fits). Timings are cached "
                                   "per CPU, thread count, size and versions: a second call is instant.")
    p.add_argument("--budget-ms", type=float, required=True, help="latency budget per image (batch 1), in milliseconds")
    p.add_argument("--size", help="input HxW (default: the size the weights were evaluated at, e.g. 360x480 for CamVid)")
    p.add_argument("--threads", type=int, help="CPU threads (default: torch's, i.e. all cores)")
    p.add_argument("--dataset", default="camvid", help="the dataset the networks were trained on (default camvid)")
    p.add_argument("--networks", help="comma-separated model names to consider (default: every trained network for the dataset)")
    p.add_argument("--paths", help="comma-separated deployment paths to consider (default: every one that runs here)")
    p.add_argument("--verify", metavar="DATA_ROOT", help="measure each reduced-precision path's mIoU change on the dataset's val split "
                                                         "(and calibrate INT8 on its train images) instead of trusting the records")
    p.add_argument("--verify-images", type=int, help="with --verify: only the first N val images")
    p.add_argument("--calibration", help="folder of images to calibrate the INT8 paths on (default: DATA_ROOT/train with --verify)")
    p.add_argument("--rounds", type=int, default=10, help="interleaved timing rounds (default 10)")
    p.add_argument("--no-cache", action="store_true", help="time again even where this machine's timings are cached")
    p.add_argument("--export", metavar="OUT", help="write the pick's deployed file (.xml for OpenVINO, .onnx, or .pt for TorchScript)")
    p.add_argument("--json", help="write the table and the pick as JSON")
    p.set_defaults(func=commands["select"])

    p = sub.add_parser("serve", help="an HTTP inference server and a browser page for trained networks (pip install 'rtseg[serve]')",
                       description="Serve networks over HTTP: GET / (a page), GET /health, GET /models, POST /v1/segment/MODEL "
                                   "(?output=labels|mask|overlay|json), GET /docs. Networks load once at start.")
    p.add_argument("--model", action="append", metavar="[NAME=]MODEL@WEIGHTS",
                   help="a network to serve, repeatable: a registered model with a weights tag, URL or file (fplnet@camvid, the default), "
                        "or a checkpoint / weights / .onnx / .xml file; served as NAME (default: the model's name)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only; 0.0.0.0 for every interface)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--backend", choices=["auto", "torch", "openvino", "onnxruntime"], default="auto",
                   help="auto (default): the path rtseg bench --optimize picks on this CPU (BN folded; channels-last and torch.compile "
                        "where a timing shows them faster); torch: eager PyTorch; onnxruntime / openvino: a dynamic export made at start")
    p.add_argument("--threads", type=int, help="CPU threads per network (default: all cores, or cores / --workers)")
    p.add_argument("--size", help="network input HxW every image is resized to (default: the size the weights were trained at, "
                                  "e.g. 360x480 for the CamVid zoo); answers come back at the image's own size")
    p.add_argument("--precision", choices=["fp32", "bf16", "auto"], default="fp32",
                   help="with --backend auto or openvino: bf16 on CPUs with native bf16 (auto: only where the arg-max agrees)")
    p.add_argument("--compile", choices=["off", "on", "auto"], default="auto",
                   help="with --backend auto: torch.compile (auto: kept only where faster; off starts in seconds instead of up to a minute)")
    p.add_argument("--workers", type=int, default=1, help="server processes, each with its own copy of the networks (default 1)")
    p.add_argument("--batch-window-ms", type=float, default=0.0,
                   help="dynamic batching: requests arriving within this many ms run as one batch (default 0: off; docs/deployment.md "
                        "has whether it pays)")
    p.add_argument("--max-batch", type=int, default=8, help="largest dynamic batch (default 8)")
    p.add_argument("--max-body-mb", type=float, default=20.0, help="largest request body in MB (default 20)")
    p.add_argument("--max-pixels", type=float, default=25.0, help="largest image in megapixels, checked from its header before decoding (default 25)")
    p.add_argument("--read-timeout", type=float, default=30.0, help="seconds a request body may take to arrive (default 30)")
    p.add_argument("--max-queue", type=int, default=64, help="requests that may wait for one network; more get 503 (default 64)")
    p.add_argument("--max-connections", type=int, default=128, help="open connections; more get 503 (default 128)")
    p.add_argument("--drain-timeout", type=float, default=30.0, help="seconds SIGTERM waits for requests in flight (default 30)")
    p.add_argument("--log-level", choices=["critical", "error", "warning", "info", "debug"], default="info")
    p.set_defaults(func=commands["serve"])
    return parser


def parse(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """``parser.parse_args(argv)``, except that config overrides (``train.epochs=3``) are accepted anywhere on the line of
    the commands that take them: ``rtseg train cfg.yaml --out runs/x train.epochs=1`` is what it looks like."""
    _Parser.argv = list(argv)
    args, extra = parser.parse_known_args(argv)
    if extra:
        if hasattr(args, "overrides") and all(OVERRIDE.match(e) for e in extra):
            args.overrides = list(args.overrides or []) + extra
        else:
            sub = parser._subparsers._group_actions[0].choices.get(args.command, parser) if parser._subparsers else parser
            unknown = [e for e in extra if not (hasattr(args, "overrides") and OVERRIDE.match(e))]
            sub.error(f"unrecognized arguments: {' '.join(unknown)}")
    return args
