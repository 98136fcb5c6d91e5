"""Brightfield realism (issue 12): do the methods invent defocus rings?

    .venv/bin/python benchmarks/brightfield.py [--quick]

Writes docs/benchmarks/brightfield.md and pictures under docs/benchmarks/img/:

- the blood smear (../shared/data/microscopy_wbc_milab, 10 planes; the scanner's own focus
  score peaks at plane 5; a monolayer, so a correct result looks like the best plane region
  by region): SSIM (grayscale) of every plane and of every method's result to plane 5, and
  gradient energy relative to plane 5 (ringing adds gradient energy no real plane has);
- the algae stack (objects at different depths: the result should take different objects
  from different planes) and the EDF skeleton stack: pictures and height maps;
- fringe stacks with ground truth (``napari_mfif.synthetic.fringe_stack``): round textured
  cells whose defocused slices grow a bright fringe outside each edge and a dark one inside
  (a caricature of Becke lines; not the physical simulator the issue also asks for): PSNR /
  SSIM against the in-focus image.

Absent data is skipped with a line saying so.
"""

from __future__ import annotations

import argparse
import re
import time

import numpy as np
from scipy import ndimage as ndi

import napari_mfif as mf
from napari_mfif import metrics
from napari_mfif.registry import DEFAULT_METHOD
from napari_mfif.synthetic import fringe_stack
from _common import WBC_DIR, load_algae, load_skeleton, load_wbc_milab, machine, run, write_page
from quality import IMG, _colour, _save, _to8, table

#: parameter variants compared as methods of their own: the CNN with the weights trained on
#: simulated microscope stacks
VARIANTS = ("cnn[training=microscopy]",)


#: the methods compared, N-way (the CNN's soft rule), and the default first
def _methods():
    names = [DEFAULT_METHOD] + [m for m in mf.available_methods() if m != DEFAULT_METHOD]
    return names + list(VARIANTS)


def _gray(image) -> np.ndarray:
    return metrics.to_gray(image) if image.ndim == 3 else image.astype(np.float64)


def gradient_energy(image) -> float:
    """Mean squared Sobel gradient magnitude of the grayscale image (MATLAB's rgb2gray
    weights, float64; scipy.ndimage.sobel, reflect)."""
    g = _gray(image)
    gx, gy = ndi.sobel(g, 1), ndi.sobel(g, 0)
    return float(np.mean(gx * gx + gy * gy))


def _crop(image, box):
    (y0, y1), (x0, x1) = box
    return image[y0:y1, x0:x1]


#: the miLab blood-smear stack, one JPEG per plane
SMEAR_DIR = WBC_DIR


def load_blood_smear(quick):
    """The blood-smear stack (Z, Y, X, 3) in plane order (with ``quick``, a 512 x 512 crop)
    and the plane where the scanner's focus score, the end of each file name, peaks; (None,
    None) when the data is absent."""
    data = load_wbc_milab()
    if data is None:
        return None, None
    stack = data["stack"]
    if quick:
        stack = stack[:, 300:812, 600:1112]
    return stack, data["reference"]


def blood_smear(quick):
    stack, best = load_blood_smear(quick)
    if stack is None:
        return [f"Blood smear: skipped ({SMEAR_DIR} absent).", ""]
    ref = stack[best]
    g_ref = gradient_energy(ref)
    lines = ["## Blood smear (miLab, 10 planes, 1920 x 1200 RGB)", "",
             f"The scanner's focus score peaks at plane {best}. SSIM (grayscale, 8-bit range) "
             f"to plane {best} and gradient energy (mean squared Sobel magnitude of the gray "
             f"image) relative to plane {best}. Target for the default method when this was run: "
             "SSIM at least 0.85 and gradient energy at most 1.10. All methods in N-way mode "
             "with their defaults.", ""]
    rows = [[f"plane {k}", f"{metrics.ssim(_gray(ref), _gray(s), 255):.3f}",
             f"{gradient_energy(s) / g_ref:.3f}"] for k, s in enumerate(stack)]
    results = {}
    for m in _methods():
        res = run(stack, m, "nway")
        results[m] = res
        tag = " (default)" if m == DEFAULT_METHOD else ""
        rows.append([f"**{m}**{tag}", f"{metrics.ssim(_gray(ref), _gray(res.image), 255):.3f}",
                     f"{gradient_energy(res.image) / g_ref:.3f}"])
    lines += table(["image", f"SSIM to plane {best}", "gradient energy / plane's"], rows)
    # pictures: two crops at full resolution
    boxes = {"red cells": ((300, 600), (1200, 1500)), "white cell": ((800, 1100), (600, 900))}
    if quick:
        boxes = {"crop": ((0, 300), (0, 300))}
    picks = [DEFAULT_METHOD] + [m for m in ("sml", "tenengrad", "laplacian_pyramid",
                                                "wavelet", "cnn") if m != DEFAULT_METHOD]
    lines += ["", f"Full-resolution crops: plane {best}, then each method's result and its "
              "height map (viridis, plane 0 dark, plane 9 bright).", ""]
    for title, box in boxes.items():
        slug = title.replace(" ", "_")
        cells, hcells = [], []
        fname = f"bf_wbc_{slug}_plane{best}.jpg"
        _save(_crop(ref, box), IMG / fname, size=300)
        cells.append(f"![plane {best}](img/{fname})")
        hcells.append(f"plane {best}")
        for m in picks:
            fname = f"bf_wbc_{slug}_{m}.jpg"
            _save(_crop(results[m].image, box), IMG / fname, size=300)
            hname = f"bf_wbc_{slug}_{m}_height.jpg"
            _save(_crop(_colour(results[m].index_map, len(stack)), box), IMG / hname, size=300)
            cells.append(f"![{m}](img/{fname})<br>![{m} height](img/{hname})")
            hcells.append(m)
        lines += [f"### {title}", "", "| " + " | ".join(hcells) + " |",
                  "|" + "---|" * len(hcells), "| " + " | ".join(cells) + " |", ""]
    return lines


