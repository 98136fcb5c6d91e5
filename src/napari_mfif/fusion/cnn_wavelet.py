"""Wavelet fusion driven by the focus CNN, registered as ``cnn_wavelet`` (papers 002, 003).

Each slice is decomposed with a 2-D DWT (PyWavelets, symmetric extension, as the ``wavelet``
method: :func:`napari_mfif.fusion.multiscale.wavelet_decompose`), the bands are fused and the
result is transformed back. The fusion rule of every band is the focus CNN's decision, made
at full resolution by the ``cnn`` method's own pipeline and brought to each level's
coefficient grid:

- ``nway``: the ``cnn`` method's per-slice weights W (Z, Y, X; its softmax or hard rule,
  small-region removal and guided filter, summing to one: exactly what ``cnn`` blends the
  slices with). At each level l, W is resampled to the level's band size (:func:`level_maps`)
  and renormalised to sum to one; the fused detail coefficients are sum_k W_l[k] d_k (for the
  three orientation bands and every channel alike), and the low band is the same weighted
  average with W at the coarsest level.
- ``series``: the papers' way for more than two images: the running result A is fused with
  the next slice B. The CNN pair decision D (full resolution, after the ``cnn`` method's
  threshold, small-region removal and guided filter; judged on A's fused gray image, which
  rides along as one more channel) is resampled to every level the same way, and each detail
  band becomes D_l a + (1 - D_l) b; so does the low band, with D at the coarsest level. (A
  running mean of the low band, ``wavelet``'s series rule, measured up to 0.6 dB lower at 5
  levels and 1.4-6 dB lower at 3 levels on synthetic stacks: defocus changes the low band at
  those scales; the weighted average is also the ``nway`` rule.)

**Resampling a full-resolution map to the coefficient grid** (:func:`level_maps`): a
coefficient of level l stands for a block of about 2^l x 2^l pixels. The maps are made level
by level, as the DWT makes its approximations: level l is the mean over 2 x 2 blocks of level
l - 1 (level 0: the pixels), where coefficient i covers positions 2i - s and 2i + 1 - s of the
level below (s = (filter length - 2) / 2, the shift of PyWavelets' symmetric-mode grid, as in
``wavelet``'s index map) and positions outside the level below are taken from its
half-sample symmetric extension, so the map has the band's size floor((n + F - 1) / 2) at
every level. Block means keep a constant map constant and weights that sum to one still sum
to one (they are renormalised anyway, for rounding). Since every level only looks at the one
below, a window of a tiled run whose origin is on the 2^levels grid gets the whole image's
numbers away from its edges.

There is no consistency check (majority filter) on the maps: the CNN pipeline's own steps
(small-region removal, guided filter) already smooth its decision.

The index map is the ``cnn`` method's: the weighted slice index of W (``nway``) or the
series rule index <- D index + (1 - D) k (``series``). As for ``wavelet``, there are no
per-pixel weights (``weights`` is None): coarse bands mix the slices differently from the
fine ones. The result is clipped to the input's range per channel.

Tile by tile: windows start on multiples of 64 (the DWT's grid up to 6 levels; the CNN needs
16), the reach is the DWT's (``wavelet`` without a consistency filter) plus the CNN's, and the
statistics are the CNN's intensity range (and each channel's range, for the clipping). As for
``cnn``, the small-region area is absolute in tiles, so tiles match the whole image within
float rounding with ``min_region=0`` (see ``docs/slides.md``).
"""

from __future__ import annotations

import math

import numpy as np

from .._errors import MfifError
from .._view import Context
from ..registry import Method, get_method, register_method
from ..tiles import Tiling
from . import cnn_pipeline as cnn
from . import multiscale as ms

_CNN = get_method("cnn")  # registered by importing cnn_pipeline
#: this method's own parameters (the DWT's), followed by the ``cnn`` method's
DEFAULTS = {"wavelet": "db2", "levels": 5, **_CNN.params}
HELP = {
    "wavelet": ms._HELP["wavelet"],
    "levels": "number of DWT levels (clamped to what the image size allows); 0 = as many as "
              "the size allows (not tile by tile)",
    **_CNN.param_help,
}
CHOICES = {"wavelet": ms.WAVELETS, **_CNN.param_choices}
#: windows of tiled runs start on multiples of this: the DWT's grid (6 levels) and the CNN's
ALIGN = math.lcm(ms._ALIGN, cnn.ALIGN)


def _check_size(h: int, w: int) -> None:
    if h < cnn.PATCH or w < cnn.PATCH:
        raise MfifError(
            f"method 'cnn_wavelet' judges {cnn.PATCH} x {cnn.PATCH} patches and these slices "
            f"are {h} x {w} pixels; use a classic method such as wavelet for images this small"
        )


