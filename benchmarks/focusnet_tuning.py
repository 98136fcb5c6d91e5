"""How far ``focusnet`` pools neighbouring evidence (``neighbourhood``, ``neighbourhood_weight``),
chosen on data the evaluation does not use for simulated stacks, and on the real stacks with
a reference.

    .venv/bin/python benchmarks/focusnet_tuning.py [--weights FILE]

Writes docs/benchmarks/focusnet_tuning.md. Columns: the simulated sets of
benchmarks/simulated.py rendered with seeds 9101 and 9102 (the evaluation uses 9001-9003),
PSNR against the truth; the blood smear (SSIM to plane 5) and the reflected-light wafer
(PSNR to its z = 0 plane, with all planes and without the two in-focus ones; its LZW TIFFs
need imagecodecs). Rule: the
lowest sum of ranks over the columns. The real stacks take part because a network trained on
simulations alone is what is being corrected here; the page reports every column so that
what the choice costs anywhere is visible.
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


def _fused(stack, grid, sigma, weight):
    from napari_mfif.focus.focusnet import upsample, with_neighbourhood
    from napari_mfif.fusion.focusnet_pipeline import weights_from_scores
    from napari_mfif.stack import blend

    s = upsample(with_neighbourhood(grid, sigma, weight), stack.shape[1:3])
    w = weights_from_scores(s, None, 0, 0.0, "cpu")  # the method's softmax, no filter
    st = stack.astype(np.float32)
    f = blend(st if st.ndim == 4 else st[..., None], w)
    return f if stack.ndim == 4 else f[..., 0]


def _grid(net, stack):
    import torch

    from napari_mfif.focus.focusnet import grid_scores
    from napari_mfif.fusion.cnn_pipeline import normalise

    gray = stack.astype(np.float32).mean(-1) if stack.ndim == 4 else stack.astype(np.float32)
    with torch.inference_mode():
        return grid_scores(net, torch.as_tensor(normalise(gray)))


def main():
    import simulated as sim
    from brightfield import _gray

    from napari_mfif import MfifError, metrics
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
    try:
        wafer = loaders["wafer_reflected"]()
    except MfifError as exc:  # its LZW TIFFs need imagecodecs
        print(f"wafer skipped: {exc}")
        wafer = None
    if wafer is not None:
        st, ref = wafer["stack"], wafer["stack"][wafer["reference"]]
        keep = np.abs(np.asarray(wafer["z"])) > 1.0
        for name, sub in (("wafer", st), ("wafer, in-focus planes out", st[keep])):
            grid = _grid(net, sub)
            cols[name] = {c: float(metrics.psnr(ref, np.clip(np.rint(_fused(sub, grid, *c)),
                                                             0, 255), 255)) for c in configs}
    ranks = {c: 0 for c in configs}
    for col in cols.values():
        order = sorted(configs, key=lambda c: -col[c])
        for r, c in enumerate(order):
            ranks[c] += r + 1
    best = min(configs, key=lambda c: ranks[c])
    names = list(cols)
    lines = ["# Tuning how far `focusnet` pools neighbouring evidence", "",
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
    lines += ["", f"Chosen: neighbourhood {best[0]:g} px, weight {best[1]:g}."]
    out = write_page("focusnet_tuning", lines, started)
    print("\n".join(lines))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
