"""Physically based focal stacks: partially coherent brightfield and widefield fluorescence.

:mod:`napari_mfif.synthetic` blurs a sharp image with a Gaussian. Real defocus is not a blur:
in brightfield an out-of-focus cell grows bright and dark rings (phase fringes, Becke lines)
whose contrast can beat the in-focus plane's; in widefield fluorescence every slice carries
the diffuse light of everything out of focus. This module renders both from wave optics, with
the same ground truth as :class:`~napari_mfif.synthetic.SyntheticStack` (the in-focus image and
the depth of every pixel in slice units), for testing and training focus measures.

The model (scalar, not paraxial, thin specimens; lengths in micrometres; the page
*Physical simulator* of the documentation has the details and the limits):

- **Specimen** (:func:`specimen`): a thin complex transmittance ``t = exp(-a/2 + i phi)``
  (``a`` the absorbance, ``phi`` the phase delay) of cells, granules and fibres, and an
  emission density of the same objects for fluorescence.
- **Propagation** (:func:`propagate`): the angular spectrum, a field's spectrum times
  ``exp(i 2 pi dz sqrt(n^2 / lambda^2 - fx^2 - fy^2))``, evanescent waves cut.
- **Brightfield** (:func:`brightfield_image`): Abbe's method. The condenser aperture (a disc
  of ``condenser_na``) is sampled by a few mutually incoherent source points; each one is a
  tilted plane wave through the specimen, defocused, cut by the objective pupil
  (``na / lambda``), and the intensities of all source points are added.
- **Fluorescence** (:func:`psf`): the widefield intensity PSF
  ``|IFFT(pupil * defocus phase)|^2`` (sum 1); a slice is the sum over depth layers of the
  layer's emission convolved with the PSF at that layer's defocus.
- **Depth**: the stack functions give each pixel a depth and image the specimen at the
  defocus ``(k - depth) * spacing`` of slice ``k`` (see their docstrings for the
  approximation this makes in brightfield).

All FFTs are periodic: the field of view wraps around (the specimen is drawn periodically, so
objects cut by one edge continue at the opposite one, and defocused light leaving one edge
comes back at the other).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from ._errors import MfifError
from .stack import to_dtype
from .synthetic import SyntheticStack, smooth_depth, step_depth

__all__ = ["Specimen", "specimen", "reflector", "propagate", "brightfield_image", "psf",
           "brightfield_stack", "reflected_stack", "fluorescence_stack"]

#: Evans and Fung's red-cell thickness (um) on the normalised radius rho: sqrt(1 - rho^2)
#: (C0 + C2 rho^2 + C4 rho^4); only its shape is used (biconcave: 0.81 um at the centre,
#: 2.6 um on the rim for a 7.8 um cell)
_EVANS_FUNG = (0.81, 7.83, -4.39)
_RHO = np.linspace(0, 1, 2001)
_EF_MAX = float(np.max(np.sqrt(1 - _RHO**2) * (_EVANS_FUNG[0] + _EVANS_FUNG[1] * _RHO**2
                                               + _EVANS_FUNG[2] * _RHO**4)))
# strength of each kind of object relative to a cell's (phase, absorbance) and its emission
_NUCLEUS = (0.5, 4.0, 1.0)     # extra phase, extra absorbance, emission of a nucleus
_GRANULE = (0.5, 4.0, 0.8)
_FIBRE = (0.3, 1.0, 0.6)
_CYTOPLASM_EMISSION = {"rbc": 0.4, "nucleated": 0.15}
_CELL_KINDS = ("rbc", "nucleated", "mixed")
_DEPTH_KINDS = ("smooth", "steps", "objects")
#: most defocus rungs (brightfield) or depth layers (fluorescence) a stack may need
_MAX_RUNGS = 2048
#: value of the full bright field (clear glass) in each output dtype: headroom above it for
#: bright fringes; uint16 is 12-bit camera data in a 16-bit container
_WHITE = {np.dtype(np.uint8): 150.0, np.dtype(np.uint16): 2400.0, np.dtype(np.float32): 1.0}
#: camera offset (ADU) of the fluorescence stacks in each integer dtype
_OFFSET = {np.dtype(np.uint8): 10.0, np.dtype(np.uint16): 100.0, np.dtype(np.float32): 0.0}


@dataclass
class Specimen:
    """A thin specimen, for brightfield and for fluorescence.

    Attributes
    ----------
    transmittance : ndarray of complex64, shape (Y, X)
        The complex amplitude transmittance ``exp(-a/2 + i phi)``: 1 on clear glass.
    emission : ndarray of float32, shape (Y, X)
        The fluorophore density of the same objects (nuclei brightest), >= 0, peak near 1.
    labels : ndarray of int32, shape (Y, X)
        0 on the background, one number per object (cells, then fibres, then granules that
        lie outside cells: a granule in a cell belongs to the cell).
    pixel_size : float
        The pixel size in the sample plane, in micrometres.
    """

    transmittance: np.ndarray
    emission: np.ndarray
    labels: np.ndarray
    pixel_size: float


# ---------------------------------------------------------------------------------------
# checks


def _positive(name: str, value, *, zero: bool = False) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise MfifError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(value) or value < 0 or (value == 0 and not zero):
        more = "non-negative" if zero else "positive"
        raise MfifError(f"{name} must be a finite {more} number, got {value}")
    return value


def _optics(wavelength, pixel_size, na, medium_index, condenser_na=0.0):
    wavelength = _positive("wavelength", wavelength)
    pixel_size = _positive("pixel_size", pixel_size)
    na = _positive("na", na)
    n = _positive("medium_index", medium_index)
    condenser_na = _positive("condenser_na", condenser_na, zero=True)
    if na > n:
        raise MfifError(f"the objective's NA {na} exceeds the medium's refractive index {n}; "
                        f"NA = n sin(theta) is at most n")
    if condenser_na > n:
        raise MfifError(f"the condenser's NA {condenser_na} exceeds the medium's refractive "
                        f"index {n}")
    reach = (na + condenser_na) / wavelength
    if reach > 0.5 / pixel_size:
        raise MfifError(f"pixel size {pixel_size} um is too coarse for NA {na + condenser_na:g} "
                        f"at {wavelength} um: it must be at most "
                        f"{wavelength / (2 * (na + condenser_na)):.3g} um")
    return wavelength, pixel_size, na, n, condenser_na


def _dtype(dtype) -> np.dtype:
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise MfifError(f"dtype must be uint8, uint16 or float32, got {dtype!r}") from None
    if dt not in _WHITE:
        raise MfifError(f"dtype must be uint8, uint16 or float32, got {dt}")
    return dt


def _n_slices(n_slices) -> int:
    if isinstance(n_slices, bool) or not isinstance(n_slices, (int, np.integer)) or n_slices < 2:
        raise MfifError(f"n_slices must be an integer of at least 2, got {n_slices!r}")
    return int(n_slices)


def _image_2d(name: str, array, *, complex_ok: bool) -> np.ndarray:
    array = np.asarray(array)
    if array.ndim != 2 or min(array.shape) < 2:
        raise MfifError(f"{name} must be a 2-D (Y, X) array, got shape {array.shape}")
    if array.dtype.kind not in ("iufc" if complex_ok else "iuf"):
        raise MfifError(f"{name} must be a numeric{' (complex)' if complex_ok else ''} array, "
                        f"got dtype {array.dtype}")
    if not np.all(np.isfinite(array)):
        raise MfifError(f"{name} has NaN or infinite values")
    return array


def _shape(shape) -> tuple[int, int]:
    try:
        h, w = (int(s) for s in shape)
    except (TypeError, ValueError):
        raise MfifError(f"shape must be (Y, X), got {shape!r}") from None
    if h < 8 or w < 8:
        raise MfifError(f"shape must be at least 8 x 8 pixels, got {shape!r}")
    return h, w


# ---------------------------------------------------------------------------------------
# the specimen


def _wrapped_box(cy: float, cx: float, ry: float, rx: float, shape):
    """Rows, columns (periodic) and offsets from (cy, cx) of a box of half-size (ry, rx)."""
    h, w = shape
    by = min(int(math.ceil(ry)) + 2, (h - 1) // 2)
    bx = min(int(math.ceil(rx)) + 2, (w - 1) // 2)
    iy, ix = int(round(cy)), int(round(cx))
    oy, ox = np.arange(-by, by + 1), np.arange(-bx, bx + 1)
    rows, cols = (iy + oy) % h, (ix + ox) % w
    return np.ix_(rows, cols), (iy + oy - cy)[:, None], (ix + ox - cx)[None, :]


def specimen(
    shape: tuple[int, int] = (256, 256),
    *,
    pixel_size: float = 0.16,
    cells: str = "mixed",
    n_cells: int | None = None,
    n_granules: int | None = None,
    n_fibres: int | None = None,
    cell_size: float = 7.5,
    phase: float = 1.5,
    absorption: float = 0.1,
    seed: int = 0,
) -> Specimen:
    """A thin specimen of cells, granules and fibres, drawn periodically on the pixel grid.

    Parameters
    ----------
    shape : (Y, X)
        Size in pixels.
    pixel_size : float
        Pixel size in the sample plane, in micrometres.
    cells : {"mixed", "rbc", "nucleated"}
        ``"rbc"``: red-cell-like biconcave discs (Evans and Fung's thickness profile, thickest
        on the rim), nearly round, no nucleus. ``"nucleated"``: domed ellipses with a nucleus
        that delays the phase by half as much again and absorbs four times as strongly as
        the cytoplasm. ``"mixed"``: each cell either, at random.
    n_cells, n_granules, n_fibres : int, optional
        How many of each; by default one cell per 200 um^2, one granule per 40 um^2 and one
        fibre per 400 um^2 of field (about 8, 40 and 4 for the default 41 x 41 um field).
    cell_size : float
        Diameter of a red cell, in micrometres (nucleated cells are 1 to 1.6 times larger).
    phase : float
        Phase delay of a cell at its thickest point, in radians, relative to the medium
        (``2 pi / lambda * thickness * (n_cell - n_medium)``; a red cell in plasma at 550 nm is
        about 1.8). Granules delay by half that, fibres by 0.3 of it.
    absorption : float
        Fraction of the light a cell absorbs at its thickest point, in [0, 1); granules and
        nuclei absorb as a layer four times as dense ((1 - absorption)^4 transmitted at their
        centre), fibres as a cell.
    seed : int
        Seed of the random layout.

    Returns
    -------
    Specimen
        The transmittance, the emission density and the object labels. Granules are small
        Gaussian dots (0.2 to 0.5 um sigma) anywhere; fibres are thin smooth random curves
        (8 to 25 um long, 0.25 um wide). The maps are smoothed by a Gaussian of 0.6 px so the
        edges are band-limited.
    """
    h, w = _shape(shape)
    pixel_size = _positive("pixel_size", pixel_size)
    if cells not in _CELL_KINDS:
        raise MfifError(f"cells must be one of {', '.join(_CELL_KINDS)}, got {cells!r}")
    phase = float(phase)
    if not math.isfinite(phase):
        raise MfifError(f"phase must be a finite number of radians, got {phase}")
    absorption = _positive("absorption", absorption, zero=True)
    if absorption >= 1:
        raise MfifError(f"absorption is a fraction of the light and must be below 1, "
                        f"got {absorption}")
    cell_size = _positive("cell_size", cell_size)
    area = h * w * pixel_size**2
    counts = {}
    for name, value, per in (("n_cells", n_cells, 200.0), ("n_granules", n_granules, 40.0),
                             ("n_fibres", n_fibres, 400.0)):
        if value is None:
            value = int(round(area / per))
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise MfifError(f"{name} must be a non-negative integer, got {value!r}")
        counts[name] = int(value)

    rng = np.random.default_rng(seed)
    density = -math.log1p(-absorption)       # absorbance (-ln of intensity) at full thickness
    phi = np.zeros((h, w))
    absorb = np.zeros((h, w))
    emit = np.zeros((h, w))
    labels = np.zeros((h, w), np.int32)
    label = 0

    # cells, placed so that they overlap little (periodic distances)
    placed: list[tuple[float, float, float]] = []
    for _ in range(counts["n_cells"]):
        kind = cells if cells != "mixed" else ("rbc" if rng.random() < 0.5 else "nucleated")
        diameter = cell_size * (rng.uniform(0.9, 1.1) if kind == "rbc" else rng.uniform(1.0, 1.6))
        r = diameter / 2 / pixel_size
        for _ in range(30):
            cy, cx = rng.uniform(0, h), rng.uniform(0, w)
            clear = True
            for py, px, pr in placed:
                dy = (cy - py + h / 2) % h - h / 2
                dx = (cx - px + w / 2) % w - w / 2
                if math.hypot(dy, dx) < 0.9 * (r + pr):
                    clear = False
                    break
            if clear:
                break
        placed.append((cy, cx, r))
        ratio = rng.uniform(0.9, 1.0) if kind == "rbc" else rng.uniform(0.7, 1.0)
        angle = rng.uniform(0, np.pi)
        box, dy, dx = _wrapped_box(cy, cx, r, r, (h, w))
        u = dy * math.cos(angle) + dx * math.sin(angle)
        v = -dy * math.sin(angle) + dx * math.cos(angle)
        rho2 = (u / (r * ratio)) ** 2 + (v / r) ** 2
        inside = rho2 < 1
        rho2 = np.minimum(rho2, 1)
        if kind == "rbc":
            c0, c2, c4 = _EVANS_FUNG
            profile = np.sqrt(1 - rho2) * (c0 + c2 * rho2 + c4 * rho2**2) / _EF_MAX
        else:
            profile = (1 - rho2) ** 0.6
        profile = np.where(inside, profile, 0.0)
        label += 1
        phi[box] += phase * profile
        absorb[box] += density * profile
        emit[box] += _CYTOPLASM_EMISSION[kind] * profile
        labels[box] = np.where(inside & (labels[box] == 0), label, labels[box])
        if kind == "nucleated":
            rn = r * rng.uniform(0.4, 0.5)
            sy, sx = rng.uniform(-0.25, 0.25, size=2) * r
            nu2 = ((dy - sy) ** 2 + (dx - sx) ** 2) / rn**2
            nucleus = np.sqrt(np.clip(1 - nu2, 0, None))
            phi[box] += _NUCLEUS[0] * phase * nucleus
            absorb[box] += _NUCLEUS[1] * density * nucleus
            emit[box] += _NUCLEUS[2] * nucleus

    # fibres: smooth random curves, splatted bilinearly and blurred to their width
    if counts["n_fibres"]:
        sigma = max(0.7, 0.1 / pixel_size)
        line = np.zeros((h, w))
        step = 0.5
        for _ in range(counts["n_fibres"]):
            y, x = rng.uniform(0, h), rng.uniform(0, w)
            heading = rng.uniform(0, 2 * np.pi)
            n_steps = int(rng.uniform(8, 25) / pixel_size / step)
            turns = np.cumsum(rng.normal(0, 0.35 * math.sqrt(step * pixel_size), n_steps))
            ys = y + np.cumsum(step * np.sin(heading + turns))
            xs = x + np.cumsum(step * np.cos(heading + turns))
            y0, x0 = np.floor(ys).astype(np.intp), np.floor(xs).astype(np.intp)
            fy, fx = ys - y0, xs - x0
            for oy, ox, wgt in ((0, 0, (1 - fy) * (1 - fx)), (0, 1, (1 - fy) * fx),
                                (1, 0, fy * (1 - fx)), (1, 1, fy * fx)):
                np.add.at(line, ((y0 + oy) % h, (x0 + ox) % w), step * wgt)
            label += 1
            path = (np.rint(ys).astype(np.intp) % h, np.rint(xs).astype(np.intp) % w)
            labels[path] = np.where(labels[path] == 0, label, labels[path])
        line = ndi.gaussian_filter(line, sigma, mode="wrap") * math.sqrt(2 * np.pi) * sigma
        phi += _FIBRE[0] * phase * line
        absorb += _FIBRE[1] * density * line
        emit += _FIBRE[2] * line

    # granules: Gaussian dots
    for _ in range(counts["n_granules"]):
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        s = rng.uniform(0.2, 0.5) / pixel_size
        box, dy, dx = _wrapped_box(cy, cx, 3 * s, 3 * s, (h, w))
        dot = np.exp(-(dy**2 + dx**2) / (2 * s * s))
        phi[box] += _GRANULE[0] * phase * dot
        absorb[box] += _GRANULE[1] * density * dot
        emit[box] += _GRANULE[2] * dot
        label += 1
        labels[box] = np.where((dot > 0.6) & (labels[box] == 0), label, labels[box])

    phi = ndi.gaussian_filter(phi, 0.6, mode="wrap")
    absorb = ndi.gaussian_filter(absorb, 0.6, mode="wrap")
    emit = np.clip(ndi.gaussian_filter(emit, 0.6, mode="wrap"), 0, None)
    transmittance = np.exp(-absorb / 2 + 1j * phi).astype(np.complex64)
    return Specimen(transmittance=transmittance, emission=emit.astype(np.float32),
                    labels=labels, pixel_size=pixel_size)


# ---------------------------------------------------------------------------------------
# propagation, brightfield images, PSFs


def reflector(
    shape: tuple[int, int] = (256, 256),
    *,
    pixel_size: float = 0.16,
    n_pads: int | None = None,
    n_traces: int | None = None,
    wavelength: float = 0.55,
    roughness: float = 0.02,
    heights: tuple[float, float] = (0.02, 0.3),
    seed: int = 0,
) -> Specimen:
    """A flat reflecting specimen for reflected-light (epi-illumination) stacks: a wafer or
    circuit board seen from above. Rectangular pads and straight traces of metal
    (reflectance 0.6-0.95) on a substrate (0.35), raised by ``heights`` (a range, um), with a
    faint surface roughness (``roughness`` um rms); large areas carry no texture at all.

    Reflected brightfield images such a surface as transmitted brightfield images a thin
    specimen whose amplitude transmittance is the amplitude reflectance ``sqrt(R)`` and whose
    phase is the round trip over the height, ``4 pi h / wavelength``; pass the result to
    :func:`brightfield_stack` (with the objective's own NA as ``na`` and the illumination
    aperture as ``condenser_na``). ``emission`` is the reflectance, ``labels`` number the
    pads and traces (0 on the substrate)."""
    shape = _shape(shape)
    pixel_size = _positive("pixel_size", pixel_size)
    wavelength = _positive("wavelength", wavelength)
    rng = np.random.default_rng(seed)
    h, w = shape
    area = h * w * pixel_size ** 2
    n_pads = max(1, int(round(area / 150))) if n_pads is None else int(n_pads)
    n_traces = max(1, int(round(area / 300))) if n_traces is None else int(n_traces)
    reflect = np.full(shape, 0.35, np.float32)
    height = np.zeros(shape, np.float32)
    labels = np.zeros(shape, np.int32)
    label = 0
    yy, xx = np.mgrid[0:h, 0:w]
    for _ in range(n_pads + n_traces):
        label += 1
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        if label <= n_pads:   # a pad: 2-12 um rectangles
            ry, rx = rng.uniform(1.0, 6.0, size=2) / pixel_size
        else:                 # a trace: 0.4-2 um wide, 10-40 um long, along x or y
            long_, wide = rng.uniform(5.0, 20.0) / pixel_size, rng.uniform(0.2, 1.0) / pixel_size
            ry, rx = (long_, wide) if rng.random() < 0.5 else (wide, long_)
        dy = np.abs((yy - cy + h / 2) % h - h / 2)
        dx = np.abs((xx - cx + w / 2) % w - w / 2)
        inside = (dy <= ry) & (dx <= rx)
        reflect[inside] = rng.uniform(0.6, 0.95)
        height[inside] = rng.uniform(*heights)
        labels[inside] = label
    # edges a little soft (the optics' own blur does the rest), a faint roughness
    reflect = ndi.gaussian_filter(reflect, 0.6, mode="wrap")
    height = ndi.gaussian_filter(height, 0.6, mode="wrap")
    rough = ndi.gaussian_filter(rng.standard_normal(shape).astype(np.float32), 1.0, mode="wrap")
    height = height + roughness * rough / (rough.std() + 1e-12)
    field = np.sqrt(reflect) * np.exp(1j * (4 * np.pi / wavelength) * height)
    return Specimen(transmittance=field.astype(np.complex64), emission=reflect.astype(np.float32),
                    labels=labels, pixel_size=pixel_size)


def _frequencies(shape, pixel_size):
    fy = np.fft.fftfreq(shape[0], pixel_size)[:, None]
    fx = np.fft.fftfreq(shape[1], pixel_size)[None, :]
    return fy, fx


def propagate(
    field: np.ndarray,
    dz: float,
    *,
    wavelength: float = 0.55,
    pixel_size: float = 0.16,
    medium_index: float = 1.0,
) -> np.ndarray:
    """Propagate a scalar field by ``dz`` micrometres with the angular spectrum.

    The field's spectrum is multiplied by ``exp(i 2 pi dz sqrt(n^2 / lambda^2 - fx^2 -
    fy^2))``; evanescent components (``fx^2 + fy^2 > n^2 / lambda^2``) are removed. Light
    travels towards +z, so a positive ``dz`` looks downstream (towards the objective).
    Propagating by ``dz`` then ``-dz`` returns a band-limited field; ``dz = 0`` returns it
    unchanged except for the evanescent cut. Boundaries are periodic.

    Parameters
    ----------
    field : (Y, X) array
        Complex (or real) amplitude, sampled at ``pixel_size``.
    dz : float
        Distance in micrometres (negative: back-propagation).
    wavelength : float
        Vacuum wavelength in micrometres.
    pixel_size : float
        Sampling in micrometres.
    medium_index : float
        Refractive index of the medium the light travels in.

    Returns
    -------
    ndarray of complex128, shape (Y, X)
    """
    field = _image_2d("field", field, complex_ok=True)
    wavelength = _positive("wavelength", wavelength)
    pixel_size = _positive("pixel_size", pixel_size)
    n = _positive("medium_index", medium_index)
    dz = float(dz)
    if not math.isfinite(dz):
        raise MfifError(f"dz must be a finite distance in micrometres, got {dz}")
    fy, fx = _frequencies(field.shape, pixel_size)
    kz2 = (n / wavelength) ** 2 - fy**2 - fx**2
    kernel = np.where(kz2 > 0, np.exp(2j * np.pi * dz * np.sqrt(np.clip(kz2, 0, None))), 0)
    return np.fft.ifft2(np.fft.fft2(field.astype(np.complex128)) * kernel)


def _source_points(radius: float, rings: int) -> tuple[np.ndarray, np.ndarray]:
    """Points (fy, fx) sampling a disc of ``radius`` and their weights (sum 1): the centre
    and ``rings`` rings of 6, 12, 18, ... points, each point the centre of an equal-area cell
    of a tessellation of the disc (1, 7, 19, 37, 61 points for 0 to 4 rings)."""
    if radius == 0 or rings == 0:
        return np.zeros((1, 2)), np.ones(1)
    a = radius / (rings + 0.5)
    points, weights = [(0.0, 0.0)], [0.25]
    for j in range(1, rings + 1):
        start = 0.0 if j % 2 else np.pi / (6 * j)
        for i in range(6 * j):
            t = start + 2 * np.pi * i / (6 * j)
            points.append((j * a * math.sin(t), j * a * math.cos(t)))
            weights.append(1 / 3)
    weights = np.asarray(weights)
    return np.asarray(points), weights / weights.sum()


def _defocus_list(defocus) -> tuple[np.ndarray, bool]:
    values = np.asarray(defocus, dtype=np.float64)
    if values.ndim > 1 or values.size == 0 or not np.all(np.isfinite(values)):
        raise MfifError(f"defocus must be a finite number or a 1-D list of them (micrometres), "
                        f"got {defocus!r}")
    return np.atleast_1d(values), values.ndim == 0


def _abbe(transmittance, defocus, wavelength, pixel_size, na, n, condenser_na, rings):
    """Abbe's sum: (D, Y, X) float32 intensities, one per defocus (um)."""
    spectrum = np.fft.fft2(transmittance.astype(np.complex128)).astype(np.complex64)
    fy, fx = _frequencies(transmittance.shape, pixel_size)
    points, weights = _source_points(condenser_na / wavelength, rings)
    out = np.zeros((len(defocus),) + transmittance.shape, np.float32)
    buffer = np.zeros(transmittance.shape, np.complex64)
    cut = (na / wavelength) ** 2
    k2 = (n / wavelength) ** 2
    for (sy, sx), weight in zip(points, weights):
        # a tilted wave exp(i 2 pi s.x) shifts the specimen's spectrum by s; in the frame
        # that moves with it, the pupil and the defocus are evaluated at f + s
        g2 = (fy + sy) ** 2 + (fx + sx) ** 2
        idx = np.flatnonzero(g2 <= cut)
        if idx.size == 0:
            continue
        kz = np.sqrt(k2 - g2.ravel()[idx]) - math.sqrt(k2 - sy * sy - sx * sx)
        values = spectrum.ravel()[idx]
        buffer[:] = 0
        flat = buffer.reshape(-1)
        for d, dz in enumerate(defocus):
            flat[idx] = values * np.exp((2j * np.pi * dz) * kz).astype(np.complex64)
            field = np.fft.ifft2(buffer)
            out[d] += np.float32(weight) * (field.real**2 + field.imag**2)
    return out


