"""The candidates for the default method side by side on every set with a reference, plus
speed and contact sheets of the real stacks: the page that decides the default.

    .venv/bin/python benchmarks/focusnet.py [--quick] [--weights FILE] [--voc N]
        [--sections simulated,gaussian,smear,wafer,speed,sheets]

Writes docs/benchmarks/focusnet.md (``focusnet_quick.md`` with ``--quick``) and contact
sheets under docs/benchmarks/img/. ``--weights`` runs ``focusnet`` with another weights
file (a candidate from ``python -m napari_mfif.train_focusnet``) instead of the shipped one.

Sets, each with a reference:

- **simulated** (``benchmarks/simulated.py``'s sets, seeds 9001-9003, never used in
  training): brightfield with fringes, widefield fluorescence (dim, per-object depths, NA 1.4
  with z steps finer than the depth of field), reflected light (flat; no slice in focus):
  PSNR / SSIM against the noise-free in-focus image, height error in slices;
- **gaussian**: Gaussian-blur ground truth: the synthetic cells and fluorescence of
  benchmarks/quality.py (seeds 21, 22) and the MF-VOC pairs (PSNR / SSIM), the Lytro pairs
  of the survey (Q_G, no reference image);
- **smear**: the miLab blood smear, SSIM to the scanner's best plane and gradient energy
  relative to it;
- **wafer**: the reflected-light wafer, PSNR to its z = 0 plane, with every plane and with the
  in-focus planes (z = 0 and -0.45 um) left out (its LZW TIFFs need ``pip install
  imagecodecs``; skipped with a line saying so without it);
- **speed**: a 20 x 1024 x 1024 uint8 stack in memory, seconds and MP/s per slice, ``dog``
  and ``focusnet`` (and enfuse, when installed, on the same slices as files);
- **sheets**: contact sheets of centre-of-structure crops of every real stack in
  ``../shared/data``, for the eye.

Absent data is skipped with a line saying so.
"""

from __future__ import annotations

import argparse
import datetime
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402
from _common import DOCS, machine, run, write_page  # noqa: E402

import napari_mfif as mf  # noqa: E402
from napari_mfif import metrics  # noqa: E402
from napari_mfif.registry import DEFAULT_METHOD  # noqa: E402

#: (label, method, mode, params)
CANDIDATES = [
    ("dog", "dog", "nway", {}),
    ("sml", "sml", "nway", {}),
    ("laplacian_pyramid", "laplacian_pyramid", "nway", {}),
    ("cnn papers, paper's steps, series", "cnn", "series", {}),
    ("cnn papers, nway", "cnn", "nway", {}),
    ("cnn microscopy, series", "cnn", "series", {"training": "microscopy"}),
    ("cnn microscopy, nway", "cnn", "nway", {"training": "microscopy"}),
    ("cnn boundary, nway, no filter", "cnn", "nway", {"training": "boundary", "gf_radius": 0}),
    ("focusnet, network alone", "focusnet", "nway", {"detail": 0}),
    ("focusnet", "focusnet", "nway", {}),
]
SIM_SEEDS = (9001, 9002, 9003)
GT_SEEDS = (21, 22)


def candidates(weights: str | None, names=None):
    out = []
    for label, method, mode, kw in CANDIDATES:
        if names and label not in names:
            continue
        if method == "focusnet" and weights:
            kw = {**kw, "weights": weights}
        out.append((label, method, mode, kw))
    return out


def _fmt(v, digits=2):
    return "" if v is None or v != v else f"{v:.{digits}f}"


def _table(header, rows, best_cols=(), higher=True):
    """Markdown rows with the best value of each column in ``best_cols`` in bold."""
    best = {}
    for c in best_cols:
        vals = [r[c] for r in rows if isinstance(r[c], float) and r[c] == r[c]]
        if vals:
            best[c] = max(vals) if higher else min(vals)
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        cells = []
        for c, v in enumerate(r):
            if isinstance(v, float):
                s = _fmt(v, 4 if abs(v) < 1.5 else 2)
                if c in best and v == best[c]:
                    s = f"**{s}**"
                cells.append(s)
            else:
                cells.append(str(v))
        out.append("| " + " | ".join(cells) + " |")
    return out


# -- simulated ---------------------------------------------------------------------------


