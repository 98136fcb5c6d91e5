"""The CNN fusion method of the papers, registered as ``cnn``.

Two slices (and ``series`` mode, the papers' way for more): score map of the pair head ->
focus map (each patch score spread over its 16 x 16 patch, overlaps averaged) -> binary map
at ``threshold`` -> small-region removal (regions smaller than ``min_region * H * W`` flipped;
0 disables) -> guided filter (radius ``gf_radius``, ``gf_eps``, guide = the initial fused
grayscale image) -> F = D*A + (1-D)*B. In series mode the running result is fused with the
next slice, and so on.

``nway`` mode scores every slice once with the slice-score head (O(Z) network passes) and
spreads the scores over their patches. The head is trained so that a score difference is the
log-odds that one slice is sharper than the other, and that equally sharp patches score
equally. Two rules turn the scores into weights (``nway_rule``):

- ``soft`` (default): the softmax of the scores across slices, i.e. each slice weighted by the
  probability that it is the sharpest. Where several slices are equally sharp (flat or
  featureless areas, a surface between two slices) they are averaged, which also averages
  their noise away: a noise floor learned by the network rather than set by hand.
- ``hard``: each pixel goes to the best-scoring slice; regions smaller than the small-region
  area are reassigned to the surrounding slice.

Either way each slice's weight map is smoothed with the same guided filter and the weights are
normalised to sum to one. The height map is the weighted slice index.

Intensities are scaled to [0, 1] with one pair of percentiles (0.1, 99.9) for the whole stack
before scoring, so 8-, 12- and 16-bit data look alike to the network and ``gf_eps`` means what
it means in the paper. Torch is imported only when the method runs.
"""

from __future__ import annotations

import numpy as np

from .._errors import MfifError
from .._view import View
from ..registry import Method, register_method
from ..stack import blend, fuse_series, index_from_weights
from ..tiles import Tiling

DEFAULTS = {
    "arch": "compact",
    "weights": "",
    "threshold": 0.5,
    "min_region": 0.01,
    "gf_radius": 8,
    "gf_eps": 0.1,
    "nway_rule": "soft",
}
HELP = {
    "arch": "network architecture whose shipped weights are used: compact or liu2017",
    "weights": "path of a weights file from 'python -m napari_mfif.train' (overrides arch)",
    "threshold": "focus-map threshold of the binary decision (paper: 0.5)",
    "min_region": "regions smaller than this fraction of H*W are flipped (paper: 0.01; 0 = off)",
    "gf_radius": "guided-filter radius in pixels (paper: 8)",
    "gf_eps": "guided-filter regularisation for [0, 1] images (paper: 0.1)",
    "nway_rule": "nway weights: soft (probability of being the sharpest) or hard (argmax)",
}


#: the network judges 16 x 16 patches (focus.cnn.PATCH; not imported: that imports torch)
PATCH = 16
#: its receptive field reaches this far beyond a patch (focus.cnn.MARGIN)
MARGIN_PX = 4


def check_size(h: int, w: int) -> None:
    """Refuse slices smaller than one patch, which the network cannot judge."""
    if h < PATCH or w < PATCH:
        raise MfifError(
            f"method 'cnn' judges {PATCH} x {PATCH} patches and these slices are {h} x {w} "
            "pixels; use a classic method such as tenengrad for images this small"
        )


#: about how many pixels per slice the intensity range is measured on
RANGE_SAMPLES = 1_000_000
#: in tiled runs, ``min_region`` is a fraction of this area (px), whatever the tile size
TILED_AREA_BASE = 1024 * 1024