def brightfield_image(
    transmittance: np.ndarray,
    defocus: float | list[float] = 0.0,
    *,
    wavelength: float = 0.55,
    pixel_size: float = 0.16,
    na: float = 0.65,
    condenser_na: float = 0.3,
    medium_index: float = 1.0,
    source_rings: int = 2,
) -> np.ndarray:
    """The brightfield image of a thin specimen at one or several defocus distances.

    Köhler illumination by Abbe's method: the condenser aperture, a disc of radius
    ``condenser_na / wavelength`` in spatial frequency, is sampled by the centre and
    ``source_rings`` rings of points (1, 7, 19, 37 points for 0 to 3 rings), each a
    mutually incoherent plane wave of equal intensity per area of the aperture. Each wave
    passes the specimen (times ``transmittance``), is propagated by the defocus with the
    angular spectrum and cut by the objective's pupil (a disc of ``na / wavelength``, no
    aberrations, no apodisation); the intensities of all waves are summed. A positive defocus
    puts the focal plane above (downstream of) the specimen.

    Parameters
    ----------
    transmittance : (Y, X) array
        Complex amplitude transmittance (e.g. ``Specimen.transmittance``).
    defocus : float or list of float
        Focal plane minus specimen plane, in micrometres.
    wavelength : float
        Vacuum wavelength in micrometres (green, 0.55, by default).
    pixel_size : float
        Sampling in the sample plane, micrometres; at most ``wavelength / (2 (na +
        condenser_na))``, so that the shifted pupils fit the grid.
    na : float
        Numerical aperture of the objective.
    condenser_na : float
        Numerical aperture of the condenser (0: coherent, one plane wave). The coherence
        ratio sigma is ``condenser_na / na``; above 1 part of the light misses the pupil
        (dark-field light) and clear glass is darker than 1.
    medium_index : float
        Refractive index of the medium between specimen and objective (1.0 for air).
    source_rings : int
        Rings of source points sampling the condenser aperture.

    Returns
    -------
    ndarray of float32
        (Y, X) for one defocus, (D, Y, X) for a list: the intensity relative to the
        illumination, 1.0 on clear glass when ``condenser_na <= na``. Periodic boundaries.
    """
    transmittance = _image_2d("transmittance", transmittance, complex_ok=True)
    wavelength, pixel_size, na, n, condenser_na = _optics(wavelength, pixel_size, na,
                                                          medium_index, condenser_na)
    rings = _rings(source_rings)
    values, scalar = _defocus_list(defocus)
    out = _abbe(transmittance, values, wavelength, pixel_size, na, n, condenser_na, rings)
    return out[0] if scalar else out


