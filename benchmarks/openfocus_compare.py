"""openfocus (PyPI) beside napari-mfif, same inputs, same run (issues 3 and 12).

    .venv/bin/python benchmarks/openfocus_compare.py [--quick]

Writes docs/benchmarks/openfocus.md (``--quick``: openfocus_quick.md, smaller sets, no
pictures) and, in a full run, crops of the blood-smear results under docs/benchmarks/img/
(of_*.jpg); always a montage of those crops at /tmp/openfocus_preview.png for a look by eye.
openfocus runs through ``benchmarks/_openfocus.py`` (its Python API, CPU, no registration,
its defaults otherwise); ours through ``_common.run`` (CPU). Install openfocus as that module
says; without it the script stops with a line saying so. Sections:

- ground truth: the synthetic microscopy stacks of quality.py (cells and fluorescence-like,
  2 to 30 slices, noise), ``napari_mfif.synthetic.fringe_stack`` (brightfield fringes, as in
  brightfield.py) and the MF-VOC pairs: PSNR and SSIM; height-map error where both give one;
- the real blood smear (miLab, 10 planes): SSIM to the scanner's best plane and gradient
  energy relative to it (brightfield.py's numbers; issue 12);
- the survey's 20 Lytro pairs: Q_G, beside the survey's published values;
- seconds per input megapixel (slices x height x width) of every column, measured here.

Data under ../shared/data that is absent is skipped with a line saying so.
"""

from __future__ import annotations

import argparse
import csv
import time
import traceback

import numpy as np

import napari_mfif as mf
import _openfocus as of
from _common import (DATA, PSNR_CAP, gt_stack, machine, psnr_capped, run,
                     write_page)
from brightfield import SMEAR_DIR, _crop, _gray, gradient_energy, load_blood_smear
from napari_mfif import metrics
from napari_mfif.io import read_image
from napari_mfif.registry import DEFAULT_METHOD
from napari_mfif.synthetic import cells_image, fringe_stack
from quality import IMG, SYNTH, _save, table

#: our columns: the default method, two others in N-way mode, the default in series mode
OURS = [("mfif", DEFAULT_METHOD, "nway"), ("mfif", "sml", "nway"), ("mfif", "cnn", "nway"),
        ("mfif", DEFAULT_METHOD, "series")]
THEIRS = [("openfocus", m, "") for m in of.METHODS]


def name(col) -> str:
    if col[0] == "mfif":
        tag = " (default)" if col[1:] == (DEFAULT_METHOD, "nway") else ""
        return f"napari-mfif {col[1]} {col[2]}{tag}"
    return f"openfocus {of.display_name(col[1])}"


class Columns:
    """Fuses a stack for every column, timing each call; failures are kept, not raised."""

    def __init__(self, columns):
        self.columns = columns
        self.seconds: dict = {}  # (section, column) -> seconds
        self.mpix: dict = {}
        self.failures: dict = {}  # (section, column) -> message

    def fuse(self, section, col, stack):
        """(image, height map or None) or None when the method failed on this input."""
        if (section, col) in self.failures:
            return None
        array = np.stack(stack) if isinstance(stack, list) else stack
        t0 = time.perf_counter()
        try:
            if col[0] == "mfif":
                res = run(array, col[1], col[2])
                out = (res.image, res.index_map)
            else:
                out = (of.fuse(array, col[1]), None)
        except Exception as exc:  # an input a method cannot take is a result, not a crash
            self.failures[(section, col)] = f"{type(exc).__name__}: {exc}"
            traceback.print_exc()
            return None
        dt = time.perf_counter() - t0
        mp = array.shape[0] * array.shape[1] * array.shape[2] / 1e6
        for key in ((section, col), ("all", col)):
            self.seconds[key] = self.seconds.get(key, 0.0) + dt
            self.mpix[key] = self.mpix.get(key, 0.0) + mp
        return out

    def height(self, col, stack, index_map):
        """Our height map as given; openfocus's own (a separate pass, not timed), if any."""
        if col[0] == "mfif":
            return index_map
        if not of.has_height_map(col[1]):
            return None
        return of.height_map(stack, col[1])

    def per_mpix(self, section, col):
        key = (section, col)
        return self.seconds[key] / self.mpix[key] if self.mpix.get(key) else float("nan")

    def warm(self):
        """One tiny fusion per column first: model loading and imports are not timed."""
        s = mf.focal_stack(n_slices=3, shape=(64, 64), seed=0, dtype=np.uint16).stack
        for col in self.columns:
            self.fuse("warm-up", col, s)


