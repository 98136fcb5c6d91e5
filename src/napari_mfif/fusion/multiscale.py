"""Multi-scale transform fusion: Laplacian pyramid and discrete wavelet transform.

Both methods decompose every slice into detail bands at several scales plus one coarse
approximation, fuse band by band and transform back (Burt & Adelson 1983; Burt & Kolczynski
1993; Li, Manjunath & Mitra 1995):

- the coarse approximation (the top Gaussian level, the DWT's low band) is the average of the
  slices: defocus barely changes it;
- at each detail level each position is given to the slice whose coefficients there are the
  most active (judged on the focus gray image, the luminance by default; the same choice is
  applied to every channel, so channels stay registered);
- the choice map of each level then goes through a consistency check, a majority filter over
  a ``consistency`` x ``consistency`` window (Li et al. 1995): a position whose neighbours
  mostly come from another slice takes that slice too, which removes isolated wrong picks.

``laplacian_pyramid``: a Gaussian pyramid with the standard 5-tap kernel
(1, 4, 6, 4, 1) / 16 (Burt & Adelson's a = 0.375), the Laplacian levels L_l = G_l - EXPAND(G_l+1);
activity = local energy of the Laplacian coefficient over a 3 x 3 window (Burt & Kolczynski's
salience). ``wavelet``: a 2-D DWT (PyWavelets, symmetric extension); one choice per position and
level for the three orientation bands together; activity (``activity``) = their summed squares
over a 3 x 3 window (``energy``, the default: it measured better), or Li et al.'s area-based
maximum of their summed absolute values over a 3 x 3 window (``max_abs``).

Noise floor (``noise_floor``, N-way only, as for the classic measures): the stack's pixel
noise is measured (:func:`napari_mfif.stack.noise_sigma`) and white noise of that level is
decomposed; per level, the floor is ``noise_floor`` times the 99th percentile of its activity.
Where the best slice's activity is below the floor, choosing would follow the noise (and, with
many slices, pick the largest noise of all): the slices' coefficients are averaged there
instead, which averages the noise away; the trust in the choice ramps from 0 at the floor to 1
at twice the floor (smoothed over 3 x 3). 0 turns it off.

Modes: ``nway`` chooses among all slices at once (the mean of all slices for the coarse band);
``series`` fuses the running result with the next slice, two at a time, as the papers do for
more than two images (the coarse band keeps a running mean, so every slice has an equal share
of it, as in N-way; no noise floor: the papers' plain rule).

The index map is the slice chosen at the finest detail level (after the consistency check;
for the DWT its half-resolution map brought to full size): whole slice numbers, telling which
slice the finest detail of each pixel came from (in flat or noise-only areas, where that
detail is averaged, it is as noisy as the choice was). It is not a per-pixel blend: a
multi-scale fusion mixes coarser detail from other slices into every pixel, so there are no
pixel-wise weights (``weights`` is None, also with ``return_weights=True``).

The result is clipped to the range of the input slices (per channel): the bands of different
slices can add up to a slight overshoot next to strong edges.
"""

from __future__ import annotations

import math
import warnings
from functools import partial

import numpy as np
from scipy import ndimage as ndi

from ..registry import Method, register_method
from ..stack import noise_samples, noise_sigma, noise_sigma_from
from ..tiles import Tiling

#: Burt & Adelson's generating kernel with a = 0.375
_KERNEL = np.array([1.0, 4.0, 6.0, 4.0, 1.0]) / 16.0

_PYRAMID_DEFAULTS = {"levels": 5, "consistency": 3, "noise_floor": 1.5}
_WAVELET_DEFAULTS = {"wavelet": "db2", "levels": 5, "activity": "energy", "consistency": 3,
                     "noise_floor": 1.5}
