"""``train.compile``: whether the training step's forward and backward run under ``torch.compile`` (inductor).

``auto`` (the default) compiles where it was measured to pay off and to train correctly: single-process
CPU runs long enough to repay the compilation (a minute or two on two cores), whose model keeps its
layers fixed during training. ``on`` compiles whenever ``torch.compile`` can run here; ``off`` never.
Checkpoints, validation and exports always use the plain network: the compiled module shares its
parameters and only runs the training forward.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn

from rtseg.devices import compile_unavailable_reason

__all__ = ["MIN_ITERATIONS", "TrainCompile", "resolve_train_compile", "compile_for_training"]

# Compiling FPLNet's training step takes about 90 s on two cores and then saves about 0.9 s a step (360x480,
# batch 8): below this many remaining iterations ``auto`` does not compile.
MIN_ITERATIONS = 1000


@dataclass(frozen=True)
class TrainCompile:
    """What ``train.compile`` resolved to for a run, and why."""

    enabled: bool
    reason: str

    def describe(self) -> str:
        return f"{'compiled' if self.enabled else 'not compiled'} ({self.reason})"


def _setting(value: Any) -> str:
    # YAML reads on/off as booleans
    value = {True: "on", False: "off"}.get(value, value) if isinstance(value, bool) else value
    if value not in ("auto", "on", "off"):
        raise ValueError(f"train.compile={value!r} is not one of auto, on, off")
    return value


def resolve_train_compile(value: Any, device: torch.device, remaining_iterations: int, world_size: int = 1,
                          changes_layers: bool = False) -> TrainCompile:
    """Decide ``train.compile`` for a run; ``on`` raises ValueError when ``torch.compile`` cannot run here."""
    setting = _setting(value)
    if setting == "off":
        return TrainCompile(False, "train.compile=off")
    why_not = compile_unavailable_reason(device)
    if setting == "on":
        if why_not:
            raise ValueError(f"train.compile=on but {why_not}; set train.compile=off or auto")
        return TrainCompile(True, "train.compile=on")
    if why_not:
        return TrainCompile(False, why_not)
    if device.type != "cpu":
        return TrainCompile(False, f"auto compiles on CPUs only (not yet measured on {device.type}); train.compile=on forces it")
    if world_size > 1:
        return TrainCompile(False, "auto does not compile torchrun runs; train.compile=on forces it")
    if changes_layers:
        return TrainCompile(False, "the model changes its layers during training (gradual grouping), which would recompile")
    if remaining_iterations < MIN_ITERATIONS:
        return TrainCompile(False, f"{remaining_iterations} iterations left, fewer than the {MIN_ITERATIONS} that repay compiling")
    return TrainCompile(True, f"auto: {remaining_iterations} iterations on the CPU")


def compile_for_training(module: nn.Module) -> nn.Module:
    """``torch.compile`` of ``module`` for training steps, keeping each tensor's memory layout as given.

    Inductor's layout optimisation would put every convolution in channels-last, while
    :func:`rtseg.engine.precision.prepare_model` keeps dilated convolutions in the standard layout: oneDNN's
    bf16 channels-last weight gradients of dilated convolutions are wrong in torch 2.13 (compiled with the
    optimisation on, ESPNet's dilated weight gradients were NaN).
    """
    return torch.compile(module, options={"layout_optimization": False})
