"""Tests of the single-image scores the MFIF papers report: entropy and PIQE.

Known cases computed by hand (entropy of simple histograms, PIQE of constant images and of
images built block by block), a block-by-block transcription of MATLAB's ``piqe.m`` to check
the vectorised code against, and the expected directions on a natural image.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage
from skimage import data

from napari_mfif import MfifError
from napari_mfif.metrics import PiqeMaps, entropy, piqe, piqe_maps, to_gray


@pytest.fixture(scope="module")
def camera() -> np.ndarray:
    return data.camera()  # 512 x 512 uint8, 0..255


@pytest.fixture(scope="module")
def noisy(camera) -> np.ndarray:
    rng = np.random.default_rng(0)
    return np.clip(np.round(camera + rng.normal(0.0, 25.0, camera.shape)), 0, 255).astype(
        np.uint8
    )


@pytest.fixture(scope="module")
def blocky(camera) -> np.ndarray:
    """8 x 8 block means, JPEG-like blockiness at its worst."""
    means = camera.reshape(64, 8, 64, 8).mean(axis=(1, 3))
    return np.round(means).astype(np.uint8).repeat(8, axis=0).repeat(8, axis=1)


# ----------------------------------------------------------------------------- entropy


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32, np.float64])
def test_entropy_of_a_constant_image_is_zero(dtype):
    value = entropy(np.full((9, 13), 7, dtype=dtype))
    assert value == 0.0 and math.copysign(1.0, value) == 1.0  # +0.0, not -0.0
    assert type(value) is float


@pytest.mark.parametrize(
    "low, high, dtype",
    [(0, 255, np.uint8), (17, 18, np.uint8), (100, 40000, np.uint16), (-3.5, 1e-3, np.float64)],
)
def test_two_equally_frequent_levels_give_one_bit(low, high, dtype):
    image = np.full((8, 10), low, dtype=dtype)
    image[:, 5:] = high
    assert entropy(image) == pytest.approx(1.0, abs=1e-15)


def test_all_256_uint8_levels_equally_often_give_eight_bits():
    rng = np.random.default_rng(1)
    image = rng.permutation(np.arange(256, dtype=np.uint8).repeat(4)).reshape(32, 32)
    assert entropy(image) == pytest.approx(8.0, abs=1e-14)


def test_dyadic_histogram_gives_its_entropy():
    # p = 1/2, 1/4, 1/8, 1/8: H = 1/2 + 2/4 + 3/8 + 3/8 = 1.75 bits
    image = np.array([10] * 4 + [20] * 2 + [30] + [200], dtype=np.uint8).reshape(2, 4)
    assert entropy(image) == pytest.approx(1.75, abs=1e-15)


def test_uint8_entropy_is_that_of_the_plain_histogram(camera):
    # the min-max stretch to 0..255 never merges two uint8 levels, so a uint8 image of
    # narrow range keeps the entropy of its raw 256-bin histogram (MATLAB's entropy)
    narrow = (camera // 3 + 40).astype(np.uint8)
    _, counts = np.unique(narrow, return_counts=True)
    p = counts / counts.sum()
    assert entropy(narrow) == pytest.approx(float(-np.sum(p * np.log2(p))), abs=1e-12)


def test_float_and_uint16_are_binned_over_their_data_range(camera):
    # an affine copy of a full-range uint8 image falls into the same 256 bins
    assert camera.min() == 0 and camera.max() == 255
    reference = entropy(camera)
    assert entropy(camera * 0.0123 - 4.0) == pytest.approx(reference, abs=1e-12)
    assert entropy(camera.astype(np.uint16) * 3 + 1000) == pytest.approx(reference, abs=1e-12)
    # 1024 equally frequent float levels: 4 per bin, the end bins half-width (round()):
    # levels 0..1023 over [0, 1023] -> bin k holds the values in (k - 1/2, k + 1/2) * 1023/255
    levels = np.arange(1024, dtype=np.float64)
    bins = np.floor(levels * 255.0 / 1023.0 + 0.5).astype(int)
    p = np.bincount(bins, minlength=256) / 1024.0
    expected = float(-np.sum(p[p > 0] * np.log2(p[p > 0])))
    assert entropy(levels.reshape(32, 32)) == pytest.approx(expected, abs=1e-12)
    assert expected < 8.0


def test_entropy_of_rgb_uses_the_same_gray_as_the_other_metrics(camera):
    # (255, 0, 0) and (0, 130, 0) have the same rgb2gray level (76): one gray level, 0 bits
    rgb = np.zeros((4, 6, 3), dtype=np.uint8)
    rgb[:, :3, 0] = 255
    rgb[:, 3:, 1] = 130
    assert np.all(to_gray(rgb) == 76)
    assert entropy(rgb) == 0.0
    colour = np.stack([camera, camera[::-1], camera[:, ::-1]], axis=-1)
    assert entropy(colour) == entropy(to_gray(colour).astype(np.uint8))


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((0, 5)),
        np.array([[1.0, np.nan], [0.0, 1.0]]),
        np.zeros((4, 4, 4)),
        np.array([["a", "b"]]),
    ],
)
def test_entropy_rejects_bad_input(bad):
    with pytest.raises(MfifError):
        entropy(bad)


# ---------------------------------------------------------------- PIQE reference (loop)


def _gauss7(x: np.ndarray) -> np.ndarray:
    """imgaussfilt(x, 7/6, 'FilterSize', 7, 'Padding', 'replicate') with scipy:
    radius = int(truncate * sigma + 0.5) = int(3.5) = 3."""
    return ndimage.gaussian_filter(x, 7 / 6, mode="nearest", truncate=18 / 7)


def _reference_piqe(image_255: np.ndarray):
    """Block-by-block PIQE on a 0..255 gray image, transcribed from the steps of MATLAB's
    piqe.m (no vectorisation, scipy's Gaussian filter): score and the three block masks."""
    n = 16
    rows, cols = image_255.shape
    padded = np.pad(image_255, ((0, (n - rows % n) % n), (0, (n - cols % n) % n)), mode="edge")
    mu = _gauss7(padded)
    sigma = np.sqrt(np.abs(_gauss7(padded * padded) - mu * mu))
    mscn = (padded - mu) / (sigma + 1)
    shape = (padded.shape[0] // n, padded.shape[1] // n)
    active, artifact, noise = (np.zeros(shape, bool) for _ in range(3))
    total, count = 0.0, 0
    for bi in range(shape[0]):
        for bj in range(shape[1]):
            block = mscn[bi * n : (bi + 1) * n, bj * n : (bj + 1) * n]
            var = np.var(block, ddof=1)
            if not var > 0.1:
                continue
            active[bi, bj] = True
            count += 1
            impaired = False
            for edge in (block[0, :], block[:, -1], block[-1, :], block[:, 0]):
                for start in range(n - 6 + 1):
                    if np.std(edge[start : start + 6], ddof=1) < 0.1:
                        impaired = True
            centre = np.concatenate([block[:, 7], block[:, 8]])
            surround = np.delete(np.delete(block, 7, axis=1), 8, axis=1)  # MATLAB's quirk
            with np.errstate(divide="ignore", invalid="ignore"):
                ratio = np.std(centre, ddof=1) / np.std(surround, ddof=1)
                if np.isnan(ratio):
                    ratio = 0.0
                s = math.sqrt(var)
                beta = abs(s - ratio) / max(s, ratio)
            noisy = bool(s > 2 * beta)
            artifact[bi, bj], noise[bi, bj] = impaired, noisy
            total += impaired * (1 - var) + noisy * var
    return (total + 1) / (count + 1) * 100, active, artifact, noise


def _blocks(mask: np.ndarray) -> np.ndarray:
    """Per-pixel block mask -> one value per 16 x 16 block (the top-left pixel's)."""
    return mask[::16, ::16]


def test_piqe_matches_the_block_by_block_transcription(camera, noisy, blocky):
    rng = np.random.default_rng(3)
    odd = camera[5:200, 17:333]  # 195 x 316: padded on both axes
    smooth = np.round(ndimage.gaussian_filter(rng.uniform(0, 255, (96, 80)), 2)).astype(np.uint8)
    for image in (camera, noisy, blocky, odd, smooth):
        maps = piqe_maps(image)
        score, active, artifact, noise = _reference_piqe(image.astype(np.float64))
        assert maps.score == pytest.approx(score, abs=1e-9)
        assert np.array_equal(_blocks(maps.activity_mask), active)
        assert np.array_equal(_blocks(maps.artifact_mask), artifact)
        assert np.array_equal(_blocks(maps.noise_mask), noise)
        assert maps.activity_mask.shape == image.shape
        assert maps.artifact_mask.shape == maps.noise_mask.shape == image.shape


# ---------------------------------------------------------------- PIQE known cases


@pytest.mark.parametrize(
    "image",
    [
        np.zeros((64, 64), np.uint8),
        np.full((37, 50), 200, np.uint8),
        np.full((16, 16), 40000, np.uint16),
        np.full((20, 30), 0.25),
        np.full((33, 17, 3), 9, np.uint8),
    ],
)
def test_piqe_without_active_blocks_is_100(image):
    # no active block: (0 + C) / (0 + C) * 100 with C = 1, as MATLAB ("uniform -> 100")
    maps = piqe_maps(image)
    assert piqe(image) == maps.score == 100.0
    assert not maps.activity_mask.any()
    assert np.isnan(maps.block_distortion).all()


def _checker_block() -> np.ndarray:
    """A 16 x 16 block: an 8 x 8 0/255 checkerboard 4 px from every edge. Its MSCN
    coefficients reach 3 px, so the block edges stay exactly 0 (flat: a noticeable
    artifact) and nothing leaks into the neighbouring blocks."""
    block = np.zeros((16, 16))
    block[4:12, 4:12] = 255 * (np.indices((8, 8)).sum(axis=0) % 2)
    return block


def _mscn_variance_of_checker_block() -> float:
    image = np.zeros((48, 48))
    image[16:32, 16:32] = _checker_block()
    mu = _gauss7(image)
    sigma = np.sqrt(np.abs(_gauss7(image**2) - mu**2))
    return float(np.var(((image - mu) / (sigma + 1))[16:32, 16:32], ddof=1))


@pytest.mark.parametrize(
    "where", [[(0, 0)], [(1, 2), (3, 5)], [(0, 1), (1, 3), (2, 0), (3, 4), (3, 1)]]
)
def test_exactly_k_active_blocks_pool_as_the_formula_says(where):
    # a black 64 x 96 image (4 x 6 blocks) with the checkerboard in k blocks: exactly those
    # k blocks are active, each has a noticeable artifact (flat edges) and no noise, so
    # D = 1 - v for each and PIQE = (k (1 - v) + 1) / (k + 1) * 100
    image = np.zeros((64, 96), np.uint8)
    for bi, bj in where:
        image[bi * 16 : (bi + 1) * 16, bj * 16 : (bj + 1) * 16] = _checker_block()
    expected_active = np.zeros((4, 6), bool)
    expected_active[tuple(np.array(where).T)] = True
    v = _mscn_variance_of_checker_block()
    assert 0.3 < v < 0.33  # active (> 0.1), comfortably
    k = len(where)
    maps = piqe_maps(image)
    assert np.array_equal(_blocks(maps.activity_mask), expected_active)
    assert np.array_equal(maps.artifact_mask, maps.activity_mask)
    assert not maps.noise_mask.any()
    assert np.allclose(maps.block_distortion[expected_active], 1 - v, rtol=0, atol=1e-12)
    assert maps.score == pytest.approx((k * (1 - v) + 1) / (k + 1) * 100, abs=1e-9)


def test_active_blocks_without_distortion_give_100_over_n_plus_1():
    # faint uniform noise with strong vertical lines through every block's centre columns:
    # all 16 blocks active, no flat edge segment, and the centre/surround contrast far from
    # the block sigma (no noise): every D = 0, PIQE = (0 + 1) / (16 + 1) * 100
    # (margins, seed 1: block variances >= 0.46 > 0.1, edge-segment stds >= 0.31 > 0.1,
    # 2 beta - sigma >= 0.42 > 0)
    rng = np.random.default_rng(1)
    image = 100 + rng.uniform(-10, 10, (64, 64))
    image[:, 7::16] += 200
    image[:, 8::16] -= 100
    image = np.clip(np.round(image), 0, 255).astype(np.uint8)
    maps = piqe_maps(image)
    assert maps.activity_mask.all()
    assert not maps.artifact_mask.any() and not maps.noise_mask.any()
    assert np.all(maps.block_distortion == 0)
    assert maps.score == pytest.approx(100 / 17, abs=1e-12)


def test_piqe_ranks_clean_above_noisy_and_blocky(camera, noisy, blocky):
    clean, with_noise, with_blocks = piqe(camera), piqe(noisy), piqe(blocky)
    for value in (clean, with_noise, with_blocks):
        assert type(value) is float
        assert 0.0 <= value <= 100.0
    assert with_noise > clean + 15
    assert with_blocks > clean + 15
    # and each distortion is caught by its own mask: noise almost everywhere in the noisy
    # image; flat 8-px runs on the edges of (nearly) every active block of the blocky one
    def share(mask, maps):
        return mask.sum() / maps.activity_mask.sum()

    clean_maps, noisy_maps, blocky_maps = piqe_maps(camera), piqe_maps(noisy), piqe_maps(blocky)
    assert share(noisy_maps.noise_mask, noisy_maps) > 0.95
    assert share(clean_maps.noise_mask, clean_maps) < 0.5
    assert share(blocky_maps.artifact_mask, blocky_maps) > 0.95
    assert share(clean_maps.artifact_mask, clean_maps) < 0.5


def test_piqe_intensity_scaling(camera):
    reference = piqe(camera)
    # uint16: MATLAB's im2double range, x / 257 is exactly the uint8 image again
    assert piqe(camera.astype(np.uint16) * 257) == reference
    # floats: own [min, max] by default; data_range=1 is MATLAB's [0, 1] convention
    assert piqe(camera.astype(np.float64)) == pytest.approx(reference, abs=1e-12)
    assert piqe(camera * 0.5 + 3.0) == pytest.approx(reference, abs=1e-12)
    assert piqe(camera / 255.0, data_range=1.0) == pytest.approx(reference, abs=1e-12)
    # a 12-bit camera in uint16: data_range puts its white at 255
    assert piqe(camera.astype(np.uint16) * 16, data_range=255 * 16) == pytest.approx(reference)


def test_piqe_of_rgb_uses_the_same_gray(camera):
    rgb = np.stack([camera, np.roll(camera, 3, axis=0), camera[:, ::-1]], axis=-1)
    value = piqe(rgb)
    assert type(value) is float
    assert value == piqe(to_gray(rgb).astype(np.uint8))
    maps = piqe_maps(rgb)
    assert isinstance(maps, PiqeMaps) and maps.activity_mask.shape == camera.shape


@pytest.mark.parametrize(
    "bad, kwargs",
    [
        (np.zeros((0, 4)), {}),
        (np.array([[1.0, np.inf], [0.0, 1.0]]), {}),
        (np.zeros((8, 8, 4)), {}),
        (np.zeros((8, 8)), {"data_range": 0}),
        (np.zeros((8, 8)), {"data_range": -1.0}),
    ],
)
def test_piqe_rejects_bad_input(bad, kwargs):
    with pytest.raises(MfifError):
        piqe(bad, **kwargs)
