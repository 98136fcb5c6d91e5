"""Focal-stack plumbing shared by every method: input checks, luminance, dtype round trip,
and the two ways of fusing many slices from per-slice focus maps (N-way and in series)."""

from __future__ import annotations

import os
import threading
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import numpy as np
from scipy import ndimage as ndi

from ._errors import MfifError
from ._view import View
from .focus._ops import TRUNCATE, radius

#: the most channels accepted on the last axis of a (Z, Y, X, C) stack
MAX_CHANNELS = 16

# Rec. 601 luma weights, as the MFIF reference code converts colour to gray
_LUMA = np.array([0.2989, 0.5870, 0.1140], dtype=np.float32)

Progress = Callable[[int, int], None] | None

#: the most threads the per-slice steps of one whole-image fusion use (each thread holds one
#: slice's temporaries; see :func:`slice_threads`)
MAX_SLICE_THREADS = 4

_serial = threading.local()


def slice_threads() -> int:
    """How many threads the per-slice steps of a fusion may use: the cores this process may
    run on, at most :data:`MAX_SLICE_THREADS`; 1 inside :func:`one_thread` (the windows of a
    tiled run are already fused in parallel). scipy.ndimage's filters release the GIL, so
    two slices filter at once on two cores."""
    if getattr(_serial, "on", False):
        return 1
    return max(1, min(MAX_SLICE_THREADS, available_cores()))


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity, on Linux), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


@contextmanager
def one_thread() -> Iterator[None]:
    """Within this block (in this thread), :func:`slice_threads` is 1."""
    was = getattr(_serial, "on", False)
    _serial.on = True
    try:
        yield
    finally:
        _serial.on = was


def map_slices(function: Callable[[int], Any], n: int, threads: int = 1) -> Iterator[Any]:
    """``function(k)`` for k = 0 .. n - 1, yielded in order, computed on ``threads`` threads
    with at most ``threads + 1`` results waiting (so memory stays bounded however many
    slices there are). Stopping the iteration early cancels what has not started."""
    if threads <= 1 or n <= 1:
        for k in range(n):
            yield function(k)
        return
    pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="mfif-slice")
    try:
        pending: deque = deque()
        for k in range(n):
            pending.append(pool.submit(function, k))
            if len(pending) > threads:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _shape_str(shape) -> str:
    return "(" + ", ".join(str(int(s)) for s in shape) + ")"


def _check_dtype(dtype: np.dtype, what: str) -> None:
    if dtype.kind == "b":
        raise MfifError(f"{what} is boolean; give intensities (uint8, uint16 or float32)")
    if dtype.kind == "c":
        raise MfifError(f"{what} is complex ({dtype}); give real intensities")
    if dtype.kind not in "uif" or dtype.itemsize > 8:
        raise MfifError(f"{what} has unsupported dtype {dtype}; use uint8, uint16 or float32")


def _looks_like_one_rgb_image(shape: tuple[int, ...]) -> bool:
    return len(shape) == 3 and shape[-1] in (3, 4) and shape[0] >= 16 and shape[1] >= 16


#: the smallest slice (px, each side) any method fuses: a focus measure compares a pixel
#: with its neighbours, and below this there are too few to tell sharp from blurred
MIN_SLICE_SIDE = 8


def check_slice_size(shape: tuple[int, ...]) -> None:
    """Refuse a (Z, Y, X[, C]) stack whose slices are smaller than
    :data:`MIN_SLICE_SIDE` pixels on a side."""
    if len(shape) in (3, 4) and min(int(shape[1]), int(shape[2])) < MIN_SLICE_SIDE:
        raise MfifError(
            f"the slices are {int(shape[1])} x {int(shape[2])} pixels; judging focus needs at "
            f"least {MIN_SLICE_SIDE} x {MIN_SLICE_SIDE} (a pixel is compared with its "
            "neighbours)"
        )


def looks_like_z_last(shape: tuple[int, ...]) -> bool:
    """True for a (A, B, C[, colour]) shape whose last spatial axis looks like the slices of
    a (Y, X, Z) stack rather than the width of a (Z, Y, X) one: longer than a colour axis
    (4), shorter than the first axis and at most half the second. A (Z, Y, X) stack has
    images much wider than that; (256, 256, 10) is ten slices of 256 x 256 laid out last,
    not 256 slices 10 px wide."""
    if len(shape) not in (3, 4):
        return False
    a, b, c = (int(n) for n in shape[:3])
    return c > 4 and c < a and 2 * c <= b


def check_z_layout(shape: tuple[int, ...], option: str = "z_axis") -> None:
    """Refuse a stack whose slice axis cannot be told from its shape (see
    :func:`looks_like_z_last`), naming the ``option`` that says which axis it is."""
    if looks_like_z_last(shape):
        raise MfifError(
            f"cannot tell which axis holds the slices of a {_shape_str(shape)} stack (the last "
            f"axis looks like z); say which axis with {option} (0 for (Z, Y, X), 2 for "
            "(Y, X, Z))"
        )


def z_first(stack: Any, z_axis: int | None, channel_axis: int | None = None,
            time_axis: int | None = None) -> tuple[Any, int | None, int | None]:
    """``stack`` with its z axis (the slices) moved first (numpy or dask; a view), and the
    channel and time axes renumbered to match: ``(stack, channel_axis, time_axis)``.
    ``z_axis`` None leaves everything as it is."""
    if z_axis is None:
        return stack, channel_axis, time_axis
    if isinstance(stack, (list, tuple)) or not hasattr(stack, "ndim"):
        raise MfifError("z_axis needs the stack as one array, not a list of slices")
    ndim = stack.ndim
    if not isinstance(z_axis, (int, np.integer)) or isinstance(z_axis, bool) \
            or not -ndim <= z_axis < ndim:
        raise MfifError(f"z_axis {z_axis!r} does not exist in a {ndim}-D stack "
                        f"(0 to {ndim - 1})")
    z = int(z_axis) % ndim
    order = [z] + [i for i in range(ndim) if i != z]

    def renumber(axis, name):
        if axis is None:
            return None
        if not isinstance(axis, (int, np.integer)) or not -ndim <= axis < ndim:
            raise MfifError(f"{name} {axis!r} does not exist in a {ndim}-D stack")
        if int(axis) % ndim == z:
            raise MfifError(f"z_axis and {name} name the same axis")
        return order.index(int(axis) % ndim)

    channel_axis = renumber(channel_axis, "channel_axis")
    time_axis = renumber(time_axis, "time_axis")
    if z == 0:
        return stack, channel_axis, time_axis
    return np.moveaxis(stack, z, 0), channel_axis, time_axis


