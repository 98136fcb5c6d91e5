"""Quality and speed of every registered method and naive baselines, in one command.

    .venv/bin/python benchmarks/quality.py [--quick]

Writes docs/benchmarks/quality.md (the evaluation report: every method of the registry and the
papers' CNN variants, with the papers' metrics) and pictures and plots under
docs/benchmarks/img/. Needs matplotlib for the plots. Sections:

- ground truth: synthetic microscopy stacks (brightfield-like textured cells, fluorescence-like
  sparse objects with haze and Poisson noise; smooth and step depth maps; 2 to 30 slices) and
  the MF-VOC pairs: PSNR, SSIM, height-map error;
- no ground truth, the field's metrics as the MFIF survey computes them (Q_G = Q_AB/F, Q_MI,
  Q_Y, Q_CB; for more than two sources, the mean over all source pairs): the survey's 20
  Lytro pairs beside its published table, the Lytro triples, MFIFB (incl. MFFW), the
  grayscale classics;
- real microscopy stacks (blood smear, algae, EDF skeleton, PCB macro): pictures of the fused
  images and height maps, and time;
- seconds per input megapixel (slices x height x width) for every method over all of it;
- cost against slices (5 to 40) and image size (256^2 to 2048^2), with a plot.

Data under ../shared/data that is absent is skipped, with a line saying so.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import time

import numpy as np
from PIL import Image

import napari_mfif as mf
from napari_mfif import metrics
from napari_mfif.io import read_image
from napari_mfif.registry import DEFAULT_METHOD
from _common import (DATA, DOCS, PSNR_CAP, Timer, gt_stack, label, machine, psnr_capped,
                     registry_runs, variant_runs, write_page)

BASELINES = [("mean", ""), ("max", "")]
IMG = DOCS / "img"


def table(header, rows):
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return out


def bold_best(values, higher=True):
    """Format numbers, the best one in bold."""
    best = (max if higher else min)(v for v in values if v == v)
    return [f"**{v:.4f}**" if v == best else f"{v:.4f}" for v in values]


# -- ground truth ---------------------------------------------------------------------

SYNTH = [  # scene, depth, slices, read noise, photons, haze
    ("cells", "smooth", 2, 0.0, None, 0.0),
    ("cells", "smooth", 10, 0.0, None, 0.0),
    ("cells", "step", 5, 0.01, None, 0.0),
    ("cells", "smooth", 20, 0.02, None, 0.0),
    ("fluorescence", "smooth", 10, 0.005, 100, 0.3),
    ("fluorescence", "step", 5, 0.005, 200, 0.3),
    ("fluorescence", "smooth", 30, 0.005, 50, 0.3),
]


SUMMARY: dict = {}  # column -> {(method, mode): value}, for the one-table summary


def note(column, key, value):
    SUMMARY.setdefault(column, {})[key] = value


def synthetic(runs, timer, seeds):
    lines = ["## Ground truth: synthetic microscopy stacks", "",
             f"256 x 256 uint16, mean over seeds {seeds}. `cells`: textured cells everywhere "
             "(brightfield-like); `fluorescence`: sparse nuclei and filaments on a dark "
             "background with out-of-focus haze (30 % of the scene blurred by 12 px) and "
             "Poisson noise (photons at full scale). Depth `smooth` (a tilted surface with "
             "bumps) or `step` (regions at whole slices). Blur 1.5 px sigma per slice for up to "
             "5 slices, 1.0 beyond. PSNR (dB) / SSIM against the sharp image; the oracle is the "
             "best single slice chosen with the ground truth. Height error: mean |index - depth| "
             "in slices.", ""]
    cols = runs + BASELINES
    names, oracles, cells, herrs = [], [], {c: [] for c in cols}, {c: [] for c in runs}
    per_scene = {}  # scene -> {column: [mean PSNR of each case]}
    for scene, depth_kind, z, noise, photons, haze in SYNTH:
        q = {c: [] for c in cols}
        herr = {c: [] for c in runs}
        oracle = []
        for seed in seeds:
            s = gt_stack(scene, depth_kind, z, noise, photons, haze, seed)
            oracle.append(max(metrics.psnr(s.sharp, sl, 4095) for sl in s.stack))
            for c in cols:
                r = timer.fuse(c, s.stack, *c)
                q[c].append((metrics.psnr(s.sharp, r.image, 4095),
                             metrics.ssim(s.sharp, r.image, 4095)))
                if c in herr:
                    herr[c].append(metrics.height_error(r.index_map, s.depth))
        names.append(f"{scene}, {depth_kind}, {z} slices" + (f", {photons} photons" if photons
                                                             else f", noise {noise:g}"))
        oracles.append(f"{np.mean(oracle):.2f}")
        means = {c: np.mean(q[c], axis=0) for c in cols}
        best = max(cols, key=lambda c: means[c][0])
        for c in cols:
            text = f"{means[c][0]:.2f} / {means[c][1]:.3f}"
            cells[c].append(f"**{text}**" if c == best else text)
            per_scene.setdefault(scene, {}).setdefault(c, []).append(means[c][0])
        for c in runs:
            herrs[c].append(f"{np.mean(herr[c]):.3f}")
    for scene, values in per_scene.items():
        for c, psnrs in values.items():
            note(f"synthetic {scene} PSNR", c, float(np.mean(psnrs)))
    header = ["method"] + [f"{i + 1}" for i in range(len(names))]
    lines += ["Stacks (columns): " + "; ".join(f"{i + 1}: {n}" for i, n in enumerate(names))
              + ".", ""]
    lines += table(header, [["oracle (best slice)"] + oracles]
                   + [[label(*c)] + cells[c] for c in cols])
    lines += ["", "Height-map error (slices):", ""]
    lines += table(header, [[label(*c)] + herrs[c] for c in runs])
    return lines


def voc(runs, timer, limit):
    root = DATA / "mf_voc_synthetic_gt_subset"
    if not root.is_dir():
        return ["", f"MF-VOC: skipped ({root} absent)."]
    names = sorted(p.name for p in (root / "sourceA").glob("*.jpg"))[:limit]
    cols = runs + BASELINES
    q = {c: [] for c in cols}
    gt_scores = []
    for name in names:
        a, b, gt = (read_image(root / d / name) for d in ("sourceA", "sourceB", "groundtruth"))
        gt_scores.append((metrics.piqe(gt), metrics.entropy(gt)))
        for c in cols:
            f = timer.fuse(c, [a, b], *c).image
            q[c].append((psnr_capped(gt, f, 255), metrics.ssim(gt, f, 255), metrics.piqe(f),
                         metrics.entropy(f)))
    means = {c: np.mean(q[c], axis=0) for c in cols}
    for c in cols:
        note("MF-VOC PSNR", c, means[c][0])
    lines = ["", "## Ground truth: MF-VOC pairs", "",
             f"{len(names)} pairs of `mf_voc_synthetic_gt_subset` (224 x 224 RGB JPEG, synthetic "
             "blur of complementary regions). PSNR (dB, capped at "
             f"{PSNR_CAP:g} dB per image) and SSIM over RGB; PIQE (lower is better) and "
             "entropy (bits) of the fused image, as the Gaussian-pyramid CNN paper reports them; the ground truth "
             f"itself scores PIQE {np.mean(gt_scores, axis=0)[0]:.2f}, entropy "
             f"{np.mean(gt_scores, axis=0)[1]:.3f}.", ""]
    lines += table(["method", "PSNR", "SSIM", "PIQE", "entropy"],
                   [[label(*c), f"{means[c][0]:.2f}", f"{means[c][1]:.4f}",
                     f"{means[c][2]:.2f}", f"{means[c][3]:.3f}"] for c in cols])
    return lines


# -- no ground truth ----------------------------------------------------------------------

def _groups():
    """(name, [source paths...]) per dataset, for the data that is present."""
    sets = {}
    lytro = DATA / "lytro_liu2020_benchmark" / "sources"
    if lytro.is_dir():
        sets["Lytro (survey)"] = [[lytro / f"{p}_1.tif", lytro / f"{p}_2.tif"] for p in
                                  sorted({q.name[:4] for q in lytro.glob("c_*_1.tif")})]
    triples = DATA / "lytro" / "Triple Series"
    if triples.is_dir():
        sets["Lytro triples"] = [sorted(triples.glob(f"lytro-{i:02d}-*.jpg")) for i in range(1, 5)]
    mfifb = DATA / "mfifb"
    if mfifb.is_dir():
        sets["MFIFB"] = [sorted(d.glob("*_[AB].*")) for d in sorted(mfifb.iterdir()) if d.is_dir()]
    gray = DATA / "grayscale_liu2020" / "grayscale"
    if gray.is_dir():
        sets["Grayscale"] = [[gray / f"{p}_1.tif", gray / f"{p}_2.tif"] for p in
                             sorted({q.name[:4] for q in gray.glob("g_*_1.tif")})]
    bfmf = DATA / "classic_bfmf"
    if bfmf.is_dir():
        stems = sorted({p.stem.rstrip("0123456789") for p in bfmf.glob("*.bmp")})
        sets["Classic BFMF"] = [sorted(bfmf.glob(f"{s}[0-9].bmp")) for s in stems]
    return {k: [g for g in v if len(g) >= 2] for k, v in sets.items()}


#: single-image scores of the fused image (paper 001), after the survey's pair metrics
SINGLE = {"piqe": metrics.piqe, "entropy": metrics.entropy}
HEADERS = {"qabf": "Q_G", "nmi": "Q_MI", "q_y": "Q_Y", "q_cb": "Q_CB", "piqe": "PIQE",
           "entropy": "entropy"}


def _score(sources, fused, names):
    vals = []
    for name in names:
        if name in SINGLE:
            vals.append(SINGLE[name](fused))
            continue
        fn = metrics.NO_REFERENCE[name]
        vals.append(np.mean([fn(a, b, fused) for a, b in itertools.combinations(sources, 2)]))
    return vals


def no_reference(runs, timer, limit):
    lines = ["", "## No ground truth: the field's metrics", "",
             "Metrics as the MFIF survey's code computes them (`napari_mfif.metrics` reproduces "
             "its published per-image values): Q_G (Q_AB/F), Q_MI, and on the Lytro sets also Q_Y "
             "and Q_CB; higher is better. For three sources, the mean over the three pairs. "
             "Then two scores of the fused image alone that the Gaussian-pyramid CNN paper reports: PIQE "
             "(Venkatanath et al. 2015; lower is better; it rewards crisp, noise-free blocks, "
             "so it also favours over-sharpened results) and entropy (bits; more is not "
             "always better: noise raises it). Bold: best of our runs.", ""]
    cols = runs + BASELINES
    groups = _groups()
    if not groups:
        return lines + ["Skipped: no data under ../shared/data."]
    for name, items in groups.items():
        items = items[:limit]
        names = (["qabf", "nmi", "q_y", "q_cb"] if name.startswith("Lytro") else ["qabf", "nmi"])
        names += ["piqe", "entropy"]
        vals = {c: [] for c in cols}
        for paths in items:
            sources = [read_image(p) for p in paths]
            if len({s.shape for s in sources}) != 1:
                continue
            for c in cols:
                vals[c].append(_score(sources, timer.fuse(c, sources, *c).image, names))
        means = {c: np.mean(vals[c], axis=0) for c in cols}
        if name in ("Lytro (survey)", "MFIFB"):
            for c in cols:
                note(f"{name.split()[0]} Q_G", c, means[c][0])
        if name in ("Lytro (survey)",):
            for c in cols:
                note("Lytro PIQE", c, means[c][names.index("piqe")])
        per_metric = [bold_best([means[c][i] for c in cols], higher=(m != "piqe"))
                      if m != "entropy" else [f"{means[c][i]:.3f}" for c in cols]
                      for i, m in enumerate(names)]
        rows = [[label(*c)] + [per_metric[i][j] for i in range(len(names))]
                for j, c in enumerate(cols)]
        if name == "Lytro (survey)":
            with open(DATA / "lytro_liu2020_benchmark" / "mean_metrics.csv") as fh:
                published = {r["method"].lower(): r for r in csv.DictReader(fh)}
            for key in ("cnn", "srcf", "gfdf"):
                r = published.get(key)
                if r:
                    rows.append([f"published: {key}"] + [f"{float(r[m]):.4f}" for m in
                                                          ("Q_G", "Q_MI", "Q_Y", "Q_CB")]
                                + ["", ""])
        lines += [f"### {name} ({len(vals[cols[0]])} sets)", ""]
        lines += table(["method"] + [HEADERS[m] for m in names], rows) + [""]
    return lines


# -- real microscopy stacks: pictures ------------------------------------------------------

_VIRIDIS = np.array([[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]],
                    np.float64)


def _colour(index, z):
    t = np.clip(index / max(z - 1, 1), 0, 1) * (len(_VIRIDIS) - 1)
    i = np.minimum(t.astype(int), len(_VIRIDIS) - 2)
    f = (t - i)[..., None]
    return ((1 - f) * _VIRIDIS[i] + f * _VIRIDIS[i + 1]).astype(np.uint8)


def _save(image, path, size=480):
    """A full-resolution centre crop (size x size at most), so detail can be judged."""
    h, w = image.shape[:2]
    y0, x0 = max((h - size) // 2, 0), max((w - size) // 2, 0)
    Image.fromarray(image[y0:y0 + size, x0:x0 + size]).convert("RGB").save(path, quality=88)


def _to8(image):
    if image.dtype == np.uint8:
        return image
    a = image.astype(np.float64)
    lo, hi = np.percentile(a, [0.5, 99.5])
    return (np.clip((a - lo) / max(hi - lo, 1e-9), 0, 1) * 255).astype(np.uint8)


REAL = [  # name, files, downscale factor for this benchmark
    ("blood smear (miLab, 10 planes)", "microscopy_wbc_milab", "*.jpg", 1),
    ("algae (5 planes, 2x downscaled)", "microscopy_algae_brightfield", "img_*.png", 2),
    ("EDF skeleton (3 slices)", "microscopy_edf_skeleton_zeiss", "stack.tif", 1),
    ("PCB macro (7 frames)", "focus_stack_pcb/pcb", "pcb_*.jpg", 1),
]


def real_stacks(runs, timer):
    from skimage.transform import rescale

    IMG.mkdir(parents=True, exist_ok=True)
    _colourbar()
    lines = ["", "## Real microscopy stacks (no ground truth): pictures", "",
             "The sharpest input slice beside the fused images and height maps (viridis, first "
             f"slice dark; colour bar under the input) of the default method `{DEFAULT_METHOD}`, "
             "the other classic focus measures, the Laplacian pyramid and wavelet fusion, the "
             "CNN in both modes, the CNN-driven wavelet fusion and the mean projection; judge "
             "them by eye. Each "
             "picture is a full-resolution centre crop of at most 480 x 480 pixels; the time is "
             "for the whole stack.", ""]
    picks = [(DEFAULT_METHOD, "nway")] + [
        (m, "nway") for m in ("dog", "sml", "tenengrad", "laplacian_pyramid", "wavelet", "cnn")
        if m != DEFAULT_METHOD] + [("cnn", "series"), ("mean", "")]
    if "cnn_wavelet" in mf.available_methods():
        picks.insert(-1, ("cnn_wavelet", "series"))
    for name, folder, pattern, factor in REAL:
        root = DATA / folder
        files = sorted(root.glob(pattern))
        if not files:
            lines.append(f"- {name}: skipped ({root} absent)")
            continue
        stack = [read_image(f) for f in files] if len(files) > 1 else list(read_image(files[0]))
        if factor > 1:
            stack = [(rescale(s, 1 / factor, channel_axis=-1 if s.ndim == 3 else None,
                              anti_aliasing=True, preserve_range=True)).round().astype(s.dtype)
                     for s in stack]
        slug = folder.split("/")[0]
        sharpest = _sharpest(stack)
        lines += [f"### {name}", "",
                  "| input: slice " + str(sharpest) + " (the sharpest) | "
                  + " | ".join(label(*c) for c in picks) + " |",
                  "|" + "---|" * (len(picks) + 1)]
        fname = f"{slug}_input_{sharpest}.jpg"
        _save(_to8(stack[sharpest]), IMG / fname)
        cells, hcells = [f"![slice {sharpest}](img/{fname})"], ["![height colour bar]"
                                                                "(img/height_colourbar.png)"]
        for c in picks:
            t0 = time.perf_counter()
            res = timer.fuse(("real",) + c, stack, *c)
            dt = time.perf_counter() - t0
            fname = f"{slug}_{c[0]}_{c[1] or 'baseline'}.jpg"
            _save(_to8(res.image), IMG / fname)
            cells.append(f"![{label(*c)}](img/{fname}) {dt:.1f} s")
            if c[0] not in ("mean", "max"):
                hname = f"{slug}_{c[0]}_{c[1]}_height.jpg"
                _save(_colour(res.index_map, len(stack)), IMG / hname)
                hcells.append(f"![height {label(*c)}](img/{hname})")
            else:
                hcells.append("")
        lines += ["| " + " | ".join(cells) + " |", "| " + " | ".join(hcells) + " |", ""]
        if slug in FOCUS_MAP_STACKS:
            lines += _focus_maps(stack, slug, sharpest)
    return lines


#: the real stacks whose focus maps are shown (the inspector's score and decision)
FOCUS_MAP_STACKS = ("microscopy_wbc_milab", "microscopy_algae_brightfield")


def _sharpest(stack) -> int:
    """The slice with the largest mean sum-modified-Laplacian (its whole-image focus)."""
    from napari_mfif.focus.sml import sum_modified_laplacian
    from napari_mfif.stack import as_stack, focus_gray

    gray = focus_gray(as_stack(stack).astype(np.float32))
    return int(np.argmax([sum_modified_laplacian(g, presmooth=1.0, window=3.0).mean()
                          for g in gray]))


def _focus_maps(stack, slug, sharpest):
    """Focus maps (``napari_mfif.focus_map``, what the inspector widget shows) between the
    sharpest slice A and a slice B three planes away: score P(A sharper) and decision."""
    b = sharpest + 3 if sharpest + 3 < len(stack) else max(sharpest - 3, 0)
    cells = []
    methods = (DEFAULT_METHOD, "sml", "cnn")
    for method in methods:
        maps = mf.focus_map(stack[sharpest], stack[b], method=method, device="cpu")
        for kind in ("score", "decision"):
            fname = f"{slug}_focusmap_{method}_{kind}.jpg"
            _save((np.clip(getattr(maps, kind), 0, 1) * 255).astype(np.uint8), IMG / fname)
            cells.append(f"![{method} {kind}](img/{fname})")
    fa, fb = f"{slug}_input_{sharpest}.jpg", f"{slug}_input_{b}.jpg"
    _save(_to8(stack[b]), IMG / fb)
    return [f"Focus maps between slice {sharpest} (A) and slice {b} (B), as the *Inspect focus "
            "map* widget shows them: the score P(A is sharper) (white: A) and the final "
            "decision (white: A taken).", "",
            "| A | B | " + " | ".join(f"{m} {k}" for m in methods for k in ("score", "decision"))
            + " |", "|" + "---|" * (2 + 2 * len(methods)),
            f"| ![A](img/{fa}) | ![B](img/{fb}) | " + " | ".join(cells) + " |", ""]


def _colourbar():
    """The height maps' colour scale (viridis: the first slice dark, the last bright)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.8, 0.9), constrained_layout=True)
    ax.imshow(_colour(np.linspace(0, 1, 256)[None].repeat(12, 0), 2), aspect="auto")
    ax.set_yticks([])
    ax.set_xticks([0, 255], ["first slice", "last slice"])
    ax.set_title("height map colours", fontsize=9)
    IMG.mkdir(parents=True, exist_ok=True)
    fig.savefig(IMG / "height_colourbar.png", dpi=90)
    plt.close(fig)