def intensity_samples(gray: np.ndarray, view: View | None = None) -> np.ndarray:
    """The pixels of ``view``'s core on a grid fixed in the whole image's coordinates
    (every pixel up to :data:`RANGE_SAMPLES` per slice, every ``step``-th beyond), so that
    the windows of a tiled run give exactly the whole image's sample."""
    z, h, w = gray.shape
    view = view or View.whole(h, w)
    H, W = view.shape
    step = max(1, int(np.sqrt(H * W / RANGE_SAMPLES)))
    gy0, gy1, gx0, gx1 = view.core_global
    oy, ox = view.origin
    ys = np.arange(-(-gy0 // step) * step, gy1, step) - oy
    xs = np.arange(-(-gx0 // step) * step, gx1, step) - ox
    return gray[:, ys][:, :, xs].astype(np.float32).ravel()


def intensity_range(parts) -> tuple[float, float]:
    """The (0.1, 99.9) percentiles of the samples of one or more windows (the min and max
    where they coincide)."""
    sample = np.concatenate([np.asarray(p).ravel() for p in parts])
    lo, hi = (float(v) for v in np.percentile(sample, [0.1, 99.9]))
    if hi - lo <= 0:
        lo, hi = float(sample.min()), float(sample.max())
    return lo, hi


def normalise(gray: np.ndarray, span: tuple[float, float] | None = None) -> np.ndarray:
    """Scale a (Z, Y, X) gray stack to about [0, 1] with one pair of percentiles (``span``,
    else measured on ``gray``)."""
    lo, hi = span if span is not None else intensity_range([intensity_samples(gray)])
    scale = 1.0 / (hi - lo) if hi > lo else 1.0
    return ((gray - lo) * scale).astype(np.float32)


def _reach(params: dict, z: int, mode: str) -> int:
    """Pixels a fused pixel depends on: the patches that cover it and their receptive
    field, then the guided filter's two box means; chained once per pair in series."""
    step = PATCH + MARGIN_PX + 2 * int(round(params["gf_radius"])) + 4
    return step * max(z - 1, 1) if mode == "series" else step


def _stats(gray, view, *, mode, **params):
    return intensity_samples(gray, view)


def _reduce_stats(parts, *, mode, min_region, **params):
    return {"span": intensity_range(parts), "area": min_region * TILED_AREA_BASE}


def _pair_steps(scorer, a, b, *, threshold, area, radius, gf_eps):
    """The papers' steps for one pair of [0, 1] gray images: the focus map (each patch's
    P(a in focus) spread over its patch) and the final decision D (1 where a is in focus)
    after thresholding, small-region removal and the guided filter."""
    import torch

    from .decision import patch_focus_map, remove_small_regions
    from .guided_filter import guided_filter

    h, w = a.shape
    prob = scorer.pair_probability(scorer.features(a), scorer.features(b))[0]
    focus = patch_focus_map(prob, (h, w)).cpu().numpy()
    binary = remove_small_regions(focus > threshold, area)
    initial = np.where(binary, a, b)  # the initial fused image is the guide

    def to_t(x):
        return torch.as_tensor(np.ascontiguousarray(x, dtype=np.float32), device=scorer.device)

    d = guided_filter(to_t(initial), to_t(binary), radius, gf_eps)
    return focus, d.clamp_(0, 1).cpu().numpy()


def _scorer(arch, weights, device):
    from ..focus.cnn import DenseScorer, load_net

    net, _ = load_net(weights or None, arch, device)
    return DenseScorer(net, device)


def run(stack, gray, *, mode, device, progress, keep_weights, arch, weights, threshold,
        min_region, gf_radius, gf_eps, nway_rule, context=None):
    import torch

    from .decision import min_region_area, patch_focus_map, remove_small_regions_labels
    from .guided_filter import guided_filter

    check_size(*gray.shape[1:])
    scorer = _scorer(arch, weights, device)
    dev = scorer.device
    z, h, w = gray.shape
    if context is None:
        g = normalise(gray)
        area = min_region_area((h, w), min_region) if min_region > 0 else 0
    else:  # one window of a tiled run: the whole stack's range, a fixed absolute area
        g = normalise(gray, context.stats["span"])
        area = context.stats["area"]
    radius = int(round(gf_radius))

    def to_t(a):
        return torch.as_tensor(np.ascontiguousarray(a), device=dev)

    with torch.inference_mode():
        if mode == "series":
            def pair_decision(a: np.ndarray, b: np.ndarray) -> np.ndarray:
                return _pair_steps(scorer, a, b, threshold=threshold, area=area,
                                   radius=radius, gf_eps=gf_eps)[1]

            return fuse_series(stack, g, pair_decision, progress, keep_weights)

        # N-way: one pass per slice with the slice-score head
        scores = np.empty((z, h, w), np.float32)
        for k in range(z):
            s = scorer.slice_scores(scorer.features(g[k]))
            scores[k] = patch_focus_map(s, (h, w))[0].cpu().numpy()
            if progress is not None:
                progress(k + 1, z + 1)
        if nway_rule == "soft":
            initial_w = torch.softmax(to_t(scores), dim=0)
        else:
            labels = remove_small_regions_labels(np.argmax(scores, axis=0), area)
            initial_w = to_t((labels[None] == np.arange(z)[:, None, None]).astype(np.float32))
        initial = (initial_w * to_t(g)).sum(dim=0)  # the initial fused image is the guide
        weights_t = guided_filter(initial, initial_w, radius, gf_eps).clamp_(min=0)
        weights_t /= weights_t.sum(dim=0, keepdim=True).clamp_(min=1e-6)
        wts = weights_t.cpu().numpy().astype(stack.dtype)
    fused, index = blend(stack, wts), index_from_weights(wts)
    if progress is not None:
        progress(z + 1, z + 1)
    return fused, index, wts


def pair_maps(a, b, *, device, arch, weights, threshold, min_region, gf_radius, gf_eps,
              nway_rule):
    """Focus map and decision of the papers' pipeline for two gray slices."""
    import torch

    from .decision import min_region_area

    check_size(*a.shape)
    scorer = _scorer(arch, weights, device)
    g = normalise(np.stack([a, b]))
    h, w = a.shape
    area = min_region_area((h, w), min_region) if min_region > 0 else 0
    with torch.inference_mode():
        return _pair_steps(scorer, g[0], g[1], threshold=threshold, area=area,
                           radius=int(round(gf_radius)), gf_eps=gf_eps)


register_method(Method(
    name="cnn",
    summary="focus CNN of Liu et al. 2017 (siamese, 16x16 patches) with the papers' decision "
            "steps: threshold, small-region removal, guided filter",
    run=run,
    pair_maps=pair_maps,
    params=dict(DEFAULTS),
    param_choices={"arch": ("compact", "liu2017"), "nway_rule": ("soft", "hard")},
    param_help=dict(HELP),
    devices=("cpu", "cuda"),
    tiling=Tiling(reach=_reach, align=2, stats=_stats, reduce_stats=_reduce_stats),
))
