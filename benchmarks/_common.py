"""Helpers shared by the benchmark scripts: data locations, the runs to compare, timing."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

import napari_mfif as mf

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
DOCS = ROOT / "docs" / "benchmarks"


def write_page(stem: str, lines: list[str], started: float, quick: bool = False) -> Path:
    """Close a benchmark page with its total run time (since ``started``, a
    ``time.perf_counter()``) after a blank line, and write it to ``docs/benchmarks/<stem>.md``
    (``<stem>_quick.md`` for a ``--quick`` run); returns the path."""
    if lines and lines[-1] != "":
        lines = lines + [""]
    lines = lines + [f"Total time {time.perf_counter() - started:.0f} s."]
    out = DOCS / (f"{stem}_quick.md" if quick else f"{stem}.md")
    out.write_text("\n".join(lines) + "\n")
    return out


def registry_runs(extra_cnn_hard: bool = True) -> list[tuple[str, str]]:
    """(method, mode) for every registered method in both modes; the CNN's N-way also with
    the hard rule ('nway-hard')."""
    runs = []
    for name, spec in mf.available_methods().items():
        for mode in spec.modes:
            runs.append((name, mode))
            if extra_cnn_hard and name == "cnn" and mode == "nway":
                runs.append((name, "nway-hard"))
    return runs


#: the papers' CNN variants of issue 4, as benchmark columns: the ``cnn`` method with other
#: shipped weights (``arch``) or paper 001's Gaussian-pyramid scoring; run in series mode,
#: the papers' pair pipeline
CNN_VARIANTS = ("cnn[arch=dual]", "cnn[arch=wavelet]", "cnn[arch=compact_mixed]",
                "cnn[pyramid_levels=2]")


def variant_runs() -> list[tuple[str, str]]:
    return [(name, "series") for name in CNN_VARIANTS]


def split_variant(method: str) -> tuple[str, dict]:
    """'cnn[arch=dual]' -> ('cnn', {'arch': 'dual'}); a plain name -> (name, {})."""
    if not method.endswith("]") or "[" not in method:
        return method, {}
    name, spec = method[:-1].split("[", 1)
    params = {}
    for item in spec.split(","):
        key, value = item.split("=", 1)
        params[key] = int(value) if value.isdigit() else value
    return name, params


def run(stack, method: str, mode: str, **params):
    """``mf.fuse`` for one benchmark column, on the CPU; naive baselines for method
    'mean' (average projection) and 'max' (maximum-intensity projection). ``params`` are
    passed to the method (not to the baselines); a variant name such as 'cnn[arch=dual]'
    adds its own (:func:`split_variant`)."""
    method, fixed = split_variant(method)
    params = {**fixed, **params}
    if method in ("mean", "max"):
        from napari_mfif.stack import to_dtype

        array = np.stack(stack) if isinstance(stack, list) else np.asarray(stack)
        proj = array.max(0) if method == "max" else to_dtype(array.mean(0, dtype=np.float64),
                                                             array.dtype)
        return mf.FusionResult(image=proj, index_map=np.zeros(array.shape[1:3], np.float32),
                               method=method, mode="", device="cpu")
    if mode == "nway-hard":
        return mf.fuse(stack, method=method, mode="nway", device="cpu", nway_rule="hard", **params)
    return mf.fuse(stack, method=method, mode=mode, device="cpu", **params)


class Timer:
    """Accumulates seconds and input megapixels (slices x height x width) per run."""

    def __init__(self):
        self.seconds: dict = {}
        self.mpix: dict = {}

    def fuse(self, key, stack, method, mode, **params):
        t0 = time.perf_counter()
        res = run(stack, method, mode, **params)
        self.seconds[key] = self.seconds.get(key, 0.0) + time.perf_counter() - t0
        n = len(stack) if isinstance(stack, list) else stack.shape[0]
        h, w = res.image.shape[:2]
        self.mpix[key] = self.mpix.get(key, 0.0) + n * h * w / 1e6
        return res

    def per_mpix(self, key) -> float:
        return self.seconds[key] / self.mpix[key]


def machine() -> str:
    """The CPU model, core count and memory, for the header of a results page."""
    import os
    import platform

    model = platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            model = next(line.split(":", 1)[1].strip() for line in fh if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    try:
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
        return f"{model}, {os.cpu_count()} cores, {mem:.0f} GiB"
    except (ValueError, OSError, AttributeError):
        return f"{model}, {os.cpu_count()} cores"


def label(method: str, mode: str) -> str:
    return f"{method} {mode}".strip()


#: per-image PSNR cap (dB) before averaging: a fused image identical to a JPEG ground truth
#: would otherwise count as infinite and swamp the mean
PSNR_CAP = 60.0


def psnr_capped(reference, image, data_range) -> float:
    from napari_mfif import metrics

    return min(metrics.psnr(reference, image, data_range), PSNR_CAP)


def gt_stack(scene: str, depth_kind: str, z: int, noise: float, photons, haze: float,
             seed: int, shape=(256, 256)):
    """One ground-truth synthetic stack of the benchmarks' cases (quality.py's ``SYNTH``):
    textured cells or fluorescence-like objects, on a smooth or step depth map, uint16."""
    from napari_mfif.synthetic import cells_image, fluorescence_image, smooth_depth, step_depth

    sharp = (cells_image if scene == "cells" else fluorescence_image)(shape, seed=seed)
    depth = (smooth_depth if depth_kind == "smooth" else step_depth)(shape, z, seed=seed)
    return mf.focal_stack(sharp, depth, n_slices=z, blur_per_slice=1.5 if z <= 5 else 1.0,
                          noise=noise, photons=photons, haze=haze, dtype=np.uint16, seed=seed)
