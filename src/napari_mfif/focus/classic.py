"""Classic focus measures with per-pixel choose-max and a smoothed decision.

Each measure scores a gray slice pixel by pixel; the fusion gives each pixel to the slice
that scores highest (N-way) or to the sharper of two images at each step (series), then
smooths the decision so that isolated wrong picks disappear and seams are soft.

Parameters shared by the measures (all in pixels, Gaussian sigmas; 0 turns a step off):

- ``presmooth``: smoothing of the slice before measuring, so that pixel noise is not
  mistaken for detail.
- ``window``: size of the neighbourhood the measure is summed over (focus is a property
  of a neighbourhood, not of one pixel).
- ``smooth``: smoothing of the decision maps (softer seams, fewer isolated picks).
- ``noise_floor`` (N-way): a multiple of the focus score that the stack's pixel noise alone
  reaches (its 99th percentile, from the noise level measured on the stack). Where the best
  slice does not score clearly above it (between 1x and 2x the floor the trust ramps up), the
  pixel is in a flat area and its choice would follow the noise: it takes the height of its
  textured neighbours instead, and averages the slices near that height, which also averages
  their noise. 0 turns it off. Series mode keeps the papers' plain pairwise rule.
"""

from __future__ import annotations

from functools import partial

import numpy as np
from scipy import ndimage as ndi

from ..registry import Method, register_method
from ..tiles import Tiling
from ..stack import (FILL_REACH, blend, fill_maps, fill_sums, fuse_series, index_from_weights,
                     noise_samples, noise_sigma, noise_sigma_from, nway_choice,
                     nway_weights)

_DEFAULTS = {"presmooth": 1.0, "window": 3.0, "smooth": 2.0, "noise_floor": 3.0}
_HELP = {
    "presmooth": "Gaussian sigma (px) applied to each slice before measuring focus; 0 = off",
    "window": "Gaussian sigma (px) of the neighbourhood the focus measure is summed over",
    "smooth": "Gaussian sigma (px) of the decision smoothing; 0 = hard per-pixel choice",
    "noise_floor": "nway: below this multiple of the score pure noise reaches, a pixel takes "
                   "its textured neighbours' height and averages nearby slices; 0 = off",
}


def _gaussian(image: np.ndarray, sigma: float) -> np.ndarray:
    if sigma <= 0:
        return image
    return ndi.gaussian_filter(image, sigma, mode="reflect", truncate=3.0)


def tenengrad(gray: np.ndarray, *, presmooth: float, window: float) -> np.ndarray:
    """Tenengrad focus measure: local sum of the squared Sobel gradient magnitude.

    Krotkov (1987); Pertuz et al. (2013) "Analysis of focus measure operators for
    shape-from-focus", operator GRA6.
    """
    g = _gaussian(gray, presmooth)
    gx = ndi.sobel(g, axis=1, mode="reflect")
    gy = ndi.sobel(g, axis=0, mode="reflect")
    return _gaussian(gx * gx + gy * gy, window)


def local_variance(gray: np.ndarray, *, presmooth: float, window: float) -> np.ndarray:
    """Local grey-level variance E[g^2] - E[g]^2 over a Gaussian window (Pertuz: STA3)."""
    g = _gaussian(gray, presmooth)
    w = max(window, 0.5)  # a variance needs a neighbourhood
    mean = _gaussian(g, w)
    return np.maximum(_gaussian(g * g, w) - mean * mean, 0)


def noise_score(measure, sigma: float, *, presmooth: float, window: float) -> float:
    """The 99th percentile of ``measure`` on white noise of standard deviation ``sigma``:
    the score that noise alone reaches (the measures are quadratic in intensity)."""
    if sigma <= 0:
        return 0.0
    unit = np.random.default_rng(0).standard_normal((128, 128)).astype(np.float32)
    score = measure(unit, presmooth=presmooth, window=window)[16:-16, 16:-16]
    return float(np.percentile(score, 99)) * sigma * sigma


def _radius(sigma: float) -> int:
    """Pixels a :func:`_gaussian` of ``sigma`` reaches (scipy: int(truncate * sigma + 0.5))."""
    return int(3.0 * sigma + 0.5) if sigma > 0 else 0


