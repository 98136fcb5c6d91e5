"""Registration of the slices of a focal stack before fusion, and a common frame for
slices of different sizes.

Stage drift, a tilted stage or a z-drive that walks sideways shifts the slices of a stack
against each other; a microscope whose magnification changes with focus ("focus
breathing") also scales them by a fraction of a percent per slice. Fusing such a stack
mixes pixels from different places. :func:`align_stack` estimates one transform per slice
from the luminance and warps every channel of that slice with it (one transform set for
all channels, so colour stays registered). Registration is off unless asked for.

How the transforms are estimated
--------------------------------
Slices of a focal stack differ mostly in blur, so each slice is registered to its
*neighbour* (the slice one step closer to the reference), where the blur differs least,
and the neighbour-to-neighbour transforms are chained (composed) out from the reference.
Both slices are band-passed with a difference of Gaussians (sigma 2 and 8 px), which keeps
the structure that survives a step of defocus and drops the flat background and the pixel
noise. The translation is found as the peak of the cross-correlation of the band-passed
slices (by FFT, edges tapered by a Tukey window; any shift up to half the image) and then
refined by Gauss-Newton least squares on the slices' overlap (translation plus a gain and
an offset of the intensities; no window there, so no pull towards zero). The similarity
option adds a scale about the image centre (and optionally a rotation) to the same fit.

Whitened ("phase") correlation of the raw slices is not used: it weights every frequency
alike, and in defocused slices the high frequencies hold only noise and quantisation. On
the synthetic stacks of ``tests/test_align.py`` (8 slices of 192 x 192, 1.5 px of blur per
slice, shifts up to 20 px), scikit-image's phase correlation chained between neighbours
missed by up to 30 px (8 of 48 slices off by more than 0.5 px; registered straight to the
middle slice, 29 of 48), plain cross-correlation of the raw slices by up to 0.63 px, and
the method here by at most 0.19 px (mean 0.04 px).

Conventions
-----------
Coordinates are (y, x) = (row, column) in pixels, as in numpy and napari. Transform
``T[k]`` is a 3 x 3 matrix acting on ``(y, x, 1)``: it maps a point of the *reference*
frame to the point of slice ``k`` that shows the same specimen point, so the aligned
slice is ``aligned_k(p) = slice_k(T[k] @ p)``; ``T[reference]`` is the identity. The
*shift* of a slice is where the reference's image centre lands in that slice, minus the
centre: for a pure translation, slice ``k`` is the reference moved by ``shifts[k] = (dy,
dx)`` pixels, ``slice_k ~ scipy.ndimage.shift(reference_slice, shifts[k])``.

The frame of the result (``frame``)
-----------------------------------
``"crop"`` (default)
    Keep the largest rectangle of the reference frame that every aligned slice covers with
    its own pixels, so no invented edge pixel enters the fusion. The result is smaller
    than the input by the spread of the shifts (plus the margin a scale change needs).
``"pad"``
    Keep the whole reference frame. Where an aligned slice has no pixels of its own, it
    takes the values of the nearest slice in focus order that has them (the reference
    always has), so a focus measure sees a copy of real data there, never a smeared edge;
    ``valid`` tells which pixels are a slice's own. The height map is then only as good
    as the slices that saw each pixel.

Slices of different sizes (:func:`common_frame`) are first centred on one another:
``"crop"`` cuts every slice to the smallest height and width, ``"pad"`` brings them to the
largest, filling as above.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
from scipy import fft as sfft
from scipy import ndimage as ndi

from ._errors import MfifError
from .stack import luminance, work_dtype

#: the registration models :func:`align_stack` offers
ALIGN_MODES = ("translation", "similarity")
#: how the aligned stack is framed (see the module docstring)
FRAMES = ("crop", "pad")
#: how the scale may change through the stack in similarity mode
BREATHING = ("linear", "free")
#: the smallest slice (px, both axes) that can be registered
MIN_SIZE = 16
#: the largest scale change (or rotation, in radians) accepted between neighbouring slices
MAX_SCALE_STEP = 0.1

# Difference-of-Gaussians band (px) the slices are registered on. On defocused synthetic
# stacks (blur 1.5 and 3 px per slice; cells and fluorescence-like scenes) (2, 8) was the
# most accurate of (0.7, 3), (1, 4), (1.5, 6), (1, 8), (2, 8) and (3, 12).
_BAND = (2.0, 8.0)
# fraction of each image axis covered by the Tukey window's two cosine tapers
_TAPER = 0.25
# the Gauss-Newton fit samples at most about this many points per axis
_FIT_POINTS = 300
# tolerance (px) for a warped coordinate to count as inside its slice
_EDGE_TOL = 1e-3

Progress = Callable[[int, int], None] | None
Box = tuple[int, int, int, int]


@dataclass
class AlignResult:
    """What :func:`align_stack` returns.

    Attributes
    ----------
    stack : ndarray, shape (Z, Y', X') or (Z, Y', X', C)
        The aligned slices with the input's channel layout, float32 (float64 for float64 or
        32-bit integer input). ``(Y', X')`` is the crop's size (``frame="crop"``) or the
        input's (``frame="pad"``).
    gray : ndarray, shape (Z, Y', X')
        The luminance of the aligned slices, as :func:`napari_mfif.fuse` computes it.
    shifts : ndarray of float64, shape (Z, 2)
        Per slice, the estimated (dy, dx) of its content relative to the reference slice,
        in pixels, at the image centre (0 for the reference).
    transforms : ndarray of float64, shape (Z, 3, 3)
        Per slice, the matrix mapping reference-frame ``(y, x, 1)`` to that slice's pixel
        coordinates (see the module docstring).
    scales : ndarray of float64, shape (Z,)
        Per slice, its magnification relative to the reference (1 in translation mode).
    rotations : ndarray of float64, shape (Z,)
        Per slice, its rotation relative to the reference in degrees, counter-clockwise as
        displayed (0 unless rotation was estimated).
    reference : int
        The slice whose frame the result is in.
    box : tuple of int (y0, y1, x0, x1)
        Where the result lies in the reference frame (half-open rows and columns): the
        crop for ``frame="crop"``, the whole image for ``frame="pad"``.
    valid : ndarray of bool, shape (Z, Y', X')
        Where each aligned slice shows its own pixels (all true for ``frame="crop"``).
    mode, frame : str
        As requested.
    params : dict
        The other options, as used.
    """

    stack: np.ndarray
    gray: np.ndarray
    shifts: np.ndarray
    transforms: np.ndarray
    scales: np.ndarray
    rotations: np.ndarray
    reference: int
    box: Box
    valid: np.ndarray
    mode: str
    frame: str
    params: dict[str, Any] = field(default_factory=dict)

    def report(self) -> str:
        """The estimated transforms as text, a header and one line per slice."""
        y0, y1, x0, x1 = self.box
        lines = [f"aligned {len(self.shifts)} slices to slice {self.reference} ({self.mode}, "
                 f"frame {self.frame}: rows {y0}:{y1}, columns {x0}:{x1})"]
        for k, (dy, dx) in enumerate(self.shifts):
            line = f"slice {k}: dy {dy:+.2f} px, dx {dx:+.2f} px"
            if self.mode == "similarity":
                line += f", scale {self.scales[k]:.4f}"
                if self.params.get("rotation"):
                    line += f", rotation {self.rotations[k]:+.3f} deg"
            lines.append(line)
        return "\n".join(lines)


# ---------------------------------------------------------------- checks

def _check_stack(stack: Any) -> np.ndarray:
    array = np.asarray(stack)
    if array.ndim not in (3, 4) or array.shape[0] < 2:
        raise MfifError(
            f"cannot align an array of shape {tuple(array.shape)}; give (Z, Y, X) or "
            "(Z, Y, X, C) with at least two slices"
        )
    if array.dtype.kind not in "uif":
        raise MfifError(f"cannot align a stack of dtype {array.dtype}; give real intensities")
    return array


def _check_gray(gray: Any) -> np.ndarray:
    gray = np.asarray(gray)
    if gray.ndim != 3 or gray.shape[0] < 2:
        raise MfifError(
            f"registration needs a (Z, Y, X) stack of at least two slices, got shape "
            f"{tuple(gray.shape)}"
        )
    if gray.dtype.kind not in "uif":
        raise MfifError(f"cannot register a stack of dtype {gray.dtype}; give real intensities")
    if min(gray.shape[1:]) < MIN_SIZE:
        raise MfifError(
            f"slices of {gray.shape[1]} x {gray.shape[2]} pixels are too small to register; "
            f"registration needs at least {MIN_SIZE} x {MIN_SIZE}"
        )
    if gray.dtype.kind == "f" and not np.isfinite(gray).all():
        raise MfifError("the stack holds NaN or infinite values; replace them before registering")
    return gray


def _check_order(order) -> None:
    if isinstance(order, bool) or not isinstance(order, (int, np.integer)) or not 0 <= order <= 5:
        raise MfifError(f"interpolation order must be an integer from 0 to 5, got {order!r}")


def _check_options(max_shift, breathing) -> None:
    if max_shift is not None and not (isinstance(max_shift, (int, float, np.number))
                                      and max_shift >= 0):
        raise MfifError(f"max_shift must be a number of pixels >= 0, got {max_shift!r}")
    if breathing not in BREATHING:
        raise MfifError(f"unknown breathing {breathing!r}; choose one of: {', '.join(BREATHING)}")


def _reference_index(reference: int | str, bands: list[np.ndarray]) -> int:
    z = len(bands)
    if isinstance(reference, str):
        if reference == "middle":
            return z // 2
        if reference == "sharpest":
            return int(np.argmax([float(np.mean(np.square(b, dtype=np.float64))) for b in bands]))
        raise MfifError(
            f"unknown reference {reference!r}; give a slice index, 'middle' or 'sharpest'"
        )
    if isinstance(reference, (bool, np.bool_)) or not isinstance(reference, (int, np.integer)):
        raise MfifError(
            f"reference must be a slice index, 'middle' or 'sharpest', got {reference!r}"
        )
    if not -z <= reference < z:
        raise MfifError(f"reference slice {reference} is outside the stack of {z} slices")
    return int(reference) % z


# ---------------------------------------------------------------- pair registration

def _band(image: np.ndarray) -> np.ndarray:
    """The difference-of-Gaussians band the slices are registered on (float32)."""
    image = np.asarray(image, dtype=np.float32)
    lo, hi = _BAND
    return (ndi.gaussian_filter(image, lo, mode="reflect")
            - ndi.gaussian_filter(image, hi, mode="reflect"))


def _featureless(band: np.ndarray, image: np.ndarray) -> bool:
    scale = float(np.max(np.abs(image)))
    return float(np.std(band, dtype=np.float64)) <= 1e-6 * max(scale, 1e-30)


def _tukey(n: int) -> np.ndarray:
    """A Tukey window of length n, equal to ``scipy.signal.windows.tukey(n, _TAPER)``
    (whose import is slow)."""
    x = np.arange(n, dtype=np.float64) / max(n - 1, 1)
    edge = _TAPER / 2
    w = np.ones(n)
    low, high = x < edge, x > 1 - edge
    w[low] = 0.5 * (1 - np.cos(np.pi * x[low] / edge))
    w[high] = 0.5 * (1 - np.cos(np.pi * (1 - x[high]) / edge))
    return w


def _spectrum(band: np.ndarray) -> np.ndarray:
    """Real FFT of a band-passed slice, mean removed and edges tapered."""
    h, w = band.shape
    window = np.outer(_tukey(h), _tukey(w)).astype(np.float32)
    return sfft.rfft2((band - band.mean()) * window, workers=-1)


def _correlate(fa: np.ndarray, fb: np.ndarray, shape: tuple[int, int],
               max_shift: float | None) -> np.ndarray:
    """Displacement (dy, dx) of slice b relative to slice a (b ~ shift(a, d)) from their
    spectra: the cross-correlation peak with |dy|, |dx| <= max_shift, to about a tenth of
    a pixel (a parabola through the peak and its neighbours)."""
    corr = sfft.irfft2(fb * np.conj(fa), s=shape, workers=-1)
    lags = [np.where(np.arange(n) < (n + 1) // 2, np.arange(n), np.arange(n) - n) for n in shape]
    if max_shift is not None:
        allowed = (np.abs(lags[0])[:, None] <= max_shift) & (np.abs(lags[1])[None, :] <= max_shift)
        corr = np.where(allowed, corr, -np.inf)
    peak = np.unravel_index(int(np.argmax(corr)), shape)
    out = np.array([lags[0][peak[0]], lags[1][peak[1]]], dtype=np.float64)
    for axis in (0, 1):
        before, after = list(peak), list(peak)
        before[axis] = (peak[axis] - 1) % shape[axis]
        after[axis] = (peak[axis] + 1) % shape[axis]
        c0, c1, c2 = corr[tuple(before)], corr[peak], corr[tuple(after)]
        curve = c0 - 2 * c1 + c2
        if np.isfinite(c0) and np.isfinite(c2) and curve < 0:
            out[axis] += float(np.clip(0.5 * (c0 - c2) / curve, -0.5, 0.5))
    return out


def _translation(d: Sequence[float]) -> np.ndarray:
    t = np.eye(3)
    t[:2, 2] = d
    return t


def _gauss_newton(a: np.ndarray, b: np.ndarray, d: np.ndarray, *, scale: bool, rotation: bool,
                  iterations: int = 40) -> np.ndarray | None:
    """Least-squares fit of band-passed slice ``b`` to ``a`` started from translation ``d``.

    Fits the translation, optionally a scale and a rotation about the image centre, and a
    gain and an offset of the intensities, by Gauss-Newton on the overlap (a grid of at
    most ``_FIT_POINTS`` points per axis of ``a``; ``b`` interpolated by cubic splines).
    Returns the 3 x 3 matrix mapping a's frame to b's, or None where the fit fails or
    leaves the plausible range.
    """
    h, w = a.shape
    cy, cx = (h - 1) / 2, (w - 1) / 2
    stride = max(1, int(np.ceil(max(h, w) / _FIT_POINTS)))
    ys, xs = np.mgrid[0:h:stride, 0:w:stride]
    dy = ys.ravel() - cy
    dx = xs.ravel() - cx
    target = a[::stride, ::stride].ravel().astype(np.float64)
    coef = ndi.spline_filter(b, order=3, mode="mirror", output=np.float32)
    gy, gx = np.gradient(b)
    norm = max(h, w) / 2  # scale and rotation as pixels of motion at the image's edge
    # parameters: scale - 1, rotation, ty, tx (where the centre moves), gain, offset
    p = np.array([0.0, 0.0, d[0], d[1], 1.0, 0.0])
    free = [0] * scale + [1] * rotation + [2, 3, 4, 5]
    margin = 2.0
    for _ in range(iterations):
        s, r, ty, tx, gain, offset = p
        py = cy + (1 + s) * dy - r * dx + ty
        px = cx + r * dy + (1 + s) * dx + tx
        inside = (py >= margin) & (py <= h - 1 - margin) & (px >= margin) & (px <= w - 1 - margin)
        if np.count_nonzero(inside) < 64:
            return None
        coords = np.stack([py[inside], px[inside]])
        bw = ndi.map_coordinates(coef, coords, order=3, prefilter=False, mode="mirror")
        by = ndi.map_coordinates(gy, coords, order=1, mode="nearest").astype(np.float64)
        bx = ndi.map_coordinates(gx, coords, order=1, mode="nearest").astype(np.float64)
        bw = bw.astype(np.float64)
        ey, ex = dy[inside] / norm, dx[inside] / norm
        jac = np.stack([gain * (by * ey + bx * ex), gain * (bx * ey - by * ex),
                        gain * by, gain * bx, bw, np.ones_like(bw)], axis=1)[:, free]
        resid = gain * bw + offset - target[inside]
        try:
            step = np.linalg.solve(jac.T @ jac, -(jac.T @ resid))
        except np.linalg.LinAlgError:
            return None
        full = np.zeros(6)
        full[free] = step
        full[:2] /= norm
        p = p + full
        if not np.all(np.isfinite(p)):
            return None
        if np.hypot(full[2], full[3]) + norm * np.hypot(full[0], full[1]) < 1e-3:
            break
    s, r, ty, tx = p[:4]
    if abs(s) > MAX_SCALE_STEP or abs(r) > MAX_SCALE_STEP or p[4] <= 0:
        return None
    m = np.array([[1 + s, -r], [r, 1 + s]])
    t = np.eye(3)
    t[:2, :2] = m
    t[:2, 2] = np.array([ty, tx]) + np.array([cy, cx]) - m @ np.array([cy, cx])
    return t


def _linear_breathing(pairs: dict[int, np.ndarray], fitted: dict[int, np.ndarray], ref: int,
                      shape: tuple[int, int]) -> None:
    """In place: give every pair the same scale (and rotation) per slice step, the median
    over the fitted pairs, keeping where each pair maps the image centre."""
    if not fitted:
        return
    steps = []
    for k, t in fitted.items():
        sign = 1 if k > ref else -1  # pair k maps slice k -/+ 1 to slice k
        m = t[:2, :2]
        steps.append((sign * 0.5 * np.log(abs(np.linalg.det(m))),
                      sign * np.arctan2(m[1, 0], m[0, 0])))
    log_scale, angle = np.median(np.array(steps), axis=0)
    centre = np.array([(shape[0] - 1) / 2, (shape[1] - 1) / 2])
    for k, t in pairs.items():
        sign = 1 if k > ref else -1
        theta = sign * angle
        m = np.exp(sign * log_scale) * np.array([[np.cos(theta), -np.sin(theta)],
                                                 [np.sin(theta), np.cos(theta)]])
        moved = t[:2, :2] @ centre + t[:2, 2]
        t[:2, :2] = m
        t[:2, 2] = moved - m @ centre


def _centre_shifts(transforms: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    centre = np.array([(shape[0] - 1) / 2, (shape[1] - 1) / 2, 1.0])
    return (transforms @ centre)[:, :2] - centre[:2]


def _estimate(gray: np.ndarray, mode: str, reference: int | str, max_shift: float | None,
              rotation: bool, breathing: str, progress: Progress,
              total: int | None = None) -> tuple[np.ndarray, int]:
    """(transforms (Z, 3, 3), reference index) for a checked (Z, Y, X) luminance."""
    z, shape = gray.shape[0], gray.shape[1:]
    bands = [_band(gray[k]) for k in range(z)]
    ref = _reference_index(reference, bands)
    flat = [_featureless(bands[k], gray[k]) for k in range(z)]
    total = z - 1 if total is None else total
    spectra: dict[int, np.ndarray] = {}
    pairs: dict[int, np.ndarray] = {}
    fitted: dict[int, np.ndarray] = {}
    order = [(k - 1, k) for k in range(ref + 1, z)] + [(k + 1, k) for k in range(ref - 1, -1, -1)]
    for i, (j, k) in enumerate(order):  # j: the neighbour of k towards the reference
        if flat[j] or flat[k]:
            pairs[k] = np.eye(3)  # nothing to register on: k keeps its neighbour's place
        else:
            for n in (j, k):
                if n not in spectra:
                    spectra[n] = _spectrum(bands[n])
            d = _correlate(spectra[j], spectra[k], shape, max_shift)
            fit = None
            if mode == "similarity":
                fit = _gauss_newton(bands[j], bands[k], d, scale=True, rotation=rotation)
                if fit is not None:
                    fitted[k] = fit
                elif breathing == "free":
                    raise MfifError(
                        f"registration failed: no scale change under {MAX_SCALE_STEP:.0%} maps "
                        f"slice {j} onto slice {k}; use translation or check the stack"
                    )
            if fit is None:
                fit = _gauss_newton(bands[j], bands[k], d, scale=False, rotation=False)
            if fit is None or (max_shift is not None
                               and np.abs(_centre_shifts(fit[None], shape)).max() > max_shift + 1):
                fit = _translation(d)
            pairs[k] = fit
            if j != ref:
                del spectra[j]  # the chain has moved on; the reference serves both sides
        if progress is not None:
            progress(i + 1, total)
    if mode == "similarity" and breathing == "linear":
        _linear_breathing(pairs, fitted, ref, shape)
    transforms = np.empty((z, 3, 3))
    transforms[ref] = np.eye(3)
    for k in range(ref + 1, z):
        transforms[k] = pairs[k] @ transforms[k - 1]
    for k in range(ref - 1, -1, -1):
        transforms[k] = pairs[k] @ transforms[k + 1]
    for k, (dy, dx) in enumerate(_centre_shifts(transforms, shape)):
        if abs(dy) > shape[0] / 2 or abs(dx) > shape[1] / 2:
            raise MfifError(
                f"slice {k} is displaced by ({dy:.1f}, {dx:.1f}) px from slice {ref}, more "
                f"than half the {shape[0]} x {shape[1]} image, so the slices do not overlap "
                "enough to register"
            )
    return transforms, ref


# ---------------------------------------------------------------- estimation

def estimate_shifts(
    gray: Any,
    *,
    reference: int | str = "middle",
    max_shift: float | None = None,
    progress: Progress = None,
) -> np.ndarray:
    """Estimate the translation of every slice relative to a reference slice.

    Each slice is registered to its neighbour towards the reference (cross-correlation of
    difference-of-Gaussians band-passed slices, refined by least squares on their overlap)
    and the neighbour shifts are summed out from the reference.

    Parameters
    ----------
    gray : array-like, shape (Z, Y, X)
        The luminance of the slices, in focus order (at least 16 x 16 pixels).
    reference : int or {"middle", "sharpest"}
        The slice the others are registered to: an index, the middle slice (``Z // 2``,
        the default), or the slice with the most band-pass energy.
    max_shift : float, optional
        The largest shift (px, per axis) to search for between *neighbouring* slices; by
        default anything up to half the image.
    progress : callable(done, total), optional
        Called once per slice pair; it may raise to cancel.

    Returns
    -------
    shifts : ndarray of float64, shape (Z, 2)
        Per slice, the (dy, dx) displacement of its content relative to the reference
        (``slice_k ~ scipy.ndimage.shift(reference_slice, shifts[k])``); 0 for the
        reference. A featureless (flat) slice keeps its neighbour's shift.

    Raises
    ------
    MfifError
        For a bad stack, option or reference, or a slice displaced by more than half the
        image.
    """
    gray = _check_gray(gray)
    _check_options(max_shift, "linear")
    transforms, _ = _estimate(gray, "translation", reference, max_shift, False, "linear", progress)
    return transforms[:, :2, 2].copy()


#: :func:`visible_shift` looks at a copy of the stack at most this many pixels on a side ...
SHIFT_CHECK_SIDE = 384
#: ... and at most this many slices of it (evenly spaced, the first and last included)
SHIFT_CHECK_SLICES = 9
#: a shift is reported when it is at least this many pixels of the full image ...
SHIFT_WARN_PX = 3.0
#: ... and at least this many pixels of the reduced copy (its estimates are good to about
#: a fifth of a pixel on synthetic stacks)
SHIFT_WARN_REDUCED_PX = 0.5


def visible_shift(stack: Any) -> float | None:
    """The largest shift (px) of any slice against the middle one when it is clearly
    larger than a pixel, else None: a cheap check (a few tenths of a second) that tells
    whether a stack needs aligning before fusion.

    The luminance of at most :data:`SHIFT_CHECK_SLICES` slices is reduced by block means to
    at most :data:`SHIFT_CHECK_SIDE` pixels a side and registered as
    :func:`estimate_shifts` does. A shift is reported when it is at least
    :data:`SHIFT_WARN_PX` pixels and half a pixel of the reduced copy. On the real stacks
    of the benchmarks it reports the handheld PCB series (7.3 px; it ghosts unaligned) and
    the reflected-light wafer (3.6 px; registering its crops at full size gives about 10 px
    between z = -20 and z = 0 µm, though its far-defocused planes of a periodic pattern
    make such estimates uncertain), and none of the others: blood smear 0.6 px, widefield
    neuron 0.9, confocal membrane 1.9, DIC diatom 2.6, beetle 0.6, skeleton 0.7,
    planktonic algae 6.4 (objects drifting in water, under half a pixel of its 15x
    reduced copy; no rigid shift would fix it). It takes 0.03-0.4 s on them.

    Parameters
    ----------
    stack : array-like, shape (Z, Y, X) or (Z, Y, X, C)
        The focal stack (not modified); a stack too small to register gives None.
    """
    array = np.asarray(stack)
    if array.ndim not in (3, 4) or array.shape[0] < 2:
        return None
    z = array.shape[0]
    picks = np.unique(np.round(np.linspace(0, z - 1, min(z, SHIFT_CHECK_SLICES))).astype(int))
    h, w = array.shape[1:3]
    # every step-th pixel, then means of blocks of b x b: reduced by step * b in all, at a
    # fraction of the cost of block means over the whole image, and still averaged against
    # aliasing
    step = max(1, int(np.ceil(max(h, w) / SHIFT_CHECK_SIDE)) // 2)
    part = array[picks, ::step, ::step].astype(np.float32)
    gray = luminance(part if part.ndim == 4 else part[..., None])
    b = max(1, int(np.ceil(max(gray.shape[1:]) / SHIFT_CHECK_SIDE)))
    hh, ww = gray.shape[1] // b * b, gray.shape[2] // b * b
    if hh // b < 4 * MIN_SIZE or ww // b < 4 * MIN_SIZE:
        return None
    small = gray[:, :hh, :ww].reshape(len(picks), hh // b, b, ww // b, b).mean(axis=(2, 4))
    try:
        shifts = estimate_shifts(small)
    except MfifError:  # e.g. featureless or more than half the image apart: not for here
        return None
    largest = float(np.abs(shifts).max())
    if largest >= SHIFT_WARN_REDUCED_PX and largest * step * b >= SHIFT_WARN_PX:
        return largest * step * b
    return None


def estimate_similarity(
    gray: Any,
    *,
    reference: int | str = "middle",
    rotation: bool = False,
    breathing: str = "linear",
    max_shift: float | None = None,
    progress: Progress = None,
) -> np.ndarray:
    """Estimate a similarity transform (scale, translation, optionally rotation) of every
    slice relative to a reference slice, as for focus breathing.

    Each neighbour pair is started from its cross-correlation translation (as in
    :func:`estimate_shifts`) and fitted by least squares on the band-passed slices: a
    scale about the image centre, the translation, a rotation with ``rotation=True``, and
    a gain and offset of the intensities. The pair transforms are composed out from the
    reference.

    Parameters
    ----------
    gray : array-like, shape (Z, Y, X)
        The luminance of the slices, in focus order.
    reference, max_shift, progress
        As for :func:`estimate_shifts`.
    rotation : bool
        Also estimate a rotation (off by default: a focus drive does not rotate the image).
    breathing : {"linear", "free"}
        ``"linear"`` (default): the magnification changes by one factor per slice step,
        as focus breathing does, ``scale_k = q ** (k - reference)``, ``q`` being the median
        of the neighbour pairs' fitted steps (rotation likewise); each pair keeps its own
        translation. The median shrugs off the pairs whose fit defocus has thrown off.
        ``"free"``: every pair keeps its own fitted scale (and rotation).

    Returns
    -------
    transforms : ndarray of float64, shape (Z, 3, 3)
        Per slice, the matrix mapping reference-frame ``(y, x, 1)`` to that slice's pixel
        coordinates; the identity for the reference.

    Raises
    ------
    MfifError
        For a bad stack, option or reference, a slice displaced by more than half the
        image, or (with ``breathing="free"``) a pair that no scale change under 10 %
        fits.
    """
    gray = _check_gray(gray)
    _check_options(max_shift, breathing)
    transforms, _ = _estimate(gray, "similarity", reference, max_shift, bool(rotation), breathing,
                              progress)
    return transforms


def transforms_from_shifts(shifts: Any) -> np.ndarray:
    """Translation matrices from shifts.

    Parameters
    ----------
    shifts : array-like, shape (Z, 2)
        Per slice, its (dy, dx) relative to the reference, as :func:`estimate_shifts`
        returns.

    Returns
    -------
    transforms : ndarray of float64, shape (Z, 3, 3)
        Per slice, the matrix mapping reference-frame ``(y, x, 1)`` to the slice.
    """
    shifts = np.asarray(shifts, dtype=np.float64)
    if shifts.ndim != 2 or shifts.shape[1] != 2:
        raise MfifError(f"shifts must have shape (Z, 2), got {tuple(shifts.shape)}")
    transforms = np.tile(np.eye(3), (shifts.shape[0], 1, 1))
    transforms[:, :2, 2] = shifts
    return transforms


# ---------------------------------------------------------------- warping

def _covered(transforms: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(Z, Y, X) bool: where each slice has pixels of its own, in the reference frame."""
    h, w = shape
    y = np.arange(h, dtype=np.float64)[:, None]
    x = np.arange(w, dtype=np.float64)[None, :]
    out = np.empty((len(transforms), h, w), dtype=bool)
    for k, t in enumerate(transforms):
        sy = t[0, 0] * y + t[0, 1] * x + t[0, 2]
        sx = t[1, 0] * y + t[1, 1] * x + t[1, 2]
        out[k] = ((sy >= -_EDGE_TOL) & (sy <= h - 1 + _EDGE_TOL)
                  & (sx >= -_EDGE_TOL) & (sx <= w - 1 + _EDGE_TOL))
    return out


