"""The one validation layer of the tasks' options: every check names the option, the value and what is expected,
and runs before any model is built or any file read (bench, predict, export and eval call these first)."""
from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Iterable, Literal

from rtseg.errors import OptionError

__all__ = ["check_count", "check_number", "check_device", "check_scales", "check_opset", "check_format_suffix",
           "check_output", "ONNX_OPSETS", "DEVICE_CHOICES"]

DEVICE_CHOICES = "auto, cpu, cuda, cuda:N or mps"
_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def _onnx_opsets() -> tuple[int, int]:
    # rtseg exports with the TorchScript-based exporter (dynamo=False): opset 17 up to its newest
    try:
        from torch.onnx import _constants

        return 17, int(getattr(_constants, "ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET", 20))
    except ImportError:  # pragma: no cover - older torch layouts
        return 17, 20


ONNX_OPSETS = _onnx_opsets()


def check_count(value: int | None, option: str, minimum: int = 1) -> None:
    """A whole number >= ``minimum`` (None: the option was not given)."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise OptionError(f"{option} {value!r}: expected a whole number >= {minimum}")


def check_number(value: float | None, option: str, lo: float | None = None, hi: float | None = None, lo_open: bool = False) -> None:
    """A finite number in ``[lo, hi]`` (``(lo, hi]`` with ``lo_open``); None: the option was not given."""
    if value is None:
        return
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok and lo is not None:
        ok = value > lo if lo_open else value >= lo
    if ok and hi is not None:
        ok = value <= hi
    if not ok:
        left = "(" if lo_open else "["
        expected = (f"a number in {left}{lo:g}, {hi:g}]" if lo is not None and hi is not None
                    else f"a number {'>' if lo_open else '>='} {lo:g}" if lo is not None else f"a number <= {hi:g}")
        raise OptionError(f"{option} {value!r}: expected {expected}")


def check_device(device: str | None, option: str = "--device") -> None:
    """One of auto, cpu, cuda, cuda:N, mps, and present on this machine."""
    if device is None:
        return
    name = str(device).strip().lower()
    if not _DEVICE.match(name):
        raise OptionError(f"{option} {device!r}: expected one of {DEVICE_CHOICES}")
    import torch

    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise OptionError(f"{option} {device}: CUDA is not available on this machine; use {option} cpu")
        index = int(name.split(":")[1]) if ":" in name else 0
        if index >= torch.cuda.device_count():
            raise OptionError(f"{option} {device}: this machine has {torch.cuda.device_count()} CUDA device(s) (cuda:0 ..)")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise OptionError(f"{option} mps: Apple MPS is not available on this machine; use {option} cpu")


def check_scales(scales: Iterable[float], option: str = "--scales") -> None:
    """Input scales of multi-scale testing: each a finite number in (0, 8]."""
    for s in scales:
        check_number(s, option, 0, 8, lo_open=True)


def check_opset(opset: int, option: str = "--opset") -> None:
    lo, hi = ONNX_OPSETS
    if isinstance(opset, bool) or not isinstance(opset, int) or not lo <= opset <= hi:
        raise OptionError(f"{option} {opset!r}: this exporter supports ONNX opsets {lo} to {hi}")


def check_format_suffix(format: str, out: str | Path | None, suffixes: dict[str, str]) -> None:
    """An ``--out`` whose extension is the one ``format`` writes (an ``.onnx`` name for a TorchScript file would be
    unreadable later)."""
    if out is None:
        return
    expected = suffixes[format]
    suffix = Path(out).suffix.lower()
    if suffix != expected:
        other = next((f for f, s in suffixes.items() if s == suffix), None)
        hint = f" (that is the extension of --format {other})" if other else ""
        raise OptionError(f"--out {str(out)!r}: --format {format} writes a {expected} file, not {suffix or 'a file without extension'}{hint}; "
                          f"name it {Path(out).stem}{expected} or choose the matching --format")


def check_output(path: str | Path | None, kind: Literal["file", "dir"] = "file", option: str = "--out", overwrite: bool = True) -> None:
    """The output can be written (before any work): see :func:`rtseg.storage.check_writable`. Files are replaced
    by default, as the commands always did; a folder where a file is needed (or the reverse) is refused."""
    if path is None:
        return
    from rtseg.storage import check_writable

    check_writable(path, kind=kind, overwrite=overwrite, option=option)
