"""Model registry: look up the named variants every model file declares (see :mod:`rtseg.variants`) and build
them, with their model card: :func:`create_model`, and the model factory for weights files and checkpoints
(:func:`model_from_checkpoint`, :func:`checkpoint_card`, :func:`export_weights`).

The layers: :mod:`rtseg.variants` (the table) <- the model files <- this module; file I/O lives in
:mod:`rtseg.io`, which builds nothing.
"""
from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import torch.nn as nn

from rtseg import variants as _variants
from rtseg.variants import (  # noqa: F401  (re-exported)
    _REGISTRY, InvalidOptionError, ModelEntry, OptionSpec, UnknownModelError, UnknownOptionError, Variant, check_options, register_model,
    register_variants,
)

if TYPE_CHECKING:
    from rtseg.card import ModelCard

# rtseg.io and rtseg.card are imported where used: they load the data package, and `import rtseg` stays light.

# The variant table's names are re-exported: the registry is where users find them.
__all__ = ["option_specs", "get_entry", "list_models", "create_model", "checkpoint_card", "read_card", "model_from_checkpoint",
           "export_weights", *_variants.__all__]


def option_specs(name: str) -> list[OptionSpec]:
    """The options of model ``name`` with defaults and allowed values (what ``rtseg models NAME`` can print)."""
    return get_entry(name).option_specs


def _ensure_models_imported() -> None:
    # Importing the package registers every family; done on first use to keep `import rtseg` fast.
    import rtseg.models  # noqa: F401


def list_models(pattern: str | None = None) -> list[str]:
    """Registered model names, sorted; ``pattern`` filters with shell-style wildcards."""
    import fnmatch

    _ensure_models_imported()
    names = sorted(_REGISTRY)
    if pattern:
        names = [n for n in names if fnmatch.fnmatch(n, pattern)]
    return names


def get_entry(name: str) -> ModelEntry:
    """The registry entry of ``name``; an unknown name raises with the closest registered names."""
    _ensure_models_imported()
    try:
        return _REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=5, cutoff=0.4)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise UnknownModelError(
            f"unknown model {name!r}.{hint} Run `rtseg models` to list all {len(_REGISTRY)} registered models."
        ) from None


def create_model(name: str, num_classes: int | None = None, *, weights: str | os.PathLike | Mapping | None = None,
                 strict: bool = True, **options: Any) -> nn.Module:
    """Build the registered model ``name``, with its model card in ``model.rtseg_card``.

    ``options`` override the entry's defaults. ``weights``: a registered tag of ``name`` (``rtseg models
    --pretrained``), a URL, a local file (safetensors, rtseg checkpoint or plain state dict) or a state dict,
    loaded with strict key and shape checking (see :func:`rtseg.io.load_weights`). Weights with a card
    (a registered tag, a file whose SHA-256 is registered, a file rtseg wrote) set the class count, the build
    options and the card; a ``num_classes`` that contradicts them is an error. Without weights, ``num_classes``
    defaults to 19 and the card names no classes.
    """
    entry = get_entry(name)
    state, card, source = None, None, "the given state dict"
    if weights is not None and not isinstance(weights, Mapping):
        from rtseg.pretrained import resolve_weights

        state, card, source = resolve_weights(name, weights, legacy_card=checkpoint_card)
    elif weights is not None:
        state = weights
    if card is not None:
        from rtseg.io import WeightsMismatchError

        if card.model != name:
            raise WeightsMismatchError(f"weights {source} are for model {card.model!r}, not {name!r}: use rtseg.create_model({card.model!r}, weights=...)")
        if num_classes is not None and num_classes != card.num_outputs:
            raise WeightsMismatchError(f"weights {source} have {card.num_outputs} outputs ({card.summary()}); num_classes={num_classes} contradicts them")
        num_classes = card.num_outputs
        options = {**card.options, **options}
    num_classes = 19 if num_classes is None else num_classes
    if not isinstance(num_classes, int) or num_classes < 1:
        raise InvalidOptionError(f"num_classes must be a positive integer, got {num_classes!r}")
    supported = entry.options
    unknown = [k for k in options if k not in supported]
    if unknown:
        listing = ", ".join(f"{k}={v!r}" for k, v in supported.items()) or "(none)"
        raise UnknownOptionError(
            f"model {name!r} does not support option(s) {', '.join(map(repr, unknown))}; supported options: {listing}"
        )
    kwargs = {**entry.defaults, **options}
    try:
        check_options(name, entry.builder, kwargs)
        if num_classes > 1024 or any(k != "pretrained" and v != entry.options.get(k) for k, v in options.items()):
            check_model_size(name, entry, num_classes, kwargs)
    except InvalidOptionError as exc:
        if card is None:
            raise
        raise InvalidOptionError(f"the card of weights {source} asks for what rtseg does not build: {exc}") from None
    try:
        model = entry.builder(num_classes=num_classes, **kwargs)
    except ValueError as exc:  # a constructor's check of option values the caller chose (with none, a defect)
        if not options or isinstance(exc, InvalidOptionError):
            raise
        raise InvalidOptionError(f"{name} with options {options}: {exc}") from exc
    # pretrained= only initialises (a backbone's ImageNet weights): rebuilding from a card must not need it.
    build_options = {k: v for k, v in options.items() if k != "pretrained"}
    if card is None:
        from rtseg.card import ModelCard
        from rtseg.data.normalization import get_normalization

        card = ModelCard(model=name, num_outputs=num_classes, normalization=get_normalization(entry.normalization),
                         size_divisor=int(getattr(model, "size_divisor", 1)), options=build_options)
    else:
        card = card.replace(options=build_options)
    model.rtseg_card = card
    if state is not None:
        from rtseg.io import load_weights

        load_weights(model, state, strict=strict)
    return model


