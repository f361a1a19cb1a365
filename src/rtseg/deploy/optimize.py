"""An inference-only copy of a model that computes the same logits faster.

:func:`optimize` applies, in order:

1. gradual-grouping layers (ESSNet) -> real grouped convolutions (only where alpha = 0, where that is exact);
2. dropout -> identity (dropout is already a no-op in eval mode; this removes the call);
3. BatchNorm folded into the convolution that feeds it. Which BN follows which convolution is found
   by running the model once and watching the tensors, so it works for any forward code. A BN is
   folded only when its input is the output of one convolution module *and nothing else reads that
   output* (a residual branch reading the pre-BN tensor would otherwise change). BNs after a concat,
   an addition, a pooling or a shared activation stay as they are;
4. optionally channels-last memory format and ``torch.compile`` (inductor), each kept only when a
   timing on this machine shows it is faster (``"auto"``, the default), or forced on / off;
5. optionally bfloat16 inference (``precision="bf16"``, or ``"auto"``: bf16 only on a CPU with native bf16
   whose arg-max agrees with fp32 on a check input, see :mod:`rtseg.deploy.precision`).

The result is checked against the eager model on a random input unless ``verify=False`` (for bf16: its
arg-max agreement, since bf16 logits differ from fp32 ones by far more than fp32 rounding).
"""
from __future__ import annotations

import copy
import statistics
import warnings
from dataclasses import dataclass, field

import torch
import torch.nn as nn

from rtseg.deploy.fold import fold_batchnorm, remove_dropout, set_child
from rtseg.deploy.precision import compare_outputs
from rtseg.devices import compile_unavailable_reason as _compile_available

from rtseg.errors import OptionError

__all__ = ["optimize", "fold_batchnorm", "remove_dropout", "OptimizationReport", "compare_outputs"]

_BF16_BROKEN = 0.95  # arg-max agreement below which a bf16 model is taken as broken by the verification

@dataclass
class OptimizationReport:
    """What :func:`optimize` did; attached to the returned model as ``rtseg_optimization``."""

    folded_batchnorms: int = 0
    kept_batchnorms: list[str] = field(default_factory=list)
    removed_dropouts: int = 0
    converted_gradual_layers: int = 0
    channels_last: bool = False
    compiled: bool = False
    precision: str = "fp32"
    precision_reason: str = ""
    argmax_agreement: float | None = None
    timings_ms: dict[str, float] = field(default_factory=dict)
    max_abs_diff: float | None = None
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        parts = [f"{self.folded_batchnorms} BatchNorm folded", f"{len(self.kept_batchnorms)} kept (not after a single-use conv)",
                 f"{self.removed_dropouts} dropout removed"]
        if self.converted_gradual_layers:
            parts.append(f"{self.converted_gradual_layers} gradual layers grouped")
        parts.append("channels-last" if self.channels_last else "contiguous (NCHW)")
        parts.append("torch.compile" if self.compiled else "not compiled")
        if self.precision_reason:
            parts.append(f"precision {self.precision_reason}")
        if self.max_abs_diff is not None:
            parts.append(f"max |logit diff| vs eager {self.max_abs_diff:.2e}")
        return ", ".join(parts)


def _time(candidates: dict[str, tuple[nn.Module, torch.Tensor]], iters: int) -> dict[str, float]:
    """Median milliseconds per call of each (model, input), timed in interleaved rounds after one warm-up call each."""
    from rtseg.efficiency import device_sync, time_calls

    device = next(iter(candidates.values()))[1].device
    with torch.inference_mode():
        times = time_calls({k: (lambda m=model, x=x: m(x)) for k, (model, x) in candidates.items()}, 1, iters, device_sync(device))
    return {k: statistics.median(v) for k, v in times.items()}


@torch.library.custom_op("rtseg::pixel_shuffle", mutates_args=())
def _pixel_shuffle_op(x: torch.Tensor, upscale_factor: int) -> torch.Tensor:
    return nn.functional.pixel_shuffle(x, upscale_factor)


@_pixel_shuffle_op.register_fake
def _(x, upscale_factor):
    return nn.functional.pixel_shuffle(x, upscale_factor)  # fake tensors carry the real op's output strides


