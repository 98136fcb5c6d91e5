"""napari-mfif: multi-focus image fusion for microscope focal stacks.

Fuse a focal stack (z-stack) into one all-in-focus image and a height map::

    import napari_mfif as mf
    res = mf.fuse(stack, method="tenengrad", mode="nway")
    res.image      # (Y, X[, C]), same dtype as the input
    res.index_map  # (Y, X) float32, the (fractional) slice each pixel came from

Importing this package is cheap: it imports neither torch, Qt nor napari. The public
names below are loaded on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

# public name -> module that defines it (loaded lazily, see __getattr__)
_LAZY = {
    "fuse": "napari_mfif._api",
    "FusionResult": "napari_mfif._api",
    "focus_map": "napari_mfif._api",
    "apply_fusion": "napari_mfif._api",
    "PairMaps": "napari_mfif._api",
    "MfifError": "napari_mfif._errors",
    "FusionCancelled": "napari_mfif._errors",
    "available_methods": "napari_mfif.registry",
    "get_method": "napari_mfif.registry",
    "register_method": "napari_mfif.registry",
    "Method": "napari_mfif.registry",
    "read_stack": "napari_mfif.io",
    "write_image": "napari_mfif.io",
    "focal_stack": "napari_mfif.synthetic",
    "sample_stack": "napari_mfif.synthetic",
}

__all__ = ["__version__", *_LAZY]

if TYPE_CHECKING:  # pragma: no cover - for static type checkers only
    from ._api import FusionResult, PairMaps, apply_fusion, focus_map, fuse
    from ._errors import FusionCancelled, MfifError
    from .io import read_stack, write_image
    from .registry import Method, available_methods, get_method, register_method
    from .synthetic import focal_stack, sample_stack


def __getattr__(name: str):
    try:
        module = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'napari_mfif' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(__all__)