# -- the decision maps on the coefficient grids -------------------------------------------------

def _half(m: np.ndarray, axis: int, n_out: int, shift: int) -> np.ndarray:
    """Means of pairs along ``axis``: output i = mean of positions 2i - shift, 2i + 1 - shift
    of ``m``, positions outside taken from its half-sample symmetric extension."""
    n = m.shape[axis]
    pad = [(0, 0)] * m.ndim
    pad[axis] = (shift, max(0, 2 * n_out - shift - n))
    p = np.pad(m, pad, mode="symmetric")
    p = np.moveaxis(p, axis, 0)[: 2 * n_out]
    out = (p[0::2] + p[1::2]) * np.asarray(0.5, dtype=m.dtype)
    return np.moveaxis(out, 0, axis)


def level_maps(m: np.ndarray, wavelet: str, levels: int) -> list[np.ndarray]:
    """A full-resolution map ``m`` (..., Y, X) on the coefficient grid of every DWT level:
    [level 1, ..., level ``levels``], finest first, each (..., h_l, w_l) with the size of that
    level's bands in :func:`napari_mfif.fusion.multiscale.wavelet_decompose` (also its low
    band's, for the last). Level l is the 2 x 2 block mean of level l - 1 on PyWavelets'
    symmetric-mode grid (see the module docstring)."""
    f = ms._pywt().Wavelet(wavelet).dec_len
    shift = (f - 2) // 2
    out = []
    cur = m
    for _ in range(levels):
        for axis in (-2, -1):
            n_out = (cur.shape[axis] + f - 1) // 2  # pywt.dwt_coeff_len, symmetric mode
            cur = _half(cur, cur.ndim + axis, n_out, shift)
        out.append(cur)
    return out


def level_weights(weights: np.ndarray, wavelet: str, levels: int) -> list[np.ndarray]:
    """Per-slice weights (Z, Y, X) on every level's grid (:func:`level_maps`), renormalised to
    sum to one over the slices at every coefficient."""
    out = []
    for w in level_maps(weights, wavelet, levels):
        total = w.sum(axis=0, keepdims=True)
        out.append(w / np.maximum(total, np.asarray(1e-6, dtype=w.dtype)))
    return out


def _weighted(w: np.ndarray, band: np.ndarray) -> np.ndarray:
    """A (h, w) map times a (h, w, C) band."""
    return w[..., None] * band


# -- the two modes ---------------------------------------------------------------------------

def _cnn_params(params: dict) -> dict:
    return {k: params[k] for k in _CNN.params if k in params}


def _nway(stack, gray, *, device, progress, wavelet, levels, cnn_params, cnn_context, span):
    z = stack.shape[0]
    total = 2 * z + 1  # the CNN's z + 1 steps, then one per slice
    inner = None if progress is None else (lambda done, _total: progress(done, total))
    # the cnn method itself: its weights and its index map (its blend is not used)
    _, index, weights = cnn.run(stack, gray, mode="nway", device=device, progress=inner,
                                keep_weights=True, context=cnn_context, **cnn_params)
    maps = level_weights(np.asarray(weights, dtype=stack.dtype), wavelet, levels)
    del weights
    low = details = None
    for k in range(z):
        coeffs = ms.wavelet_decompose(stack[k], wavelet, levels)
        bands = list(reversed(coeffs[1:]))  # finest first, as ``maps``
        if details is None:
            low = np.zeros_like(coeffs[0])
            details = [tuple(np.zeros_like(b) for b in level) for level in bands]
        low += _weighted(maps[-1][k], coeffs[0])
        for fused, level, w in zip(details, bands, maps):
            for f, b in zip(fused, level):
                f += _weighted(w[k], b)
        if progress is not None:
            progress(z + 2 + k, total)
    coeffs = [low] + list(reversed(details))
    image = ms._in_range(ms.wavelet_reconstruct(coeffs, wavelet, stack.shape[1:]), stack, span)
    return image, index, None


