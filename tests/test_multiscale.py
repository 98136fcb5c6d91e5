"""The sum-modified-Laplacian measure and the multi-scale methods (Laplacian pyramid, DWT):
answers checked against synthetic stacks with known ground truth and exact identities."""

import numpy as np
import pytest
import tifffile
from scipy import ndimage as ndi

import napari_mfif as mf
from napari_mfif.cli import main
from napari_mfif.focus.sml import sum_modified_laplacian
from napari_mfif.fusion import multiscale as ms
from napari_mfif.synthetic import cells_image, focal_stack

from conftest import psnr

MULTISCALE = ["laplacian_pyramid", "wavelet"]
NEW = ["sml"] + MULTISCALE
MODES = ["nway", "series"]


@pytest.mark.parametrize("method", NEW)
@pytest.mark.parametrize("mode", MODES)
def test_fused_beats_every_slice(synth, method, mode):
    res = mf.fuse(synth.stack, method=method, mode=mode)
    assert res.image.dtype == np.uint16 and res.image.shape == synth.sharp.shape
    fused_psnr = psnr(synth.sharp, res.image, 4095)
    slice_psnr = [psnr(synth.sharp, sl, 4095) for sl in synth.stack]
    assert fused_psnr > max(slice_psnr) + 6, (fused_psnr, slice_psnr)
    # the height map: within one slice of the truth on most textured pixels
    sharp = synth.sharp.astype(np.float32)
    energy = ndi.gaussian_filter(ndi.sobel(sharp, 0) ** 2 + ndi.sobel(sharp, 1) ** 2, 2)
    textured = energy > np.percentile(energy, 25)
    err = np.abs(res.index_map - synth.depth)[textured]
    assert np.mean(err <= 1.0) > 0.95, np.mean(err <= 1.0)


@pytest.mark.parametrize("method", MULTISCALE)
@pytest.mark.parametrize("mode", MODES)
def test_identical_slices_give_the_slice_back(method, mode):
    image = cells_image((61, 90), seed=4)
    res = mf.fuse(np.stack([image] * 4), method=method, mode=mode)
    np.testing.assert_allclose(res.image, image, atol=1e-5)
    for dtype, top in ((np.uint8, 255), (np.uint16, 65535)):
        ints = np.round(image * top).astype(dtype)
        out = mf.fuse(np.stack([ints] * 3), method=method, mode=mode).image
        assert out.dtype == dtype and np.array_equal(out, ints)


