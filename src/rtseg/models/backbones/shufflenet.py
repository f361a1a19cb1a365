"""ShuffleNet v1 (Zhang et al., CVPR 2018, Table 1) with 8 groups, as LiteSeg uses it.

Follows the PyTorch port LiteSeg builds on (and its ImageNet checkpoint's parameter names): a biased
3x3 stride-2 stem conv without BN, max-pool, stages of 4 / 8 / 4 units whose 1x1 and depthwise
convolutions carry biases, the first 1x1 of stage 2 ungrouped, and an ``fc`` classifier.
Stages: ``stem`` (stride 4, 24 ch), ``stage2`` (8, 384), ``stage3`` (16, 768), ``stage4`` (32, 1536).
"""
from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn as nn
import torch.nn.functional as F

from rtseg.models.backbones.base import Backbone, Stage
from rtseg.models.blocks import channel_shuffle

__all__ = ["ShuffleUnit", "ShuffleNetV1", "SHUFFLENET_V1_CHANNELS"]

# Output channels of stages 2-4 per group count (paper Table 1, complexity 1x).
SHUFFLENET_V1_CHANNELS = {1: (144, 288, 576), 2: (200, 400, 800), 3: (240, 480, 960), 4: (272, 544, 1088), 8: (384, 768, 1536)}
STAGE_REPEATS = (3, 7, 3)  # units after the first (downsampling) unit of each stage


def _grouped_1x1(in_ch: int, out_ch: int, groups: int, relu: bool) -> nn.Sequential:
    layers = OrderedDict(conv1x1=nn.Conv2d(in_ch, out_ch, 1, groups=groups), batch_norm=nn.BatchNorm2d(out_ch))
    if relu:
        layers["relu"] = nn.ReLU()
    return nn.Sequential(layers)


class ShuffleUnit(nn.Module):
    """ShuffleNet unit (Fig. 2b: add, Fig. 2c: stride 2 with a 3x3 average-pooled shortcut and concat)."""

    def __init__(self, in_ch: int, out_ch: int, groups: int, grouped_first: bool = True, downsample: bool = False):
        super().__init__()
        bottleneck = out_ch // 4
        self.groups = groups
        self.downsample = downsample
        branch_out = out_ch - in_ch if downsample else out_ch
        stride = 2 if downsample else 1
        self.g_conv_1x1_compress = _grouped_1x1(in_ch, bottleneck, groups if grouped_first else 1, relu=True)
        self.depthwise_conv3x3 = nn.Conv2d(bottleneck, bottleneck, 3, stride, 1, groups=bottleneck)
        self.bn_after_depthwise = nn.BatchNorm2d(bottleneck)
        self.g_conv_1x1_expand = _grouped_1x1(bottleneck, branch_out, groups, relu=False)
        # A module (not a functional call) so that dilating the stage can remove its stride too.
        self.residual_pool = nn.AvgPool2d(3, 2, 1) if downsample else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = channel_shuffle(self.g_conv_1x1_compress(x), self.groups)
        out = self.g_conv_1x1_expand(self.bn_after_depthwise(self.depthwise_conv3x3(out)))
        if self.downsample:
            out = torch.cat((self.residual_pool(x), out), 1)
        else:
            out = x + out
        return F.relu(out)


class ShuffleNetV1(Backbone):
    """ShuffleNet v1 feature extractor; ``include_classifier=True`` keeps the ImageNet ``fc``."""

    classifier_units = ("fc",)

    def __init__(self, groups: int = 8, output_stride: int = 32, out_stages=None, include_classifier: bool = False, num_classes: int = 1000):
        super().__init__()
        if groups not in SHUFFLENET_V1_CHANNELS:
            raise ValueError(f"ShuffleNet v1 groups must be one of {sorted(SHUFFLENET_V1_CHANNELS)}, got {groups!r}")
        self.groups = groups
        self.conv1 = nn.Conv2d(3, 24, 3, 2, 1)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        specs = [Stage("stem", 4, 24, ("conv1", "maxpool"))]
        in_ch = 24
        for idx, (repeats, out_ch) in enumerate(zip(STAGE_REPEATS, SHUFFLENET_V1_CHANNELS[groups])):
            stage = idx + 2
            prefix = f"ShuffleUnit_Stage{stage}"
            units = OrderedDict()
            # The paper does not group the first 1x1 of stage 2: its input has only 24 channels.
            units[f"{prefix}_0"] = ShuffleUnit(in_ch, out_ch, groups, grouped_first=stage > 2, downsample=True)
            for i in range(repeats):
                units[f"{prefix}_{i + 1}"] = ShuffleUnit(out_ch, out_ch, groups)
            setattr(self, f"stage{stage}", nn.Sequential(units))
            specs.append(Stage(f"stage{stage}", 4 * 2 ** (idx + 1), out_ch, tuple(f"stage{stage}.{name}" for name in units)))
            in_ch = out_ch
        self.fc = nn.Linear(in_ch, num_classes)
        self.stage_specs = tuple(specs)
        self._configure(output_stride, out_stages, include_classifier)

    def _classify(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.mean((2, 3)))
