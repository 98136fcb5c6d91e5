"""Fluorescence-like synthetic stacks: quality at three photon levels, and halos around bright
objects on a dark background.

1. Every registered method in both modes (plus the CNN's hard N-way rule and Tenengrad N-way
   without its noise floor) against the naive baselines (best single slice chosen with the
   ground truth, mean and maximum projection), on widefield-fluorescence-like stacks with
   Poisson noise, read noise and out-of-focus haze, at three photon levels, float32 and
   uint16, mean over three seeds. Times as ratios to Tenengrad N-way in the same run.
2. Halos: bright discs at several depths on a dark background. A defocused bright object
   spreads light over its dark neighbours; the error in a ring 2-12 px outside the objects
   measures how much of that light a method lets into the fused image. The CNN with and
   without its guided-filter step, series and N-way, Tenengrad with and without its noise
   floor, and the projections.

Writes docs/benchmarks/fluorescence.md and docs/benchmarks/img/fluorescence_halo.png.

    .venv/bin/python benchmarks/fluorescence.py
"""

from __future__ import annotations

import datetime
import sys
import time

import numpy as np
from scipy import ndimage as ndi
from scipy.special import expit

import napari_mfif as mf
from _common import DOCS, PSNR_CAP, Timer, label, machine, psnr_capped, registry_runs
from napari_mfif import metrics
from napari_mfif.synthetic import fluorescence_image, step_depth

OUT = DOCS / "fluorescence.md"
IMG = DOCS / "img" / "fluorescence_halo.png"

SHAPE = (384, 384)
N_SLICES = 10
BLUR = 1.2            # Gaussian sigma (px) per slice of defocus
SEEDS = (1, 2, 3)
PHOTONS = (30, 300, 3000)   # expected photons at intensity 1
READ_NOISE = 0.01     # Gaussian read noise, fraction of intensity 1
HAZE = 0.3            # out-of-focus glow, fraction of the scene blurred by 12 px
DTYPES = (np.float32, np.uint16)
#: intensity 0 and 1 of the synthetic scene in each dtype (as in napari_mfif.synthetic)
RANGES = {np.dtype(np.float32): (0.0, 1.0), np.dtype(np.uint16): (400.0, 3800.0)}
#: ground-truth intensity above which a pixel carries structure (the background is 0.05)
STRUCTURE = 0.10

# part 2: (scene, photons or None for noise-free, read noise, haze)
HALO_SHAPE = (256, 256)
HALO_CONDITIONS = [("layered", None, 0.0, 0.0), ("layered", 300, READ_NOISE, 0.0),
                   ("layered", 300, READ_NOISE, 0.3), ("focal_stack", 300, READ_NOISE, 0.0)]
MAX_DISCS = 20
BACKGROUND = 0.05
RING = (2, 12)        # ring around the objects, px outside their in-focus mask


def part1_runs():
    """(key, method, mode, params, row label) of part 1, registry order, with the extras."""
    runs = [(("oracle",), None, None, None, "best single slice (oracle)"),
            (("mean",), "mean", "", {}, "mean projection"),
            (("max",), "max", "", {}, "max projection")]
    for method, mode in registry_runs():
        runs.append(((method, mode), method, mode, {}, label(method, mode)))
        if method == "tenengrad" and mode == "nway":
            runs.append(((method, mode, "nf0"), method, mode, {"noise_floor": 0.0},
                         "tenengrad nway, noise_floor=0"))
    return runs


def to_unit(image, dtype):
    """Intensities in scene units: 0 = black, 1 = the scene's intensity 1."""
    lo, hi = RANGES[np.dtype(dtype)]
    return (np.asarray(image, np.float64) - lo) / (hi - lo)


def quality(truth, image, dtype, depth=None, index=None, mask=None):
    t, f = to_unit(truth, dtype), to_unit(image, dtype)
    psnr = psnr_capped(t, f, 1.0)
    ssim = metrics.ssim(t, f, data_range=1.0)
    mae = metrics.height_error(index, depth, mask) if index is not None else float("nan")
    return psnr, ssim, mae


