"""Darknet-19 (Redmon & Farhadi, YOLO9000, CVPR 2017, Table 6) and a reader for Darknet's binary ``.weights`` files.

Layers follow ``darknet19.cfg``: 3x3 and 1x1 convolutions, each without bias and followed by BN and
leaky ReLU (slope 0.1), separated by 2x2 max-pools; the classifier is a biased 1x1 conv to 1000
classes. Stages end where a max-pool follows: ``stage1`` (stride 1, 32 ch) ... ``stage6`` (32, 1024).

A ``.weights`` file is a header (int32 major, minor, revision, then the number of images seen: int64
from format 0.2 on, int32 before) followed by float32 values, layer after layer in network order:
for a convolution with batch norm its BN bias (beta), scale (gamma), running mean, running variance,
then the kernel (out x in x kh x kw); for one without batch norm its bias, then the kernel.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from rtseg.models.backbones.base import Backbone, Stage

__all__ = ["DarknetConv", "Darknet19", "DARKNET19_CONVS", "read_darknet_weights", "load_darknet_weights"]

# (stage, output channels, kernel size) of darknet19.cfg's convolutions, in file order; a stage
# other than the first starts with a 2x2/2 max-pool.
DARKNET19_CONVS = (
    (1, 32, 3),
    (2, 64, 3),
    (3, 128, 3), (3, 64, 1), (3, 128, 3),
    (4, 256, 3), (4, 128, 1), (4, 256, 3),
    (5, 512, 3), (5, 256, 1), (5, 512, 3), (5, 256, 1), (5, 512, 3),
    (6, 1024, 3), (6, 512, 1), (6, 1024, 3), (6, 512, 1), (6, 1024, 3),
)  # fmt: skip


class DarknetConv(nn.Module):
    """Darknet convolutional layer with batch_normalize=1: conv (no bias) -> BN -> leaky ReLU(0.1)."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int):
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, kernel_size, 1, kernel_size // 2, bias=False)
        self.bn = nn.BatchNorm2d(out_ch)
        self.act = nn.LeakyReLU(0.1, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class Darknet19(Backbone):
    """Darknet-19 feature extractor; ``include_classifier=True`` keeps the 1x1 ImageNet classifier conv."""

    classifier_units = ("classifier",)
    imagenet_url = "https://pjreddie.com/media/files/darknet19_448.weights"  # the file LiteSeg's official code loads

    def __init__(self, output_stride: int = 32, out_stages=None, include_classifier: bool = False, num_classes: int = 1000):
        super().__init__()
        stages: dict[int, list[nn.Module]] = {}
        in_ch = 3
        self.conv_paths: list[str] = []  # file order
        for stage, out_ch, k in DARKNET19_CONVS:
            layers = stages.setdefault(stage, [nn.MaxPool2d(2, 2)] if stage > 1 else [])
            layers.append(DarknetConv(in_ch, out_ch, k))
            self.conv_paths.append(f"stage{stage}.{len(layers) - 1}")
            in_ch = out_ch
        specs = []
        for stage, layers in stages.items():
            setattr(self, f"stage{stage}", nn.Sequential(*layers))
            specs.append(Stage(f"stage{stage}", 2 ** (stage - 1), layers[-1].conv.out_channels, tuple(f"stage{stage}.{i}" for i in range(len(layers)))))
        self.classifier = nn.Conv2d(in_ch, num_classes, 1)
        self.stage_specs = tuple(specs)
        self._configure(output_stride, out_stages, include_classifier)

    def _classify(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(x).mean((2, 3))

    def _load_darknet(self, path, strict: bool) -> dict[str, list[str]]:
        return load_darknet_weights(self, path, strict=strict)


def read_darknet_weights(path: str | os.PathLike) -> tuple[dict[str, int], np.ndarray]:
    """The header fields and the float32 values of a Darknet ``.weights`` file."""
    from rtseg.io import CheckpointError

    data = Path(path).read_bytes()
    if len(data) < 16:
        raise CheckpointError(f"{str(path)!r} is too short to be a Darknet .weights file ({len(data)} bytes)")
    major, minor, revision = np.frombuffer(data, dtype="<i4", count=3)
    if major > 1000 or minor > 1000:
        raise CheckpointError(f"{str(path)!r}: Darknet header version {major}.{minor} is not supported (transposed legacy format)")
    wide_seen = major * 10 + minor >= 2
    offset = 12 + (8 if wide_seen else 4)
    seen = int(np.frombuffer(data, dtype="<i8" if wide_seen else "<i4", count=1, offset=12)[0])
    if (len(data) - offset) % 4:
        raise CheckpointError(f"{str(path)!r}: {len(data) - offset} bytes after the header is not a whole number of float32 values")
    values = np.frombuffer(data, dtype="<f4", offset=offset)
    return {"major": int(major), "minor": int(minor), "revision": int(revision), "seen": seen}, values


def load_darknet_weights(model: Darknet19, path: str | os.PathLike, strict: bool = True) -> dict[str, list[str]]:
    """Fill ``model`` from a Darknet-19 ``.weights`` file (full network, or convolutional part only).

    Layers this configuration dropped are skipped and reported under ``ignored``; so is the classifier
    when the model has none. A file that ends early, or holds values nobody consumes, raises
    :class:`rtseg.io.WeightsMismatchError` unless ``strict=False``.
    """
    from rtseg.io import WeightsMismatchError

    _, values = read_darknet_weights(path)
    pos = 0
    report: dict[str, list[str]] = {"missing": [], "unexpected": [], "shape_mismatch": [], "ignored": []}
    params = dict(model.named_parameters())
    buffers = dict(model.named_buffers())

    def take(n: int) -> np.ndarray | None:
        nonlocal pos
        if pos + n > len(values):
            pos = len(values)  # the file ends inside this tensor
            return None
        chunk = values[pos : pos + n]
        pos += n
        return chunk

    in_ch = 3
    for path_in_model, (_, out_ch, k) in zip(model.conv_paths, DARKNET19_CONVS):
        sizes = {"bn.bias": out_ch, "bn.weight": out_ch, "bn.running_mean": out_ch, "bn.running_var": out_ch, "conv.weight": out_ch * in_ch * k * k}
        shapes = {"conv.weight": (out_ch, in_ch, k, k)}
        present = f"{path_in_model}.conv.weight" in params
        for name, n in sizes.items():
            chunk = take(n)
            key = f"{path_in_model}.{name}"
            if chunk is None:
                if present:
                    report["missing"].append(key)
                continue
            if not present:
                report["ignored"].append(key)
                continue
            target = params.get(key, buffers.get(key))
            with torch.no_grad():
                target.copy_(torch.from_numpy(chunk.copy()).reshape(shapes.get(name, (n,))))
        in_ch = out_ch
    rest = len(values) - pos
    head = model.classifier if model.include_classifier else None
    if rest and rest % (in_ch + 1) == 0:
        n_classes = rest // (in_ch + 1)
        if head is not None and head.out_channels == n_classes:
            bias, weight = take(n_classes), take(n_classes * in_ch)
            with torch.no_grad():
                head.bias.copy_(torch.from_numpy(bias.copy()))
                head.weight.copy_(torch.from_numpy(weight.copy()).reshape(head.weight.shape))
        elif head is not None:
            report["shape_mismatch"] += ["classifier.bias", "classifier.weight"]
        else:
            report["ignored"] += [f"classifier ({n_classes} classes)"]
    elif rest:
        report["unexpected"].append(f"{rest} trailing float32 values after the last layer")
    elif head is not None:
        report["missing"] += ["classifier.bias", "classifier.weight"]
    problems = {k: v for k, v in report.items() if v and k != "ignored"}
    if strict and problems:
        lines = "\n  ".join(f"{k}: {', '.join(v[:10])}{' ...' if len(v) > 10 else ''}" for k, v in problems.items())
        raise WeightsMismatchError(f"Darknet weights {str(path)!r} do not fit Darknet19:\n  {lines}")
    if problems:
        import warnings

        warnings.warn(f"non-strict load of {str(path)!r}: " + "; ".join(f"{k}: {len(v)}" for k, v in problems.items()), stacklevel=2)
    return report
