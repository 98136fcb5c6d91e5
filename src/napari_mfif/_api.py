"""The public entry point: :func:`fuse`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from ._device import release, resolve_device
from ._errors import MfifError
from ._memory import check_stack
from .registry import DEFAULT_METHOD, MODES, get_method
from .stack import (as_stack, blend_with, channels_last, check_slice_size, check_z_layout,
                    focus_gray, lazy_stack, luminance, to_dtype, with_channel_axis, z_first)


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
        fuse pixel by pixel. :func:`apply_fusion` applies them to another stack.
    alignment : AlignResult or None
        With ``fuse(..., align=...)``: the estimated shifts (and scales) per slice and the
        frame of the result (``alignment.box`` in the input's pixels; ``alignment.report()``
        as text). For a time series, a list with one per time point.
    tiles : TiledRun or None
        When the stack was fused tile by tile: the tile plan (tile size, overlap, number of
        tiles), the number of passes and workers (:class:`napari_mfif.tiles.TiledRun`).

    With ``time_axis``, ``image``, ``index_map`` and ``weights`` gain a leading time axis.
    """

    image: np.ndarray
    index_map: np.ndarray
    method: str
    mode: str
    device: str
    params: dict[str, Any] = field(default_factory=dict)
    weights: np.ndarray | None = None
    alignment: Any = None
    tiles: Any = None


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
    channel_axis: int | None = None,
    focus_channel: Any = None,
    time_axis: int | None = None,
    z_axis: int | None = None,
    align: str | None = None,
    align_frame: str = "crop",
    tile_size: int | None = None,
    overlap: int | None = None,
    **params: Any,
) -> FusionResult:
    """Fuse a focal stack into one all-in-focus image and a height map.

    Parameters
    ----------
    stack : array-like, shape (Z, Y, X) or (Z, Y, X, C), or list of (Y, X[, C]) arrays
        The slices in focus order. numpy or dask arrays, a lazy TIFF stack
        (:class:`napari_mfif.slide_io.TiffStackSource`, always fused tile by tile), or a
        list of 2-D / colour images of one shape and dtype. Supported dtypes: uint8,
        uint16, float32 (and other integer / float types); the output keeps the dtype.
    method : str
        A name from :func:`napari_mfif.available_methods` (default ``"dog"``).
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
    channel_axis : int, optional
        The axis of a 4-D stack that holds channels, e.g. 1 for (Z, C, Y, X); by default a
        4-D stack is (Z, Y, X, C). The slices are the first axis that is neither time nor
        channels.
    focus_channel : int or sequence of float, optional
        What focus is judged on: a channel number (e.g. DAPI or brightfield), or one
        non-negative weight per channel; by default the luminance (RGB) or the mean of
        the channels. The decision is applied to every channel, so they stay registered.
    time_axis : int, optional
        The axis of a time series (e.g. 0 for (T, Z, Y, X)); each time point is fused on
        its own and the results are stacked along a leading time axis. ``channel_axis``
        then counts axes of the whole array.
    z_axis : int, optional
        The axis that holds the slices, e.g. 2 for a (Y, X, Z) stack; ``channel_axis`` and
        ``time_axis`` count axes of the array as given. By default the slices are the
        first axis that is neither time nor channels, and a 3-D stack whose last axis
        looks like z (longer than 4 and much shorter than the others, such as 256 x 256 x
        10) is refused rather than fused along the wrong axis.
    align : {None, "translation", "similarity"}
        Register the slices before fusing (off by default): shifts by cross-correlation,
        or also a scale change (focus breathing); one transform set for all channels.
        The result is in the reference (middle) slice's frame, cropped to the region every
        slice covers unless ``align_frame="pad"``; see :mod:`napari_mfif.align`.
    align_frame : {"crop", "pad"}
        How an aligned result is framed.
    tile_size : int, optional
        Fuse tile by tile, in windows of ``tile_size`` px (rounded up to a multiple of 64)
        plus ``overlap`` on each side, so the stack is never in memory at once (a dask array
        or lazy TIFF is read window by window; runs on a dask.distributed cluster when a
        client is active). By default a large stack is tiled with tiles of 1024 px: one
        whose whole-image fusion would take more than 1.5 GiB or half the free memory
        (estimated; ``napari_mfif._memory.tiles_pay``), or that would not fit at all; any
        other is fused whole. ``tile_size=0`` fuses the whole image in memory whatever its
        size (an error if it does not fit). The result is the same as whole-image fusion
        (bit for bit for the classic methods; see ``docs/slides.md``).
    overlap : int, optional
        Pixels of context around each tile; default: the method's reach (the result then
        matches whole-image fusion). Setting it implies tiles.
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
    if z_axis is None and channel_axis is None and time_axis is None \
            and not isinstance(stack, (list, tuple)) and hasattr(stack, "shape"):
        check_z_layout(tuple(stack.shape))  # (Y, X, Z) fused as (Z, Y, X) would be wrong
    stack, channel_axis, time_axis = z_first(stack, z_axis, channel_axis, time_axis)
    if time_axis is not None:
        return _fuse_over_time(stack, time_axis, channel_axis, dict(
            method=method, mode=mode, device=device, progress=progress,
            return_weights=return_weights, focus_channel=focus_channel, align=align,
            align_frame=align_frame, **resolved))
    stack = channels_last(stack, channel_axis)
    whole = tile_size == 0 and not isinstance(tile_size, bool)  # asked: no tiles
    if whole:
        tile_size = None
    if tile_size is None and overlap is None and not _is_source(stack) and not whole:
        try:
            check_stack(stack, method, mode, params=resolved, return_weights=return_weights)
        except MfifError:
            if (spec.tiling is None or align is not None or return_weights
                    or isinstance(stack, (list, tuple))):
                raise
            from .tiles import DEFAULT_TILE

            tile_size = DEFAULT_TILE  # too large for memory: tile by tile
        if tile_size is None and _tiles_pay(stack, spec, mode, resolved, align,
                                            return_weights):
            from .tiles import DEFAULT_TILE

            tile_size = DEFAULT_TILE  # large: tiles hold a fraction of the memory
    if tile_size is not None or overlap is not None or _is_source(stack):
        return _fuse_tiles(stack, spec, mode, device, resolved, tile_size=tile_size,
                           overlap=overlap, progress=progress, focus_channel=focus_channel,
                           return_weights=return_weights, align=align)
    if align is not None and isinstance(stack, (list, tuple)) and _sizes_differ(stack):
        from .align import common_frame

        stack = common_frame(stack, rule=align_frame)[0]  # centred; crop or pad, then aligned
    # before a dask array is computed or a list stacked: a stack that cannot fit in memory
    # is one sentence, not the process killed by the operating system
    check_stack(stack, method, mode, params=resolved, return_weights=return_weights)
    used_device = resolve_device(device, spec.devices, method, auto_cuda=spec.auto_cuda)
    array = as_stack(stack)
    check_slice_size(array.shape)
    if spec.slice_by_slice and align is None:
        work, gray, had_channels = lazy_stack(array, focus_channel)  # no float copy
    else:
        work, had_channels = with_channel_axis(array)
        gray = focus_gray(work, focus_channel)
    alignment = None
    if align is not None:
        from .align import align_stack

        alignment = align_stack(work, gray, mode=align, frame=align_frame, progress=progress)
        work = alignment.stack.reshape(alignment.stack.shape[:3] + (work.shape[-1],))
        # align_stack already gives the luminance of the aligned slices
        gray = alignment.gray if focus_channel is None else focus_gray(work, focus_channel)
    try:
        out = spec.run(
            work, gray, mode=mode, device=used_device, progress=progress,
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
        alignment=alignment,
    )


def _tiles_pay(stack: Any, spec, mode: str, resolved: dict, align, return_weights) -> bool:
    """Whether a stack that fits in memory is still large enough to go tile by tile
    (:func:`napari_mfif._memory.tiles_pay`: its fusion would hold well over 1 GiB), where
    it can: a method that tiles, one array, no alignment, no weights returned."""
    from ._memory import tiles_pay

    if (spec.tiling is None or align is not None or return_weights
            or isinstance(stack, (list, tuple)) or not hasattr(stack, "shape")):
        return False
    try:
        shape, dtype = tuple(int(n) for n in stack.shape), np.dtype(stack.dtype)
    except (TypeError, ValueError, OverflowError):
        return False
    if len(shape) not in (3, 4) or min(shape) < 1 or dtype.kind not in "uif":
        return False
    return tiles_pay(shape, dtype, spec.name, mode, params=resolved,
                     in_memory=isinstance(stack, np.ndarray))


def _is_source(stack: Any) -> bool:
    """A lazy stack on disk (e.g. a TiffStackSource), which is only ever read by tiles."""
    return hasattr(stack, "read") and hasattr(stack, "shape") and not isinstance(stack, np.ndarray)


def _fuse_tiles(stack: Any, spec, mode: str, device: str, resolved: dict, *, tile_size,
                overlap, progress, focus_channel, return_weights: bool, align) -> FusionResult:
    """:func:`fuse` tile by tile (see :mod:`napari_mfif.tiles`); the result in memory."""
    from .stack import _check_dtype, _check_shape
    from .tiles import DEFAULT_TILE, as_dask, check_tile_size, run_tiles, tileable

    tileable(spec)
    if align is not None:
        raise MfifError("align needs the whole stack in memory; it cannot run tile by tile "
                        "(align a crop, or fuse without tile_size)")
    if return_weights:
        raise MfifError("return_weights is not available tile by tile (the weights are as "
                        "large as the stack); fuse without tile_size to get them")
    if isinstance(stack, (list, tuple)):
        stack = as_stack(stack)
    if not hasattr(stack, "shape") or not hasattr(stack, "dtype"):
        as_stack(stack)  # says what is wrong with it
    shape = tuple(int(s) for s in stack.shape)
    _check_shape(shape)
    check_slice_size(shape)
    dtype = np.dtype(stack.dtype)
    _check_dtype(dtype, "the stack")
    if overlap is not None:
        try:
            ok = int(overlap) == overlap and overlap >= 0
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise MfifError(f"overlap must be a whole number of pixels >= 0, got {overlap!r}")
    tile = check_tile_size(DEFAULT_TILE if tile_size is None else tile_size)
    if spec.name == "cnn":
        from .fusion.cnn_pipeline import check_size

        check_size(*shape[1:3])
    used_device = resolve_device(device, spec.devices, spec.name, auto_cuda=spec.auto_cuda)
    array = as_dask(stack, tile)
    image = np.empty(shape[1:], dtype=dtype)
    height = np.empty(shape[1:3], dtype=np.float32)

    def on_band(y0: int, part: np.ndarray, index: np.ndarray) -> None:
        image[y0:y0 + part.shape[0]] = part
        height[y0:y0 + index.shape[0]] = index

    try:
        run = run_tiles(array, spec.name, mode, used_device, resolved, tile=tile,
                        overlap=overlap, focus_channel=focus_channel, dtype=dtype,
                        on_band=on_band, progress=progress)
    finally:
        release(used_device)
    return FusionResult(image=image, index_map=height, method=spec.name, mode=mode,
                        device=used_device, params=resolved, tiles=run)


def _sizes_differ(slices: Any) -> bool:
    shapes = {tuple(getattr(s, "shape", ())) for s in slices}
    return len(shapes) > 1 and all(len(shape) in (2, 3) for shape in shapes)


def _fuse_over_time(stack: Any, time_axis: int, channel_axis: int | None,
                    kwargs: dict[str, Any]) -> FusionResult:
    """Fuse each time point of a time series on its own; stack the results."""
    ndim = getattr(stack, "ndim", None)
    if ndim not in (4, 5):
        raise MfifError(
            "time_axis needs one array of shape (T, Z, Y, X) or (T, Z, Y, X, C) (axes in any "
            f"order); got {'a list' if ndim is None else f'{ndim} dimensions'}"
        )
    if not isinstance(time_axis, (int, np.integer)) or not -ndim <= time_axis < ndim:
        raise MfifError(f"time_axis {time_axis!r} does not exist in a {ndim}-D stack")
    t_axis = time_axis % ndim
    c_axis = None
    if channel_axis is not None:
        if not isinstance(channel_axis, (int, np.integer)) or not -ndim <= channel_axis < ndim:
            raise MfifError(f"channel_axis {channel_axis!r} does not exist in a {ndim}-D stack")
        c_axis = channel_axis % ndim
        if c_axis == t_axis:
            raise MfifError("time_axis and channel_axis name the same axis")
        c_axis = c_axis if c_axis < t_axis else c_axis - 1  # within one time point
    series = np.moveaxis(stack, t_axis, 0)
    n = series.shape[0]
    outer = kwargs.pop("progress")
    results = []
    for t in range(n):
        def progress(done, total, t=t):
            if outer is not None:
                outer(t * total + done, n * total)
        results.append(fuse(series[t], channel_axis=c_axis, progress=progress, **kwargs))
    first = results[0]
    weights = [r.weights for r in results]
    return FusionResult(
        image=np.stack([r.image for r in results]),
        index_map=np.stack([r.index_map for r in results]),
        method=first.method, mode=first.mode, device=first.device, params=first.params,
        weights=None if weights[0] is None else np.stack(weights),
        alignment=None if first.alignment is None else [r.alignment for r in results],
    )


def apply_fusion(stack: Any, result: FusionResult, *, channel_axis: int | None = None) -> np.ndarray:
    """Fuse another stack with the decision of an earlier fusion.

    For a channel or layer that was not part of ``result``'s stack (another fluorescence
    channel, a brightfield image of the same field): the same slices' shares are applied
    pixel by pixel (after the same alignment, if ``result`` was aligned), so the two
    results stay registered.

    Parameters
    ----------
    stack : array-like, shape (Z, Y, X) or (Z, Y, X, C)
        The same slices (Z, Y, X) as the stack ``result`` came from; any channels.
    result : FusionResult
        From ``fuse(..., return_weights=True)`` (not a time series).
    channel_axis : int, optional
        As for :func:`fuse`.

    Returns
    -------
    ndarray
        (Y, X) or (Y, X, C), the dtype of ``stack``.
    """
    if result.weights is None:
        if not get_method(result.method).pixelwise:
            raise MfifError(
                f"method {result.method!r} fuses in a transform domain and has no per-pixel "
                "weights to apply; fuse the other stack on its own, or use a method that fuses "
                "pixel by pixel (tenengrad, variance, sml, cnn)")
        raise MfifError("apply_fusion needs the result's weights; fuse with return_weights=True")
    if result.weights.ndim != 3:
        raise MfifError("apply_fusion takes one time point; apply it to each time point's result")
    array = as_stack(channels_last(stack, channel_axis))
    work, had_channels = with_channel_axis(array)
    if result.alignment is not None:
        from .align import apply_transforms

        a = result.alignment
        if work.shape[:3] != a.valid.shape[:1] + work.shape[1:3] or len(a.transforms) != len(work):
            raise MfifError(
                f"this stack has {len(work)} slices but the fusion had {len(a.transforms)}"
            )
        work = apply_transforms(work, a.transforms, frame=a.frame,
                                order=a.params.get("order", 3))[0]
        work = work.reshape(work.shape[:3] + (array.shape[-1] if had_channels else 1,))
    if tuple(work.shape[:3]) != tuple(result.weights.shape):
        raise MfifError(
            f"this stack's slices are {tuple(work.shape[:3])} (Z, Y, X) but the fusion's weights "
            f"are {tuple(result.weights.shape)}; apply a fusion to a stack of the same shape"
        )
    image = blend_with(work, result.weights, array.dtype)
    return image if had_channels else image[..., 0]


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
    used_device = resolve_device(device, spec.devices, method, auto_cuda=spec.auto_cuda)
    work, _ = with_channel_axis(as_stack([slice_a, slice_b]))
    gray = luminance(work)
    try:
        score, decision = spec.pair_maps(gray[0], gray[1], device=used_device, **resolved)
    finally:
        release(used_device)
    return PairMaps(score=np.asarray(score, np.float32), decision=np.asarray(decision, np.float32),
                    method=method, device=used_device, params=resolved)
