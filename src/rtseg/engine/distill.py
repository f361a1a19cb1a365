"""Knowledge distillation (the ``distill`` config section): a trained teacher's soft predictions as a second target.

Two losses, each comparing student and teacher logits ``N x C x H x W`` over the labelled pixels:

- ``kl``: pixel-wise KL divergence KL(p_T || p_S) of the class distributions softened by a temperature ``T``,
  averaged over the labelled pixels and scaled by ``T**2`` (Hinton et al.'s scaling keeps the gradient size
  independent of ``T``).
- ``cwd``: channel-wise distillation (Shu et al., ICCV 2021): each class channel's map turned into a
  distribution over the pixels by a softmax at temperature ``T``; the KL divergence of the teacher's from the
  student's, summed over pixels, averaged over channels and images, scaled by ``T**2``.

The :class:`Teacher` runs in eval mode without gradients, in the run's precision, on the student's augmented
batch converted to the teacher's own normalisation (an ESPNet release's BGR 0-255 input, say); its logits are
resized to the student's output size and mapped onto the student's classes (void outputs dropped; a class map
may merge several teacher classes into one student class, whose probability is their sum). Several teachers
average their mapped logits (an ensemble). ``void="ignore"`` also leaves out of the term the pixels where a teacher's
most likely output is one of its void outputs: the official ESPNet release answers "void" on poles and signs, and its
remaining class probabilities there teach a student to miss them. ``pixels="correct"`` keeps the term only where the
teacher's (ensemble's) most likely class is the label: where the teacher is wrong, the labels alone teach (every
shipped CamVid teacher is wrong on most pole pixels).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal, Mapping, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from rtseg.data.normalization import Normalization

__all__ = ["DISTILL_LOSSES", "PixelKLDivergence", "ChannelWiseDivergence", "renormalize", "teacher_class_groups", "Teacher", "Distillation"]

DistillLoss = Literal["kl", "cwd"]
DISTILL_LOSSES: tuple[str, ...] = ("kl", "cwd")
DistillPixels = Literal["labelled", "correct"]


class PixelKLDivergence(nn.Module):
    """``T**2 * mean over labelled pixels of sum_c p_T log(p_T / p_S)``, with ``p = softmax(logits / T)`` over classes."""

    def __init__(self, temperature: float = 1.0):
        super().__init__()
        self.temperature = float(temperature)

    def forward(self, student: torch.Tensor, teacher: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        t = self.temperature
        log_s = F.log_softmax(student.float() / t, dim=1)
        log_t = F.log_softmax(teacher.float() / t, dim=1)
        per_pixel = (log_t.exp() * (log_t - log_s)).sum(1)
        mask = valid.to(per_pixel.dtype)
        return per_pixel.mul(mask).sum() / mask.sum().clamp_min(1.0) * (t * t)


class ChannelWiseDivergence(nn.Module):
    """Channel-wise distillation (Shu et al., ICCV 2021, Eq. 3-4): per image and channel, ``softmax over pixels of
    logits / T``; ``T**2 * mean over images and channels of sum_i phi_T log(phi_T / phi_S)``; unlabelled pixels left out."""

    def __init__(self, temperature: float = 4.0):
        super().__init__()
        self.temperature = float(temperature)

    def forward(self, student: torch.Tensor, teacher: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        t = self.temperature
        n, c = student.shape[:2]
        keep = valid.reshape(n, 1, -1)
        outside = torch.finfo(torch.float32).min
        s = (student.float() / t).reshape(n, c, -1).masked_fill(~keep, outside)
        te = (teacher.float() / t).reshape(n, c, -1).masked_fill(~keep, outside)
        log_s, log_t = F.log_softmax(s, dim=2), F.log_softmax(te, dim=2)
        per_channel = (log_t.exp() * (log_t - log_s)).masked_fill(~keep, 0.0).sum(2)
        has_pixels = keep.any(2).to(per_channel.dtype)  # an image with no labelled pixel contributes nothing
        return (per_channel * has_pixels).sum() / (has_pixels.sum() * c).clamp_min(1.0) * (t * t)


def build_distill_loss(name: str, temperature: float) -> nn.Module:
    if name == "kl":
        return PixelKLDivergence(temperature)
    if name == "cwd":
        return ChannelWiseDivergence(temperature)
    raise ValueError(f"distill.loss={name!r} is not one of {', '.join(DISTILL_LOSSES)}")


def renormalize(x: torch.Tensor, source: Normalization, target: Normalization) -> torch.Tensor:
    """A batch normalised with ``source`` as ``target`` would have normalised the same pixels (exact: both are affine)."""
    if source == target:
        return x
    shape = (1, 3, 1, 1)
    mean_s = torch.tensor(source.mean, dtype=torch.float32, device=x.device).view(shape)
    std_s = torch.tensor(source.std, dtype=torch.float32, device=x.device).view(shape)
    pixels = x.float() / source.post_scale * std_s + mean_s  # 0-255 values, in source's channel order
    if source.channel_order != target.channel_order:
        pixels = pixels.flip(1)
    mean_t = torch.tensor(target.mean, dtype=torch.float32, device=x.device).view(shape)
    std_t = torch.tensor(target.std, dtype=torch.float32, device=x.device).view(shape)
    return (pixels - mean_t) / std_t * target.post_scale


def teacher_class_groups(student: Sequence[str], teacher: Sequence[str], class_map: Mapping[str, Any] | None = None,
                         key: str = "distill.class_map") -> list[list[int]]:
    """For each student class, the teacher classes whose probabilities it takes: the teacher class of the same
    name (ignoring case) or those ``class_map`` names (``{student class: teacher class or [teacher classes]}``).
    Raises ``ValueError`` naming both class lists when a student class has no teacher class or a name is unknown."""
    lower_t = {n.lower(): i for i, n in enumerate(teacher)}
    lower_s = {n.lower(): i for i, n in enumerate(student)}
    groups: list[list[int] | None] = [[lower_t[n.lower()]] if n.lower() in lower_t else None for n in student]
    both = f"student classes: {', '.join(student)}; teacher classes: {', '.join(teacher)}"
    for s_name, t_names in (class_map or {}).items():
        if str(s_name).lower() not in lower_s:
            raise ValueError(f"{key}: {s_name!r} is not a student class ({both})")
        names = [t_names] if isinstance(t_names, str) else list(t_names or [])
        unknown = [t for t in names if str(t).lower() not in lower_t]
        if unknown or not names:
            raise ValueError(f"{key}.{s_name}: {unknown or t_names!r} {'are not teacher classes' if names else 'names no teacher class'} ({both})")
        groups[lower_s[str(s_name).lower()]] = [lower_t[str(t).lower()] for t in names]
    missing = [student[i] for i, g in enumerate(groups) if g is None]
    if missing:
        raise ValueError(f"the teacher has no class for {', '.join(missing)} ({both}); map them with {key} "
                         f"{{student class: teacher class}}")
    return groups  # type: ignore[return-value]


@dataclass
class TeacherNet:
    """One teacher network with what it needs to see the student's batch: its normalisation, input shrink and class groups."""

    model: nn.Module
    normalization: Normalization
    groups: list[list[int]]
    input_scale: int = 1
    name: str = ""
    void: tuple[int, ...] = ()  # the teacher's void outputs (an official release's extra "void" class)