def as_stack(stack: Any) -> np.ndarray:
    """Check a focal stack and return it as a (Z, Y, X) or (Z, Y, X, C) numpy array.

    ``stack`` is a numpy or dask array (slices along the first axis, optional channels
    last) or a sequence of 2-D / (Y, X, C) arrays in slice order. A dask array is
    checked by shape before it is computed. The input is never modified.
    """
    if isinstance(stack, (list, tuple)):
        return _stack_from_slices(stack)
    if not hasattr(stack, "shape") or not hasattr(stack, "dtype"):
        raise MfifError(
            f"cannot fuse a {type(stack).__name__}; give an array of shape (Z, Y, X) or "
            "(Z, Y, X, C), or a list of 2-D images"
        )
    shape = tuple(int(s) for s in stack.shape)
    _check_shape(shape)
    _check_dtype(np.dtype(stack.dtype), "the stack")
    array = np.asarray(stack)  # computes a dask array; numpy arrays are not copied
    _check_finite(array)
    return array


def _stack_from_slices(slices: Sequence[Any]) -> np.ndarray:
    if len(slices) == 0:
        raise MfifError("the list of slices is empty; a focal stack needs at least two slices")
    arrays = [np.asarray(s) for s in slices]
    first = arrays[0]
    for i, a in enumerate(arrays):
        if a.ndim not in (2, 3):
            raise MfifError(
                f"slice {i} has shape {_shape_str(a.shape)}; each slice must be 2-D (Y, X) "
                "or (Y, X, C)"
            )
        if a.shape != first.shape:
            raise MfifError(
                f"slice {i} has shape {_shape_str(a.shape)} but slice 0 has "
                f"{_shape_str(first.shape)}; all slices must have the same shape (or "
                "align them, which brings them to a common frame)"
            )
        if a.dtype != first.dtype:
            raise MfifError(
                f"slice {i} has dtype {a.dtype} but slice 0 has {first.dtype}; all slices "
                "must have the same dtype"
            )
    if len(arrays) < 2:
        raise MfifError(
            "got a single image; a focal stack needs at least two slices"
        )
    _check_dtype(first.dtype, "the stack")
    array = np.stack(arrays)
    _check_shape(array.shape)
    _check_finite(array)
    return array


def _check_shape(shape: tuple[int, ...]) -> None:
    ndim = len(shape)
    if ndim == 2:
        raise MfifError(
            f"got a single 2-D image of shape {_shape_str(shape)}; a focal stack needs at "
            "least two slices along the first axis, (Z, Y, X)"
        )
    if _looks_like_one_rgb_image(shape):
        raise MfifError(
            f"got an array of shape {_shape_str(shape)}, which is a single colour image; a "
            "focal stack needs at least two slices, (Z, Y, X) or (Z, Y, X, C)"
        )
    if ndim not in (3, 4):
        raise MfifError(
            f"got an array of shape {_shape_str(shape)}; a focal stack is (Z, Y, X) or "
            "(Z, Y, X, C) with the slices along the first axis"
        )
    if ndim == 4 and not 1 <= shape[-1] <= MAX_CHANNELS:
        raise MfifError(
            f"got a 4-D array of shape {_shape_str(shape)}; 4-D stacks must be (Z, Y, X, C) "
            f"with the channels last (at most {MAX_CHANNELS})"
        )
    if 0 in shape:
        raise MfifError(f"the stack is empty: its shape is {_shape_str(shape)}")
    if shape[0] < 2:
        raise MfifError(
            f"the stack has {shape[0]} slice; a focal stack needs at least two slices"
        )


def _check_finite(array: np.ndarray) -> None:
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        bad = int(array.size - np.count_nonzero(np.isfinite(array)))
        raise MfifError(
            f"the stack holds {bad} NaN or infinite value(s); replace them before fusing"
        )


def work_dtype(dtype: np.dtype) -> np.dtype:
    """Float type computations run in: float32, or float64 where float32 would lose bits."""
    dtype = np.dtype(dtype)
    if dtype == np.float64 or (dtype.kind in "iu" and dtype.itemsize >= 4):
        return np.dtype(np.float64)
    return np.dtype(np.float32)


def with_channel_axis(stack: np.ndarray) -> tuple[np.ndarray, bool]:
    """(Z, Y, X[, C]) -> (Z, Y, X, C) float array, and whether the input had channels."""
    had_channels = stack.ndim == 4
    out = stack if had_channels else stack[..., np.newaxis]
    return out.astype(work_dtype(stack.dtype), copy=True), had_channels


def luminance(stack: np.ndarray) -> np.ndarray:
    """The gray image focus is judged on, for a (Z, Y, X, C) float stack.

    RGB(A) uses the Rec. 601 weights (0.2989, 0.5870, 0.1140) and ignores alpha; one
    channel is used as is; any other channel count is averaged.
    """
    channels = stack.shape[-1]
    if channels == 1:
        return stack[..., 0]
    if channels in (3, 4):
        return np.tensordot(stack[..., :3], _LUMA.astype(stack.dtype), axes=([-1], [0]))
    return stack.mean(axis=-1)


