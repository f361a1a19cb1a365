"""Model cards: one typed record of what a network is, what its outputs mean and where its weights come from.

A card travels with the weights: inside rtseg checkpoints (as plain data, readable with ``weights_only=True``),
in the metadata of safetensors weights files, ONNX files (``metadata_props``) and TorchScript archives (an
extra file). Everything that reads weights reads its card; nothing guesses classes from a class count or a
dataset name.

Outputs and classes: a network has ``num_outputs`` output channels. The first ``len(classes.names)`` are the
named classes; any further outputs predict "void" (e.g. the official ESPNet releases have one extra void output).
A pixel predicted void is scored as wrong and painted in the ignore colour.
"""
from __future__ import annotations

import dataclasses
import json
import math
import platform
from dataclasses import dataclass, field
from typing import Any, Mapping

import torch.nn as nn

from rtseg.data.labels import ClassInfo
from rtseg.data.normalization import Normalization
from rtseg.errors import UserError

__all__ = ["ModelCard", "TrainingRecord", "Metrics", "CardError", "CARD_VERSION", "card_of", "hardware_description"]

CARD_SCHEMA = "rtseg-model-card"
CARD_VERSION = 2  # 2: training.start_weights, teacher and images_seen
MAX_OUTPUTS = 4096  # far beyond any segmentation dataset; a card asking for more is not a real one


class CardError(UserError, ValueError):
    """A model card that cannot be read (wrong schema, a newer version, missing or unknown fields)."""


