"""Noise is not focus: flat, noisy areas take their height from textured neighbours."""

import numpy as np
import pytest
from scipy import ndimage as ndi

import napari_mfif as mf
from napari_mfif.stack import fill_flat_areas, noise_sigma
from napari_mfif.synthetic import cells_image, focal_stack

from conftest import psnr


@pytest.fixture(scope="module")
def flat_band():
    """Texture left and right on a tilted surface (slice 2 to 7), a flat band between, noise."""
    h, w = 96, 192
    sharp = cells_image((h, w), seed=5)
    band = slice(72, 120)
    sharp[:, band] = 0.5
    depth = np.tile(np.linspace(2, 7, w, dtype=np.float32), (h, 1))
    s = focal_stack(sharp, depth, n_slices=10, blur_per_slice=1.5, noise=0.03,
                    dtype=np.float32, seed=6)
    return s, band


def test_noise_sigma_measures_white_noise_under_texture():
    rng = np.random.default_rng(1)
    scene = np.stack([ndi.gaussian_filter(cells_image((128, 128), seed=k), 1.0) for k in range(3)])
    for sigma in (0.01, 0.05):
        noisy = scene + rng.normal(0, sigma, scene.shape).astype(np.float32)
        assert noise_sigma(noisy) == pytest.approx(sigma, rel=0.25)


def test_flat_noisy_band_follows_its_textured_neighbours(flat_band):
    s, band = flat_band
    inner = (slice(8, -8), slice(band.start + 8, band.stop - 8))
    # sml: the noise floor alone (dog's consistency check would also fix the band)
    plain = mf.fuse(s.stack, "sml", noise_floor=0)
    floored = mf.fuse(s.stack, "sml")  # the default noise floor
    err_plain = np.abs(plain.index_map[inner] - s.depth[inner])
    err_floor = np.abs(floored.index_map[inner] - s.depth[inner])
    # without the floor the band's height follows the noise; with it, the neighbours' surface
    assert err_plain.mean() > 1.5
    assert err_floor.mean() < 0.5 and np.percentile(err_floor, 95) < 1.0
    # textured areas keep their height
    textured = (slice(8, -8), slice(8, 56))
    assert np.abs(floored.index_map[textured] - s.depth[textured]).mean() < 0.5
    # and the band's noise is averaged away: closer to the truth than any one slice there
    best_slice = max(psnr(s.sharp[inner], sl[inner], 1.0) for sl in s.stack)
    assert psnr(s.sharp[inner], floored.image[inner], 1.0) > best_slice + 3
    assert psnr(s.sharp, floored.image, 1.0) > psnr(s.sharp, plain.image, 1.0)


def test_fill_keeps_confident_weights_and_sums_to_one():
    rng = np.random.default_rng(2)
    w = rng.random((5, 20, 30)).astype(np.float32)
    w /= w.sum(axis=0)
    conf = np.zeros((20, 30), np.float32)
    conf[:, :10] = 1
    out = fill_flat_areas(w, conf)
    assert np.allclose(out.sum(axis=0), 1, atol=1e-5)
    assert np.allclose(out[:, :, :10], w[:, :, :10])
    # nothing confident at all: the middle of the stack, not NaN
    mid = fill_flat_areas(w, np.zeros_like(conf))
    assert np.isfinite(mid).all() and np.allclose(np.tensordot(np.arange(5), mid, 1), 2, atol=0.1)