def _rings(source_rings) -> int:
    if (isinstance(source_rings, bool) or not isinstance(source_rings, (int, np.integer))
            or not 0 <= source_rings <= 8):
        raise MfifError(f"source_rings must be an integer from 0 to 8, got {source_rings!r}")
    return int(source_rings)


def _psf_stack(shape, defocus, wavelength, pixel_size, na, n) -> np.ndarray:
    """(D, Y, X) float64 intensity PSFs, origin at pixel (0, 0), each summing to 1."""
    fy, fx = _frequencies(shape, pixel_size)
    g2 = fy**2 + fx**2
    inside = g2 <= (na / wavelength) ** 2
    kz = np.sqrt(np.clip((n / wavelength) ** 2 - g2, 0, None)) - n / wavelength
    out = np.empty((len(defocus),) + tuple(shape))
    for d, dz in enumerate(defocus):
        amplitude = np.fft.ifft2(np.where(inside, np.exp(2j * np.pi * dz * kz), 0))
        intensity = amplitude.real**2 + amplitude.imag**2
        out[d] = intensity / intensity.sum()
    return out


def psf(
    shape: tuple[int, int] = (128, 128),
    defocus: float | list[float] = 0.0,
    *,
    wavelength: float = 0.52,
    pixel_size: float = 0.1,
    na: float = 0.75,
    medium_index: float = 1.0,
) -> np.ndarray:
    """The widefield fluorescence intensity PSF at one or several defocus distances.

    ``|IFFT(P * exp(i 2 pi dz sqrt(n^2 / lambda^2 - f^2)))|^2`` with ``P`` the objective's
    pupil (a disc of ``na / wavelength``; scalar, no aberrations, no apodisation), normalised
    to sum 1. In focus it is the Airy pattern, first dark ring at ``0.61 wavelength / na``;
    it is the same at ``+dz`` and ``-dz``.

    Parameters
    ----------
    shape : (Y, X)
        Size in pixels; the PSF is periodic on it, so make it wider than the defocused PSF.
    defocus : float or list of float
        Distance of the emitter from the focal plane, micrometres.
    wavelength : float
        Emission wavelength in micrometres (0.52, GFP-like, by default).
    pixel_size : float
        Sampling in the sample plane, micrometres (at most ``wavelength / (2 na)``).
    na : float
        Numerical aperture of the objective.
    medium_index : float
        Refractive index of the immersion medium.

    Returns
    -------
    ndarray of float32
        (Y, X) for one defocus, (D, Y, X) for a list, centred on pixel ``(Y // 2, X // 2)``,
        each summing to 1.
    """
    h, w = _shape(shape)
    wavelength, pixel_size, na, n, _ = _optics(wavelength, pixel_size, na, medium_index)
    values, scalar = _defocus_list(defocus)
    out = _psf_stack((h, w), values, wavelength, pixel_size, na, n)
    out = np.fft.fftshift(out, axes=(-2, -1)).astype(np.float32)
    return out[0] if scalar else out


