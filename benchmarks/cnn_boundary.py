"""The focus CNN against the classic measures on ground truth, and what closes the gap
(issue 3): the papers' weights, the boundary-trained weights (``training="boundary"``, scores
at the patch centres) and the guided filter's size.

    .venv/bin/python benchmarks/cnn_boundary.py [--pairs N]

Writes docs/benchmarks/cnn_boundary.md. Sections:

- **comparison**: PSNR / SSIM against the ground truth on MF-VOC
  (``../shared/data/mf_voc_synthetic_gt_subset``, all 122 pairs unless ``--pairs``) and on the
  Gaussian-blur synthetic stacks of benchmarks/quality.py (seeds 21, 22), and Q_G on the
  survey's 20 Lytro pairs, for the classic measures and the CNN configurations, in both modes;
- **where the error is**: on MF-VOC, the share of each method's squared error within 8 px of
  the true focus boundary (where "A is nearer the ground truth than B", locally averaged,
  changes), and the MSE elsewhere;
- **near-Nyquist texture**: P(A in focus) on a woven-mesh crop of one MF-VOC pair that is sharp
  in A and blurred in B, and the share of pixels over all pairs where the focus map is
  confidently wrong away from the boundary;
- **held-out patch accuracy** of both weights on pairs with independent and with shared noise
  levels, and on boundary pairs.

Absent data is skipped with a line saying so.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from scipy import ndimage as ndi

import napari_mfif as mf
from napari_mfif import metrics
from napari_mfif.io import read_image
from _common import DATA, gt_stack, machine, psnr_capped, write_page
from quality import SYNTH, _groups, table

VOC = DATA / "mf_voc_synthetic_gt_subset"
#: the woven chair of one MF-VOC pair: sharp in A, blurred in B (rows, columns)
MESH = ("2008_001439_1.jpg", (slice(10, 50), slice(155, 185)))
BAND = 8  # px either side of the true boundary
MODES = ("nway", "series")
SEEDS = (21, 22)
NARROW = {"gf_radius": 2, "gf_eps": 0.01}
BOUNDARY = {"training": "boundary"}
#: the guided filter chosen for the boundary weights on a separate tuning set
#: (benchmarks/cnn_tuning.py, docs/benchmarks/cnn_tuning.md): none in N-way, r 1 in series
TUNED = {"nway": {"gf_radius": 0}, "series": {"gf_radius": 1, "gf_eps": 0.01}}
#: (label, method, params); params may be {mode: params}
RUNS = [
    ("sml", "sml", {}),
    ("dog", "dog", {}),
    ("tenengrad", "tenengrad", {}),
    ("laplacian_pyramid", "laplacian_pyramid", {}),
    ("cnn papers (paper's steps)", "cnn", {}),
    ("cnn papers, gf 2 / 0.01", "cnn", dict(NARROW)),
    ("cnn boundary (paper's steps)", "cnn", dict(BOUNDARY)),
    ("cnn boundary, gf 2 / 0.01", "cnn", {**BOUNDARY, **NARROW}),
    ("cnn boundary, tuned filter", "cnn",
     {mode: {**BOUNDARY, **kw} for mode, kw in TUNED.items()}),
]


def params(kw: dict, mode: str) -> dict:
    """A run's parameters in ``mode`` (runs with per-mode parameters are keyed by mode)."""
    return kw[mode] if mode in kw else kw


def truth_mask(a, b, gt):
    """True where A is nearer the ground truth than B (9 x 9 local mean of |error|)."""
    ea = np.abs(a.astype(float) - gt).mean(-1)
    eb = np.abs(b.astype(float) - gt).mean(-1)
    return ndi.uniform_filter(ea, 9) <= ndi.uniform_filter(eb, 9)


def band(mask, width):
    """Pixels within ``width`` of a change of ``mask``."""
    edge = mask ^ ndi.binary_erosion(mask, border_value=1)
    edge |= ~mask ^ ndi.binary_erosion(~mask, border_value=1)
    return ndi.binary_dilation(edge, iterations=width)


def load_voc(n):
    names = sorted(p.name for p in (VOC / "sourceA").glob("*.jpg"))[:n]
    return [(nm, *(read_image(VOC / d / nm) for d in ("sourceA", "sourceB", "groundtruth")))
            for nm in names]


def _gray(x):
    return x.astype(np.float32).mean(-1) if x.ndim == 3 else x.astype(np.float32)


def qabf(sources, method, mode, kw):
    fused = mf.fuse(np.stack(sources), method=method, mode=mode, channel_axis=-1, **kw).image
    return metrics.NO_REFERENCE["qabf"](sources[0], sources[1], fused)


def lytro_pairs():
    """The survey's Lytro source pairs that are present (none without ../shared)."""
    return [[read_image(p) for p in g] for g in _groups().get("Lytro (survey)", [])]


