"""Backbones by name: ``create_backbone("resnet18", output_stride=16, out_stages=["layer2", "layer4"])``.

Every backbone returns ``{stage: feature map}`` for the stages asked for, can trade its last strides for
dilation (output stride 32, 16 or 8), and loads pretrained weights from a path, a URL or ``"imagenet"``.
"""
from __future__ import annotations

import os
from typing import Callable, Iterable

from rtseg.models.backbones.base import Backbone, Stage, default_feature_stages
from rtseg.models.backbones.darknet import Darknet19, load_darknet_weights, read_darknet_weights
from rtseg.models.backbones.mobilenetv2 import MobileNetV2
from rtseg.models.backbones.resnet import ResNet18
from rtseg.models.backbones.shufflenet import ShuffleNetV1
from rtseg.models.backbones.shufflenetv2 import ShuffleNetV2

__all__ = [
    "Backbone",
    "Stage",
    "default_feature_stages",
    "BACKBONES",
    "create_backbone",
    "list_backbones",
    "ResNet18",
    "MobileNetV2",
    "ShuffleNetV2",
    "ShuffleNetV1",
    "Darknet19",
    "read_darknet_weights",
    "load_darknet_weights",
]

# name -> builder(output_stride, out_stages, include_classifier) -> Backbone
BACKBONES: dict[str, Callable[..., Backbone]] = {
    "resnet18": ResNet18,
    "mobilenetv2": MobileNetV2,
    "shufflenetv2": lambda **kw: ShuffleNetV2(width=1.0, **kw),
    "shufflenetv2-x0.5": lambda **kw: ShuffleNetV2(width=0.5, **kw),
    "shufflenetv2-x1.5": lambda **kw: ShuffleNetV2(width=1.5, **kw),
    "shufflenetv2-x2.0": lambda **kw: ShuffleNetV2(width=2.0, **kw),
    "shufflenet-g8": lambda **kw: ShuffleNetV1(groups=8, **kw),
    "darknet19": Darknet19,
}


def list_backbones() -> list[str]:
    return sorted(BACKBONES)


def create_backbone(
    name: str,
    output_stride: int = 32,
    out_stages: Iterable[str] | None = None,
    include_classifier: bool = False,
    pretrained: str | os.PathLike | None = None,
    strict: bool = True,
) -> Backbone:
    """Build backbone ``name``; ``pretrained`` is a path, a URL (downloaded once, checksummed) or ``"imagenet"``.

    Backbones are randomly initialised unless ``pretrained`` is given.
    """
    if name not in BACKBONES:
        raise KeyError(f"unknown backbone {name!r}; available: {', '.join(list_backbones())}")
    backbone = BACKBONES[name](output_stride=output_stride, out_stages=list(out_stages) if out_stages else None, include_classifier=include_classifier)
    backbone.backbone_name = name
    if pretrained is not None:
        backbone.load_pretrained(pretrained, strict=strict)
    return backbone