def part1(timer: Timer):
    runs = part1_runs()
    res = {}  # (photons, dtype name) -> key -> list of (psnr, ssim, mae)
    for photons in PHOTONS:
        for dtype in DTYPES:
            cell = res.setdefault((photons, np.dtype(dtype).name), {r[0]: [] for r in runs})
            for seed in SEEDS:
                sharp = fluorescence_image(SHAPE, seed=seed)
                s = mf.focal_stack(sharp, n_slices=N_SLICES, blur_per_slice=BLUR,
                                   noise=READ_NOISE, photons=photons, haze=HAZE, dtype=dtype,
                                   seed=seed)
                mask = sharp > STRUCTURE
                for key, method, mode, params, _ in runs:
                    if method is None:  # the best single slice, chosen with the ground truth
                        k = max(range(N_SLICES), key=lambda k: psnr_capped(
                            to_unit(s.sharp, dtype), to_unit(s.stack[k], dtype), 1.0))
                        cell[key].append(quality(s.sharp, s.stack[k], dtype, s.depth,
                                                 np.full(SHAPE, k, np.float32), mask))
                        continue
                    r = timer.fuse(key, s.stack, method, mode, **params)
                    index = r.index_map if method not in ("mean", "max") else None
                    cell[key].append(quality(s.sharp, r.image, dtype, s.depth, index, mask))
            print(f"part 1: {photons} photons, {np.dtype(dtype).name} done", flush=True)
    return runs, res


# ---------------------------------------------------------------- part 2: halos


