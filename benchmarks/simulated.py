"""Every method on physically simulated microscope stacks with ground truth (issue 12).

    .venv/bin/python benchmarks/simulated.py [--quick]

Writes docs/benchmarks/simulated.md and a picture under docs/benchmarks/img/. The stacks come
from :mod:`napari_mfif.optics`: partially coherent brightfield (defocused phase cells grow
fringes brighter than their in-focus contrast) and widefield fluorescence (every slice carries
the out-of-focus light of the others), each with the in-focus image and the depth of every
pixel. Every method of the registry runs in both modes, the CNN with each set of shipped
weights it offers, and openfocus's methods (StackMFF networks, DTCWT, guided filter) when
openfocus is installed (``benchmarks/_openfocus.py``). Measured: PSNR and SSIM against the
in-focus image, and the mean height-map error in slices; two references: the best single
slice, and the "depth oracle" that takes each pixel from the slice nearest its true depth (the
best any one-slice-per-pixel choice could do, noise included).

The stacks are rendered with seeds 9001.. (never used to train the shipped weights).
"""

from __future__ import annotations

import argparse
import datetime
import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DOCS, machine, run  # noqa: E402

import napari_mfif as mf  # noqa: E402
from napari_mfif import metrics, optics  # noqa: E402
from napari_mfif.registry import DEFAULT_METHOD, available_methods, get_method  # noqa: E402

SEEDS = (9001, 9002, 9003)

#: parameter variants worth a row of their own (a finer or coarser focus band)
VARIANTS = ("dog[presmooth=1.0]",)

def stained_brightfield_stack(shape=(256, 256), seed=0, **kwargs):
    """Brightfield of stained cells (amplitude objects: half the light absorbed at a cell's
    thickest point, phase 0.5 rad) under a condenser of 0.7 of the objective's NA, as in a
    stained smear seen with Koehler illumination."""
    sp = optics.specimen(shape, absorption=0.5, phase=0.5, seed=seed)
    return optics.brightfield_stack(sp, shape=shape, condenser_na=0.45, seed=seed, **kwargs)


#: (key, title, renderer, its keyword arguments)
SETS = (
    ("bf", "brightfield, condenser NA 0.3 (defaults)", optics.brightfield_stack, {}),
    ("bf_coherent", "brightfield, condenser NA 0.1 (strong fringes)", optics.brightfield_stack,
     {"condenser_na": 0.1}),
    ("bf_objects", "brightfield, each object at its own depth, 13 slices",
     optics.brightfield_stack, {"depth": "objects", "n_slices": 13}),
    ("bf_stained", "brightfield, stained cells (absorbing, little phase), condenser NA 0.45",
     stained_brightfield_stack, {}),
    ("fl", "fluorescence, 200 photons (defaults)", optics.fluorescence_stack, {}),
    ("fl_dim", "fluorescence, 40 photons, background 5", optics.fluorescence_stack,
     {"photons": 40, "background": 5.0}),
    ("fl_objects", "fluorescence, each object at its own depth, 13 slices",
     optics.fluorescence_stack, {"depth": "objects", "n_slices": 13}),
    ("fl_fine", "fluorescence, NA 1.4 oil, z step 0.15 um (finer than the depth of field), "
     "21 slices", optics.fluorescence_stack,
     {"na": 1.4, "medium_index": 1.515, "spacing": 0.15, "n_slices": 21, "pixel_size": 0.065}),
    ("refl", "reflected light, flat pads and traces (defaults)", optics.reflected_stack, {}),
    ("refl_out", "reflected light, no slice in focus (specimen 2.5 slices below the first)",
     optics.reflected_stack, {"depth": -2.5}),
)


def runs() -> list[tuple[str, str, dict]]:
    """(label, kind, how): our methods in both modes, CNN weights variants, openfocus."""
    out = []
    for name in available_methods():
        spec = get_method(name)
        for mode in spec.modes:
            out.append((f"{name} {mode}", "ours", {"method": name, "mode": mode}))
        for param, choices in (spec.param_choices or {}).items():
            if param != "training":
                continue
            for choice in choices:
                if choice == spec.params.get(param):
                    continue
                for mode in spec.modes:
                    out.append((f"{name}[{param}={choice}] {mode}", "ours",
                                {"method": name, "mode": mode, param: choice}))
    for variant in VARIANTS:
        out.append((f"{variant} nway", "ours", {"method": variant, "mode": "nway"}))
    try:
        import _openfocus
    except ImportError:
        _openfocus = None
    if _openfocus is not None and _openfocus.available():
        for m in _openfocus.METHODS:
            out.append((f"openfocus {m}", "openfocus", {"method": m}))
    return out


