"""Helpers shared by the benchmark scripts: data locations, the runs to compare, timing."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

import napari_mfif as mf
from napari_mfif.io import natural_sorted

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


# -- real focal stacks ---------------------------------------------------------------------


def crop_box(shape, size: int, where="centre") -> tuple[int, int, int, int]:
    """(y0, y1, x0, x1) of a window of at most ``size`` x ``size`` pixels in an image of
    ``shape`` (height, width, ...: one image's shape, not a stack's), clipped to the image.

    ``where`` places it: 'centre' (or 'center'), 'top-left', 'top-right', 'bottom-left',
    'bottom-right', or a (fy, fx) pair of fractions in [0, 1] (0 at the top / left, 1 at the
    bottom / right; (0.5, 0.5) is the centre). Apply the same box to every image of a stack
    or of a comparison so that they show the same pixels: ``image[y0:y1, x0:x1]``.
    """
    h, w = int(shape[0]), int(shape[1])
    ch, cw = min(int(size), h), min(int(size), w)
    places = {"centre": (0.5, 0.5), "center": (0.5, 0.5), "top-left": (0.0, 0.0),
              "top-right": (0.0, 1.0), "bottom-left": (1.0, 0.0), "bottom-right": (1.0, 1.0)}
    fy, fx = places[where] if isinstance(where, str) else (float(where[0]), float(where[1]))
    y0 = int(min(max(fy, 0.0), 1.0) * (h - ch))
    x0 = int(min(max(fx, 0.0), 1.0) * (w - cw))
    return y0, y0 + ch, x0, x0 + cw


def _gray_float(image) -> np.ndarray:
    a = np.asarray(image)
    if a.ndim == 3 and a.shape[-1] in (3, 4):
        a = a[..., :3].mean(-1, dtype=np.float32)
    elif a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim != 2:
        raise ValueError(f"expected one image (Y, X) or (Y, X, 3), got shape {a.shape}")
    return a.astype(np.float32, copy=False)


def busy_crop(image, size: int) -> tuple[int, int, int, int]:
    """(y0, y1, x0, x1) of the ``size`` x ``size`` window (clipped to the image) holding the
    most gradient energy (sum of squared forward differences of the gray image), among
    windows on a coarse grid (a step of a quarter window, plus the windows flush with the
    bottom and right edges), so that a crop shows structure rather than empty background.
    Pass one image, e.g. the sharpest slice or a fused result, then crop every image of the
    comparison with the returned box."""
    g = _gray_float(image)
    h, w = g.shape
    ch, cw = min(int(size), h), min(int(size), w)
    energy = np.zeros((h + 1, w + 1), np.float64)  # summed-area table of the gradient energy
    e = np.zeros((h, w), np.float32)
    e[:, :-1] += np.diff(g, axis=1) ** 2
    e[:-1, :] += np.diff(g, axis=0) ** 2
    energy[1:, 1:] = e.cumsum(0, dtype=np.float64).cumsum(1)
    del e

    def starts(n, c):
        step = max(c // 4, 1)
        return np.unique(np.r_[np.arange(0, n - c + 1, step), n - c])

    ys, xs = starts(h, ch), starts(w, cw)
    y0, x0 = ys[:, None], xs[None, :]
    sums = (energy[y0 + ch, x0 + cw] - energy[y0, x0 + cw] - energy[y0 + ch, x0]
            + energy[y0, x0])
    iy, ix = np.unravel_index(int(np.argmax(sums)), sums.shape)
    return int(ys[iy]), int(ys[iy]) + ch, int(xs[ix]), int(xs[ix]) + cw


def _read_planes(files, max_side: int | None) -> np.ndarray:
    """One plane per file, stacked; each centre-cropped to max_side as it is read."""
    from napari_mfif.io import read_image

    planes = []
    for f in files:
        image = read_image(f)
        if max_side is not None:
            y0, y1, x0, x1 = crop_box(image.shape, max_side)
            image = np.ascontiguousarray(image[y0:y1, x0:x1])
        planes.append(image)
    return np.stack(planes)


def _read_multipage(path: Path, max_side: int | None) -> np.ndarray:
    """A multi-page TIFF stack (Z, Y, X[, 3]), centre-cropped to max_side."""
    from napari_mfif.io import read_image

    stack = read_image(path)
    if max_side is not None:
        y0, y1, x0, x1 = crop_box(stack.shape[1:3], max_side)
        stack = np.ascontiguousarray(stack[:, y0:y1, x0:x1])
    return stack


def _real(stack, note, reference=None, z=None) -> dict:
    return {"stack": stack, "reference": reference, "z": z, "note": note}


#: the miLab blood-smear stack, one JPEG per plane
WBC_DIR = DATA / "microscopy_wbc_milab"


def load_wbc_milab(max_side: int | None = None) -> dict | None:
    """Blood smear, 10 planes, 1200 x 1920 RGB uint8 JPEGs, ordered by the focus index (the
    4th field of ``0152_22800_54359_<focusIndex>_<focusScore>.jpg``); the reference is the
    plane where the scanner's own focus score (the last field) peaks."""
    files = natural_sorted(WBC_DIR.glob("*.jpg"))
    if not files:
        return None
    best = int(np.argmax([float(f.stem.split("_")[-1]) for f in files]))
    return _real(_read_planes(files, max_side),
                 f"brightfield stained blood smear (RGB); thin, best plane drifts 5-6 across "
                 f"the field; compare with plane {best} (scanner's focus-score peak), look at "
                 "RBC centres and WBC nuclei", reference=best)