def _checked_fields(cls, data: Mapping[str, Any], where: str) -> dict[str, Any]:
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise CardError(f"{where}: unknown field(s) {unknown}; expected some of {sorted(names)}")
    required = [f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    missing = [k for k in required if k not in data]
    if missing:
        raise CardError(f"{where}: missing field(s) {missing}")
    return dict(data)


@dataclass(frozen=True)
class TrainingRecord:
    """What the weights were trained on, with what recipe, on what machine and for how long."""

    dataset: str  # camvid | cityscapes | synthetic | folder:NAME | a free description for foreign weights
    by: str = "rtseg trainer"  # who trained them (rtseg's trainer, or an official release)
    split: str | None = "train"  # None: not stated by whoever released them
    images: int | None = None
    recipe: str | None = None
    config: dict[str, Any] | None = None  # the full training config (rtseg runs)
    epochs: int | None = None
    iterations: int | None = None
    wall_time_s: float | None = None  # training time, validation excluded
    hardware: str | None = None
    torch_version: str | None = None
    rtseg_version: str | None = None
    start_weights: str | None = None  # the weights the run started from (model.weights): tag or SHA-256
    teacher: str | None = None  # distillation: loss, temperature, weight and each teacher with its SHA-256
    images_seen: int | None = None  # training images passed through the network (epochs x images, crops counted)


@dataclass(frozen=True)
class Metrics:
    """Scores the weights reach, and the protocol that measured them."""

    dataset: str
    split: str
    miou: float
    per_class_iou: dict[str, float | None]
    # how: input size, scales, flip, window, how void outputs and ignored labels are scored, how IoU is aggregated
    protocol: dict[str, Any]
    pixel_accuracy: float | None = None
    images: int | None = None
    epoch: int | None = None
    measured_with: str = ""  # software and machine
    note: str = ""


@dataclass(frozen=True)
class ModelCard:
    """A network's facts: how to build it, what its outputs mean, how to feed it, where its weights come from."""

    model: str  # registry name
    num_outputs: int  # output channels (``num_classes`` of create_model)
    normalization: Normalization
    size_divisor: int = 1
    options: dict[str, Any] = field(default_factory=dict)  # build options beyond the registry defaults
    classes: ClassInfo | None = None  # None: nothing has named the outputs yet (an untrained network)
    training: TrainingRecord | None = None
    metrics: tuple[Metrics, ...] = ()
    license: str | None = None
    source: str | None = None  # where the weights come from (a URL, a project, a run)
    notes: str = ""

    def __post_init__(self):
        if self.classes is not None and self.classes.num_classes > self.num_outputs:
            raise CardError(f"card of {self.model!r}: {self.classes.num_classes} class names but only {self.num_outputs} outputs")

    # -- derived facts --------------------------------------------------------------------------
    @property
    def class_info(self) -> ClassInfo:
        """The named classes, or placeholder names and colours when nothing has named them."""
        return self.classes if self.classes is not None else ClassInfo.unnamed(self.num_outputs)

    @property
    def void_outputs(self) -> tuple[int, ...]:
        """Output indices beyond the named classes: they predict void (scored as wrong, painted in the ignore colour)."""
        first = self.classes.num_classes if self.classes is not None else self.num_outputs
        return tuple(range(first, self.num_outputs))

    @property
    def input_scale(self) -> int:
        """Factor the weights' training shrank each image by before the network (FarSee-Net's low-resolution input,
        ``data.input_scale``), so inference must too; 1 for every other network."""
        data = ((self.training.config if self.training else None) or {}).get("data") or {}
        scale = data.get("input_scale") or 1
        return int(scale) if isinstance(scale, int) and scale > 1 else 1

    @property
    def input_size(self) -> tuple[int, int] | None:
        """The image size (height, width) the weights were evaluated at (their first metric's protocol), else trained
        at (the training config's ``data.image_size``); None when neither says (an untrained network, foreign weights
        without a measured size). Exports default to it and ``rtseg predict --size card`` resizes to it."""
        candidates = [m.protocol.get("input_size") for m in self.metrics]
        data = ((self.training.config if self.training else None) or {}).get("data") or {}
        candidates.append(data.get("image_size"))
        for c in candidates:
            if isinstance(c, (list, tuple)) and len(c) == 2 and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in c):
                return int(c[0]), int(c[1])
        return None

    def network_input_size(self, image_hw: tuple[int, int]) -> tuple[int, int] | None:
        """The size an ``image_hw`` image is fed to the network at when no size is asked for: shrunk by
        :attr:`input_scale` (the predictions still come back at ``image_hw``); None when it is fed as it is."""
        s = self.input_scale
        if s == 1:
            return None
        return max(1, image_hw[0] // s), max(1, image_hw[1] // s)

    def build_kwargs(self) -> dict[str, Any]:
        """Arguments that rebuild the network with ``rtseg.create_model(card.model, **card.build_kwargs())``."""
        return {"num_classes": self.num_outputs, **self.options}

    def replace(self, **changes: Any) -> "ModelCard":
        return dataclasses.replace(self, **changes)

    # -- serialisation --------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data (dicts, lists, strings, numbers, None), with the schema name and version."""
        out: dict[str, Any] = {"schema": CARD_SCHEMA, "version": CARD_VERSION}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name in ("normalization", "classes"):
                value = value.to_dict() if value is not None else None
            elif f.name == "training":
                value = dataclasses.asdict(value) if value is not None else None
            elif f.name == "metrics":
                value = [dataclasses.asdict(m) for m in value]
            out[f.name] = value
        return _plain(out)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str | None = None) -> "ModelCard":
        """The card ``data`` describes, every value checked (a card is JSON anybody can write); ``source`` (the file
        it came from) starts any error message."""
        try:
            return cls._from_dict(data)
        except CardError as exc:
            if source is None:
                raise
            raise CardError(f"{source}: {exc}") from None

    @classmethod
    def _from_dict(cls, data: Mapping[str, Any]) -> "ModelCard":
        if not isinstance(data, Mapping) or data.get("schema") != CARD_SCHEMA:
            raise CardError(f"not an rtseg model card (expected schema {CARD_SCHEMA!r}, got {data.get('schema') if isinstance(data, Mapping) else type(data).__name__!r})")
        version = data.get("version")
        if not isinstance(version, int) or version > CARD_VERSION:
            raise CardError(f"model card version {version!r} is newer than this rtseg reads ({CARD_VERSION}); upgrade rtseg")
        fields = _checked_fields(cls, {k: v for k, v in data.items() if k not in ("schema", "version")}, "model card")
        try:
            fields["normalization"] = Normalization.from_dict(fields["normalization"])
            if fields.get("classes") is not None:
                fields["classes"] = ClassInfo.from_dict(fields["classes"])
            if fields.get("training") is not None:
                fields["training"] = TrainingRecord(**_checked_fields(TrainingRecord, fields["training"], "model card training"))
            fields["metrics"] = tuple(Metrics(**_checked_fields(Metrics, m, "model card metrics")) for m in fields.get("metrics") or ())
            options = fields.get("options") or {}
            if not isinstance(options, dict) or not all(isinstance(k, str) for k in options):
                raise ValueError(f"options must be a mapping of option names to values, got {options!r:.200}")
            fields["options"] = dict(options)
            for key, top in (("num_outputs", MAX_OUTPUTS), ("size_divisor", 4096)):
                value = fields.get(key, 1)
                if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= top:
                    raise ValueError(f"{key} must be an integer 1..{top}, got {value!r}")
            if not isinstance(fields["model"], str) or not fields["model"]:
                raise ValueError(f"model must be a registered model name, got {fields['model']!r}")
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, CardError):
                raise
            detail = f"missing field {exc}" if isinstance(exc, KeyError) else str(exc)
            raise CardError(f"model card of {str(data.get('model'))[:80]!r} is malformed: {detail}") from None
        return cls(**fields)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str, source: str | None = None) -> "ModelCard":
        try:
            data = json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise CardError(f"{source + ': ' if source else ''}model card is not valid JSON: {exc}") from None
        return cls.from_dict(data, source)

    def summary(self) -> str:
        """One line: model, classes, where the weights come from, the first metric."""
        names = self.class_info.names
        shown = ", ".join(names[:6]) + (f", ... ({len(names)} classes)" if len(names) > 6 else "")
        text = f"{self.model} ({self.num_outputs} outputs: {shown}{' + void' if self.void_outputs else ''})"
        if self.training is not None:
            text += f", trained on {self.training.dataset} by {self.training.by}"
        if self.metrics:
            m = self.metrics[0]
            text += f", {m.dataset} {m.split} mIoU {m.miou:.4f}"
        return text


def _plain(value: Any) -> Any:
    """Plain JSON data of built-in types: tuples become lists, non-finite floats None, anything else its text."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, int):
        return int(value)
    # str subclasses too (torch.__version__ is one): weights_only loading accepts only the plain types
    return str(value)


def card_of(model: nn.Module) -> ModelCard:
    """The card of a network built by rtseg (``create_model``, a checkpoint, a weights file)."""
    card = getattr(model, "rtseg_card", None)
    if card is None:
        inner = getattr(model, "module", None)  # DataParallel / DDP wrappers
        card = getattr(inner, "rtseg_card", None)
    if card is None:
        raise CardError(f"{type(model).__name__} has no model card: build it with rtseg.create_model or load it from an rtseg file")
    return card


def hardware_description(device) -> str:
    """The accelerator's name, or the CPU model and the number of threads torch uses."""
    import torch

    from rtseg.efficiency import device_name

    device = torch.device(device)
    if device.type == "cuda":
        return device_name(device)
    return f"{device_name(device)}, {torch.get_num_threads()} threads ({platform.machine()})"
