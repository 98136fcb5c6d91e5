"""The focus CNN trained on the papers' pairs against the one trained on microscopy too
(issue 12): ``cnn`` with ``training="papers"`` (``compact.pt``) and ``training="microscopy"``
(``compact_microscopy.pt``), N-way and series, beside the classic measures.

    .venv/bin/python benchmarks/cnn_microscopy.py [--quick]

Writes docs/benchmarks/cnn_microscopy.md, crops under docs/benchmarks/img/ and a montage of
the fused blood smear to /tmp/cnn_microscopy_preview.png. Sections:

- held-out patch accuracy of both weights: the papers' held-out pairs (from the training
  records) and pairs from simulated stacks rendered with held-out seeds
  (``napari_mfif.train.microscopy_heldout_set``), brightfield and fluorescence apart;
- simulated stacks (``napari_mfif.optics``) with seeds no training run uses: the default
  brightfield and fluorescence stacks (256 x 256, 9 slices, uint16) and stacks with random
  optics, specimen and camera (the training recipe's ranges, other seeds): PSNR / SSIM against
  the in-focus truth and height-map error, every method of the registry;
- the real blood smear (../shared/data/microscopy_wbc_milab): SSIM to plane 5 and gradient
  energy relative to plane 5, as benchmarks/brightfield.py scores it;
- the Gaussian-blur synthetic stacks of benchmarks/quality.py and the survey's Lytro pairs
  (Q_G).

Absent data is skipped with a line saying so.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

import napari_mfif as mf
from napari_mfif import metrics, optics
from napari_mfif.io import read_image
from napari_mfif.train import MICRO_KINDS, evaluate_microscopy, microscopy_heldout_set, \
    random_optics
from _common import DATA, gt_stack, machine, run, write_page
from brightfield import SMEAR_DIR, _gray, gradient_energy, load_blood_smear
from quality import IMG, SYNTH, _colour, table

PAPERS, MICRO = "cnn", "cnn[training=microscopy]"
#: the columns that every section has: the classic measures and both weights in both modes
CORE = [("dog", "nway"), ("sml", "nway"), ("tenengrad", "nway"), (PAPERS, "nway"),
        (PAPERS, "series"), (MICRO, "nway"), (MICRO, "series")]
#: first seed of the benchmark's randomised stacks (the training pools start at 100000 and
#: 900000; the default stacks use seeds 0-3)
VARIED_SEED = 700_000


def name(method: str, mode: str) -> str:
    if method.startswith("cnn_wavelet"):
        base = "cnn_wavelet (microscopy)" if "microscopy" in method else "cnn_wavelet"
    elif method.startswith("cnn"):
        base = "cnn (microscopy)" if "microscopy" in method else "cnn (papers)"
    else:
        base = method
    return f"{base} {mode}"


def all_runs() -> list[tuple[str, str]]:
    """Every registered method in N-way (its default mode), the CNN also in series, and
    both CNN methods with the microscopy weights."""
    runs = []
    for m, spec in mf.available_methods().items():
        runs.append((m, "nway" if "nway" in spec.modes else spec.modes[0]))
    runs += [(PAPERS, "series"), (MICRO, "nway"), (MICRO, "series"),
             ("cnn_wavelet[training=microscopy]", "nway")]
    return runs


# -- held-out patch accuracy ----------------------------------------------------------------

def accuracy(quick):
    from napari_mfif.focus.cnn import builtin_weights, load_net

    n = 4000 if quick else 20000
    t0 = time.perf_counter()
    held = microscopy_heldout_set(0, n)
    counts = {k: int(np.sum(held[3] == j)) for j, k in enumerate(MICRO_KINDS)}
    lines = ["## Held-out patch accuracy", "",
             "Pair head / score head. Papers' pairs: the 20,000 held-out pairs of the training "
             "records (cascaded sigma-2 blur of held-out images; 'noisy + mild' adds the mild "
             f"blur, gain and noise of the recipe). Microscopy pairs: {n:,} pairs "
             f"({counts['brightfield']:,} brightfield, {counts['fluorescence']:,} fluorescence) "
             "from the held-out pool of `napari_mfif.train` (12 + 12 stacks, 128 x 128, random "
             "optics, specimens and cameras, seeds 900000-900023, which no training run uses), "
             f"labelled by which slice is nearer the true depth; drawn in "
             f"{time.perf_counter() - t0:.0f} s.", ""]
    rows = []
    for training in ("papers", "microscopy"):
        record = json.loads(builtin_weights("compact", training).with_suffix(".json").read_text())
        net, _ = load_net(None, "compact", "cpu", training)
        acc = evaluate_microscopy(net, held)

        def pct(pair):
            return " / ".join(f"{100 * v:.2f} %" for v in pair)

        rows.append([f"`compact` ({training})",
                     pct((record["heldout_accuracy_pair_head"],
                          record["heldout_accuracy_score_head"])),
                     pct((record["heldout_accuracy_pair_head_noisy_mild"],
                          record["heldout_accuracy_score_head_noisy_mild"])),
                     pct(acc["all"]), pct(acc["brightfield"]), pct(acc["fluorescence"])])
    lines += table(["weights", "papers' pairs", "papers' pairs, noisy + mild",
                    "microscopy pairs", "brightfield", "fluorescence"], rows)
    return lines + [""]


# -- simulated stacks ----------------------------------------------------------------------

def varied_stack(kind: str, seed: int):
    """A stack with the training recipe's random settings at 256 x 256, rendered with the
    simulator's own camera noise; also the truth to score it against (fluorescence: the
    in-focus image plus the uniform background, which no method can take away)."""
    s = random_optics(kind, np.random.default_rng(seed), shape=(256, 256))
    spec = optics.specimen((256, 256), seed=seed, **s["specimen"])
    cam = s["camera"]
    common = dict(n_slices=s["n_slices"], spacing=s["spacing"], wavelength=s["wavelength"],
                  na=s["na"], medium_index=s["medium_index"], photons=cam["photons"],
                  read_noise=cam["read_noise"], dtype=cam["dtype"], seed=seed)
    if kind == "brightfield":
        st = optics.brightfield_stack(spec, s["depth"], condenser_na=s["condenser_na"], **common)
        return st, st.sharp.astype(np.float64), s
    st = optics.fluorescence_stack(spec, s["depth"], background=cam["background"],
                                   offset=cam["offset"], gain=cam["gain"], **common)
    haze = cam["background"] / cam["photons"] if cam["dtype"] == "float32" else (
        cam["gain"] * cam["background"])
    return st, st.sharp.astype(np.float64) + haze, s


def depth_oracle(s):
    """Each pixel from the slice nearest its true depth."""
    k = np.clip(np.rint(s.depth), 0, len(s.stack) - 1).astype(np.intp)
    return np.take_along_axis(s.stack, k[None], 0)[0]


def simulated(runs, quick):
    seeds = (0,) if quick else (0, 1, 2, 3)
    n_varied = 1 if quick else 4
    sets = []
    for kind, make in (("brightfield", optics.brightfield_stack),
                       ("fluorescence", optics.fluorescence_stack)):
        cases = []
        for seed in seeds:
            s = make(seed=seed)
            rng = 4095.0 if kind == "brightfield" else float(s.sharp.max() - s.sharp.min())
            cases.append((s, s.sharp, rng))
        sets.append((f"{kind}, default", cases))
    described = []
    for kind in ("brightfield", "fluorescence"):
        cases = []
        for i in range(n_varied):
            seed = VARIED_SEED + 2 * i + (kind == "fluorescence")
            s, truth, settings = varied_stack(kind, seed)
            cases.append((s, truth, float(truth.max() - truth.min())))
            depth = settings["depth"]
            described.append(
                f"{kind} {seed}: {settings['n_slices']} slices {settings['spacing']:.2f} um "
                f"apart, NA {settings['na']:.2f}"
                + (" oil" if settings["medium_index"] > 1 else "")
                + (f", condenser {settings['condenser_na']:.2f}" if kind == "brightfield"
                   else "")
                + f", {settings['specimen']['cells']} cells, phase "
                f"{settings['specimen']['phase']:.1f} rad, absorption "
                f"{settings['specimen']['absorption']:.2f}, depth "
                + (depth if isinstance(depth, str) else f"flat at {depth:.1f}")
                + f", {settings['camera']['photons']:.0f} photons, {settings['camera']['dtype']}")
        sets.append((f"{kind}, random settings", cases))

    lines = ["## Simulated stacks (held-out seeds)", "",
             "`napari_mfif.optics` stacks. *Default*: `brightfield_stack(seed=s)` and "
             "`fluorescence_stack(seed=s)` (256 x 256, 9 slices 1 um apart, uint16, smooth "
             f"depth), seeds {list(seeds)}; PSNR and SSIM over 4095 (the 12-bit range of the "
             "uint16 brightfield data; clear glass is 2400) and over the in-focus truth's range "
             "(200 ADU) for fluorescence. *Random settings*: the training "
             f"recipe's random optics, specimen and camera (`random_optics`) at 256 x 256 with "
             f"the simulator's own noise, seeds {VARIED_SEED}+ (no training run uses them); "
             "PSNR and SSIM over the truth's range (in fluorescence the truth plus the uniform "
             "background, which no method removes). PSNR (dB) / SSIM against the in-focus "
             "truth (`sharp`), mean over the stacks; bold: best. Height error: mean |index - "
             "depth| in slices. The best single slice is chosen with the truth; the depth "
             "oracle takes each pixel from the slice nearest its true depth (noise and haze "
             "included: averaging slices can beat it).", ""]
    header = ["method"] + [n for n, _ in sets]
    quality = {c: [] for c in runs}
    herr = {c: [] for c in runs}
    best_slice, oracle = [], []
    for _, cases in sets:
        best_slice.append(np.mean([max(metrics.psnr(truth, sl, r) for sl in s.stack)
                                   for s, truth, r in cases]))
        oracle.append(np.mean([metrics.psnr(truth, depth_oracle(s), r) for s, truth, r in cases]))
        for c in runs:
            q, h = [], []
            for s, truth, r in cases:
                res = run(s.stack, *c)
                q.append((metrics.psnr(truth, res.image, r), metrics.ssim(truth, res.image, r)))
                h.append(metrics.height_error(res.index_map, s.depth))
            quality[c].append(np.mean(q, axis=0))
            herr[c].append(float(np.mean(h)))
    rows = [["best single slice"] + [f"{v:.2f}" for v in best_slice],
            ["depth oracle"] + [f"{v:.2f}" for v in oracle]]
    for c in runs:
        cells = []
        for j in range(len(sets)):
            best = max(quality[d][j][0] for d in runs)
            text = f"{quality[c][j][0]:.2f} / {quality[c][j][1]:.3f}"
            cells.append(f"**{text}**" if quality[c][j][0] == best else text)
        rows.append([name(*c)] + cells)
    lines += table(header, rows)
    lines += ["", "Height-map error (slices):", ""]
    lines += table(header, [[name(*c)] + [f"{v:.2f}" for v in herr[c]] for c in runs])
    lines += ["", "The random-settings stacks: " + "; ".join(described) + ".", ""]
    return lines, sets


# -- the blood smear -----------------------------------------------------------------------

BOXES = {"red cells": ((300, 600), (1200, 1500)), "white cell": ((800, 1100), (600, 900))}
PICTURES = [("dog", "nway"), (PAPERS, "nway"), (PAPERS, "series"), (MICRO, "nway"),
            (MICRO, "series"), (MICRO, "nway-hard")]
#: the blood smear's columns: also the CNN's N-way with the hard rule (argmax)
SMEAR = CORE + [(PAPERS, "nway-hard"), (MICRO, "nway-hard")]


def blood_smear(quick):
    stack, best = load_blood_smear(quick)
    if stack is None:
        return [f"Blood smear: skipped ({SMEAR_DIR} absent).", ""], None
    boxes = {"crop": ((0, 300), (0, 300))} if quick else BOXES
    ref = stack[best]
    g_ref = gradient_energy(ref)
    rows = [[f"plane {k}", f"{metrics.ssim(_gray(ref), _gray(stack[k]), 255):.3f}",
             f"{gradient_energy(stack[k]) / g_ref:.3f}", ""] for k in (best - 1, best, best + 1)]
    results = {}
    for c in SMEAR:
        t0 = time.perf_counter()
        res = run(stack, *c)
        seconds = time.perf_counter() - t0
        results[c] = res
        z = len(stack)
        used = np.bincount(np.clip(np.rint(res.index_map), 0, z - 1).astype(int).ravel(),
                           minlength=z) / res.index_map.size
        rows.append([f"**{name(*c)}**", f"{metrics.ssim(_gray(ref), _gray(res.image), 255):.3f}",
                     f"{gradient_energy(res.image) / g_ref:.3f}",
                     ", ".join(f"{100 * u:.0f}" for u in used) + f" ({seconds:.0f} s)"])
    lines = ["## Real blood smear (miLab, 10 planes, 1920 x 1200 RGB)", "",
             f"Scored as in [brightfield.md](brightfield.md): SSIM (grayscale, 8-bit range) to "
             f"plane {best}, where the scanner's focus score peaks, and gradient energy (mean "
             f"squared Sobel magnitude) relative to plane {best}; the target for a "
             "method is SSIM at least 0.85 and gradient energy at most 1.10. Also the share (%) "
             "of pixels whose rounded height is each plane 0-9, and the time of the run "
             "(`nway-hard`: the CNN's N-way with `nway_rule=\"hard\"`)."
             + (" Quick run: a 512 x 512 crop." if quick else ""), ""]
    lines += table(["image", f"SSIM to plane {best}", "gradient energy / plane's",
                    "planes used (%)"], rows)
    lines += ["", f"Full-resolution crops: plane {best}, then each result and its height map "
              "(viridis, plane 0 dark, plane 9 bright).", ""]
    from PIL import Image

    for title, ((y0, y1), (x0, x1)) in boxes.items():
        slug = title.replace(" ", "_")
        heads, cells = [f"plane {best}"], []
        fname = f"cnnmic_wbc_{slug}_plane{best}.jpg"
        Image.fromarray(ref[y0:y1, x0:x1]).save(IMG / fname, quality=88)
        cells.append(f"![plane {best}](img/{fname})")
        for c in PICTURES:
            slug_c = name(*c).replace(" ", "_").replace("(", "").replace(")", "")
            fname = f"cnnmic_wbc_{slug}_{slug_c}.jpg"
            hname = f"cnnmic_wbc_{slug}_{slug_c}_height.jpg"
            Image.fromarray(results[c].image[y0:y1, x0:x1]).save(IMG / fname, quality=88)
            Image.fromarray(_colour(results[c].index_map, len(stack))[y0:y1, x0:x1]).save(
                IMG / hname, quality=88)
            cells.append(f"![{name(*c)}](img/{fname})<br>![height](img/{hname})")
            heads.append(name(*c))
        lines += [f"### {title}", "", "| " + " | ".join(heads) + " |", "|" + "---|" * len(heads),
                  "| " + " | ".join(cells) + " |", ""]
    return lines, (stack, best, results, boxes)


def montage(smear, sets, path="/tmp/cnn_microscopy_preview.png"):
    """Crops of the fused blood smear per weights (and of a simulated brightfield stack),
    for looking at with one's own eyes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = []
    if smear is not None:
        stack, best, results, boxes = smear
        for title, ((y0, y1), (x0, x1)) in boxes.items():
            rows.append([(f"plane {best}", stack[best][y0:y1, x0:x1])]
                        + [(name(*c), results[c].image[y0:y1, x0:x1]) for c in PICTURES])
            rows.append([(f"plane {best - 1}", stack[best - 1][y0:y1, x0:x1])]
                        + [(name(*c) + " height", _colour(results[c].index_map,
                                                          len(stack))[y0:y1, x0:x1])
                           for c in PICTURES])
    s = sets[0][1][0][0]  # the default brightfield stack, seed 0
    crop = np.s_[64:192, 64:192]
    lo, hi = np.percentile(s.sharp, [0.5, 99.5])

    def to8(image):  # one scale for all, the truth's
        return (np.clip((image[crop] - lo) / (hi - lo), 0, 1) * 255).astype(np.uint8)

    rows.append([("truth (sharp)", to8(s.sharp))]
                + [(name(*c), to8(run(s.stack, *c).image)) for c in PICTURES])
    fig, axes = plt.subplots(len(rows), len(rows[0]), figsize=(3 * len(rows[0]), 3 * len(rows)))
    for r, row in enumerate(rows):
        for col, (title, img) in enumerate(row):
            ax = axes[r, col]
            ax.imshow(img, cmap="gray" if img.ndim == 2 else None)
            ax.set_title(title, fontsize=8)
            ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