def simulated(cands, quick):
    import simulated as sim

    seeds = SIM_SEEDS[:1] if quick else SIM_SEEDS
    shape = (128, 128) if quick else (256, 256)
    lines = ["## Simulated microscope stacks (ground truth)", "",
             f"`benchmarks/simulated.py`'s sets, {shape[0]} x {shape[1]} px, seeds "
             f"{', '.join(map(str, seeds))} (mean). PSNR (dB) against the noise-free in-focus "
             "image; in brackets the height error in slices. Best in bold.", ""]
    header = ["run"] + [key for key, *_ in sim.SETS]
    results = {label: [] for label, *_ in cands}
    refs = {"best single slice": [], "depth oracle": []}
    for key, title, render, kwargs in sim.SETS:
        vals = {label: [] for label, *_ in cands}
        ref = {k: [] for k in refs}
        for seed in seeds:
            syn = render(shape=shape, seed=seed, **kwargs)
            ref["best single slice"].append(max(sim.scores(syn, s)[0] for s in syn.stack))
            ref["depth oracle"].append(sim.scores(syn, sim.oracle(syn))[0])
            for label, method, mode, kw in cands:
                res = run(syn.stack, method, mode, **kw)
                vals[label].append((sim.scores(syn, res.image)[0],
                                    float(np.mean(np.abs(res.index_map - syn.depth)))))
        for label in vals:
            results[label].append(tuple(np.mean(vals[label], axis=0)))
        for k in refs:
            refs[k].append(float(np.mean(ref[k])))
        print(f"  simulated {key} done", flush=True)
    rows = [[k] + [float(v) for v in vs] for k, vs in refs.items()]
    lines += ["Sets: " + "; ".join(f"`{key}`: {title}" for key, title, *_ in sim.SETS) + ".",
              ""]
    best = {c: max(results[label][c][0] for label in results) for c in range(len(sim.SETS))}
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        out.append("| " + " | ".join([row[0]] + [f"{v:.2f}" for v in row[1:]]) + " |")
    for label in results:
        cells = []
        for c, (p, e) in enumerate(results[label]):
            s = f"{p:.2f} ({e:.2f})"
            cells.append(f"**{s}**" if p == best[c] else s)
        out.append("| " + " | ".join([label] + cells) + " |")
    return lines + out + [""], results


# -- Gaussian-blur ground truth ------------------------------------------------------------


def gaussian(cands, quick, n_voc):
    from cnn_boundary import load_voc, lytro_pairs, measure

    pairs = load_voc(3 if quick else n_voc) if (_common.DATA / "mf_voc_synthetic_gt_subset"
                                                ).is_dir() else []
    lytro = lytro_pairs()
    if quick:
        lytro = lytro[:2]
    lines = ["## Gaussian-blur ground truth", "",
             f"MF-VOC: {len(pairs)} pairs (PSNR capped at 60 dB / SSIM to the ground truth); "
             f"the synthetic cells and fluorescence of benchmarks/quality.py, seeds "
             f"{', '.join(map(str, GT_SEEDS))}; Q_G on {len(lytro)} Lytro pairs (published "
             "CNN: 0.7615).", ""]
    # cnn_boundary's measuring loop, each candidate in its own mode only, on the CPU
    measured = measure([(label, method, {mode: {**kw, "device": "cpu"}})
                        for label, method, mode, kw in cands],
                       pairs, lytro, GT_SEEDS)
    rows = [[label, float(voc[0]), float(voc[1]), float(cells[0]), float(fl[0]), float(q)]
            for (label, *_), (_, (voc, cells, fl), q) in zip(cands, measured)]
    lines += _table(["run", "MF-VOC PSNR", "MF-VOC SSIM", "cells PSNR", "fluorescence PSNR",
                     "Lytro Q_G"], rows, best_cols=(1, 2, 3, 4, 5))
    return lines + [""], rows


# -- blood smear ---------------------------------------------------------------------------


