"""One registry of fusion methods, looked up by name.

A method is one module plus one :func:`register_method` call. Each method declares its
parameters with their defaults, the devices it can run on and the modes it supports, and
provides one ``run`` function that works on float arrays (the dtype round trip, input
checks and device choice are done once, in :func:`napari_mfif.fuse`)::

    run(stack, gray, *, mode, device, progress, **params) -> (fused, index_map)

    stack      (Z, Y, X, C) float array, the slices with a channel axis (C >= 1)
    gray       (Z, Y, X) float array, the luminance the focus is judged on
    fused      (Y, X, C) float array
    index_map  (Y, X) float32, the (fractional) slice each pixel came from
    progress   callable(done, total) or None
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from ._errors import MfifError

#: the ways a stack of more than two slices is fused
MODES = ("nway", "series")

# modules whose import registers the built-in methods
_BUILTIN_MODULES = ("napari_mfif.focus.classic", "napari_mfif.fusion.cnn_pipeline")

_REGISTRY: dict[str, "Method"] = {}
_builtins_loaded = False


@dataclass(frozen=True)
class Method:
    """A fusion method: a name, what it does, its parameters and its implementation."""

    name: str
    summary: str
    run: Callable[..., Any]
    params: Mapping[str, Any] = field(default_factory=dict)
    #: parameter name -> one-line meaning (shown by ``napari-mfif methods`` and the widget)
    param_help: Mapping[str, str] = field(default_factory=dict)
    devices: tuple[str, ...] = ("cpu",)
    modes: tuple[str, ...] = MODES

    def resolve_params(self, given: Mapping[str, Any]) -> dict[str, Any]:
        """The method's defaults updated with ``given``; unknown names are an error."""
        unknown = sorted(set(given) - set(self.params))
        if unknown:
            known = ", ".join(self.params) or "none"
            raise MfifError(
                f"method {self.name!r} has no parameter {unknown[0]!r}; its parameters are: {known}"
            )
        resolved = dict(self.params)
        for key, value in given.items():
            default = self.params[key]
            if isinstance(default, bool) or not isinstance(default, (int, float)):
                resolved[key] = value
                continue
            try:
                number = float(value)
            except (TypeError, ValueError):
                raise MfifError(
                    f"parameter {key!r} of method {self.name!r} must be a number, got {value!r}"
                ) from None
            if number < 0 or number != number:
                raise MfifError(
                    f"parameter {key!r} of method {self.name!r} must be >= 0, got {value!r}"
                )
            if isinstance(default, int) and number != int(number):
                raise MfifError(
                    f"parameter {key!r} of method {self.name!r} must be a whole number, got {value!r}"
                )
            resolved[key] = type(default)(number)
        return resolved


def register_method(method: Method, *, replace: bool = False) -> Method:
    """Add ``method`` to the registry (``replace=True`` to override a name)."""
    if method.name in _REGISTRY and not replace:
        raise ValueError(f"a method named {method.name!r} is already registered")
    bad = sorted(set(method.modes) - set(MODES))
    if bad:
        raise ValueError(f"method {method.name!r} declares unknown modes {bad}")
    _REGISTRY[method.name] = method
    return method


def _load_builtins() -> None:
    global _builtins_loaded
    if not _builtins_loaded:
        _builtins_loaded = True
        for module in _BUILTIN_MODULES:
            importlib.import_module(module)


def available_methods() -> dict[str, Method]:
    """All registered methods by name, in registration order."""
    _load_builtins()
    return dict(_REGISTRY)


def get_method(name: str) -> Method:
    """The method called ``name``; an unknown name is a :class:`MfifError`."""
    _load_builtins()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise MfifError(
            f"unknown method {name!r}; choose one of: {', '.join(_REGISTRY)}"
        ) from None


#: the method used when none is named
DEFAULT_METHOD = "tenengrad"