def disc_scene(seed):
    """Bright grainy discs (radius 3-8 px, peak 0.5-1) on a flat 0.05 background, each at
    the depth of the step_depth region its centre lies in. Returns the layers by depth, the
    sharp image, the object mask, the per-pixel object depth (NaN off the objects) and the
    depth map."""
    rng = np.random.default_rng(seed)
    h, w = HALO_SHAPE
    depth_map = step_depth(HALO_SHAPE, N_SLICES, n_regions=6, seed=seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    grain = ndi.gaussian_filter(rng.standard_normal(HALO_SHAPE).astype(np.float32), 1.0)
    grain /= grain.std() + 1e-12
    discs = []
    for _ in range(2000):
        if len(discs) >= MAX_DISCS:
            break
        cy, cx = rng.uniform(12, h - 12), rng.uniform(12, w - 12)
        r = rng.uniform(3, 8)
        # close neighbours on purpose (their rings overlap), but never touching
        if all(np.hypot(cy - y, cx - x) >= r + rr + 6 for y, x, rr, _ in discs):
            discs.append((cy, cx, r, rng.uniform(0.5, 1.0)))
    layers = {}
    mask = np.zeros(HALO_SHAPE, bool)
    obj_depth = np.full(HALO_SHAPE, np.nan, np.float32)
    for cy, cx, r, peak in discs:
        d = int(depth_map[int(cy), int(cx)])
        dist = np.hypot(yy - cy, xx - cx)
        disc = peak * expit((r - dist) * 3) * (1 + 0.3 * grain)
        layers[d] = layers.get(d, 0) + np.clip(disc, 0, None)
        inside = dist <= r + 0.5
        mask |= inside
        obj_depth[inside] = d
    sharp = BACKGROUND + sum(layers.values())
    return layers, sharp.astype(np.float32), mask, obj_depth, depth_map


def glow_of(sharp, haze):
    """focal_stack's haze: this fraction of the scene blurred by 12 px, in every slice."""
    return haze * ndi.gaussian_filter(sharp, 12.0, mode="reflect") if haze > 0 else 0.0


def layered_stack(seed, photons, read, haze):
    """Each depth layer blurred by its own defocus (sigma BLUR*|k-d|) and the layers added,
    as emitted light adds up in fluorescence: a defocused object spreads its light over the
    in-focus dark pixels around it. Then focal_stack's noise model: haze, Poisson, read."""
    layers, sharp, mask, obj_depth, _ = disc_scene(seed)
    rng = np.random.default_rng(seed + 2)
    glow = glow_of(sharp, haze)
    slices, clean = [], []
    for k in range(N_SLICES):
        sl = np.full(HALO_SHAPE, BACKGROUND, np.float32)
        for d, layer in layers.items():
            sigma = BLUR * abs(k - d)
            sl += ndi.gaussian_filter(layer, sigma, mode="reflect") if sigma > 0 else layer
        sl = sl + glow
        clean.append(sl)
        if photons:
            sl = rng.poisson(np.clip(sl, 0, None) * photons) / photons
        if read > 0:
            sl = sl + rng.normal(0, read, sl.shape)
        slices.append(sl.astype(np.float32))
    return np.stack(slices), np.stack(clean), sharp, mask, obj_depth


def focal_stack_scene(seed, photons, read, haze):
    """The same discs through mf.focal_stack with the step_depth map: each pixel is blurred
    by its own region's defocus (a dark pixel near a disc sees the disc's light in every
    slice but the one of its own region)."""
    _, sharp, mask, obj_depth, depth_map = disc_scene(seed)
    kwargs = dict(n_slices=N_SLICES, blur_per_slice=BLUR, haze=haze, dtype=np.float32, seed=seed)
    s = mf.focal_stack(sharp, depth_map, noise=read, photons=photons, **kwargs)
    clean = mf.focal_stack(sharp, depth_map, **kwargs).stack
    return s.stack, clean, sharp, mask, np.where(mask, depth_map, np.nan)


SCENES = {"layered": layered_stack, "focal_stack": focal_stack_scene}

GF8, GF0 = "cnn nway, guided filter r=8 (default)", "cnn nway, guided filter off (r=0)"
HALO_RUNS = [
    ("cnn", "nway", {}, GF8),
    ("cnn", "nway", {"gf_radius": 0}, GF0),
    ("cnn", "nway", {"gf_radius": 16}, "cnn nway, guided filter r=16"),
    ("cnn", "nway-hard", {}, "cnn nway-hard, guided filter r=8"),
    ("cnn", "nway-hard", {"gf_radius": 0}, "cnn nway-hard, guided filter off"),
    ("cnn", "series", {}, "cnn series, guided filter r=8 (default)"),
    ("cnn", "series", {"gf_radius": 0}, "cnn series, guided filter off (r=0)"),
    ("tenengrad", "nway", {}, "tenengrad nway, noise_floor=3 (default)"),
    ("tenengrad", "nway", {"noise_floor": 0.0}, "tenengrad nway, noise_floor=0"),
    ("tenengrad", "series", {}, "tenengrad series"),
    ("mean", "", {}, "mean projection"),
    ("max", "", {}, "max projection"),
]
#: (with, without) pairs whose per-seed differences are listed
PAIRS = [(GF8, GF0), ("cnn series, guided filter r=8 (default)",
                      "cnn series, guided filter off (r=0)"),
         ("cnn nway-hard, guided filter r=8", "cnn nway-hard, guided filter off"),
         ("tenengrad nway, noise_floor=3 (default)", "tenengrad nway, noise_floor=0")]


def condition_label(cond):
    scene, photons, read, haze = cond
    noise = f"{photons} photons, read {read:g}" if photons else "noise-free"
    return f"{scene}, {noise}, haze {haze:g}"


def halo_scores(fused, sharp, mask, obj_depth, index):
    dist = ndi.distance_transform_edt(~mask)
    ring = (dist > RING[0]) & (dist <= RING[1])
    err = fused.astype(np.float64) - sharp
    return {
        "excess": 100 * float(err[ring].mean()),
        "ring_mae": 100 * float(np.abs(err[ring]).mean()),
        "obj_mae": 100 * float(np.abs(err[mask]).mean()),
        "psnr": psnr_capped(sharp, fused, 1.0),
        "height": (metrics.height_error(index, np.nan_to_num(obj_depth), mask)
                   if index is not None else float("nan")),
        "ring_frac": float(ring.mean()),
        "obj_frac": float(mask.mean()),
        "n_objects": int(ndi.label(mask)[1]),
    }


def part2():
    res = {}  # condition -> row label -> list of dicts, one per seed
    floors = {}
    example = None
    for cond in HALO_CONDITIONS:
        scene, photons, read, haze = cond
        cell = res.setdefault(cond, {r[3]: [] for r in HALO_RUNS})
        floor = []
        for seed in SEEDS:
            stack, clean, sharp, mask, obj_depth = SCENES[scene](seed, photons, read, haze)
            dist = ndi.distance_transform_edt(~mask)
            ring = (dist > RING[0]) & (dist <= RING[1])
            # the least excess any blend of slices can have: the darkest noise-free slice
            floor.append(100 * float(np.mean((clean.min(axis=0) - sharp)[ring])))
            images = {}
            for method, mode, params, name in HALO_RUNS:
                r = Timer().fuse(name, stack, method, mode, **params)
                index = r.index_map if method not in ("mean", "max") else None
                cell[name].append(halo_scores(r.image, sharp, mask, obj_depth, index))
                images[name] = r.image
            if cond == HALO_CONDITIONS[1] and seed == SEEDS[0]:
                example = (sharp, mask, images)
        floors[cond] = float(np.mean(floor))
        print(f"part 2: {condition_label(cond)} done", flush=True)
    return res, floors, example


EXAMPLE_RUNS = [GF8, GF0, "tenengrad nway, noise_floor=3 (default)", "max projection"]


def example_crop(mask, size=128, step=16):
    """The size x size window with the most disc pixels (chosen on the ground truth only,
    never on a method's result)."""
    h, w = mask.shape
    _, y, x = max((mask[y:y + size, x:x + size].sum(), y, x)
                  for y in range(0, h - size + 1, step) for x in range(0, w - size + 1, step))
    return slice(y, y + size), slice(x, x + size)


def save_example(example):
    """The densest 128 x 128 crop of the first seed of the second halo condition: truth,
    then EXAMPLE_RUNS; gamma 0.5 so that dim halos show, one shared scale."""
    from PIL import Image

    sharp, mask, images = example
    crop = example_crop(mask)
    panels = [sharp[crop]] + [images[n][crop] for n in EXAMPLE_RUNS]
    gap = np.ones((panels[0].shape[0], 4), np.float32)
    strip = np.concatenate([x for p in panels for x in (np.clip(p, 0, 1) ** 0.5, gap)][:-1], axis=1)
    IMG.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((strip * 255).round().astype(np.uint8)).save(IMG, optimize=True)
    return crop


# ---------------------------------------------------------------- the page


def fmt(x, digits=2):
    return "—" if x != x else f"{x:.{digits}f}"


def signed(x, digits):
    """``x`` with a sign, and no '-0.000'."""
    return f"{round(float(x), digits) + 0.0:+.{digits}f}"


def summary1(runs, res1):
    """Sentences on part 1, computed from the numbers (no hand-written conclusions)."""
    names = {r[0]: r[4] for r in runs}
    out = []
    for photons in PHOTONS:
        cell = res1[(photons, "float32")]
        psnr = {k: float(np.mean(np.array(v)[:, 0])) for k, v in cell.items()}
        order = sorted(psnr, key=psnr.get, reverse=True)
        paired = np.array(cell[order[0]])[:, 0] - np.array(cell[order[1]])[:, 0]
        out.append(f"- {photons} photons (float32): best PSNR {names[order[0]]} "
                   f"{psnr[order[0]]:.2f} dB, then {names[order[1]]} {psnr[order[1]]:.2f} dB "
                   f"(per seed the first leads by "
                   f"{', '.join(f'{d:+.2f}' for d in paired)} dB) and {names[order[2]]} "
                   f"{psnr[order[2]]:.2f} dB; mean projection {psnr[('mean',)]:.2f} dB, best "
                   f"single slice {psnr[('oracle',)]:.2f} dB.")
    gains = []
    for photons in PHOTONS:
        cell = res1[(photons, "float32")]
        on = np.array(cell[("tenengrad", "nway")])
        off = np.array(cell[("tenengrad", "nway", "nf0")])
        gains.append(f"{photons} photons {signed(np.mean(on[:, 0] - off[:, 0]), 2)} dB PSNR, "
                     f"{signed(np.mean(on[:, 1] - off[:, 1]), 3)} SSIM, "
                     f"{signed(np.mean(on[:, 2] - off[:, 2]), 3)} slices height error")
    out.append("- Tenengrad N-way noise floor 3 minus noise floor 0 (float32): "
               + "; ".join(gains) + ".")
    diff = max(abs(np.mean(np.array(res1[(p, "float32")][k])[:, 0])
                   - np.mean(np.array(res1[(p, "uint16")][k])[:, 0]))
               for p in PHOTONS for k in res1[(p, "float32")])
    out.append(f"- float32 against uint16: the largest PSNR difference of any row is "
               f"{diff:.2f} dB.")
    return out


def summary2(res2, floors):
    """Sentences on part 2, computed from the numbers."""
    out = []
    for a, b in PAIRS:
        diffs = np.array([x["excess"] - y["excess"] for cond in HALO_CONDITIONS
                          for x, y in zip(res2[cond][a], res2[cond][b])])
        n = len(diffs)
        less, more = int((diffs < -5e-4).sum()), int((diffs > 5e-4).sum())
        verdict = ("reduces" if less == n else "increases" if more == n else
                   "reduces or leaves unchanged" if more == 0 and less else
                   "increases or leaves unchanged" if less == 0 and more else
                   "does not consistently change")
        what = b.split(", ", 1)[1]
        out.append(f"- {a} against {what}: the first {verdict} the ring excess (less in "
                   f"{less}, more in {more}, equal in {n - less - more} of {n} condition x "
                   f"seed pairs; change {diffs.min():+.3f} to {diffs.max():+.3f}, mean "
                   f"{diffs.mean():+.3f} percentage points of intensity 1).")
    per = []
    for c in HALO_CONDITIONS:
        mae = np.array([x["ring_mae"] - y["ring_mae"] for x, y in zip(res2[c][GF8], res2[c][GF0])])
        per.append(f"{condition_label(c)} {mae.mean():+.3f} (lower in {int((mae < 0).sum())} "
                   f"of {len(mae)} seeds)")
    out.append("- Ring MAE (halo plus noise), cnn nway with the guided filter minus without: "
               + "; ".join(per) + ". Where it is lower while the excess is higher, the fused "
               "ring has less noise but more light.")
    for cond in HALO_CONDITIONS:
        ex = {name: float(np.mean([x["excess"] for x in res2[cond][name]]))
              for *_, name in HALO_RUNS}
        best = min(ex, key=ex.get)
        out.append(f"- {condition_label(cond)}: least ring excess {best} {ex[best]:+.3f} "
                   f"(least possible {floors[cond]:+.3f}); mean projection "
                   f"{ex['mean projection']:+.3f}, max projection {ex['max projection']:+.3f}.")
    return out


def write(runs, res1, timer, res2, floors, crop, seconds):
    import torch

    cols = [(p, np.dtype(d).name) for p in PHOTONS for d in DTYPES]
    head = "| method | " + " | ".join(f"{p} ph, {d}" for p, d in cols) + " |"
    rule = "|---|" + "---|" * len(cols)
    cnn = mf.get_method("cnn").params
    lines = [
        "# Fluorescence-like synthetic stacks: photon levels and halos", "",
        f"Made by `.venv/bin/python benchmarks/fluorescence.py` on {datetime.date.today()} on "
        f"{machine()}, Python {sys.version.split()[0]}, numpy {np.__version__}, torch "
        f"{torch.__version__} ({torch.get_num_threads()} threads), CPU only. Run time: "
        f"{seconds:.0f} s (after start-up). All methods at their registered defaults unless a "
        "row says "
        f"otherwise (CNN: shipped `{cnn['arch']}` weights, guided filter r {cnn['gf_radius']}, "
        f"eps {cnn['gf_eps']}, soft N-way rule; classic: noise floor 3).", "",
        "## 1. Quality at three photon levels", "",
        f"Stacks: `mf.focal_stack(fluorescence_image({SHAPE}, seed=s), n_slices={N_SLICES}, "
        f"blur_per_slice={BLUR}, photons=P, noise={READ_NOISE}, haze={HAZE}, dtype=D, seed=s)` "
        f"for P in {list(PHOTONS)} (expected photons at intensity 1; the background is 0.05, "
        f"so it gets 1/20 of that), D in float32 and uint16, seeds {list(SEEDS)}: sparse "
        "grainy nuclei and 1-px filaments on a dark flat background, a smooth depth surface "
        "(`smooth_depth`), out-of-focus haze (30 % of the scene blurred by 12 px, in every "
        "slice, not in the ground truth), Poisson noise, then 1 % Gaussian read noise. The "
        "float32 and uint16 stacks of one seed are the same draw (uint16 = 400 + 3400 x "
        "intensity, rounded), so those two columns differ only by quantisation and the dtype "
        "round trip.", "",
        "Every number is the mean over the 3 seeds. Images are compared in scene units "
        "(intensity 0 to 1; uint16 mapped back with (x - 400) / 3400), so PSNR uses a peak of "
        f"1 in both dtypes (capped at {PSNR_CAP:.0f} dB). The ground truth is the noise-free, "
        "haze-free sharp image. *Best single slice (oracle)* is the one slice with the best "
        "PSNR against the ground truth, chosen per stack with the ground truth (an upper "
        "bound for 'pick one plane'). Bold: the best in each column.", "",
        "### PSNR (dB, mean ± standard deviation over seeds)", "", head, rule]

    def table(metric, digits, sd=False, best=max):
        out = []
        vals = {c: {r[0]: np.array(res1[c][r[0]])[:, metric] for r in runs} for c in cols}
        winners = {c: best((k for k in vals[c] if np.isfinite(vals[c][k]).all()),
                           key=lambda k: vals[c][k].mean()) for c in cols}
        for key, *_, name in runs:
            cells = []
            for c in cols:
                v = vals[c][key]
                s = fmt(v.mean(), digits) + (f" ± {v.std():.{digits}f}" if sd else "")
                if not np.isfinite(v).all():
                    s = "—"
                cells.append(f"**{s}**" if key == winners[c] else s)
            out.append(f"| {name} | " + " | ".join(cells) + " |")
        return out

    lines += table(0, 2, sd=True)
    lines += ["", "### SSIM (mean over seeds)", "", head, rule] + table(1, 4)
    lines += ["", "### Height error on structure (slices, mean over seeds)", "",
              f"Mean |index_map - true depth| over the pixels whose ground truth is above "
              f"{STRUCTURE} (the objects; about 5 % of the image), so the flat background, "
              "whose depth is undefined, does not count. The oracle slice's height is that "
              "slice's index; the projections have none.", "", head, rule] + table(2, 3, best=min)
    base = timer.seconds[("tenengrad", "nway")]
    n_stacks = len(PHOTONS) * len(DTYPES) * len(SEEDS)
    lines += ["", "### Time", "",
              f"Total wall-clock over the {n_stacks} stacks of part 1, as a ratio to Tenengrad "
              f"N-way measured in the same run (Tenengrad N-way: {base / n_stacks:.2f} s per "
              f"{N_SLICES} x {SHAPE[0]} x {SHAPE[1]} stack on this machine). CNN weights were "
              "loaded before timing.", "", "| method | time / tenengrad nway |", "|---|---|"]
    for key, *_, name in runs:
        if key in timer.seconds:
            lines.append(f"| {name} | {timer.seconds[key] / base:.2f} |")
    lines += ["", "The machine is shared: the ratios are from this one run and move with other "
              "load (torch uses both cores, the classic methods one)."]
    lines += ["", "### Summary (computed from the tables above)", ""] + summary1(runs, res1)


    n_obj = np.mean([d["n_objects"] for d in res2[HALO_CONDITIONS[0]][GF8]])
    ring_frac = 100 * np.mean([d["ring_frac"] for d in res2[HALO_CONDITIONS[0]][GF8]])
    obj_frac = 100 * np.mean([d["obj_frac"] for d in res2[HALO_CONDITIONS[0]][GF8]])
    lines += [
        "", "## 2. Halos around bright objects on a dark background", "",
        f"Scene: bright discs (radius 3-8 px, peak 0.5-1, 30 % grain; {n_obj:.0f} per image "
        f"on average) on a flat {BACKGROUND} background, {HALO_SHAPE[0]} x {HALO_SHAPE[1]}, "
        f"{N_SLICES} slices, blur {BLUR} px per slice of defocus, float32, seeds "
        f"{list(SEEDS)}. Each disc lies at the depth of the `step_depth` region (6 regions "
        "spanning slices 0-9) its centre falls in, so neighbours sit at different depths; "
        "discs are at least 6 px apart, so a defocused disc spreads light into its "
        "neighbours' rings. Two renderings of the same discs:", "",
        "- **layered**: each depth layer is blurred by its own defocus (Gaussian sigma "
        f"{BLUR} x |k - d| in slice k) and the layers are added, as emitted light adds up in "
        "fluorescence. A dark pixel next to a disc receives that disc's spread light in every "
        "slice except the disc's own, including the slices where the dark pixel's other "
        "neighbours are in focus. This is the physical case. Noise as `focal_stack` adds it: "
        "haze glow, Poisson, Gaussian read noise.",
        "- **focal_stack**: the package's renderer, `mf.focal_stack(sharp, step_depth_map, "
        "...)`, which blurs each pixel by its own region's depth: a dark pixel is clean in the "
        "slice of its own region and sees its neighbours' light in all others.", "",
        "Metrics, with intensities in scene units and reported in % of intensity 1 (the "
        "discs peak at 50-100 %):", "",
        f"- **ring excess**: mean of (fused - ground truth) over the ring {RING[0]}-{RING[1]} px "
        "outside the discs' in-focus masks (mask = disc radius + 0.5 px; distance to the union "
        f"of the masks, so no ring pixel is within {RING[0]} px of any disc; the ring covers "
        f"{ring_frac:.0f} % of the image, the discs {obj_frac:.1f} %). Positive = extra "
        "light = halo. Zero-mean noise averages out of it. Some excess cannot be avoided: "
        "where neighbours lie at different depths no slice is free of defocused light, and "
        "haze is in every slice. The *least possible* row is the mean over the ring of the "
        "darkest noise-free slice at each pixel minus the truth: no weighted average of the "
        "slices can go below it.",
        "- **ring MAE**: mean |fused - ground truth| over the same ring: halo plus the noise "
        "left in the dark area. In the noise-free condition it equals the halo.",
        "- **object MAE**: mean |fused - ground truth| over the discs (are the objects "
        "themselves kept sharp and at the right brightness).",
        "- **PSNR** over the whole image (peak 1), and **height**: mean |index_map - the "
        "true depth| over the discs, in slices.", "",
        "Guided filter off = `gf_radius=0`. In `fusion/guided_filter.py` a radius of 0 makes "
        "every box mean the identity, so var(I) = cov(I, p) = 0, a = 0, b = p, and the output "
        "is exactly the input map (eps 0.1 > 0, so no 0/0): r = 0 is a clean 'off'. The other "
        "decision steps stay (soft N-way: softmax of the patch scores; hard N-way and series: "
        "threshold and small-region removal).", ""]
    for cond in HALO_CONDITIONS:
        scene, photons, read, haze = cond
        lines += [f"### {condition_label(cond)}", "",
                  "| method | ring excess % | ring MAE % | object MAE % | PSNR dB | height |",
                  "|---|---|---|---|---|---|"]
        for *_, name in HALO_RUNS:
            d = res2[cond][name]
            m = {k: float(np.mean([x[k] for x in d])) for k in d[0]}
            lines.append(f"| {name} | {m['excess']:+.3f} | {m['ring_mae']:.3f} | "
                         f"{m['obj_mae']:.2f} | {m['psnr']:.2f} | {fmt(m['height'])} |")
        lines.append(f"| *least possible: darkest noise-free slice per pixel* | "
                     f"{floors[cond]:+.3f} | | | | |")
        lines.append("")
    lines += ["### Paired differences per seed", "",
              "Ring excess (percentage points of intensity 1) of the first setting minus the "
              "second, seed by seed; negative = the first has less halo.", "",
              "| with - without | condition | " + " | ".join(f"seed {s}" for s in SEEDS)
              + " |", "|---|---|" + "---|" * len(SEEDS)]
    for a, b in PAIRS:
        for cond in HALO_CONDITIONS:
            diffs = [x["excess"] - y["excess"] for x, y in zip(res2[cond][a], res2[cond][b])]
            lines.append(f"| {a} - {b.split(', ', 1)[1]} | {condition_label(cond)} | "
                         + " | ".join(f"{v:+.3f}" for v in diffs) + " |")
    lines += ["", "### Summary (computed from the tables above)", ""] + summary2(res2, floors)
    lines += ["", f"![halo example]({IMG.parent.name}/{IMG.name})", "",
              f"{condition_label(HALO_CONDITIONS[1])}, seed {SEEDS[0]}, rows "
              f"{crop[0].start}-{crop[0].stop}, columns {crop[1].start}-{crop[1].stop}: the "
              "128 x 128 window with the most disc pixels in the ground truth (not chosen by "
              "any result); gamma 0.5 so that dim halos show, one shared intensity scale. Left "
              "to right: ground truth, "
              + "; ".join(EXAMPLE_RUNS) + ".", ""]
    return lines


def main():
    t0 = time.perf_counter()
    timer = Timer()
    warm = mf.focal_stack(n_slices=2, shape=(64, 64), dtype=np.float32, seed=0)
    for method in mf.available_methods():  # load weights, start threads: not timed
        mf.fuse(warm.stack, method=method, device="cpu")
    runs, res1 = part1(timer)
    res2, floors, example = part2()
    crop = save_example(example)
    lines = write(runs, res1, timer, res2, floors, crop, time.perf_counter() - t0)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