SUMMARY: dict = {}  # summary column -> {column: value}


def note(what, col, value):
    SUMMARY.setdefault(what, {})[col] = value


def _bold(texts, values, higher=True):
    finite = [v for v in values if v == v]
    if not finite:
        return texts
    best = (max if higher else min)(finite)
    return [f"**{t}**" if v == best else t for t, v in zip(texts, values)]


# -- ground truth ---------------------------------------------------------------------------

def synthetic(cols: Columns, quick):
    cases = [SYNTH[i] for i in (0, 2, 4)] if quick else SYNTH
    seeds = [21] if quick else [21, 22]
    lines = ["## Ground truth: synthetic microscopy stacks", "",
             "The stacks of [quality.md](quality.md) (`benchmarks/quality.py`): 256 x 256 "
             f"uint16 (12-bit values), seeds {seeds}; `cells` brightfield-like, `fluorescence` "
             "sparse objects with haze and Poisson noise. PSNR (dB) / SSIM against the sharp "
             "image (data range 4095); the oracle is the best single slice. Bold: best per "
             "stack.", ""]
    q = {c: [] for c in cols.columns}
    herr = {c: [] for c in cols.columns}
    names, oracles = [], []
    for scene, depth_kind, z, noise, photons, haze in cases:
        per = {c: [] for c in cols.columns}
        hper = {c: [] for c in cols.columns}
        oracle = []
        for seed in seeds:
            s = gt_stack(scene, depth_kind, z, noise, photons, haze, seed)
            oracle.append(max(metrics.psnr(s.sharp, sl, 4095) for sl in s.stack))
            for c in cols.columns:
                out = cols.fuse("synthetic", c, s.stack)
                if out is None:
                    continue
                per[c].append((metrics.psnr(s.sharp, out[0], 4095),
                               metrics.ssim(s.sharp, out[0], 4095)))
                h = cols.height(c, s.stack, out[1])
                if h is not None:
                    hper[c].append(metrics.height_error(h, s.depth))
        names.append(f"{scene}, {depth_kind}, {z} slices"
                     + (f", {photons} photons" if photons else f", noise {noise:g}"))
        oracles.append(float(np.mean(oracle)))
        for c in cols.columns:
            q[c].append(np.mean(per[c], axis=0) if per[c] else (np.nan, np.nan))
            herr[c].append(float(np.mean(hper[c])) if hper[c] else np.nan)
    for scene in ("cells", "fluorescence"):
        idx = [i for i, case in enumerate(cases) if case[0] == scene]
        for c in cols.columns:
            note(f"synthetic {scene} PSNR", c, float(np.mean([q[c][i][0] for i in idx])))
    lines += ["Stacks (columns): " + "; ".join(f"{i + 1}: {n}" for i, n in enumerate(names))
              + ".", ""]
    rows = [["oracle (best slice)"] + [f"{o:.2f}" for o in oracles] + [f"{np.mean(oracles):.2f}"]]
    cells = {c: [] for c in cols.columns}
    for i in range(len(names)):
        vals = [q[c][i][0] for c in cols.columns]
        texts = [f"{q[c][i][0]:.2f} / {q[c][i][1]:.3f}" if q[c][i][0] == q[c][i][0] else "failed"
                 for c in cols.columns]
        for c, t in zip(cols.columns, _bold(texts, vals)):
            cells[c].append(t)
    means = [float(np.mean([v[0] for v in q[c]])) for c in cols.columns]
    mean_txt = _bold([f"{m:.2f}" for m in means], means)
    rows += [[name(c)] + cells[c] + [mean_txt[j]] for j, c in enumerate(cols.columns)]
    header = ["method"] + [str(i + 1) for i in range(len(names))] + ["mean PSNR"]
    lines += table(header, rows)
    with_h = [c for c in cols.columns if not np.all(np.isnan(herr[c]))]
    lines += ["", "Height-map error, mean |height - true depth| in slices (openfocus: its "
              "depth-map feature, a second pass; StackMFF V1 and its guided filter have none):",
              ""]
    hmeans = [float(np.nanmean(herr[c])) for c in with_h]
    htxt = _bold([f"{m:.3f}" for m in hmeans], hmeans, higher=False)
    lines += table(["method"] + [str(i + 1) for i in range(len(names))] + ["mean"],
                   [[name(c)] + [f"{v:.3f}" for v in herr[c]] + [htxt[j]]
                    for j, c in enumerate(with_h)])
    for j, c in enumerate(with_h):
        note("synthetic height error", c, hmeans[j])
    return lines + [""]