def _pictures(title, stack, slug, names):
    z = len(stack)
    sharpest = int(np.argmax([np.mean(ndi.laplace(_gray(s)) ** 2) for s in stack]))
    cells = [f"![slice {sharpest}](img/bf_{slug}_input.jpg)"]
    _save(_to8(stack[sharpest]), IMG / f"bf_{slug}_input.jpg", size=400)
    heads = [f"slice {sharpest} (sharpest)"]
    for m in names:
        res = run(stack, m, "nway")
        stem = re.sub(r"[^A-Za-z0-9_]+", "_", m).strip("_")  # cnn[training=x] -> cnn_training_x
        _save(_to8(res.image), IMG / f"bf_{slug}_{stem}.jpg", size=400)
        _save(_colour(res.index_map, z), IMG / f"bf_{slug}_{stem}_height.jpg", size=400)
        counts = np.bincount(np.clip(np.rint(res.index_map), 0, z - 1).astype(int).ravel(),
                             minlength=z) / res.index_map.size
        cells.append(f"![{stem}](img/bf_{slug}_{stem}.jpg)<br>"
                     f"![height](img/bf_{slug}_{stem}_height.jpg)"
                     "<br>slices used: "
                     + ", ".join(f"{100 * c:.0f}%" for c in counts))
        heads.append(m)
    return [f"## {title}", "", "Full-resolution centre crops (at most 400 x 400), the fused image "
            "above its height map; the share of pixels whose (rounded) height is each slice.", "",
            "| " + " | ".join(heads) + " |", "|" + "---|" * len(heads),
            "| " + " | ".join(cells) + " |", ""]


def other_stacks(quick):
    names = [DEFAULT_METHOD] + [m for m in ("sml", "cnn") if m != DEFAULT_METHOD] + list(VARIANTS)
    lines = []
    algae = load_algae()
    if algae is not None:
        stack = algae["stack"]
        if quick:
            stack = stack[:, :512, :512]
        lines += _pictures("Algae (5 planes, objects at different depths)", stack, "algae",
                           names)
    else:
        lines += ["Algae: skipped (absent).", ""]
    skeleton = load_skeleton()
    if skeleton is not None:
        lines += _pictures("EDF skeleton (3 slices)", skeleton["stack"], "skeleton", names)
    else:
        lines += ["EDF skeleton: skipped (absent).", ""]
    return lines


def fringes(quick):
    seeds = (0,) if quick else (0, 1, 2)
    lines = ["## Fringe stacks with ground truth", "",
             "`napari_mfif.synthetic.fringe_stack`: 7 slices, 256 x 256 float32, in focus at "
             "slice 3; fringe contrast 0.05 or 0.08 per slice of defocus. PSNR (dB) / SSIM to the "
             f"in-focus image without noise, mean over seeds {list(seeds)}; N-way.", ""]
    rows = []
    for fringe in (0.05, 0.08):
        cases = [(c.stack, c.sharp) for c in (fringe_stack(7, shape=(256, 256), seed=s,
                                                            fringe=fringe) for s in seeds)]
        best = np.mean([max(metrics.psnr(sharp, sl, 1.0) for sl in st) for st, sharp in cases])
        row = [f"fringe {fringe}", f"{best:.2f}"]
        for m in _methods():
            q = [(metrics.psnr(sharp, r, 1.0), metrics.ssim(sharp, r, 1.0)) for r, sharp in
                 ((run(st, m, "nway").image, sharp) for st, sharp in cases)]
            p, s = np.mean(q, axis=0)
            row.append(f"{p:.2f} / {s:.3f}")
        rows.append(row)
    lines += table(["stack", "best slice"] + _methods(), rows) + [""]
    return lines


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="crops and one seed")
    args = p.parse_args()
    t0 = time.perf_counter()
    IMG.mkdir(parents=True, exist_ok=True)
    lines = ["# Brightfield realism: defocus rings are not focus", "",
             f"Made by `benchmarks/brightfield.py{' --quick' if args.quick else ''}` on "
             f"{time.strftime('%Y-%m-%d')}, {machine()}, CPU only, napari-mfif "
             f"{mf.__version__}; default method `{DEFAULT_METHOD}`. Quality only: the time "
             "each method takes is in [quality.md](quality.md).", ""]
    lines += blood_smear(args.quick)
    lines += other_stacks(args.quick)
    lines += fringes(args.quick)
    out = write_page("brightfield", lines, t0, args.quick)
    print(out.read_text())


if __name__ == "__main__":
    main()