def measure(runs, pairs, lytro, seeds=SEEDS):
    """Per run (label, method, params or {mode: params}) and mode (both modes, or those a
    {mode: params} run names): (row label, mean (PSNR, SSIM) on the MF-VOC ``pairs`` (NaN
    without pairs), the synthetic cells and the synthetic fluorescence of ``seeds``, mean Q_G
    on the ``lytro`` pairs (NaN without))."""
    synth = [(case[0], gt_stack(*case, seed)) for case in SYNTH for seed in seeds]
    rows = []
    for label, method, per_mode in runs:
        for mode in [m for m in MODES if m in per_mode] or MODES:
            kw = params(per_mode, mode)
            t0 = time.perf_counter()
            voc = [(psnr_capped(gt, f, 255), metrics.ssim(gt, f, 255)) for f, gt in
                   ((mf.fuse(np.stack([a, b]), method=method, mode=mode, channel_axis=-1,
                             **kw).image, gt) for _, a, b, gt in pairs)]
            scene = {"cells": [], "fluorescence": []}
            for kind, s in synth:
                f = mf.fuse(s.stack, method=method, mode=mode, **kw).image
                scene[kind].append((metrics.psnr(s.sharp, f, 4095),
                                    metrics.ssim(s.sharp, f, 4095)))
            q = np.mean([qabf(s, method, mode, kw) for s in lytro]) if lytro else np.nan
            vals = [np.mean(voc, axis=0) if voc else (np.nan, np.nan),
                    np.mean(scene["cells"], axis=0), np.mean(scene["fluorescence"], axis=0)]
            rows.append((f"{label} {mode}", vals, q))
            print(f"  {label} {mode}: {time.perf_counter() - t0:.0f} s", flush=True)
    return rows


def comparison(pairs):
    lytro = lytro_pairs()
    rows, best = measure(RUNS, pairs, lytro), {}
    # best PSNR per column in bold
    for j in range(3):
        best[j] = max(r[1][j][0] for r in rows)
    best_q = max(r[2] for r in rows)
    out = []
    for name, vals, q in rows:
        cells = [name]
        for j, (p, s) in enumerate(vals):
            text = f"{p:.2f} / {s:.4f}" if p == p else "-"
            cells.append(f"**{text}**" if p == best[j] else text)
        qt = f"{q:.4f}" if q == q else "-"
        cells.append(f"**{qt}**" if q == best_q else qt)
        out.append(cells)
    return ["## Comparison", "",
            f"PSNR (dB) / SSIM against the ground truth: MF-VOC ({len(pairs)} pairs, RGB, PSNR "
            "capped at 60 dB per image); the Gaussian-blur synthetic stacks of "
            f"benchmarks/quality.py (cells: 4 stacks, fluorescence: 3, seeds {SEEDS}, uint16); "
            f"Q_G on the survey's {len(lytro)} Lytro pairs (published CNN of Liu 2017: 0.7615, "
            "best published method: 0.7623). Every method with its defaults except where the "
            "row says: `gf 2 / 0.01` is `gf_radius=2, gf_eps=0.01`; `tuned filter` is the "
            "guided filter chosen on a separate tuning set (docs/benchmarks/cnn_tuning.md): "
            "none (`gf_radius=0`) in N-way, `gf_radius=1, gf_eps=0.01` in series; `boundary` is "
            "`training=\"boundary\"` (its scores are placed at the patch centres, "
            "`spread=\"auto\"`). Best of each column in bold.", ""] + table(
        ["method", "MF-VOC", "synthetic cells", "synthetic fluorescence", "Lytro Q_G"], out)


def where_error(pairs):
    rows = []
    chosen = ("sml", "dog", "cnn papers (paper's steps)", "cnn boundary (paper's steps)",
              "cnn boundary, tuned filter")
    for label, method, per_mode in [r for r in RUNS if r[0] in chosen]:
        near, edge, far, total, psnrs = [], [], [], [], []
        for _, a, b, gt in pairs:
            f = mf.fuse(np.stack([a, b]), method=method, mode="nway", channel_axis=-1,
                        **params(per_mode, "nway")).image
            err = ((f.astype(float) - gt) ** 2).mean(-1)
            m = band(truth_mask(a, b, gt), BAND)
            rim = np.ones(m.shape, bool)
            rim[BAND:-BAND, BAND:-BAND] = False
            near.append(err[m].sum())
            edge.append(err[m & rim].sum())
            far.append(err[~m].mean())
            total.append(err.sum())
            psnrs.append(psnr_capped(gt, f, 255))
        rows.append([f"{label} nway", f"{np.mean(psnrs):.2f}",
                     f"{np.sum(near) / len(pairs):.0f}",
                     f"{100 * np.sum(near) / np.sum(total):.1f} %",
                     f"{np.sum(edge) / len(pairs):.0f}", f"{np.mean(far):.2f}"])
    share = np.mean([band(truth_mask(a, b, gt), BAND).mean() for _, a, b, gt in pairs])
    return ["", "## Where the error is", "",
            f"MF-VOC, {len(pairs)} pairs, N-way mode. 'Near the boundary': within {BAND} px of "
            f"the true focus boundary, {100 * share:.0f} % of the pixels on average; 'at the "
            f"image border': the part of it within {BAND} px of the image's edge, where a "
            "network that scores whole patches has no patch centred (the centre spread mirrors "
            "the image there). Squared error in grey levels squared, mean over RGB.", ""] + table(
        ["method", "PSNR (dB)", "squared error near the boundary, per pair",
         "its share of all", "of it at the image border, per pair", "MSE away from it"], rows)