class Teacher:
    """One teacher or an ensemble (mapped logits averaged), run without gradients in eval mode."""

    def __init__(self, nets: Sequence[TeacherNet], student_normalization: Normalization, temperature: float):
        self.nets = list(nets)
        self.student_normalization = student_normalization
        self.temperature = temperature
        self.void_pixels: torch.Tensor | None = None  # after a call: where some teacher's most likely output was void
        for net in self.nets:
            net.model.eval()
            for p in net.model.parameters():
                p.requires_grad_(False)

    def _mapped(self, logits: torch.Tensor, groups: list[list[int]]) -> torch.Tensor:
        # a merged class's probability is the sum of its teacher classes' (at the loss's temperature): T * logsumexp(z / T)
        t = self.temperature
        if all(len(g) == 1 for g in groups):
            return logits[:, [g[0] for g in groups]]
        return torch.stack([t * torch.logsumexp(logits[:, g] / t, dim=1) for g in groups], 1)

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, size: tuple[int, int], autocast) -> torch.Tensor:
        total, void = None, None
        for net in self.nets:
            x = renormalize(images, self.student_normalization, net.normalization)
            if net.input_scale > 1:
                h, w = x.shape[-2:]
                x = F.interpolate(x, size=(max(1, h // net.input_scale), max(1, w // net.input_scale)), mode="bilinear",
                                  align_corners=False, antialias=True)
            with autocast:
                logits = net.model(x)
            logits = logits.float()
            if tuple(logits.shape[-2:]) != tuple(size):
                logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
            if net.void:
                top_is_void = torch.isin(logits.argmax(1), torch.tensor(net.void, device=logits.device))
                void = top_is_void if void is None else void | top_is_void
            mapped = self._mapped(logits, net.groups)
            total = mapped if total is None else total + mapped
        self.void_pixels = void
        return total / len(self.nets)

    def to(self, device: torch.device, channels_last: bool = False) -> "Teacher":
        for net in self.nets:
            net.model.to(device)
            if channels_last:
                net.model.to(memory_format=torch.channels_last)
        return self


class Distillation:
    """``weight * loss(student logits, teacher logits)`` over the labelled pixels of a batch."""

    def __init__(self, teacher: Teacher, loss: nn.Module, weight: float, ignore_index: int, void: str = "drop",
                 pixels: DistillPixels = "labelled"):
        if not math.isfinite(weight) or weight < 0:
            raise ValueError(f"distill.weight={weight!r}: expected a finite number >= 0")
        if void not in ("drop", "ignore"):
            raise ValueError(f"distill.void={void!r}: expected drop or ignore")
        if pixels not in ("labelled", "correct"):
            raise ValueError(f"distill.pixels={pixels!r}: expected labelled or correct")
        self.teacher, self.loss, self.weight, self.ignore_index, self.void = teacher, loss, float(weight), ignore_index, void
        self.pixels = pixels

    def __call__(self, student: torch.Tensor, images: torch.Tensor, labels: torch.Tensor, autocast) -> torch.Tensor:
        size = tuple(student.shape[-2:])
        student = student[:, : len(self.teacher.nets[0].groups)]  # outputs beyond the dataset's classes (void) are not distilled
        teacher = self.teacher(images, size, autocast)
        if tuple(labels.shape[-2:]) != size:
            labels = F.interpolate(labels[:, None].float(), size=size, mode="nearest")[:, 0].long()
        valid = labels != self.ignore_index
        if self.void == "ignore" and self.teacher.void_pixels is not None:
            valid = valid & ~self.teacher.void_pixels  # where a teacher says "void", its class probabilities are no lesson
        if self.pixels == "correct":
            valid = valid & (teacher.argmax(1) == labels)  # a teacher's mistakes would be taught as well as its knowledge
        return self.weight * self.loss(student.float(), teacher, valid)
