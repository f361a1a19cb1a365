"""Runs that start from trained weights: ``model.weights`` (fine-tuning, onto the same or other classes),
``train.freeze`` (parts of the network kept fixed for some or all epochs) and the teachers of ``distill``.

Everything a run needs from a weights file is resolved and checked by :func:`preflight` before any work: the
file exists and reads, it was made for ``model.name``, the class maps name real classes, the frozen parts exist.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn as nn
from torch.nn.modules.batchnorm import _BatchNorm

from rtseg.card import ModelCard
from rtseg.config_defaults import DEFAULTS, ConfigError
from rtseg.data.labels import ClassInfo
from rtseg.errors import UserError

__all__ = ["StartWeights", "resolve_start_weights", "start_config", "load_start_weights", "Freezer", "resolve_freeze",
           "teacher_specs", "build_teacher", "preflight", "resume_conflicts"]


@dataclass
class StartWeights:
    """A resolved ``model.weights``: the file, the registered entry it is (if any), its card and tensors."""

    spec: str
    path: Path
    sha256: str
    tag: str | None
    card: ModelCard | None
    state: dict[str, torch.Tensor]
    aux_state: dict[str, torch.Tensor] | None = None  # the auxiliary heads of an rtseg training checkpoint

    @property
    def identity(self) -> str:
        """How records name the weights: ``model/tag (sha256 ...)`` for registered weights, else the SHA-256 and file."""
        if self.tag is not None and self.card is not None:
            return f"{self.card.model}/{self.tag} (sha256 {self.sha256})"
        return f"sha256 {self.sha256} ({self.path})"


def resolve_start_weights(model_name: str, spec: Any, key: str = "model.weights") -> StartWeights:
    """The weights ``spec`` names for ``model_name`` (a tag, a URL or a file); a :class:`ConfigError` naming ``key``
    for a missing or unreadable file or weights of another model."""
    from rtseg.hub import sha256_of
    from rtseg.io import is_checkpoint, is_safetensors, load_file, read_weights
    from rtseg.pretrained import locate_weights
    from rtseg.registry import checkpoint_card

    aux = None
    try:
        path, entry = locate_weights(model_name, str(spec))
        state, card = read_weights(path, legacy_card=checkpoint_card)
        if not is_safetensors(path):
            obj = load_file(path)
            aux = obj.get("aux_heads") if is_checkpoint(obj) else None
    except UserError as exc:
        raise ConfigError(f"{key}={spec!r}: {exc}") from None
    except (OSError, ValueError, RuntimeError) as exc:
        raise ConfigError(f"{key}={spec!r}: cannot read the file ({type(exc).__name__}: {exc})") from None
    card = entry.card if entry is not None else card
    if card is not None and card.model != model_name:
        raise ConfigError(f"{key}={spec!r}: these weights are for model {card.model!r}, not model.name={model_name!r}; set "
                          f"model.name={card.model} or choose weights made for {model_name} (rtseg models --pretrained)")
    return StartWeights(str(spec), Path(path), entry.sha256 if entry else sha256_of(path), entry.tag if entry else None, card, dict(state),
                        dict(aux) if aux else None)


def start_config(config: dict[str, Any], start: StartWeights) -> tuple[dict[str, Any], list[str]]:
    """``config`` with what the weights' card says filled in where the config leaves it open: the build options
    (the config's own win) and the low-resolution input of the weights' training (``data.input_scale``)."""
    card = start.card
    if card is None:
        return config, []
    config = copy.deepcopy(config)
    notes = []
    mcfg = config["model"]
    own = dict(mcfg.get("options") or {})
    merged = {**{k: v for k, v in card.options.items() if k != "pretrained"}, **own}
    if merged != own:
        notes.append("build options from the weights' card: " + ", ".join(f"{k}={v!r}" for k, v in merged.items() if k not in own))
    mcfg["options"] = merged
    data = config["data"]
    if card.input_scale > 1 and int(data.get("input_scale") or 1) == 1:
        data["input_scale"] = card.input_scale
        notes.append(f"data.input_scale={card.input_scale} from the weights' training (the network was trained on images shrunk that much)")
    return config, notes


def _probe(name: str, options: Mapping[str, Any]):
    from rtseg.registry import create_model

    return lambda n: create_model(name, num_classes=n, **options)


def load_start_weights(model: nn.Module, start: StartWeights, classes: ClassInfo, class_map: Mapping[str, Any] | None,
                       name: str, options: Mapping[str, Any]) -> list[str]:
    """Load ``start`` into ``model`` (built for ``classes``); returns the lines that say what was loaded, what was
    re-initialised and which classes' rows were carried over."""
    from rtseg.io import load_weights
    from rtseg.models.class_layers import class_layer_paths, match_classes, transfer_class_weights

    card, num = start.card, int(getattr(model, "num_classes", classes.num_classes))
    old_names = list(card.class_info.names) if card is not None else None
    old_outputs = card.num_outputs if card is not None else None
    lines = [f"start weights: {start.identity}" + (f", {card.summary()}" if card is not None else ", a file without a model card")]
    same = card is not None and old_outputs == num and card.classes is not None and [n.lower() for n in old_names] == [
        n.lower() for n in classes.names] and not class_map
    if card is None:
        # a bare state dict names no classes: it fits as it is, or its class layers start afresh
        try:
            load_weights(model, start.state, strict=True)
            lines.append(f"loaded all {len(start.state)} tensors (the file names no classes; its outputs are taken as the dataset's)")
            return lines
        except UserError:
            pass
    if same:
        load_weights(model, start.state, strict=True)
        lines.append(f"loaded all {len(start.state)} tensors: the weights' classes are the dataset's")
        return lines
    paths = class_layer_paths(model)
    if not paths:
        raise ConfigError(f"model.weights: {type(model).__name__} declares no class layers, so its weights cannot move to "
                          f"{classes.num_classes} other classes; train with the weights' classes or without model.weights")
    try:
        pairs = match_classes(classes.names, old_names, class_map) if old_names is not None else {}
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if old_outputs is None:  # no card: the class count is read off the first class layer
        old_outputs = next((v.shape[0] for k, v in start.state.items() if k.startswith(paths[-1] + ".")), num)
    try:
        state, report = transfer_class_weights(model, start.state, num, int(old_outputs), pairs, _probe(name, options))
    except ValueError as exc:
        raise ConfigError(f"model.weights={start.spec!r} do not fit model.name={name!r} with these options: {exc}") from None
    load_weights(model, state, strict=True)
    lines.append(f"kept {report.kept} tensors as trained; class layers ({', '.join(paths)}) built for {num} classes: "
                 f"{len(report.reinitialised)} tensor(s) re-initialised, {len(report.carried_tensors)} with rows carried over")
    if report.reinitialised:
        lines.append("re-initialised: " + ", ".join(report.reinitialised))
    carried = [f"{classes.names[j]} <- {old_names[i]}" for j, i in sorted(pairs.items())] if old_names else []
    lines.append(("rows carried over for " + ", ".join(carried)) if carried and report.carried_tensors else
                 "no class rows carried over (no class of the dataset matches one of the weights; model.class_map maps them by hand)")
    return lines


def load_start_aux_heads(aux, start: StartWeights, classes: ClassInfo, class_map: Mapping[str, Any] | None) -> list[str]:
    """The auxiliary heads of a training checkpoint into ``aux`` (an :class:`rtseg.models.aux_heads.AuxiliaryHeads`),
    their classifiers moved to ``classes`` like the network's; heads that do not fit start afresh (said so)."""
    from rtseg.models.aux_heads import AuxHead
    from rtseg.models.class_layers import match_classes, transfer_class_weights

    if not start.aux_state:
        return []
    old_names = list(start.card.class_info.names) if start.card is not None else []
    old_outputs = start.card.num_outputs if start.card is not None else None
    try:
        pairs = match_classes(classes.names, old_names, class_map)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    loaded = []
    for i, head in enumerate(aux.heads):
        prefix = f"{i}."
        state = {k[len(prefix):]: v for k, v in start.aux_state.items() if k.startswith(prefix)}
        if not state or old_outputs is None:
            continue
        conv = head.conv[0]
        probe = lambda n, c=conv.in_channels, m=conv.out_channels, d=head.dropout.p: AuxHead(c, n, m, d)  # noqa: E731
        try:
            moved, _ = transfer_class_weights(head, state, int(getattr(head.classifier, "out_channels")), int(old_outputs), pairs, probe)
        except ValueError:
            continue
        head.load_state_dict(moved, strict=True)
        loaded.append(aux.stage_names[i])
    if not loaded:
        return ["auxiliary heads start afresh (those of the start checkpoint do not fit these stages)"]
    return [f"auxiliary heads from the start checkpoint: {', '.join(loaded)} (classifiers moved to the dataset's classes)"]


# -- freezing --------------------------------------------------------------------------------------
def resolve_freeze(model: nn.Module, parts: Any, key: str = "train.freeze") -> list[str]:
    """The module paths ``train.freeze`` names (family aliases such as ``encoder``, or module paths)."""
    from rtseg.models.class_layers import part_paths

    if not parts:
        return []
    paths: list[str] = []
    for i, part in enumerate(parts):
        found = part_paths(model, str(part))
        if found is None:
            aliases = list(getattr(model, "part_aliases", {}))
            children = [n for n, m in model.named_children() if m is not None]
            raise ConfigError(f"{key}[{i}]={part!r} is neither a part of {type(model).__name__} "
                              f"({', '.join(dict.fromkeys(aliases + children))}) nor a module path (e.g. encoder.layers.0)")
        paths.extend(p for p in found if p not in paths)
    return paths


class Freezer:
    """``train.freeze`` parts kept fixed during the first ``train.freeze_epochs`` epochs (all of them when unset):
    their parameters get no gradient (the optimizer leaves them as they are) and their BatchNorm layers stay in
    eval mode, so their running statistics do not move either."""

    def __init__(self, model: nn.Module, parts: Any, epochs: int | None):
        self.paths = resolve_freeze(model, parts)
        self.epochs = epochs
        self.modules = [model.get_submodule(p) for p in self.paths]
        seen: set[int] = set()
        self.params = []
        for module in self.modules:
            for p in module.parameters():
                if id(p) not in seen:
                    seen.add(id(p))
                    self.params.append(p)
        self.frozen = False

    def __bool__(self) -> bool:
        return bool(self.paths)

    def active(self, epoch: int) -> bool:
        return bool(self.paths) and (self.epochs is None or epoch < self.epochs)

    def apply(self, epoch: int) -> bool:
        """Freeze or release for ``epoch``; True when that changed something."""
        want = self.active(epoch)
        if want == self.frozen:
            return False
        for p in self.params:
            p.requires_grad_(not want)
        self.frozen = want
        return True

    def hold_statistics(self) -> None:
        """BatchNorm layers of the frozen parts back to eval mode (after the network's ``train()``)."""
        if not self.frozen:
            return
        for module in self.modules:
            for m in module.modules():
                if isinstance(m, _BatchNorm):
                    m.eval()

    def describe(self) -> str:
        span = "the whole run" if self.epochs is None else f"the first {self.epochs} epoch(s)"
        return f"frozen for {span}: {', '.join(self.paths)} ({sum(p.numel() for p in self.params):,} parameters)"


# -- distillation teachers -----------------------------------------------------------------------
def teacher_specs(dcfg: Mapping[str, Any] | None) -> list[str]:
    teacher = (dcfg or {}).get("teacher")
    if not teacher:
        return []
    return [str(t) for t in teacher] if isinstance(teacher, (list, tuple)) else [str(teacher)]


def _load_teacher(spec: str, key: str) -> tuple[nn.Module, ModelCard, str]:
    """A teacher ``NAME@WEIGHTS`` (a registered model with a tag, URL or file) or a weights file that carries its card."""
    from rtseg.registry import create_model, get_entry, read_card

    path = Path(spec).expanduser()
    try:
        if path.is_file():
            card = read_card(path)
            if card is None:
                raise ConfigError(f"{key}={spec!r}: the file has no model card; name the model too, as MODEL@{spec}")
            return create_model(card.model, weights=str(path)), card, spec
        name, sep, weights = spec.partition("@")
        if not sep or not weights:
            get_entry(name)  # an unknown name says so, with the closest names
            raise ConfigError(f"{key}={spec!r}: a teacher needs trained weights: MODEL@TAG (e.g. espnet@camvid-official), "
                              f"MODEL@FILE or a weights file rtseg wrote")
        model = create_model(name, weights=weights)
        return model, model.rtseg_card, spec
    except ConfigError:
        raise
    except UserError as exc:
        raise ConfigError(f"{key}={spec!r}: {exc}") from None


def build_teacher(dcfg: Mapping[str, Any], student_classes: ClassInfo, student_normalization, device: torch.device,
                  channels_last: bool = False):
    """The :class:`rtseg.engine.distill.Distillation` the ``distill`` section asks for, or None without a teacher."""
    from rtseg.engine.distill import Distillation, Teacher, TeacherNet, build_distill_loss, teacher_class_groups

    specs = teacher_specs(dcfg)
    if not specs:
        return None
    dcfg = _distill_settings(dcfg)
    nets = []
    for i, spec in enumerate(specs):
        key = "distill.teacher" + (f"[{i}]" if len(specs) > 1 else "")
        model, card, _ = _load_teacher(spec, key)
        try:
            groups = teacher_class_groups(student_classes.names, card.class_info.names, dcfg["class_map"])
        except ValueError as exc:
            raise ConfigError(f"{key}={spec!r}: {exc}") from None
        nets.append(TeacherNet(model, card.normalization, groups, card.input_scale, spec, tuple(card.void_outputs)))
    temperature = float(dcfg["temperature"])
    teacher = Teacher(nets, student_normalization, temperature).to(device, channels_last)
    return Distillation(teacher, build_distill_loss(dcfg["loss"], temperature), float(dcfg["weight"]),
                        student_classes.ignore_index, dcfg["void"], dcfg["pixels"])


def _distill_settings(dcfg: Mapping[str, Any] | None) -> dict[str, Any]:
    """A ``distill`` section with every unset (or null) key at its default from :data:`DEFAULTS`."""
    given = dict(dcfg or {})
    return {key: given[key] if given.get(key) is not None else default for key, default in DEFAULTS["distill"].items()}


def _teacher_identity(spec: str) -> tuple[str, str | None]:
    """How a teacher is named in records (a registered file by its tag) and the SHA-256 of its weights, or None where
    they cannot be found."""
    from rtseg.hub import sha256_of
    from rtseg.pretrained import locate_weights

    name, sep, weights = spec.partition("@")
    try:
        path, entry = locate_weights(name, weights, progress=False) if sep and not Path(spec).is_file() else (Path(spec), None)
        digest = entry.sha256 if entry else sha256_of(path)
        return (f"{entry.model}@{entry.tag}" if entry is not None else spec), digest
    except (UserError, OSError):
        return spec, None


def describe_teacher(dcfg: Mapping[str, Any]) -> str | None:
    """How records name a run's teacher(s): each spec with its weights' SHA-256 where a file or tag names them."""
    specs = teacher_specs(dcfg)
    if not specs:
        return None
    named = [shown if digest is None else f"{shown} (sha256 {digest})" for shown, digest in map(_teacher_identity, specs)]
    dcfg = _distill_settings(dcfg)
    where = ", void pixels ignored" if dcfg["void"] == "ignore" else ""
    if dcfg["pixels"] == "correct":
        where += ", only where the teacher is right"
    return f"{dcfg['loss']} T={dcfg['temperature']} weight={dcfg['weight']}{where} from " + " + ".join(named)


def same_teachers(a: Mapping[str, Any] | None, b: Mapping[str, Any] | None) -> bool:
    """Whether two ``distill`` sections name the same teachers in the same order: as written, or by their weights'
    SHA-256 (a tag on one machine and the same file by its path on another)."""
    sa, sb = teacher_specs(a), teacher_specs(b)
    if sa == sb:
        return True
    if len(sa) != len(sb):
        return False
    da, db = ([_teacher_identity(s)[1] for s in specs] for specs in (sa, sb))
    return None not in da and da == db


# -- checks before any work ----------------------------------------------------------------------
def preflight(config: dict[str, Any]) -> None:
    """Check what a run takes from files before it starts: ``model.weights`` (readable, of ``model.name``, class
    map names real classes), ``train.freeze`` (parts that exist) and the ``distill`` teachers and class map."""
    from rtseg.data.datasets import dataset_classes
    from rtseg.models.class_layers import match_classes
    from rtseg.registry import create_model

    mcfg = config["model"]
    classes = dataset_classes(config["data"])
    start = resolve_start_weights(mcfg["name"], mcfg["weights"]) if mcfg.get("weights") else None
    options = dict(mcfg.get("options") or {})
    if start is not None:
        options = start_config(config, start)[0]["model"]["options"]
        if mcfg.get("class_map") and start.card is not None:
            try:
                match_classes(classes.names, start.card.class_info.names, mcfg["class_map"])
            except ValueError as exc:
                raise ConfigError(str(exc)) from None
    elif mcfg.get("class_map"):
        raise ConfigError("model.class_map maps the classes of model.weights onto the dataset's, but model.weights is not set")
    if config["train"].get("freeze"):
        with torch.device("meta"):
            probe = create_model(mcfg["name"], num_classes=mcfg.get("num_classes") or classes.num_classes, **options)
        resolve_freeze(probe, config["train"]["freeze"])
    dcfg = config.get("distill") or {}
    for i, spec in enumerate(teacher_specs(dcfg)):
        from rtseg.engine.distill import teacher_class_groups

        key = "distill.teacher" + (f"[{i}]" if len(teacher_specs(dcfg)) > 1 else "")
        _, card, _ = _load_teacher(spec, key)
        try:
            teacher_class_groups(classes.names, card.class_info.names, dcfg.get("class_map"))
        except ValueError as exc:
            raise ConfigError(f"{key}={spec!r}: {exc}") from None


def resume_conflicts(stored: Mapping[str, Any], config: Mapping[str, Any]) -> list[str]:
    """What differs between a run's stored config and the one asked to resume it: the model, the classes, the start
    weights or the teachers (any of these makes the checkpoint another run's; teachers are compared by their weights,
    so a tag and the same file by its path agree)."""
    from rtseg.data.datasets import DatasetError, dataset_classes

    def classes(cfg):
        try:
            return list(dataset_classes(cfg.get("data") or {}).names)
        except (DatasetError, UserError, KeyError, TypeError):
            return None

    out = []
    for key in ("name", "num_classes", "weights", "class_map"):
        a, b = (stored.get("model") or {}).get(key), (config.get("model") or {}).get(key)
        if a != b:
            out.append(f"model.{key}: the run has {a!r}, now {b!r}")
    a, b = classes(stored), classes(config)
    if a is not None and b is not None and a != b:
        out.append(f"classes: the run has {', '.join(a)}; now {', '.join(b)}")
    a, b = stored.get("distill") or {}, config.get("distill") or {}
    if not same_teachers(a, b):
        out.append(f"distill.teacher: the run has {a.get('teacher')!r}, now {b.get('teacher')!r}")
    elif teacher_specs(a):
        # the same teachers with another loss, weight or pixel selection would train a different objective from epoch k on
        a, b = _distill_settings(a), _distill_settings(b)
        for key in DEFAULTS["distill"]:
            if key == "teacher":
                continue
            x, y = a[key], b[key]
            if _setting(x) != _setting(y):
                out.append(f"distill.{key}: the run has {x!r}, now {y!r}")
    return out


def _setting(value: Any) -> Any:
    """A distill setting as compared on resume: 1 and 1.0 (YAML writes both) are the same temperature."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return value
