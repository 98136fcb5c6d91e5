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

from .._errors import MfifError
from ..registry import Method, register_method
from ..tiles import Tiling
from ..stack import (FILL_REACH, blend, fill_flat_areas, fill_maps, fill_sums, fuse_series,
                     index_from_weights, noise_samples, noise_sigma, noise_sigma_from,
                     nway_choice, nway_fuse, slice_threads)
from . import consistency as _consistency
from ._ops import NUMPY, TorchOps, radius as _radius

_DEFAULTS = {"presmooth": 1.0, "window": 3.0, "smooth": 2.0, "noise_floor": 3.0,
             "consistency": 0.0, "agreement": 0.4}
_HELP = {
    "presmooth": "Gaussian sigma (px) applied to each slice before measuring focus; 0 = off",
    "window": "Gaussian sigma (px) of the neighbourhood the focus measure is summed over",
    "smooth": "Gaussian sigma (px) of the decision smoothing; 0 = hard per-pixel choice",
    "noise_floor": "nway: below this multiple of the score pure noise reaches, a pixel takes "
                   "its textured neighbours' height and averages nearby slices; 0 = off",
    "consistency": "nway: Gaussian sigma (px) of the neighbourhood whose choices a pixel's "
                   "choice must agree with (against defocus rings); 0 = off",
    "agreement": "nway, with consistency: the share of the neighbourhood's votes that must be "
                 "within one slice of a pixel's choice for it to stand",
}

_SOBEL_DERIVATIVE = (-1.0, 0.0, 1.0)
_SOBEL_SMOOTHING = (1.0, 2.0, 1.0)


def _gaussian(image: np.ndarray, sigma: float) -> np.ndarray:
    return NUMPY.gaussian(image, sigma)


def tenengrad(gray, *, presmooth: float, window: float, ops=NUMPY):
    """Tenengrad focus measure: local sum of the squared Sobel gradient magnitude.

    Krotkov (1987); Pertuz et al. (2013) "Analysis of focus measure operators for
    shape-from-focus", operator GRA6. ``ops``: :data:`~napari_mfif.focus._ops.NUMPY` for a
    numpy ``gray``, a :class:`~napari_mfif.focus._ops.TorchOps` for a tensor.
    """
    g = ops.gaussian(gray, presmooth)
    gx = ops.correlate1d(ops.correlate1d(g, _SOBEL_DERIVATIVE, 1), _SOBEL_SMOOTHING, 0)
    gy = ops.correlate1d(ops.correlate1d(g, _SOBEL_DERIVATIVE, 0), _SOBEL_SMOOTHING, 1)
    del g
    gx *= gx  # in place (fresh arrays): gx * gx + gy * gy without two more maps
    gy *= gy
    gx += gy
    del gy
    return ops.gaussian(gx, window)


def local_variance(gray, *, presmooth: float, window: float, ops=NUMPY):
    """Local grey-level variance E[g^2] - E[g]^2 over a Gaussian window (Pertuz: STA3)."""
    g = ops.gaussian(gray, presmooth)
    w = max(window, 0.5)  # a variance needs a neighbourhood
    mean = ops.gaussian(g, w)
    return ops.clip0(ops.gaussian(g * g, w) - mean * mean)


def noise_score(measure, sigma: float, *, presmooth: float, window: float) -> float:
    """The 99th percentile of ``measure`` on white noise of standard deviation ``sigma``:
    the score that noise alone reaches (the measures are quadratic in intensity)."""
    if sigma <= 0:
        return 0.0
    unit = np.random.default_rng(0).standard_normal((128, 128)).astype(np.float32)
    score = measure(unit, presmooth=presmooth, window=window)[16:-16, 16:-16]
    return float(np.percentile(score, 99)) * sigma * sigma


def _measure_reach(params: dict) -> int:
    """How far (px) the shared measures see: pre-smoothing, a 1-px derivative, the window."""
    return _radius(params["presmooth"]) + 1 + _radius(max(params["window"], 0.5))