class ExternPixelShuffle(nn.PixelShuffle):
    """A pixel shuffle that ``torch.compile`` leaves to ATen's kernel instead of generating its own.

    Inductor's generated kernel for a large shuffle into a channels-last tensor (FarSee-Net's last sub-pixel
    convolution: 304 channels at 192x320, factor 4) took 83 ms where ATen's takes 24 ms on the CPU of
    docs/benchmarks.md.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.rtseg.pixel_shuffle(x, self.upscale_factor)


def _swap_pixel_shuffles(model: nn.Module, to_extern: bool) -> None:
    """Replace every ``nn.PixelShuffle`` by :class:`ExternPixelShuffle` (or back)."""
    old, new = (nn.PixelShuffle, ExternPixelShuffle) if to_extern else (ExternPixelShuffle, nn.PixelShuffle)
    for n in [n for n, m in model.named_modules() if type(m) is old]:
        set_child(model, n, new(model.get_submodule(n).upscale_factor))


def _check_compile_mode(mode: str | None) -> None:
    if mode is None:
        return
    try:
        from torch._inductor import list_mode_options
    except ImportError:  # pragma: no cover - checked again when compiling
        return
    modes = list_mode_options()  # every mode this PyTorch knows, with its settings
    if mode not in modes:
        raise OptionError(f"compile_mode must be one of {', '.join(modes)} (or None), got {mode!r}")


def _agrees(precision: str, cmp: dict, tolerance: float, reference: torch.Tensor, relative: bool) -> bool:
    if precision == "bf16":
        return cmp["argmax_agreement"] >= _BF16_BROKEN
    return cmp["max_abs_diff"] <= tolerance * (max(1.0, float(reference.abs().max())) if relative else 1.0)


def optimize(
    model: nn.Module,
    example_size: tuple[int, int] = (128, 256),
    *,
    channels_last: bool | str = "auto",
    compile: bool | str = "auto",
    compile_mode: str | None = None,
    device: str | torch.device | None = None,
    timing_iters: int = 5,
    verify: bool = True,
    tolerance: float | None = None,
    inplace: bool = False,
    precision: str = "fp32",
    check_input: torch.Tensor | None = None,
    min_agreement: float | None = None,
) -> nn.Module:
    """An eval-mode copy of ``model`` with BN folded, dropout removed and gradual layers grouped.

    ``channels_last`` / ``compile``: ``True`` forces, ``False`` skips, ``"auto"`` (the default) times both
    variants at ``example_size`` (``timing_iters`` interleaved runs each, median) and keeps the faster one.
    Compiling took 2-18 s per model and input size in the 2-thread CPU run of docs/benchmarks.md; pass
    ``compile=False`` where that matters more than the speed-up. ``compile_mode`` is passed to
    ``torch.compile`` (e.g. ``"max-autotune"``, which uses CUDA graphs on a GPU). With ``verify`` the result
    is compared with the eager model on a random input and a difference above ``tolerance`` raises (default 1e-4
    times the largest logit, at least 1, on CPUs: trained weights on a random input give logits in the thousands; on
    CUDA 1e-2 times it, since cuDNN runs fp32 convolutions in TF32 by default and the folded weights take other
    algorithms than the eager ones; a ``tolerance`` given is absolute).
    ``precision``: ``"fp32"`` (the default), ``"bf16"`` (weights and activations in bfloat16; logits are
    returned as float32) or ``"auto"`` (bf16 only on a CPU with native bf16 whose bf16 arg-max agrees with
    fp32 on at least ``min_agreement`` of the pixels of ``check_input``, a normalised image batch, else of the
    random example). With bf16, ``verify`` checks only that the arg-max agrees with eager on >= 95 % of a random
    input's pixels (a broken conversion), instead of ``tolerance``.
    What was done is in ``result.rtseg_optimization`` (an :class:`OptimizationReport`).
    """
    from rtseg.deploy.precision import DEFAULT_MIN_AGREEMENT, PRECISIONS, check_precision

    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    min_agreement = DEFAULT_MIN_AGREEMENT if min_agreement is None else min_agreement
    for opt, value in (("channels_last", channels_last), ("compile", compile)):
        if value not in (True, False, "auto"):
            raise ValueError(f"{opt} must be True, False or 'auto', got {value!r}")
    _check_compile_mode(compile_mode)
    eager = model
    model = model if inplace else copy.deepcopy(model)
    model.eval()
    if device is None:
        try:
            device = next(model.parameters()).device
        except StopIteration:
            device = torch.device("cpu")
    device = torch.device(device)
    model.to(device)
    report = OptimizationReport()
    example = torch.randn(1, 3, *example_size, device=device, generator=None)
    # relative to the largest logit: trained weights on a random input can give logits in the thousands, where fp32
    # rounding of a folded convolution alone moves them by 1e-3
    relative_tolerance = tolerance is None
    if tolerance is None:
        tolerance = 1e-2 if device.type == "cuda" else 1e-4

    reference = None
    if verify:
        with torch.inference_mode():
            reference = eager.eval()(example.to(next(eager.parameters()).device)).to(device)

    from rtseg.models.gradual_grouping import convert, gradual_layers

    layers = gradual_layers(model)
    if layers:
        if all(float(layer.alpha) == 0.0 for layer in layers):
            convert(model)
            report.converted_gradual_layers = len(layers)
        else:
            report.notes.append("gradual-grouping layers kept dense: alpha > 0, so grouping would change the output")
    report.removed_dropouts = remove_dropout(model)
    # The compiled variant starts from the network before folding: inductor folds BatchNorm into the convolutions
    # itself (as fast, measured), and compiling the pre-folded ESSNetB-DG2 corrupted the heap (an abort, not an
    # exception) in torch 2.13 on an Intel Xeon with AMX.
    unfolded = copy.deepcopy(model) if compile else None
    report.folded_batchnorms, report.kept_batchnorms = fold_batchnorm(model, example)

    if channels_last == "auto":
        cl_model = copy.deepcopy(model).to(memory_format=torch.channels_last)
        ms = _time({"contiguous": (model, example), "channels_last": (cl_model, example.to(memory_format=torch.channels_last))},
                   timing_iters)
        report.timings_ms.update(ms)
        channels_last = ms["channels_last"] < ms["contiguous"]
        del cl_model  # the kept layout is applied to ``model`` itself below, so that ``inplace`` holds
    if channels_last:
        model.to(memory_format=torch.channels_last)
        report.channels_last = True

    if precision != "fp32":
        choice = _choose_precision(model, precision, check_input if check_input is not None else example, min_agreement,
                                   report.channels_last, check_precision)
        report.precision, report.precision_reason, report.argmax_agreement = choice.precision, choice.summary(), choice.argmax_agreement
        if choice.precision == "bf16":
            model = BFloat16Model(model.to(torch.bfloat16))
    result: nn.Module = model
    if compile:
        why_not = _compile_available(device)
        if why_not:
            if compile is True:
                raise RuntimeError(f"torch.compile was asked for but {why_not}")
            report.notes.append(f"not compiled: {why_not}")
        else:
            target = unfolded.to(device)
            if report.channels_last:
                target.to(memory_format=torch.channels_last)
            if report.precision == "bf16":
                target = BFloat16Model(target.to(torch.bfloat16))
            _swap_pixel_shuffles(target, to_extern=True)
            compiled = _Compiled(target, compile_mode, channels_last=report.channels_last)
            if compile == "auto":
                x = example.to(memory_format=torch.channels_last) if report.channels_last else example
                try:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        ms = _time({"eager_optimized": (model, x), "compiled": (compiled, x)}, timing_iters)
                    report.timings_ms.update(ms)
                    if ms["compiled"] < ms["eager_optimized"]:
                        result, report.compiled = compiled, True
                except Exception as exc:  # compilation problems must not break inference
                    report.notes.append(f"not compiled: torch.compile failed ({type(exc).__name__}: {exc})")
            else:
                result, report.compiled = compiled, True

    if verify and reference is not None:
        with torch.inference_mode():
            out = result(example)
        cmp = compare_outputs(reference, out)
        if report.compiled and compile == "auto" and not _agrees(report.precision, cmp, tolerance, reference, relative_tolerance):
            # a miscompilation (seen with channels-last under an AVX2-capped oneDNN): keep the eager network
            report.notes.append(f"not compiled: the compiled network differed from eager by {cmp['max_abs_diff']:.3g}")
            result, report.compiled = model, False
            with torch.inference_mode():
                out = result(example)
            cmp = compare_outputs(reference, out)
        report.max_abs_diff = cmp["max_abs_diff"]
        if report.precision == "bf16":
            # a sanity check only (a broken conversion, not an imprecise one): random weights on a random input
            # agree less than trained weights on images; the accuracy check of "auto" judges precision
            if cmp["argmax_agreement"] < _BF16_BROKEN:
                raise RuntimeError(
                    f"bf16 {type(eager).__name__} agrees with the eager fp32 model on only {100 * cmp['argmax_agreement']:.2f} % "
                    f"of the pixels (< {100 * _BF16_BROKEN:.0f} %) of a random input; please report this model"
                )
        elif cmp["max_abs_diff"] > tolerance * (max(1.0, float(reference.abs().max())) if relative_tolerance else 1.0):
            raise RuntimeError(
                f"optimized {type(eager).__name__} differs from the eager model by {cmp['max_abs_diff']:.3g} (> {tolerance:g}"
                f"{' x the largest logit' if relative_tolerance else ''}) "
                "on a random input; please report this model"
            )
    for attr in ("rtseg_card", "num_classes", "size_divisor", "output_scale"):
        if hasattr(eager, attr) and not hasattr(result, attr):
            setattr(result, attr, getattr(eager, attr))
    result.rtseg_optimization = report
    return result


class BFloat16Model(nn.Module):
    """A model whose weights are bfloat16: casts the input to bf16 and returns float32 logits.

    Converting the weights once ran as fast as or faster than ``torch.autocast`` in eager mode on the CPU of
    docs/benchmarks.md (autocast casts every convolution's weight again on every call).
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.to(torch.bfloat16)).float()


