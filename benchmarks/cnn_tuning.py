"""Choosing the guided filter for the boundary-trained CNN weights (issue 3) on a tuning set
that shares nothing with the evaluation data.

    .venv/bin/python benchmarks/cnn_tuning.py [--pairs N] [--quick]

The benchmarks that judge the CNN (cnn_boundary.py, quality.py) use MF-VOC
(``../shared/data``) and the synthetic stacks of seeds 21 and 22. A filter chosen on those
would flatter it. Here it is chosen on:

- **pairs like MF-VOC's**, made the way its README says MF-VOC was made (complementary
  regions of a sharp image blurred with a Gaussian), from the scikit-image pictures and cell
  images that ``python -m napari_mfif.train`` holds out of training (``SKIMAGE_SOURCES``
  "heldout"): random 224 x 224 crops, a random smooth region mask, a Gaussian blur of random
  sigma (1 to 3 px), each image saved as JPEG (quality 90) as MF-VOC's are;
- **the synthetic stacks of quality.py's cases** with other seeds (31, 32): Gaussian-blur
  cells (2 to 20 slices) and fluorescence with haze and noise.

Every (gf_radius, gf_eps) of a small grid is run in both modes (radius 0: no guided filter); the page lists mean PSNR
against the ground truth and marks the best. Needs no ../shared data. Writes
docs/benchmarks/cnn_tuning.md.
"""

from __future__ import annotations

import argparse
import io
import time

import numpy as np
from scipy import ndimage as ndi

import napari_mfif as mf
from napari_mfif import metrics
from napari_mfif.train import source_images
from _common import gt_stack, machine, psnr_capped, write_page
from quality import SYNTH, table

SEEDS = (31, 32)
RADII = (0, 1, 2, 3, 4, 8)  # 0: no guided filter (it is the identity there)
EPSILONS = (0.001, 0.01, 0.1)
CROP = 224


def _jpeg(image: np.ndarray, quality: int = 90) -> np.ndarray:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())))


def tuning_pairs(n: int, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """``n`` (A, B, ground truth) uint8 triplets from the training's held-out images."""
    rng = np.random.default_rng(seed)
    images = [img for _, img in source_images("heldout", seed=0) if min(img.shape) >= CROP]
    out = []
    for i in range(n):
        img = images[i % len(images)]
        y = rng.integers(0, img.shape[0] - CROP + 1)
        x = rng.integers(0, img.shape[1] - CROP + 1)
        sharp = img[y:y + CROP, x:x + CROP]
        # a smooth random region: low-pass noise thresholded at a random level
        field = ndi.gaussian_filter(rng.standard_normal((CROP, CROP)), rng.uniform(12, 30))
        mask = field > np.quantile(field, rng.uniform(0.3, 0.7))
        blurred = ndi.gaussian_filter(sharp, rng.uniform(1.0, 3.0))
        a = np.where(mask, sharp, blurred)
        b = np.where(mask, blurred, sharp)
        out.append(tuple(_jpeg((np.clip(v, 0, 1) * 255 + 0.5).astype(np.uint8))
                         for v in (a, b, sharp)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=40)
    ap.add_argument("--quick", action="store_true", help="8 pairs, 3 radii, seed 31 only")
    args = ap.parse_args()
    t0 = time.perf_counter()
    pairs = tuning_pairs(8 if args.quick else args.pairs)
    radii, seeds = ((0, 1, 8), SEEDS[:1]) if args.quick else (RADII, SEEDS)
    synth = [(case, gt_stack(*case, seed)) for case in SYNTH for seed in seeds]
    rows, best = [], {}
    grid = [(r, e) for r in radii for e in (EPSILONS if r else EPSILONS[1:2])]
    for mode in ("nway", "series"):
        for r, e in grid:
            kw = dict(training="boundary", gf_radius=r, gf_eps=e)
            pv = [psnr_capped(gt, mf.fuse(np.stack([a, b]), method="cnn", mode=mode, **kw).image,
                              255) for a, b, gt in pairs]
            cells, fl = [], []
            for case, s in synth:
                p = metrics.psnr(s.sharp, mf.fuse(s.stack, method="cnn", mode=mode, **kw).image,
                                 4095)
                (cells if case[0] == "cells" else fl).append(p)
            vals = (float(np.mean(pv)), float(np.mean(cells)), float(np.mean(fl)))
            rows.append((mode, r, e) + vals)
            print(mode, r, e, " ".join(f"{v:.3f}" for v in vals), flush=True)
    # the default rule: highest mean of the three columns' ranks within each mode
    lines = [
        "# Guided filter for the boundary-trained CNN: tuning set",
        "",
        f"Machine: {machine()}. Written by `benchmarks/cnn_tuning.py`"
        + (" (--quick)" if args.quick else "") + ".",
        "",
        "Mean PSNR (dB) against the ground truth of `cnn` with `training=\"boundary\"` for each "
        "guided-filter radius and eps. The data share nothing with the evaluation pages: "
        f"{len(pairs)} MF-VOC-like pairs (JPEG, 224 x 224) made from the images that training "
        "holds out, and the synthetic stacks of quality.py's cases with seeds "
        f"{', '.join(map(str, seeds))} (the evaluation uses 21 and 22).",
        "",
    ]
    for mode in ("nway", "series"):
        sub = [r for r in rows if r[0] == mode]
        cols = list(zip(*[r[3:] for r in sub]))
        tops = [max(c) for c in cols]
        # rank sum over the three columns (lower is better), ties by the pairs' PSNR
        ranks = [sum(sorted(c, reverse=True).index(v) for c, v in zip(cols, r[3:])) for r in sub]
        pick = min(range(len(sub)), key=lambda i: (ranks[i], -sub[i][3]))
        best[mode] = sub[pick][1:3]
        lines += [f"## {mode}", ""]
        body = []
        for i, r in enumerate(sub):
            cells = [f"**{v:.2f}**" if v == t else f"{v:.2f}" for v, t in zip(r[3:], tops)]
            body.append([f"{r[1]}", f"{r[2]:g}" if r[1] else "- (off)"] + cells + ["<- chosen" if i == pick else ""])
        lines += table(["gf_radius", "gf_eps", "MF-VOC-like pairs", "Gaussian-blur cells",
                        "fluorescence", ""], body)
        chosen = (f"gf_radius {best[mode][0]}, gf_eps {best[mode][1]:g}" if best[mode][0]
                  else "gf_radius 0 (no guided filter)")
        lines += ["", f"Chosen (lowest sum of the three columns' ranks): {chosen}.", ""]
    path = write_page("cnn_tuning", lines, t0, args.quick)
    print("wrote", path)


if __name__ == "__main__":
    main()
