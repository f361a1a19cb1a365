"""The layers that produce class scores, and moving trained weights onto another set of classes.

Each network declares its class layers once, as module paths in ``class_layers`` (a class attribute of the
family, or set per variant in ``__init__``; :class:`rtseg.models.base.SegmentationModel`). Fine-tuning onto a
dataset with other classes keeps every other tensor as trained and re-initialises the class layers, except the
rows of classes the old and new class lists share, which are carried over.

A tensor's class dimensions are those whose size follows the class count: found by comparing the network with
a copy built for one class more on the meta device (no memory, no computation). A dimension of exactly one
channel per class (or ``channels_per_class`` of a sub-pixel layer, FarSee-Net's head) has its rows carried; a
tensor whose size depends on the class count in any other way (ESPNet's decoder blocks that split the class
maps into branches) is re-initialised whole.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import torch
import torch.nn as nn

__all__ = ["class_layer_paths", "part_paths", "ClassTransfer", "match_classes", "transfer_class_weights"]


def class_layer_paths(model: nn.Module) -> tuple[str, ...]:
    """The declared class layers of ``model`` that this variant has (a declared path may be absent or None)."""
    paths = []
    for path in getattr(model, "class_layers", ()):
        try:
            module = model.get_submodule(path)
        except AttributeError:
            continue
        if module is not None:
            paths.append(path)
    return tuple(paths)


def part_paths(model: nn.Module, name: str) -> tuple[str, ...] | None:
    """The module paths a part name stands for: a family alias (``part_aliases``) or a module path; None if neither."""
    alias = getattr(model, "part_aliases", {}).get(name)
    candidates = (alias,) if isinstance(alias, str) else tuple(alias) if alias else (name,)
    found = []
    for path in candidates:
        try:
            if model.get_submodule(path) is not None:
                found.append(path)
        except AttributeError:
            return None
    return tuple(found) or None


def _under(key: str, paths: Sequence[str]) -> str | None:
    return next((p for p in paths if key == p or key.startswith(p + ".")), None)


def _channels_per_class(model: nn.Module, key: str, root: str) -> int:
    """``channels_per_class`` of the nearest module holding ``key`` inside the class layer ``root`` (1 without one)."""
    parts = key.split(".")[:-1]
    while parts:
        path = ".".join(parts)
        group = getattr(model.get_submodule(path), "channels_per_class", None)
        if group:
            return int(group)
        if path == root:
            break
        parts.pop()
    return 1


@dataclass
class ClassTransfer:
    """What moving weights onto new classes did: tensors kept as trained, tensors re-initialised whole, tensors
    whose shared classes' rows were carried over, and the (new class, old class) pairs carried."""

    kept: int = 0
    reinitialised: list[str] = field(default_factory=list)
    carried_tensors: list[str] = field(default_factory=list)
    carried: list[tuple[str, str]] = field(default_factory=list)


def match_classes(new: Sequence[str], old: Sequence[str], class_map: Mapping[str, str] | None = None,
                  key: str = "model.class_map") -> dict[int, int]:
    """New class index -> old class index: classes whose names agree ignoring case, then ``class_map``
    (``{new name: old name}``), which overrides. A class_map name that is not a class raises ``ValueError`` naming ``key``."""
    lower_old = {n.lower(): i for i, n in enumerate(old)}
    pairs = {j: lower_old[n.lower()] for j, n in enumerate(new) if n.lower() in lower_old}
    lower_new = {n.lower(): j for j, n in enumerate(new)}
    for new_name, old_name in (class_map or {}).items():
        problems = []
        if str(new_name).lower() not in lower_new:
            problems.append(f"{new_name!r} is not a class of the dataset ({', '.join(new)})")
        if old_name is not None and str(old_name).lower() not in lower_old:
            problems.append(f"{old_name!r} is not a class of the weights ({', '.join(old)})")
        if problems:
            raise ValueError(f"{key}: {'; '.join(problems)}")
        j = lower_new[str(new_name).lower()]
        if old_name is None:  # `car: null` starts that class afresh even when a name matches
            pairs.pop(j, None)
        else:
            pairs[j] = lower_old[str(old_name).lower()]
    return pairs


def _index(rows: Sequence[int], group: int) -> torch.Tensor:
    return torch.tensor([r * group + k for r in rows for k in range(group)], dtype=torch.long)


def _copy_rows(out: torch.Tensor, src: torch.Tensor, dims: list[int], dst_idx: torch.Tensor, src_idx: torch.Tensor) -> None:
    """``out`` at ``dst_idx`` along every one of ``dims`` = ``src`` at ``src_idx`` along the same dims (in place)."""
    if not dims:
        out.copy_(src)
        return
    d, rest = dims[0], dims[1:]
    block = out.index_select(d, dst_idx)
    _copy_rows(block, src.index_select(d, src_idx), rest, dst_idx, src_idx)
    out.index_copy_(d, dst_idx, block)


def transfer_class_weights(model: nn.Module, state: Mapping[str, torch.Tensor], new_classes: int, old_classes: int,
                           pairs: Mapping[int, int], probe: Callable[[int], nn.Module]) -> tuple[dict[str, torch.Tensor], ClassTransfer]:
    """The state dict to load into ``model`` (built for ``new_classes`` and freshly initialised) from ``state``
    (trained for ``old_classes``): tensors outside the class layers from ``state`` (their shapes must agree; a
    ``ValueError`` names those that do not), class-layer tensors from ``model`` with the rows of ``pairs`` (new
    index -> old index) taken from ``state``. ``probe(n)`` builds the same network for ``n`` classes on the meta device."""
    paths = class_layer_paths(model)
    fresh = model.state_dict()
    with torch.device("meta"):
        shapes = {k: tuple(v.shape) for k, v in probe(new_classes + 1).state_dict().items()}
    out: dict[str, torch.Tensor] = {}
    report = ClassTransfer()
    misfits = []
    for key, init in fresh.items():
        root = _under(key, paths)
        src = state.get(key)
        if root is None:
            if src is None or tuple(src.shape) != tuple(init.shape):
                misfits.append(f"{key} ({'missing' if src is None else f'{tuple(src.shape)} for {tuple(init.shape)}'})")
            else:
                out[key] = src
                report.kept += 1
            continue
        dims = [d for d, (a, b) in enumerate(zip(init.shape, shapes.get(key, init.shape))) if a != b]
        group = _channels_per_class(model, key, root)
        fits = src is not None and src.dim() == init.dim() and all(
            (src.shape[d] == old_classes * group and init.shape[d] == new_classes * group) if d in dims else src.shape[d] == init.shape[d]
            for d in range(init.dim()))
        if not dims and fits:
            out[key] = src  # e.g. num_batches_tracked of a class layer's BatchNorm
            report.kept += 1
        elif not fits or not pairs:
            out[key] = init
            report.reinitialised.append(key)
        else:
            tensor = init.clone()
            new_rows, old_rows = zip(*sorted(pairs.items()))
            _copy_rows(tensor, src.to(tensor.dtype), dims, _index(new_rows, group), _index(old_rows, group))
            out[key] = tensor
            report.carried_tensors.append(key)
    if misfits:
        raise ValueError(f"{len(misfits)} tensor(s) outside the class layers do not fit: " + ", ".join(misfits[:6])
                         + (" ..." if len(misfits) > 6 else ""))
    return out, report