# ---------------------------------------------------------------------------------------
# stacks


def _depth_map(depth, shape, n_slices, labels, seed) -> np.ndarray:
    if depth is None:
        depth = "smooth"
    if isinstance(depth, str):
        if depth == "smooth":
            return smooth_depth(shape, n_slices, seed=seed)
        if depth == "steps":
            return step_depth(shape, n_slices, seed=seed)
        if depth == "objects":
            rng = np.random.default_rng(seed + 5)
            n_objects = int(labels.max())
            if n_objects == 0:
                return np.zeros(shape, np.float32)
            levels = rng.uniform(0, n_slices - 1, n_objects + 1).astype(np.float32)
            levels[1:3] = (0, n_slices - 1)[: min(2, n_objects)]
            _, (iy, ix) = ndi.distance_transform_edt(labels == 0, return_indices=True)
            return levels[labels[iy, ix]]
        raise MfifError(f"depth must be an array, a number or one of "
                        f"{', '.join(_DEPTH_KINDS)}, got {depth!r}")
    depth = np.asarray(depth)
    if depth.ndim == 0:
        depth = np.full(shape, depth)
    if depth.shape != tuple(shape):
        raise MfifError(f"depth has shape {depth.shape} but the specimen has {tuple(shape)}")
    if depth.dtype.kind not in "iuf" or not np.all(np.isfinite(depth)):
        raise MfifError("depth must be finite numbers (slice units)")
    return depth.astype(np.float32)


