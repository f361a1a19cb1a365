"""What several tasks share: where their messages go and the ``rtseg.optimize`` choices."""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Literal

import torch.nn as nn

from rtseg.errors import OptionError

__all__ = ["Log", "Optimization", "check_inference_precision", "optimized"]

Switch = Literal["off", "on", "auto"]


def _silent(message: str) -> None:
    pass


def _warn(message: str) -> None:
    warnings.warn(message, stacklevel=3)


@dataclass(frozen=True)
class Log:
    """Where a task's messages go: ``info`` for results as they come, ``error`` for an input that failed while the
    others go on, ``note`` for a caution about the result. A library call is silent but for notes (warnings)."""

    info: Callable[[str], None] = _silent
    error: Callable[[str], None] = _silent
    note: Callable[[str], None] = field(default=_warn)


@dataclass(frozen=True)
class Optimization:
    """The choices passed to :func:`rtseg.optimize`: channels-last memory format and ``torch.compile`` (each off,
    on, or auto: kept only when a timing shows it is faster), the compile mode, and the inference precision."""

    channels_last: Switch = "auto"
    compile: Switch = "auto"
    compile_mode: str | None = None
    precision: str = "fp32"


def check_inference_precision(precision: str | None, *, optimize: bool, openvino: bool, train: bool = False) -> None:
    """``precision`` other than fp32 applies to an optimized model or an OpenVINO backend (training takes every value)."""
    if train:
        return  # training steps take every train.precision
    precision = precision or "fp32"
    if precision == "fp16":
        raise OptionError("--precision fp16 applies to bench --train (CUDA); for fp16 inference in bench use --dtype fp16")
    if precision != "fp32" and not openvino and not optimize:
        raise OptionError(f"--precision {precision} applies with --optimize or --backend openvino (for plain PyTorch in bench, use --dtype)")


def optimized(model: nn.Module, choices: Optimization, device: str | None = "cpu", size: tuple[int, int] | None = None) -> Any:
    """``rtseg.optimize`` of ``model`` with ``choices``, timed at ``size`` (default 256x512) where a choice is auto."""
    from rtseg.deploy.optimize import optimize

    pick = {"off": False, "on": True, "auto": "auto"}
    device = "cpu" if device in (None, "auto") else device
    return optimize(model, size if size is not None else (256, 512), channels_last=pick[choices.channels_last], compile=pick[choices.compile],
                    compile_mode=choices.compile_mode, device=device, timing_iters=3, precision=choices.precision)
