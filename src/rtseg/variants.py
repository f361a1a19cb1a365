"""The table of model variants and how a model file fills it: each model file declares its variants in one
table (as timm's ``default_cfgs``), name -> :class:`Variant`, registered with :func:`register_variants`.

This module imports no model: the model files import it, and :mod:`rtseg.registry` (which imports them all)
looks names up and builds. Options with a fixed set of values are typed ``Literal[...]`` in the builder's
signature; :func:`check_options` checks them.
"""
from __future__ import annotations

import inspect
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Mapping

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
        hints = _type_hints(self.builder)
        raw = {k: p.annotation for k, p in inspect.signature(self.builder).parameters.items()}
        return [OptionSpec(k, v, _choices(hints.get(k)), raw[k] if isinstance(raw[k], str) else _type_name(raw[k]))
                for k, v in self.options.items()]


def _type_hints(builder: Callable) -> dict[str, Any]:
    # A class's options are its constructor's; string annotations (PEP 563) resolve in the defining module.
    return typing.get_type_hints(builder.__init__ if isinstance(builder, type) else builder)


def _type_name(annotation: Any) -> str:
    return "" if annotation is inspect.Parameter.empty else getattr(annotation, "__name__", str(annotation))


def _union_args(annotation: Any) -> tuple[Any, ...]:
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


def _allows(annotation: Any, value: Any) -> bool:
    """Whether ``value`` fits a ``Literal`` annotation or a union of literals, ``None`` and plain classes."""
    for member in _union_args(annotation):
        if typing.get_origin(member) is Literal:
            if any(value == c and type(value) is type(c) for c in typing.get_args(member)):
                return True
        elif member is type(None):
            if value is None:
                return True
        elif isinstance(member, type) and isinstance(value, member) and not (member is int and isinstance(value, bool)):
            return True
    return False


def check_options(name: str, builder: Callable, options: Mapping[str, Any]) -> None:
    """Raise :class:`InvalidOptionError` for an option whose value its ``Literal[...]`` annotation does not allow."""
    hints = _type_hints(builder)
    for key, value in options.items():
        annotation = hints.get(key)
        if _choices(annotation) is None or _allows(annotation, value):
            continue
        others = [_type_name(m) for m in _union_args(annotation) if typing.get_origin(m) is not Literal and m is not type(None)]
        allowed = ", ".join([repr(c) for c in _choices(annotation)] + [f"any {t}" for t in others])
        raise InvalidOptionError(f"model {name!r}: {key} must be one of {allowed}; got {value!r}")


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
