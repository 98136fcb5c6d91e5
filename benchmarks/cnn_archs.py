"""The paper-size network (``arch="liu2017"``) against the shipped ``compact`` one (issue 3):
quality and speed, to ground the choice of the default.

    .venv/bin/python -m napari_mfif.train --arch liu2017 --steps 2500 --threads 2 -o liu2017.pt
    .venv/bin/python benchmarks/cnn_archs.py --liu2017 liu2017.pt [--pairs N]

No ``liu2017`` weights ship (about 52 MB in float32, and hours to train on a 2-core CPU), so
this page needs a weights file made by the first command; without one it says so and stops.
Both nets are trained with the papers' recipe and run with the papers' decision steps:

- **records**: parameters, training steps and time, held-out patch accuracy (from each weights
  file's training record);
- **quality**: PSNR / SSIM against the ground truth on the first N MF-VOC pairs
  (``../shared/data``, skipped when absent) and on the Gaussian-blur synthetic stacks of
  quality.py (seeds 21, 22), and Q_G on the survey's Lytro pairs, in both modes;
- **speed**: megapixels per second per slice of N-way fusion of a 3 x 1024 x 1024 stack on
  this CPU, best of three, and the ratio of the two measured in the same run.

Writes docs/benchmarks/cnn_archs.md.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

import napari_mfif as mf
from _common import machine, write_page
from cnn_boundary import SEEDS, VOC, load_voc, lytro_pairs, measure
from quality import table


def quality_rows(runs, pairs, quick=False):
    """Table rows of :func:`cnn_boundary.measure` for ``cnn`` with each run's parameters."""
    lytro = lytro_pairs()
    rows = measure([(name, "cnn", kw) for name, kw in runs], pairs,
                   lytro[:2] if quick else lytro, SEEDS[:1] if quick else SEEDS)
    out = []
    for label, vals, q in rows:
        cells = [label] + [f"{p:.2f} / {s:.4f}" if p == p else "-" for p, s in vals]
        out.append(cells + [f"{q:.4f}" if q == q else "-"])
    return out


def speed(runs, size=1024):
    from napari_mfif.synthetic import cells_image

    img = cells_image((size, size), seed=3)
    stack = np.stack([img, img[::-1], img[:, ::-1]]).astype(np.float32)
    out = {}
    for name, kw in runs:
        mf.fuse(stack[:, :64, :64], method="cnn", mode="nway", **kw)  # load the weights
        best = min(_timed(stack, kw) for _ in range(3))
        out[name] = stack.shape[1] * stack.shape[2] / 1e6 / (best / stack.shape[0])
    return out


def _timed(stack, kw):
    t0 = time.perf_counter()
    mf.fuse(stack, method="cnn", mode="nway", **kw)
    return time.perf_counter() - t0


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--liu2017", type=Path, help="weights file of arch liu2017")
    p.add_argument("--pairs", type=int, default=40, help="MF-VOC pairs (first N by name)")
    p.add_argument("--quick", action="store_true",
                   help="a check of the script: 4 pairs, 2 Lytro pairs, seed 21, 256 px speed")
    args = p.parse_args()
    t0 = time.perf_counter()
    if args.liu2017 is None or not args.liu2017.is_file():
        raise SystemExit("cnn_archs: no liu2017 weights file given (--liu2017 FILE); train one "
                         "with the command in this script's docstring")
    from napari_mfif.focus.cnn import builtin_weights, count_parameters, load_net, read_weights

    files = {"compact": builtin_weights("compact"), "liu2017": args.liu2017}
    runs = [("compact", {}), ("liu2017", {"weights": str(args.liu2017)})]
    rec_rows = []
    for name, path in files.items():
        meta = read_weights(path)["meta"]
        net, _ = load_net(str(path), name, "cpu")
        rec_rows.append([name, f"{count_parameters(net, 'pair'):,}",
                         f"{path.stat().st_size / 1e6:.1f} MB", str(meta["steps"]),
                         f"{meta['train_seconds']:.0f} s",
                         f"{100 * meta['heldout_accuracy_pair_head']:.2f} %",
                         f"{100 * meta['heldout_accuracy_pair_head_noisy_mild']:.2f} %"])
    pairs = load_voc(4 if args.quick else args.pairs) if VOC.is_dir() else []
    rows = quality_rows(runs, pairs, args.quick)
    size = 256 if args.quick else 1024
    mps = speed(runs, size)
    lines = ["# Paper-size CNN against the compact one", "",
             f"Made by `benchmarks/cnn_archs.py` on {time.strftime('%Y-%m-%d')}, {machine()}, "
             f"napari-mfif {mf.__version__}. Both nets trained with the papers' recipe "
             "(`compact`: the shipped `compact.pt`; `liu2017`: a file made by the command in "
             "the script's docstring, not shipped) and run with the papers' decision steps.",
             "", "## Training records", ""]
    lines += table(["arch", "parameters (pair head)", "file", "steps", "training time",
                    "held-out accuracy, paper pairs", "with noise and mild blur"], rec_rows)
    lines += ["", "## Quality", "",
              f"PSNR (dB) / SSIM against the ground truth: MF-VOC (first {len(pairs)} pairs; "
              "none where ../shared is absent), the Gaussian-blur synthetic stacks of "
              "benchmarks/quality.py (seeds "
              f"{', '.join(map(str, SEEDS[:1] if args.quick else SEEDS))}); Q_G on the "
              "survey's Lytro pairs.", ""]
    lines += table(["net, mode", "MF-VOC", "synthetic cells", "synthetic fluorescence",
                    "Lytro Q_G"], rows)
    lines += ["", "## Speed", "",
              f"N-way fusion of a 3 x {size} x {size} float32 stack on this CPU (scoring, spread, "
              "guided filter, blend), best of three.", ""]
    lines += table(["net", "MP/s per slice", "relative to compact"],
                   [[n, f"{v:.3f}", f"{v / mps['compact']:.3f}"] for n, v in mps.items()])
    print(f"wrote {write_page('cnn_archs', lines, t0, args.quick)}")


if __name__ == "__main__":
    main()
