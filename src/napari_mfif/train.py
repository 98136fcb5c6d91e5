"""Reproducible, offline training of the focus CNN (``python -m napari_mfif.train``).

The papers' recipe (Liu et al. 2017): sharp natural images in grayscale; blurred versions by
cascading a Gaussian blur (sigma 2, 7 x 7 kernel) five times; random 16 x 16 patch pairs
(clear, blurred) labelled by their order, both orders used. What microscopy adds here:

- slices of one stack share an intensity scale but not their noise: each pair gets one random
  gain and offset (8- to 16-bit-like ranges are normalised to [0, 1] before scoring), and each
  patch its own Poisson-Gaussian noise, so that noise is not taken for focus;
- a share of pairs with mild blur (sigma 0.6-1.5) so that near-focus slices are told apart;
- flat pairs (no texture in the sharp patch) are not used: nothing tells their order.

Sources, all offline and none of them evaluation data: the photographs and micrographs that
ship inside scikit-image (``skimage.data``), and procedurally generated cell images
(``napari_mfif.synthetic.cells_image``). Patches are drawn from held-out images for the
reported accuracy. Seeds are fixed; the same command on the same versions gives the same
weights.

    python -m napari_mfif.train --arch compact -o src/napari_mfif/focus/weights/compact.pt

The variants (``docs/cnn.md``) train on the same data with the same held-out protocol, e.g.
the dual-stream net as paper 004 trains it (Adam, binary cross-entropy, early stopping on the
validation loss)::

    python -m napari_mfif.train --arch dual --loss bce --early-stop 4 --steps 2500 \
        -o src/napari_mfif/focus/weights/dual.pt

Two options change the papers' pairs (both off for ``compact.pt`` and the other shipped
weights, both on for ``compact_boundary.pt``; docs/cnn.md measures them):
``--pair-noise shared`` gives both patches of a pair one camera's noise level (each still its
own noise), as two slices of one stack have; ``--boundary-fraction F`` puts a focus
boundary through a share F of the pairs (a random, slightly curved edge within 6 px of the
centre; one patch sharp on one side, the other on the other side) and labels them by the side
of the patch centre, for networks whose scores are placed at the patch centres
(``cnn`` parameter ``spread="centre"``) rather than spread over their patches. The shipped
``compact_boundary.pt`` (``training="boundary"``)::

    python -m napari_mfif.train --arch compact --steps 8000 --threads 2 \
        --boundary-fraction 0.5 --pair-noise shared \
        -o src/napari_mfif/focus/weights/compact_boundary.pt

Early stopping (``--early-stop PATIENCE``) evaluates the loss on validation pairs drawn from
the *training* images with their own seed (the held-out images stay untouched) every
``--val-every`` steps, stops after PATIENCE evaluations without improvement and keeps the
best weights.

Training data (``--data``): ``papers`` (default) is the recipe above, exactly as it made the
shipped ``compact.pt``. ``microscopy`` mixes into every batch (``--micro-fraction``, half by
default) pairs from physically simulated focal stacks (``napari_mfif.optics``), so that the
bright and dark fringes of defocused brightfield cells and the haze of out-of-focus
fluorescence are recognised as defocus: before training, a pool of small noise-free stacks
(``--micro-stacks`` brightfield and as many fluorescence stacks, 128 x 128, 5-11 slices) is
rendered, each with random optics, specimen and camera (``random_optics``); a pair is two
16 x 16 patches at one place of two slices of one stack (or of a slice and the in-focus
truth), labelled by which is nearer the true depth there, with fresh camera noise for each
patch. Pairs whose two defoci differ by less than a quarter of a depth of field
(``--micro-min-gap``; half of one for the held-out pairs), or that are flat in both slices,
are not used. The held-out accuracy on such pairs comes from stacks rendered with
seeds no training run uses, and is reported apart from the papers' pairs::

    python -m napari_mfif.train --arch compact --data microscopy --steps 4000 --threads 1 \
        -o src/napari_mfif/focus/weights/compact_microscopy.pt
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from .synthetic import cells_image

#: (skimage.data name, used for training or held out)
SKIMAGE_SOURCES = {
    "astronaut": "train", "brick": "train", "camera": "train", "chelsea": "train",
    "coffee": "train", "coins": "train", "grass": "train", "gravel": "train",
    "hubble_deep_field": "train", "immunohistochemistry": "train", "page": "train",
    "retina": "train", "text": "train", "cell": "train",
    "rocket": "heldout", "stereo_motorcycle": "heldout",
}
N_CELL_IMAGES = {"train": 6, "heldout": 2}
CTX = 16 + 2 * 4  # a 16 x 16 patch with its 4-pixel context margin
SCALES = (2, 3)  # extra copies of every source image, downscaled by these factors


def _gray01(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim == 3:
        image = image[..., :3] @ np.array([0.2989, 0.5870, 0.1140])
    image = image.astype(np.float32)
    lo, hi = np.percentile(image, [0.5, 99.5])
    return np.clip((image - lo) / max(hi - lo, 1e-6), 0, 1)


def source_images(split: str, seed: int) -> list[tuple[str, np.ndarray]]:
    """Grayscale [0, 1] source images for 'train' or 'heldout'."""
    import skimage.data

    images = []
    for name, use in SKIMAGE_SOURCES.items():
        if use == split:
            data = getattr(skimage.data, name)()
            images.append((name, _gray01(data[0] if isinstance(data, tuple) else data)))
    base = 1000 if split == "train" else 5000
    for i in range(N_CELL_IMAGES[split]):
        images.append((f"cells{base + seed + i}", cells_image((384, 384), seed=base + seed + i)))
    # the same scenes 2x and 3x smaller (anti-aliased): fine, near-Nyquist texture such as
    # woven or periodic structure is rare at the photographs' own scale
    from skimage.transform import rescale

    for name, img in list(images):
        for factor in SCALES:
            small = rescale(img, 1 / factor, anti_aliasing=True, order=1).astype(np.float32)
            if min(small.shape) > 2 * CTX:
                images.append((f"{name}/{factor}", small))
    return images


def cascade(image: np.ndarray, levels: int = 5, sigma: float = 2.0) -> list[np.ndarray]:
    """The paper's blur ladder: Gaussian (sigma 2, 7 x 7) applied 1..levels times."""
    out, cur = [], image
    for _ in range(levels):
        cur = ndi.gaussian_filter(cur, sigma, truncate=1.5, mode="reflect")  # radius 3: 7 x 7
        out.append(cur)
    return out


