"""Synthetic focal stacks with ground truth, for tests, sample data and benchmarks.

A stack is rendered from a sharp image and a depth map (in slice units): slice ``k`` shows
each pixel blurred by a Gaussian of sigma ``blur_per_slice * |k - depth|``, so each pixel
is sharpest in the slice nearest its depth. This is the thin-lens picture with a Gaussian
point-spread function; real microscope defocus differs (rings, haze), which is why the
real stacks in the benchmarks matter too.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi
from scipy.special import expit

from ._errors import MfifError
from .stack import to_dtype


@dataclass
class SyntheticStack:
    """A rendered focal stack and its ground truth.

    Attributes
    ----------
    stack : ndarray, shape (Z, Y, X)
        The slices, in the requested dtype.
    sharp : ndarray, shape (Y, X)
        The all-in-focus ground truth, same dtype and intensity scale as ``stack``.
    depth : ndarray of float32, shape (Y, X)
        The true depth of each pixel in slice units (0 = first slice).
    """

    stack: np.ndarray
    sharp: np.ndarray
    depth: np.ndarray


def cells_image(shape=(256, 256), *, n_cells: int | None = None, seed: int = 0) -> np.ndarray:
    """A procedural 'cells on a textured background' image in [0, 1], float32.

    Bright round cells with granular interiors and dark rims over a faint fibrous
    background: texture at several scales everywhere, so focus is measurable at every
    pixel.
    """
    rng = np.random.default_rng(seed)
    h, w = shape
    if n_cells is None:
        n_cells = max(4, int(h * w / 2500))

    def band(sigma_lo, sigma_hi):
        noise = rng.standard_normal(shape).astype(np.float32)
        b = ndi.gaussian_filter(noise, sigma_lo) - ndi.gaussian_filter(noise, sigma_hi)
        return b / (b.std() + 1e-12)

    image = 0.35 + 0.06 * band(1.0, 4.0) + 0.05 * band(3.0, 12.0)
    granules = band(0.8, 2.5)
    for _ in range(n_cells):
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        r = rng.uniform(6, 16) * max(1.0, min(h, w) / 256) ** 0.5
        # draw each cell in its own box (1.6 radii around the centre) to stay cheap
        y0, y1 = max(int(cy - 1.6 * r), 0), min(int(cy + 1.6 * r) + 1, h)
        x0, x1 = max(int(cx - 1.6 * r), 0), min(int(cx + 1.6 * r) + 1, w)
        if y0 >= y1 or x0 >= x1:
            continue
        yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
        dist = np.hypot(yy - cy, xx - cx) / r
        body = expit((1 - dist) * 12)                       # soft disc
        rim = np.exp(-((dist - 1) ** 2) / 0.01)             # thin dark membrane
        nucleus = np.hypot(yy - cy - 0.2 * r, xx - cx + 0.1 * r) / (0.35 * r)
        box = image[y0:y1, x0:x1]
        box += body * (0.25 + 0.08 * granules[y0:y1, x0:x1]) - 0.2 * rim
        box -= 0.15 * expit((1 - nucleus) * 10)
    lo, hi = np.percentile(image, [0.5, 99.5])
    return np.clip((image - lo) / (hi - lo), 0, 1).astype(np.float32)


def fluorescence_image(shape=(256, 256), *, n_objects: int | None = None,
                       seed: int = 0) -> np.ndarray:
    """A procedural fluorescence-like image in [0, 1], float32: sparse bright nuclei and thin
    filaments on a dark, flat background (most pixels carry no structure, as in
    fluorescence, so only noise tells the slices apart there)."""
    rng = np.random.default_rng(seed)
    h, w = shape
    if n_objects is None:
        n_objects = max(3, int(h * w / 6000))
    image = np.zeros(shape, np.float32)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    for _ in range(n_objects):  # nuclei: bright ellipses with a grainy interior
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        ry, rx = rng.uniform(4, 10, size=2)
        inside = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2
        image += expit((1 - inside) * 6) * rng.uniform(0.4, 1.0)
    grain = ndi.gaussian_filter(rng.standard_normal(shape).astype(np.float32), 1.0)
    image *= 1 + 0.6 * grain / (grain.std() + 1e-12)
    for _ in range(max(2, n_objects // 2)):  # filaments: random walks drawn 1 px wide
        y, x = rng.uniform(0, h), rng.uniform(0, w)
        angle = rng.uniform(0, 2 * np.pi)
        for _ in range(int(rng.uniform(40, 160))):
            angle += rng.normal(0, 0.15)
            y, x = y + np.sin(angle), x + np.cos(angle)
            if 0 <= y < h and 0 <= x < w:
                image[int(y), int(x)] += 0.5
    image = ndi.gaussian_filter(image, 0.6)
    return np.clip(0.05 + image / max(float(np.percentile(image, 99.9)), 1e-6) * 0.9, 0, 1).astype(np.float32)


def smooth_depth(shape, n_slices: int, *, seed: int = 0) -> np.ndarray:
    """A smooth depth surface spanning slices 0 .. n_slices-1: a tilt plus two bumps."""
    rng = np.random.default_rng(seed + 1)
    h, w = shape
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    y /= max(h - 1, 1)
    x /= max(w - 1, 1)
    angle = rng.uniform(0, 2 * np.pi)
    surface = np.cos(angle) * x + np.sin(angle) * y
    for _ in range(2):
        cy, cx = rng.uniform(0.2, 0.8, size=2)
        s = rng.uniform(0.12, 0.25)
        surface += rng.choice([-1.0, 1.0]) * 0.8 * np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * s * s))
    surface -= surface.min()
    surface /= surface.max() + 1e-12
    return (surface * (n_slices - 1)).astype(np.float32)


def step_depth(shape, n_slices: int, *, n_regions: int = 6, seed: int = 0) -> np.ndarray:
    """A piecewise-constant depth map: a few regions (Voronoi cells) each at one whole slice,
    with sharp steps between them, as for objects at different heights."""
    rng = np.random.default_rng(seed + 3)
    h, w = shape
    centres = rng.uniform(0, 1, size=(n_regions, 2)) * [h, w]
    levels = rng.integers(0, n_slices, size=n_regions)
    levels[:2] = (0, n_slices - 1)  # span the whole stack
    yy, xx = np.mgrid[0:h, 0:w]
    d2 = (yy[..., None] - centres[:, 0]) ** 2 + (xx[..., None] - centres[:, 1]) ** 2
    return levels[np.argmin(d2, axis=-1)].astype(np.float32)


_RANGES = {
    np.dtype(np.uint8): (16.0, 240.0),
    np.dtype(np.uint16): (400.0, 3800.0),   # 12-bit camera data in a 16-bit container
}


def focal_stack(
    sharp: np.ndarray | None = None,
    depth: np.ndarray | None = None,
    *,
    n_slices: int = 8,
    shape: tuple[int, int] = (256, 256),
    blur_per_slice: float = 1.5,
    noise: float = 0.0,
    photons: float | None = None,
    haze: float = 0.0,
    dtype=np.uint16,
    seed: int = 0,
) -> SyntheticStack:
    """Render a focal stack with known all-in-focus image and depth.

    Parameters
    ----------
    sharp : (Y, X) array in [0, 1], optional
        The in-focus scene; default :func:`cells_image`.
    depth : (Y, X) array, optional
        Depth of each pixel in slice units; default :func:`smooth_depth`.
    n_slices : int
        Number of slices Z (>= 2).
    shape : (Y, X)
        Image size when ``sharp`` is not given.
    blur_per_slice : float
        Gaussian sigma (px) added per slice of distance from a pixel's depth.
    noise : float
        Standard deviation of additive Gaussian noise, as a fraction of the intensity
        range (0 = none). The ground truth ``sharp`` is noise-free.
    photons : float, optional
        Poisson (shot) noise: the expected photon count at intensity 1 (e.g. 200 for a dim
        fluorescence image); applied before the Gaussian (read) noise.
    haze : float
        Out-of-focus light, as in widefield fluorescence: each slice also receives this
        fraction of the scene blurred far out of focus (Gaussian sigma 12 px), a smooth glow
        over the objects that is not in the ground truth.
    dtype : uint8, uint16 or float32
        Output dtype. uint8 spans 16..240, uint16 spans 400..3800 (12-bit data), floats
        span 0..1.
    seed : int
        Seed for the scene and the noise.
    """
    if n_slices < 2:
        raise MfifError(f"n_slices must be at least 2, got {n_slices}")
    dtype = np.dtype(dtype)
    if sharp is None:
        sharp = cells_image(shape, seed=seed)
    sharp = np.asarray(sharp, dtype=np.float32)
    if depth is None:
        depth = smooth_depth(sharp.shape, n_slices, seed=seed)
    depth = np.asarray(depth, dtype=np.float32)
    if depth.shape != sharp.shape:
        raise MfifError(f"depth has shape {depth.shape} but sharp has {sharp.shape}")

    # Blur the scene at a ladder of sigmas and, per pixel, interpolate between the two
    # rungs around the sigma that pixel needs in each slice.
    step = 0.25
    max_sigma = blur_per_slice * float(np.max(np.abs(np.arange(n_slices)[:, None, None] - depth)))
    levels = np.arange(0.0, max_sigma + 2 * step, step)
    ladder = [sharp] + [ndi.gaussian_filter(sharp, s, mode="reflect") for s in levels[1:]]
    rng = np.random.default_rng(seed + 2)
    lo, hi = _RANGES.get(dtype, (0.0, 1.0))
    slices = []
    glow = haze * ndi.gaussian_filter(sharp, 12.0, mode="reflect") if haze > 0 else 0.0
    for k in range(n_slices):
        sigma = blur_per_slice * np.abs(k - depth)
        pos = np.clip(sigma / step, 0, len(levels) - 1.000001)
        i0 = np.floor(pos).astype(np.intp)
        frac = (pos - i0).astype(np.float32)
        out = np.empty_like(sharp)
        for i in np.unique(i0):
            m = i0 == i
            out[m] = (1 - frac[m]) * ladder[i][m] + frac[m] * ladder[i + 1][m]
        out = out + glow
        if photons:
            out = (rng.poisson(np.clip(out, 0, None) * photons) / photons).astype(np.float32)
        if noise > 0:
            out = out + rng.normal(0, noise, out.shape).astype(np.float32)
        slices.append(lo + (hi - lo) * out)
    stack = to_dtype(np.stack(slices), dtype)
    truth = to_dtype(lo + (hi - lo) * sharp, dtype)
    return SyntheticStack(stack=stack, sharp=truth, depth=depth)


def fringe_stack(n_slices: int = 7, *, in_focus: int | None = None, shape=(160, 160),
                 fringe: float = 0.05, noise: float = 0.003, seed: int = 0) -> SyntheticStack:
    """A caricature of brightfield defocus: a focal stack whose defocused slices grow fringes.

    Round cells (radius 10 to 16 px) with a fine granular texture are in focus at slice
    ``in_focus`` (the middle one by default). A slice d planes away is blurred by a Gaussian
    of sigma 1.2 d px and grows a bright fringe just outside every cell edge and a dark one
    just inside, d px from the edge, 1.5 px wide (sigma), of contrast ``fringe`` * d: wider
    and, from d = 2 on, stronger than the in-focus texture, like the Becke lines of real
    brightfield stacks, which contrast-based focus measures take for focus. It is not a
    physical model (no pupil, no coherence); it only has the property that matters here.

    Returns float32 slices in [0, 1] with Gaussian noise of standard deviation ``noise``;
    ``sharp`` is the in-focus image without noise, ``depth`` is ``in_focus`` everywhere.
    """
    if n_slices < 2:
        raise MfifError(f"n_slices must be at least 2, got {n_slices}")
    k0 = n_slices // 2 if in_focus is None else int(in_focus)
    rng = np.random.default_rng(seed)
    h, w = shape
    yy, xx = np.mgrid[:h, :w]
    dist = np.full(shape, np.inf)
    for _ in range(max(1, round(9 * h * w / 160**2))):
        cy, cx = rng.uniform(20, h - 20), rng.uniform(20, w - 20)
        dist = np.minimum(dist, np.hypot(yy - cy, xx - cx) - rng.uniform(10, 16))
    inside = (dist < 0).astype(np.float32)
    texture = ndi.gaussian_filter(rng.standard_normal(shape), 0.7)
    sharp = (0.6 - 0.25 * ndi.gaussian_filter(inside, 0.7)
             + 0.06 * texture / texture.std() * inside).astype(np.float32)
    slices = []
    for k in range(n_slices):
        d = abs(k - k0)
        img = ndi.gaussian_filter(sharp, 1.2 * d) if d else sharp.copy()
        if d:
            img += fringe * d * np.exp(-0.5 * ((dist - d) / 1.5) ** 2)
            img -= fringe * d * np.exp(-0.5 * ((dist + d) / 1.5) ** 2)
        slices.append(img + noise * rng.standard_normal(shape))
    stack = np.clip(np.stack(slices), 0, 1).astype(np.float32)
    return SyntheticStack(stack=stack, sharp=sharp, depth=np.full(shape, k0, np.float32))


#: physical spacing of the bundled sample, (z, y, x) in micrometres
SAMPLE_SCALE = (2.0, 0.65, 0.65)


def sample_stack() -> SyntheticStack:
    """The bundled sample: a 10-slice 384 x 384 uint16 stack of synthetic cells with a
    little camera noise (made on the fly, deterministic; about 3 MB)."""
    return focal_stack(n_slices=10, shape=(384, 384), blur_per_slice=1.2, noise=0.004,
                       dtype=np.uint16, seed=2026)


#: physical spacing of the fluorescence sample, (z, y, x) in micrometres
FLUORESCENCE_SCALE = (1.0, 0.325, 0.325)
#: physical spacing of the brightfield sample, (z, y, x) in micrometres
BRIGHTFIELD_SCALE = (2.5, 0.5, 0.5)
#: absorbance (red, green, blue) per unit density of a purple, haematoxylin-like stain
_STAIN_ABSORBANCE = np.array([0.9, 1.6, 0.5], np.float32)


def fluorescence_sample() -> SyntheticStack:
    """A widefield-fluorescence-like sample: 10 slices of 320 x 320 uint16, sparse nuclei and
    filaments on a dark background, with out-of-focus haze, shot noise and read noise
    (made on the fly, deterministic; about 2 MB). The ground truth has no haze or noise."""
    sharp = fluorescence_image((320, 320), seed=7)
    return focal_stack(sharp, n_slices=10, blur_per_slice=1.4, haze=0.25, photons=400,
                       noise=0.002, dtype=np.uint16, seed=7)


def brightfield_sample() -> SyntheticStack:
    """A brightfield-like colour sample: 8 slices of 320 x 320 RGB uint8, stained cells on a
    bright background (made on the fly, deterministic; about 2.5 MB).

    The stain's density is a :func:`cells_image`; each colour channel transmits
    ``exp(-absorbance * density)`` and is rendered through focus with the same depth map.

    Returns
    -------
    SyntheticStack
        ``stack`` of shape (8, 320, 320, 3), ``sharp`` of shape (320, 320, 3), both uint8,
        and ``depth`` of shape (320, 320).
    """
    shape, n_slices, seed = (320, 320), 8, 11
    density = np.clip(cells_image(shape, seed=seed) - 0.25, 0, None) * 1.4
    depth = smooth_depth(shape, n_slices, seed=seed)
    transmitted = np.exp(-_STAIN_ABSORBANCE * density[..., None])
    channels = [focal_stack(transmitted[..., c], depth, n_slices=n_slices,
                            blur_per_slice=1.2, noise=0.006, dtype=np.uint8, seed=seed + c)
                for c in range(3)]
    return SyntheticStack(stack=np.stack([c.stack for c in channels], axis=-1),
                          sharp=np.stack([c.sharp for c in channels], axis=-1), depth=depth)