# -- cost curves ---------------------------------------------------------------------------

SCALING_METHODS = [("dog", "nway"), ("sml", "nway"), ("tenengrad", "nway"),
                   ("laplacian_pyramid", "nway"), ("wavelet", "nway"), ("cnn", "nway")]


def scaling(quick):
    """Seconds of one fusion (in memory, height map included) against slices and image size,
    on synthetic uint16 cell stacks."""
    slices = (5, 10) if quick else (5, 10, 20, 40)
    sizes = (256, 512) if quick else (256, 512, 1024, 2048)
    rng_seed = 7
    curves = {c: {"slices": [], "size": []} for c in SCALING_METHODS}
    for kind, values in (("slices", slices), ("size", sizes)):
        for v in values:
            z, side = (v, 512) if kind == "slices" else (10, v)
            stack = mf.focal_stack(n_slices=z, shape=(side, side), noise=0.01, seed=rng_seed,
                                   blur_per_slice=1.0).stack
            for c in SCALING_METHODS:
                mf.fuse(stack[:2, :64, :64], method=c[0], mode=c[1], device="cpu")  # warm
                best = np.inf
                for _ in range(2):  # the faster of two runs (one when a run takes > 5 s)
                    t0 = time.perf_counter()
                    mf.fuse(stack, method=c[0], mode=c[1], device="cpu")
                    best = min(best, time.perf_counter() - t0)
                    if best > 5:
                        break
                curves[c][kind].append(best)
    lines = ["", "## Cost against slices and image size", "",
             "One fusion in memory (height map included, no file I/O), synthetic uint16 cell "
             f"stacks: slices {', '.join(map(str, slices))} at 512 x 512, and sizes "
             f"{', '.join(f'{v}^2' for v in sizes)} with 10 slices. Seconds (the faster of two "
             "runs), and in brackets "
             "megapixels per second per slice (slices x pixels / time); a constant rate "
             "means cost linear in slices and pixels. Plot: "
             "[img/cost_curves.png](img/cost_curves.png).", ""]
    for kind, values in (("slices", slices), ("size", sizes)):
        header = ["method"] + [f"{v} slices" if kind == "slices" else f"{v}^2" for v in values]
        rows = []
        for c in SCALING_METHODS:
            row = [label(*c)]
            for v, t in zip(values, curves[c][kind]):
                z, side = (v, 512) if kind == "slices" else (10, v)
                row.append(f"{t:.2f} s ({z * side * side / 1e6 / t:.1f})")
            rows.append(row)
        lines += table(header, rows) + [""]
    _plot_curves(curves, slices, sizes)
    lines += ["![cost curves](img/cost_curves.png)", ""]
    return lines