#: the wavelets offered (orthogonal Daubechies and symlets, Coiflet, and symmetric biorthogonal)
WAVELETS = ("haar", "db2", "db3", "db4", "sym4", "coif1", "bior2.2", "bior4.4")
_HELP = {
    "levels": "number of detail levels (clamped to what the image size allows); "
              "0 = as many as the size allows",
    "consistency": "size (coefficients) of the majority filter over each level's choice map; "
                   "0 or 1 = off",
    "wavelet": "the wavelet (PyWavelets name); its filter length sets the reach",
    "activity": "how active a position's detail coefficients are: energy = their squares "
                "over a 3 x 3 window; max_abs = Li et al.'s largest absolute value in it",
    "noise_floor": "nway: below this multiple of the activity pure noise reaches, the "
                   "slices' coefficients are averaged instead of chosen; 0 = off",
}


# -- Laplacian pyramid ------------------------------------------------------------------------

def _reduce(image: np.ndarray) -> np.ndarray:
    """Burt & Adelson's REDUCE: 5-tap Gaussian along Y and X, keep every other sample.
    (Y, X[, C]) -> (ceil(Y/2), ceil(X/2)[, C])."""
    k = _KERNEL.astype(image.dtype)
    out = ndi.correlate1d(image, k, axis=0, mode="reflect")[::2]
    return ndi.correlate1d(out, k, axis=1, mode="reflect")[:, ::2]


