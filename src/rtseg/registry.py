"""Model registry: every network variant is a named entry with its paper, defaults and options."""
from __future__ import annotations

import difflib
import inspect
from dataclasses import dataclass, field
from typing import Any, Callable

import torch.nn as nn

__all__ = [
    "ModelEntry",
    "register_model",
    "get_entry",
    "list_models",
    "create_model",
    "UnknownModelError",
    "UnknownOptionError",
]


class UnknownModelError(KeyError):
    """Raised for a model name that is not registered."""

    def __str__(self) -> str:  # KeyError quotes its message; show it plainly
        return str(self.args[0])


class UnknownOptionError(TypeError):
    """Raised for an option a model does not support."""


@dataclass(frozen=True)
class ModelEntry:
    """Everything rtseg knows about one named model variant."""

    name: str
    builder: Callable[..., nn.Module]
    paper: str
    description: str = ""
    defaults: dict[str, Any] = field(default_factory=dict)
    # Parameter count at 19 classes with the defaults; the model tests assert it.
    expected_params: int | None = None
    # Where expected_params comes from (a paper table, an official release, ...).
    params_source: str = ""
    normalization: str = "imagenet"
    tags: tuple[str, ...] = ()

    @property
    def options(self) -> dict[str, Any]:
        """Supported keyword options and their effective defaults (num_classes excluded)."""
        sig = inspect.signature(self.builder)
        opts: dict[str, Any] = {}
        for pname, param in sig.parameters.items():
            if pname == "num_classes" or param.kind in (param.VAR_KEYWORD, param.VAR_POSITIONAL):
                continue
            opts[pname] = self.defaults.get(pname, param.default)
        return opts


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(
    name: str,
    *,
    paper: str,
    description: str = "",
    defaults: dict[str, Any] | None = None,
    expected_params: int | None = None,
    params_source: str = "",
    normalization: str = "imagenet",
    tags: tuple[str, ...] = (),
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator registering a builder ``fn(num_classes, **options) -> nn.Module`` under ``name``.

    A model class is itself a builder: its ``__init__`` parameters are the entry's options, so a network
    whose options are exactly its constructor's is registered as the class, with no forwarding function.

    The same builder may be registered several times with different ``defaults``
    (one entry per paper variant).
    """

    def decorator(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"model name {name!r} is registered twice")
        sig = inspect.signature(fn)
        if "num_classes" not in sig.parameters:
            raise TypeError(f"builder for {name!r} must take a num_classes argument")
        for key in defaults or {}:
            if key not in sig.parameters:
                raise TypeError(f"default {key!r} of {name!r} is not an argument of {fn.__name__}")
        _REGISTRY[name] = ModelEntry(
            name=name,
            builder=fn,
            paper=paper,
            description=description or (inspect.getdoc(fn) or "").split("\n")[0],
            defaults=dict(defaults or {}),
            expected_params=expected_params,
            params_source=params_source,
            normalization=normalization,
            tags=tuple(tags),
        )
        return fn

    return decorator


def _ensure_models_imported() -> None:
    # Importing the package registers every family; done lazily to avoid import cycles.
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


def create_model(name: str, num_classes: int = 19, *, weights: str | None = None, strict: bool = True, **options: Any) -> nn.Module:
    """Build the registered model ``name``.

    ``options`` override the entry's defaults; ``weights`` is a path to a state dict or an
    rtseg checkpoint, loaded with strict key and shape checking (see :func:`rtseg.checkpoint.load_weights`).
    """
    entry = get_entry(name)
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    supported = entry.options
    unknown = [k for k in options if k not in supported]
    if unknown:
        listing = ", ".join(f"{k}={v!r}" for k, v in supported.items()) or "(none)"
        raise UnknownOptionError(
            f"model {name!r} does not support option(s) {', '.join(map(repr, unknown))}; supported options: {listing}"
        )
    kwargs = {**entry.defaults, **options}
    model = entry.builder(num_classes=num_classes, **kwargs)
    # Record how the model was built so checkpoints and exports can rebuild it.
    # pretrained= only initialises (a backbone's ImageNet weights): rebuilding from a checkpoint must not need it.
    model.rtseg_spec = {"name": name, "num_classes": num_classes, "options": {k: v for k, v in options.items() if k != "pretrained"}}
    model.normalization = entry.normalization
    if weights is not None:
        from rtseg.checkpoint import load_weights

        load_weights(model, weights, strict=strict)
    return model