def smear(cands, quick):
    from brightfield import _gray, gradient_energy, load_blood_smear

    stack, best = load_blood_smear(quick)
    if stack is None:
        return ["Blood smear: skipped (data absent).", ""], []
    ref = stack[best]
    g_ref = gradient_energy(ref)
    lines = ["## Blood smear (brightfield, 10 planes, 1920 x 1200 RGB)", "",
             f"SSIM (gray, 8-bit) to plane {best}, the scanner's best, and gradient energy "
             f"relative to it (target for the default: SSIM >= 0.92, energy 0.9-1.1).", ""]
    rows = []
    for label, method, mode, kw in cands:
        res = run(stack, method, mode, **kw)
        rows.append([label, float(metrics.ssim(_gray(ref), _gray(res.image), 255)),
                     float(gradient_energy(res.image) / g_ref)])
    lines += _table(["run", f"SSIM to plane {best}", "gradient energy / plane's"], rows,
                    best_cols=(1,))
    return lines + [""], rows


# -- wafer -----------------------------------------------------------------------------


def wafer(cands, quick):
    loaders = {k: f for k, _, f in getattr(_common, "REAL_STACKS", [])}
    loader = loaders.get("wafer_reflected")
    try:
        data = loader(512 if quick else None) if loader else None
    except mf.MfifError as exc:  # LZW TIFFs: tifffile needs imagecodecs
        return [f"Wafer: skipped ({exc}).", ""], []
    if data is None:
        return ["Wafer: skipped (data absent).", ""], []
    stack, z = data["stack"], np.asarray(data["z"])
    ref = stack[data["reference"]]
    keep = np.abs(z) > 1.0
    lines = ["## Reflected-light wafer (11 planes, flat, 1920 x 1200 RGB)", "",
             "PSNR (dB, 8-bit) to the z = 0 plane, fusing every plane, and fusing the planes "
             f"left when the two in-focus ones (|z| <= 1 um) are taken out ({int(keep.sum())} "
             "planes; the best of them is z = +8 um).", ""]
    best_out = max(metrics.psnr(ref, s, 255) for s in stack[keep])
    rows = [["best plane left (z = +8 um)", float("nan"), float(best_out)]]
    for label, method, mode, kw in cands:
        a = run(stack, method, mode, **kw).image
        b = run(stack[keep], method, mode, **kw).image
        rows.append([label, float(metrics.psnr(ref, a, 255)), float(metrics.psnr(ref, b, 255))])
    lines += _table(["run", "all planes", "in-focus planes left out"], rows, best_cols=(1, 2))
    return lines + [""], rows


# -- speed ---------------------------------------------------------------------------------


def speed(cands, quick):
    from napari_mfif.synthetic import focal_stack

    z, n = (6, 512) if quick else (20, 1024)
    s = focal_stack(n_slices=z, shape=(n, n), dtype=np.uint8, noise=0.01, seed=5).stack
    mpix = z * n * n / 1e6
    lines = ["## Speed", "",
             f"A {z} x {n} x {n} uint8 stack in memory, best of 3 (1 for the slow runs), "
             "on the CPU; MP/s per slice = slices x megapixels / seconds. Ratios against "
             "`dog` measured in the same run.", ""]
    rows = []
    times = {}
    for label, method, mode, kw in cands:
        if method not in ("dog", "focusnet", "cnn") or (method == "cnn" and label !=
                                                        "cnn papers, nway"):
            continue
        reps = 1 if method == "cnn" else 3
        best = min(_timed(lambda: run(s, method, mode, **kw)) for _ in range(reps))
        times[label] = best
        rows.append([label, best, mpix / best])
    enfuse = shutil.which("enfuse")
    if enfuse:
        with tempfile.TemporaryDirectory() as tmp:
            import tifffile

            paths = []
            for k, sl in enumerate(s):
                p = Path(tmp) / f"s{k:02d}.tif"
                tifffile.imwrite(p, sl)
                paths.append(str(p))
            cmd = [enfuse, "--exposure-weight=0", "--saturation-weight=0",
                   "--contrast-weight=1", "--hard-mask", "-o", str(Path(tmp) / "out.tif")] + paths
            best = min(_timed(lambda: subprocess.run(cmd, check=True, capture_output=True))
                       for _ in range(3))
            times["enfuse (process, files, no height map)"] = best
            rows.append(["enfuse (process, files, no height map)", best, mpix / best])
    base = times.get("dog")
    lines += ["| run | seconds | MP/s per slice | throughput / dog's |", "|---|---|---|---|"]
    for label, t, r in rows:
        lines.append(f"| {label} | {t:.2f} | {r:.1f} | {base / t:.2f} |" if base else
                     f"| {label} | {t:.2f} | {r:.1f} | |")
    return lines + [""], rows