def _levels(levels_per_slice, spacing, wavelength, na, n) -> int:
    if levels_per_slice is None:
        # a quarter of the depth of field (lambda n / NA^2) or finer, at least 2 per slice
        return max(2, math.ceil(4 * spacing * na * na / (wavelength * n) - 1e-9))
    if (isinstance(levels_per_slice, bool) or not isinstance(levels_per_slice, (int, np.integer))
            or not 1 <= levels_per_slice <= 64):
        raise MfifError(f"levels_per_slice must be an integer from 1 to 64, "
                        f"got {levels_per_slice!r}")
    return int(levels_per_slice)


def _check_rungs(count: int, what: str) -> None:
    if count > _MAX_RUNGS:
        raise MfifError(f"the depth map would need {count} {what}; keep depths within a few "
                        f"stack heights of the slices or lower levels_per_slice")


def _noise_args(photons, read_noise, background=0.0):
    photons = _positive("photons", photons)
    read_noise = _positive("read_noise", read_noise, zero=True)
    background = _positive("background", background, zero=True)
    return photons, read_noise, background


def _resolve_specimen(spec, kind, shape, pixel_size, seed, cells):
    """(array, labels, pixel size) from a Specimen, an array or None (then a new specimen
    of ``shape`` with ``cells``)."""
    if spec is None:
        pixel_size = 0.16 if pixel_size is None else pixel_size
        spec = specimen(_shape(shape), pixel_size=pixel_size, cells=cells, seed=seed)
    if isinstance(spec, Specimen):
        if pixel_size is not None and not math.isclose(float(pixel_size), spec.pixel_size):
            raise MfifError(f"pixel_size {pixel_size} differs from the specimen's "
                            f"{spec.pixel_size}; leave it out to use the specimen's")
        array = spec.transmittance if kind == "brightfield" else spec.emission
        return array, spec.labels, spec.pixel_size
    name = "specimen (a " + ("transmittance)" if kind == "brightfield" else "emission density)")
    array = _image_2d(name, spec, complex_ok=kind == "brightfield")
    if kind == "fluorescence" and array.min() < 0:
        raise MfifError("specimen (an emission density) must not be negative")
    return array, np.zeros(array.shape, np.int32), 0.16 if pixel_size is None else pixel_size


