"""How far ``focusnet`` pools neighbouring evidence (``neighbourhood``, ``neighbourhood_weight``)
and how strongly the fine detail's pick counts (``detail``), chosen on data the evaluation does
not use for simulated and Gaussian-blur stacks, and on the real stacks with a reference.

    .venv/bin/python benchmarks/focusnet_tuning.py [--weights FILE]

Writes docs/benchmarks/focusnet_tuning.md. Columns: the simulated sets of
benchmarks/simulated.py rendered with seeds 9101 and 9102 (the evaluation uses 9001-9003),
PSNR against the truth; the blood smear (SSIM to plane 5) and the reflected-light wafer
(PSNR to its z = 0 plane, with all planes and without the two in-focus ones; its LZW TIFFs
need imagecodecs). Rule: the
lowest sum of ranks over the columns. The real stacks take part because a network trained on
simulations alone is what is being corrected here; the page reports every column so that
what the choice costs anywhere is visible.

The second table, with the chosen neighbourhood, varies ``detail``: the network's weights
times 1 + detail x the dog method's N-way pick. Its columns add Gaussian-blur ground truth
that the evaluation does not use either: the synthetic cells and fluorescence of
benchmarks/quality.py with seeds 31 and 32 (the evaluation: 21, 22) and the MF-VOC pairs
81-100 (the evaluation: the first 40); for the smear, the distance of its gradient energy from
the plane's (|energy / plane's - 1|, lower is better) counts as a column of its own.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402
from _common import machine, write_page  # noqa: E402

SEEDS = (9101, 9102)
SIGMAS = (16.0, 32.0, 64.0)
WEIGHTS = (0.0, 0.5, 1.0, 2.0, 3.0)
DETAILS = (0.0, 5.0, 10.0, 20.0, 40.0, 100.0)
GT_SEEDS = (31, 32)
#: MF-VOC pairs used here (sorted by name); the evaluation uses the first 40
VOC_PAIRS = slice(80, 100)


def _ranks(cols: dict, configs: list, lower: tuple = ()) -> dict:
    ranks = {c: 0 for c in configs}
    for name, col in cols.items():
        order = sorted(configs, key=lambda c: col[c] if name in lower else -col[c])
        for r, c in enumerate(order):
            ranks[c] += r + 1
    return ranks


def _wafer_sets(loaders) -> list:
    """(column, stack, reference) of the wafer with all planes and without the two in-focus
    ones; none where the data is absent or unreadable (its LZW TIFFs need imagecodecs)."""
    from napari_mfif import MfifError

    try:
        wafer = loaders["wafer_reflected"]()
    except MfifError as exc:
        print(f"wafer skipped: {exc}")
        return []
    if wafer is None:
        return []
    st, ref = wafer["stack"], wafer["stack"][wafer["reference"]]
    keep = np.abs(np.asarray(wafer["z"])) > 1.0
    return [("wafer", st, ref), ("wafer, in-focus planes out", st[keep], ref)]


def _detail_fused(stack, wts, pick, detail):
    from napari_mfif.fusion.focusnet_pipeline import with_detail
    from napari_mfif.stack import to_dtype

    w = with_detail(wts.copy(), pick, detail) if detail else wts
    return to_dtype(_blend(stack, w), stack.dtype)


def _detail_parts(net, stack, hood, weight):
    """The network's N-way weights and the dog pick of one stack, computed once, by the
    method's own functions."""
    from napari_mfif.fusion.focusnet_pipeline import detail_pick

    return (_net_weights(stack, _grid(net, stack), hood, weight),
            detail_pick(_focus_gray(stack), "cpu"))


def detail_table(net, hood, weight):
    """Rows of the detail sweep: (lines, chosen detail)."""
    import simulated as sim
    from brightfield import _gray, gradient_energy
    from cnn_boundary import VOC, load_voc
    from quality import SYNTH

    from napari_mfif import metrics

    cols: dict[str, dict] = {}

    def add(name, stack, score):
        wts, pick = _detail_parts(net, stack, hood, weight)
        for d in DETAILS:
            cols.setdefault(name, {}).setdefault(d, []).append(
                score(_detail_fused(stack, wts, pick, d)))

    for key, _, render, kw in sim.SETS:
        for seed in SEEDS:
            syn = render(shape=(256, 256), seed=seed, **kw)
            add(key, syn.stack, lambda f, syn=syn: sim.scores(syn, f)[0])
    for case in SYNTH:
        for seed in GT_SEEDS:
            s = _common.gt_stack(*case, seed)
            add(f"{case[0]} (Gaussian)", s.stack,
                lambda f, s=s: metrics.psnr(s.sharp, f, 4095))
    if VOC.is_dir():
        for _, a, b, gt in load_voc(VOC_PAIRS.stop)[VOC_PAIRS]:
            add("MF-VOC", np.stack([a, b]),
                lambda f, gt=gt: _common.psnr_capped(gt, f, 255))
    loaders = {k: f for k, _, f in _common.REAL_STACKS}
    smear = loaders["blood_smear"]()
    if smear is not None:
        st, ref = smear["stack"], smear["stack"][smear["reference"]]
        g_ref = gradient_energy(ref)
        wts, pick = _detail_parts(net, st, hood, weight)
        fused = {d: _detail_fused(st, wts, pick, d) for d in DETAILS}
        cols["smear SSIM"] = {d: [float(metrics.ssim(_gray(ref), _gray(f), 255))]
                              for d, f in fused.items()}
        cols["smear |energy - 1|"] = {d: [abs(gradient_energy(f) / g_ref - 1)]
                                      for d, f in fused.items()}
    for name, sub, ref in _wafer_sets(loaders):
        add(name, sub, lambda f, ref=ref: metrics.psnr(ref, f, 255))
    means = {n: {d: float(np.mean(v)) for d, v in col.items()} for n, col in cols.items()}
    ranks = _ranks(means, list(DETAILS), lower=("smear |energy - 1|",))
    best = min(DETAILS, key=lambda d: (ranks[d], d))
    names = list(means)
    lines = ["## How strongly the fine detail counts (`detail`)", "",
             f"Neighbourhood {hood:g} px, weight {weight:g}. Simulated sets: seeds "
             f"{', '.join(map(str, SEEDS))}; Gaussian-blur cells and fluorescence: seeds "
             f"{', '.join(map(str, GT_SEEDS))}; MF-VOC pairs {VOC_PAIRS.start + 1}-"
             f"{VOC_PAIRS.stop}.", "",
             "| detail | " + " | ".join(names) + " | rank sum |",
             "|" + "---|" * (len(names) + 2)]
    for d in DETAILS:
        cells = [f"{means[n][d]:.4f}" if "smear" in n else f"{means[n][d]:.2f}" for n in names]
        label = f"**{d:g}**" if d == best else f"{d:g}"
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {ranks[d]} |")
    lines += ["", f"Chosen: detail {best:g}."]
    return lines, best


