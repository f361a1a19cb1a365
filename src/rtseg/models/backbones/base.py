"""Feature-extraction backbones: named stages, output stride by dilation, truncation and pretrained loading."""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from typing import Iterable, Mapping

import torch
import torch.nn as nn

__all__ = ["Stage", "Backbone", "default_feature_stages"]


@dataclass(frozen=True)
class Stage:
    """One named cut point of a backbone.

    ``stride`` is the stride of the stage's output in the undilated network (output stride 32);
    ``units`` are the module paths run, in order, to go from the previous stage's output to this one's.
    Each unit is either a whole block (it may downsample once) or a layer without stride.
    """

    name: str
    stride: int
    channels: int
    units: tuple[str, ...]


def _get(module: nn.Module, path: str) -> nn.Module:
    return module.get_submodule(path)


def _conv_and_pool_modules(unit: nn.Module) -> Iterable[nn.Module]:
    for m in unit.modules():
        if isinstance(m, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)):
            yield m


def _stride_of(m: nn.Module) -> int:
    s = m.stride
    return int(s[0] if isinstance(s, tuple) else s)


def _unit_stride(unit: nn.Module) -> int:
    return max([_stride_of(m) for m in _conv_and_pool_modules(unit)] + [1])


def _set_dilation(conv: nn.Conv2d, rate: int) -> None:
    kh, kw = conv.kernel_size
    if kh == 1 and kw == 1:
        return
    conv.dilation = (rate, rate)
    conv.padding = (rate * (kh - 1) // 2, rate * (kw - 1) // 2)


def _remove_stride(unit: nn.Module) -> None:
    for m in _conv_and_pool_modules(unit):
        if _stride_of(m) == 1:
            continue
        if isinstance(m, nn.Conv2d):
            m.stride = (1, 1)
        else:
            k = m.kernel_size if isinstance(m.kernel_size, int) else m.kernel_size[0]
            m.stride = 1
            if k == 2:  # a 2x2/2 pool becomes the identity (what LiteSeg's Darknet19 does: MaxPool2d(1, 1))
                m.kernel_size = 1
                m.padding = 0


class Backbone(nn.Module):
    """Base class: subclasses build their modules (named as the reference implementation names them),
    set ``stage_specs`` and ``classifier_units``, then call :meth:`_configure`.

    ``forward(x)`` returns ``{stage name: feature map}`` for ``out_stages``.
    """

    stage_specs: tuple[Stage, ...] = ()
    # Module paths of the ImageNet classifier (kept only with include_classifier=True).
    classifier_units: tuple[str, ...] = ()
    # Other names users may know the stages by (e.g. the ResNet paper's conv3_x for torchvision's layer2).
    stage_aliases: Mapping[str, str] = {}
    # Where pretrained="imagenet" downloads from (torch.hub style: the file name carries a sha256 prefix).
    imagenet_url: str | None = None

    def _configure(self, output_stride: int = 32, out_stages: Iterable[str] | None = None, include_classifier: bool = False) -> None:
        if output_stride not in (8, 16, 32):
            raise ValueError(f"output_stride must be 8, 16 or 32, got {output_stride!r}")
        names = [s.name for s in self.stage_specs]
        requested = [self.resolve_stage(n) for n in (out_stages or [names[-1]])]
        self.out_stages = tuple(requested)
        self.output_stride = output_stride
        last = max(names.index(n) for n in requested)
        if include_classifier and last != len(names) - 1:
            raise ValueError("include_classifier=True needs every stage; do not truncate with out_stages")
        self.dropped: list[str] = []
        # Dilate the units that would take the stride beyond output_stride, keeping the resolution.
        stride, rate = 1, 1
        for stage in self.stage_specs:
            for path in stage.units:
                unit = _get(self, path)
                s = _unit_stride(unit)
                if s > 1 and stride * s > output_stride:
                    _remove_stride(unit)
                    if rate > 1:
                        for m in unit.modules():
                            if isinstance(m, nn.Conv2d):
                                _set_dilation(m, rate)
                    rate *= s
                else:
                    stride *= s
                    if rate > 1:
                        for m in unit.modules():
                            if isinstance(m, nn.Conv2d):
                                _set_dilation(m, rate)
        # Drop what no requested output depends on, so every kept parameter is used (and trained).
        doomed = [p for stage in self.stage_specs[last + 1 :] for p in stage.units]
        if not include_classifier:
            doomed += list(self.classifier_units)
        for path in reversed(doomed):  # from the end, so Sequential indices stay valid
            self._delete(path)
            self.dropped.append(path)
        self.include_classifier = include_classifier
        self._kept_stages = self.stage_specs[: last + 1]

    def _delete(self, path: str) -> None:
        parent_path, _, name = path.rpartition(".")
        parent = _get(self, parent_path) if parent_path else self
        if isinstance(parent, nn.Sequential) and name.isdigit():
            del parent[int(name)]
        else:
            delattr(parent, name)
        if parent_path and isinstance(parent, nn.Sequential) and len(parent) == 0:
            self._delete(parent_path)

    # ----------------------------------------------------------------- stage information
    def resolve_stage(self, name: str) -> str:
        """The canonical stage name for ``name`` (aliases allowed); unknown names raise with the list."""
        names = [s.name for s in self.stage_specs]
        canonical = self.stage_aliases.get(name, name)
        if canonical not in names:
            aliases = ", ".join(f"{a} (= {c})" for a, c in self.stage_aliases.items())
            raise KeyError(
                f"{type(self).__name__} has no stage {name!r}; stages: {', '.join(names)}" + (f"; aliases: {aliases}" if aliases else "")
            )
        return canonical

    def stage(self, name: str) -> Stage:
        name = self.resolve_stage(name)
        return next(s for s in self.stage_specs if s.name == name)

    def stage_stride(self, name: str) -> int:
        """Stride of a stage's output in this configuration (dilated stages stay at the output stride)."""
        return min(self.stage(name).stride, self.output_stride)

    def stage_channels(self, name: str) -> int:
        return self.stage(name).channels

    def describe(self) -> list[dict]:
        """Name, stride and channels of every stage as configured."""
        return [{"name": s.name, "stride": min(s.stride, self.output_stride), "channels": s.channels} for s in self._kept_stages]

    # ----------------------------------------------------------------- forward
    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        wanted = set(self.out_stages)
        out: dict[str, torch.Tensor] = {}
        for stage in self._kept_stages:
            for path in stage.units:
                x = _get(self, path)(x)
            if stage.name in wanted:
                out[stage.name] = x
        return out

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet classification (only with include_classifier=True)."""
        if not self.include_classifier:
            raise RuntimeError("this backbone was built without its ImageNet classifier (include_classifier=False)")
        for stage in self.stage_specs:
            for path in stage.units:
                x = _get(self, path)(x)
        return self._classify(x)

    def _classify(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    # ----------------------------------------------------------------- pretrained weights
    def load_pretrained(
        self,
        source: str | os.PathLike | Mapping[str, torch.Tensor],
        strict: bool = True,
        sha256: str | None = None,
        progress: bool = True,
    ) -> dict[str, list[str]]:
        """Load ImageNet (or other) weights from a path, a URL, ``"imagenet"`` or a state dict.

        Keys of the parts this configuration dropped (the classifier, truncated stages) are ignored and
        reported under ``ignored``. Any other missing or unexpected key or shape difference raises
        :class:`rtseg.io.WeightsMismatchError` listing them; with ``strict=False`` the matching
        tensors are loaded and the rest is reported (returned, and emitted as a warning).
        """
        from rtseg.io import extract_state_dict, load_file, load_weights

        if isinstance(source, Mapping):
            state, label = extract_state_dict(source), "the given state dict"
        else:
            path = self._resolve_source(source, sha256=sha256, progress=progress)
            label = repr(str(path))
            if str(path).endswith(".weights") or ".conv." in os.path.basename(str(path)):
                return self._load_darknet(path, strict=strict)
            state = extract_state_dict(load_file(path), label)
        prefixes = tuple(p + "." for p in self.dropped)
        ignored = [k for k in state if k.startswith(prefixes)]
        state = {k: v for k, v in state.items() if not k.startswith(prefixes)}
        # Checkpoints saved before PyTorch 0.4.1 have no BN step counters; PyTorch's own strict loading
        # accepts that (the counter only matters for momentum=None), and so do we.
        for key, value in self.state_dict().items():
            if key.endswith(".num_batches_tracked") and key not in state:
                state[key] = torch.zeros_like(value)
        report = load_weights(self, state, strict=strict)
        report["ignored"] = ignored
        problems = {k: v for k, v in report.items() if v and k != "ignored"}
        if problems:
            summary = "; ".join(f"{k}: {', '.join(v[:8])}{' ...' if len(v) > 8 else ''}" for k, v in problems.items())
            warnings.warn(f"non-strict load of {label} into {type(self).__name__}: {summary}", stacklevel=2)
        return report

    def _resolve_source(self, source: str | os.PathLike, sha256: str | None, progress: bool):
        from rtseg import hub

        if str(source) == "imagenet":
            if not self.imagenet_url:
                raise ValueError(f"{type(self).__name__} has no known ImageNet weights URL; pass a path or URL")
            try:
                return hub.resolve_weights(self.imagenet_url, sha256=sha256, progress=progress)
            except hub.DownloadError as exc:
                raise hub.DownloadError(exc.url, exc.target, exc.reason, f"; or train without these ImageNet weights of "
                                        f"{type(self).__name__}: model.options.pretrained=null") from exc.__cause__
        return hub.resolve_weights(source, sha256=sha256, progress=progress)

    def _load_darknet(self, path, strict: bool) -> dict[str, list[str]]:
        raise ValueError(f"{type(self).__name__} cannot read Darknet .weights files ({path})")


def default_feature_stages(backbone: Backbone, low_stride: int) -> tuple[str, str]:
    """(low-level stage, high-level stage) for a segmentation head on a backbone without a recorded choice: the
    deepest stage at ``low_stride`` (the next larger stride if there is none) and the last stage."""
    stages = backbone.stage_specs
    for stride in (low_stride, low_stride * 2):
        at = [s.name for s in stages if s.stride == stride]
        if at:
            return at[-1], stages[-1].name
    raise ValueError(f"{type(backbone).__name__} has no stage at stride {low_stride}")
