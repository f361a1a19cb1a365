"""The base class every rtseg network derives from."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["SegmentationModel"]


class SegmentationModel(nn.Module):
    """A network mapping normalised images ``N x 3 x H x W`` to logits ``N x C x sH x sW``.

    ``size_divisor`` is the factor the input sides must be multiples of for the
    architecture's strided and upsampling layers to line up (its output stride).
    Inputs of any other size are zero-padded at the bottom and right up to the next
    multiple (zero is the dataset mean after normalisation) and the logits are cropped
    back, so every model accepts every size. ``output_scale`` is 1 except for networks
    that predict at a higher resolution than their input (feature-space super-resolution).
    """

    size_divisor: int = 1
    output_scale: int = 1
    num_classes: int
    # The layers whose outputs are class scores (or whose size follows the class count): module paths, those a
    # variant lacks skipped. Fine-tuning onto other classes re-initialises them and nothing else
    # (rtseg.models.class_layers); tests/test_finetune.py checks every variant's list against its shapes.
    class_layers: tuple[str, ...] = ()
    # Names for parts of the network that ``train.freeze`` accepts beside module paths, e.g. {"encoder": "backbone"}.
    part_aliases: dict[str, str] = {}

    def segment(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for an input whose sides are multiples of ``size_divisor``."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"{type(self).__name__} expects a batch of RGB images N x 3 x H x W, got shape {tuple(x.shape)}")
        h, w = x.shape[-2:]
        d = self.size_divisor
        pad_h, pad_w = (d - h % d) % d, (d - w % d) % d
        # While exporting, pad unconditionally: the traced graph must serve every input size, not just the traced one.
        if pad_h == 0 and pad_w == 0 and not torch.onnx.is_in_onnx_export():
            return self.segment(x)
        out = self.segment(F.pad(x, (0, pad_w, 0, pad_h)))
        s = self.output_scale
        return out[..., : h * s, : w * s]