def load_algae(max_side: int | None = None) -> dict | None:
    """Planktonic algae, 5 planes ``img_1.png`` ... ``img_5.png`` (JPEG data despite the
    name), 3648 x 5440 RGB uint8 (about 100 MP in all: pass max_side for quick work)."""
    files = natural_sorted((DATA / "microscopy_algae_brightfield").glob("img_*.png"))
    if not files:
        return None
    return _real(_read_planes(files, max_side),
                 "brightfield plankton (RGB); objects at different depths: the result should "
                 "take each object from its own plane")


def load_dic_diatom(max_side: int | None = None) -> dict | None:
    """Centric diatom valve, 3 planes ``1.jpg`` ... ``3.jpg``, 229 x 305 RGB uint8
    (``fus.jpg``, the MFusionJ authors' fused result, is left out)."""
    folder = DATA / "microscopy_dic_diatom_mfusionj"
    files = natural_sorted(f for f in folder.glob("*.jpg") if f.stem.isdigit())
    if not files:
        return None
    return _real(_read_planes(files, max_side),
                 "DIC-like transmitted light, tiny JPEG (q~75, 8x8 blocks); centre sharp in "
                 "plane 0, middle ring in 1, rim in 2; scale bar strip at the right edge")


def load_fluo_neuron(max_side: int | None = None) -> dict | None:
    """GFP neuron, widefield fluorescence, ``NEURON1.tif``: 8 planes, 201 x 168 uint16
    holding 12-bit data (155-4095); z step not stated."""
    path = DATA / "microscopy_fluo_widefield_neuron_sme" / "NEURON1.tif"
    if not path.exists():
        return None
    return _real(_read_multipage(path, max_side),
                 "widefield fluorescence, 12-bit in uint16; haze around thin dendrites, "
                 "clipped soma; sharpest plane 3, best plane 1-4 across the field")


#: the confocal stack's z step (µm), from MEMBRANE1.tif's ImageJ metadata (spacing=0.2779963)
MEMBRANE_DZ = 0.2779963


def load_confocal_membrane(max_side: int | None = None) -> dict | None:
    """Membrane-labelled epithelium, confocal, ``MEMBRANE1.tif``: 19 planes, 421 x 407
    uint8, z step 0.278 µm."""
    path = DATA / "microscopy_confocal_membrane_sme" / "MEMBRANE1.tif"
    if not path.exists():
        return None
    stack = _read_multipage(path, max_side)
    return _real(stack, "confocal sections of a curved junction network (8-bit, saturates); "
                 "sharpest plane 8, height map should be smooth over planes 7-11",
                 z=[round(k * MEMBRANE_DZ, 6) for k in range(len(stack))])


def _wafer_z(path: Path) -> float:
    return float(path.stem.rsplit("_", 1)[1])


def load_wafer(max_side: int | None = None) -> dict | None:
    """Metal patterns on a wafer, reflected light: 11 LZW TIFFs, 1200 x 1920 RGB uint8,
    ordered by the z offset (µm) after the last ``_`` of the name, which is the natural
    order of the names (names hold spaces; z is signed and irregular); the z = 0 plane is
    the in-focus reference."""
    folder = DATA / "microscopy_reflected_wafer_autofocus"
    files = natural_sorted(folder.glob("*.tif*"))
    if not files:
        return None
    z = [_wafer_z(f) for f in files]
    return _real(_read_planes(files, max_side),
                 "reflected-light wafer (RGB), flat: the result should match the z = 0 plane "
                 "and the height map be flat; irregular z, mostly textureless",
                 reference=z.index(0.0) if 0.0 in z else None, z=z)