@pytest.mark.parametrize("shape", [(97, 131), (64, 64), (8, 8), (5, 3)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_pyramid_reconstructs_exactly(shape, dtype):
    image = np.random.default_rng(1).random(shape + (2,)).astype(dtype)
    levels = ms.pyramid_levels(shape, 5)
    pyramid = ms.laplacian_pyramid(image, levels)
    assert len(pyramid) == levels + 1 and pyramid[0].shape == image.shape
    assert min(pyramid[-1].shape[:2]) >= min(2, min(shape))
    np.testing.assert_allclose(ms.reconstruct_pyramid(pyramid), image, atol=1e-5)


@pytest.mark.parametrize("wavelet", ms.WAVELETS)
@pytest.mark.parametrize("shape", [(97, 131), (8, 8)])
def test_wavelet_transform_reconstructs_exactly(wavelet, shape):
    image = np.random.default_rng(2).random(shape).astype(np.float32)
    levels = ms.wavelet_levels(shape, wavelet, 5)
    coeffs = ms.wavelet_decompose(image, wavelet, levels)
    back = ms.wavelet_reconstruct(coeffs, wavelet, shape)
    assert back.shape == shape
    np.testing.assert_allclose(back, image, atol=1e-5)


def test_levels_clamp_to_the_image_size():
    assert ms.pyramid_levels((8, 8), 5) == 2          # 8 -> 4 -> 2
    assert ms.pyramid_levels((512, 300), 5) == 5
    assert ms.pyramid_levels((512, 300), 0) == 7       # 0: as many as the size allows
    assert ms.pyramid_levels((2, 40), 5) == 1          # at least one level
    assert ms.wavelet_levels((8, 8), "db2", 5) == 1
    assert ms.wavelet_levels((1024, 1024), "haar", 0) == 10


@pytest.mark.parametrize("method", NEW)
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
@pytest.mark.parametrize("shape", [(97, 131), (8, 8)])
def test_dtype_and_shape_are_kept(method, dtype, shape):
    s = focal_stack(n_slices=3, shape=shape, dtype=dtype, seed=6)
    for mode in MODES:
        res = mf.fuse(s.stack, method=method, mode=mode)
        assert res.image.dtype == dtype and res.image.shape == shape
        assert res.index_map.dtype == np.float32 and res.index_map.shape == shape
        assert np.all((res.index_map >= 0) & (res.index_map <= 2))
        # never outside the input's range
        assert s.stack.min() <= res.image.min() and res.image.max() <= s.stack.max()


@pytest.mark.parametrize("method", MULTISCALE)
def test_colour_stack_is_fused_with_one_decision(synth, method):
    gray = synth.stack.astype(np.float32)
    gains = np.array([0.5, 1.0, 2.0], np.float32)
    rgb = gray[..., None] * gains
    res = mf.fuse(rgb, method=method)
    ref = mf.fuse(gray, method=method)
    assert res.image.shape == gray.shape[1:] + (3,) and res.image.dtype == np.float32
    np.testing.assert_allclose(res.image, ref.image[..., None] * gains, rtol=1e-4, atol=0.05)
    assert np.array_equal(res.index_map, ref.index_map)
    rgb8 = np.clip(rgb / rgb.max() * 255, 0, 255).astype(np.uint8)
    out = mf.fuse(rgb8, method=method, mode="series").image
    assert out.dtype == np.uint8 and out.shape == rgb8.shape[1:]


@pytest.mark.parametrize("method", MULTISCALE)
@pytest.mark.parametrize("mode", MODES)
def test_index_map_and_image_on_two_halves(method, mode):
    sharp = cells_image((64, 96), seed=7)
    blurred = ndi.gaussian_filter(sharp, 3)
    left = np.hstack([sharp[:, :48], blurred[:, 48:]])
    right = np.hstack([blurred[:, :48], sharp[:, 48:]])
    res = mf.fuse([left, right], method=method, mode=mode)
    assert np.mean(res.index_map[8:-8, :32] == 0) > 0.97
    assert np.mean(res.index_map[8:-8, 64:] == 1) > 0.97
    # away from the seam the detail is the sharp image's
    err = np.abs(res.image - sharp)[8:-8]
    assert np.median(err[:, :32]) < 0.01 and np.median(err[:, 64:]) < 0.01
    assert psnr(sharp, res.image, 1.0) > psnr(sharp, left, 1.0) + 6


@pytest.mark.parametrize("method", MULTISCALE)
def test_no_pixel_weights_and_progress_to_the_end(synth, method):
    seen = []
    res = mf.fuse(synth.stack, method=method, return_weights=True,
                  progress=lambda done, total: seen.append((done, total)))
    assert res.weights is None
    assert seen and seen[-1][0] == seen[-1][1]
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)


def test_wavelet_parameters_are_checked_and_change_the_result(synth):
    with pytest.raises(mf.MfifError, match="must be one of"):
        mf.fuse(synth.stack, method="wavelet", wavelet="nope")
    a = mf.fuse(synth.stack, method="wavelet", wavelet="haar")
    b = mf.fuse(synth.stack, method="wavelet", wavelet="db4", activity="max_abs")
    assert a.params["wavelet"] == "haar" and b.params["activity"] == "max_abs"
    assert not np.array_equal(a.image, b.image)


def test_noise_floor_averages_noise_away():
    # a flat noisy field: choosing the largest coefficient picks the largest noise, averaging
    # the slices (the noise floor) lowers it by about sqrt(Z)
    rng = np.random.default_rng(3)
    stack = (0.5 + 0.02 * rng.standard_normal((8, 96, 96))).astype(np.float32)
    for method in MULTISCALE:
        chosen = mf.fuse(stack, method=method, noise_floor=0).image
        floored = mf.fuse(stack, method=method).image
        assert floored.std() < 0.5 * chosen.std(), (method, floored.std(), chosen.std())


@pytest.mark.parametrize("method", MULTISCALE + ["sml"])
def test_focus_map_of_two_slices(method):
    sharp = cells_image((64, 96), seed=8)
    blurred = ndi.gaussian_filter(sharp, 3)
    maps = mf.focus_map(np.hstack([sharp[:, :48], blurred[:, 48:]]),
                        np.hstack([blurred[:, :48], sharp[:, 48:]]), method=method)
    assert maps.decision.shape == (64, 96)
    assert maps.decision[8:-8, 8:36].mean() > 0.9 and maps.decision[8:-8, 60:88].mean() < 0.1
    assert maps.score[8:-8, 8:36].mean() > 0.6 and maps.score[8:-8, 60:88].mean() < 0.4


# -- sum-modified-Laplacian ---------------------------------------------------------------

def test_sml_is_translation_equivariant():
    gray = cells_image((96, 112), seed=9)
    full = sum_modified_laplacian(gray, presmooth=1.0, window=3.0)
    dy, dx = 7, 12
    shifted = sum_modified_laplacian(gray[dy:, dx:], presmooth=1.0, window=3.0)
    # away from the borders (reach: 3 px presmooth + 1 px + 9 px window) the maps agree
    m = 14
    np.testing.assert_allclose(shifted[m:-m, m:-m], full[dy + m:-m, dx + m:-m], rtol=1e-4,
                               atol=1e-9)


def test_sml_measures_focus_and_is_quadratic():
    sharp = cells_image((64, 64), seed=10)
    blurred = ndi.gaussian_filter(sharp, 2)
    s, b = (sum_modified_laplacian(g, presmooth=0.0, window=2.0) for g in (sharp, blurred))
    assert np.mean(s > b) > 0.95
    doubled = sum_modified_laplacian(2 * sharp, presmooth=0.0, window=2.0)
    np.testing.assert_allclose(doubled, 4 * s, rtol=1e-5)
    # no smoothing at all: |2g - left - right| + |2g - up - down| at one pixel, squared
    g = np.zeros((5, 5), np.float32)
    g[2, 2] = 1
    ml = sum_modified_laplacian(g, presmooth=0.0, window=0.0)
    assert ml[2, 2] == pytest.approx(16.0) and ml[2, 1] == pytest.approx(1.0)
    assert ml[1, 1] == 0


# -- the command line -----------------------------------------------------------------------

@pytest.mark.parametrize("method", NEW)
def test_cli_runs_each_method(tmp_path, method):
    s = focal_stack(n_slices=3, shape=(40, 52), dtype=np.uint16, seed=12)
    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, s.stack)
    args = ["fuse", str(path), "-o", str(tmp_path / "f.tif"), "--method", method, "-q"]
    if method == "wavelet":
        args += ["-p", "wavelet=haar", "-p", "levels=2"]
    assert main(args) == 0
    params = {"wavelet": "haar", "levels": 2} if method == "wavelet" else {}
    assert np.array_equal(tifffile.imread(tmp_path / "f.tif"),
                          mf.fuse(s.stack, method=method, **params).image)


@pytest.mark.parametrize("method", ["laplacian_pyramid", "wavelet"])
def test_apply_fusion_says_a_transform_domain_method_has_no_weights(method):
    s = focal_stack(n_slices=3, shape=(48, 48), seed=2)
    res = mf.fuse(s.stack, method, return_weights=True)
    assert res.weights is None
    with pytest.raises(mf.MfifError, match="transform domain"):
        mf.apply_fusion(s.stack, res)