def _reach(params: dict, z: int, mode: str) -> int:
    """How far (px) a fused pixel depends on the input: the measure (pre-smoothing, a 1-px
    derivative, the window), the decision smoothing, and in N-way mode with a noise floor
    the nearest fill scale; in series the steps chain, once per slice after the first."""
    step = (_radius(params["presmooth"]) + 1 + _radius(max(params["window"], 0.5))
            + _radius(params["smooth"]))
    if mode == "series":
        return step * max(z - 1, 1)
    return step + (FILL_REACH if params["noise_floor"] > 0 else 0)


def _floored(mode: str, noise_floor: float) -> bool:
    return mode == "nway" and noise_floor > 0


def _stats(measure, gray, view, *, mode, presmooth, window, smooth, noise_floor, stack=None):
    """Tiled pass 1: the noise samples of this window (N-way with a noise floor only)."""
    return noise_samples(gray, view) if _floored(mode, noise_floor) else None


def _reduce_stats(measure, parts, *, mode, presmooth, window, smooth, noise_floor):
    """The noise floor (a focus score) from the noise samples of every window."""
    if not _floored(mode, noise_floor):
        return None
    sigma = noise_sigma_from(parts)
    return noise_floor * noise_score(measure, sigma, presmooth=presmooth, window=window)


def _coarse(measure, stack, gray, view, floor, *, mode, presmooth, window, smooth,
            noise_floor):
    """Tiled pass 2: this window's share of the wide flat-area fill scales."""
    if not _floored(mode, noise_floor) or not floor:
        return None  # no floor (or a noiseless stack, whose floor is 0): nothing to fill
    weights, confidence = nway_choice(partial(measure, presmooth=presmooth, window=window),
                                      gray, partial(_gaussian, sigma=smooth), floor=floor)
    return fill_sums(confidence, index_from_weights(weights), view)


def _reduce_coarse(measure, parts, shape, z, *, mode, presmooth, window, smooth, noise_floor):
    if not _floored(mode, noise_floor) or any(part is None for part in parts):
        return None
    return fill_maps(parts, shape, z)


def _run(measure, stack, gray, *, mode, device, progress, keep_weights, presmooth, window,
         smooth, noise_floor, context=None):
    focus = partial(measure, presmooth=presmooth, window=window)
    smoothing = partial(_gaussian, sigma=smooth)
    if mode == "nway":
        floor, view, maps = 0.0, None, None
        if context is not None:
            floor, view, maps = context.stats or 0.0, context.view, context.coarse
        elif noise_floor > 0:
            sigma = noise_sigma(gray)
            floor = noise_floor * noise_score(measure, sigma, presmooth=presmooth, window=window)
        weights = nway_weights(focus, gray, smoothing, progress, floor=floor, view=view,
                               maps=maps)
        return blend(stack, weights), index_from_weights(weights), weights

    def pair_decision(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return smoothing((focus(a) >= focus(b)).astype(a.dtype))

    return fuse_series(stack, gray, pair_decision, progress, keep_weights)


def _pair_maps(measure, a, b, *, device, presmooth, window, smooth, noise_floor):
    """Score and decision of the pair (a, b): score = f(a) / (f(a) + f(b)) (0.5 where
    both are flat), decision = the smoothed choose-max map (1 where a is chosen)."""
    fa = measure(a, presmooth=presmooth, window=window)
    fb = measure(b, presmooth=presmooth, window=window)
    total = fa + fb
    score = np.divide(fa, total, out=np.full_like(total, 0.5), where=total > 0)
    decision = _gaussian((fa >= fb).astype(a.dtype), smooth)
    return score, decision


def register_measure(name: str, measure, summary: str) -> Method:
    """Register a focus measure ``measure(gray, *, presmooth, window) -> map`` as a
    choose-max fusion method called ``name``, with the shared parameters and steps."""
    return register_method(
        Method(
            name=name,
            summary=summary,
            run=partial(_run, measure),
            pair_maps=partial(_pair_maps, measure),
            params=dict(_DEFAULTS),
            param_help=dict(_HELP),
            devices=("cpu",),
            tiling=Tiling(
                reach=_reach,
                align=16,
                stats=partial(_stats, measure),
                reduce_stats=partial(_reduce_stats, measure),
                coarse=partial(_coarse, measure),
                reduce_coarse=partial(_reduce_coarse, measure),
            ),
        )
    )


register_measure("tenengrad", tenengrad,
                 "Tenengrad (Sobel gradient energy) focus measure, choose-max with a smoothed decision")
register_measure("variance", local_variance,
                 "local grey-level variance focus measure, choose-max with a smoothed decision")