def nyquist(pairs):
    rows = []
    by_name = {nm: (a, b, gt) for nm, a, b, gt in pairs}
    for label, kw in (("papers", {}), ("boundary", dict(BOUNDARY))):
        cells = [label]
        if MESH[0] in by_name:
            a, b, gt = by_name[MESH[0]]
            cells.append(f"{mf.focus_map(a, b, method='cnn', **kw).score[MESH[1]].mean():.3f}")
            g = _gray(gt)
            own = mf.focus_map(g, ndi.gaussian_filter(g, 2), method="cnn", **kw).score
            cells.append(f"{own[MESH[1]].mean():.3f}")
        else:
            cells += ["-", "-"]
        wrong = []
        for _, a, b, gt in pairs:
            t = truth_mask(a, b, gt)
            where = ~band(t, BAND) & (np.abs(_gray(a) - _gray(b)) > 4)  # the choice matters
            fm = mf.focus_map(a, b, method="cnn", **kw).score
            bad = (t & (fm < 0.2)) | (~t & (fm > 0.8))
            wrong.append(bad[where].mean() if where.any() else 0.0)
        cells.append(f"{100 * np.mean(wrong):.2f} %")
        rows.append(cells)
    return ["", "## Near-Nyquist texture", "",
            f"The woven chair of `{MESH[0]}` (rows {MESH[1][0].start}-{MESH[1][0].stop}, "
            f"columns {MESH[1][1].start}-{MESH[1][1].stop}) is sharp in A (a 2-3 px mesh) and "
            "blurred in B: mean P(A in focus) there, and for the ground truth against its own "
            "Gaussian blur (sigma 2). 'Confidently wrong': share of the pixels away from the "
            f"boundary (over {BAND} px) where A and B differ by more than 4 grey levels and "
            "the focus map is below 0.2 or above 0.8 on the wrong side, mean over the pairs.",
            ""] + table(["weights", "P(A) on the mesh, A vs B", "P(GT) vs its blur",
                         "confidently wrong"], rows)


def accuracy():
    """Held-out patch accuracy of both weights on pairs with each patch's own noise level, with
    one noise level per pair, and on boundary pairs (labelled at the centre; pairs whose
    central 2 x 2 pixels straddle the edge left out)."""
    from napari_mfif.focus.cnn import load_net
    from napari_mfif.train import PairSampler, evaluate, source_images

    held = source_images("heldout", 0)
    sets = {
        "own noise level per patch (the training records' 'noisy' figure)":
            PairSampler(held, np.random.default_rng(99)).sample(20000),
        "one noise level per pair": PairSampler(held, np.random.default_rng(99),
                                                pair_noise="shared").sample(20000),
        "boundary pairs, one noise level per pair": PairSampler(
            held, np.random.default_rng(99), pair_noise="shared",
            boundary_fraction=1.0).sample(20000),
    }
    rows = []
    for name, (a, b, y) in sets.items():
        sure = (y == 0) | (y == 1)
        row = [name, f"{int(sure.sum())}"]
        for training in ("papers", "boundary"):
            net, _ = load_net(None, "compact", "cpu", training)
            pair, score = evaluate(net, a[sure], b[sure], y[sure])
            row.append(f"{100 * pair:.2f} / {100 * score:.2f} %")
        rows.append(row)
    return ["", "## Held-out patch accuracy", "",
            "Pairs from the held-out images (rocket, stereo_motorcycle, two procedural cell "
            "images, and their 2x and 3x downscaled copies) with the training recipe's mild "
            "blur, gain and Poisson-Gaussian noise, seed 99; pair head / score head.", ""] + table(
        ["held-out pairs", "pairs", "papers (compact.pt)", "boundary (compact_boundary.pt)"],
        rows)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--pairs", type=int, default=10_000, help="MF-VOC pairs (first N by name)")
    args = p.parse_args()
    t0 = time.perf_counter()
    lines = ["# The CNN against the classic measures on ground truth", "",
             f"Made by `benchmarks/cnn_boundary.py` on {time.strftime('%Y-%m-%d')}, "
             f"{machine()}, napari-mfif {mf.__version__}.", ""]
    pairs = load_voc(args.pairs) if VOC.is_dir() else []
    lines += comparison(pairs)
    lines += accuracy()
    if pairs:
        lines += where_error(pairs)
        lines += nyquist(pairs)
    else:
        lines += ["", f"MF-VOC: skipped ({VOC} absent)."]
    print(f"wrote {write_page('cnn_boundary', lines, t0)}")


if __name__ == "__main__":
    main()