def _reach(measure_reach, params: dict, z: int, mode: str) -> int:
    """How far (px) a fused pixel depends on the input: the measure, the decision
    smoothing, and in N-way mode the consistency check (twice the measure: a pixel's
    alternative is scored where it is, its votes where they were cast) and, with a noise
    floor, the nearest fill scale; in series the steps chain, once per slice after the
    first."""
    step = measure_reach(params) + _radius(params["smooth"])
    if mode == "series":
        return step * max(z - 1, 1)
    check = _consistency.reach(params["consistency"])
    if check:
        step += check + measure_reach(params)
    return step + (FILL_REACH if params["noise_floor"] > 0 else 0)


def _floored(mode: str, noise_floor: float) -> bool:
    return mode == "nway" and noise_floor > 0


def _stats(measure, gray, view, *, mode, noise_floor, stack=None, **params):
    """Tiled pass 1: the noise samples of this window (N-way with a noise floor only)."""
    return noise_samples(gray, view) if _floored(mode, noise_floor) else None


def _reduce_stats(measure, parts, *, mode, presmooth, window, noise_floor, **params):
    """The noise floor (a focus score) from the noise samples of every window."""
    if not _floored(mode, noise_floor):
        return None
    sigma = noise_sigma_from(parts)
    return noise_floor * noise_score(measure, sigma, presmooth=presmooth, window=window)


def _coarse(measure, stack, gray, view, floor, *, mode, noise_floor, measure_reach, **params):
    """Tiled pass 2: this window's share of the wide flat-area fill scales (from the
    choose-max height and confidence of the run's own slice-by-slice fusion)."""
    if not _floored(mode, noise_floor) or not floor:
        return None  # no floor (or a noiseless stack, whose floor is 0): nothing to fill
    _, height, confidence = _streamed(measure, measure_reach, gray, floor=floor, fill=False,
                                      noise_floor=noise_floor, **params)
    return fill_sums(confidence, height, view)


def _reduce_coarse(measure, parts, shape, z, *, mode, noise_floor, **params):
    if not _floored(mode, noise_floor) or any(part is None for part in parts):
        return None
    return fill_maps(parts, shape, z)


def _run(measure, stack, gray, *, measure_reach, mode, device, progress, keep_weights,
         context=None, **params):
    if params.get("agreement", 0) > 1:
        raise MfifError(f"parameter 'agreement' is a share of the votes, from 0 to 1; got "
                        f"{params['agreement']:g}")
    if mode == "nway" and device == "cpu":
        weights = np.empty(gray.shape, gray.dtype) if keep_weights else None
        fused, height, _ = _streamed(measure, measure_reach, gray, stack=stack,
                                     weights=weights, progress=progress, context=context,
                                     **params)
        return fused, height, weights
    ops = TorchOps(device) if device != "cpu" else NUMPY
    return _fuse(measure, ops, stack, gray, mode=mode, progress=progress,
                 keep_weights=keep_weights, context=context, **params)


def _streamed(measure, measure_reach, gray, *, presmooth, window, smooth, noise_floor,
              consistency, agreement, floor=None, context=None, **options):
    """N-way on the CPU, slice by slice (:func:`napari_mfif.stack.nway_fuse`, ``options``
    passed on) with the measure, the decision smoothing, the noise floor and the
    consistency check of these parameters: the memory beyond the stack is a few
    image-sized maps, whatever the number of slices. ``floor`` (a tiled run's) or
    ``context`` replaces the floor measured on ``gray``."""
    if floor is None or context is not None:
        floor, view, maps = _floor(measure, gray, context, noise_floor=noise_floor,
                                   presmooth=presmooth, window=window)
    else:
        view = maps = None
    revise = None
    if consistency > 0:
        def revise(choice, scores, trust):
            return _consistency.check(choice, scores, trust, consistency=consistency,
                                      agreement=agreement)
    reach = measure_reach({"presmooth": presmooth, "window": window})
    return nway_fuse(partial(measure, presmooth=presmooth, window=window), gray, smooth,
                     floor=floor, revise=revise, threads=slice_threads(), focus_reach=reach,
                     view=view, maps=maps, **options)


