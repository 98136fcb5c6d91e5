"""The public entry point: :func:`fuse`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from ._device import resolve_device
from ._errors import MfifError
from .registry import DEFAULT_METHOD, MODES, get_method
from .stack import as_stack, luminance, to_dtype, with_channel_axis


@dataclass
class FusionResult:
    """What :func:`fuse` returns.

    Attributes
    ----------
    image : ndarray, shape (Y, X) or (Y, X, C)
        The all-in-focus image, same dtype as the input stack.
    index_map : ndarray of float32, shape (Y, X)
        Per pixel, the (fractional) slice the fused value came from: the height map in
        slice units (0 = first slice).
    method, mode, device : str
        What was run, and on which device.
    params : dict
        The method's parameters as used (defaults filled in).
    """

    image: np.ndarray
    index_map: np.ndarray
    method: str
    mode: str
    device: str
    params: dict[str, Any] = field(default_factory=dict)


def fuse(
    stack: Any,
    method: str = DEFAULT_METHOD,
    mode: str = "nway",
    device: str = "auto",
    *,
    progress: Callable[[int, int], None] | None = None,
    **params: Any,
) -> FusionResult:
    """Fuse a focal stack into one all-in-focus image and a height map.

    Parameters
    ----------
    stack : array-like, shape (Z, Y, X) or (Z, Y, X, C), or list of (Y, X[, C]) arrays
        The slices in focus order. numpy or dask arrays (a dask array is computed), or a
        list of 2-D / colour images of one shape and dtype. Supported dtypes: uint8,
        uint16, float32 (and other integer / float types); the output keeps the dtype.
    method : str
        A name from :func:`napari_mfif.available_methods` (default ``"tenengrad"``).
    mode : {"nway", "series"}
        ``"nway"`` judges all slices at once; ``"series"`` fuses them two at a time in
        order, as the papers do for more than two images.
    device : {"auto", "cpu", "cuda"}
        Where to compute. ``"auto"`` takes a CUDA GPU when the method can use one.
    progress : callable(done, total), optional
        Called as the work advances.
    **params
        The method's parameters (see ``available_methods()[name].params``).

    Returns
    -------
    FusionResult

    Raises
    ------
    MfifError
        For bad input, with a one-sentence message.
    """
    spec = get_method(method)
    if mode not in MODES:
        raise MfifError(f"unknown mode {mode!r}; choose one of: {', '.join(MODES)}")
    if mode not in spec.modes:
        raise MfifError(
            f"method {method!r} does not support mode {mode!r}; use one of: {', '.join(spec.modes)}"
        )
    resolved = spec.resolve_params(params)
    used_device = resolve_device(device, spec.devices, method)
    array = as_stack(stack)
    work, had_channels = with_channel_axis(array)
    fused, index_map = spec.run(
        work, luminance(work), mode=mode, device=used_device, progress=progress, **resolved
    )
    image = to_dtype(fused, array.dtype)
    if not had_channels:
        image = image[..., 0]
    return FusionResult(
        image=image,
        index_map=np.asarray(index_map, dtype=np.float32),
        method=method,
        mode=mode,
        device=used_device,
        params=resolved,
    )