def fringes(cols: Columns, quick):
    seeds = (0,) if quick else (0, 1, 2)
    lines = ["## Ground truth: brightfield fringe stacks", "",
             "`napari_mfif.synthetic.fringe_stack` as in [brightfield.md](brightfield.md): 7 "
             "slices, 256 x 256 float32 in [0, 1], in focus at slice 3, defocused slices grow "
             "a bright fringe outside each cell edge and a dark one inside (contrast 0.05 or "
             f"0.08 per slice of defocus). PSNR (dB) / SSIM to the in-focus image, seeds "
             f"{list(seeds)}.", ""]
    results = {c: [] for c in cols.columns}
    best_slice = []
    for fringe in (0.05, 0.08):
        cases = [fringe_stack(7, shape=(256, 256), seed=s, fringe=fringe) for s in seeds]
        best_slice.append(np.mean([max(metrics.psnr(c.sharp, sl, 1.0) for sl in c.stack)
                                   for c in cases]))
        for col in cols.columns:
            vals = []
            for case in cases:
                out = cols.fuse("fringe", col, case.stack)
                if out is not None:
                    vals.append((metrics.psnr(case.sharp, out[0], 1.0),
                                 metrics.ssim(case.sharp, out[0], 1.0)))
            results[col].append(np.mean(vals, axis=0) if vals else (np.nan, np.nan))
    rows = [["best slice"] + [f"{b:.2f}" for b in best_slice]]
    per_fringe = []
    for i in range(2):
        vals = [results[c][i][0] for c in cols.columns]
        per_fringe.append(_bold([f"{results[c][i][0]:.2f} / {results[c][i][1]:.3f}"
                                 for c in cols.columns], vals))
    for j, c in enumerate(cols.columns):
        rows.append([name(c), per_fringe[0][j], per_fringe[1][j]])
        note("fringe PSNR", c, float(np.mean([r[0] for r in results[c]])))
    return lines + table(["method", "fringe 0.05", "fringe 0.08"], rows) + [""]


def voc(cols: Columns, quick):
    root = DATA / "mf_voc_synthetic_gt_subset"
    if not root.is_dir():
        return [f"MF-VOC: skipped ({root} absent).", ""]
    everything = sorted(p.name for p in (root / "sourceA").glob("*.jpg"))
    names = everything[:10 if quick else VOC_PAIRS]
    q = {c: [] for c in cols.columns}
    for fname in names:
        a, b, gt = (read_image(root / d / fname) for d in ("sourceA", "sourceB", "groundtruth"))
        for c in cols.columns:
            out = cols.fuse("MF-VOC", c, [a, b])
            if out is not None:
                q[c].append((psnr_capped(gt, out[0], 255), metrics.ssim(gt, out[0], 255)))
    means = {c: np.mean(q[c], axis=0) if q[c] else (np.nan, np.nan) for c in cols.columns}
    psnrs = [means[c][0] for c in cols.columns]
    ssims = [means[c][1] for c in cols.columns]
    p_txt = _bold([f"{v:.2f}" for v in psnrs], psnrs)
    s_txt = _bold([f"{v:.4f}" for v in ssims], ssims)
    for c in cols.columns:
        note("MF-VOC PSNR", c, means[c][0])
    lines = ["## Ground truth: MF-VOC pairs", "",
             f"The first {len(names)} of the {len(everything)} pairs of "
             "`mf_voc_synthetic_gt_subset` (the first ones only, for time; 224 x 224 RGB JPEG, "
             f"synthetic blur of complementary regions): PSNR (dB, capped at {PSNR_CAP:g} dB "
             "per image) and SSIM over RGB against the ground truth.", ""]
    return lines + table(["method", "PSNR", "SSIM"],
                         [[name(c), p_txt[j], s_txt[j]]
                          for j, c in enumerate(cols.columns)]) + [""]


def identical(cols: Columns, quick):
    """Two identical slices: a fusion should give the slice back."""
    sharp = cells_image((256, 256), seed=5)
    stack = np.stack([sharp, sharp])
    rows = []
    for c in cols.columns:
        out = cols.fuse("identical", c, stack)
        rows.append([name(c), "failed" if out is None else
                     f"{min(metrics.psnr(sharp, out[0], 1.0), 99.0):.1f}"])
    return ["## Sanity: two identical slices", "",
            "A 256 x 256 float32 `cells_image` twice: PSNR (dB, 99 = identical) of the result "
            "to that image. A method that selects or blends source pixels gives it back; one "
            "that regresses new intensities does not.", ""] + table(
        ["method", "PSNR to the slice"], rows) + [""]


