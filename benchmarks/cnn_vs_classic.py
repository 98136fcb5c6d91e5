"""The CNN pipeline against the classic focus measures: synthetic stacks with ground truth
(more seeds than ``quality.py``, both N-way rules) and speed in megapixels per second per slice
next to Tenengrad measured in the same run. MF-VOC and the Lytro pairs are in ``quality.py``.

Writes docs/benchmarks/cnn_vs_classic.md.   .venv/bin/python benchmarks/cnn_vs_classic.py
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from skimage.metrics import structural_similarity

import napari_mfif as mf
from _common import DOCS, machine, psnr_capped, run

OUT = DOCS / "cnn_vs_classic.md"
RUNS = [("tenengrad", "nway"), ("variance", "nway"), ("cnn", "nway"), ("cnn", "nway-hard"),
        ("cnn", "series")]



# (scene, slices, Gaussian read noise as a fraction of the range, photons at intensity 1)
SYNTH_CASES = [
    ("cells", 2, 0.0, None), ("cells", 5, 0.0, None), ("cells", 10, 0.0, None),
    ("cells", 10, 0.02, None), ("cells", 20, 0.02, None),
    ("fluorescence", 5, 0.005, 300), ("fluorescence", 10, 0.005, 100),
    ("fluorescence", 20, 0.005, 100), ("fluorescence", 30, 0.005, 50),
]


def quality(truth, image, data_range):
    truth = truth.astype(np.float64)
    image = image.astype(np.float64)
    psnr = psnr_capped(truth, image, data_range)
    ssim = structural_similarity(truth, image, data_range=data_range,
                                 channel_axis=-1 if truth.ndim == 3 else None)
    return psnr, ssim


def synthetic(seeds, shape):
    rows = []
    from napari_mfif.synthetic import cells_image, fluorescence_image

    for scene, z, noise, photons in SYNTH_CASES:
        res = {r: [] for r in RUNS}
        oracle = []
        for seed in seeds:
            make = cells_image if scene == "cells" else fluorescence_image
            s = mf.focal_stack(make(shape, seed=seed), n_slices=z,
                               blur_per_slice=1.5 if z <= 5 else 1.0, noise=noise,
                               photons=photons, dtype=np.uint16, seed=seed)
            oracle.append(max((quality(s.sharp, sl, 4095) for sl in s.stack), key=lambda q: q[0]))
            for method, mode in RUNS:
                r = run(s.stack, method, mode)
                res[(method, mode)].append(quality(s.sharp, r.image, 4095))
        label = f"{scene}, {z} slices, " + (f"{photons} photons" if photons else f"noise {noise:g}")
        rows.append((label, np.mean(oracle, axis=0), {k: np.mean(v, axis=0) for k, v in res.items()}))
    return rows


def speed(shape=(1024, 1024), z=10, repeats=2):
    s = mf.focal_stack(n_slices=z, shape=(256, 256), dtype=np.uint16, seed=1)
    stack = np.tile(s.stack, (1, shape[0] // 256, shape[1] // 256))
    out = {}
    for method, mode in [("tenengrad", "nway"), ("cnn", "nway"), ("cnn", "series")]:
        mf.fuse(stack[:2, :256, :256], method=method, mode=mode)  # warm up (weights, threads)
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            mf.fuse(stack, method=method, mode=mode, device="cpu")
            best = min(best, time.perf_counter() - t0)
        out[(method, mode)] = (best, z * shape[0] * shape[1] / 1e6 / best)
    return stack.shape, out


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true", help="fewer seeds")
    args = p.parse_args()
    seeds = [11, 12] if args.quick else [11, 12, 13, 14]
    meta = mf.get_method("cnn").params
    import torch

    from napari_mfif.focus.cnn import load_net
    _, record = load_net(None, meta["arch"], "cpu")
    lines = ["# CNN pipeline against the classic focus measures", "",
             f"Made by `benchmarks/cnn_vs_classic.py` on {machine()} with "
             f"{torch.get_num_threads()} torch threads; CNN = shipped `{meta['arch']}` weights "
             f"(held-out patch accuracy {record.get('heldout_accuracy_pair_head')}), paper "
             "decision parameters (threshold 0.5, small regions 0.01*H*W, guided filter r 8, "
             "eps 0.1). PSNR in dB / SSIM against the ground truth.", ""]
    t0 = time.perf_counter()
    rows = synthetic(seeds, (256, 256))
    lines += ["## Synthetic focal stacks", "",
              f"256 x 256 uint16 stacks, mean over seeds {seeds}: `cells` = textured synthetic "
              "cells everywhere (brightfield-like), `fluorescence` = sparse nuclei and filaments "
              "on a dark flat background with Poisson noise (photons at full scale) and 0.5 % "
              "read noise. Blur 1.5 px sigma per slice of defocus for 2-5 slices, 1.0 for more. "
              "Oracle = the best single slice, chosen with the ground truth. Bold: best PSNR.", "",
              "| stack | oracle slice | " + " | ".join(f"{m} {mo}" for m, mo in RUNS) + " |",
              "|---|---|" + "---|" * len(RUNS)]
    for label, oracle, res in rows:
        cells = [f"{res[r][0]:.2f} / {res[r][1]:.4f}" for r in RUNS]
        best = max(RUNS, key=lambda r: res[r][0])
        cells = [f"**{c}**" if r == best else c for c, r in zip(cells, RUNS)]
        lines.append(f"| {label} | {oracle[0]:.2f} / {oracle[1]:.4f} | " + " | ".join(cells) + " |")
    means = {r: np.mean([res[r] for *_, res in rows], axis=0) for r in RUNS}
    lines.append("| **mean** | | " + " | ".join(f"{means[r][0]:.2f} / {means[r][1]:.4f}" for r in RUNS) + " |")
    lines += ["", "MF-VOC and the Lytro pairs (Q_G, Q_MI, Q_Y, Q_CB beside the published table) for "
              "every method: [quality.md](quality.md), made by `benchmarks/quality.py`."]
    shape, sp = speed()
    lines += ["", "## Speed on this CPU", "",
              f"A {shape[0]}-slice {shape[1]} x {shape[2]} uint16 stack, best of 2 runs, whole "
              "pipeline (scoring, decision steps, blending).", "",
              "| method | mode | seconds | MP/s per slice | relative to tenengrad |", "|---|---|---|---|---|"]
    base = sp[("tenengrad", "nway")][0]
    for (m, mo), (sec, mps) in sp.items():
        lines.append(f"| {m} | {mo} | {sec:.2f} | {mps:.2f} | {sec / base:.1f}x the time |")
    lines += ["", f"Total benchmark time {time.perf_counter() - t0:.0f} s."]
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
