"""Task: a deployable file of a model (ONNX, OpenVINO IR, TorchScript), verified against PyTorch; publishable
safetensors weights from a training checkpoint."""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Literal

from rtseg.card import card_of
from rtseg.data.image_io import check_size
from rtseg.errors import OptionError
from rtseg.inference import load_model
from rtseg.storage import staged_output
from rtseg.tasks.options import check_count, check_format_suffix, check_opset, check_output

__all__ = ["export", "export_path", "export_weights_file"]

Format = Literal["onnx", "torchscript", "openvino"]
_SUFFIX = {"onnx": ".onnx", "openvino": ".xml", "torchscript": ".pt"}


def _check(format: str, size: tuple[int, int] | None, dynamic: bool, int8: bool, calibration: str | Path | None) -> None:
    if format not in _SUFFIX:
        raise OptionError(f"--format {format!r} is not one of {', '.join(_SUFFIX)}")
    if size is not None:
        check_size(size, "--size")
    if dynamic and size:
        raise OptionError("--size and --dynamic exclude each other: a dynamic export has no fixed size (--size only sets the traced one with --trace-size)")
    if dynamic and format == "torchscript":
        raise OptionError("--dynamic is for --format onnx or openvino; a TorchScript export is traced at one --size")
    if int8 and format == "torchscript":
        raise OptionError("--int8 is for --format onnx (ONNX Runtime) or openvino (NNCF)")
    if int8 and (dynamic or not calibration):
        raise OptionError("--int8 needs a fixed --size and --calibration FOLDER (images from the training data)")


def export_path(model: str | Path, format: Format, size: tuple[int, int], dynamic: bool = False, argmax: bool = False) -> Path:
    """The default output name: ``MODEL-HxW[-argmax].onnx`` (``-dynamic`` for a dynamic export) in the current folder."""
    stem = Path(model).stem if Path(model).is_file() else str(model)
    return Path(f"{stem}{'-dynamic' if dynamic else f'-{size[0]}x{size[1]}'}{'-argmax' if argmax else ''}{_SUFFIX[format]}")


DEFAULT_SIZE = (512, 1024)  # for a network whose card records no size (untrained, foreign weights)


def card_export_size(card) -> tuple[int, int] | None:
    """The network input size the weights were evaluated at (shrunk as their training shrank images), or None."""
    native = card.input_size
    return None if native is None else (card.network_input_size(native) or native)


def export(model: str | Path, out: str | Path | None = None, *, format: Format = "onnx", size: tuple[int, int] | None = None,
           trace_size: tuple[int, int] | None = None, dynamic: bool = False, argmax: bool = False, opset: int = 17, via: str = "onnx",
           weights: str | Path | None = None, num_classes: int | None = None, verify: bool = True, int8: bool = False,
           calibration: str | Path | None = None, calibration_count: int = 32) -> dict[str, Any]:
    """Exports ``model`` (a checkpoint or registered name) at ``size`` (a dynamic export is traced at ``trace_size``)
    and checks the file against PyTorch unless ``verify`` is False. Either size defaults to the one the weights' card
    records (:func:`card_export_size`: the size they were evaluated at, the size the export will meet), else 512x1024;
    the verification runs at the exported (or traced) size. ``int8`` quantizes after calibrating on the images in
    ``calibration``. Returns the export record with ``out``, ``format``, ``input_size``, ``size_from`` and, for int8,
    ``calibration_images`` added."""
    _check(format, size, dynamic, int8, calibration)
    if trace_size is not None:
        check_size(trace_size, "--trace-size")
    if format == "onnx" or (format == "openvino" and via == "onnx"):
        check_opset(opset)
    check_count(calibration_count, "--calibration-count")
    check_count(num_classes, "--num-classes")
    if int8 and not Path(calibration).is_dir():
        raise OptionError(f"--calibration {str(calibration)!r} is not a folder of images")
    check_format_suffix(format, out, _SUFFIX)
    if out:
        check_output(out, "file")  # an existing file is replaced, as asked; a folder or a read-only place is refused now
    net = load_model(model, weights=weights, num_classes=num_classes)
    from_card = card_export_size(card_of(net))
    given = trace_size if dynamic else size
    size = given or from_card or DEFAULT_SIZE
    size_from = ("--trace-size" if dynamic else "--size") if given else "the card (where the weights were evaluated)" if from_card \
        else "the default (no size on the card)"
    out = Path(out) if out else export_path(model, format, size, dynamic, argmax)
    check_output(out, "file")
    with staged_output(out) as staged:  # written aside and renamed when complete and verified
        record = _export_to(net, staged, format, size, dynamic=dynamic, argmax=argmax, opset=opset, via=via, verify=verify,
                            calibration=calibration if int8 else None, calibration_count=calibration_count)
    record.update(out=str(out), format=format, input_size=list(size), size_from=size_from)
    if "path" in record:
        record["path"] = str(out)
    return record


def _export_to(net, out: Path, format: Format, size: tuple[int, int], *, dynamic: bool, argmax: bool, opset: int, via: str, verify: bool,
               calibration: str | Path | None, calibration_count: int) -> dict[str, Any]:
    int8 = calibration is not None
    if format == "onnx":
        from rtseg.deploy.onnx_export import export_onnx

        if int8:
            from rtseg.deploy.quantize import quantize_int8

            with tempfile.TemporaryDirectory() as tmp:
                fp32 = Path(tmp) / "fp32.onnx"
                record = export_onnx(net, fp32, size, argmax=argmax, opset=opset, verify=verify)
                q = quantize_int8(fp32, out, calibration, calibration_count)
            record["bytes"] = q["bytes"]
            record["calibration_images"] = q["calibration_images"]
        else:
            record = export_onnx(net, out, size, dynamic=dynamic, argmax=argmax, opset=opset, verify=verify)
    elif format == "openvino":
        from rtseg.deploy.openvino_backend import export_ir

        record = export_ir(net, out, size, dynamic=dynamic, argmax=argmax, via=via, verify=verify,
                           int8_calibration=calibration if int8 else None, calibration_count=calibration_count)
        if int8:
            record["calibration_images"] = record["int8"]["calibration_images"]
    else:
        from rtseg.deploy.torchscript_export import export_torchscript

        record = export_torchscript(net, out, size, argmax=argmax, verify=verify)
    return record


def export_weights_file(checkpoint: str | Path, out: str | Path | None = None, *, half: bool = False, license: str | None = None,
                        source: str | None = None) -> dict[str, Any]:
    """Writes a safetensors weights file with its model card (default: the checkpoint's name with ``.safetensors``).
    Returns ``{"out", "bytes", "sha256", "card"}``."""
    from rtseg.registry import export_weights, read_card
    from rtseg.hub import sha256_of

    out = Path(out) if out else Path(checkpoint).with_suffix(".safetensors")
    check_output(out, "file")
    export_weights(checkpoint, out, half=half, license=license, source=source)
    return {"out": str(out), "bytes": out.stat().st_size, "sha256": sha256_of(out), "card": read_card(out), "half": half}
