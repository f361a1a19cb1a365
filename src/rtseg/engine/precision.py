"""Training precision: which autocast dtype, memory format and gradient scaling a run uses on its device.

``auto`` takes the fastest mode that trains correctly on the device: bf16 autocast with channels-last
tensors on CPUs with native bf16 instructions (AVX-512 BF16 or AMX), bf16 on CUDA devices that support it,
fp16 with gradient scaling on older CUDA devices, fp32 elsewhere. The loss is always computed in fp32.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import copy

import torch
import torch.nn as nn

from rtseg.evaluation import resize_to
from rtseg.config import ConfigError

__all__ = ["PRECISIONS", "TrainPrecision", "resolve_precision", "cpu_has_native_bf16", "forward_loss", "optimizer_step", "prepare_model", "layer_gradient_errors"]

Precision = Literal["auto", "fp32", "bf16", "fp16"]
PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16", "fp16")


def cpu_has_native_bf16() -> bool:
    """True when the CPU executes bf16 dot products natively (x86 AVX-512 BF16 or AMX-BF16, or Arm BF16)."""
    from rtseg.cpu import cpu_info

    return cpu_info().native_bf16


@dataclass(frozen=True)
class TrainPrecision:
    """How a training step runs: ``autocast_dtype`` None means plain fp32."""

    name: str  # fp32 | bf16 | fp16 (``auto`` resolved)
    autocast_dtype: torch.dtype | None
    channels_last: bool
    grad_scaling: bool

    def autocast(self, device: torch.device):
        return torch.autocast(device.type, dtype=self.autocast_dtype, enabled=self.autocast_dtype is not None)

    def describe(self) -> str:
        layout = ", channels-last" if self.channels_last else ""
        scaling = ", gradient scaling" if self.grad_scaling else ""
        return f"{self.name}{' autocast' if self.autocast_dtype is not None else ''}{layout}{scaling}"


def resolve_precision(name: str, device: torch.device, legacy_amp: bool = False) -> TrainPrecision:
    """The :class:`TrainPrecision` for ``train.precision=name`` on ``device``.

    ``legacy_amp`` is the older ``train.amp: true`` switch, read as fp16 on CUDA when ``name`` is ``auto``.
    An explicit precision the device cannot run raises ``ValueError`` naming the option.
    """
    if name not in PRECISIONS:
        raise ConfigError(f"train.precision={name!r} is not one of {', '.join(PRECISIONS)}")
    cuda = device.type == "cuda"
    if name == "auto":
        if cuda:
            name = "fp16" if legacy_amp or not torch.cuda.is_bf16_supported() else "bf16"
        else:
            name = "bf16" if device.type == "cpu" and cpu_has_native_bf16() else "fp32"
    if name == "fp32":
        return TrainPrecision("fp32", None, False, False)
    if name == "fp16":
        if not cuda:
            raise ConfigError("train.precision=fp16 needs a CUDA device (CPUs train in fp32 or bf16); use train.precision=bf16 or fp32")
        return TrainPrecision("fp16", torch.float16, False, True)
    # bf16: channels-last lets oneDNN pick its blocked bf16 convolutions on CPUs (slower without it, measured)
    return TrainPrecision("bf16", torch.bfloat16, device.type == "cpu", False)


def forward_loss(net: torch.nn.Module, criterion, precision: TrainPrecision, images: torch.Tensor, labels: torch.Tensor,
                 distill=None) -> torch.Tensor:
    """The network under ``precision``'s autocast, then the loss in fp32 on logits resized to the labels; with
    ``distill`` (:class:`rtseg.engine.distill.Distillation`) plus its term on the main logits."""
    if precision.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    with precision.autocast(images.device):
        logits = net(images)
    if isinstance(logits, tuple):  # issue 15: (main, aux...) from rtseg.models.aux_heads.AuxiliaryHeads in training
        loss = criterion(tuple(resize_to(x.float(), tuple(labels.shape[-2:])) for x in logits), labels)
    else:
        loss = criterion(resize_to(logits.float(), tuple(labels.shape[-2:])), labels)
    if distill is not None:
        loss = loss + distill(logits[0] if isinstance(logits, tuple) else logits, images, labels, precision.autocast(images.device))
    return loss


def optimizer_step(loss: torch.Tensor, optimizer: torch.optim.Optimizer, scaler) -> None:
    """Backward pass and parameter update, through ``scaler`` (a GradScaler, disabled unless fp16)."""
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()


def _standard_layout_input(module: nn.Module, args: tuple) -> tuple:
    return (args[0].contiguous(memory_format=torch.contiguous_format), *args[1:])


def prepare_model(model: nn.Module, precision: TrainPrecision) -> nn.Module:
    """Put ``model`` in the memory format ``precision`` trains with (in place).

    With channels-last, dilated convolutions keep the standard layout for their input and weight: oneDNN's
    bf16 channels-last weight gradients of dilated convolutions are wrong in torch 2.13 (non-finite, or
    off by more than 100 % for depthwise ones; measured against fp32), while the standard layout is exact
    to bf16 rounding. :func:`layer_gradient_errors` checks every convolution of a model for this.
    """
    if not precision.channels_last:
        return model
    model.to(memory_format=torch.channels_last)
    for module in model.modules():
        if isinstance(module, nn.Conv2d) and max(module.dilation) > 1:
            # clone, not contiguous(): a depthwise weight (C x 1 x k x k) counts as both layouts and keeps its strides
            module.weight.data = module.weight.data.clone(memory_format=torch.contiguous_format)
            module.register_forward_pre_hook(_standard_layout_input)
    return model


def layer_gradient_errors(model: nn.Module, precision: TrainPrecision, size: tuple[int, int] = (24, 32), tolerance: float = 0.02, prepare=prepare_model) -> dict[str, float]:
    """Each convolution of ``model`` whose gradients under ``precision`` (as :func:`prepare_model` lays it out)
    differ from fp32 by more than ``tolerance`` (relative L2 error of the weight or input gradient), by name.
    ``prepare`` lays each layer out for ``precision`` (default :func:`prepare_model`).

    Layers are checked one by one on random inputs, so the comparison sees the kernels, not the rounding
    that accumulates through a whole network. Configurations seen once are not checked again.
    """
    if precision.autocast_dtype is None:
        return {}
    errors: dict[str, float] = {}
    seen: set[tuple] = set()
    generator = torch.Generator().manual_seed(0)
    for name, module in model.named_modules():
        if not isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
            continue
        key = (type(module), module.in_channels, module.out_channels, module.kernel_size, module.stride, module.padding, module.dilation, module.groups)
        if key in seen:
            continue
        seen.add(key)
        reference = copy.deepcopy(module).float().to(memory_format=torch.contiguous_format)
        reference._forward_pre_hooks.clear()
        x = torch.randn(2, module.in_channels, *size, generator=generator)
        x_ref = x.clone().requires_grad_()
        out_ref = reference(x_ref)
        upstream = torch.randn(out_ref.shape, generator=generator)
        (out_ref * upstream).sum().backward()
        probe = copy.deepcopy(reference)
        holder = prepare(nn.Sequential(probe), precision)
        x_low = (x.contiguous(memory_format=torch.channels_last) if precision.channels_last else x.clone()).requires_grad_()
        with precision.autocast(x.device):
            out = holder(x_low)
        (out.float() * upstream).sum().backward()
        worst = 0.0
        for got, want in ((probe.weight.grad, reference.weight.grad), (x_low.grad, x_ref.grad)):
            err = ((got.float() - want).norm() / want.norm().clamp_min(1e-12)).item()
            worst = max(worst, err if err == err else float("inf"))
        if worst > tolerance:
            errors[name] = worst
    return errors
