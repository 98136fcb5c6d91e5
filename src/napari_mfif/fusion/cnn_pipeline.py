"""The CNN fusion method of the papers, registered as ``cnn``.

Two slices (and ``series`` mode, the papers' way for more): score map of the pair head ->
focus map (each patch score spread over its 16 x 16 patch, overlaps averaged) -> binary map
at ``threshold`` -> small-region removal (regions smaller than ``min_region * H * W`` flipped;
0 disables) -> guided filter (radius ``gf_radius``, ``gf_eps``, guide = the initial fused
grayscale image) -> F = D*A + (1-D)*B. In series mode the running result is fused with the
next slice, and so on.

``nway`` mode scores every slice once with the slice-score head (O(Z) network passes), spreads
the scores over their patches, gives each pixel to the best-scoring slice, removes regions
smaller than the same area (reassigned to the surrounding slice), smooths each slice's weight
map with the same guided filter and normalises the weights to sum to one. The height map is
the weighted slice index.

Intensities are scaled to [0, 1] with one pair of percentiles (0.1, 99.9) for the whole stack
before scoring, so 8-, 12- and 16-bit data look alike to the network and ``gf_eps`` means what
it means in the paper. Torch is imported only when the method runs.
"""

from __future__ import annotations

import numpy as np

from ..registry import Method, register_method
from ..stack import blend, index_from_weights

DEFAULTS = {
    "arch": "compact",
    "weights": "",
    "threshold": 0.5,
    "min_region": 0.01,
    "gf_radius": 8,
    "gf_eps": 0.1,
}
HELP = {
    "arch": "network architecture whose shipped weights are used: compact or liu2017",
    "weights": "path of a weights file from 'python -m napari_mfif.train' (overrides arch)",
    "threshold": "focus-map threshold of the binary decision (paper: 0.5)",
    "min_region": "regions smaller than this fraction of H*W are flipped (paper: 0.01; 0 = off)",
    "gf_radius": "guided-filter radius in pixels (paper: 8)",
    "gf_eps": "guided-filter regularisation for [0, 1] images (paper: 0.1)",
}


def normalise(gray: np.ndarray) -> np.ndarray:
    """Scale a (Z, Y, X) gray stack to about [0, 1] with one pair of percentiles."""
    lo, hi = np.percentile(gray, [0.1, 99.9])
    if hi - lo <= 0:
        lo, hi = float(gray.min()), float(gray.max())
    scale = 1.0 / (hi - lo) if hi > lo else 1.0
    return ((gray - lo) * scale).astype(np.float32)


def run(stack, gray, *, mode, device, progress, arch, weights, threshold, min_region,
        gf_radius, gf_eps):
    import torch

    from ..focus.cnn import DenseScorer, load_net
    from .decision import (min_region_area, patch_focus_map, remove_small_regions,
                           remove_small_regions_labels)
    from .guided_filter import guided_filter

    net, _ = load_net(weights or None, arch, device)
    scorer = DenseScorer(net, device)
    dev = scorer.device
    g = normalise(gray)
    z, h, w = g.shape
    area = min_region_area((h, w), min_region) if min_region > 0 else 0
    radius = int(round(gf_radius))

    def to_t(a):
        return torch.as_tensor(np.ascontiguousarray(a), device=dev)

    with torch.inference_mode():
        if mode == "series":
            fused = stack[0].copy()
            fused_g = g[0].copy()
            index = np.zeros((h, w), np.float32)
            for k in range(1, z):
                fa, fb = scorer.features(fused_g), scorer.features(g[k])
                prob = scorer.pair_probability(fa, fb)[0]
                focus = patch_focus_map(prob, (h, w)).cpu().numpy()
                binary = remove_small_regions(focus > threshold, area)
                initial = np.where(binary, fused_g, g[k])
                d = guided_filter(to_t(initial), to_t(binary.astype(np.float32)), radius, gf_eps)
                d = d.clamp_(0, 1).cpu().numpy().astype(stack.dtype)
                fused = d[..., None] * fused + (1 - d[..., None]) * stack[k]
                fused_g = d * fused_g + (1 - d) * g[k]
                index = (d * index + (1 - d) * k).astype(np.float32)
                if progress is not None:
                    progress(k, z - 1)
            return fused, index

        # N-way: one pass per slice with the slice-score head
        scores = np.empty((z, h, w), np.float32)
        for k in range(z):
            s = scorer.slice_scores(scorer.features(g[k]))
            scores[k] = patch_focus_map(s, (h, w))[0].cpu().numpy()
            if progress is not None:
                progress(k + 1, z + 1)
        labels = np.argmax(scores, axis=0)
        labels = remove_small_regions_labels(labels, area)
        initial = np.take_along_axis(g, labels[None], axis=0)[0]
        onehot = (labels[None] == np.arange(z)[:, None, None]).astype(np.float32)
        weights_t = guided_filter(to_t(initial), to_t(onehot), radius, gf_eps).clamp_(min=0)
        weights_t /= weights_t.sum(dim=0, keepdim=True).clamp_(min=1e-6)
        wts = weights_t.cpu().numpy().astype(stack.dtype)
    fused, index = blend(stack, wts), index_from_weights(wts)
    if progress is not None:
        progress(z + 1, z + 1)
    return fused, index


register_method(Method(
    name="cnn",
    summary="focus CNN of Liu et al. 2017 (siamese, 16x16 patches) with the papers' decision "
            "steps: threshold, small-region removal, guided filter",
    run=run,
    params=dict(DEFAULTS),
    param_help=dict(HELP),
    devices=("cpu", "cuda"),
))