def _choose(measure, ops, gray, progress, *, floor, presmooth, window, smooth, consistency,
            agreement):
    """The N-way choice before the flat-area fill: (weights, confidence), numpy.

    :func:`napari_mfif.stack.nway_choice`, with the consistency check
    (:mod:`napari_mfif.focus.consistency`) revising the per-pixel choice when it is on. On
    the GPU without the check it is :func:`_nway_choice_torch`; with it, the scores are
    computed by torch and brought back, and the check and the smoothing run in numpy.
    """
    if consistency <= 0 and ops is not NUMPY:
        return _nway_choice_torch(ops, measure, gray, progress, floor=floor,
                                  presmooth=presmooth, window=window, smooth=smooth)
    revise = None
    if consistency > 0:
        def revise(choice, scores, trust):
            return _consistency.check(choice, scores, trust, consistency=consistency,
                                      agreement=agreement)
    return nway_choice(partial(_score, measure, ops, presmooth=presmooth, window=window),
                       gray, partial(_gaussian, sigma=smooth), progress, floor=floor,
                       revise=revise, threads=slice_threads() if ops is NUMPY else 1,
                       smooth_reach=_radius(smooth))


def _score(measure, ops, gray, *, presmooth, window):
    """``measure`` of one numpy slice computed by ``ops``, as a numpy map of its dtype."""
    if ops is NUMPY:
        return measure(gray, presmooth=presmooth, window=window)
    return ops.numpy(measure(ops.tensor(gray), presmooth=presmooth, window=window,
                             ops=ops)).astype(gray.dtype)


def nway_weights(measure, gray, *, device="cpu", context=None, measure_reach=_measure_reach,
                 **params) -> np.ndarray:
    """The N-way weights (Z, Y, X) a choose-max method registered with ``measure`` (and
    ``measure_reach``) blends ``gray``'s slices with (noise floor and flat-area fill
    included; ``context`` as its ``run`` gets it in a tiled run), without the blend: for a
    method that combines them with its own (``focusnet``'s fine detail)."""
    if device == "cpu":
        weights = np.empty(gray.shape, gray.dtype)
        _streamed(measure, measure_reach, gray, weights=weights, context=context, **params)
        return weights
    ops = TorchOps(device)
    return _nway_weights(measure, ops, gray, None, context, **params)


def _floor(measure, gray, context, *, noise_floor, presmooth, window):
    """(floor, view, maps) of an N-way run: a tiled run's from its ``context``; else the
    noise floor measured on ``gray`` (0 when off), the whole image and no maps."""
    if context is not None:
        return context.stats or 0.0, context.view, context.coarse
    floor = 0.0
    if noise_floor > 0:
        sigma = noise_sigma(gray)
        floor = noise_floor * noise_score(measure, sigma, presmooth=presmooth, window=window)
    return floor, None, None


def _nway_weights(measure, ops, gray, progress, context, *, presmooth, window, smooth,
                  noise_floor, consistency, agreement):
    floor, view, maps = _floor(measure, gray, context, noise_floor=noise_floor,
                               presmooth=presmooth, window=window)
    weights, confidence = _choose(measure, ops, gray, progress, floor=floor,
                                  presmooth=presmooth, window=window, smooth=smooth,
                                  consistency=consistency, agreement=agreement)
    if confidence is not None:
        weights = fill_flat_areas(weights, confidence, view=view, maps=maps, in_place=True)
    return weights


def _fuse(measure, ops, stack, gray, *, mode, progress, keep_weights, presmooth, window,
          smooth, noise_floor, consistency=0.0, agreement=0.4, context=None):
    """The fusion with the focus measure and the decision smoothing computed by ``ops``
    (numpy on the CPU, or torch on ``ops.device``); the flat-area fill, the blend and the
    noise floor stay in numpy (the floor is measured with the numpy measure, so it is the
    same number on every device)."""
    if mode == "nway":
        weights = _nway_weights(measure, ops, gray, progress, context, presmooth=presmooth,
                                window=window, smooth=smooth, noise_floor=noise_floor,
                                consistency=consistency, agreement=agreement)
        return blend(stack, weights), index_from_weights(weights), weights

    if ops is NUMPY:
        focus = partial(measure, presmooth=presmooth, window=window)

        def pair_decision(a: np.ndarray, b: np.ndarray) -> np.ndarray:
            return _gaussian((focus(a) >= focus(b)).astype(a.dtype), smooth)
    else:
        def pair_decision(a: np.ndarray, b: np.ndarray) -> np.ndarray:
            fa, fb = (measure(ops.tensor(x), presmooth=presmooth, window=window, ops=ops)
                      for x in (a, b))
            return ops.numpy(ops.gaussian((fa >= fb).float(), smooth)).astype(a.dtype)

    return fuse_series(stack, gray, pair_decision, progress, keep_weights)