def fuse(kind: str, how: dict, stack: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    if kind == "openfocus":
        import _openfocus

        return _openfocus.fuse(stack, how["method"]), None
    how = dict(how)
    result = run(stack, how.pop("method"), how.pop("mode"), **how)
    return result.image, result.index_map


def oracle(syn) -> np.ndarray:
    """Each pixel from the slice nearest its true depth."""
    k = np.clip(np.rint(syn.depth), 0, syn.stack.shape[0] - 1).astype(np.intp)
    return np.take_along_axis(syn.stack, k[None], axis=0)[0]


def scores(syn, image) -> tuple[float, float]:
    truth = syn.sharp.astype(np.float64)
    data_range = float(truth.max() - truth.min())
    return (metrics.psnr(truth, image.astype(np.float64), data_range),
            metrics.ssim(truth, image.astype(np.float64), data_range))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one seed, 128 x 128")
    args = parser.parse_args()
    seeds = SEEDS[:1] if args.quick else SEEDS
    shape = (128, 128) if args.quick else (256, 256)
    table = runs()
    started = time.perf_counter()
    # results[set][label] = list of (psnr, ssim, height error)
    results: dict = {}
    pictures = {}
    for key, title, render, kwargs in SETS:
        results[key] = {}
        for seed in seeds:
            syn = render(shape=shape, seed=seed, **kwargs)
            refs = {"best single slice": max((scores(syn, s) for s in syn.stack),
                                             key=lambda t: t[0]),
                    "depth oracle": scores(syn, oracle(syn))}
            for label, value in refs.items():
                results[key].setdefault(label, []).append((*value, np.nan))
            for label, kind, how in table:
                try:
                    image, height = fuse(kind, how, syn.stack)
                except Exception as exc:  # a method that cannot run here: say why
                    print(f"{key} {label}: {type(exc).__name__}: {exc}", flush=True)
                    continue
                err = (float(np.mean(np.abs(height - syn.depth))) if height is not None
                       else np.nan)
                results[key].setdefault(label, []).append((*scores(syn, image), err))
                if key == "bf_coherent" and seed == seeds[0]:
                    pictures[label] = image
            if key == "bf_coherent" and seed == seeds[0]:
                pictures["ground truth"] = syn.sharp
                pictures["depth oracle"] = oracle(syn)
                best = int(np.argmax([scores(syn, s)[0] for s in syn.stack]))
                pictures["best single slice"] = syn.stack[best]
            print(f"{key} seed {seed} done ({time.perf_counter() - started:.0f} s)", flush=True)
    write(results, pictures, seeds, shape, time.perf_counter() - started, args.quick)


def _picture(pictures: dict, ranked: list[str]) -> str | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    names = ["ground truth", "depth oracle", "best single slice"]
    names += [n for n in ranked if n in pictures and n not in names][:5]
    truth = pictures["ground truth"].astype(np.float64)
    lo, hi = np.percentile(truth, [0.5, 99.5])
    fig, axes = plt.subplots(2, 4, figsize=(13, 6.8))
    for ax, name in zip(axes.ravel(), names):
        ax.imshow(pictures[name], cmap="gray", vmin=lo, vmax=hi)
        ax.set_title(name, fontsize=9)
        ax.axis("off")
    for ax in axes.ravel()[len(names):]:
        ax.axis("off")
    fig.tight_layout()
    out = DOCS / "img" / "simulated_brightfield.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=80)
    plt.close(fig)
    return f"img/{out.name}"


def write(results, pictures, seeds, shape, seconds, quick) -> None:
    versions = f"napari-mfif {mf.__version__}, numpy {np.__version__}, Python {platform.python_version()}"
    try:
        import _openfocus

        if _openfocus.available():
            versions += f", openfocus {_openfocus.version()}"
    except ImportError:
        pass
    lines = [
        "# Physically simulated stacks: every method against the ground truth",
        "",
        f"Made by `benchmarks/simulated.py`{' --quick' if quick else ''} on "
        f"{datetime.date.today()} ({machine()}; {versions}) in {seconds:.0f} s. Not edited by "
        "hand.",
        "",
        f"Stacks from `napari_mfif.optics` ([the simulator](../simulator.md)), "
        f"{shape[0]} x {shape[1]} px (0.16 um pixels for brightfield, NA 0.65; 0.1 um and "
        f"NA 0.75 for fluorescence), 9 slices 1 um apart unless said, uint16 with camera "
        f"noise, seeds {', '.join(map(str, seeds))} (mean over the seeds). PSNR and SSIM "
        "against the noise-free in-focus image over its own range; height error = mean "
        "|height map - true depth| in slices. Every method on the CPU with its defaults; "
        "openfocus (when installed) without registration, on the CPU. Speed is not "
        "measured here (see [speed](speed.md)). "
        "Two references: the best single slice, and the depth oracle (each pixel from the "
        "slice nearest its true depth: the best one-slice-per-pixel choice, noise and haze "
        "included; averaging slices can beat it).",
        "",
    ]
    ranked_bf: list[str] = []
    for key, title, _, kwargs in SETS:
        rows = results[key]
        with np.errstate(invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns: no height map
            mean = {label: np.nanmean(np.array(v, dtype=np.float64), axis=0)
                    for label, v in rows.items() if len(v)}
        order = sorted(mean, key=lambda label: -mean[label][0])
        if key == "bf_coherent":
            ranked_bf = [label for label in order if label not in ("depth oracle",
                                                                    "best single slice")]
        lines += [f"## {title}", "",
                  "| run | PSNR (dB) | SSIM | height error (slices) |",
                  "|---|---|---|---|"]
        for label in order:
            p, s, e = mean[label]
            bold = "**" if label == order[0] or label.startswith(DEFAULT_METHOD + " nway") \
                else ""
            lines.append(f"| {bold}{label}{bold} | {p:.2f} | {s:.3f} | "
                         f"{'' if np.isnan(e) else f'{e:.2f}'} |")
        lines.append("")
    picture = _picture(pictures, ranked_bf) if pictures else None
    if picture:
        lines += ["## Picture", "",
                  f"Brightfield with strong fringes (condenser NA 0.1), seed {seeds[0]}: the "
                  "ground truth, the references and the five best runs, on the ground truth's "
                  "grey range.", "", f"![simulated brightfield]({picture})", ""]
    out = DOCS / "simulated.md"
    out.write_text("\n".join(lines))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