def _timed(f) -> float:
    t0 = time.perf_counter()
    f()
    return time.perf_counter() - t0


# -- contact sheets --------------------------------------------------------------------


def sheets(cands, quick):
    stacks = getattr(_common, "REAL_STACKS", None)
    if not stacks:
        return ["Contact sheets: skipped (no real-stack loaders).", ""]
    picks = [c for c in cands if c[0] in ("dog", "cnn papers, nway", "laplacian_pyramid",
                                          "focusnet, network alone", "focusnet")]
    size = 160 if quick else 256
    rows, hrows = [], []
    for key, title, loader in stacks:
        data = loader(768 if not quick else 384)
        if data is None:
            continue
        st = data["stack"]
        gray = st.astype(np.float32).mean(-1) if st.ndim == 4 else st.astype(np.float32)
        best_k = int(np.argmax([np.var(np.diff(g, axis=1)) for g in gray]))
        box = _common.busy_crop(gray[best_k], size)
        y0, y1, x0, x1 = box
        row = [(f"sharpest slice ({best_k})", st[best_k][y0:y1, x0:x1])]
        hrow = []
        for label, method, mode, kw in picks:
            res = run(st, method, mode, **kw)
            row.append((label, res.image[y0:y1, x0:x1]))
            hrow.append((f"height:{label}:Z={len(st)}", res.index_map[y0:y1, x0:x1]))
        rows.append((title, row))
        hrows.append((title, hrow))
        print(f"  sheet {key} done", flush=True)
    img = DOCS / "img"
    img.mkdir(parents=True, exist_ok=True)
    suffix = "_quick" if quick else ""
    _common.contact_sheet(img / f"focusnet_sheet{suffix}.jpg", rows, size=size)
    _common.contact_sheet(img / f"focusnet_heights{suffix}.jpg", hrows, size=size)
    return ["## Real stacks, by eye", "",
            "Full-resolution crops where the sharpest slice has the most structure; one row "
            "per stack (same display range across a row). Then the height maps (viridis, "
            "first slice dark).", "",
            f"![contact sheet](img/focusnet_sheet{suffix}.jpg)", "",
            f"![height maps](img/focusnet_heights{suffix}.jpg)", ""]


SECTIONS = ("simulated", "gaussian", "smear", "wafer", "speed", "sheets")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--weights", default=None)
    p.add_argument("--voc", type=int, default=122, help="MF-VOC pairs")
    p.add_argument("--sections", default=",".join(SECTIONS))
    p.add_argument("--only", default="", help="candidate labels separated by ';'")
    p.add_argument("--out", default=None, help="page stem (default focusnet)")
    args = p.parse_args()
    started = time.perf_counter()
    names = [n.strip() for n in args.only.split(";") if n.strip()] or None
    cands = candidates(args.weights, names)
    wanted = args.sections.split(",")
    lines = ["# Choosing the default: every candidate on every set", "",
             f"Made by `benchmarks/focusnet.py`{' --quick' if args.quick else ''} on "
             f"{datetime.date.today()} ({machine()}; napari-mfif {mf.__version__}; default "
             f"method `{DEFAULT_METHOD}`). Not edited by hand. Every run on the CPU.", ""]
    if args.weights:
        lines += [f"`focusnet` with weights `{Path(args.weights).name}`.", ""]
    for name in SECTIONS:
        if name not in wanted:
            continue
        t0 = time.perf_counter()
        if name == "simulated":
            part, _ = simulated(cands, args.quick)
        elif name == "gaussian":
            part, _ = gaussian(cands, args.quick, args.voc)
        elif name == "smear":
            part, _ = smear(cands, args.quick)
        elif name == "wafer":
            part, _ = wafer(cands, args.quick)
        elif name == "speed":
            part, _ = speed(cands, args.quick)
        else:
            part = sheets(cands, args.quick)
        lines += part
        print(f"{name}: {time.perf_counter() - t0:.0f} s", flush=True)
        print("\n".join(part), flush=True)
    out = write_page(args.out or "focusnet", lines, started, args.quick)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