def _nway_choice_torch(ops, measure, gray, progress, *, floor, presmooth, window, smooth):
    """:func:`napari_mfif.stack.nway_choice` in torch on ``ops.device``: each slice is sent
    once, scored, and the running best kept on the device; the weights come back one slice
    at a time (numpy, ``gray.dtype``)."""
    torch = ops.torch
    z = gray.shape[0]
    with torch.inference_mode():
        best = choice = None
        for k in range(z):
            score = measure(ops.tensor(gray[k]), presmooth=presmooth, window=window, ops=ops)
            if best is None:
                best, choice = score, torch.zeros_like(score, dtype=torch.int64)
            else:
                better = score > best  # strict: ties go to the lower slice, as on the CPU
                best = torch.where(better, score, best)
                choice = torch.where(better, k, choice)
            if progress is not None:
                progress(k + 1, 2 * z)
        maps, total = [], None
        for k in range(z):
            maps.append(ops.gaussian((choice == k).float(), smooth))
            total = maps[-1].clone() if total is None else total.add_(maps[-1])
            if progress is not None:
                progress(z + k + 1, 2 * z)
        weights = np.empty(gray.shape, dtype=gray.dtype)
        for k, m in enumerate(maps):
            weights[k] = ops.numpy(m / total)
        confidence = None
        if floor > 0:
            confidence = ops.numpy(
                ops.gaussian((best / floor - 1).clamp(0, 1), smooth)).astype(gray.dtype)
    return weights, confidence


def _pair_maps(measure, a, b, *, device, presmooth, window, smooth, **params):
    """Score and decision of the pair (a, b): score = f(a) / (f(a) + f(b)) (0.5 where
    both are flat), decision = the smoothed choose-max map (1 where a is chosen)."""
    ops = TorchOps(device) if device != "cpu" else NUMPY
    fa, fb = (_score(measure, ops, x, presmooth=presmooth, window=window) for x in (a, b))
    total = fa + fb
    score = np.divide(fa, total, out=np.full_like(total, 0.5), where=total > 0)
    decision = _gaussian((fa >= fb).astype(a.dtype), smooth)
    return score, decision


def register_measure(name: str, measure, summary: str, *, defaults: dict | None = None,
                     measure_reach=_measure_reach, help: dict | None = None) -> Method:
    """Register a focus measure ``measure(gray, *, presmooth, window, ops=NUMPY) -> map``
    (written with the operations of ``ops``, see :mod:`napari_mfif.focus._ops`, so that it
    runs in numpy and in torch) as a choose-max fusion method called ``name``, with the
    shared parameters and steps. It runs on the CPU, and on a CUDA GPU when asked for
    (``device="cuda"``; ``auto`` keeps it on the CPU). On the CPU the slices are scored on
    several threads at once (:func:`napari_mfif.stack.slice_threads`), so ``measure`` must
    be safe to call from several threads (plain numpy and scipy code is).

    ``defaults`` overrides shared defaults, ``help`` their one-line meanings;
    ``measure_reach(params) -> px`` says how far the measure sees (the default: the shared
    measures' pre-smoothing, a 1-px derivative and the window)."""
    return register_method(
        Method(
            name=name,
            summary=summary,
            run=partial(_run, measure, measure_reach=measure_reach),
            pair_maps=partial(_pair_maps, measure),
            params={**_DEFAULTS, **(defaults or {})},
            param_help={**_HELP, **(help or {})},
            devices=("cpu", "cuda"),
            auto_cuda=False,
            slice_by_slice=True,
            tiling=Tiling(
                reach=partial(_reach, measure_reach),
                align=16,
                stats=partial(_stats, measure),
                reduce_stats=partial(_reduce_stats, measure),
                coarse=partial(_coarse, measure, measure_reach=measure_reach),
                reduce_coarse=partial(_reduce_coarse, measure),
            ),
        )
    )


register_measure("tenengrad", tenengrad,
                 "Tenengrad (Sobel gradient energy) focus measure, choose-max with a smoothed decision")
register_measure("variance", local_variance,
                 "local grey-level variance focus measure, choose-max with a smoothed decision")