def brightfield_stack(
    specimen: Specimen | np.ndarray | None = None,
    depth: np.ndarray | float | str | None = None,
    *,
    n_slices: int = 9,
    spacing: float = 1.0,
    shape: tuple[int, int] = (256, 256),
    wavelength: float = 0.55,
    pixel_size: float | None = None,
    na: float = 0.65,
    condenser_na: float = 0.3,
    medium_index: float = 1.0,
    source_rings: int = 2,
    levels_per_slice: int | None = None,
    noise: bool = True,
    photons: float = 3000.0,
    read_noise: float = 3.0,
    dtype=np.uint16,
    seed: int = 0,
) -> SyntheticStack:
    """A brightfield focal stack of a thin specimen under partially coherent light.

    Slice ``k`` has its focal plane at ``k * spacing``; a pixel of depth ``d`` (slice units)
    is seen at defocus ``(k - d) * spacing``, imaged by :func:`brightfield_image`. Phase
    objects (unstained cells) are nearly invisible in focus and grow bright and dark fringes
    on either side of it, reversed in contrast between above and below focus.

    The approximation: the whole specimen is imaged at a ladder of defocus values
    (``levels_per_slice`` per slice spacing) and each pixel takes, from the two rungs around
    its own defocus, the linear interpolation of their intensities. This is exact for a flat
    specimen at any one depth and a good approximation where depth changes slowly over the
    width of the defocus blur; near a depth step, the fringes of an object spill into its
    neighbours with the neighbours' defocus instead of their own, and one layer never shades
    another (a thin specimen; no multiple scattering).

    Parameters
    ----------
    specimen : Specimen or (Y, X) complex array, optional
        What to image: a :func:`specimen` (its pixel size is used) or a transmittance array.
        Default: ``specimen(shape, cells="mixed", seed=seed)``.
    depth : (Y, X) array, number or {"smooth", "steps", "objects"}, optional
        Depth of each pixel in slice units (0 = first slice; may be fractional or outside
        the stack). A number: a flat specimen at that depth. ``"smooth"`` (default):
        :func:`~napari_mfif.synthetic.smooth_depth`, a tilt plus two bumps spanning the stack;
        ``"steps"``: :func:`~napari_mfif.synthetic.step_depth`; ``"objects"``: each object of
        the specimen at its own random depth (the background takes the nearest object's).
    n_slices : int
        Number of slices (>= 2).
    spacing : float
        Distance between slices in micrometres.
    shape : (Y, X)
        Size when no specimen is given.
    wavelength : float
        Vacuum wavelength in micrometres (green light by default).
    pixel_size : float, optional
        Sampling in the sample plane, micrometres; default the specimen's (0.16 for a
        generated one or an array).
    na : float
        Numerical aperture of the objective (a 40x/0.65 dry one by default).
    condenser_na : float
        Numerical aperture of the condenser (sigma = 0.46 by default); smaller: stronger
        fringes. See :func:`brightfield_image`.
    medium_index : float
        Refractive index of the medium between specimen and objective.
    source_rings : int
        Rings of source points sampling the condenser (19 points for 2); cost grows with
        the points.
    levels_per_slice : int, optional
        Defocus rungs per slice spacing; default: enough for a quarter of the depth of field
        ``wavelength * n / na^2`` and at least 2. Cost grows with it.
    noise : bool
        Add camera noise (False: noise-free slices, e.g. to compare with ``sharp``).
    photons : float
        Expected photoelectrons per pixel of the full bright field (clear glass): shot noise
        is Poisson on the intensity times this.
    read_noise : float
        Gaussian read noise, electrons rms.
    dtype : uint8, uint16 or float32
        Output dtype. Clear glass is 150 in uint8, 2400 in uint16 (12-bit data, room for
        bright fringes) and 1.0 in float32; integer values are rounded and clipped.
    seed : int
        Seed of the specimen, the depth map and the noise.

    Returns
    -------
    SyntheticStack
        ``stack`` (Z, Y, X); ``sharp``: the specimen with every pixel in focus, same
        illumination and scale, no noise; ``depth`` (Y, X) float32 in slice units.
    """
    n_slices = _n_slices(n_slices)
    spacing = _positive("spacing", spacing)
    dt = _dtype(dtype)
    photons, read_noise, _ = _noise_args(photons, read_noise)
    rings = _rings(source_rings)
    array, labels, pixel_size = _resolve_specimen(specimen, "brightfield", shape, pixel_size,
                                                  seed, "mixed")
    wavelength, pixel_size, na, n, condenser_na = _optics(wavelength, pixel_size, na,
                                                          medium_index, condenser_na)
    depth = _depth_map(depth, array.shape, n_slices, labels, seed)
    m = _levels(levels_per_slice, spacing, wavelength, na, n)

    # the defocus ladder (slice units, multiples of 1/m) covering every pixel of every slice
    lo = min(math.floor(m * (0 - float(depth.max()))), 0)
    hi = max(math.ceil(m * (n_slices - 1 - float(depth.min()))), 0)
    _check_rungs(hi - lo + 1, "defocus rungs")
    ladder = np.arange(lo, hi + 1) / m
    if len(ladder) < 2:
        ladder = np.array([ladder[0], ladder[0] + 1 / m])
    images = _abbe(array, ladder * spacing, wavelength, pixel_size, na, n, condenser_na, rings)

    white = _WHITE[dt]
    rng = np.random.default_rng(seed + 2)
    slices = np.empty((n_slices,) + array.shape, np.float32)
    for k in range(n_slices):
        pos = np.clip((k - depth) * m - lo, 0, len(ladder) - 1)
        i0 = np.minimum(np.floor(pos).astype(np.intp), len(ladder) - 2)
        frac = (pos - i0).astype(np.float32)
        a = np.take_along_axis(images, i0[None], 0)[0]
        b = np.take_along_axis(images, i0[None] + 1, 0)[0]
        intensity = (1 - frac) * a + frac * b
        if noise:
            electrons = rng.poisson(np.clip(intensity, 0, None) * photons).astype(np.float32)
            if read_noise:
                electrons += rng.normal(0, read_noise, intensity.shape).astype(np.float32)
            intensity = electrons / np.float32(photons)
        slices[k] = intensity * np.float32(white)
    sharp = images[-lo] * np.float32(white)
    return SyntheticStack(stack=to_dtype(slices, dt), sharp=to_dtype(sharp, dt), depth=depth)


