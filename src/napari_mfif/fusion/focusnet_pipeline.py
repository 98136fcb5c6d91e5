"""The ``focusnet`` method: a small learned focus network that judges all slices at once.

Every slice is scored once by :mod:`napari_mfif.focus.focusnet` (one score per 4 x 4 pixels,
upsampled bilinearly); in ``nway`` mode the softmax of the scores across slices is each
slice's weight, so a pixel comes from the slice that is clearly sharpest there and is shared
only where slices are about equally good (flat background, a surface between two slices),
which also averages their noise. The height map is the weighted slice index. ``series`` mode
fuses two at a time in slice order, the running result weighted by
``sigmoid(score_a - score_b)``.

The network was trained on simulated stacks of every kind the plugin meets: Gaussian-blur
photographs and micrographs, partially coherent brightfield (defocus fringes), widefield
fluorescence (haze, fine z steps), reflected light on flat pads and traces, empty
background, and stacks where no slice is in focus (``napari_mfif.train_focusnet``).

``gf_radius`` > 0 smooths the weights with a guided filter (guide: the fused gray image), as
the ``cnn`` method does; 0 (default) leaves them as the network gives them.

Intensities are scaled to [0, 1] with one pair of percentiles for the whole stack before
scoring (as for ``cnn``). Torch is imported only when the method runs.
"""

from __future__ import annotations

import math

import numpy as np

from .._errors import MfifError
from ..registry import Method, register_method
from ..stack import blend, fuse_series, index_from_weights
from ..tiles import Tiling
from .cnn_pipeline import as_tensor, intensity_range, intensity_samples, normalise

DEFAULTS = {"weights": "", "neighbourhood": 32.0, "neighbourhood_weight": 0.5,
            "detail": 5.0, "gf_radius": 0, "gf_eps": 0.01}
HELP = {
    "detail": "N-way: how strongly the slice with the most fine detail (the dog method's "
              "pick) is preferred where the network finds slices about equally good; it is "
              "weighted 1 + detail times the others (0 = the network alone)",
    "neighbourhood": "radius (Gaussian sigma, pixels) over which neighbouring evidence is "
                     "added to each pixel's focus scores, so flat areas follow their "
                     "surroundings (0 = off)",
    "neighbourhood_weight": "how much the neighbourhood's evidence counts against the "
                            "pixel's own (0 = only the pixel's own)",
    "weights": "path of a weights file from 'python -m napari_mfif.train_focusnet' (empty: "
               "the shipped weights)",
    "gf_radius": "guided-filter radius smoothing the slice weights, in pixels (0 = none)",
    "gf_eps": "guided-filter regularisation for [0, 1] images",
}
#: smallest slice the network judges (px)
MIN_SIZE = 8
#: score grid step (focus.focusnet.STRIDE; not imported: that imports torch)
STRIDE = 4
#: receptive-field radius plus the upsampling's reach (px)
REACH = 31 + 2 * STRIDE
#: pixels scored per network call (slices are batched up to this)
BATCH_PIXELS = 4_000_000


def check_size(h: int, w: int) -> None:
    if h < MIN_SIZE or w < MIN_SIZE:
        raise MfifError(f"method 'focusnet' needs slices of at least {MIN_SIZE} x {MIN_SIZE} "
                        f"pixels and these are {h} x {w}; use a classic method such as "
                        f"tenengrad for images this small")


def _detail_on(mode: str, params: dict) -> bool:
    return mode == "nway" and float(params["detail"]) > 0


def _dog():
    """The dog method and its default parameters: the fine detail's pick."""
    from ..registry import get_method

    spec = get_method("dog")
    return spec, dict(spec.params)


def _reach(params: dict, z: int, mode: str) -> int:
    hood = 4 * float(params["neighbourhood"]) + STRIDE if params["neighbourhood_weight"] else 0
    step = REACH + int(math.ceil(hood)) + 2 * int(round(params["gf_radius"])) + 4
    if mode == "series":
        return step * max(z - 1, 1)
    if _detail_on(mode, params):
        spec, dog = _dog()
        step = max(step, spec.tiling.reach(dog, z, mode))
    return step


# the tiled passes: the network's intensity range, and the dog pick's own passes (its noise
# floor and flat-area fill) when ``detail`` is on


def _stats(gray, view, *, mode, stack=None, **params):
    part = {"span": intensity_samples(gray, view)}
    if _detail_on(mode, params):
        spec, dog = _dog()
        part["dog"] = spec.tiling.stats(gray, view, mode=mode, stack=stack, **dog)
    return part


def _reduce_stats(parts, *, mode, **params):
    out = {"span": intensity_range([p["span"] for p in parts])}
    if _detail_on(mode, params):
        spec, dog = _dog()
        out["dog"] = spec.tiling.reduce_stats([p["dog"] for p in parts], mode=mode, **dog)
    return out


def _coarse(stack, gray, view, stats, *, mode, **params):
    if not _detail_on(mode, params):
        return None
    spec, dog = _dog()
    return spec.tiling.coarse(stack, gray, view, stats["dog"], mode=mode, **dog)


def _reduce_coarse(parts, shape, z, *, mode, **params):
    if not _detail_on(mode, params):
        return None
    spec, dog = _dog()
    return spec.tiling.reduce_coarse(parts, shape, z, mode=mode, **dog)