# -- the Gaussian-blur synthetic stacks and Lytro ------------------------------------------

def gaussian_synthetic(quick):
    seeds = [21] if quick else [21, 22]
    lines = ["## Gaussian-blur synthetic stacks", "",
             "The seven stacks of [quality.md](quality.md) (`napari_mfif.synthetic`: a sharp "
             "image blurred by a Gaussian per slice of distance from its depth; textured cells "
             "or fluorescence-like objects with haze and Poisson noise), 256 x 256 uint16, "
             f"seeds {seeds}; PSNR (dB) over the 12-bit range / SSIM, mean over the seeds; "
             "bold: best.", ""]
    names, cells = [], {c: [] for c in CORE}
    for scene, depth_kind, z, noise, photons, haze in SYNTH:
        q = {c: [] for c in CORE}
        for seed in seeds:
            s = gt_stack(scene, depth_kind, z, noise, photons, haze, seed)
            for c in CORE:
                r = run(s.stack, *c)
                q[c].append((metrics.psnr(s.sharp, r.image, 4095),
                             metrics.ssim(s.sharp, r.image, 4095)))
        names.append(f"{scene}, {depth_kind}, {z}")
        means = {c: np.mean(q[c], axis=0) for c in CORE}
        best = max(means[c][0] for c in CORE)
        for c in CORE:
            text = f"{means[c][0]:.2f} / {means[c][1]:.3f}"
            cells[c].append(f"**{text}**" if means[c][0] == best else text)
    mean_psnr = {c: np.mean([float(t.strip("*").split(" / ")[0]) for t in cells[c]])
                 for c in CORE}
    lines += table(["method"] + names + ["mean PSNR"],
                   [[name(*c)] + cells[c] + [f"{mean_psnr[c]:.2f}"] for c in CORE])
    return lines + [""]