def reflected_stack(
    specimen: Specimen | np.ndarray | None = None,
    depth: np.ndarray | float | str | None = None,
    *,
    n_slices: int = 9,
    shape: tuple[int, int] = (256, 256),
    wavelength: float = 0.55,
    pixel_size: float | None = None,
    na: float = 0.5,
    condenser_na: float = 0.35,
    seed: int = 0,
    **kwargs,
) -> SyntheticStack:
    """A reflected-light (epi-illumination) focal stack of a flat reflecting specimen: a
    :func:`reflector` (pads and traces on a substrate; default 0.25 um pixels) imaged as
    :func:`brightfield_stack` images a thin specimen (see :func:`reflector` for why that is
    the same thing). ``depth`` defaults to a flat specimen in the middle of the stack; a
    number outside ``0 .. n_slices - 1`` gives a stack with no slice in focus. The other
    keywords (spacing, photons, read_noise, noise, dtype, ...) are those of
    :func:`brightfield_stack`."""
    if specimen is None:
        specimen = reflector(shape, pixel_size=0.25 if pixel_size is None else pixel_size,
                             wavelength=wavelength, seed=seed)
        pixel_size = None
    if depth is None:
        depth = (n_slices - 1) / 2
    return brightfield_stack(specimen, depth, n_slices=n_slices, shape=shape,
                             wavelength=wavelength, pixel_size=pixel_size, na=na,
                             condenser_na=condenser_na, seed=seed, **kwargs)