def _inner_box(mask: np.ndarray) -> Box | None:
    """A rectangle (y0, y1, x0, x1) of true pixels in a convex ``mask``: its bounding box,
    shrunk from whichever edge holds the most false pixels until its four edges are all
    true (then, the region being convex, so is the inside). Exact when the region is an
    axis-aligned rectangle, as it is without rotation."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return None
    y0, y1, x0, x1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    while y0 < y1 and x0 < x1:
        missing = [np.count_nonzero(~mask[y0, x0:x1]), np.count_nonzero(~mask[y1 - 1, x0:x1]),
                   np.count_nonzero(~mask[y0:y1, x0]), np.count_nonzero(~mask[y0:y1, x1 - 1])]
        side = int(np.argmax(missing))
        if missing[side] == 0:
            return y0, y1, x0, x1
        if side == 0:
            y0 += 1
        elif side == 1:
            y1 -= 1
        elif side == 2:
            x0 += 1
        else:
            x1 -= 1
    return None


def _warp(image: np.ndarray, t: np.ndarray, box: Box, order: int) -> np.ndarray:
    """The reference-frame pixels p of ``box`` sampled from ``image`` at ``T @ p``, edges
    replicated; an integer shift is copied exactly."""
    y0, y1, x0, x1 = box
    h, w = image.shape
    if (np.array_equal(t[:2, :2], np.eye(2))
            and np.allclose(t[:2, 2], np.round(t[:2, 2]), rtol=0, atol=1e-9)):
        oy, ox = int(round(t[0, 2])), int(round(t[1, 2]))
        rows = np.clip(np.arange(y0, y1) + oy, 0, h - 1)
        cols = np.clip(np.arange(x0, x1) + ox, 0, w - 1)
        return image[np.ix_(rows, cols)]
    offset = t[:2, :2] @ np.array([y0, x0], dtype=np.float64) + t[:2, 2]
    return ndi.affine_transform(image, t[:2, :2], offset=offset, output_shape=(y1 - y0, x1 - x0),
                                order=order, mode="nearest")


def _fill_uncovered(stack: np.ndarray, valid: np.ndarray) -> None:
    """In place: where slice k has no pixels of its own, copy the nearest slice (in focus
    order; the lower one first on a tie) that has; leave a pixel that no slice has."""
    z = stack.shape[0]
    for k in range(z):
        todo = ~valid[k]
        for step in range(1, z):
            if not todo.any():
                break
            for j in (k - step, k + step):
                if 0 <= j < z:
                    take = todo & valid[j]
                    if take.any():
                        stack[k][take] = stack[j][take]
                        todo &= ~take


def apply_transforms(
    stack: Any,
    transforms: Any,
    *,
    frame: str = "crop",
    order: int = 3,
    progress: Progress = None,
) -> tuple[np.ndarray, np.ndarray, Box]:
    """Warp every slice of a stack into the reference frame with its transform.

    All channels of a slice get the slice's transform, so channels stay registered.

    Parameters
    ----------
    stack : array-like, shape (Z, Y, X) or (Z, Y, X, C)
        The slices (any real dtype); not modified.
    transforms : array-like, shape (Z, 3, 3)
        Per slice, the matrix mapping reference-frame ``(y, x, 1)`` to that slice's pixel
        coordinates (from :func:`estimate_similarity`, or :func:`transforms_from_shifts`).
    frame : {"crop", "pad"}
        ``"crop"`` keeps the largest rectangle that every aligned slice covers; ``"pad"``
        keeps the whole frame and fills a slice's uncovered pixels from the nearest slice
        that covers them (see the module docstring).
    order : int
        Spline order of the interpolation, 0 to 5. 3 (cubic, the default) keeps sharp
        detail through a sub-pixel shift; 1 (linear) is twice as fast but blurs it (about
        3 dB lower PSNR after fusion on the synthetic stacks). Integer shifts are copied
        exactly.
    progress : callable(done, total), optional
        Called once per slice; it may raise to cancel.

    Returns
    -------
    aligned : ndarray, shape (Z, Y', X') or (Z, Y', X', C)
        float32 (float64 for float64 or 32-bit integer input).
    valid : ndarray of bool, shape (Z, Y', X')
        Where each aligned slice shows its own pixels.
    box : tuple of int (y0, y1, x0, x1)
        Where ``aligned`` lies in the reference frame (half-open).

    Raises
    ------
    MfifError
        For a bad stack, mismatched transforms, an unknown frame or order, or a crop that
        would leave nothing.
    """
    array = _check_stack(stack)
    z = array.shape[0]
    transforms = np.asarray(transforms, dtype=np.float64)
    if transforms.shape != (z, 3, 3):
        raise MfifError(
            f"transforms have shape {tuple(transforms.shape)} but the stack has {z} slices; "
            f"give ({z}, 3, 3)"
        )
    if not np.all(np.isfinite(transforms)):
        raise MfifError("the transforms hold NaN or infinite values")
    if frame not in FRAMES:
        raise MfifError(f"unknown frame {frame!r}; choose one of: {', '.join(FRAMES)}")
    _check_order(order)
    shape = array.shape[1:3]
    covered = _covered(transforms, shape)
    if frame == "crop":
        box = _inner_box(covered.all(axis=0))
        if box is None:
            raise MfifError(
                "no part of the image is seen by every slice after alignment, so there is "
                "nothing to crop to; use frame 'pad' or leave out the outlying slices"
            )
    else:
        box = (0, shape[0], 0, shape[1])
    y0, y1, x0, x1 = box
    dtype = work_dtype(array.dtype)
    aligned = np.empty((z, y1 - y0, x1 - x0) + array.shape[3:], dtype=dtype)
    for k in range(z):
        if array.ndim == 3:
            aligned[k] = _warp(array[k].astype(dtype, copy=False), transforms[k], box, order)
        else:
            for c in range(array.shape[3]):
                channel = array[k, ..., c].astype(dtype)
                aligned[k, ..., c] = _warp(channel, transforms[k], box, order)
        if progress is not None:
            progress(k + 1, z)
    valid = covered[:, y0:y1, x0:x1].copy()
    if frame == "pad":
        _fill_uncovered(aligned, valid)
    return aligned, valid, box


# ---------------------------------------------------------------- the one call

def align_stack(
    stack: Any,
    gray: Any = None,
    *,
    mode: str = "translation",
    frame: str = "crop",
    reference: int | str = "middle",
    rotation: bool = False,
    breathing: str = "linear",
    max_shift: float | None = None,
    order: int = 3,
    progress: Progress = None,
) -> AlignResult:
    """Register the slices of a focal stack and warp them into a common frame.

    The transforms are estimated once, on the luminance, and applied to every channel.

    Parameters
    ----------
    stack : array-like, shape (Z, Y, X) or (Z, Y, X, C)
        The slices in focus order (any real dtype); not modified.
    gray : array-like, shape (Z, Y, X), optional
        The luminance to register on; by default computed from ``stack`` as
        :func:`napari_mfif.fuse` does (Rec. 601 for RGB, the mean of other channels).
    mode : {"translation", "similarity"}
        ``"translation"`` (shifts only, the default) or ``"similarity"`` (also a scale
        change, as from focus breathing, and a rotation with ``rotation=True``).
    frame : {"crop", "pad"}
        How the result is framed (see the module docstring): ``"crop"`` (default) to the
        region every slice covers, or ``"pad"`` to the whole reference frame.
    reference : int or {"middle", "sharpest"}
        The slice whose frame the result is in (default the middle slice, ``Z // 2``).
    rotation : bool
        In similarity mode, also estimate a rotation.
    breathing : {"linear", "free"}
        In similarity mode, how the scale changes through the stack (see
        :func:`estimate_similarity`).
    max_shift : float, optional
        The largest shift (px, per axis) to search for between neighbouring slices.
    order : int
        Spline order of the warp (default 3, cubic; see :func:`apply_transforms`).
    progress : callable(done, total), optional
        Called per slice pair while estimating, then per slice while warping; it may
        raise (e.g. :class:`~napari_mfif.FusionCancelled`) to cancel.

    Returns
    -------
    AlignResult

    Raises
    ------
    MfifError
        For a bad stack or option, a slice displaced by more than half the image, a
        failed similarity fit, or a crop that would leave nothing.
    """
    if mode not in ALIGN_MODES:
        raise MfifError(f"unknown alignment {mode!r}; choose one of: {', '.join(ALIGN_MODES)}")
    if frame not in FRAMES:
        raise MfifError(f"unknown frame {frame!r}; choose one of: {', '.join(FRAMES)}")
    _check_options(max_shift, breathing)
    _check_order(order)
    array = _check_stack(stack)
    if gray is None:
        work = array if array.ndim == 4 else array[..., np.newaxis]
        gray = luminance(work.astype(work_dtype(array.dtype), copy=False))
    gray = _check_gray(gray)
    if gray.shape != array.shape[:3]:
        raise MfifError(
            f"the luminance has shape {tuple(gray.shape)} but the stack has "
            f"{tuple(array.shape[:3])}; they must match"
        )
    z = array.shape[0]
    total = (z - 1) + z
    transforms, ref = _estimate(gray, mode, reference, max_shift, bool(rotation), breathing,
                                progress, total=total)

    def warp_progress(done: int, _total: int) -> None:
        if progress is not None:
            progress(z - 1 + done, total)

    aligned, valid, box = apply_transforms(array, transforms, frame=frame, order=order,
                                           progress=warp_progress)
    m = transforms[:, :2, :2]
    return AlignResult(
        stack=aligned,
        gray=luminance(aligned if aligned.ndim == 4 else aligned[..., np.newaxis]),
        shifts=_centre_shifts(transforms, gray.shape[1:]),
        transforms=transforms,
        scales=np.sqrt(np.abs(np.linalg.det(m))),
        rotations=np.degrees(np.arctan2(m[:, 1, 0], m[:, 0, 0])),
        reference=ref,
        box=box,
        valid=valid,
        mode=mode,
        frame=frame,
        params=dict(reference=reference, rotation=bool(rotation), breathing=breathing,
                    max_shift=max_shift, order=order),
    )


# ---------------------------------------------------------------- different sizes

def common_frame(slices: Sequence[Any], rule: str = "crop") -> tuple[np.ndarray, np.ndarray]:
    """Bring slices of different sizes into one frame, centre on centre.

    Parameters
    ----------
    slices : sequence of array-like, each (Y_k, X_k) or (Y_k, X_k, C)
        The slices in focus order: one dtype and one channel count; sizes may differ.
    rule : {"crop", "pad"}
        ``"crop"`` (default): every slice is cut to the smallest height and the smallest
        width, keeping its centre. ``"pad"``: every slice is placed, centred, in a frame
        of the largest height and the largest width; a pixel outside a slice takes the
        value of the nearest slice in focus order that covers it (the lower one on a tie)
        or, where none does, that slice's nearest edge pixel. Where a difference is odd,
        the odd row or column is at the bottom / right: a slice of height ``h`` sits from
        row ``(H - h) // 2`` of a frame of height ``H`` (and a crop of height ``H`` starts
        at row ``(h - H) // 2`` of the slice).

    Returns
    -------
    stack : ndarray, shape (Z, Y, X) or (Z, Y, X, C)
        In the slices' dtype.
    valid : ndarray of bool, shape (Z, Y, X)
        Where each slice shows its own pixels (all true for ``"crop"``).

    Raises
    ------
    MfifError
        For an empty list, an unknown rule, or slices that differ in dtype, dimensions
        or channel count.
    """
    if rule not in FRAMES:
        raise MfifError(f"unknown rule {rule!r} for slices of different sizes; choose crop or pad")
    arrays = [np.asarray(s) for s in slices]
    if not arrays:
        raise MfifError("the list of slices is empty; a focal stack needs at least two slices")
    first = arrays[0]
    for i, a in enumerate(arrays):
        if a.ndim not in (2, 3):
            raise MfifError(
                f"slice {i} has shape {tuple(a.shape)}; each slice must be 2-D (Y, X) or (Y, X, C)"
            )
        if a.ndim != first.ndim or a.shape[2:] != first.shape[2:]:
            raise MfifError(
                f"slice {i} has shape {tuple(a.shape)} but slice 0 has {tuple(first.shape)}; "
                "all slices must have the same number of channels"
            )
        if a.dtype != first.dtype:
            raise MfifError(
                f"slice {i} has dtype {a.dtype} but slice 0 has {first.dtype}; all slices "
                "must have the same dtype"
            )
        if 0 in a.shape:
            raise MfifError(f"slice {i} is empty: its shape is {tuple(a.shape)}")
    pick = min if rule == "crop" else max
    h, w = pick(a.shape[0] for a in arrays), pick(a.shape[1] for a in arrays)
    z = len(arrays)
    out = np.empty((z, h, w) + first.shape[2:], dtype=first.dtype)
    valid = np.zeros((z, h, w), dtype=bool)
    for k, a in enumerate(arrays):
        ah, aw = a.shape[:2]
        if rule == "crop":
            y0, x0 = (ah - h) // 2, (aw - w) // 2
            out[k] = a[y0:y0 + h, x0:x0 + w]
            valid[k] = True
        else:
            y0, x0 = (h - ah) // 2, (w - aw) // 2
            pad = [(y0, h - ah - y0), (x0, w - aw - x0)] + [(0, 0)] * (a.ndim - 2)
            out[k] = np.pad(a, pad, mode="edge")
            valid[k, y0:y0 + ah, x0:x0 + aw] = True
    if rule == "pad":
        _fill_uncovered(out, valid)
    return out, valid