def _series(stack, gray, *, device, progress, wavelet, levels, cnn_params, cnn_context,
            span):
    import torch

    z, h, w = gray.shape
    scorer = cnn._scorer(cnn_params["arch"], cnn_params["weights"], device,
                         cnn_params.get("training", "papers"))
    g, area = cnn.prepared(gray, cnn_params["min_region"], cnn_context)
    steps = dict(threshold=cnn_params["threshold"], area=area,
                 radius=int(round(cnn_params["gf_radius"])), gf_eps=cnn_params["gf_eps"],
                 levels=cnn._levels(cnn_params))
    shape = stack.shape[1:]
    # the [0, 1] gray image rides along as one more channel, so that the running result's
    # gray (what the CNN judges next) is fused with the same maps as its colours
    running = np.concatenate([stack[0], g[0][..., None].astype(stack.dtype)], axis=-1)
    index = np.zeros((h, w), np.float32)
    with torch.inference_mode():
        for k in range(1, z):
            nxt = np.concatenate([stack[k], g[k][..., None].astype(stack.dtype)], axis=-1)
            d = cnn._pair_steps(scorer, np.ascontiguousarray(running[..., -1]), g[k],
                                **steps)[1].astype(stack.dtype)
            a = ms.wavelet_decompose(running, wavelet, levels)
            b = ms.wavelet_decompose(nxt, wavelet, levels)
            maps = level_maps(d, wavelet, levels)[::-1]  # coarsest first, as the coefficients
            # the low band too is weighted by the decision (at the coarsest level)
            fused = [_weighted(maps[0], a[0]) + _weighted(1 - maps[0], b[0])]
            for la, lb, dl in zip(a[1:], b[1:], maps):
                fused.append(tuple(_weighted(dl, x) + _weighted(1 - dl, y)
                                   for x, y in zip(la, lb)))
            running = ms.wavelet_reconstruct(fused, wavelet, shape)
            index = (d * index + (1 - d) * k).astype(np.float32)
            if progress is not None:
                progress(k, z - 1)
    image = ms._in_range(np.ascontiguousarray(running[..., :-1]), stack, span)
    return image, index, None


def run(stack, gray, *, mode, device, progress, keep_weights, wavelet, levels, context=None,
        **params):
    _check_size(*gray.shape[1:])
    cnn_params = _cnn_params(params)
    if context is None:
        n_levels = ms.wavelet_levels(stack.shape[1:], wavelet, levels)
        cnn_context = span = None
    else:  # one window of a tiled run: the whole image's size and statistics
        n_levels = ms.wavelet_levels(context.view.shape, wavelet, levels)
        cnn_context = Context(context.view, context.stats["cnn"], None)
        span = context.stats["range"]
    fn = _nway if mode == "nway" else _series
    return fn(stack, gray, device=device, progress=progress, wavelet=wavelet, levels=n_levels,
              cnn_params=cnn_params, cnn_context=cnn_context, span=span)


def pair_maps(a, b, *, device, wavelet, levels, **params):
    """The ``cnn`` method's focus map and final decision for two gray slices (the map that
    drives every level in series mode)."""
    return cnn.pair_maps(a, b, device=device, **_cnn_params(params))


# -- tile by tile -------------------------------------------------------------------------------

def _reach(params: dict, z: int, mode: str) -> int:
    """The DWT's reach (``wavelet``'s, without a consistency filter: analysis and synthesis
    filters plus two coarsest blocks, which cover the block means of the maps) plus the CNN's
    (its patches and guided filter); chained once per pair in series."""
    levels = int(params["levels"])
    if levels <= 0 or 2 ** levels > ms._ALIGN:
        raise MfifError(
            "tile by tile, cnn_wavelet needs a fixed number of levels from 1 to "
            f"{int(math.log2(ms._ALIGN))}; got levels={levels}")
    dwt = ms._tile_reach("wavelet", {"levels": levels, "consistency": 0,
                                     "wavelet": params["wavelet"]}, 1, "nway")
    step = dwt + cnn._reach(params, 1, "nway")
    return step * max(z - 1, 1) if mode == "series" else step


def _stats(gray, view, *, mode, stack, **params):
    """The CNN's intensity sample of the window, and its core's range per channel."""
    y0, y1, x0, x1 = view.core
    core = stack[:, y0:y1, x0:x1]
    return (cnn._stats(gray, view, mode=mode, **params), core.min(axis=(0, 1, 2)),
            core.max(axis=(0, 1, 2)))


def _reduce_stats(parts, *, mode, **params):
    return {"cnn": cnn._reduce_stats([p[0] for p in parts], mode=mode, **params),
            "range": (np.min([p[1] for p in parts], axis=0),
                      np.max([p[2] for p in parts], axis=0))}


register_method(Method(
    name="cnn_wavelet",
    summary="wavelet (DWT) fusion driven by the focus CNN, as in PDMNet: the cnn method's "
            "decision resampled to every level weighs the detail and low bands",
    run=run,
    pair_maps=pair_maps,
    params=dict(DEFAULTS),
    param_help=dict(HELP),
    param_choices=dict(CHOICES),
    devices=("cpu", "cuda"),
    torch_cpu=True,
    pixelwise=False,
    tiling=Tiling(reach=_reach, align=ALIGN, stats=_stats, reduce_stats=_reduce_stats),
))
