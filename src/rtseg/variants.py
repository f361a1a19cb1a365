"""The table of model variants and how a model file fills it: each model file declares its variants in one
table (as timm's ``default_cfgs``), name -> :class:`Variant`, registered with :func:`register_variants`.

This module imports no model: the model files import it, and :mod:`rtseg.registry` (which imports them all)
looks names up and builds. Options with a fixed set of values are typed ``Literal[...]`` in the builder's
signature; :func:`check_options` checks them.
"""
from __future__ import annotations

import inspect
import math
import os
import types
import typing
from dataclasses import dataclass, field
from typing import Annotated, Any, Callable, Literal, Mapping

import torch.nn as nn

from rtseg.errors import UserError

__all__ = [
    "ModelEntry",
    "Variant",
    "OptionSpec",
    "register_model",
    "register_variants",
    "check_options",
    "UnknownModelError",
    "UnknownOptionError",
    "InvalidOptionError",
    "Range",
    "Count",
    "Dilation",
    "Kernel",
    "Groups",
    "Channels",
    "Probability",
]


class UnknownModelError(UserError, KeyError):
    """Raised for a model name that is not registered."""

    def __str__(self) -> str:  # KeyError quotes its message; show it plainly
        return str(self.args[0])


class UnknownOptionError(UserError, TypeError):
    """Raised for an option a model does not support."""


class InvalidOptionError(UserError, ValueError):
    """Raised for an option value outside the choices its ``Literal[...]`` annotation allows."""


@dataclass(frozen=True)
class Range:
    """Inclusive bounds of a numeric option, attached with ``typing.Annotated`` (``Annotated[int, Range(1, 64)]``);
    in ``tuple[X, ...]`` they bound each element. A card or config is input anybody can write: ``stage3_modules:
    1000000000`` must stop at the check, not when memory runs out."""

    low: float
    high: float

    def __repr__(self) -> str:
        return f"Range({self.low}, {self.high})"


# The option kinds the model files use. The upper bounds are far above any paper's value and keep a build finite.
Count = Annotated[int, Range(1, 64)]  # repeated blocks or layers (ESPNet's p, q; FPLNet's stage modules)
Dilation = Annotated[int, Range(1, 256)]  # dilation rates (FPL module, ASPP branches)
Kernel = Annotated[int, Range(1, 15)]  # kernel sizes
Groups = Annotated[int, Range(1, 256)]  # convolution groups
Channels = Annotated[int, Range(1, 4096)]  # channel counts
Probability = Annotated[float, Range(0.0, 1.0)]  # dropout rates


@dataclass(frozen=True)
class OptionSpec:
    """One keyword option of a registered model: its default, the values it allows (``choices``: ``None`` when
    not a fixed set) and its annotation as written in the builder's signature."""

    name: str
    default: Any
    choices: tuple[Any, ...] | None
    annotation: str

    def describe(self) -> str:
        """``name=default`` followed by the allowed values, e.g. ``decoder='deconv' (one of 'deconv', 'ppm')``."""
        text = f"{self.name}={self.default!r}"
        return text + (f" (one of {', '.join(map(repr, self.choices))})" if self.choices else f" ({self.annotation})" if self.annotation else "")


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

    @property
    def option_specs(self) -> list[OptionSpec]:
        """The options with their defaults and allowed values, in signature order."""
        hints = _type_hints(self.builder, extras=True)
        return [OptionSpec(k, v, _choices(hints.get(k)), _annotation_text(hints[k]) if k in hints else "") for k, v in self.options.items()]


def _type_hints(builder: Callable, extras: bool = False) -> dict[str, Any]:
    # A class's options are its constructor's; string annotations (PEP 563) resolve in the defining module.
    return typing.get_type_hints(builder.__init__ if isinstance(builder, type) else builder, include_extras=extras)


