"""When should `napari-mfif fuse` go tile by tile without being asked? Whole-image against
tiled fusion with the default method, by stack size, in fresh processes.

Synthetic 8-slice uint16 slides (benchmarks/slides.py's: a 2048 x 2048 synthetic focal
stack with ground truth, mirror-tiled, one tiled TIFF per slice) of 1024² to 8192² (16 MiB
to 1 GiB). Each is fused by `napari-mfif fuse` in a fresh process with `--in-memory` (whole
image) and with `--tile-size 1024`, and once as a user runs it (no option: the rule
decides). Wall time and peak RSS (ru_maxrss) of each run; the estimate the rule uses
(napari_mfif._memory: the stack plus the method's working memory) beside them.

Writes docs/benchmarks/tiling_rule.md.   .venv/bin/python benchmarks/tiling_rule.py
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from _common import machine, write_page
from slides import BASE, Z, make_slide, run_one


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 2048, 4096, 8192])
    args = parser.parse_args()
    started = time.perf_counter()

    from napari_mfif._memory import fusion_bytes, stack_bytes
    from napari_mfif.registry import DEFAULT_METHOD
    from napari_mfif.synthetic import focal_stack

    base = focal_stack(n_slices=Z, shape=(BASE, BASE), dtype=np.uint16, noise=0.01, seed=7)
    work = Path(tempfile.mkdtemp(prefix="mfif-tiling-"))
    rows = []
    try:
        for size in sorted(args.sizes):
            slide = make_slide(work / f"s{size}", size, base)
            shape = (Z, size, size)
            estimate = (fusion_bytes(shape, np.uint16, DEFAULT_METHOD, "nway")
                        + stack_bytes(shape, np.uint16)) / 2**20
            runs = {}
            for label, extra in (("whole", ["--in-memory"]),
                                 ("tiled", ["--tile-size", "1024"]), ("default", [])):
                r = run_one(f"{label}_{size}", slide, work, extra)
                runs[label] = r
                print(f"{size}² {label}: {r['seconds']:.1f} s, peak {r['peak_mib']:.0f} MiB",
                      flush=True)
            chose = "tiles" if "tiles of" in runs["default"]["stdout"] else "whole image"
            rows.append((size, stack_bytes(shape, np.uint16) / 2**20, estimate, runs, chose))
            shutil.rmtree(work / f"s{size}", ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    lines = ["# When to fuse tile by tile", "",
             f"Machine: {machine()}. Written by `benchmarks/tiling_rule.py`. Method: the "
             f"default, `{DEFAULT_METHOD}` (N-way). Each run is `napari-mfif fuse` in a fresh "
             "process on an 8-slice uint16 slide stored as one tiled TIFF per slice: wall time "
             "(start-up and writing included) and peak resident memory. *Estimate* is what "
             "the rule reads: the stack's bytes plus the method's working memory "
             "(`napari_mfif._memory`).", "",
             "| slide | stack | estimate | whole image: s | peak MiB | tiles of 1024: s | "
             "peak MiB | tiled / whole time | default run chose | its s | its peak MiB |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for size, stack, estimate, runs, chose in rows:
        w, t, d = runs["whole"], runs["tiled"], runs["default"]
        lines.append(f"| {size}² | {stack:.0f} MiB | {estimate:.0f} MiB | {w['seconds']:.1f} | "
                     f"{w['peak_mib']:.0f} | {t['seconds']:.1f} | {t['peak_mib']:.0f} | "
                     f"{t['seconds'] / w['seconds']:.2f} | {chose} | {d['seconds']:.1f} | "
                     f"{d['peak_mib']:.0f} |")
    # a real stack as users have it: JPEG files, not readable by region
    from _common import DATA
    from napari_mfif.io import natural_sorted

    algae = natural_sorted((DATA / "microscopy_algae_brightfield").glob("img_*.png"))
    if algae:
        work = Path(tempfile.mkdtemp(prefix="mfif-tiling-"))
        try:
            runs = {label: run_one(f"algae_{label}", algae, work, extra)
                    for label, extra in (("default", []), ("whole", ["--in-memory"]))}
        finally:
            shutil.rmtree(work, ignore_errors=True)
        d, w = runs["default"], runs["whole"]
        chose = "tiles" if "tiles of" in d["stdout"] else "whole image"
        lines += ["", "A real stack as users have it: the algae of `../shared/data` (5 planes of "
                  "3648 x 5440 RGB uint8 in JPEG files, 298 MiB as a stack; JPEG cannot be read "
                  "by region, so the slices are held and the work is tiled):", "",
                  "| run | chose | s | peak MiB |", "|---|---|---|---|",
                  f"| default | {chose} | {d['seconds']:.1f} | {d['peak_mib']:.0f} |",
                  f"| `--in-memory` | whole image | {w['seconds']:.1f} | {w['peak_mib']:.0f} |"]
    write_page("tiling_rule", lines, started)
    print((Path(__file__).resolve().parents[1] / "docs/benchmarks/tiling_rule.md").read_text())


if __name__ == "__main__":
    main()