# Bounds on a network built from a card or a config (input anybody can write), counted on the meta device before
# anything is allocated: far above the largest registered network (about 21M parameters, 400 modules).
MAX_PARAMETERS = 200_000_000
MAX_MODULES = 20_000


class _TooLarge(Exception):
    pass


def check_model_size(name: str, entry: ModelEntry, num_classes: int, kwargs: Mapping[str, Any]) -> None:
    """Raise :class:`InvalidOptionError` when ``name`` with these options would exceed :data:`MAX_PARAMETERS` or
    :data:`MAX_MODULES`. The network is built on the meta device (no memory, no initialisation) and the build is
    stopped as soon as a count passes its bound, so a hostile option cannot make the check itself slow."""
    import torch
    from torch.nn.modules import module as module_hooks

    counts = {"modules": 0, "parameters": 0}

    def on_module(parent, child_name, child):
        counts["modules"] += 1
        if counts["modules"] > MAX_MODULES:
            raise _TooLarge(f"more than {MAX_MODULES:,} layers")

    def on_parameter(parent, param_name, param):
        counts["parameters"] += 0 if param is None else param.numel()
        if counts["parameters"] > MAX_PARAMETERS:
            raise _TooLarge(f"more than {MAX_PARAMETERS:,} parameters")

    handles = [module_hooks.register_module_module_registration_hook(on_module),
               module_hooks.register_module_parameter_registration_hook(on_parameter)]
    try:
        with torch.device("meta"):
            entry.builder(num_classes=num_classes, **{k: v for k, v in kwargs.items() if k != "pretrained"})
    except _TooLarge as exc:
        shown = ", ".join(f"{k}={v!r}" for k, v in kwargs.items() if v != entry.options.get(k))
        raise InvalidOptionError(f"model {name!r} with {num_classes} classes{' and ' + shown if shown else ''} would have {exc}; "
                                 "rtseg refuses networks that large (a card or config asking for one is not a real one)") from None
    except Exception:  # noqa: BLE001 - the real build reports its own errors, with the user's options named
        pass
    finally:
        for h in handles:
            h.remove()


# -- the model factory for checkpoints and weights files ------------------------------------------
def checkpoint_card(ckpt: Mapping[str, Any]) -> ModelCard:
    """The model card of a loaded checkpoint; for one written before cards existed, derived from what it stored."""
    from rtseg.io import stored_card

    card = stored_card(ckpt)
    return card if card is not None else _card_from_legacy_checkpoint(ckpt)


def _card_from_legacy_checkpoint(ckpt: Mapping[str, Any]) -> ModelCard:
    # Checkpoints written before model cards hold a build spec, a normalisation preset name and the training
    # config. This is the one place their card is derived: the classes from the dataset the config names.
    from rtseg.card import ModelCard, TrainingRecord
    from rtseg.data.datasets import DatasetError, dataset_classes
    from rtseg.data.normalization import get_normalization

    spec = ckpt["model"]
    config = dict(ckpt.get("config") or {})
    data = config.get("data") or {}
    try:
        classes = dataset_classes(data) if data else None
    except DatasetError:  # a folder dataset that is no longer there: its names are lost
        classes = None
    if classes is not None and classes.num_classes > spec["num_classes"]:
        classes = None
    built = create_model(spec["name"], num_classes=spec["num_classes"], **spec.get("options", {}))
    training = None
    if config:
        epoch = ckpt.get("epoch")
        training = TrainingRecord(dataset=str(data.get("dataset", "synthetic")), recipe=config.get("recipe"), config=config,
                                  epochs=None if epoch is None else int(epoch) + 1, iterations=ckpt.get("iteration"))
    return ModelCard(
        model=spec["name"], num_outputs=int(spec["num_classes"]), options=dict(spec.get("options", {})),
        normalization=get_normalization(ckpt.get("normalization") or built.rtseg_card.normalization),
        size_divisor=built.rtseg_card.size_divisor, classes=classes, training=training,
        notes="derived from a checkpoint written before model cards: classes from the dataset its training config names",
    )


def read_card(path: str | os.PathLike) -> ModelCard | None:
    """The model card stored in a weights file (safetensors metadata or an rtseg checkpoint, derived for one
    written before cards), or None."""
    from rtseg.io import read_card as read_stored_card

    return read_stored_card(path, legacy_card=_card_from_legacy_checkpoint)


def model_from_checkpoint(path: str | os.PathLike) -> nn.Module:
    """Rebuild the model stored in an rtseg checkpoint, with its weights and its card."""
    from rtseg.io import load_checkpoint

    card = checkpoint_card(load_checkpoint(path))  # refuses files that are not rtseg checkpoints
    return create_model(card.model, weights=str(path))


def export_weights(checkpoint: str | os.PathLike, out: str | os.PathLike, half: bool | str = False, *,
                   license: str | None = None, source: str | None = None) -> Path:
    """A publishable weights file from a training checkpoint: safetensors with the checkpoint's card in its
    metadata (optionally float16 storage, see :func:`rtseg.io.save_weights`, and a licence and source written into the
    card)."""
    from rtseg.io import extract_state_dict, load_checkpoint, save_weights

    ckpt = load_checkpoint(checkpoint)
    card = checkpoint_card(ckpt)
    changes = {k: v for k, v in (("license", license), ("source", source)) if v is not None}
    return save_weights(out, extract_state_dict(ckpt, repr(str(checkpoint))), card.replace(**changes) if changes else card, half=half)
