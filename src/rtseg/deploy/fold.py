"""Inference-only rewrites of a module in place: dropout -> identity, and BatchNorm folded into the convolution
that feeds it (steps 2 and 3 of :func:`rtseg.deploy.optimize.optimize`).

Which BN follows which convolution is found by running the model once and watching the tensors, so it works
for any forward code. A BN is folded only when its input is the output of one convolution module *and nothing
else reads that output*; BNs after a concat, an addition, a pooling or a shared activation stay as they are.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
from torch.overrides import TorchFunctionMode

__all__ = ["fold_batchnorm", "remove_dropout", "RemovedDropout", "set_child"]

_FOLDABLE_CONVS = (nn.Conv2d, nn.ConvTranspose2d)
_BATCHNORMS = (nn.BatchNorm2d,)
_DROPOUTS = (nn.Dropout, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout)


def set_child(root: nn.Module, qualified: str, new: nn.Module) -> None:
    parent_name, _, leaf = qualified.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, leaf, new)


class RemovedDropout(nn.Identity):
    """Stands where a dropout was; keeps ``p`` (as 0) for forward code that reads it."""

    p = 0.0
    inplace = False


def remove_dropout(model: nn.Module) -> int:
    """Replace every dropout module by an identity (in place); returns how many."""
    names = [n for n, m in model.named_modules() if isinstance(m, _DROPOUTS)]
    for n in names:
        set_child(model, n, RemovedDropout())
    return len(names)


class _ConsumerCounter(TorchFunctionMode):
    """Counts, for each watched tensor, the torch operations that read it and produce a tensor."""

    def __init__(self, watched: dict[int, torch.Tensor]):
        super().__init__()
        self.watched = watched
        self.readers: dict[int, int] = {}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        result = func(*args, **kwargs)
        # Metadata queries (x.shape, x.size(), x.dim()) do not read values and must not block a fold.
        if any(isinstance(r, torch.Tensor) for r in _flatten(result)):
            for a in _flatten((args, kwargs)):
                if isinstance(a, torch.Tensor) and id(a) in self.watched and self.watched[id(a)] is a:
                    self.readers[id(a)] = self.readers.get(id(a), 0) + 1
        return result


def _flatten(obj: Any):
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, (list, tuple)):
        for o in obj:
            yield from _flatten(o)
    elif isinstance(obj, dict):
        for o in obj.values():
            yield from _flatten(o)


def _find_conv_bn_pairs(model: nn.Module, example: torch.Tensor) -> tuple[list[tuple[str, str]], list[str]]:
    """(conv name, bn name) pairs safe to fold, and the names of the BNs that are not."""
    names = {m: n for n, m in model.named_modules()}
    conv_outputs: dict[int, torch.Tensor] = {}  # id -> tensor (kept alive so ids stay unique)
    conv_of_output: dict[int, nn.Module] = {}
    bn_inputs: dict[nn.Module, list[torch.Tensor]] = {}  # kept alive: a freed tensor's id can be reused
    calls: dict[nn.Module, int] = {}

    def conv_hook(module, inputs, output):
        calls[module] = calls.get(module, 0) + 1
        if isinstance(output, torch.Tensor):
            conv_outputs[id(output)] = output
            conv_of_output[id(output)] = module

    def bn_pre_hook(module, inputs):
        calls[module] = calls.get(module, 0) + 1
        bn_inputs.setdefault(module, []).append(inputs[0])

    handles = []
    for m in model.modules():
        if isinstance(m, _FOLDABLE_CONVS):
            handles.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, _BATCHNORMS):
            handles.append(m.register_forward_pre_hook(bn_pre_hook))
    counter = _ConsumerCounter(conv_outputs)
    try:
        with torch.no_grad(), counter:
            model(example)
    finally:
        for h in handles:
            h.remove()

    pairs, kept = [], []
    bns_of_conv: dict[nn.Module, set[nn.Module]] = {}
    for bn, tensors in bn_inputs.items():
        ids = [id(t) for t in tensors]
        convs = {conv_of_output.get(id(t)) if conv_outputs.get(id(t)) is t else None for t in tensors}
        ok = len(convs) == 1 and None not in convs and all(counter.readers.get(i, 0) == 1 for i in ids)
        conv = next(iter(convs)) if ok else None
        if ok and calls.get(conv) != len(ids):  # a conv called elsewhere without this BN
            ok = False
        if ok and isinstance(conv, nn.ConvTranspose2d) and conv.groups != 1:
            ok = False
        if ok and conv.weight.shape[0 if isinstance(conv, nn.Conv2d) else 1] != bn.num_features:
            ok = False
        if ok:
            bns_of_conv.setdefault(conv, set()).add(bn)
            pairs.append((names[conv], names[bn]))
        else:
            kept.append(names[bn])
    # A conv whose output feeds two different BNs (in different calls) cannot take both.
    shared = {names[c] for c, bns in bns_of_conv.items() if len(bns) > 1}
    kept += [b for c, b in pairs if c in shared]
    pairs = [(c, b) for c, b in pairs if c not in shared]
    return pairs, kept


@torch.no_grad()
def _fold(conv: nn.Module, bn: nn.BatchNorm2d) -> None:
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError("cannot fold a BatchNorm without running statistics (track_running_stats=False)")
    scale = torch.rsqrt(bn.running_var.double() + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight.double()
    shift = -bn.running_mean.double() * scale
    if bn.bias is not None:
        shift = shift + bn.bias.double()
    w = conv.weight.double()
    if isinstance(conv, nn.ConvTranspose2d):  # weight: in x out x kh x kw
        w = w * scale.view(1, -1, 1, 1)
    else:  # weight: out x in/groups x kh x kw (grouped and depthwise alike)
        w = w * scale.view(-1, 1, 1, 1)
    bias = conv.bias.double() if conv.bias is not None else torch.zeros_like(scale)
    dtype = conv.weight.dtype
    conv.weight.copy_(w.to(dtype))
    new_bias = (bias * scale + shift).to(dtype)
    if conv.bias is None:
        conv.bias = nn.Parameter(new_bias)
    else:
        conv.bias.copy_(new_bias)


def fold_batchnorm(model: nn.Module, example: torch.Tensor) -> tuple[int, list[str]]:
    """Fold every safely foldable BatchNorm of ``model`` (in eval mode, in place) into its convolution.

    Returns the number folded and the names of the BatchNorms left in place.
    """
    pairs, kept = _find_conv_bn_pairs(model, example)
    for conv_name, bn_name in pairs:
        _fold(model.get_submodule(conv_name), model.get_submodule(bn_name))
        set_child(model, bn_name, nn.Identity())
    return len(pairs), kept
