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

``arch`` picks the network (``focus.cnn.ARCHS``): ``compact`` (default), ``liu2017``, and the
variants of issue 4: ``dual`` (pseudo-siamese two-stream, paper 004; in a pair the first image
goes through stream 0, the second through stream 1; single slices are scored by stream 0's
slice-score head), ``wavelet`` (Haar sub-bands as input, paper 002) and ``compact_mixed``
(mixed max/average pooling, paper 001).

``training`` picks what the shipped weights were trained on: ``papers`` (default, the papers'
Gaussian-blur pairs, ``<arch>.pt``), ``microscopy`` (those mixed with pairs from physically
simulated brightfield and fluorescence stacks, ``napari_mfif.optics``, so that phase fringes
and out-of-focus haze count as defocus; ``<arch>_microscopy.pt``) or ``boundary`` (the papers'
pairs, half of them with a focus boundary through the patch and labelled by the side of the
patch centre, both patches of a pair with one camera's noise level; ``<arch>_boundary.pt``).
The last two ship for ``compact``. A ``weights`` file overrides both ``arch`` and ``training``.

``spread`` turns the dense scores into a full-size map: ``patch`` (the papers': each score over
its 16 x 16 patch, overlaps averaged) or ``centre`` (each score at its patch centre,
interpolated bilinearly: a focus boundary stays where the network puts it; the image is
scored mirrored by half a patch, so that the border pixels have patches centred on them too).
``auto`` (default) is ``centre`` for weights trained with boundary pairs (their record has
``boundary_fraction``), else ``patch``. Boundary-trained weights need a narrower guided
filter than the paper's to keep the boundary where they put it. Chosen on a tuning set that
shares nothing with the evaluation (benchmarks/cnn_tuning.py): none in N-way
(``gf_radius=0``), ``gf_radius=1, gf_eps=0.01`` in series (docs/cnn.md).

``pyramid_levels`` > 1 (paper 001's Gaussian pyramid) scores the inputs at 1/2, 1/4, ... of
their size too (5-tap binomial Gaussian, then every second pixel), spreads each level's scores
over its patches, upsamples the maps bilinearly to full size and averages them in logit space:
the nway slice scores directly, in series mode the logits of the per-level focus maps. A
coarse level judges 16 x 16 patches that cover 32 x 32, 64 x 64, ... pixels, so large blurred
areas with little fine texture are judged too; where a level is confident it dominates the
mean. Levels smaller than a patch are skipped. ``pyramid_levels=1`` is the original pipeline.

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
    "training": "papers",
    "weights": "",
    "threshold": 0.5,
    "min_region": 0.01,
    "gf_radius": 8,
    "gf_eps": 0.1,
    "nway_rule": "soft",
    "pyramid_levels": 1,
    "spread": "auto",
}
HELP = {
    "arch": "network whose shipped weights are used: compact, liu2017, dual (two-stream), "
            "wavelet (Haar sub-band input) or compact_mixed (mixed pooling)",
    "training": "training data of the shipped weights: papers (the papers' Gaussian-blur "
                "pairs), microscopy (also pairs from simulated brightfield and fluorescence "
                "stacks) or boundary (also pairs with a focus boundary through the patch; "
                "best with gf_radius 0 in nway, 1 in series); the last two ship for compact",
    "weights": "path of a weights file from 'python -m napari_mfif.train' (overrides arch "
               "and training)",
    "threshold": "focus-map threshold of the binary decision (paper: 0.5)",
    "min_region": "regions smaller than this fraction of H*W are flipped (paper: 0.01; 0 = off)",
    "gf_radius": "guided-filter radius in pixels (paper: 8; 0 = no filter)",
    "gf_eps": "guided-filter regularisation for [0, 1] images (paper: 0.1)",
    "nway_rule": "nway weights: soft (probability of being the sharpest) or hard (argmax)",
    "pyramid_levels": "Gaussian-pyramid levels scored and combined (1 = full size only; "
                      "at most 4)",
    "spread": "how patch scores become a focus map: patch (paper: each score over its 16x16 "
              "patch, overlaps averaged), centre (at the patch centre, interpolated) or auto "
              "(centre for weights trained with --boundary-fraction, else patch)",
}
SPREADS = ("auto", "patch", "centre")
ARCH_NAMES = ("compact", "liu2017", "dual", "wavelet", "compact_mixed")
#: focus.cnn.TRAININGS (not imported: that imports torch)
TRAINING_NAMES = ("papers", "microscopy", "boundary")


#: the network judges 16 x 16 patches (focus.cnn.PATCH; not imported: that imports torch)
PATCH = 16
#: its receptive field reaches this far beyond a patch (focus.cnn.MARGIN)
MARGIN_PX = 4
#: most Gaussian-pyramid levels: the coarsest (1/8 size) times the network's stride 2 is the
#: window alignment of tiled runs (ALIGN)
MAX_PYRAMID_LEVELS = 4
ALIGN = 2 ** MAX_PYRAMID_LEVELS
#: reach of the pyramid's 5-tap blur + decimation and of the bilinear upsampling, per unit of
#: the coarsest level's scale
PYRAMID_EXTRA = 3


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


def _levels(params: dict) -> int:
    levels = params.get("pyramid_levels", 1)
    if not 1 <= levels <= MAX_PYRAMID_LEVELS:
        raise MfifError(f"pyramid_levels must be 1 to {MAX_PYRAMID_LEVELS}, not {levels}")
    return int(levels)


def _reach(params: dict, z: int, mode: str) -> int:
    """Pixels a fused pixel depends on: the patches that cover it and their receptive
    field (at the coarsest pyramid level, scale f: f times as far, plus the pyramid's blur
    and the upsampling), then the guided filter's two box means; chained once per pair in
    series."""
    f = 2 ** (_levels(params) - 1)
    step = ((PATCH + MARGIN_PX + (PYRAMID_EXTRA if f > 1 else 0)) * f
            + 2 * int(round(params["gf_radius"])) + 4)
    return step * max(z - 1, 1) if mode == "series" else step


def _stats(gray, view, *, mode, **params):
    return intensity_samples(gray, view)


def _reduce_stats(parts, *, mode, min_region, **params):
    return {"span": intensity_range(parts), "area": min_region * TILED_AREA_BASE}


def _pyramid(x, levels: int) -> list:
    """Gaussian pyramid of (N, H, W) tensors: the input, then each level blurred with the
    5-tap binomial kernel [1 4 6 4 1]/16 (mirrored edges) and decimated by 2, as long as a
    level is at least one patch. Level l's pixel i sits at pixel 2**l * i of the input."""
    import torch
    import torch.nn.functional as F

    out = [x]
    k = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0], device=x.device, dtype=x.dtype) / 16
    for _ in range(levels - 1):
        cur = out[-1][:, None]
        if min(cur.shape[-2:]) <= 2:
            break
        cur = F.conv2d(F.pad(cur, (2, 2, 0, 0), mode="reflect"), k.view(1, 1, 1, 5))
        cur = F.conv2d(F.pad(cur, (0, 0, 2, 2), mode="reflect"), k.view(1, 1, 5, 1))
        cur = cur[..., ::2, ::2][:, 0]
        if min(cur.shape[-2:]) < PATCH:
            break
        out.append(cur.contiguous())
    return out