# -- the real blood smear -------------------------------------------------------------------

#: MF-VOC pairs in a full run (of 122): StackMFF V1 costs about 1 s a pair here
VOC_PAIRS = 40

BOXES = {"white cell": ((800, 1100), (600, 900)), "red cells": ((300, 600), (1200, 1500))}


def blood_smear(cols: Columns, quick):
    stack, best = load_blood_smear(quick)
    if stack is None:
        return [f"Blood smear: skipped ({SMEAR_DIR} absent).", ""]
    boxes = {"crop": ((0, 300), (0, 300))} if quick else BOXES
    ref = stack[best]
    g_ref = gradient_energy(ref)
    z, h, w = stack.shape[:3]
    lines = [f"## Real: blood smear (miLab, {z} planes, {w} x {h} RGB uint8)", "",
             f"The scanner's own focus score peaks at plane {best}; the smear is a monolayer, so "
             "a correct result looks like that plane region by region and adds no gradient "
             f"energy (ringing and fringes would). SSIM (grayscale, 8-bit range) to plane {best} "
             f"and gradient energy (mean squared Sobel magnitude) relative to plane {best}, as "
             "in [brightfield.md](brightfield.md); the target for our default when this was run: SSIM at "
             "least 0.85, gradient energy at most 1.10.", ""]
    rows = [[f"plane {k}", f"{metrics.ssim(_gray(ref), _gray(stack[k]), 255):.3f}",
             f"{gradient_energy(stack[k]) / g_ref:.3f}"] for k in (best - 1, best + 1)
            if 0 <= k < z]
    images = {}
    for c in cols.columns:
        out = cols.fuse("blood smear", c, stack)
        if out is None:
            rows.append([name(c), "failed", "failed"])
            continue
        images[c] = out[0]
        ssim = metrics.ssim(_gray(ref), _gray(out[0]), 255)
        ratio = gradient_energy(out[0]) / g_ref
        note("blood smear SSIM", c, ssim)
        note("blood smear gradient ratio", c, ratio)
        rows.append([name(c), f"{ssim:.3f}", f"{ratio:.3f}",
                     f"{cols.seconds[('blood smear', c)]:.1f}"])
    for r in rows:
        r += [""] * (4 - len(r))
    lines += table(["image", f"SSIM to plane {best}", "gradient energy / plane's", "seconds"],
                   rows) + [""]
    lines += _pictures(images, ref, best, boxes, quick)
    return lines


def _pictures(images, ref, best, boxes, quick):
    _montage(images, ref, best, boxes)
    if quick:
        return ["(`--quick`: no pictures; the montage is at /tmp/openfocus_preview.png.)", ""]
    IMG.mkdir(parents=True, exist_ok=True)
    lines = [f"Full-resolution crops: plane {best}, then each result.", ""]
    for title, box in boxes.items():
        slug = title.replace(" ", "_")
        heads, cells = [f"plane {best}"], []
        fname = f"of_wbc_{slug}_plane{best}.jpg"
        _save(_crop(ref, box), IMG / fname, size=300)
        cells.append(f"![plane {best}](img/{fname})")
        for c, image in images.items():
            fname = f"of_wbc_{slug}_{c[0]}_{c[1]}{'_' + c[2] if c[2] else ''}.jpg"
            _save(_crop(image, box), IMG / fname, size=300)
            cells.append(f"![{name(c)}](img/{fname})")
            heads.append(name(c).replace(" (default)", ""))
        lines += [f"### {title}", "", "| " + " | ".join(heads) + " |",
                  "|" + "---|" * len(heads), "| " + " | ".join(cells) + " |", ""]
    return lines