def _net_weights(stack, grid, sigma, weight):
    """The method's softmax weights from grid scores, with the neighbourhood, no filter."""
    from napari_mfif.focus.focusnet import upsample, with_neighbourhood
    from napari_mfif.fusion.focusnet_pipeline import weights_from_scores

    s = upsample(with_neighbourhood(grid, sigma, weight), stack.shape[1:3])
    return weights_from_scores(s, None, 0, 0.0, "cpu")


def _blend(stack, w):
    """The float image the weights ``w`` make of ``stack`` (grey or colour)."""
    from napari_mfif.stack import blend

    st = stack.astype(np.float32)
    f = blend(st if st.ndim == 4 else st[..., None], w)
    return f if stack.ndim == 4 else f[..., 0]


def _fused(stack, grid, sigma, weight):
    return _blend(stack, _net_weights(stack, grid, sigma, weight))


def _focus_gray(stack):
    """The method's own gray: the luminance of colour slices, float32."""
    from napari_mfif.stack import focus_gray

    st = stack.astype(np.float32)
    return focus_gray(st) if st.ndim == 4 else st


def _grid(net, stack):
    import torch

    from napari_mfif.focus.focusnet import grid_scores
    from napari_mfif.fusion.cnn_pipeline import normalise

    with torch.inference_mode():
        return grid_scores(net, torch.as_tensor(normalise(_focus_gray(stack))))


def main():
    import simulated as sim
    from brightfield import _gray

    from napari_mfif import metrics
    from napari_mfif.focus import focusnet

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--weights", default=None)
    args = p.parse_args()
    started = time.perf_counter()
    net, _ = focusnet.load(args.weights, "cpu")
    configs = [(0.0, 0.0)] + [(s, w) for s in SIGMAS for w in WEIGHTS if w]
    cols: dict[str, dict] = {}
    for key, _, render, kw in sim.SETS:
        vals = {c: [] for c in configs}
        for seed in SEEDS:
            syn = render(shape=(256, 256), seed=seed, **kw)
            grid = _grid(net, syn.stack)
            for c in configs:
                vals[c].append(sim.scores(syn, np.rint(_fused(syn.stack, grid, *c)))[0])
        cols[key] = {c: float(np.mean(v)) for c, v in vals.items()}
        print(f"  {key} done ({time.perf_counter() - started:.0f} s)", flush=True)
    loaders = {k: f for k, _, f in _common.REAL_STACKS}
    smear = loaders["blood_smear"]()
    if smear is not None:
        st, ref = smear["stack"], smear["stack"][smear["reference"]]
        grid = _grid(net, st)
        cols["smear SSIM"] = {c: float(metrics.ssim(_gray(ref), _gray(_fused(st, grid, *c)),
                                                    255)) for c in configs}
    for name, sub, ref in _wafer_sets(loaders):
        grid = _grid(net, sub)
        cols[name] = {c: float(metrics.psnr(ref, np.clip(np.rint(_fused(sub, grid, *c)),
                                                         0, 255), 255)) for c in configs}
    ranks = _ranks(cols, configs)
    best = min(configs, key=lambda c: ranks[c])
    names = list(cols)
    lines = ["# Tuning `focusnet`: the neighbourhood and the fine detail", "",
             f"Made by `benchmarks/focusnet_tuning.py` ({machine()}). Not edited by hand.", "",
             __doc__.split("\n\n", 2)[2].strip(), "",
             "Sets: " + "; ".join(f"`{k}`: {t}" for k, t, *_ in sim.SETS) + ".", "",
             "| neighbourhood (px), weight | " + " | ".join(names) + " | rank sum |",
             "|" + "---|" * (len(names) + 2)]
    for c in configs:
        cells = [f"{cols[n][c]:.4f}" if "SSIM" in n else f"{cols[n][c]:.2f}" for n in names]
        label = "off" if not c[1] else f"{c[0]:g}, {c[1]:g}"
        if c == best:
            label = f"**{label}**"
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {ranks[c]} |")
    lines += ["", f"Chosen: neighbourhood {best[0]:g} px, weight {best[1]:g}.", ""]
    more, _ = detail_table(net, *best)
    lines += more
    out = write_page("focusnet_tuning", lines, started)
    print("\n".join(lines))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