def _annotation_text(annotation: Any) -> str:
    """An option's type as a reader wants it: ``int 1..64``, ``tuple[int 1..256, ...]``, ``str | None``."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is Annotated:
        ranges = [a for a in args[1:] if isinstance(a, Range)]
        return _annotation_text(args[0]) + (f" {ranges[0].low:g}..{ranges[0].high:g}" if ranges else "")
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_annotation_text(a) for a in args)
    if origin is Literal:
        return "Literal[" + ", ".join(map(repr, args)) + "]"
    if origin is tuple:
        return "tuple[" + ", ".join("..." if a is Ellipsis else _annotation_text(a) for a in args) + "]"
    if annotation is type(None):
        return "None"
    return _type_name(annotation)


def _type_name(annotation: Any) -> str:
    return "" if annotation is inspect.Parameter.empty else getattr(annotation, "__name__", str(annotation))


def _union_args(annotation: Any) -> tuple[Any, ...]:
    if typing.get_origin(annotation) is Annotated:
        annotation = typing.get_args(annotation)[0]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return typing.get_args(annotation)
    return (annotation,)


def _choices(annotation: Any) -> tuple[Any, ...] | None:
    """The values of the ``Literal`` members of ``annotation`` (with ``None`` when optional); ``None`` if it has none."""
    literals: list[Any] = []
    for member in _union_args(annotation):
        if typing.get_origin(member) is Literal:
            literals.extend(typing.get_args(member))
    if not literals:
        return None
    return tuple(literals) + ((None,) if type(None) in _union_args(annotation) else ())


def check_options(name: str, builder: Callable, options: Mapping[str, Any]) -> None:
    """Raise :class:`InvalidOptionError` for an option whose value its annotation does not allow: a ``Literal[...]``
    choice, a type (``int``, ``float``, ``bool``, ``str``, ``tuple[int, ...]``, unions with ``None``) or a
    :class:`Range`, checked before anything is built."""
    hints = _type_hints(builder, extras=True)
    for key, value in options.items():
        annotation = hints.get(key)
        if annotation is None:
            continue
        problem = _mismatch(annotation, value)
        if problem is None:
            continue
        if _choices(annotation) is not None:
            others = [_describe(m) for m in _union_args(annotation) if typing.get_origin(m) is not Literal and m is not type(None)]
            allowed = ", ".join([repr(c) for c in _choices(annotation)] + [f"or {t}" for t in others])
            raise InvalidOptionError(f"model {name!r}: {key} must be one of {allowed}; got {value!r:.200}")
        raise InvalidOptionError(f"model {name!r}: {key} must be {problem}; got {value!r:.200}")


def _describe(annotation: Any) -> str:
    """What an annotation allows, in words: ``an integer 1..64``, ``a list of integers 1..256``."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is Annotated:
        base, ranges = args[0], [a for a in args[1:] if isinstance(a, Range)]
        text = _describe(base)
        return f"{text} {ranges[0].low:g}..{ranges[0].high:g}" if ranges else text
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in args)
    if origin is Literal:
        return "one of " + ", ".join(map(repr, args))
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a non-empty list, each {_describe(args[0])}"
        return f"a list of {len(args)} values ({', '.join(_describe(a) for a in args)})"
    return {type(None): "null", bool: "true or false", int: "an integer", float: "a number", str: "text"}.get(annotation, _type_name(annotation))


def _mismatch(annotation: Any, value: Any) -> str | None:
    """None when ``value`` fits ``annotation``, else what the annotation allows (for the message)."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is Annotated:
        if _mismatch(args[0], value) is not None:
            return _describe(annotation)
        for r in (a for a in args[1:] if isinstance(a, Range)):
            if not (r.low <= value <= r.high):
                return _describe(annotation)
        return None
    if origin in (typing.Union, types.UnionType):
        return None if any(_mismatch(a, value) is None for a in args) else _describe(annotation)
    if origin is Literal:
        return None if any(value == c and type(value) is type(c) for c in args) else _describe(annotation)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            return _describe(annotation)
        if len(args) == 2 and args[1] is Ellipsis:
            ok = len(value) > 0 and all(_mismatch(args[0], v) is None for v in value)
        else:
            ok = len(value) == len(args) and all(_mismatch(a, v) is None for a, v in zip(args, value))
        return None if ok else _describe(annotation)
    if annotation is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        return None if ok else _describe(annotation)
    if annotation is int:
        return None if isinstance(value, int) and not isinstance(value, bool) else _describe(annotation)
    if annotation is type(None):
        return None if value is None else "null"
    if annotation is os.PathLike:
        return None if isinstance(value, os.PathLike) else "a path"
    if isinstance(annotation, type):
        return None if isinstance(value, annotation) else _describe(annotation)
    return None  # an annotation this checker does not know: the builder checks it


@dataclass(frozen=True)
class Variant:
    """One row of a model file's variant table: the builder (usually the model class), the options it is built
    with, the parameter count at 19 classes (the model tests assert it) and where that figure comes from."""

    builder: Callable[..., nn.Module]
    defaults: Mapping[str, Any] = field(default_factory=dict)
    expected_params: int | None = None
    params_source: str = ""
    description: str = ""
    normalization: str = "imagenet"


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
        )
        return fn

    return decorator


def register_variants(paper: str, table: Mapping[str, Variant]) -> None:
    """Register every row of a model file's variant table under its name."""
    for name, v in table.items():
        register_model(name, paper=paper, description=v.description, defaults=dict(v.defaults), expected_params=v.expected_params,
                       params_source=v.params_source, normalization=v.normalization)(v.builder)