def load_pcb(max_side: int | None = None) -> dict | None:
    """Macro photographs of a PCB, ``pcb/pcb_001.jpg`` ... ``pcb_007.jpg``, 1536 x 2048 RGB
    uint8 (``expected.jpg``, the focus-stack tool's result, is left out)."""
    files = natural_sorted((DATA / "focus_stack_pcb" / "pcb").glob("pcb_*.jpg"))
    if not files:
        return None
    return _real(_read_planes(files, max_side),
                 "macro photo focus bracketing (RGB), focus breathing between frames; "
                 "connector, headers, capacitor at different depths")


def load_beetle(max_side: int | None = None) -> dict | None:
    """Stag beetle head, focus bracketing, ``DSC_0356.jpg`` ... ``DSC_0388.jpg``: 28 frames
    (0357, 0364, 0370, 0377 and 0383 are missing, so the focus step doubles there),
    500 x 750 RGB uint8."""
    files = natural_sorted((DATA / "macro_beetle_focus_bracketing").glob("DSC_*.jpg"))
    if not files:
        return None
    return _real(_read_planes(files, max_side),
                 "macro photo focus bracketing (RGB), deep subject, dark background, "
                 "highlights, ~2.5% breathing, 5 missing frames; sharpest frame 12 (DSC_0371)")


def load_skeleton(max_side: int | None = None) -> dict | None:
    """EPFL EDF test stack "skeleton-zeiss", ``stack.tif``: 3 slices, 116 x 170 RGB uint8."""
    path = DATA / "microscopy_edf_skeleton_zeiss" / "stack.tif"
    if not path.exists():
        return None
    return _real(_read_multipage(path, max_side),
                 "brightfield/DIC-like lattice skeleton (RGB), tiny; different bars sharp in "
                 "different slices")


#: the real focal stacks under DATA, as (key, title, loader); ``loader(max_side=None)``
#: returns None when the data is absent, else a dict: ``stack`` (Z, Y, X) or (Z, Y, X, 3) in
#: the files' dtype and focus order, ``reference`` (the in-focus slice's index, or None),
#: ``z`` (float positions, or None), ``note`` (one line); ``max_side`` takes a centre crop
REAL_STACKS = [
    ("blood_smear", "Blood smear (miLab, brightfield RGB, 10 planes)", load_wbc_milab),
    ("algae", "Algae (brightfield RGB, 5 planes)", load_algae),
    ("diatom_dic", "Diatom (DIC-like, MFusionJ, 3 planes)", load_dic_diatom),
    ("neuron_widefield", "GFP neuron (widefield fluorescence, 16-bit, 8 planes)",
     load_fluo_neuron),
    ("membrane_confocal", "Membranes (confocal, 19 planes)", load_confocal_membrane),
    ("wafer_reflected", "Wafer (reflected light RGB, 11 planes, z = 0 in focus)", load_wafer),
    ("pcb", "PCB (macro photographs RGB, 7 frames)", load_pcb),
    ("beetle", "Stag beetle (macro focus bracketing RGB, 28 frames)", load_beetle),
    ("skeleton", "EDF skeleton (Zeiss, RGB, 3 slices)", load_skeleton),
]


# -- contact sheets --------------------------------------------------------------------------

#: viridis at 17 evenly spaced points (matplotlib's, rounded), for when matplotlib is not
#: installed: linear interpolation between them is within 6 levels of the full map
_VIRIDIS17 = np.array([[68, 1, 84], [72, 24, 106], [71, 45, 123], [66, 64, 134], [59, 82, 139],
                       [51, 99, 141], [44, 114, 142], [38, 130, 142], [33, 145, 140],
                       [31, 160, 136], [40, 174, 128], [63, 188, 115], [94, 201, 98],
                       [132, 212, 75], [173, 220, 48], [216, 226, 25], [253, 231, 37]],
                      np.float64)


def _viridis(t: np.ndarray) -> np.ndarray:
    """RGB uint8 for values t in [0, 1] (NaN black): matplotlib's viridis, or a 17-point
    interpolation of it without matplotlib."""
    bad = ~np.isfinite(t)
    t = np.clip(np.where(bad, 0.0, t), 0.0, 1.0)
    try:
        from matplotlib import colormaps

        rgb = colormaps["viridis"](t)[..., :3] * 255.0
    except ImportError:
        x = t * (len(_VIRIDIS17) - 1)
        i = np.minimum(x.astype(int), len(_VIRIDIS17) - 2)
        f = (x - i)[..., None]
        rgb = (1 - f) * _VIRIDIS17[i] + f * _VIRIDIS17[i + 1]
    rgb = np.rint(rgb).astype(np.uint8)
    rgb[bad] = 0
    return rgb


def _display_array(image) -> np.ndarray:
    """(Y, X) or (Y, X, 3) of one picture: alpha and length-1 channel axes dropped."""
    a = np.asarray(image)
    if a.ndim == 3 and a.shape[-1] in (3, 4):
        return a[..., :3]
    if a.ndim == 3 and a.shape[-1] == 1:
        return a[..., 0]
    if a.ndim != 2:
        raise ValueError(f"contact_sheet: expected (Y, X) or (Y, X, 3), got shape {a.shape}")
    return a