def _upsample(m, level: int, shape):
    """A level-``level`` map (N, h, w) bilinearly to full size (N, H, W)."""
    import torch.nn.functional as F

    if level == 0:
        return m
    f = 2 ** level
    up = F.interpolate(m[:, None], size=(m.shape[-2] * f, m.shape[-1] * f), mode="bilinear",
                       align_corners=False)
    return up[:, 0, :shape[0], :shape[1]]


def _spreader(spread: str):
    """The function that turns a score map into a full-size map (``spread``)."""
    from .decision import centre_focus_map, patch_focus_map

    return centre_focus_map if spread == "centre" else patch_focus_map


def centre_border(levels: int) -> int:
    """Pixels the input is mirrored by before the centre spread. The outermost patch centres
    lie half a patch (8 pixels; at pyramid level l, 8 * 2**l) inside the image, and the
    pixels beyond them would all take the nearest centre's score: an 8-pixel band along the
    border where no focus boundary could be placed. Scoring the image mirrored by that much
    puts patch centres on the border pixels themselves. A multiple of every level's stride,
    so the patch grid stays where it is and tiled runs agree with whole-image runs."""
    return (PATCH // 2) * 2 ** (levels - 1)


def as_tensor(x, device):
    """``x`` (numpy or torch) as a float32 tensor on ``device``."""
    import torch

    if isinstance(x, torch.Tensor):
        return x.to(device=device, dtype=torch.float32)
    return torch.as_tensor(np.ascontiguousarray(x, dtype=np.float32), device=device)


def _full_size(compute, images, levels: int, spread: str):
    """``compute(images, spread_map)`` on the (H, W) images as they are (``patch``) or
    mirrored by :func:`centre_border` and cropped back (``centre``)."""
    spread_map = _spreader(spread)
    if spread != "centre":
        return compute(images, spread_map)
    from ..focus.cnn import mirror

    pad = centre_border(levels)
    out = compute([mirror(x[None, None], pad)[0, 0] for x in images], spread_map)
    return out[..., pad:-pad, pad:-pad]


def _focus_map(scorer, a, b, levels: int, spread: str = "patch"):
    """The focus map of a pair: P(a in focus) per patch made a full-size map as ``spread``
    says (over the patches, or from their centres on the mirrored images), at full size only
    (levels 1, the papers') or combined over a Gaussian pyramid (mean of the levels' logits)."""
    import torch

    def compute(pair, spread_map):
        xa, xb = pair
        h, w = xa.shape
        if levels == 1:
            prob = scorer.pair_probability(scorer.features(xa), scorer.features(xb, 1))[0]
            return spread_map(prob, (h, w))
        logits = []
        pyramids = zip(_pyramid(xa[None], levels), _pyramid(xb[None], levels))
        for level, (la, lb) in enumerate(pyramids):
            prob = scorer.pair_probability(scorer.features(la[0]), scorer.features(lb[0], 1))
            focus = _upsample(spread_map(prob, la.shape[-2:]), level, (h, w))[0]
            logits.append(torch.logit(focus.clamp(1e-6, 1 - 1e-6)))
        return torch.sigmoid(sum(logits) / len(logits))

    return _full_size(compute, [as_tensor(a, scorer.device), as_tensor(b, scorer.device)],
                      levels, spread)


def _slice_scores(scorer, x, levels: int, spread: str = "patch"):
    """Slice scores of one [0, 1] gray slice made a full-size map as ``spread`` says, at full
    size or averaged over a Gaussian pyramid."""

    def compute(images, spread_map):
        (xs,) = images
        h, w = xs.shape
        if levels == 1:
            return spread_map(scorer.slice_scores(scorer.features(xs)), (h, w))[0]
        pyr = _pyramid(xs[None], levels)
        total = None
        for level, xl in enumerate(pyr):
            s = spread_map(scorer.slice_scores(scorer.features(xl[0])), xl.shape[-2:])
            s = _upsample(s, level, (h, w))[0]
            total = s if total is None else total + s
        return total / len(pyr)

    return _full_size(compute, [as_tensor(x, scorer.device)], levels, spread)


def _pair_steps(scorer, a, b, *, threshold, area, radius, gf_eps, levels=1, spread="patch"):
    """The papers' steps for one pair of [0, 1] gray images: the focus map (each patch's
    P(a in focus) spread over its patch) and the final decision D (1 where a is in focus)
    after thresholding, small-region removal and the guided filter."""
    import torch

    from .decision import remove_small_regions
    from .guided_filter import guided_filter

    focus = _focus_map(scorer, a, b, levels, spread).cpu().numpy()
    binary = remove_small_regions(focus > threshold, area)
    initial = np.where(binary, a, b)  # the initial fused image is the guide

    def to_t(x):
        return torch.as_tensor(np.ascontiguousarray(x, dtype=np.float32), device=scorer.device)

    d = guided_filter(to_t(initial), to_t(binary), radius, gf_eps)
    return focus, d.clamp_(0, 1).cpu().numpy()


def _scorer(arch, weights, device, training="papers"):
    from ..focus.cnn import DenseScorer, load_net

    net, meta = load_net(weights or None, arch, device, training)
    return DenseScorer(net, device, meta)


def resolve_spread(spread: str, meta: dict) -> str:
    """``spread`` itself, or for ``auto`` what the weights were trained for: ``centre`` when
    their training record has boundary pairs (``boundary_fraction`` > 0), else ``patch``."""
    if spread != "auto":
        return spread
    return "centre" if float(meta.get("boundary_fraction", 0) or 0) > 0 else "patch"


def prepared(gray, min_region, context=None):
    """The network's input and the small-region area: ``gray`` (Z, Y, X) scaled to [0, 1]
    (:func:`normalise`) and the area in pixels; for one window of a tiled run (``context``)
    the whole stack's range and the fixed absolute area from its statistics."""
    from .decision import min_region_area

    if context is None:
        area = min_region_area(gray.shape[1:], min_region) if min_region > 0 else 0
        return normalise(gray), area
    return normalise(gray, context.stats["span"]), context.stats["area"]


def run(stack, gray, *, mode, device, progress, keep_weights, arch, weights, threshold,
        min_region, gf_radius, gf_eps, nway_rule, pyramid_levels=1, training="papers",
        spread="auto", context=None):
    import torch

    from .decision import remove_small_regions_labels
    from .guided_filter import guided_filter

    check_size(*gray.shape[1:])
    levels = _levels({"pyramid_levels": pyramid_levels})
    scorer = _scorer(arch, weights, device, training)
    spread = resolve_spread(spread, scorer.meta)
    dev = scorer.device
    z, h, w = gray.shape
    g, area = prepared(gray, min_region, context)
    radius = int(round(gf_radius))

    def to_t(a):
        return torch.as_tensor(np.ascontiguousarray(a), device=dev)

    with torch.inference_mode():
        if mode == "series":
            def pair_decision(a: np.ndarray, b: np.ndarray) -> np.ndarray:
                return _pair_steps(scorer, a, b, threshold=threshold, area=area,
                                   radius=radius, gf_eps=gf_eps, levels=levels,
                                   spread=spread)[1]

            return fuse_series(stack, g, pair_decision, progress, keep_weights)

        # N-way: one pass per slice with the slice-score head
        scores = np.empty((z, h, w), np.float32)
        for k in range(z):
            scores[k] = _slice_scores(scorer, g[k], levels, spread).cpu().numpy()
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
              nway_rule, pyramid_levels=1, training="papers", spread="auto"):
    """Focus map and decision of the papers' pipeline for two gray slices."""
    import torch

    check_size(*a.shape)
    scorer = _scorer(arch, weights, device, training)
    g, area = prepared(np.stack([a, b]), min_region)
    with torch.inference_mode():
        return _pair_steps(scorer, g[0], g[1], threshold=threshold, area=area,
                           radius=int(round(gf_radius)), gf_eps=gf_eps,
                           levels=_levels({"pyramid_levels": pyramid_levels}),
                           spread=resolve_spread(spread, scorer.meta))


register_method(Method(
    name="cnn",
    summary="focus CNN of Liu et al. 2017 (siamese, 16x16 patches) with the papers' decision "
            "steps: threshold, small-region removal, guided filter",
    run=run,
    pair_maps=pair_maps,
    params=dict(DEFAULTS),
    param_choices={"arch": ARCH_NAMES, "training": TRAINING_NAMES, "nway_rule": ("soft", "hard"),
                   "spread": SPREADS},
    param_help=dict(HELP),
    devices=("cpu", "cuda"),
    torch_cpu=True,
    # windows start on multiples of ALIGN (16): the network's stride 2 at the coarsest
    # pyramid level (1/8); tiles.py rounds overlaps to multiples of 16 anyway
    tiling=Tiling(reach=_reach, align=ALIGN, stats=_stats, reduce_stats=_reduce_stats),
))