def _expand_axis(a: np.ndarray, n: int, axis: int) -> np.ndarray:
    """Upsample ``a`` by two along ``axis`` to length ``n`` (``a`` has ceil(n/2) samples) with
    the 5-tap kernel, in its two phases: even samples (1, 6, 1) / 8, odd samples (1, 1) / 2."""
    a = np.moveaxis(a, axis, 0)
    p = np.concatenate([a[:1], a, a[-1:]])  # edge extension
    out = np.empty((n,) + a.shape[1:], dtype=a.dtype)
    out[0::2] = (p[:-2] + 6 * p[1:-1] + p[2:])[: (n + 1) // 2] / 8
    out[1::2] = ((p[1:-1] + p[2:]) / 2)[: n // 2]
    return np.moveaxis(out, 0, axis)


def _expand(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Burt & Adelson's EXPAND to ``shape`` (Y, X)."""
    return _expand_axis(_expand_axis(image, shape[0], 0), shape[1], 1)


def pyramid_levels(shape: tuple[int, ...], levels: int) -> int:
    """The number of detail levels used for an image of ``shape`` (Y, X, ...): ``levels``
    clamped so that the top Gaussian level keeps at least 2 pixels on its shorter side (at
    least one level; ``levels`` = 0: as many as that allows)."""
    most = max(1, int(math.floor(math.log2(max(min(shape[:2]), 1)))) - 1)
    return most if levels <= 0 else max(1, min(int(levels), most))


def laplacian_pyramid(image: np.ndarray, levels: int) -> list[np.ndarray]:
    """[L_0, ..., L_{levels-1}, G_levels]: the Laplacian levels, finest first, then the top
    Gaussian level. ``image`` (Y, X) or (Y, X, C) float; ``levels`` as given (not clamped)."""
    out = []
    g = image
    for _ in range(levels):
        smaller = _reduce(g)
        out.append(g - _expand(smaller, g.shape[:2]))
        g = smaller
    out.append(g)
    return out


def reconstruct_pyramid(pyramid: list[np.ndarray]) -> np.ndarray:
    """The image back from :func:`laplacian_pyramid` (exact up to float rounding)."""
    image = pyramid[-1]
    for detail in reversed(pyramid[:-1]):
        image = detail + _expand(image, detail.shape[:2])
    return image


def _energy(detail: np.ndarray) -> np.ndarray:
    """Local energy of a (y, x) Laplacian level over a 3 x 3 window."""
    return ndi.uniform_filter(detail * detail, 3, mode="reflect")


# -- wavelet ------------------------------------------------------------------------------------

def _pywt():
    import pywt  # here, not at module level: listing the methods stays fast

    return pywt


def wavelet_levels(shape: tuple[int, ...], wavelet: str, levels: int) -> int:
    """The number of DWT levels used for an image of ``shape``: ``levels`` clamped to
    PyWavelets' ``dwt_max_level`` for the shorter side (at least one; 0 = that maximum)."""
    pywt = _pywt()
    most = max(1, pywt.dwt_max_level(min(shape[:2]), pywt.Wavelet(wavelet).dec_len))
    return most if levels <= 0 else max(1, min(int(levels), most))


def wavelet_decompose(image: np.ndarray, wavelet: str, levels: int) -> list:
    """``pywt.wavedec2`` over the first two axes (symmetric extension): [cA_n, (cH_n, cV_n,
    cD_n), ..., (cH_1, cV_1, cD_1)], coarsest first."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a level past dwt_max_level on a tiny image
        return _pywt().wavedec2(image, wavelet, mode="symmetric", level=levels, axes=(0, 1))


def wavelet_reconstruct(coeffs: list, wavelet: str, shape: tuple[int, ...]) -> np.ndarray:
    """The inverse of :func:`wavelet_decompose`, cropped to ``shape`` (Y, X, ...)."""
    image = _pywt().waverec2(coeffs, wavelet, mode="symmetric", axes=(0, 1))
    return image[: shape[0], : shape[1]]


def _wavelet_energy(bands: tuple) -> np.ndarray:
    """Local energy of one DWT level: the squared coefficients of the three orientation bands,
    summed, averaged over a 3 x 3 window."""
    total = bands[0] * bands[0] + bands[1] * bands[1] + bands[2] * bands[2]
    return ndi.uniform_filter(total, 3, mode="reflect")


def _wavelet_max_abs(bands: tuple) -> np.ndarray:
    """Li et al.'s area-based activity of one DWT level: the largest sum of absolute
    coefficients over the three orientation bands in a 3 x 3 window, squared (so that it is
    quadratic in intensity like the energy)."""
    total = np.abs(bands[0]) + np.abs(bands[1]) + np.abs(bands[2])
    peak = ndi.maximum_filter(total, 3, mode="reflect")
    return peak * peak


# -- the shared decision --------------------------------------------------------------------------

def majority(choice: np.ndarray, size: int) -> np.ndarray:
    """Consistency check (Li et al. 1995): each position takes the label most frequent in
    the ``size`` x ``size`` window around it; a tie keeps its own label. ``size`` <= 1: off."""
    if size <= 1:
        return choice
    labels = np.unique(choice)
    if labels.size < 2:
        return choice
    bonus = 0.5 / (size * size)  # below one vote: decides ties only
    best = np.full(choice.shape, -1.0, dtype=np.float32)
    out = choice.copy()
    for k in labels:
        mine = choice == k
        count = ndi.uniform_filter(mine.astype(np.float32), size, mode="reflect") + bonus * mine
        better = count > best
        best[better] = count[better]
        out[better] = k
    return out


def _to_pixels(level_map: np.ndarray, shape: tuple[int, int], offset: int | None) -> np.ndarray:
    """A map of the finest level brought to the pixels ``shape`` (Y, X): as it is for the
    pyramid (``offset`` None: its finest level has the pixels' shape); for the DWT's
    half-resolution band, whose symmetric extension adds ``offset`` = (filter length - 2) / 2
    coefficients in front, pixel y takes coefficient (y + offset) // 2."""
    if offset is None:
        return level_map
    iy = np.clip((np.arange(shape[0]) + offset) // 2, 0, level_map.shape[0] - 1)
    ix = np.clip((np.arange(shape[1]) + offset) // 2, 0, level_map.shape[1] - 1)
    return level_map[iy][:, ix]


def _in_range(fused: np.ndarray, stack: np.ndarray, span=None) -> np.ndarray:
    """Clip (Y, X, C) to each channel's range over the (Z, Y, X, C) stack (``span``: that
    range, (lo, hi), measured on the whole stack of a tiled run)."""
    lo, hi = span if span is not None else (stack.min(axis=(0, 1, 2)), stack.max(axis=(0, 1, 2)))
    return np.clip(fused, lo, hi, out=fused)


class _Transform:
    """A decomposition, its inverse and the activity of its detail levels."""

    def __init__(self, kind: str, shape, levels: int, wavelet: str = "db2",
                 activity: str = "energy"):
        self.kind, self.wavelet = kind, wavelet
        self._activity = (_energy if kind == "pyramid" else
                          _wavelet_energy if activity == "energy" else _wavelet_max_abs)
        if kind == "pyramid":
            self.levels = pyramid_levels(shape, levels)
            self.offset = None
        else:
            self.levels = wavelet_levels(shape, wavelet, levels)
            self.offset = (_pywt().Wavelet(wavelet).dec_len - 2) // 2

    def decompose(self, image: np.ndarray) -> list:
        """Detail levels finest first, then the coarse band."""
        if self.kind == "pyramid":
            return laplacian_pyramid(image, self.levels)
        coeffs = wavelet_decompose(image, self.wavelet, self.levels)
        return list(reversed(coeffs[1:])) + [coeffs[0]]

    def reconstruct(self, bands: list, shape) -> np.ndarray:
        if self.kind == "pyramid":
            return reconstruct_pyramid(bands)
        coeffs = [bands[-1]] + list(reversed(bands[:-1]))
        return wavelet_reconstruct(coeffs, self.wavelet, shape)

    def activity(self, detail) -> np.ndarray:
        return self._activity(detail)

    @staticmethod
    def take(fused, detail, where: np.ndarray):
        """Copy ``detail`` into ``fused`` where ``where`` (a (y, x) mask) holds."""
        pairs = zip(fused, detail) if isinstance(fused, tuple) else [(fused, detail)]
        for f, d in pairs:
            np.copyto(f, d, where=where.reshape(where.shape + (1,) * (f.ndim - 2)))


def _each(fn, *bands):
    """``fn`` applied to a band, or to each band of a tuple of bands (the DWT's three)."""
    if isinstance(bands[0], tuple):
        return tuple(fn(*parts) for parts in zip(*bands))
    return fn(*bands)


def noise_floors(t: "_Transform", sigma: float, shape, multiple: float) -> list[float] | None:
    """Per detail level, ``multiple`` times the 99th percentile of the activity that white
    noise of standard deviation ``sigma`` reaches (None when there is no floor)."""
    if multiple <= 0 or sigma <= 0:
        return None
    size = (min(shape[0], 512), min(shape[1], 512))
    noise = np.random.default_rng(0).standard_normal(size).astype(np.float32) * sigma
    return [multiple * float(np.percentile(t.activity(d), 99))
            for d in t.decompose(noise)[:-1]]


def _nway(t: _Transform, stack, gray, progress, consistency, noise_floor, sigma=None,
          shape=None, span=None):
    z = stack.shape[0]
    total = 2 * z
    best = choice = None
    for k in range(z):  # pass 1: the choice at every level, from the focus gray image
        acts = [t.activity(d) for d in t.decompose(gray[k])[:-1]]
        if best is None:
            best = acts
            choice = [np.zeros(a.shape, np.intp) for a in acts]
        else:
            for b, c, a in zip(best, choice, acts):
                better = a > b  # ties to the lower slice
                b[better] = a[better]
                c[better] = k
        if progress is not None:
            progress(k + 1, total)
    choice = [majority(c, consistency) for c in choice]
    # trust in the choice: 0 where the best activity is not above what noise reaches, 1 from
    # twice that; where it is low the slices' coefficients are averaged instead
    floors = noise_floors(t, noise_sigma(gray) if sigma is None else sigma,
                          gray.shape[1:] if shape is None else shape, noise_floor)
    trust = None
    if floors is not None:
        trust = [ndi.uniform_filter(np.clip(b / f - 1, 0, 1).astype(stack.dtype), 3,
                                    mode="reflect")[..., None] if f > 0 else None
                 for b, f in zip(best, floors)]
    del best
    fused = mean = None
    for k in range(z):  # pass 2: each slice's bands where it was chosen; the mean coarse band
        bands = t.decompose(stack[k])
        if fused is None:
            fused = [_each(np.copy, d) for d in bands[:-1]] + [bands[-1] / z]
            if trust is not None:
                mean = [_each(lambda b: b / z, d) for d in bands[:-1]]
        else:
            for f, d, c in zip(fused[:-1], bands[:-1], choice):
                t.take(f, d, c == k)
            fused[-1] += bands[-1] / z
            if mean is not None:
                for m, d in zip(mean, bands[:-1]):
                    _each(lambda mm, dd: np.add(mm, dd / z, out=mm), m, d)
        if progress is not None:
            progress(z + k + 1, total)
    if trust is not None:
        for i, (m, w) in enumerate(zip(mean, trust)):
            if w is not None:
                fused[i] = _each(lambda ff, mm: mm + w * (ff - mm), fused[i], m)
    image = _in_range(t.reconstruct(fused, stack.shape[1:]), stack, span)
    index = _to_pixels(choice[0], gray.shape[1:], t.offset).astype(np.float32)
    return image, index, None


def _pair_choice(t: _Transform, a_bands, b_bands, consistency):
    """Per detail level, True where the first image is taken (ties to it)."""
    return [majority(t.activity(da) >= t.activity(db), consistency)
            for da, db in zip(a_bands[:-1], b_bands[:-1])]


def _series(t: _Transform, stack, gray, progress, consistency, span=None):
    z = stack.shape[0]
    shape = stack.shape[1:]
    # the gray image rides along as one more channel, so the running result's gray is fused
    # with the same choices as its colours
    running = np.concatenate([stack[0], gray[0][..., None]], axis=-1)
    index = np.zeros(gray.shape[1:], np.float32)
    for k in range(1, z):
        a = t.decompose(running)
        b = t.decompose(np.concatenate([stack[k], gray[k][..., None]], axis=-1))
        take_a = _pair_choice(t, [_gray_of(d) for d in a], [_gray_of(d) for d in b],
                              consistency)
        for f, d, c in zip(a[:-1], b[:-1], take_a):
            t.take(f, d, ~c)
        a[-1] = (k * a[-1] + b[-1]) / (k + 1)  # running mean: equal shares of the coarse band
        running = t.reconstruct(a, shape)
        index = np.where(_to_pixels(take_a[0], shape[:2], t.offset), index, k).astype(np.float32)
        if progress is not None:
            progress(k, z - 1)
    image = _in_range(np.ascontiguousarray(running[..., :-1]), stack, span)
    return image, index, None


def _gray_of(band):
    """The last channel (the focus gray image) of a band or a tuple of bands."""
    if isinstance(band, tuple):
        return tuple(b[..., -1] for b in band)
    return band[..., -1]


def _run(kind, stack, gray, *, mode, device, progress, keep_weights, levels, consistency,
         noise_floor, wavelet="db2", activity="energy", context=None):
    if context is None:
        t = _Transform(kind, stack.shape[1:], levels, wavelet, activity)
        sigma = shape = span = None
    else:  # one window of a tiled run: the whole image's size, noise and range
        t = _Transform(kind, context.view.shape, levels, wavelet, activity)
        sigma, span = context.stats["sigma"], context.stats["span"]
        shape = context.view.shape
    if mode == "nway":
        return _nway(t, stack, gray, progress, int(consistency), noise_floor, sigma, shape, span)
    return _series(t, stack, gray, progress, int(consistency), span)


# -- tile by tile ---------------------------------------------------------------------------------

#: windows start on multiples of this, so that every level's sample grid is the whole image's
#: (enough for 6 levels; more are refused tile by tile)
_ALIGN = 64


def _levels_used(kind, shape, levels, wavelet):
    if kind == "pyramid":
        return pyramid_levels(shape, levels)
    return wavelet_levels(shape, wavelet, levels)


def _tile_reach(kind, params: dict, z: int, mode: str, shape=None) -> int:
    """How far (px) a fused pixel depends on the input, for ``levels`` L (the number asked
    for; at most :data:`_ALIGN`'s log2) and the consistency window m: the pyramid's 5-tap
    REDUCE/EXPAND chain reaches about (9 + max((m - 1) // 2, 1)) 2^(L-1) px; the DWT's filters
    of length F 2 (F - 1)(2^L - 1) + 2^(L+1) px; both plus the majority and trust filters at
    the coarsest level (m // 2 + 2) 2^L. Chained once per pair in series."""
    levels = int(params["levels"])
    m = int(params["consistency"])
    if levels <= 0 or 2 ** levels > _ALIGN:
        from .._errors import MfifError

        raise MfifError(
            f"tile by tile, {'laplacian_pyramid' if kind == 'pyramid' else 'wavelet'} needs a "
            f"fixed number of levels from 1 to {int(math.log2(_ALIGN))}; got levels={levels}")
    span = 2 ** levels
    if kind == "pyramid":
        step = (9 + max((m - 1) // 2, 1)) * span // 2
    else:
        f = _pywt().Wavelet(params["wavelet"]).dec_len
        step = 2 * (f - 1) * (span - 1) + 2 * span
    step += (m // 2 + 2) * span
    return step * max(z - 1, 1) if mode == "series" else step


def _tile_stats(gray, view, *, mode, stack, noise_floor, **params):
    """A window's noise samples (N-way with a noise floor) and its core's range per channel."""
    y0, y1, x0, x1 = view.core
    core = stack[:, y0:y1, x0:x1]
    samples = noise_samples(gray, view) if mode == "nway" and noise_floor > 0 else None
    return samples, core.min(axis=(0, 1, 2)), core.max(axis=(0, 1, 2))


def _tile_reduce_stats(parts, *, mode, noise_floor, **params):
    sigma = 0.0
    if parts[0][0] is not None:
        sigma = noise_sigma_from([p[0] for p in parts])
    lo = np.min([p[1] for p in parts], axis=0)
    hi = np.max([p[2] for p in parts], axis=0)
    return {"sigma": sigma, "span": (lo, hi)}


def _tiling(kind: str) -> Tiling:
    return Tiling(reach=partial(_tile_reach, kind), align=_ALIGN, stats=_tile_stats,
                  reduce_stats=_tile_reduce_stats)


def _pair_maps(kind, a, b, *, device, levels, consistency, noise_floor, wavelet="db2",
               activity="energy"):
    """Score: the finest level's activity of ``a`` over the sum of both (0.5 where both are
    flat); decision: the finest level's choice after the consistency check (1 where ``a``)."""
    t = _Transform(kind, a.shape, levels, wavelet, activity)
    fa = t.activity(t.decompose(a)[0])
    fb = t.activity(t.decompose(b)[0])
    total = fa + fb
    score = np.divide(fa, total, out=np.full_like(total, 0.5), where=total > 0)
    decision = majority(fa >= fb, int(consistency))
    return (_to_pixels(score, a.shape, t.offset),
            _to_pixels(decision, a.shape, t.offset).astype(np.float32))


register_method(
    Method(
        name="laplacian_pyramid",
        summary="Laplacian-pyramid fusion (Burt & Adelson): choose-max of local energy per "
                "level with a majority-filter consistency check, mean of the top level",
        run=partial(_run, "pyramid"),
        pair_maps=partial(_pair_maps, "pyramid"),
        params=dict(_PYRAMID_DEFAULTS),
        param_help={k: _HELP[k] for k in _PYRAMID_DEFAULTS},
        devices=("cpu",),
        pixelwise=False,
        tiling=_tiling("pyramid"),
    )
)

register_method(
    Method(
        name="wavelet",
        summary="discrete wavelet transform fusion (Li et al. 1995): area-based max-absolute "
                "detail coefficients with a majority-filter consistency check, mean low band",
        run=partial(_run, "wavelet"),
        pair_maps=partial(_pair_maps, "wavelet"),
        params=dict(_WAVELET_DEFAULTS),
        param_help={k: _HELP[k] for k in _WAVELET_DEFAULTS},
        param_choices={"wavelet": WAVELETS, "activity": ("energy", "max_abs")},
        devices=("cpu",),
        pixelwise=False,
        tiling=_tiling("wavelet"),
    )
)