def _height_label(label: str) -> tuple[str, int | None]:
    """'height:dog:Z=9' -> ('dog height, 0-8', 9)."""
    import re

    parts = label.split(":")[1:]
    z = None
    name = []
    for part in parts:
        m = re.fullmatch(r"\s*Z\s*=\s*(\d+)\s*", part)
        if m:
            z = int(m.group(1))
        elif part:
            name.append(part)
    text = " ".join(name + ["height"])
    return (f"{text}, 0-{z - 1}" if z else text), z


def _fit(draw, text: str, width: int, font) -> str:
    """The text, shortened with '..' at the end to fit ``width`` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "..", font=font) > width:
        text = text[:-1]
    return text + ".."


def _wrap(draw, text: str, width: int, font) -> list[str]:
    lines, line = [], ""
    for word in text.split():
        trial = f"{line} {word}".strip()
        if line and draw.textlength(trial, font=font) > width:
            lines.append(line)
            line = word
        else:
            line = trial
    return [_fit(draw, ln, width, font) for ln in lines + [line] if ln]


def contact_sheet(path, rows: list[tuple[str, list[tuple[str, np.ndarray]]]],
                  size: int = 256) -> Path:
    """Write a JPEG (quality 90) grid of pictures: one row per ``(title, cells)`` with the
    title at the left, one ``(label, image)`` per column with the label above; returns the
    path.

    The images are crops the caller chose (at most ``size`` x ``size``; a larger one shows
    its centre, a smaller one sits at the cell's top left; nothing is resized). RGB is shown
    as RGB, gray as gray. Each row's images share one display scale: the 0.5 and 99.5
    percentiles over all the row's pixels map to black and white, so the images of a row
    compare fairly and 12/16-bit data is visible. A label starting with ``height:`` marks a
    height map (float slice index), shown in viridis over [0, Z - 1] where the label holds
    ``Z=<slices>``, e.g. ``height:dog:Z=9`` (without it, over [0, the map's max]).
    """
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default()
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    top, bottom = probe.textbbox((0, 0), "Ag|", font=font)[1::2]
    line_h = bottom - min(top, 0) + 3
    pad, label_h = 6, line_h + 4
    margin = int(min(max([probe.textlength(t, font=font) for t, _ in rows] + [40]), 180)) + 2 * pad
    ncols = max([len(cells) for _, cells in rows] + [1])
    width = margin + ncols * (size + pad)
    row_h = label_h + size + pad
    sheet = Image.new("RGB", (width, pad + len(rows) * row_h), "white")
    draw = ImageDraw.Draw(sheet)
    for r, (title, cells) in enumerate(rows):
        y = pad + r * row_h
        lines = _wrap(draw, str(title), margin - 2 * pad, font)
        for k, text in enumerate(lines):
            draw.text((pad, y + label_h + size // 2 - len(lines) * line_h // 2 + k * line_h),
                      text, fill="black", font=font)
        pictures = []
        for label, image in cells:
            a = _display_array(image)
            y0, y1, x0, x1 = crop_box(a.shape, size)
            pictures.append((str(label), a[y0:y1, x0:x1]))
        values = [a.astype(np.float64).ravel() for label, a in pictures
                  if not label.startswith("height:")]
        values = np.concatenate(values) if values else np.zeros(1)
        values = values[np.isfinite(values)]
        lo, hi = np.percentile(values, [0.5, 99.5]) if values.size else (0.0, 1.0)
        hi = hi if hi > lo else lo + 1.0
        for c, (label, a) in enumerate(pictures):
            x = margin + c * (size + pad)
            if label.startswith("height:"):
                text, z = _height_label(label)
                h = a.astype(np.float64)
                if a.ndim == 3:
                    raise ValueError(f"contact_sheet: height map {label!r} is not 2-D")
                if z is None:
                    finite = h[np.isfinite(h)]
                    z = int(finite.max()) + 1 if finite.size else 1
                rgb = _viridis(h / max(z - 1, 1))
            else:
                text = label
                u8 = np.rint(np.clip((a.astype(np.float64) - lo) / (hi - lo), 0, 1) * 255)
                u8 = u8.astype(np.uint8)
                rgb = u8 if u8.ndim == 3 else np.repeat(u8[..., None], 3, axis=-1)
            draw.text((x, y + 2), _fit(draw, text, size, font), fill="black", font=font)
            sheet.paste(Image.fromarray(np.ascontiguousarray(rgb)), (x, y + label_h))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path, "JPEG", quality=90)
    return path