def lytro(quick):
    root = DATA / "lytro_liu2020_benchmark" / "sources"
    if not root.is_dir():
        return [f"Lytro: skipped ({root} absent).", ""]
    pairs = sorted({q.name[:4] for q in root.glob("c_*_1.tif")})
    if quick:
        pairs = pairs[:4]
    runs = [("dog", "nway"), ("tenengrad", "nway"), (PAPERS, "series"), (MICRO, "series"),
            (PAPERS, "nway"), (MICRO, "nway")]
    vals = {c: [] for c in runs}
    for p in pairs:
        a, b = read_image(root / f"{p}_1.tif"), read_image(root / f"{p}_2.tif")
        for c in runs:
            vals[c].append(metrics.NO_REFERENCE["qabf"](a, b, run([a, b], *c).image))
    lines = ["## Lytro pairs (Q_G)", "",
             f"The survey's {len(pairs)} Lytro pairs (colour photographs, two focus planes); "
             "Q_G (Q_AB/F) as the survey computes it, mean over the pairs; the published CNN of "
             "Liu 2017 scores 0.7615 ([quality.md](quality.md)).", ""]
    lines += table(["method", "Q_G"], [[name(*c), f"{np.mean(vals[c]):.4f}"] for c in runs])
    return lines + [""]


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true",
                   help="one seed, fewer pairs, a crop of the smear, 4 Lytro pairs")
    args = p.parse_args()
    import torch

    from napari_mfif.focus.cnn import builtin_weights

    t0 = time.perf_counter()
    IMG.mkdir(parents=True, exist_ok=True)
    sizes = {t: builtin_weights("compact", t).stat().st_size for t in ("papers", "microscopy")}
    lines = ["# The focus CNN trained on microscopy: papers' weights against microscopy weights",
             "",
             f"Made by `benchmarks/cnn_microscopy.py{' --quick' if args.quick else ''}` on "
             f"{time.strftime('%Y-%m-%d')}, {machine()} ({torch.get_num_threads()} torch "
             f"threads), CPU only, napari-mfif {mf.__version__}, torch {torch.__version__}. "
             "`cnn (papers)` is the `cnn` method with its default weights (`compact.pt`, "
             f"{sizes['papers']:,} bytes: the papers' Gaussian-blur pairs), `cnn (microscopy)` "
             "the same method with `training=\"microscopy\"` (`compact_microscopy.pt`, "
             f"{sizes['microscopy']:,} bytes: those pairs mixed half and half with pairs from "
             "simulated brightfield and fluorescence stacks); every other parameter at its "
             "default (the papers' decision steps, soft N-way). The other methods with their "
             "defaults, N-way. How the weights were trained: [cnn.md](../cnn.md).", ""]
    lines += accuracy(args.quick)
    sim_lines, sets = simulated(all_runs(), args.quick)
    lines += sim_lines
    smear_lines, smear = blood_smear(args.quick)
    lines += smear_lines
    montage(smear, sets)
    lines += gaussian_synthetic(args.quick)
    lines += lytro(args.quick)
    out = write_page("cnn_microscopy", lines, t0, args.quick)
    print(out.read_text())


if __name__ == "__main__":
    main()