def _plot_curves(curves, slices, sizes):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    for c, data in curves.items():
        axes[0].plot(slices, data["slices"], "o-", label=label(*c))
        axes[1].plot([v * v * 10 / 1e6 for v in sizes], data["size"], "o-", label=label(*c))
    axes[0].set(xlabel="slices (512 x 512)", ylabel="seconds", xscale="log", yscale="log",
                title="time against slices")
    axes[1].set(xlabel="input megapixels (10 slices)", ylabel="seconds", xscale="log",
                yscale="log", title="time against image size")
    for ax in axes:
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=8)
    IMG.mkdir(parents=True, exist_ok=True)
    fig.savefig(IMG / "cost_curves.png", dpi=90)
    plt.close(fig)


def _plot_summary(columns, keys, per_mpix):
    """One bar chart per summary column (quality per method), plus seconds per megapixel."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = columns + ["s / MP"]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 0.32 * len(keys) + 1.5),
                             sharey=True, constrained_layout=True)
    names = [label(*c) for c in keys]
    for ax, col in zip(np.atleast_1d(axes), panels):
        vals = ([per_mpix[c] for c in keys] if col == "s / MP"
                else [SUMMARY[col].get(c, np.nan) for c in keys])
        finite = [v for v in vals if v == v]
        ax.barh(range(len(keys)), vals, color="tab:blue" if col != "s / MP" else "tab:gray")
        if finite and col != "s / MP":
            lo, hi = min(finite), max(finite)
            ax.set_xlim(lo - 0.05 * (hi - lo + 1e-9), hi + 0.05 * (hi - lo + 1e-9))
        if col == "s / MP":
            ax.set_xscale("log")
        ax.set_title(col, fontsize=9)
        ax.grid(True, axis="x", alpha=0.3)
    ax0 = np.atleast_1d(axes)[0]
    ax0.set_yticks(range(len(keys)), names, fontsize=8)
    ax0.invert_yaxis()
    IMG.mkdir(parents=True, exist_ok=True)
    fig.savefig(IMG / "quality_summary.png", dpi=90)
    plt.close(fig)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer seeds and image sets")
    args = p.parse_args()
    import torch

    runs = registry_runs() + variant_runs()
    timer = Timer()
    t0 = time.perf_counter()
    lines = ["# Evaluation report: quality and speed of every method, one run", "",
             f"Made by `benchmarks/quality.py{' --quick' if args.quick else ''}` on "
             f"{time.strftime('%Y-%m-%d')}, {machine()} ({torch.get_num_threads()} torch "
             f"threads), CPU only, napari-mfif {mf.__version__}. Every method of the registry "
             "with default parameters, in both modes; `nway-hard` is the CNN's N-way with the "
             "hard rule; `cnn[...]` are the papers' CNN variants (other shipped "
             "weights, or the Gaussian-pyramid scoring of a later CNN paper) in the papers' pairwise series "
             "pipeline; `mean` and `max` are the naive projections. The papers' metrics: PSNR "
             "and SSIM where there is a ground truth, Q_G (Q_AB/F), Q_MI, Q_Y, Q_CB where there "
             "is none, PIQE and entropy of every fused image.", ""]
    lines += synthetic(runs, timer, [21] if args.quick else [21, 22])
    lines += voc(runs, timer, 30 if args.quick else 1000)
    lines += no_reference(runs, timer, 8 if args.quick else 1000)
    lines += real_stacks(runs, timer)
    keys = [c for c in runs + BASELINES if c in timer.seconds]
    summary = ["## Summary: every method in one table", "",
               "Means from the sections below: PSNR (dB) over the synthetic cell and "
               "fluorescence-like stacks and over MF-VOC (ground truth), Q_G on the survey's "
               "Lytro pairs and on MFIFB (no ground truth), and seconds per input megapixel over "
               "all fusions except the real stacks. Bold: best per column.", ""]
    columns = [c for c in ("synthetic cells PSNR", "synthetic fluorescence PSNR", "MF-VOC PSNR",
                           "Lytro Q_G", "MFIFB Q_G", "Lytro PIQE") if c in SUMMARY]
    rows = []
    for c in keys:
        row = [label(*c)]
        for col in columns:
            vals = SUMMARY[col]
            best = (min if "PIQE" in col else max)(vals.values())
            v = vals.get(c)
            fmt = "{:.2f}" if "PSNR" in col or "PIQE" in col else "{:.4f}"
            row.append("" if v is None else (f"**{fmt.format(v)}**" if v == best else fmt.format(v)))
        row.append(f"{timer.per_mpix(c):.3f}")
        rows.append(row)
    summary += table(["method"] + columns + ["s / MP"], rows) + [""]
    _plot_summary(columns, keys, {c: timer.per_mpix(c) for c in keys})
    summary += ["![quality per method](img/quality_summary.png)", ""]
    lines[4:4] = summary
    lines += ["", "## Speed", "", "Seconds per input megapixel (slices x height x width), over "
              "all the fusions above except the real stacks, and for the real stacks alone.", ""]
    lines += table(["method", "s / MP (all sets)", "s / MP (real stacks)"],
                   [[label(*c), f"{timer.per_mpix(c):.3f}",
                     f"{timer.per_mpix(('real',) + c):.3f}" if ('real',) + c in timer.seconds
                     else ""] for c in keys])
    lines += scaling(args.quick)
    out = write_page("quality", lines, t0, args.quick)
    print(out.read_text())


if __name__ == "__main__":
    main()
