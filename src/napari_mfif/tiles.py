"""Whole slides, tile by tile: bounded memory, any dask scheduler, no seams.

A stack too large for memory (a lazy TIFF, a dask array) is cut into square *tiles*; each
tile is processed in a *window* that adds an overlap on every side, and only the tile (the
window's *core*) is kept. Local steps (focus measures, smoothing, the CNN's patches, the
guided filter) then see exactly the pixels they would see in the whole image, provided the
overlap is at least their *reach*, which every tileable method declares
(:class:`Tiling`); the default overlap is that reach.

Steps that are not local are written in the whole image's coordinates and run in extra
passes over the tiles, each reduced to a small whole-image result the next pass is given:

1. ``stats``: a sample of every window (noise samples on a fixed global grid; intensities
   for the CNN's normalisation), reduced to a few numbers;
2. ``coarse``: per-window block sums, reduced to whole-image coarse grids (the wide scales
   of the classic methods' flat-area fill);
3. the method itself on every window (``run(..., context=Context(view, stats, coarse))``).

So for the classic methods the tiled result equals the whole-image one bit for bit. What
cannot be made exact is documented with the method (the CNN's small-region removal works
per window, with an absolute area; see ``docs/slides.md``).

Tasks are plain functions of (window array, view, parameters) run through dask: the local
threaded scheduler by default, or a ``dask.distributed`` cluster when a client is active
(``--workers N`` / ``--scheduler ADDRESS`` on the command line). Results come back in batches
in row-major order and are handed on one band (row of tiles) at a time, so memory is one
band plus the windows in flight, whatever the slide size.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from ._errors import MfifError
from ._view import Context, View

#: default tile edge (px): windows of ~1.1-1.3 Mpx, a few hundred MB per window in flight
DEFAULT_TILE = 1024
#: tiles are multiples of this (the block grids of the coarse passes line up with it)
TILE_MULTIPLE = 64
#: overlaps are multiples of this (windows then start on every method's grid)
OVERLAP_MULTIPLE = 16
#: results are handed on (``on_band``) in slices of at most this many rows
BAND_ROWS = 256


@dataclass(frozen=True)
class Tiling:
    """How a method runs tile by tile (``Method.tiling``).

    Attributes
    ----------
    reach : callable
        ``reach(params, z, mode) -> int``: how far (px) a fused pixel depends on the input;
        the default overlap.
    align : int
        Windows must start on multiples of this (e.g. 2 for a stride-2 network).
    stats, reduce_stats : callables, optional
        ``stats(gray, view, *, mode, stack, **params) -> part`` on every window (``stack``:
        the window's (Z, Y, X, C) float slices), then
        ``reduce_stats(parts, *, mode, **params) -> stats`` once.
    coarse, reduce_coarse : callables, optional
        ``coarse(stack, gray, view, stats, *, mode, **params) -> part`` on every window,
        then ``reduce_coarse(parts, shape, z, *, mode, **params) -> coarse`` once.

    The method's ``run`` then receives ``context=Context(view, stats, coarse)`` and must give
    in the window's core what it gives there for the whole image.
    """

    reach: Callable[[dict, int, str], int]
    align: int = 1
    stats: Callable[..., Any] | None = None
    reduce_stats: Callable[..., Any] | None = None
    coarse: Callable[..., Any] | None = None
    reduce_coarse: Callable[..., Any] | None = None


@dataclass(frozen=True)
class Tile:
    """One tile: its window in global coordinates ``box = (y0, y1, x0, x1)`` and the
    :class:`View` a method is given for it."""

    box: tuple[int, int, int, int]
    view: View


@dataclass(frozen=True)
class Plan:
    """Tiles of an (H, W) image: ``rows[i][j]`` is tile (i, j)."""

    shape: tuple[int, int]
    tile: int
    overlap: int
    rows: list[list[Tile]] = field(repr=False)

    @property
    def tiles(self) -> list[Tile]:
        return [t for row in self.rows for t in row]

    @property
    def n_tiles(self) -> int:
        return sum(len(row) for row in self.rows)


def _round_up(n: int, multiple: int) -> int:
    return -(-int(n) // multiple) * multiple


def check_tile_size(tile: Any) -> int:
    """``tile`` as a positive multiple of :data:`TILE_MULTIPLE` (rounded up)."""
    try:
        value = int(tile)
    except (TypeError, ValueError):
        raise MfifError(f"tile size must be a whole number of pixels, got {tile!r}") from None
    if value != tile or value < 1:
        raise MfifError(f"tile size must be a positive whole number of pixels, got {tile!r}")
    return _round_up(value, TILE_MULTIPLE)


def plan_tiles(shape: tuple[int, int], tile: int, overlap: int) -> Plan:
    """Cut an (H, W) image into ``tile`` x ``tile`` tiles (the last ones smaller) with
    windows that reach ``overlap`` px further on each side (clipped at the image edge;
    rounded up to a multiple of :data:`OVERLAP_MULTIPLE`, at least one)."""
    h, w = (int(n) for n in shape)
    tile = check_tile_size(tile)
    # at least one multiple: the statistics passes look one pixel around the core
    overlap = _round_up(max(int(overlap), 1), OVERLAP_MULTIPLE)
    rows = []
    for y0 in range(0, h, tile):
        y1 = min(h, y0 + tile)
        wy0, wy1 = max(0, y0 - overlap), min(h, y1 + overlap)
        row = []
        for x0 in range(0, w, tile):
            x1 = min(w, x0 + tile)
            wx0, wx1 = max(0, x0 - overlap), min(w, x1 + overlap)
            view = View((wy0, wx0), (h, w), (y0 - wy0, y1 - wy0, x0 - wx0, x1 - wx0))
            row.append(Tile((wy0, wy1, wx0, wx1), view))
        rows.append(row)
    return Plan((h, w), tile, overlap, rows)


def tileable(spec) -> Tiling:
    """The method's :class:`Tiling`, or a one-line error naming what can be tiled."""
    if spec.tiling is None:
        from .registry import available_methods

        able = [name for name, m in available_methods().items() if m.tiling is not None]
        raise MfifError(
            f"method {spec.name!r} cannot run tile by tile (whole slides); use one of: "
            f"{', '.join(able)}"
        )
    return spec.tiling


def default_overlap(spec, params: dict, z: int, mode: str) -> int:
    """The overlap a method needs for tiles to match the whole image: its reach, rounded
    up to :data:`OVERLAP_MULTIPLE` and to its alignment."""
    tiling = tileable(spec)
    multiple = math.lcm(OVERLAP_MULTIPLE, max(int(tiling.align), 1))
    return _round_up(tiling.reach(params, z, mode), multiple)


# -- the tasks (module-level functions of plain values, so any scheduler can run them) ----

def _prepare(window: Any, focus_channel: Any):
    from .stack import _check_finite, focus_gray, with_channel_axis

    array = np.asarray(window)
    if array.dtype.kind == "f":
        _check_finite(array)
    work, had_channels = with_channel_axis(array)
    return work, focus_gray(work, focus_channel), had_channels


def task_stats(window, view: View, method: str, mode: str, params: dict, focus_channel):
    """Pass 1 on one window: the method's sample of it."""
    from .registry import get_method
    from .stack import one_thread

    spec = get_method(method)
    work, gray, _ = _prepare(window, focus_channel)
    with one_thread():  # the windows run in parallel already
        return spec.tiling.stats(gray, view, mode=mode, stack=work, **params)


def task_coarse(window, view: View, method: str, mode: str, params: dict, focus_channel, stats):
    """Pass 2 on one window: its share of the method's coarse whole-image maps."""
    from .registry import get_method
    from .stack import one_thread

    spec = get_method(method)
    work, gray, _ = _prepare(window, focus_channel)
    with one_thread():
        return spec.tiling.coarse(work, gray, view, stats, mode=mode, **params)


def task_fuse(window, view: View, method: str, mode: str, device: str, params: dict,
              focus_channel, stats, coarse, dtype):
    """The method on one window; returns the fused core (in ``dtype``; no channel axis for
    a grey stack) and the core's height map (float32 slices)."""
    from ._device import release
    from .registry import get_method
    from .stack import one_thread, to_dtype

    spec = get_method(method)
    work, gray, had_channels = _prepare(window, focus_channel)
    try:
        with one_thread():
            out = spec.run(work, gray, mode=mode, device=device, progress=None,
                           keep_weights=False, context=Context(view, stats, coarse), **params)
    finally:
        release(device)
    y0, y1, x0, x1 = view.core
    image = to_dtype(np.asarray(out[0])[y0:y1, x0:x1], dtype)
    if not had_channels:
        image = image[..., 0]
    return image, np.asarray(out[1], dtype=np.float32)[y0:y1, x0:x1].copy()


# -- the runner --------------------------------------------------------------------------

def _client():
    """The active dask.distributed client, or None."""
    try:
        from distributed import default_client
    except ImportError:
        return None
    try:
        return default_client()
    except ValueError:
        return None


def _parallel(client, torch_on_cpu: bool) -> int:
    if client is not None:
        return max(1, sum(client.nthreads().values()))
    if torch_on_cpu:
        return 1  # torch already uses every core for one window
    return max(1, os.cpu_count() or 1)


def as_dask(stack: Any, tile: int):
    """``stack`` (dask array, numpy array, or a lazy source with ``shape``, ``dtype`` and
    numpy-style slicing such as :class:`napari_mfif.slide_io.TiffStackSource`) as a dask
    array chunked by tiles."""
    import dask.array as da

    if isinstance(stack, da.Array):
        return stack
    chunks = (1, tile, tile) + tuple(stack.shape[3:])
    if isinstance(stack, np.ndarray):
        return da.from_array(stack, chunks=chunks)
    from .slide_io import as_dask as source_as_dask

    return source_as_dask(stack, tile)


@dataclass
class TiledRun:
    """What :func:`run_tiles` did: the plan, the passes, and the device."""

    plan: Plan
    passes: int
    device: str
    workers: int


def run_tiles(
    array: Any,
    method: str,
    mode: str,
    device: str,
    params: dict,
    *,
    tile: int = DEFAULT_TILE,
    overlap: int | None = None,
    focus_channel: Any = None,
    dtype: Any = None,
    on_band: Callable[[int, np.ndarray, np.ndarray], None],
    progress: Callable[[int, int], None] | None = None,
) -> TiledRun:
    """Fuse a (Z, Y, X[, C]) dask array tile by tile.

    ``on_band(y0, image, height)`` receives the result top to bottom, a band (row of tiles)
    at a time in slices of at most :data:`BAND_ROWS` rows: ``image`` (rows, X[, C]) in ``dtype`` (default: the input's),
    ``height`` (rows, X) float32 in slices. ``progress(done, total)`` counts tile tasks
    over all passes and may raise to cancel. ``params`` are the method's resolved
    parameters; ``device`` a resolved device.
    """
    import dask

    from .registry import get_method

    spec = get_method(method)
    tiling = tileable(spec)
    z, h, w = (int(n) for n in array.shape[:3])
    if overlap is None:
        overlap = default_overlap(spec, params, z, mode)
    else:  # windows must still start on the method's grid
        overlap = _round_up(max(int(overlap), 1),
                            math.lcm(OVERLAP_MULTIPLE, max(int(tiling.align), 1)))
    plan = plan_tiles((h, w), tile, overlap)
    dtype = np.dtype(dtype or array.dtype)
    client = _client()
    parallel = _parallel(client, spec.torch_cpu and device == "cpu")
    passes = 1 + (tiling.stats is not None) + (tiling.coarse is not None)
    total = passes * plan.n_tiles
    done = 0

    def tick(n: int) -> None:
        nonlocal done
        done += n
        if progress is not None:
            progress(done, total)

    def window(t: Tile):
        y0, y1, x0, x1 = t.box
        return array[:, y0:y1, x0:x1]

    def share(value):
        # a whole-image result every task of a pass needs: sent once per worker
        if client is not None and value is not None:
            return client.scatter(value, broadcast=True)
        return value

    def compute(tasks: list) -> list:
        if client is not None:
            return list(dask.compute(*tasks))
        return list(dask.compute(*tasks, scheduler="threads", num_workers=parallel))

    def batches():
        tiles = plan.tiles
        for i in range(0, len(tiles), parallel):
            yield tiles[i:i + parallel]

    if progress is not None:
        progress(0, total)
    stats = coarse = None
    if tiling.stats is not None:
        parts = []
        for batch in batches():
            parts += compute([dask.delayed(task_stats)(window(t), t.view, method, mode, params,
                                                       focus_channel) for t in batch])
            tick(len(batch))
        stats = tiling.reduce_stats(parts, mode=mode, **params)
    stats_shared = share(stats)
    if tiling.coarse is not None:
        parts = []
        for batch in batches():
            parts += compute([dask.delayed(task_coarse)(window(t), t.view, method, mode, params,
                                                        focus_channel, stats_shared)
                              for t in batch])
            tick(len(batch))
        coarse = tiling.reduce_coarse(parts, (h, w), z, mode=mode, **params)
    coarse_shared = share(coarse)

    # the fusion itself, handed on band by band
    band_of = {id(t): i for i, row in enumerate(plan.rows) for t in row}
    pending: dict[int, dict[int, tuple]] = {}
    next_band = 0
    for batch in batches():
        results = compute([dask.delayed(task_fuse)(window(t), t.view, method, mode, device,
                                                   params, focus_channel, stats_shared,
                                                   coarse_shared, dtype) for t in batch])
        for t, result in zip(batch, results):
            pending.setdefault(band_of[id(t)], {})[t.box[2] + t.view.core[2]] = result
        while next_band in pending and len(pending[next_band]) == len(plan.rows[next_band]):
            row = plan.rows[next_band]
            done_row = pending.pop(next_band)
            pieces = [done_row[x] for x in sorted(done_row)]
            y0 = row[0].box[0] + row[0].view.core[0]
            rows = pieces[0][0].shape[0]
            # handed on in slices of rows, so a whole band is never copied at once
            for r in range(0, rows, BAND_ROWS):
                image = np.concatenate([p[0][r:r + BAND_ROWS] for p in pieces], axis=1)
                height = np.concatenate([p[1][r:r + BAND_ROWS] for p in pieces], axis=1)
                on_band(y0 + r, image, height)
            del pieces, done_row
            next_band += 1
        tick(len(batch))
    return TiledRun(plan, passes, device, parallel)
