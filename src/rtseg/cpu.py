"""What this CPU is: its model name, the instruction-set flags that decide which precision and which deployment path
are fast here, and how many logical CPUs the process may use. One probe for the whole package (training precision,
inference precision, benchmark records, ``rtseg select``'s cache key, the bound on ``--threads``).

``RTSEG_CPU_FLAGS`` (a space-separated flag list, e.g. ``"avx2 fma"``) replaces the flags read from the machine, so a
test, or a user asking what rtseg would choose elsewhere, can see the decisions an AVX2-only or an AMX CPU would get.
It changes decisions only; it cannot make the hardware faster or slower.
"""
from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from functools import lru_cache

from rtseg.errors import OptionError

__all__ = ["CPUInfo", "cpu_info", "available_cpus", "check_threads", "BF16_FLAGS", "FAKE_FLAGS_VARIABLE"]

FAKE_FLAGS_VARIABLE = "RTSEG_CPU_FLAGS"
BF16_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")  # x86 AVX-512 BF16, AMX-BF16; Arm's BF16 ("Features" line)
# the flags that name a CPU kind in rtseg's tables, in the order they are listed
_NAMED = (("avx2", "AVX2"), ("avx512f", "AVX-512"), ("avx512_vnni", "AVX-512 VNNI"), ("avx_vnni", "AVX-VNNI"),
          ("avx512_bf16", "AVX-512 BF16"), ("amx_bf16", "AMX-BF16"), ("amx_int8", "AMX-INT8"), ("avx512_fp16", "AVX-512 FP16"),
          ("asimd", "NEON"), ("bf16", "BF16"), ("sve", "SVE"))


@dataclass(frozen=True)
class CPUInfo:
    """The facts rtseg decides by: model name, instruction-set flags, logical CPUs this process may use."""

    model: str
    flags: frozenset[str]
    cpus: int
    faked: bool = False

    @property
    def native_bf16(self) -> bool:
        """bf16 dot products in hardware; without them torch and OpenVINO emulate bf16, several times slower than fp32."""
        return bool(self.flags & set(BF16_FLAGS))

    @property
    def int8_dot_product(self) -> bool:
        """8-bit dot-product instructions (VNNI, AMX-INT8, Arm dotprod), which make INT8 inference pay most."""
        return bool(self.flags & {"avx512_vnni", "avx_vnni", "amx_int8", "asimddp"})

    @property
    def named_flags(self) -> list[str]:
        return [label for flag, label in _NAMED if flag in self.flags]

    @property
    def kind(self) -> str:
        """A short label for tables: ``AVX-512 BF16 + AMX``, ``AVX-512 (no native bf16)``, ``AVX2 only``."""
        f = self.flags
        if "amx_bf16" in f:
            return "AVX-512 BF16 + AMX"
        if "avx512_bf16" in f:
            return "AVX-512 BF16"
        if "avx512f" in f:
            return "AVX-512 (no native bf16)"
        if "avx2" in f:
            return "AVX2 only"
        if "asimd" in f:
            return "Arm NEON" + (" + BF16" if "bf16" in f else "")
        return "baseline x86-64" if platform.machine() in ("x86_64", "AMD64") else platform.machine() or "unknown"

    def describe(self) -> str:
        """``Intel(R) Xeon(R) Processor (AVX2, AVX-512, ..., AMX-BF16), 2 CPUs`` for records and table headers."""
        flags = ", ".join(self.named_flags) or "no vector flags read"
        return f"{self.model} ({flags}{'; flags faked by $' + FAKE_FLAGS_VARIABLE if self.faked else ''}), {self.cpus} CPUs"


def available_cpus() -> int:
    """Logical CPUs this process may run on (its affinity mask where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


@lru_cache(maxsize=4)
def _probe(fake: str | None) -> CPUInfo:
    model, flags = "", set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key = line.split(":", 1)[0].strip()
                if key == "model name" and not model:
                    model = line.split(":", 1)[1].strip()
                elif key in ("flags", "Features") and not flags:
                    flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    if not model:
        model = platform.processor() or platform.machine() or "cpu"
    if fake is not None:
        return CPUInfo(model, frozenset(fake.split()), available_cpus(), faked=True)
    return CPUInfo(model, frozenset(flags), available_cpus())


def cpu_info() -> CPUInfo:
    """This CPU's facts (read once; ``$RTSEG_CPU_FLAGS`` replaces the flags)."""
    return _probe(os.environ.get(FAKE_FLAGS_VARIABLE))


def check_threads(value: int | None, option: str = "--threads") -> None:
    """A thread count of 1 .. 4 x the logical CPUs here. torch accepts any number and crashes far above what a
    machine has (``--threads 100000`` is a segmentation fault), so the bound is checked before torch sees it."""
    if value is None:
        return
    cpus = available_cpus()
    top = 4 * cpus
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= top:
        raise OptionError(f"{option} {value!r}: expected a whole number 1..{top} (this machine has {cpus} logical CPU(s); "
                          f"more threads than CPUs only adds switching, {cpus} is the usual choice)")
