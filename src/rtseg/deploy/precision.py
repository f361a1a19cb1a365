"""Reduced-precision inference on CPUs: whether this CPU computes bf16 natively, and the accuracy check.

``precision="auto"`` (in :func:`rtseg.optimize` and the OpenVINO backend) picks bf16 only when both hold:

1. the CPU has native bf16 arithmetic (the ``avx512_bf16`` or ``amx_bf16`` flag; without them bf16 is
   emulated and slower than fp32), and
2. the bf16 model's arg-max agrees with the fp32 model's on at least ``min_agreement`` of the pixels of a
   check input (a real image when one is given, else a random one).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["PRECISIONS", "DEFAULT_MIN_AGREEMENT", "native_bf16", "check_precision", "compare_outputs", "PrecisionChoice"]

PRECISIONS = ("fp32", "bf16", "auto")

# Fraction of pixels whose arg-max must equal fp32's for "auto" to keep bf16. A random-weight model's class
# logits lie close together, so its agreement understates a trained model's: 99.2-99.96 % for bf16 on
# random-weight ESPNet, FPLNet and ERFNet at 256x512 (random input), where the accuracy goal is
# judged on trained weights (benchmarks/precision_camvid.py).
DEFAULT_MIN_AGREEMENT = 0.99

def native_bf16() -> tuple[bool, str]:
    """(True, why) when this CPU computes bf16 natively, else (False, why not) (:func:`rtseg.cpu.cpu_info`)."""
    from rtseg.cpu import BF16_FLAGS, cpu_info

    info = cpu_info()
    flags = info.flags & set(BF16_FLAGS)
    if flags:
        return True, f"CPU flags {', '.join(sorted(flags))}"
    mkldnn = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    if not info.flags and not info.faked and mkldnn is not None:  # no /proc/cpuinfo (not Linux): ask oneDNN
        try:
            if mkldnn():
                return True, "oneDNN reports bf16 support"
        except RuntimeError:
            pass
    return False, f"the CPU has none of the native bf16 flags ({', '.join(BF16_FLAGS)}); bf16 would be emulated"


@dataclass
class PrecisionChoice:
    """What a precision check found; ``precision`` is what was chosen."""

    precision: str
    requested: str
    reason: str
    argmax_agreement: float | None = None
    max_abs_diff: float | None = None

    def summary(self) -> str:
        text = f"{self.precision} ({self.requested}: {self.reason}"
        if self.argmax_agreement is not None:
            text += f"; bf16 arg-max agrees with fp32 on {100 * self.argmax_agreement:.2f} % of pixels"
        return text + ")"


def compare_outputs(reference: torch.Tensor, candidate: torch.Tensor) -> dict[str, float]:
    """Max absolute logit difference and the fraction of pixels whose argmax agrees."""
    reference, candidate = reference.float(), candidate.float()
    return {
        "max_abs_diff": float((reference - candidate).abs().max()),
        "argmax_agreement": float((reference.argmax(1) == candidate.argmax(1)).float().mean()),
    }


def check_precision(requested: str, fp32_logits=None, bf16_logits=None, min_agreement: float = DEFAULT_MIN_AGREEMENT) -> PrecisionChoice:
    """Decide between fp32 and bf16 for ``requested`` in :data:`PRECISIONS`.

    For ``"auto"`` both logits (torch tensors or arrays, ``N x C x H x W``) must be given unless the CPU has no
    native bf16, in which case fp32 is chosen without them. ``"bf16"`` is kept even where it is emulated (the
    user asked for it); the agreement is recorded when logits are given.
    """
    if requested not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {requested!r}")
    if requested == "fp32":
        return PrecisionChoice("fp32", requested, "asked for")
    native, why = native_bf16()
    agreement = diff = None
    if fp32_logits is not None and bf16_logits is not None:
        cmp = compare_outputs(torch.as_tensor(fp32_logits), torch.as_tensor(bf16_logits))
        agreement, diff = cmp["argmax_agreement"], cmp["max_abs_diff"]
    if requested == "bf16":
        return PrecisionChoice("bf16", requested, "asked for" + ("" if native else f" ({why})"), agreement, diff)
    if not native:
        return PrecisionChoice("fp32", requested, why)
    if agreement is None:
        raise ValueError("precision='auto' on a bf16 CPU needs fp32 and bf16 logits of a check input")
    if agreement < min_agreement:
        return PrecisionChoice("fp32", requested, f"{why}, but the accuracy check failed (< {100 * min_agreement:.1f} %)", agreement, diff)
    return PrecisionChoice("bf16", requested, f"{why} and the accuracy check passed (>= {100 * min_agreement:.1f} %)", agreement, diff)