def _montage(images, ref, best, boxes, path="/tmp/openfocus_preview.png", per_row=5):
    """Every crop box as a grid of panels: the best plane, then each result."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(f"plane {best}", ref)] + [(name(c).replace(" (default)", ""), im)
                                         for c, im in images.items()]
    rows_per_box = -(-len(panels) // per_row)
    fig, axes = plt.subplots(len(boxes) * rows_per_box, per_row, squeeze=False,
                             figsize=(3.2 * per_row, 3.4 * len(boxes) * rows_per_box),
                             constrained_layout=True)
    for ax in axes.ravel():
        ax.set_axis_off()
    for i, (title, box) in enumerate(boxes.items()):
        for j, (label, im) in enumerate(panels):
            ax = axes[i * rows_per_box + j // per_row, j % per_row]
            ax.imshow(_crop(im, box))
            ax.set_title(f"{title}: {label}".replace("napari-mfif ", "mfif ")
                         .replace("openfocus ", "OF "), fontsize=9)
    fig.savefig(path, dpi=100)
    plt.close(fig)


# -- Lytro: no ground truth -------------------------------------------------------------------

def lytro(cols: Columns, quick):
    root = DATA / "lytro_liu2020_benchmark"
    if not (root / "sources").is_dir():
        return [f"Lytro: skipped ({root} absent).", ""]
    src = root / "sources"
    prefixes = sorted({p.name[:4] for p in src.glob("c_*_1.tif")})[:4 if quick else None]
    vals = {c: [] for c in cols.columns}
    for pre in prefixes:
        a, b = read_image(src / f"{pre}_1.tif"), read_image(src / f"{pre}_2.tif")
        for c in cols.columns:
            out = cols.fuse("Lytro", c, [a, b])
            if out is not None:
                vals[c].append(metrics.qabf(a, b, out[0]))
    means = [float(np.mean(vals[c])) if vals[c] else np.nan for c in cols.columns]
    txt = _bold([f"{m:.4f}" for m in means], means)
    rows = [[name(c), txt[j]] for j, c in enumerate(cols.columns)]
    for c, m in zip(cols.columns, means):
        note("Lytro Q_G", c, m)
    with open(root / "mean_metrics.csv") as fh:
        published = {r["method"].lower(): r for r in csv.DictReader(fh)}
    for key in ("dtcwt", "gff", "cnn"):
        if key in published:
            rows.append([f"published (survey): {key}", f"{float(published[key]['Q_G']):.4f}"])
    return ["## No ground truth: the survey's Lytro pairs", "",
            f"{len(prefixes)} colour pairs (520 x 520) of the MFIF survey's benchmark; Q_G "
            "(Q_AB/F) with `napari_mfif.metrics.qabf`, which reproduces the survey's published "
            "per-image values; higher is better. The survey's own numbers for its DTCWT, GFF and "
            "CNN implementations are below for reference (all 20 pairs).", ""] + table(
        ["method", "Q_G"], rows) + [""]


# -- the page ---------------------------------------------------------------------------------

SECTIONS = ("synthetic", "fringe", "MF-VOC", "blood smear", "Lytro")


def speed(cols: Columns):
    present = [s for s in SECTIONS if any((s, c) in cols.mpix for c in cols.columns)]
    lines = ["## Speed", "",
             "Seconds per input megapixel (slices x height x width) of the fusion calls above, "
             "measured in this run on the same inputs (openfocus's input conversion included; "
             "its separate height-map pass not), after one untimed warm-up call per method. "
             "Input megapixels per section: "
             + ", ".join(f"{s} {cols.mpix.get((s, cols.columns[0]), 0):.1f}" for s in present)
             + ".", ""]
    rows = []
    for c in cols.columns:
        rows.append([name(c), f"{cols.per_mpix('all', c):.3f}"]
                    + [f"{cols.per_mpix(s, c):.3f}" for s in present])
    return lines + table(["method", "all"] + present, rows) + [""]


def summary(cols: Columns):
    what = [w for w in ("synthetic cells PSNR", "synthetic fluorescence PSNR", "fringe PSNR",
                        "MF-VOC PSNR", "synthetic height error", "blood smear SSIM",
                        "blood smear gradient ratio", "Lytro Q_G") if w in SUMMARY]
    rows = []
    for c in cols.columns:
        row = [name(c)]
        for w in what:
            v = SUMMARY[w].get(c)
            vals = [x for x in SUMMARY[w].values() if x == x]
            if w == "blood smear gradient ratio":
                best = min(vals, key=lambda x: abs(x - 1.0))
            else:
                best = (min if "error" in w else max)(vals)
            fmt = "{:.2f}" if "PSNR" in w else "{:.3f}" if "Q_G" not in w else "{:.4f}"
            row.append("" if v is None or v != v else
                       (f"**{fmt.format(v)}**" if v == best else fmt.format(v)))
        row.append(f"{cols.per_mpix('all', c):.3f}")
        rows.append(row)
    return (["## Summary", "",
             "Means from the sections below (bold: best; for the gradient-energy ratio, closest "
             "to 1).", ""]
            + table(["method"] + what + ["s / MP"], rows) + [""])


def header(quick, skipped, load):
    import cv2
    import dtcwt
    import torch

    theirs = ", ".join(f"`{m}` ({of.display_name(m)})" for m in of.METHODS)
    lines = ["# openfocus beside napari-mfif", "",
             f"Made by `benchmarks/openfocus_compare.py{' --quick' if quick else ''}` on "
             f"{time.strftime('%Y-%m-%d')}, {machine()} ({torch.get_num_threads()} torch "
             f"threads), in one run on the same inputs: napari-mfif {mf.__version__} and "
             f"[openfocus](https://pypi.org/project/openfocus/) {of.version()} (MIT licence; "
             f"torch {torch.__version__}, OpenCV {cv2.__version__}, dtcwt {dtcwt.__version__}, "
             f"numpy {np.__version__}). Issues 3 and 12 ask how we compare with it. The "
             "machine's 1-minute load average was "
             f"{load[0]:.1f} at the start and {load[1]:.1f} at the end (the run itself accounts "
             "for up to 2; more means other work on the shared cores slowed every column).", "",
             "Settings:", "",
             "- everything on the CPU; openfocus **without registration** (its alignment is "
             "never called) and with `use_gpu=False`, through its Python API "
             "(`core.multi_focus_fusion.MultiFocusFusion(method, ...).fuse(frames)`, what its "
             "command line runs after the optional registration), its defaults otherwise: "
             "exposure matched to the last frame, frame order kept, no base-frame correction, "
             "StackMFF V3 in its `soft` mode, DTCWT with 4 levels, guided filter kernel 31, "
             "tiles of 1024 px (256 px overlap) where its size thresholds call for them (the "
             "full blood smear, for V1 and V3); the adapter is `benchmarks/_openfocus.py`;",
             f"- openfocus methods: {theirs}: the three StackMFF networks (their shipped "
             "weights), the dual-tree complex wavelet fusion (the closest available stand-in "
             "for Fiji's complex-wavelet Extended Depth of Field) and the guided-filter fusion "
             "(GFF);",
             f"- ours: `{DEFAULT_METHOD}` (the default), `sml` and `cnn` in N-way mode and "
             f"`{DEFAULT_METHOD}` in series mode, with their defaults (`_common.run`);",
             "- input conversion for openfocus (it works on OpenCV frames, BGR or gray, uint8 or "
             "float32 on a 0-255 scale): uint8 stacks go in unchanged (its native path); uint16 "
             "and float32 stacks are mapped linearly to float32 0-255 by the stack's own range "
             "(not by 65535, which would leave 12-bit data at 1/16 of the networks' input "
             "range), and the result is mapped back to the input dtype and scale; RGB is "
             "reversed to BGR and back; gray stacks go in as gray frames (StackMFF V1, DTCWT and "
             "the guided filter answer in BGR, with equal channels, averaged back to gray). No "
             "method needed an 8-bit-only path: all take the float frames and return float.", ""]
    if skipped:
        lines += ["Skipped: " + "; ".join(skipped) + ".", ""]
    return lines


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true",
                   help="a smoke run: fewer stacks, one seed, 10 MF-VOC and 4 Lytro pairs, a "
                        "512 x 512 crop of the blood smear, no pictures")
    args = p.parse_args()
    if not of.available():
        raise SystemExit("openfocus is not installed; see benchmarks/_openfocus.py for how to "
                         "install it. Nothing written.")
    import os

    t0 = time.perf_counter()
    load0 = os.getloadavg()[0]
    cols = Columns(OURS + THEIRS)
    cols.warm()
    body = []
    for part in (identical, synthetic, fringes, voc, blood_smear, lytro):
        body += part(cols, args.quick)
        print(f"{part.__name__} done at {time.perf_counter() - t0:.0f} s", flush=True)
    skipped = [line.split(": skipped ")[0] + " " + line.split(": skipped ")[1].rstrip(".")
               for line in body if ": skipped (" in line]
    failed = {k: v for k, v in cols.failures.items() if k[0] != "warm-up"}
    lines = (header(args.quick, skipped, (load0, os.getloadavg()[0])) + summary(cols) + body
             + speed(cols))
    if failed:
        lines += ["## Failures", ""] + [f"- {name(c)} on {s}: `{msg}`"
                                        for (s, c), msg in failed.items()] + [""]
    out = write_page("openfocus", lines, t0, args.quick)
    print(out.read_text())


if __name__ == "__main__":
    main()