def fluorescence_stack(
    specimen: Specimen | np.ndarray | None = None,
    depth: np.ndarray | float | str | None = None,
    *,
    n_slices: int = 9,
    spacing: float = 1.0,
    shape: tuple[int, int] = (256, 256),
    wavelength: float = 0.52,
    pixel_size: float | None = None,
    na: float = 0.75,
    medium_index: float = 1.0,
    levels_per_slice: int | None = None,
    noise: bool = True,
    photons: float = 200.0,
    background: float = 0.0,
    read_noise: float = 1.5,
    offset: float | None = None,
    gain: float = 1.0,
    dtype=np.uint16,
    seed: int = 0,
) -> SyntheticStack:
    """A widefield fluorescence focal stack: emitters at different depths, with the real
    out-of-focus haze.

    The emission density is split into thin layers by depth (``levels_per_slice`` layers per
    slice spacing; a pixel between two layers is shared between them linearly) and slice
    ``k`` is the sum over layers of the layer convolved with :func:`psf` at defocus
    ``(k * spacing - layer depth)``. For incoherent emitters this is the widefield image
    formation itself (scalar, aberration-free; no absorption or scattering in the
    specimen), so every slice carries the diffuse light of all the objects out of focus,
    and the total light of each slice equals that of the emitters (periodic boundaries).

    Parameters
    ----------
    specimen : Specimen or (Y, X) array, optional
        What to image: a :func:`specimen` (its emission) or an emission density (>= 0).
        Default: ``specimen(shape, cells="nucleated", seed=seed)``.
    depth : (Y, X) array, number or {"smooth", "steps", "objects"}, optional
        Depth of each pixel in slice units, as for :func:`brightfield_stack`.
    n_slices : int
        Number of slices (>= 2).
    spacing : float
        Distance between slices in micrometres.
    shape : (Y, X)
        Size when no specimen is given.
    wavelength : float
        Emission wavelength in micrometres (0.52, GFP-like).
    pixel_size : float, optional
        Sampling in the sample plane, micrometres; default the specimen's (0.16 for a
        generated one or an array).
    na : float
        Numerical aperture of the objective (a 40x/0.75 dry one by default).
    medium_index : float
        Refractive index of the immersion medium.
    levels_per_slice : int, optional
        Depth layers per slice spacing; default: a quarter of the depth of field or finer,
        at least 2.
    noise : bool
        Add camera noise (False: noise-free slices).
    photons : float
        Expected photoelectrons at the brightest pixel of the in-focus image (``sharp``);
        low counts give the strong shot noise of dim fluorescence.
    background : float
        Uniform haze (autofluorescence, stray light) in photoelectrons per pixel, added to
        every slice but not to ``sharp``.
    read_noise : float
        Gaussian read noise, electrons rms.
    offset : float, optional
        Camera offset in ADU (integer dtypes); default 100 for uint16, 10 for uint8.
    gain : float
        ADU per electron (integer dtypes).
    dtype : uint8, uint16 or float32
        Output dtype. Integers: ``offset + gain * electrons``, rounded and clipped; float32:
        electrons / ``photons`` (1.0 = the in-focus peak, no offset).
    seed : int
        Seed of the specimen, the depth map and the noise.

    Returns
    -------
    SyntheticStack
        ``stack`` (Z, Y, X); ``sharp``: every emitter in focus (the in-focus PSF only, no
        out-of-focus light, no background, no noise), same scale; ``depth`` (Y, X) float32
        in slice units.
    """
    n_slices = _n_slices(n_slices)
    spacing = _positive("spacing", spacing)
    dt = _dtype(dtype)
    photons, read_noise, background = _noise_args(photons, read_noise, background)
    gain = _positive("gain", gain)
    offset = _OFFSET[dt] if offset is None else _positive("offset", offset, zero=True)
    array, labels, pixel_size = _resolve_specimen(specimen, "fluorescence", shape, pixel_size,
                                                  seed, "nucleated")
    wavelength, pixel_size, na, n, _ = _optics(wavelength, pixel_size, na, medium_index)
    depth = _depth_map(depth, array.shape, n_slices, labels, seed)
    m = _levels(levels_per_slice, spacing, wavelength, na, n)
    emission = array.astype(np.float32)

    # depth layers at multiples of 1/m slices; a pixel is shared by the two around it
    pos = depth.astype(np.float64) * m
    base = math.floor(float(pos.min()))
    _check_rungs(math.floor(float(pos.max())) - base + 2, "depth layers")
    i0 = np.floor(pos).astype(np.intp) - base
    frac = (pos - np.floor(pos)).astype(np.float32)
    layers = {}
    for i in np.unique(i0):
        for j, wgt in ((i, np.where(i0 == i, 1 - frac, np.float32(0))),
                       (i + 1, np.where(i0 == i, frac, np.float32(0)))):
            if np.any(wgt):
                part = emission * wgt
                layers[j] = layers[j] + part if j in layers else part
    spectra = {j: np.fft.fft2(layer) for j, layer in layers.items()}     # complex64
    # slice k, layer j: defocus (k m - base - j) / m slices; the PSF is even in defocus
    pairs: dict[int, list[tuple[int, int]]] = {}
    for k in range(n_slices):
        for j in spectra:
            pairs.setdefault(abs(k * m - base - j), []).append((k, j))
    acc = np.zeros((n_slices,) + array.shape, np.complex64)
    otf0 = None
    for a in sorted(pairs):
        kernel = _psf_stack(array.shape, [a / m * spacing], wavelength, pixel_size, na, n)[0]
        otf = np.fft.fft2(kernel).real.astype(np.float32)
        if a == 0:
            otf0 = otf
        for k, j in pairs[a]:
            acc[k] += spectra[j] * otf
    if otf0 is None:
        otf0 = np.fft.fft2(_psf_stack(array.shape, [0.0], wavelength, pixel_size, na,
                                      n)[0]).real.astype(np.float32)
    sharp = np.fft.ifft2(np.fft.fft2(emission) * otf0).real.astype(np.float64)
    slices = np.fft.ifft2(acc).real.astype(np.float64)
    peak = float(sharp.max())
    scale = photons / peak if peak > 0 else photons
    sharp *= scale
    slices *= scale

    rng = np.random.default_rng(seed + 2)
    if background:
        slices += background
    if noise:
        for k in range(n_slices):
            slices[k] = rng.poisson(np.clip(slices[k], 0, None))
            if read_noise:
                slices[k] += rng.normal(0, read_noise, slices[k].shape)
    if dt.kind == "f":   # 1.0 = the in-focus peak
        stack, truth = slices / photons, sharp / photons
    else:
        stack, truth = offset + gain * slices, offset + gain * sharp
    return SyntheticStack(stack=to_dtype(stack, dt), sharp=to_dtype(truth, dt), depth=depth)
