"""One registry of fusion methods, looked up by name.

A method is one module plus one :func:`register_method` call. Each method declares its
parameters with their defaults, the devices it can run on and the modes it supports, and
provides one ``run`` function that works on float arrays (the dtype round trip, input
checks and device choice are done once, in :func:`napari_mfif.fuse`)::

    run(stack, gray, *, mode, device, progress, keep_weights, **params)
        -> (fused, index_map) or (fused, index_map, weights)

    stack         (Z, Y, X, C) float array, the slices with a channel axis (C >= 1)
    gray          (Z, Y, X) float array, the luminance the focus is judged on
    fused         (Y, X, C) float array
    index_map     (Y, X) float32, the (fractional) slice each pixel came from
    weights       (Z, Y, X) each slice's share of each fused pixel, or None (a method
                  may skip it unless ``keep_weights`` is true, or have none at all)
    progress      callable(done, total) or None; it may raise to cancel the run

A method may also provide ``pair_maps(a, b, *, device, **params) -> (score, decision)``
for two (Y, X) gray slices: ``score`` is its raw judgement in [0, 1] that ``a`` is the
sharper, ``decision`` the final map (1 where ``a`` is taken). The focus-map inspector
shows them.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from ._errors import MfifError

#: the ways a stack of more than two slices is fused
MODES = ("nway", "series")

# modules whose import registers the built-in methods
_BUILTIN_MODULES = ("napari_mfif.focus.classic", "napari_mfif.focus.sml",
                    "napari_mfif.focus.dog", "napari_mfif.fusion.multiscale",
                    "napari_mfif.fusion.cnn_pipeline", "napari_mfif.fusion.cnn_wavelet",
                    "napari_mfif.fusion.focusnet_pipeline")

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
    #: optional ``pair_maps(a, b, *, device, **params) -> (score, decision)``
    pair_maps: Callable[..., Any] | None = None
    #: parameter name -> the values it may take (shown as a menu by the widget)
    param_choices: Mapping[str, tuple] = field(default_factory=dict)
    #: how the method runs tile by tile on images too large for memory (``None``: it
    #: cannot, and the tiled engine refuses it); see :class:`napari_mfif.tiles.Tiling`
    tiling: Any = None
    #: False for methods that fuse in a transform domain (pyramid, wavelet): they have no
    #: per-slice pixel weights to return or to apply to another stack
    pixelwise: bool = True
    #: whether ``device="auto"`` takes CUDA when a GPU is present (False: the method runs
    #: on the GPU only when asked for by ``device="cuda"``)
    auto_cuda: bool = True
    #: whether the method computes in torch on the CPU too (torch then already uses every
    #: core for one call, so tiles are not run in parallel threads on the CPU)
    torch_cpu: bool = False
    #: whether ``run`` takes the stack and its gray image as
    #: :class:`~napari_mfif.stack.LazySlices` (each slice converted when it is read, so no
    #: float copy of the whole stack is made; read ``stack[k]``, ``stack[k, ...]``, never
    #: the whole) when there is no alignment; otherwise, and for every other method, they
    #: are float arrays
    slice_by_slice: bool = False

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
            choices = self.param_choices.get(key)
            if choices is not None:
                if value not in choices:
                    raise MfifError(
                        f"parameter {key!r} of method {self.name!r} must be one of: "
                        f"{', '.join(map(str, choices))}; got {value!r}"
                    )
                resolved[key] = value
                continue
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
#: (dog: free of the brightfield defocus rings that every contrast measure picks, see
#: docs/benchmarks/brightfield.md, within 0.4 dB of sml on the Gaussian-blur sets of
#: docs/benchmarks/quality.md; it was sml, and tenengrad before that)
DEFAULT_METHOD = "dog"