def detail_pick(gray, device, context=None) -> np.ndarray:
    """The dog method's N-way weights (Z, Y, X) for the same slices (its defaults, its
    noise floor and flat-area fill; in a tiled run, from the whole image's passes), without
    blending the slices by them."""
    from .._view import Context
    from ..focus.classic import nway_weights
    from ..focus.dog import _reach, fine_band_energy

    _, dog = _dog()
    ctx = None
    if context is not None:
        ctx = Context(context.view, context.stats.get("dog"), context.coarse)
    return nway_weights(fine_band_energy, gray, device=str(device), context=ctx,
                        measure_reach=_reach, **dog)


def scores(net, g: np.ndarray, device, progress=None, neighbourhood=0.0,
           neighbourhood_weight=0.0):
    """Full-size scores (Z, H, W) float32 of [0, 1] slices, batched by pixel count."""
    import torch

    from ..focus.focusnet import slice_scores

    z, h, w = g.shape
    n = max(1, BATCH_PIXELS // (h * w))
    out = np.empty((z, h, w), np.float32)
    with torch.inference_mode():
        for k in range(0, z, n):
            out[k:k + n] = slice_scores(net, as_tensor(g[k:k + n], device), neighbourhood,
                                        neighbourhood_weight).cpu().numpy()
            if progress is not None:
                progress(min(k + n, z), z + 1)
    return out


def weights_from_scores(s: np.ndarray, g: np.ndarray, gf_radius: int, gf_eps: float,
                        device) -> np.ndarray:
    """Softmax across slices, optionally guided-filtered and renormalised."""
    import torch

    t = torch.as_tensor(s, device=device)
    wts = torch.softmax(t, dim=0)
    if gf_radius > 0:
        from .guided_filter import guided_filter

        gt = torch.as_tensor(g, device=device)
        guide = (wts * gt).sum(dim=0)
        wts = guided_filter(guide, wts, gf_radius, gf_eps).clamp_(min=0)
        wts /= wts.sum(dim=0, keepdim=True).clamp_(min=1e-6)
    return wts.cpu().numpy()


def with_detail(wts: np.ndarray, pick: np.ndarray, detail: float) -> np.ndarray:
    """The network's weights times 1 + ``detail`` x the fine detail's pick, renormalised
    (in place): where the network finds slices about equally good, the pick decides,
    pixel-sharp; where it is sure (by more than log(1 + detail) in its scores), it wins."""
    wts *= 1 + detail * pick
    wts /= wts.sum(axis=0, keepdims=True)
    return wts


def run(stack, gray, *, mode, device, progress, keep_weights, weights, neighbourhood,
        neighbourhood_weight, detail, gf_radius, gf_eps, context=None):
    import torch

    from ..focus.focusnet import load, slice_scores

    z, h, w = gray.shape
    check_size(h, w)
    net, _ = load(weights or None, device)
    g = normalise(gray, context.stats["span"] if context is not None else None)
    radius = int(round(gf_radius))
    if mode == "series":
        def pair_decision(a: np.ndarray, b: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                s = slice_scores(net, as_tensor(np.stack([a, b]), device), neighbourhood,
                                 neighbourhood_weight)
                d = torch.sigmoid(s[0] - s[1])
                if radius > 0:
                    from .guided_filter import guided_filter

                    guide = d * as_tensor(a, device) + (1 - d) * as_tensor(b, device)
                    d = guided_filter(guide, d, radius, gf_eps).clamp_(0, 1)
                return d.cpu().numpy()

        return fuse_series(stack, g, pair_decision, progress, keep_weights)

    s = scores(net, g, device, progress, neighbourhood=neighbourhood,
               neighbourhood_weight=neighbourhood_weight)
    wts = weights_from_scores(s, g, radius, gf_eps, device)
    del s
    if detail > 0:
        wts = with_detail(wts, detail_pick(gray, device, context), float(detail))
    wts = wts.astype(stack.dtype, copy=False)
    fused, index = blend(stack, wts), index_from_weights(wts)
    if progress is not None:
        progress(z + 1, z + 1)
    return fused, index, wts


def pair_maps(a, b, *, device, weights, neighbourhood, neighbourhood_weight, detail,
              gf_radius, gf_eps):
    """P(a is the sharper) per pixel, and the same map as the decision (weight of ``a``)."""
    check_size(*a.shape)
    from ..focus.focusnet import load

    net, _ = load(weights or None, device)
    g = normalise(np.stack([a, b]).astype(np.float32))
    s = scores(net, g, device, neighbourhood=neighbourhood,
               neighbourhood_weight=neighbourhood_weight)
    wts = weights_from_scores(s, g, int(round(gf_radius)), gf_eps, device)
    return wts[0], wts[0]


register_method(Method(
    name="focusnet",
    summary="small focus network trained on simulated brightfield, fluorescence, reflected-"
            "light and Gaussian-blur stacks; judges all slices at once at 1/4 resolution, "
            "the finest detail (dog's pick) deciding where it finds slices equally good",
    run=run,
    pair_maps=pair_maps,
    params=dict(DEFAULTS),
    param_help=dict(HELP),
    devices=("cpu", "cuda"),
    torch_cpu=True,
    # windows on the dog pick's 16-px block grid (a multiple of the network's 4-px grid)
    tiling=Tiling(reach=_reach, align=16, stats=_stats, reduce_stats=_reduce_stats,
                  coarse=_coarse, reduce_coarse=_reduce_coarse),
))