def focus_gray(stack: np.ndarray, focus_channel: Any = None) -> np.ndarray:
    """The (Z, Y, X) image focus is judged on, for a (Z, Y, X, C) stack.

    ``None``: the luminance (:func:`luminance`); an int: that channel (e.g. the DAPI or
    brightfield channel of a fluorescence stack); a sequence of C non-negative numbers: that
    weighted combination of the channels. The decision made on it is applied to every
    channel, so channels stay registered.
    """
    channels = stack.shape[-1]
    if focus_channel is None:
        return luminance(stack)
    if isinstance(focus_channel, (int, np.integer)) and not isinstance(focus_channel, bool):
        if not -channels <= focus_channel < channels:
            raise MfifError(
                f"focus channel {focus_channel} does not exist; the stack has {channels} "
                f"channel{'s' if channels != 1 else ''} (0 to {channels - 1})"
            )
        return np.ascontiguousarray(stack[..., focus_channel])
    try:
        weights = np.asarray(focus_channel, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        weights = np.empty(0)
    if weights.shape != (channels,) or not np.isfinite(weights).all() or (weights < 0).any() \
            or weights.sum() <= 0:
        raise MfifError(
            f"focus_channel must be a channel number or {channels} non-negative weights, one "
            f"per channel; got {focus_channel!r}"
        )
    weights = (weights / weights.sum()).astype(stack.dtype)
    return np.tensordot(stack, weights, axes=([-1], [0]))


def channels_last(stack: Any, channel_axis: int | None) -> Any:
    """``stack`` with its channel axis moved last (numpy or dask; no copy); ``None`` leaves
    it as it is ((Z, Y, X) grey or (Z, Y, X, C)). The slices are then the first axis: the
    first one that is not the channel axis (so (C, Z, Y, X) works too)."""
    if channel_axis is None:
        return stack
    if isinstance(stack, (list, tuple)) or not hasattr(stack, "ndim"):
        raise MfifError("channel_axis needs the stack as one array, not a list of slices")
    if stack.ndim != 4:
        raise MfifError(
            f"channel_axis={channel_axis} needs a 4-D stack (Z, C, Y, X) or (Z, Y, X, C); "
            f"this one has shape {_shape_str(stack.shape)}"
        )
    if not isinstance(channel_axis, (int, np.integer)) or not -4 <= channel_axis < 4:
        raise MfifError(f"channel_axis must be an axis of the 4-D stack (0 to 3), got {channel_axis!r}")
    return np.moveaxis(stack, channel_axis, -1)


def blend_with(stack: np.ndarray, weights: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """:func:`blend` then back to ``dtype``: what a fusion's weights make of another stack."""
    return to_dtype(blend(stack, weights.astype(stack.dtype, copy=False)), dtype)


def to_dtype(image: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Cast a float result back to ``dtype``: integers are rounded and clipped to their
    range; floats are cast. No rescaling."""
    dtype = np.dtype(dtype)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return np.clip(np.rint(image), info.min, info.max).astype(dtype)
    return image.astype(dtype)


def blend(stack: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Pixel-wise weighted average: sum_k weights[k] * stack[k] for (Z, Y, X, C) slices and
    (Z, Y, X) weights that sum to one at every pixel."""
    fused = np.zeros(stack.shape[1:], dtype=stack.dtype)
    for k in range(stack.shape[0]):
        fused += weights[k][..., np.newaxis] * stack[k]
    return fused


def nway_choice(
    focus: Callable[[np.ndarray], np.ndarray],
    gray: np.ndarray,
    smooth: Callable[[np.ndarray], np.ndarray],
    progress: Progress = None,
    *,
    floor: float = 0.0,
    revise: Callable[[np.ndarray, list, np.ndarray | None], np.ndarray] | None = None,
    threads: int = 1,
    smooth_reach: int | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """The smoothed choose-max weights of :func:`nway_weights` before any flat-area fill,
    and the confidence map of the noise floor (None when ``floor`` is 0).

    ``revise(choice, scores, trust) -> choice``, when given, may change the per-pixel choice
    before it is smoothed (e.g. :func:`napari_mfif.focus.consistency.check`); it gets every
    slice's score (kept only then) and the noise-floor trust in [0, 1] (None without a
    floor). ``threads``: slices scored and smoothed at once (``focus`` and ``smooth`` must
    then be safe to call from several threads); the result does not depend on it.
    ``smooth_reach``: how far (px) ``smooth`` spreads a pixel, when it is a filter with
    scipy's ``reflect`` edges; each slice's decision map is then smoothed only over the
    box around the pixels that chose it plus that reach (zero elsewhere: the same numbers,
    for less work when each slice wins a small part of the image)."""
    z = gray.shape[0]
    best = np.full(gray.shape[1:], -np.inf, dtype=gray.dtype)
    choice = np.zeros(gray.shape[1:], dtype=np.uint8 if z <= 256 else np.intp)
    scores = []
    for k, score in enumerate(map_slices(lambda k: focus(gray[k]), z, threads)):
        if revise is not None:
            scores.append(score)
        better = score > best
        np.copyto(best, score, where=better)
        np.copyto(choice, k, where=better, casting="unsafe")
        if progress is not None:
            progress(k + 1, 2 * z)
    trust = np.clip(best / floor - 1, 0, 1).astype(gray.dtype) if floor > 0 else None
    del best
    if revise is not None:
        choice = revise(choice, scores, trust)
        del scores
    weights = np.empty(gray.shape, dtype=gray.dtype)

    def smoothed(k: int) -> None:
        chosen = choice == k
        if smooth_reach is None:
            weights[k] = smooth(chosen.astype(gray.dtype))
            return
        box = _grown_box(chosen, smooth_reach)
        weights[k] = 0
        if box is not None:
            weights[k][box] = smooth(chosen[box].astype(gray.dtype))

    for k, _ in enumerate(map_slices(smoothed, z, threads)):
        if progress is not None:
            progress(z + k + 1, 2 * z)
    weights /= weights.sum(axis=0, keepdims=True)
    confidence = None if trust is None else smooth(trust)
    return weights, confidence


#: pixels per band of rows in the slice-by-slice steps (the temporaries of one slice's band
#: are what the threads hold, not whole slices)
BAND_PIXELS = 2**20


def _bands(h: int, w: int, margin: int | None) -> list[tuple[int, int]]:
    """Bands of rows ``(r0, r1)`` covering an image of ``h`` x ``w``: about
    :data:`BAND_PIXELS` each, and at least 8 times ``margin`` rows (the context each band
    is computed with, so that it costs at most a quarter more); one band when ``margin`` is
    None (unknown) or the image is small."""
    if margin is None:
        return [(0, h)]
    rows = max(BAND_PIXELS // max(w, 1), 8 * margin, 1)
    return [(r0, min(r0 + rows, h)) for r0 in range(0, h, rows)]


def nway_fuse(
    focus: Callable[[np.ndarray], np.ndarray],
    gray: Any,
    smooth: float,
    progress: Progress = None,
    *,
    stack: Any = None,
    weights: np.ndarray | None = None,
    floor: float = 0.0,
    fill: bool = True,
    revise: Callable[[np.ndarray, Any, np.ndarray | None], np.ndarray] | None = None,
    threads: int = 1,
    focus_reach: int | None = None,
    view: View | None = None,
    maps: "FillMaps | None" = None,
) -> tuple[np.ndarray | None, np.ndarray, np.ndarray | None]:
    """The N-way fusion of :func:`nway_choice`, :func:`fill_flat_areas`, :func:`blend` and
    :func:`index_from_weights`, slice by slice: no array of all slices' scores or weights is
    made (unless ``weights`` asks for them), so the memory it needs beyond the stack is a few
    image-sized maps and the temporaries of the slices in flight. ``gray`` and ``stack`` are
    read one slice at a time (``gray[k]``, ``stack[k, box]``, ``stack[k, ys, xs]``), so they
    may be :class:`LazySlices` that convert each slice as it is read.

    1. each slice is scored and the running best kept (as :func:`nway_choice`);
    2. ``revise(choice, scores, trust)`` gets scores that are computed again when asked
       for, only over the box around the pixels asked about (grown by ``focus_reach``, the
       pixels the measure reads around each of its outputs; the whole slice when None);
    3. each slice's decision map is smoothed (a Gaussian of sigma ``smooth`` px, scipy's
       ``reflect`` edges, over the box around the pixels that chose the slice) and added,
       times the slice, into running sums, which are divided by the summed maps (the
       weights of :func:`nway_choice` with that Gaussian, to float rounding);
    4. with a noise ``floor`` and ``fill``, flat areas get the filled height of
       :func:`fill_flat_areas` (``view`` and ``maps`` as there) and average the slices
       near it, in one more pass over the pixels concerned.

    ``weights``, a (Z, Y, X) array of gray's dtype, receives each slice's share of every
    pixel (for ``return_weights``; it costs a value per voxel). Returns ``(fused, height,
    confidence)``: the (Y, X, C) blend (None without ``stack``), the float32 fractional
    slice index, and the noise floor's confidence (None without a floor). Without
    ``fill`` they are the choose-max height and confidence that a tiled run's coarse
    pass sums.
    """
    z = len(gray)
    h, w = gray.shape[1:]
    dtype = np.dtype(gray.dtype)
    reach = radius(smooth)
    bands = _bands(h, w, None if focus_reach is None else max(focus_reach, reach))
    steps = 2 * z * len(bands)
    best = np.full((h, w), -np.inf, dtype=dtype)
    choice = np.zeros((h, w), dtype=np.uint8 if z <= 256 else np.intp)
    for b, (r0, r1) in enumerate(bands):
        # each slice scored over the band and the measure's reach around it: exactly the
        # whole slice's scores in the band (one band without a known reach)
        a0, a1 = (0, h) if focus_reach is None else (max(r0 - focus_reach, 0),
                                                     min(r1 + focus_reach, h))

        def score(k: int, a0=a0, a1=a1, r0=r0, r1=r1) -> np.ndarray:
            return focus(gray[k, a0:a1])[r0 - a0:r1 - a0]

        band_best, band_choice = best[r0:r1], choice[r0:r1]
        for k, part in enumerate(map_slices(score, z, threads)):
            better = part > band_best
            np.copyto(band_best, part, where=better)
            np.copyto(band_choice, k, where=better, casting="unsafe")
            del part, better
            if progress is not None:
                progress(b * z + k + 1, steps)
    trust = None
    if floor > 0:  # in place of the best scores, which are not needed any more
        trust, best = best, None
        trust /= dtype.type(floor)
        trust -= 1
        np.clip(trust, 0, 1, out=trust)
    del best
    if revise is not None:
        choice = revise(choice, _Rescored(focus, gray, focus_reach), trust)

    total = np.zeros((h, w), dtype)
    height = np.zeros((h, w), dtype)
    fused = None if stack is None else np.zeros((h, w, stack.shape[-1]), dtype)
    done = z * len(bands)
    for r0, r1 in bands:
        # each slice's decision map smoothed over the band and the smoothing's reach around
        # it, and there only over the box around the pixels that chose the slice: exactly
        # the whole map's values in the band (the box's margins are zeros, or the image's
        # edges, as far as the kernel sees)
        a0, a1 = max(r0 - reach, 0), min(r1 + reach, h)

        def smoothed(k: int, a0=a0, a1=a1, r0=r0, r1=r1):
            chosen = choice[a0:a1] == k
            box = _grown_box(chosen, reach)
            if box is None:
                return None
            m = _gaussian_to(chosen[box], smooth, dtype)  # no float copy of the mask
            ys, xs = box
            lo, hi = max(ys.start + a0, r0), min(ys.stop + a0, r1)
            if lo >= hi:
                return None
            return (slice(lo, hi), xs), m[lo - ys.start - a0:hi - ys.start - a0]

        if weights is not None:
            weights[:, r0:r1] = 0
        for k, part in enumerate(map_slices(smoothed, z, threads)):
            if part is not None:
                box, m = part
                del part
                total[box] += m
                if weights is not None:
                    weights[(k, *box)] = m
                if fused is not None:  # the slice is read here, one band at a time
                    x = stack[(k, *box)]
                    if isinstance(stack, LazySlices):
                        x *= m[..., np.newaxis]  # a converted copy: no second temporary
                    else:
                        x = x * m[..., np.newaxis]  # a view of the caller's stack
                    fused[box] += x
                    del x
                if k:
                    m *= k
                    height[box] += m
                del m
            done += 1
            if progress is not None:
                progress(done, steps)
    del choice
    height /= total
    if fused is not None:
        fused /= total[..., np.newaxis]
    if weights is not None:
        weights /= total
    del total
    height = height.astype(np.float32, copy=False)
    confidence = None if trust is None else _gaussian_to(trust, smooth, dtype)
    del trust
    if fill and confidence is not None and float(confidence.min()) < 1:
        _fill_flat(fused, height, weights, confidence, stack, z, view=view, maps=maps)
    return fused, height, confidence


def _fill_flat(fused: np.ndarray | None, height: np.ndarray, weights: np.ndarray | None,
               confidence: np.ndarray, stack: Any, z: int, *, view: View | None,
               maps: "FillMaps | None", spread: float = 1.0) -> None:
    """:func:`fill_flat_areas` applied in place to a blend, its height and (when given) its
    weights: where the confidence c is below 1, ``c * blend + (1 - c) * the average of the
    slices near the filled height`` (Gaussian weights over the slices, ``spread`` slices
    wide). Band by band of rows, reading those pixels of each slice, so that its memory does
    not grow with the image."""
    h, w = confidence.shape
    scales = _FillScales(confidence, height, z, view=view, maps=maps)
    rows = max(1, BAND_PIXELS // 4 // w)  # ~70 bytes per pixel touched: smaller bands
    for r0 in range(0, h, rows):
        ys, xs = np.nonzero(confidence[r0:r0 + rows] < 1)
        if not ys.size:
            continue
        ys += r0
        filled = scales.at((ys, xs))
        c = confidence[ys, xs]
        norm = np.zeros(filled.shape, np.float32)
        for k in range(z):
            norm += np.exp(-0.5 * ((np.float32(k) - filled) / spread) ** 2)
        near = None if fused is None else np.zeros((filled.size, fused.shape[-1]), fused.dtype)
        near_height = np.zeros(filled.shape, np.float32)
        for k in range(z):
            share = np.exp(-0.5 * ((np.float32(k) - filled) / spread) ** 2) / norm
            if near is not None:
                near += share.astype(fused.dtype)[:, np.newaxis] * stack[k, ys, xs]
            if weights is not None:
                weights[k, ys, xs] = c * weights[k, ys, xs] + (1 - c) * share.astype(c.dtype)
            near_height += np.float32(k) * share
        if fused is not None:
            cf = c.astype(fused.dtype)[:, np.newaxis]
            fused[ys, xs] = cf * fused[ys, xs] + (1 - cf) * near
        c = c.astype(np.float32, copy=False)
        height[ys, xs] = c * height[ys, xs] + (1 - c) * near_height


def _gaussian_to(image: np.ndarray, sigma: float, dtype: np.dtype) -> np.ndarray:
    """The Gaussian (scipy, ``reflect``, cut at 3 sigma) of ``image`` (a mask or a map) as
    a new array of ``dtype``: the same numbers as filtering ``image.astype(dtype)``."""
    if sigma <= 0:
        return image.astype(dtype)
    return ndi.gaussian_filter(image, sigma, output=dtype, mode="reflect", truncate=TRUNCATE)


class _Rescored:
    """Every slice's score for :func:`nway_fuse`'s ``revise``, computed again when asked for:
    ``scores[k][ys, xs]`` scores slice k over the box around those pixels only."""

    def __init__(self, focus, gray, reach: int | None):
        self._focus, self._gray, self._reach = focus, gray, reach

    def __len__(self) -> int:
        return len(self._gray)

    def __getitem__(self, k: int) -> "_SliceScore":
        return _SliceScore(self, k)


class _SliceScore:
    def __init__(self, scores: _Rescored, k: int):
        self._scores, self._k = scores, k

    def __getitem__(self, at: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
        ys, xs = at
        scores = self._scores
        if ys.size == 0:
            return np.empty(0, np.dtype(scores._gray.dtype))
        h, w = scores._gray.shape[1:]
        if scores._reach is None:
            y0, y1, x0, x1 = 0, h, 0, w
        else:  # the measure reads at most ``reach`` px around each output: the box's
            r = scores._reach  # outputs are exact where it reaches into the image
            y0, y1 = max(int(ys.min()) - r, 0), min(int(ys.max()) + r + 1, h)
            x0, x1 = max(int(xs.min()) - r, 0), min(int(xs.max()) + r + 1, w)
        return scores._focus(scores._gray[self._k, y0:y1, x0:x1])[ys - y0, xs - x0]


class LazySlices:
    """A (Z, Y, X[, C]) stack whose slices are converted when they are read, so that a
    slice-by-slice fusion (:func:`nway_fuse`) never holds a converted copy of the whole
    stack. ``slices[k]`` is slice k, ``slices[k, ...]`` a part of it (any index whose
    first element is one slice), each ``convert`` of the stored pixels; ``shape`` and
    ``dtype`` are the converted stack's."""

    def __init__(self, array: np.ndarray, convert: Callable[[np.ndarray], np.ndarray],
                 shape: tuple[int, ...], dtype: np.dtype):
        self._array, self._convert = array, convert
        self.shape, self.dtype = tuple(shape), np.dtype(dtype)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key) -> np.ndarray:
        first = key[0] if isinstance(key, tuple) else key
        if not isinstance(first, (int, np.integer)):
            raise TypeError("LazySlices are read one slice at a time")
        return self._convert(self._array[key])

    def __iter__(self) -> Iterator[np.ndarray]:
        for k in range(len(self)):
            yield self[k]


def lazy_stack(array: np.ndarray, focus_channel: Any = None
               ) -> tuple[LazySlices, LazySlices, bool]:
    """:func:`with_channel_axis` and :func:`focus_gray` of ``array`` as :class:`LazySlices`
    (the work stack (Z, Y, X, C) and the gray stack (Z, Y, X), converted slice by slice),
    and whether the input had channels. A bad ``focus_channel`` is refused here."""
    had_channels = array.ndim == 4
    dtype = work_dtype(array.dtype)
    z, h, w = array.shape[:3]
    channels = array.shape[3] if had_channels else 1
    focus_gray(np.zeros((1, 1, 1, channels), dtype), focus_channel)  # checks the channel

    if had_channels:
        def to_work(raw):
            return raw.astype(dtype)

        def to_gray(raw):
            return focus_gray(raw.astype(dtype), focus_channel)
    else:
        def to_work(raw):
            return raw.astype(dtype)[..., np.newaxis]

        def to_gray(raw):
            return raw.astype(dtype)
    return (LazySlices(array, to_work, (z, h, w, channels), dtype),
            LazySlices(array, to_gray, (z, h, w), dtype), had_channels)


def _grown_box(mask: np.ndarray, reach: int) -> tuple[slice, slice] | None:
    """The bounding box of ``mask``'s true pixels grown by ``reach`` on every side (within
    the array), or None when there are none.

    A filter of that reach with ``reflect`` edges gives the same values inside the box
    whether it runs on the box or on the whole (zero-outside) map: the box's margins are
    zero as far as the filter sees, so its reflection there reads zeros as the whole map
    does, and at the array's own edges the box reflects the same pixels as the whole."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    h, w = mask.shape
    return (slice(max(int(rows[0]) - reach, 0), min(int(rows[-1]) + reach + 1, h)),
            slice(max(int(cols[0]) - reach, 0), min(int(cols[-1]) + reach + 1, w)))


def nway_weights(
    focus: Callable[[np.ndarray], np.ndarray],
    gray: np.ndarray,
    smooth: Callable[[np.ndarray], np.ndarray],
    progress: Progress = None,
    *,
    floor: float = 0.0,
    view: View | None = None,
    maps: "FillMaps | None" = None,
) -> np.ndarray:
    """Choose-max across all slices at once, with a smoothed decision.

    ``focus(slice) -> map`` scores each gray slice; each pixel is given to the slice with
    the highest score (ties to the lower slice); the one-hot decision maps are smoothed
    with ``smooth`` (a linear, normalised filter, so the weights still sum to one), which
    removes isolated wrong choices and softens the seams.

    ``floor`` (> 0) is the focus score that noise alone reaches: where the best score is not
    clearly above it (a flat area, where the choice would follow the noise), the pixel's
    weights are taken from :func:`fill_flat_areas` instead (``view`` and ``maps``: see there).
    """
    weights, confidence = nway_choice(focus, gray, smooth, progress, floor=floor)
    if confidence is not None:
        weights = fill_flat_areas(weights, confidence, view=view, maps=maps, in_place=True)
    return weights


#: about how many pixels per slice the noise level is measured on
NOISE_SAMPLES = 250_000


def _immerkaer_at(g: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """Immerkaer's noise operator (the difference of two Laplacians, kernel
    [[1, -2, 1], [-2, 4, -2], [1, -2, 1]]) at the pixels ``ys`` x ``xs`` of ``g`` (which
    must have a 1-pixel border around them), summed in a fixed order. ``ys`` and ``xs`` are
    regular grids (:func:`_grid_points`), read as strided views rather than gathered."""
    if not (ys.size and xs.size):
        return np.empty((ys.size, xs.size), g.dtype)
    sy = int(ys[1] - ys[0]) if ys.size > 1 else 1
    sx = int(xs[1] - xs[0]) if xs.size > 1 else 1

    def at(dy: int, dx: int) -> np.ndarray:
        y0, x0 = int(ys[0]) + dy, int(xs[0]) + dx
        return g[y0:y0 + (ys.size - 1) * sy + 1:sy, x0:x0 + (xs.size - 1) * sx + 1:sx]

    r = at(-1, -1) - 2 * at(-1, 0) + at(-1, 1)
    r += -2 * at(0, -1) + 4 * at(0, 0) - 2 * at(0, 1)
    r += at(1, -1) - 2 * at(1, 0) + at(1, 1)
    return r


def _grid_points(n: int, step: int, lo: int, hi: int, origin: int) -> np.ndarray:
    """The global sample positions 1, 1 + step, ... < n - 1 that fall in [lo, hi), in
    window coordinates (minus ``origin``)."""
    first = 1 + max(0, -(-(lo - 1) // step)) * step
    return np.arange(first, min(hi, n - 1), step, dtype=np.intp) - origin


def _noise_points(h: int, w: int, view: View | None) -> tuple[np.ndarray, np.ndarray] | None:
    """The noise sample grid of a (h, w) window: the whole image's every ``step``-th pixel
    (about :data:`NOISE_SAMPLES` per slice) that falls in ``view``'s core, in window
    coordinates; None where the image is too small to sample."""
    view = view or View.whole(h, w)
    H, W = view.shape
    if min(H, W) < 3:
        return None
    step = max(1, int(np.sqrt(H * W / NOISE_SAMPLES)))
    gy0, gy1, gx0, gx1 = view.core_global
    return (_grid_points(H, step, gy0, gy1, view.origin[0]),
            _grid_points(W, step, gx0, gx1, view.origin[1]))


def _noise_sample(g: np.ndarray, points) -> np.ndarray:
    if points is None:
        return np.empty(0, np.float32)
    return np.abs(_immerkaer_at(g.astype(np.float32, copy=False), *points)).ravel()


def noise_samples(gray: np.ndarray, view: View | None = None) -> list[np.ndarray]:
    """|Immerkaer response| of each slice at the noise sample points in ``view``'s core.

    The points are a grid fixed in the whole image's coordinates (every ``step``-th pixel,
    about :data:`NOISE_SAMPLES` per slice), so the samples of the windows of a tiled run are
    exactly those of the whole image. :func:`noise_sigma_from` turns them into sigma.
    """
    points = _noise_points(*gray.shape[1:], view)
    return [_noise_sample(g, points) for g in gray]


def _sigma_of(sample: np.ndarray) -> float:
    """The noise sigma of one slice's samples (the median response, scaled)."""
    return float(np.median(sample)) / (0.6745 * 6.0)


def noise_sigma_from(parts: Sequence[Sequence[np.ndarray]]) -> float:
    """The noise sigma from :func:`noise_samples` of one or more windows (``parts[i][k]``:
    window i, slice k): the median absolute response over all windows, per slice, scaled to
    a standard deviation; the smallest over the slices (the most defocused slice has the
    least structure left)."""
    estimates = []
    for k in range(len(parts[0])):
        sample = np.concatenate([part[k] for part in parts])
        if sample.size == 0:
            return 0.0
        estimates.append(_sigma_of(sample))
    return min(estimates)


def noise_sigma(gray: np.ndarray) -> float:
    """A robust estimate of the pixel noise (standard deviation) of a (Z, Y, X) stack.

    Immerkaer's operator (the difference of two Laplacians, blind to planes and smooth
    ramps) with the median absolute response, so that image structure does not count as
    noise; the smallest estimate over the slices (the most defocused slice has the least
    structure left) is returned. The slices are read one at a time (``gray`` may be
    :class:`LazySlices`): :func:`noise_sigma_from` of :func:`noise_samples`, without
    holding every slice's samples.
    """
    points = _noise_points(*gray.shape[1:], None)
    if points is None:
        return 0.0
    return min(_sigma_of(_noise_sample(g, points)) for g in gray)


#: the widths (px) over which flat areas look for textured neighbours, nearest first, and the
#: block sizes of the grids these wide blurs run on (block average, Gaussian on the grid,
#: linear interpolation back, all in the whole image's coordinates)
FILL_SIGMAS = (8.0, 32.0, 128.0)
FILL_BLOCKS = (4, 16, 64)
#: the first scale is computed in each window (its reach, :data:`FILL_REACH` px, is local);
#: the wider ones on grids of the whole image (:func:`fill_sums`, :func:`fill_maps`)
FILL_REACH = (int(4.0 * FILL_SIGMAS[0] / FILL_BLOCKS[0] + 0.5) + 2) * FILL_BLOCKS[0]
#: windows of tiled runs start on multiples of this (so that their block grids line up)
FILL_ALIGN = FILL_BLOCKS[-1]


def _block_sums(image: np.ndarray, factor: int) -> np.ndarray:
    """Sums over blocks of ``factor`` x ``factor`` pixels from the array's origin (the last
    blocks partial), in float64 and in a fixed order whatever the array's size."""
    h, w = image.shape
    hb, wb = -(-h // factor), -(-w // factor)
    if (h, w) == (hb * factor, wb * factor) and image.flags.c_contiguous:
        padded = image  # summed into float64 below, the same numbers without the copy
    else:
        padded = np.zeros((hb * factor, wb * factor), np.float64)
        padded[:h, :w] = image
    cols = padded.reshape(hb * factor, wb, factor)
    rows = np.zeros((hb * factor, wb), np.float64)
    for j in range(factor):
        rows += cols[:, :, j]
    rows = rows.reshape(hb, factor, wb)
    out = np.zeros((hb, wb), np.float64)
    for i in range(factor):
        out += rows[:, i, :]
    return out


def _block_counts(n: int, factor: int, first: int, count: int) -> np.ndarray:
    """Pixels in blocks ``first .. first + count - 1`` of an axis of ``n`` pixels."""
    starts = (first + np.arange(count)) * factor
    return np.clip(n - starts, 0, factor).astype(np.float64)


def _upsample_axis(lo: int, hi: int, factor: int, nb: int, f0: int, n_local: int):
    """Per global pixel lo .. hi - 1 of an axis: the two grid cells it interpolates between
    (local indices) and its weight on the second (see :func:`_upsample`)."""
    u = np.clip((np.arange(lo, hi) + 0.5) / factor - 0.5, 0, nb - 1)
    i0 = np.floor(u).astype(np.intp)
    i1 = np.minimum(i0 + 1, nb - 1)
    # a window's grid may miss the block after its last one: its outermost pixels
    # (overlap, cropped later) then take the last block's value
    return (np.clip(i0 - f0, 0, n_local - 1), np.clip(i1 - f0, 0, n_local - 1),
            (u - i0).astype(np.float32))


def _upsample(grid: np.ndarray, factor: int, first: tuple[int, int], n_blocks: tuple[int, int],
              box: tuple[int, int, int, int], at: tuple[np.ndarray, np.ndarray] | None = None
              ) -> np.ndarray:
    """Linear interpolation of a block grid back to pixels, in global coordinates.

    ``grid[i, j]`` is block ``(first[0] + i, first[1] + j)`` of a whole image with
    ``n_blocks`` blocks per axis (block centres at ``(b + 0.5) * factor - 0.5``); the result
    covers the global pixels ``box = (y0, y1, x0, x1)``, or only the pixels ``at = (ys,
    xs)`` of the box (local indices; the same numbers, as a 1-D array).
    """
    y0, y1, x0, x1 = box
    r0, r1, fy = _upsample_axis(y0, y1, factor, n_blocks[0], first[0], grid.shape[0])
    c0, c1, fx = _upsample_axis(x0, x1, factor, n_blocks[1], first[1], grid.shape[1])
    rows = grid[r0] * (1 - fy)[:, None] + grid[r1] * fy[:, None]  # (rows of the box, grid)
    if at is None:
        return rows[:, c0] * (1 - fx)[None, :] + rows[:, c1] * fx[None, :]
    ys, xs = at
    return rows[ys, c0[xs]] * (1 - fx)[xs] + rows[ys, c1[xs]] * fx[xs]


def _grid_blur(sums: np.ndarray, counts_y: np.ndarray, counts_x: np.ndarray,
               sigma: float) -> np.ndarray:
    """Block means from sums and pixel counts, smoothed on the grid (sigma in blocks)."""
    means = sums / (counts_y[:, None] * counts_x[None, :])
    return ndi.gaussian_filter(means.astype(np.float32), sigma, mode="reflect")


@dataclass
class FillSums:
    """Sums of the confidence and of confidence x height over the blocks of the first wide
    grid (:data:`FILL_BLOCKS` [1]) in one window's core, and where they go."""

    first: tuple[int, int]  # global index of the first block
    support: np.ndarray
    value: np.ndarray


@dataclass
class FillMaps:
    """The wide scales of :func:`fill_flat_areas` for the whole image: for each block size
    of :data:`FILL_BLOCKS` [1:], the smoothed support and value grids, and the confidence-
    weighted mean height of the stack (for pixels no scale reaches)."""

    shape: tuple[int, int]
    grids: list[tuple[int, np.ndarray, np.ndarray]]  # (factor, support, value)
    middle: float


def fill_sums(confidence: np.ndarray, height: np.ndarray, view: View) -> FillSums:
    """:class:`FillSums` of a window's core (whose global origin must be on the grid)."""
    factor = FILL_BLOCKS[1]
    gy0, _, gx0, _ = view.core_global
    if gy0 % factor or gx0 % factor:
        raise ValueError(f"window core at {(gy0, gx0)} is not on the {factor}-pixel grid")
    y0, y1, x0, x1 = view.core
    c = confidence[y0:y1, x0:x1].astype(np.float32)
    return FillSums((gy0 // factor, gx0 // factor), _block_sums(c, factor),
                    _block_sums(c * height[y0:y1, x0:x1], factor))


def fill_maps(parts: Sequence[FillSums], shape: tuple[int, int], z: int) -> FillMaps:
    """Assemble the :class:`FillSums` of windows covering the whole image into
    :class:`FillMaps` (the same numbers whatever the windows)."""
    H, W = shape
    factor = FILL_BLOCKS[1]
    nb = (-(-H // factor), -(-W // factor))
    support = np.zeros(nb, np.float64)
    value = np.zeros(nb, np.float64)
    for part in parts:
        by, bx = part.first
        hb, wb = part.support.shape
        support[by:by + hb, bx:bx + wb] = part.support
        value[by:by + hb, bx:bx + wb] = part.value
    total = float(support.sum())
    middle = float(value.sum()) / total if total > 0 else (z - 1) / 2
    grids = []
    for sigma, block in zip(FILL_SIGMAS[1:], FILL_BLOCKS[1:]):
        k = block // factor
        s, v = (_block_sums(a, k) if k > 1 else a for a in (support, value))
        cy = _block_counts(H, block, 0, s.shape[0])
        cx = _block_counts(W, block, 0, s.shape[1])
        grids.append((block, _grid_blur(s, cy, cx, sigma / block),
                      _grid_blur(v, cy, cx, sigma / block)))
    return FillMaps((H, W), grids, middle)


def fill_heights(confidence: np.ndarray, height: np.ndarray, z: int, *,
                 view: View | None = None, maps: FillMaps | None = None
                 ) -> tuple[tuple[np.ndarray, np.ndarray], np.ndarray]:
    """Where :func:`fill_flat_areas` changes the weights (the pixels whose ``confidence``
    is below 1, as ``np.nonzero`` gives them) and the height each takes from the confident
    pixels around (float32). ``height`` is the choose-max height (Y, X) of a stack of ``z``
    slices."""
    scales = _FillScales(confidence, height, z, view=view, maps=maps)
    at = np.nonzero(confidence < 1)
    return at, scales.at(at)


class _FillScales:
    """The first steps of :func:`fill_flat_areas`: the block grids that fill heights are
    interpolated from (the nearest scale from this window's ``confidence`` and ``height``,
    the wider ones from ``maps``, the whole image's), read at any pixels by :meth:`at`."""

    def __init__(self, confidence: np.ndarray, height: np.ndarray, z: int, *,
                 view: View | None = None, maps: FillMaps | None = None):
        h, w = confidence.shape
        view = view or View.whole(h, w)
        if maps is None:
            if not view.is_whole:
                raise ValueError("fill_flat_areas on a window needs the whole image's FillMaps")
            maps = fill_maps([fill_sums(confidence, height, view)], view.shape, z)
        self.shape = view.shape
        oy, ox = view.origin
        self.box = (oy, oy + h, ox, ox + w)
        # the nearest scale, on the window's own block grid (windows start on the grid)
        block = FILL_BLOCKS[0]
        if oy % block or ox % block:
            raise ValueError(f"window at {(oy, ox)} is not on the {block}-pixel grid")
        first = (oy // block, ox // block)
        cy = _block_counts(self.shape[0], block, first[0], -(-h // block))
        cx = _block_counts(self.shape[1], block, first[1], -(-w // block))
        c32 = confidence.astype(np.float32)
        near = [_grid_blur(_block_sums(c32, block), cy, cx, FILL_SIGMAS[0] / block)]
        c32 *= height
        near.append(_grid_blur(_block_sums(c32, block), cy, cx, FILL_SIGMAS[0] / block))
        del c32
        self.scales = [(near, block, first)] + [(grids, factor, (0, 0))
                                                for factor, *grids in maps.grids]
        self.middle = maps.middle

    def at(self, points: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
        """The fill height (float32) at the window's pixels ``points = (ys, xs)``: from the
        nearest scale whose support reaches them, else the stack's mean height."""
        filled = np.full(points[0].size, np.nan, dtype=np.float32)
        H, W = self.shape
        for grids, factor, first in self.scales:
            todo = np.flatnonzero(np.isnan(filled))
            if not todo.size:
                break
            nb = (-(-H // factor), -(-W // factor))
            support, value = (_upsample(g, factor, first, nb, self.box,
                                        (points[0][todo], points[1][todo])) for g in grids)
            reach = support > 0.02
            filled[todo[reach]] = value[reach] / support[reach]
        filled[np.isnan(filled)] = self.middle
        return filled


def fill_flat_areas(weights: np.ndarray, confidence: np.ndarray, spread: float = 1.0, *,
                    view: View | None = None, maps: FillMaps | None = None,
                    in_place: bool = False) -> np.ndarray:
    """Weights for a stack where the focus decision is only trusted with ``confidence``.

    Where ``confidence`` (Y, X) in [0, 1] is low (flat or noise-only areas), the height is
    taken from the confident pixels around (normalised convolution, the nearest of
    :data:`FILL_SIGMAS` that reaches some), and the slices within about ``spread`` slices of
    that height are averaged, which also averages their noise away. Confident pixels keep
    their ``weights``. The result still sums to one at every pixel.

    Tile by tile: ``view`` says where this window is and ``maps`` holds the wide scales,
    made by :func:`fill_maps` from the :func:`fill_sums` of every window; the result in the
    window's core is then the same as for the whole image (given an overlap of at least
    :data:`FILL_REACH` px beyond the reach of ``weights`` and ``confidence``).
    ``in_place``: write into ``weights`` (and return it) instead of a copy.
    """
    if float(confidence.min()) >= 1:  # every pixel textured: nothing to fill (and where
        return weights               # confidence is 1 the blend below returns weights exactly)
    z = weights.shape[0]
    at, filled = fill_heights(confidence, index_from_weights(weights), z, view=view, maps=maps)
    ks = np.arange(z, dtype=np.float32)[:, None]
    flat = np.exp(-0.5 * ((ks - filled[None]) / spread) ** 2)
    flat /= flat.sum(axis=0, keepdims=True)
    c = confidence[at].astype(weights.dtype)
    out = weights if in_place else weights.copy()
    for k in range(z):  # slice by slice: no (Z, pixels) copies of the weights
        out[k][at] = (c * weights[k][at] + (1 - c) * flat[k].astype(weights.dtype)
                      ).astype(weights.dtype)
    return out


def index_from_weights(weights: np.ndarray) -> np.ndarray:
    """The fractional slice index sum_k k * weights[k], as float32 (summed slice by slice
    in order, so a window of the weights gives exactly the same numbers)."""
    index = np.zeros(weights.shape[1:], dtype=weights.dtype)
    for k in range(1, weights.shape[0]):
        index += k * weights[k]
    return index.astype(np.float32, copy=False)


def fuse_series(
    stack: np.ndarray,
    gray: np.ndarray,
    pair_decision: Callable[[np.ndarray, np.ndarray], np.ndarray],
    progress: Progress = None,
    keep_weights: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Fuse slices two at a time in series, as the papers do for more than two images.

    The running result A is fused with the next slice B by ``pair_decision(grayA, grayB)``,
    a map D in [0, 1] (1 where A is in focus): A <- D*A + (1-D)*B. The index map follows the
    same rule, so it holds the (fractional) slice each pixel came from.

    Returns ``(fused, index_map, weights)``; ``weights`` (Z, Y, X), each slice's share of
    the result, is computed only with ``keep_weights`` (else None).
    """
    z = stack.shape[0]
    fused = stack[0].copy()
    fused_gray = gray[0].copy()
    index = np.zeros(gray.shape[1:], dtype=np.float32)
    decisions = []
    for k in range(1, z):
        d = pair_decision(fused_gray, gray[k]).astype(stack.dtype)
        fused = d[..., np.newaxis] * fused + (1 - d[..., np.newaxis]) * stack[k]
        fused_gray = d * fused_gray + (1 - d) * gray[k]
        index = (d * index + (1 - d) * k).astype(np.float32)
        if keep_weights:
            decisions.append(d.astype(np.float32))
        if progress is not None:
            progress(k, z - 1)
    weights = series_weights(decisions, gray.shape) if keep_weights else None
    return fused, index, weights


def series_weights(decisions: Sequence[np.ndarray], shape: tuple[int, ...]) -> np.ndarray:
    """Each slice's share of a series fusion from its pair decisions D_1..D_{Z-1}.

    Slice k (k >= 1) enters with weight 1 - D_k and is then kept by every later D, so its
    share is (1 - D_k) * D_{k+1} * ... * D_{Z-1}; slice 0 keeps D_1 * ... * D_{Z-1}.
    """
    weights = np.empty(shape, dtype=np.float32)
    kept = np.ones(shape[1:], dtype=np.float32)  # product of the later decisions
    for k in range(shape[0] - 1, 0, -1):
        d = decisions[k - 1]
        weights[k] = (1 - d) * kept
        kept *= d
    weights[0] = kept
    return weights