#: how the two patches of a papers' pair get their noise (``--pair-noise``): each its own
#: random camera, or one camera for both (slices of one stack share their camera)
PAIR_NOISE = ("independent", "shared")


class PairSampler:
    """Draws (A, B, label) patch pairs with context; label 1 when A is the sharp one."""

    def __init__(self, images, rng: np.random.Generator, mild_fraction: float = 0.3,
                 noise: bool = True, min_std: float = 0.02, equal_fraction: float = 0.0,
                 pair_noise: str = "independent", boundary_fraction: float = 0.0):
        if pair_noise not in PAIR_NOISE:
            raise ValueError(f"pair_noise must be one of {PAIR_NOISE}, got {pair_noise!r}")
        self.rng, self.mild_fraction, self.noise, self.min_std = rng, mild_fraction, noise, min_std
        self.equal_fraction, self.pair_noise = equal_fraction, pair_noise
        self.boundary_fraction = boundary_fraction
        self.images = [img for _, img in images if min(img.shape) > CTX]
        self.ladders = [cascade(img) for img in self.images]
        self.mild = [0.6, 0.9, 1.2, 1.5]
        self.mild_ladders = [[ndi.gaussian_filter(img, s, mode="reflect") for s in self.mild]
                             for img in self.images]

    def sample(self, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        rng = self.rng
        a = np.empty((n, CTX, CTX), np.float32)
        b = np.empty((n, CTX, CTX), np.float32)
        y = np.empty(n, np.float32)
        i = 0
        while i < n:
            k = rng.integers(len(self.images))
            img = self.images[k]
            r0 = rng.integers(0, img.shape[0] - CTX + 1)
            c0 = rng.integers(0, img.shape[1] - CTX + 1)
            sharp = img[r0:r0 + CTX, c0:c0 + CTX]
            equal = rng.random() < self.equal_fraction
            if not equal and sharp[4:-4, 4:-4].std() < self.min_std:
                continue
            if equal:
                # two copies of one patch at one focus level, each with its own noise:
                # neither is sharper (label 0.5), so equally sharp slices get equal scores
                level = rng.integers(-1, 5)
                sharp = sharp if level < 0 else self.ladders[k][level][r0:r0 + CTX, c0:c0 + CTX]
                blurred = sharp
            elif rng.random() < self.mild_fraction:
                blurred = self.mild_ladders[k][rng.integers(len(self.mild))]
            else:
                blurred = self.ladders[k][rng.integers(5)]
            if not equal:
                blurred = blurred[r0:r0 + CTX, c0:c0 + CTX]
            label = 1.0
            if not equal and self.boundary_fraction and rng.random() < self.boundary_fraction:
                if sharp[8:-8, 8:-8].std() < self.min_std:
                    continue
                sharp, blurred, label = self._boundary_pair(sharp, blurred)
            # one intensity scale for the pair (slices of one stack share it)
            gain, offset = rng.uniform(0.25, 1.0), rng.uniform(0.0, 0.3)
            pa, pb = sharp * gain + offset, blurred * gain + offset
            if self.noise and self.pair_noise == "shared":
                level = self._noise_level()
                pa, pb = self._noisy_at(pa, level), self._noisy_at(pb, level)
            elif self.noise:
                pa, pb = self._noisy(pa), self._noisy(pb)
            t = rng.integers(8)  # one of the 8 flips / rotations, the same for both
            pa, pb = _dihedral(pa, t), _dihedral(pb, t)
            if equal:
                a[i], b[i], y[i] = pa, pb, 0.5
            elif rng.random() < 0.5:
                a[i], b[i], y[i] = pa, pb, label
            else:
                a[i], b[i], y[i] = pb, pa, 1.0 - label
            i += 1
        return a, b, y

    def _boundary_pair(self, sharp: np.ndarray, blurred: np.ndarray):
        """Two patches with a focus boundary through them (as a slice pair has at the edge of
        an object): a random, slightly curved edge passes within 6 px of the centre; the
        first patch is sharp on one side and blurred on the other, the second the reverse.
        The label is the share of the central 2 x 2 pixels (the cell that one score of the
        dense map stands for) on the first patch's sharp side."""
        rng = self.rng
        yy, xx = np.mgrid[0:CTX, 0:CTX] - (CTX - 1) / 2
        theta = rng.uniform(0, 2 * np.pi)
        across = xx * np.cos(theta) + yy * np.sin(theta)
        along = -xx * np.sin(theta) + yy * np.cos(theta)
        mask = across - rng.uniform(-6, 6) + rng.uniform(-0.05, 0.05) * along ** 2 > 0
        c = CTX // 2
        label = float(mask[c - 1:c + 1, c - 1:c + 1].mean())
        return np.where(mask, sharp, blurred), np.where(mask, blurred, sharp), label

    def _noise_level(self) -> tuple[float, float] | None:
        """A random camera: (photons at intensity 1, read noise), or None (noise-free, a
        quarter of the draws). Noise from about 2 % to 18 % of full scale. Milder noise
        (1e2..1e4 photons, 40 % noise-free) scored better on clean patch pairs but worse on
        noisy stacks (docs/cnn.md), so the shipped weights keep this range."""
        rng = self.rng
        if rng.random() < 0.25:
            return None
        return 10 ** rng.uniform(1.5, 3.5), rng.uniform(0, 0.02)

    def _noisy(self, patch: np.ndarray) -> np.ndarray:
        """Poisson-Gaussian noise with the patch's own random camera (the ranges of
        :meth:`_noise_level`, drawn in the order that made the shipped weights)."""
        rng = self.rng
        if rng.random() < 0.25:
            return patch
        photons = 10 ** rng.uniform(1.5, 3.5)
        shot = rng.poisson(np.clip(patch, 0, None) * photons) / photons
        return (shot + rng.normal(0, rng.uniform(0, 0.02), patch.shape)).astype(np.float32)

    def _noisy_at(self, patch: np.ndarray, level: tuple[float, float] | None) -> np.ndarray:
        """Poisson-Gaussian noise of one camera ``level`` (:meth:`_noise_level`; None: none)."""
        if level is None:
            return patch
        photons, read = level
        shot = self.rng.poisson(np.clip(patch, 0, None) * photons) / photons
        return (shot + self.rng.normal(0, read, patch.shape)).astype(np.float32)


def _dihedral(p: np.ndarray, t: int) -> np.ndarray:
    p = np.rot90(p, t % 4)
    return p[:, ::-1] if t >= 4 else p


# ---------------------------------------------------------------------------------------
# microscopy pairs (``--data microscopy``): patch pairs from physically simulated stacks

#: the training-data recipes of ``--data``
DATA_CHOICES = ("papers", "microscopy")
#: simulated stacks of each kind (brightfield, fluorescence) in the training pool, and the
#: held-out pool's (rendered from other seeds)
MICRO_STACKS = {"train": 48, "heldout": 12}
#: size of the simulated stacks (small, so that rendering the pool takes seconds)
MICRO_SHAPE = (128, 128)
#: first specimen / noise seed of each pool, plus 1000 * --seed and the stack's number:
#: disjoint from each other and from the seeds the tests and benchmarks render (< 1000)
MICRO_SEED_BASE = {"train": 100_000, "heldout": 900_000}
MICRO_KINDS = ("brightfield", "fluorescence")


@dataclass
class SimStack:
    """One noise-free simulated stack of the pool, its truth and its camera.

    ``clean`` (Z, Y, X) and ``sharp`` (Y, X) are in the simulator's float32 units (brightfield:
    1.0 = clear glass; fluorescence: 1.0 = the in-focus peak, no background); ``camera`` holds
    what turns them into a noisy slice in the stack's dtype (:func:`_camera`); ``span`` is the
    (0.1, 99.9) % percentile pair of one noisy rendering of the whole stack, which scales it to
    [0, 1] as the ``cnn`` method does; ``dof`` the depth of field lambda n / NA^2 in um."""

    kind: str
    clean: np.ndarray
    sharp: np.ndarray
    depth: np.ndarray
    spacing: float
    dof: float
    camera: dict
    span: tuple
    seed: int
    optics: dict


def _log_uniform(rng, lo, hi) -> float:
    return float(10 ** rng.uniform(np.log10(lo), np.log10(hi)))


def random_optics(kind: str, rng: np.random.Generator, n_slices: int | None = None,
                  shape: tuple[int, int] = MICRO_SHAPE) -> dict:
    """Random microscope, specimen and camera settings for one simulated stack.

    Ranges: 5-11 slices; dry objectives NA 0.25-0.95, or (one stack in five) oil immersion
    (n 1.515) NA 0.9-1.4; brightfield condenser sigma 0.1-1.0, wavelength 0.45-0.65 um;
    fluorescence emission 0.45-0.68 um; slice spacing 0.4-2.5 depths of field (log-uniform);
    pixel 0.45-1.0 of the largest the optics allow; red, nucleated or mixed cells of
    5-12 um with 0-2x the default granules and fibres, phase 0.3-3 rad, absorption 1-70 %
    (log-uniform: unstained to stained); depth smooth or one flat plane, and in fluorescence
    also steps or per object;
    brightfield 300-30000 photons at clear glass, read noise 0-5 e-; fluorescence 30-3000
    photons at the in-focus peak, background 0-30 e-, read noise 0.5-3 e-; uint8, uint16
    or float32."""
    n = int(rng.integers(5, 12)) if n_slices is None else int(n_slices)
    oil = rng.random() < 0.2
    medium = 1.515 if oil else 1.0
    na = rng.uniform(0.9, 1.4) if oil else rng.uniform(0.25, 0.95)
    if kind == "brightfield":
        wavelength = rng.uniform(0.45, 0.65)
        condenser = na * rng.uniform(0.1, 1.0)
    else:
        wavelength = rng.uniform(0.45, 0.68)
        condenser = 0.0
    dof = wavelength * medium / na**2
    spacing = dof * _log_uniform(rng, 0.4, 2.5)
    pixel_size = wavelength / (2 * (na + condenser)) * rng.uniform(0.45, 1.0)
    cells = str(rng.choice(["mixed", "rbc", "nucleated"]))
    cell_size = rng.uniform(5.0, 12.0)
    area = shape[0] * shape[1] * pixel_size**2
    spec = dict(pixel_size=pixel_size, cells=cells, cell_size=cell_size,
                n_cells=max(1, int(round(area / 200 * rng.uniform(0.5, 2.0)))),
                n_granules=int(round(area / 40 * rng.uniform(0.0, 2.0))),
                n_fibres=int(round(area / 400 * rng.uniform(0.0, 2.0))),
                phase=rng.uniform(0.3, 3.0), absorption=_log_uniform(rng, 0.01, 0.7))
    u = rng.random()
    if kind == "fluorescence" and u < 0.4:
        # depth steps: exact in fluorescence (one layer per depth); in brightfield the
        # simulator's depth-varying approximation would draw seams at the steps
        depth = "objects" if u < 0.25 else "steps"
    elif u < 0.7:
        depth = "smooth"
    else:
        depth = float(rng.uniform(0, n - 1))
    dtype = str(rng.choice(["uint8", "uint16", "float32"]))
    if kind == "brightfield":
        camera = dict(photons=_log_uniform(rng, 300, 30000), read_noise=rng.uniform(0, 5),
                      dtype=dtype)
    else:
        photons = _log_uniform(rng, 30, 3000)
        background = rng.uniform(0, 30)
        camera = dict(photons=photons, read_noise=rng.uniform(0.5, 3), background=background,
                      dtype=dtype, offset=10.0 if dtype == "uint8" else 100.0,
                      # a uint8 camera's gain keeps the brightest pixels below saturation
                      gain=min(1.0, 200 / (photons + background)) if dtype == "uint8" else 1.0)
    return dict(kind=kind, shape=list(shape), n_slices=n, spacing=spacing,
                wavelength=wavelength, na=na, condenser_na=condenser, medium_index=medium,
                dof=dof, depth=depth,
                specimen=spec, camera={k: (round(v, 6) if isinstance(v, float) else v)
                                       for k, v in camera.items()})


def render_stack(settings: dict, seed: int) -> SimStack:
    """Render the noise-free stack of :func:`random_optics` settings with
    :mod:`napari_mfif.optics` and measure its intensity span on one noisy copy."""
    from . import optics

    spec = optics.specimen(tuple(settings["shape"]), seed=seed, **settings["specimen"])
    common = dict(n_slices=settings["n_slices"], spacing=settings["spacing"],
                  wavelength=settings["wavelength"], na=settings["na"],
                  medium_index=settings["medium_index"], noise=False, dtype=np.float32,
                  seed=seed)
    if settings["kind"] == "brightfield":
        s = optics.brightfield_stack(spec, settings["depth"],
                                     condenser_na=settings["condenser_na"], **common)
    else:
        s = optics.fluorescence_stack(spec, settings["depth"], **common)
    sim = SimStack(kind=settings["kind"], clean=s.stack, sharp=s.sharp, depth=s.depth,
                   spacing=settings["spacing"], dof=settings["dof"], camera=settings["camera"],
                   span=(0.0, 1.0), seed=seed, optics=settings)
    noisy = _camera(sim, s.stack, np.random.default_rng(seed + 7))
    lo, hi = (float(v) for v in np.percentile(noisy, [0.1, 99.9]))
    sim.span = (lo, hi) if hi > lo else (lo, lo + 1.0)
    return sim


def _camera(sim: SimStack, clean: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A noisy copy of noise-free values, in the stack dtype's units (as float32): the
    camera model of :mod:`napari_mfif.optics` (Poisson shot noise, Gaussian read noise,
    rounding and clipping to the dtype), drawn afresh on every call."""
    from .optics import _WHITE

    cam = sim.camera
    dt = np.dtype(cam["dtype"])
    photons = cam["photons"]
    if sim.kind == "brightfield":
        e = rng.poisson(np.clip(clean, 0, None) * photons).astype(np.float32)
        e += rng.normal(0, cam["read_noise"], clean.shape).astype(np.float32)
        value = e * np.float32(_WHITE[dt] / photons)
    else:
        e = rng.poisson(np.clip(clean, 0, None) * photons + cam["background"]).astype(np.float32)
        e += rng.normal(0, cam["read_noise"], clean.shape).astype(np.float32)
        value = e / np.float32(photons) if dt.kind == "f" else cam["offset"] + cam["gain"] * e
    if dt.kind in "iu":
        info = np.iinfo(dt)
        value = np.clip(np.rint(value), info.min, info.max)
    return value.astype(np.float32)


def _clean_scale(sim: SimStack) -> float:
    """Normalised [0, 1] units per noise-free unit (to judge flatness without noise)."""
    from .optics import _WHITE

    cam = sim.camera
    dt = np.dtype(cam["dtype"])
    if sim.kind == "brightfield":
        unit = _WHITE[dt]
    else:
        unit = 1.0 if dt.kind == "f" else cam["gain"] * cam["photons"]
    return unit / (sim.span[1] - sim.span[0])


def microscopy_pool(split: str, seed: int, n_stacks: int | None = None,
                    log=None) -> list[SimStack]:
    """The simulated stacks of one split ('train' or 'heldout'): ``n_stacks`` brightfield and
    as many fluorescence stacks (default :data:`MICRO_STACKS`), each with its own random
    settings (:func:`random_optics`) and specimen seed ``MICRO_SEED_BASE[split] + 1000 * seed
    + i``."""
    n_stacks = MICRO_STACKS[split] if n_stacks is None else n_stacks
    base = MICRO_SEED_BASE[split] + 1000 * seed
    pool = []
    for i in range(n_stacks):
        for j, kind in enumerate(MICRO_KINDS):
            stack_seed = base + 2 * i + j
            settings = random_optics(kind, np.random.default_rng(stack_seed))
            pool.append(render_stack(settings, stack_seed))
    if log is not None:
        log(f"  rendered {len(pool)} simulated stacks ({split}, seeds {base}-"
            f"{base + 2 * n_stacks - 1})")
    return pool


class MicroscopyPairSampler:
    """(A, B, label) pairs of 16 x 16 patches (with context) at one place of two slices of
    one simulated stack, label 1 when A is nearer the true depth there.

    A pair is used when, over the patch's 16 x 16 core, the same slice is nearer the depth at
    90 % of the pixels or more and the two defoci differ by at least ``min_gap`` depths of
    field on average, and when at least one of the two noise-free patches has some contrast
    (std >= ``min_std`` of the stack's [0, 1] range): a flat background in both says nothing.
    A share ``sharp_fraction`` of the pairs takes the in-focus ground truth (``sharp``, with
    the same camera noise) for one of them; ``equal_fraction`` are one patch twice with its
    own noise each (label 0.5). Each patch gets fresh camera noise; both share one random
    gain and offset and one of the 8 flips / rotations."""

    def __init__(self, pool: list[SimStack], rng: np.random.Generator, min_gap: float = 0.5,
                 min_std: float = 0.02, sharp_fraction: float = 0.1,
                 equal_fraction: float = 0.0):
        self.pool, self.rng = pool, rng
        self.min_gap, self.min_std = min_gap, min_std
        self.sharp_fraction, self.equal_fraction = sharp_fraction, equal_fraction
        self.scale = [_clean_scale(s) for s in pool]

    def sample(self, n: int, kinds: np.ndarray | None = None, info: np.ndarray | None = None):
        """``n`` pairs. With ``kinds`` (an int array of length n), the index in
        :data:`MICRO_KINDS` of each pair's stack is written there; with ``info`` (an int array
        (n, 5)), where each pair comes from: the stack's index in the pool, the slices of A
        and B (-1: the in-focus ground truth), the patch's top-left corner (row, column) with
        its context, before the flip / rotation."""
        rng = self.rng
        a = np.empty((n, CTX, CTX), np.float32)
        b = np.empty((n, CTX, CTX), np.float32)
        y = np.empty(n, np.float32)
        i = tries = 0
        core = np.s_[4:-4, 4:-4]
        while i < n:
            tries += 1
            if tries > 1000 * (n + 10):
                raise RuntimeError("the simulated stacks give no usable patch pairs (flat, or "
                                   "no two slices far enough apart in focus)")
            k = rng.integers(len(self.pool))
            sim = self.pool[k]
            z, h, w = sim.clean.shape
            r0 = rng.integers(0, h - CTX + 1)
            c0 = rng.integers(0, w - CTX + 1)
            win = np.s_[r0:r0 + CTX, c0:c0 + CTX]
            if rng.random() < self.equal_fraction:
                first = second = rng.integers(z)
                pa = pb = sim.clean[first][win]
                label = 0.5
            else:
                if rng.random() < self.sharp_fraction:
                    first, second = -1, rng.integers(z)
                else:
                    first, second = rng.integers(z), rng.integers(z - 1)
                    second += second >= first
                depth = sim.depth[win][core]
                da = np.zeros_like(depth) if first < 0 else np.abs(first - depth)
                db = np.abs(second - depth)
                gap = (db - da) * (sim.spacing / sim.dof)  # > 0 where A is nearer focus
                mean_gap = float(gap.mean())
                if np.mean(gap > 0) >= 0.9 and mean_gap >= self.min_gap:
                    label = 1.0
                elif np.mean(gap < 0) >= 0.9 and mean_gap <= -self.min_gap:
                    label = 0.0
                else:
                    continue
                pa = (sim.sharp if first < 0 else sim.clean[first])[win]
                pb = sim.clean[second][win]
                if max(pa[core].std(), pb[core].std()) * self.scale[k] < self.min_std:
                    continue
            lo, hi = sim.span
            pa = (_camera(sim, pa, rng) - lo) / (hi - lo)
            pb = (_camera(sim, pb, rng) - lo) / (hi - lo)
            gain, offset = rng.uniform(0.5, 1.0), rng.uniform(0.0, 0.2)
            t = rng.integers(8)
            pa, pb = _dihedral(pa * gain + offset, t), _dihedral(pb * gain + offset, t)
            if label != 0.5 and rng.random() < 0.5:
                pa, pb, label = pb, pa, 1.0 - label
                first, second = second, first
            a[i], b[i], y[i] = pa, pb, label
            if kinds is not None:
                kinds[i] = MICRO_KINDS.index(sim.kind)
            if info is not None:
                info[i] = (k, first, second, r0, c0)
            i += 1
        return a, b, y


class MixedSampler:
    """Each batch: a share ``micro_fraction`` of microscopy pairs, the rest the papers'."""

    def __init__(self, papers: PairSampler, micro: MicroscopyPairSampler, micro_fraction: float):
        self.papers, self.micro, self.micro_fraction = papers, micro, micro_fraction

    def sample(self, n: int):
        m = int(round(n * self.micro_fraction))
        pa, pb, py = self.papers.sample(n - m)
        ma, mb, my = self.micro.sample(m)
        return (np.concatenate([pa, ma]), np.concatenate([pb, mb]), np.concatenate([py, my]))


def microscopy_heldout_set(seed: int = 0, n_pairs: int = 20000, n_stacks: int | None = None):
    """Held-out microscopy pairs (from the held-out pool, stacks rendered from seeds no
    training run uses) and the kind of each: (a, b, y, kinds)."""
    pool = microscopy_pool("heldout", seed, n_stacks)
    kinds = np.empty(n_pairs, np.intp)
    sampler = MicroscopyPairSampler(pool, np.random.default_rng(seed + 96))
    a, b, y = sampler.sample(n_pairs, kinds)
    return a, b, y, kinds


def evaluate_microscopy(net, heldout) -> dict:
    """Held-out accuracy on microscopy pairs, overall and per kind: {name: (pair, score)}."""
    a, b, y, kinds = heldout
    out = {"all": evaluate(net, a, b, y)}
    for j, kind in enumerate(MICRO_KINDS):
        sel = kinds == j
        if sel.any():
            out[kind] = evaluate(net, a[sel], b[sel], y[sel])
    return out


def train(arch: str = "compact", steps: int = 3000, batch: int = 128, lr: float = 1e-3,
          optimizer: str = "adam", seed: int = 0, threads: int | None = None,
          heldout_pairs: int = 20000, equal_fraction: float = 0.15,
          loss: str = "ce", early_stop: int = 0, val_every: int = 0, val_pairs: int = 4000,
          data: str = "papers", micro_fraction: float = 0.5, micro_stacks: int | None = None,
          micro_min_gap: float = 0.25, pair_noise: str = "independent",
          boundary_fraction: float = 0.0, log=print) -> tuple[object, dict]:
    """Train a FocusNet; returns the net and a record of the run (accuracy, time, args).

    ``data="papers"``: the papers' Gaussian-blur pairs (with the microscopy additions of the
    module docstring). ``data="microscopy"``: each batch takes a share ``micro_fraction`` of
    its pairs from physically simulated stacks (:class:`MicroscopyPairSampler` on
    :func:`microscopy_pool`, ``micro_stacks`` stacks of each kind, pairs at least
    ``micro_min_gap`` depths of field apart in focus) and the rest from the
    papers' pairs; the record then adds the held-out accuracy on microscopy pairs from stacks
    rendered with other seeds."""
    import torch

    from .focus.cnn import ARCHS, FocusNet, count_parameters

    if data not in DATA_CHOICES:
        raise ValueError(f"data must be one of {DATA_CHOICES}, got {data!r}")
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    spec = ARCHS[arch]
    net = FocusNet(spec.channels, spec.fc, streams=spec.streams, pool=spec.pool, input=spec.input)
    t0 = time.perf_counter()
    train_sampler = PairSampler(source_images("train", seed), rng, equal_fraction=equal_fraction,
                                pair_noise=pair_noise, boundary_fraction=boundary_fraction)
    micro_pool = micro_held = None
    if data == "microscopy":
        micro_pool = microscopy_pool("train", seed, micro_stacks, log)
        train_sampler = MixedSampler(
            train_sampler, MicroscopyPairSampler(micro_pool, rng, min_gap=micro_min_gap,
                                                 equal_fraction=equal_fraction),
            micro_fraction)
        micro_held = microscopy_heldout_set(seed, heldout_pairs, _heldout_stacks(micro_stacks))
    held = source_images("heldout", seed)
    # held-out pairs as the paper makes them (cascaded sigma-2 blur, no noise), and with
    # the microscopy additions (mild blur, gain/offset, Poisson-Gaussian noise)
    paper_set = PairSampler(held, np.random.default_rng(seed + 98), mild_fraction=0.0,
                            noise=False).sample(heldout_pairs)
    micro_set = PairSampler(held, np.random.default_rng(seed + 99)).sample(heldout_pairs)
    val_set = None
    if early_stop > 0:
        # validation pairs from the training images with their own generator
        val_rng = np.random.default_rng(seed + 97)
        val_sampler = PairSampler(source_images("train", seed), val_rng,
                                  equal_fraction=equal_fraction, pair_noise=pair_noise,
                                  boundary_fraction=boundary_fraction)
        if micro_pool is not None:
            val_sampler = MixedSampler(val_sampler, MicroscopyPairSampler(
                micro_pool, val_rng, min_gap=micro_min_gap, equal_fraction=equal_fraction),
                micro_fraction)
        val_set = val_sampler.sample(val_pairs)
        val_every = val_every or max(steps // 25, 1)
    if optimizer == "adam":
        opt = torch.optim.Adam(net.parameters(), lr=lr)
    else:  # the paper: SGD, momentum 0.9, weight decay 5e-4
        opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    log(f"train: {arch} ({count_parameters(net, 'all')} parameters), {steps} steps of {batch} "
        f"pairs, {optimizer} lr {lr}; data ready in {time.perf_counter() - t0:.1f} s")
    net.train()
    t_train = time.perf_counter()
    best = (float("inf"), 0, None)  # (validation loss, step, state) for early stopping
    stale, stopped_at, val_history = 0, None, []
    for step in range(1, steps + 1):
        a, b, y = train_sampler.sample(batch)
        loss_pair, loss_score = _losses(net, a, b, y, loss)
        total = loss_pair + loss_score
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()
        sched.step()
        if step % max(steps // 10, 1) == 0 or step == steps:
            log(f"  step {step}/{steps}  loss {loss_pair.item():.4f} + {loss_score.item():.4f}  "
                f"({time.perf_counter() - t_train:.0f} s)")
        if val_set is not None and (step % val_every == 0 or step == steps):
            v = validation_loss(net, *val_set, loss)
            val_history.append([step, round(v, 5)])
            if v < best[0]:
                best = (v, step, {k: t.detach().clone() for k, t in net.state_dict().items()})
                stale = 0
            else:
                stale += 1
                if stale >= early_stop:
                    stopped_at = step
                    log(f"  early stop at step {step}: no better validation loss for "
                        f"{early_stop} checks (best {best[0]:.4f} at step {best[1]})")
                    break
    if val_set is not None and best[2] is not None:
        net.load_state_dict(best[2])
    train_seconds = time.perf_counter() - t_train
    acc_pair, acc_score = evaluate(net, *paper_set)
    acc_pair_m, acc_score_m = evaluate(net, *micro_set)
    micro_acc = evaluate_microscopy(net, micro_held) if micro_held is not None else {}
    record = {
        "arch": arch, "steps": steps, "batch": batch, "lr": lr, "optimizer": optimizer,
        "seed": seed, "pairs_seen": (stopped_at or steps) * batch,
        "equal_fraction": equal_fraction,
        **({"pair_noise": pair_noise} if pair_noise != "independent" else {}),
        **({"boundary_fraction": boundary_fraction} if boundary_fraction else {}),
        "scales": list(SCALES),
        "heldout_pairs": heldout_pairs,
        "heldout_accuracy_pair_head": round(acc_pair, 5),
        "heldout_accuracy_score_head": round(acc_score, 5),
        "heldout_accuracy_pair_head_noisy_mild": round(acc_pair_m, 5),
        "heldout_accuracy_score_head_noisy_mild": round(acc_score_m, 5),
        **(_microscopy_record(micro_acc, micro_fraction, micro_stacks, micro_min_gap, seed,
                              heldout_pairs) if data == "microscopy" else {}),
        "train_seconds": round(train_seconds, 1),
        **({"loss": loss} if loss != "ce" else {}),
        **({"early_stop_patience": early_stop, "val_every": val_every, "val_pairs": val_pairs,
            "val_source": "training images, own seed", "stopped_at_step": stopped_at,
            "best_step": best[1], "best_val_loss": round(best[0], 5),
            "val_history": val_history} if val_set is not None else {}),
        "threads": torch.get_num_threads(),
        "torch": str(torch.__version__), "numpy": np.__version__, "python": sys.version.split()[0],
        "machine": platform.machine(),
        "train_images": [n for n, _ in source_images("train", seed)],
        "heldout_images": [n for n, _ in source_images("heldout", seed)],
    }
    log(f"held-out accuracy, paper pairs: pair head {acc_pair:.4f}, score head {acc_score:.4f}; "
        f"with noise and mild blur: {acc_pair_m:.4f}, {acc_score_m:.4f}; "
        f"training took {train_seconds:.0f} s")
    for name, (p_acc, s_acc) in micro_acc.items():
        log(f"held-out accuracy, microscopy pairs ({name}): pair head {p_acc:.4f}, "
            f"score head {s_acc:.4f}")
    return net, record


def _heldout_stacks(micro_stacks: int | None) -> int:
    """The held-out pool's stacks per kind for ``--micro-stacks`` (a quarter as many; the
    default pool's when None)."""
    return MICRO_STACKS["heldout"] if micro_stacks is None else max(1, micro_stacks // 4)


def _microscopy_record(acc: dict, micro_fraction: float, micro_stacks, min_gap: float,
                       seed: int, heldout_pairs: int) -> dict:
    n_train = MICRO_STACKS["train"] if micro_stacks is None else micro_stacks
    n_held = _heldout_stacks(micro_stacks)
    record = {
        "data": "microscopy", "micro_fraction": micro_fraction,
        "micro_pool": {
            "kinds": list(MICRO_KINDS), "stacks_per_kind": n_train,
            "heldout_stacks_per_kind": n_held, "shape": list(MICRO_SHAPE),
            "train_seeds": [MICRO_SEED_BASE["train"] + 1000 * seed,
                            MICRO_SEED_BASE["train"] + 1000 * seed + 2 * n_train - 1],
            "heldout_seeds": [MICRO_SEED_BASE["heldout"] + 1000 * seed,
                              MICRO_SEED_BASE["heldout"] + 1000 * seed + 2 * n_held - 1],
            "min_gap_dof": min_gap, "heldout_min_gap_dof": 0.5, "min_std": 0.02,
            "sharp_fraction": 0.1,
        },
        "heldout_microscopy_pairs": heldout_pairs,
    }
    for name, (p_acc, s_acc) in acc.items():
        suffix = "microscopy" if name == "all" else name
        record[f"heldout_accuracy_pair_head_{suffix}"] = round(p_acc, 5)
        record[f"heldout_accuracy_score_head_{suffix}"] = round(s_acc, 5)
    return record


def _losses(net, a, b, y, loss: str = "ce"):
    """The two training losses of a batch of pairs (pair head, slice-score head)."""
    import torch
    import torch.nn.functional as F

    y_t = torch.from_numpy(y)
    logits, sa, sb = net(torch.from_numpy(a)[:, None], torch.from_numpy(b)[:, None])
    if loss == "bce":
        # binary cross-entropy on P(first in focus) = sigmoid(l0 - l1) (paper 004); the same
        # function of the logits as the 2-way softmax cross-entropy below
        loss_pair = F.binary_cross_entropy_with_logits(logits[:, 0] - logits[:, 1], y_t)
    else:
        # pair head: 2-way softmax, class 0 = "first is in focus" (soft targets: 0.5 for
        # equally sharp pairs)
        loss_pair = F.cross_entropy(logits, torch.stack([y_t, 1 - y_t], dim=1))
    # slice-score head: P(first in focus) = sigmoid(s_a - s_b), binary cross-entropy
    loss_score = F.binary_cross_entropy_with_logits(sa - sb, y_t)
    return loss_pair, loss_score


def validation_loss(net, a, b, y, loss: str = "ce", batch: int = 2048) -> float:
    """Mean (pair + score) loss over validation pairs."""
    import torch

    net.eval()
    total = 0.0
    with torch.inference_mode():
        for s in range(0, len(y), batch):
            lp, ls = _losses(net, a[s:s + batch], b[s:s + batch], y[s:s + batch], loss)
            total += (lp.item() + ls.item()) * len(y[s:s + batch])
    net.train()
    return total / len(y)


def evaluate(net, a: np.ndarray, b: np.ndarray, y: np.ndarray, batch: int = 2048):
    """Held-out patch accuracy of the pair head and of the slice-score head."""
    import torch

    net.eval()
    right_pair = right_score = 0
    with torch.inference_mode():
        for s in range(0, len(y), batch):
            logits, sa, sb = net(torch.from_numpy(a[s:s + batch])[:, None],
                                 torch.from_numpy(b[s:s + batch])[:, None])
            first = (logits[:, 0] > logits[:, 1]).numpy()
            right_pair += int(np.sum(first == (y[s:s + batch] > 0.5)))
            right_score += int(np.sum((sa > sb).numpy() == (y[s:s + batch] > 0.5)))
    net.train()
    return right_pair / len(y), right_score / len(y)


def main(argv=None) -> int:
    from .focus.cnn import ARCHS, save_weights

    p = argparse.ArgumentParser(prog="python -m napari_mfif.train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", default="compact", choices=list(ARCHS))
    p.add_argument("-o", "--output", required=True, help="weights file to write (.pt)")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--optimizer", choices=("adam", "sgd"), default="adam")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--heldout-pairs", type=int, default=20000,
                   help="held-out pairs per accuracy figure")
    p.add_argument("--equal-fraction", type=float, default=0.15,
                   help="share of equally sharp pairs (label 0.5)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--loss", choices=("ce", "bce"), default="ce",
                   help="pair-head loss: 2-way softmax cross-entropy (Liu 2017) or binary "
                        "cross-entropy on P(first in focus) (paper 004); the same function")
    p.add_argument("--early-stop", type=int, default=0, metavar="PATIENCE",
                   help="stop after PATIENCE validation checks without improvement and keep "
                        "the best weights (0 = off)")
    p.add_argument("--val-every", type=int, default=0,
                   help="steps between validation checks (default steps/25)")
    p.add_argument("--val-pairs", type=int, default=4000)
    p.add_argument("--data", choices=DATA_CHOICES, default="papers",
                   help="training pairs: papers (the papers' Gaussian-blur pairs, as the "
                        "shipped default weights) or microscopy (those mixed with pairs from "
                        "physically simulated brightfield and fluorescence stacks, "
                        "napari_mfif.optics)")
    p.add_argument("--micro-fraction", type=float, default=0.5,
                   help="with --data microscopy: share of each batch from simulated stacks")
    p.add_argument("--micro-stacks", type=int, default=None,
                   help="with --data microscopy: simulated stacks of each kind in the training "
                        f"pool (default {MICRO_STACKS['train']}; the held-out pool has a "
                        f"quarter as many, default {MICRO_STACKS['heldout']})")
    p.add_argument("--micro-min-gap", type=float, default=0.25,
                   help="with --data microscopy: least difference in defocus, in depths of "
                        "field, between the two slices of a training pair (held-out pairs: "
                        "always 0.5)")
    p.add_argument("--pair-noise", choices=PAIR_NOISE, default="independent",
                   help="papers' pairs: each patch with its own random camera noise "
                        "(independent, as the shipped compact.pt) or both patches with one "
                        "camera's noise, as two slices of one stack (shared)")
    p.add_argument("--boundary-fraction", type=float, default=0.0,
                   help="papers' pairs: share with a focus boundary through the patch, "
                        "labelled by the side its centre is on (0, as the shipped compact.pt)")
    p.add_argument("--overwrite", action="store_true")
    args = p.parse_args(argv)
    out = Path(args.output)
    if out.exists() and not args.overwrite:
        print(f"train: error: {out} exists (use --overwrite)", file=sys.stderr)
        return 2
    net, record = train(args.arch, args.steps, args.batch, args.lr, args.optimizer, args.seed,
                        args.threads, heldout_pairs=args.heldout_pairs,
                        equal_fraction=args.equal_fraction, loss=args.loss,
                        early_stop=args.early_stop, val_every=args.val_every,
                        val_pairs=args.val_pairs, data=args.data,
                        micro_fraction=args.micro_fraction, micro_stacks=args.micro_stacks,
                        micro_min_gap=args.micro_min_gap, pair_noise=args.pair_noise,
                        boundary_fraction=args.boundary_fraction)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".part")
    save_weights(net, tmp, args.arch, record)
    tmp.replace(out)
    out.with_suffix(".json").write_text(json.dumps(record, indent=1) + "\n")
    print(f"weights: {out.resolve()} ({out.stat().st_size / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
