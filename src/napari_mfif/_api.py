"""The public entry point: :func:`fuse`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from ._device import release, resolve_device
from ._errors import MfifError
from ._memory import check_stack
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
    weights : ndarray of float32, shape (Z, Y, X), or None
        Each slice's share of each fused pixel (the decision maps; they sum to one per
        pixel). Only with ``fuse(..., return_weights=True)``, and only for methods that
        fuse pixel by pixel.
    """

    image: np.ndarray
    index_map: np.ndarray
    method: str
    mode: str
    device: str
    params: dict[str, Any] = field(default_factory=dict)
    weights: np.ndarray | None = None


@dataclass
class PairMaps:
    """What :func:`focus_map` returns for two slices A and B.

    Attributes
    ----------
    score : ndarray of float32, shape (Y, X)
        The method's raw judgement, in [0, 1], that A is the sharper slice there (for the
        CNN: the network's P(A in focus) spread over its 16 x 16 patches; for a classic
        measure: f(A) / (f(A) + f(B))).
    decision : ndarray of float32, shape (Y, X)
        The final decision map after the method's steps: 1 where A is taken, 0 where B is.
    method, device : str
    params : dict
    """

    score: np.ndarray
    decision: np.ndarray
    method: str
    device: str
    params: dict[str, Any] = field(default_factory=dict)


def fuse(
    stack: Any,
    method: str = DEFAULT_METHOD,
    mode: str = "nway",
    device: str = "auto",
    *,
    progress: Callable[[int, int], None] | None = None,
    return_weights: bool = False,
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
        Called as the work advances (per slice or per pair). It may raise
        :class:`~napari_mfif.FusionCancelled` (or any exception) to stop the run.
    return_weights : bool
        Also return each slice's share of each pixel (``FusionResult.weights``).
    **params
        The method's parameters (see ``available_methods()[name].params``).

    Returns
    -------
    FusionResult

    Raises
    ------
    MfifError
        For bad input, with a one-sentence message; also when fusing the stack in memory
        would need more memory than is free (estimated from its shape before anything is
        loaded or converted; see ``docs/api.md``).
    FusionCancelled
        When ``progress`` cancelled the run.
    """
    spec = get_method(method)
    if mode not in MODES:
        raise MfifError(f"unknown mode {mode!r}; choose one of: {', '.join(MODES)}")
    if mode not in spec.modes:
        raise MfifError(
            f"method {method!r} does not support mode {mode!r}; use one of: {', '.join(spec.modes)}"
        )
    resolved = spec.resolve_params(params)
    # before a dask array is computed or a list stacked: a stack that cannot fit in memory
    # is one sentence, not the process killed by the operating system
    check_stack(stack, method, mode, params=resolved, return_weights=return_weights)
    used_device = resolve_device(device, spec.devices, method)
    array = as_stack(stack)
    work, had_channels = with_channel_axis(array)
    try:
        out = spec.run(
            work, luminance(work), mode=mode, device=used_device, progress=progress,
            keep_weights=return_weights, **resolved
        )
    finally:
        release(used_device)
    fused, index_map = out[0], out[1]
    weights = out[2] if len(out) > 2 else None
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
        weights=(np.asarray(weights, dtype=np.float32)
                 if return_weights and weights is not None else None),
    )


def focus_map(
    slice_a: Any,
    slice_b: Any,
    method: str = DEFAULT_METHOD,
    device: str = "auto",
    **params: Any,
) -> PairMaps:
    """How ``method`` judges focus between two slices: its score map and its decision.

    Shows why a region of a fusion came from one slice or the other.

    Parameters
    ----------
    slice_a, slice_b : array-like, shape (Y, X) or (Y, X, C)
        Two slices of one stack (same shape and dtype); focus is judged on luminance.
    method, device, **params
        As for :func:`fuse`.

    Returns
    -------
    PairMaps
    """
    spec = get_method(method)
    if spec.pair_maps is None:
        raise MfifError(f"method {method!r} has no two-slice focus map")
    resolved = spec.resolve_params(params)
    used_device = resolve_device(device, spec.devices, method)
    work, _ = with_channel_axis(as_stack([slice_a, slice_b]))
    gray = luminance(work)
    try:
        score, decision = spec.pair_maps(gray[0], gray[1], device=used_device, **resolved)
    finally:
        release(used_device)
    return PairMaps(score=np.asarray(score, np.float32), decision=np.asarray(decision, np.float32),
                    method=method, device=used_device, params=resolved)