def _choose_precision(model: nn.Module, precision: str, check_input: torch.Tensor, min_agreement: float, channels_last: bool,
                      check_precision):
    """The :class:`~rtseg.deploy.precision.PrecisionChoice` for ``model`` (fp32, BN already folded)."""
    from rtseg.deploy.precision import native_bf16

    if precision == "auto" and not native_bf16()[0]:
        return check_precision("auto")
    x = check_input.to(next(model.parameters()).device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    bf16 = BFloat16Model(copy.deepcopy(model).to(torch.bfloat16))
    with torch.inference_mode():
        return check_precision(precision, model(x), bf16(x), min_agreement)


class _Compiled(nn.Module):
    """``torch.compile`` (inductor) of a model, wrapped so that it keeps the model's attributes and parameters."""

    def __init__(self, model: nn.Module, mode: str | None, channels_last: bool):
        super().__init__()
        self.model = model
        self.channels_last = channels_last
        self._compiled = torch.compile(model, mode=mode, dynamic=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.no_grad(), _inductor_settings(self.channels_last and x.device.type == "cpu"):
            return self._compiled(x)  # an inference-only graph: no autograd bookkeeping in it


def _inductor_settings(channels_last_cpu: bool):
    """Inductor settings in force while a compiled network runs (and so while it compiles, on its first calls).

    Channels-last on a CPU: no oneDNN weight prepacking. With it, torch 2.13's compiled channels-last inference
    corrupted the heap (glibc aborts: "corrupted size vs. prev_size") on an Intel Xeon with AMX, for ESPNet, FPLNet and
    ESSNet with random or trained weights; without it the same graphs run correctly at the same speed (FPLNet 70.1 ms
    against 68.9 for the contiguous compiled network, ERFNet 76.3 against 80.8; 2 threads, 360x480)."""
    import contextlib

    if not channels_last_cpu:
        return contextlib.nullcontext()
    from torch._inductor import config

    return config.patch({"cpp.weight_prepack": False})
