import numpy as np
import pytest

from napari_mfif import MfifError
from napari_mfif.synthetic import focal_stack, sample_stack

from conftest import psnr


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_shapes_dtypes_and_depth_range(dtype):
    s = focal_stack(n_slices=5, shape=(40, 60), dtype=dtype, seed=1)
    assert s.stack.shape == (5, 40, 60) and s.stack.dtype == dtype
    assert s.sharp.shape == (40, 60) and s.sharp.dtype == dtype
    assert s.depth.dtype == np.float32
    assert s.depth.min() == pytest.approx(0) and s.depth.max() == pytest.approx(4)


def test_each_slice_is_sharp_where_the_depth_matches():
    s = focal_stack(n_slices=5, shape=(96, 96), dtype=np.float32, seed=2)
    for k in range(5):
        near = np.abs(s.depth - k) < 0.1
        far = np.abs(s.depth - k) > 1.5
        assert near.sum() > 5 and far.sum() > 20
        # where the depth is k the slice is the sharp image; far from it, it is not
        assert np.abs(s.stack[k][near] - s.sharp[near]).mean() < 0.01
        assert np.abs(s.stack[k][far] - s.sharp[far]).mean() > 0.03


def test_blur_grows_with_distance_from_depth():
    depth = np.full((64, 64), 0.0, np.float32)
    s = focal_stack(depth=depth, sharp=np.random.default_rng(0).random((64, 64)),
                    n_slices=4, dtype=np.float32)
    contrast = [float(np.std(s.stack[k])) for k in range(4)]
    assert contrast == sorted(contrast, reverse=True)


def test_noise_is_added_to_slices_not_to_truth():
    clean = focal_stack(n_slices=3, shape=(32, 32), dtype=np.float32, seed=4)
    noisy = focal_stack(n_slices=3, shape=(32, 32), dtype=np.float32, noise=0.05, seed=4)
    assert np.array_equal(clean.sharp, noisy.sharp)
    assert 0.03 < np.std(noisy.stack - clean.stack) < 0.07


def test_deterministic_and_bad_args():
    a = focal_stack(n_slices=3, shape=(16, 16), seed=7).stack
    b = focal_stack(n_slices=3, shape=(16, 16), seed=7).stack
    assert np.array_equal(a, b)
    with pytest.raises(MfifError):
        focal_stack(n_slices=1)


def test_sample_stack_is_small_uint16_with_ground_truth():
    s = sample_stack()
    assert s.stack.dtype == np.uint16 and s.stack.ndim == 3 and s.stack.shape[0] >= 5
    assert s.stack.nbytes < 5e6
    # no single slice is the answer
    best = max(psnr(s.sharp, sl, 4095) for sl in s.stack)
    assert best < 30


def test_fluorescence_scene_is_sparse_on_a_dark_background():
    from napari_mfif.synthetic import fluorescence_image

    img = fluorescence_image((128, 128), seed=1)
    assert img.dtype == np.float32 and 0 <= img.min() and img.max() <= 1
    background = np.median(img)
    assert background < 0.1                      # mostly dark
    assert np.mean(img > background + 0.2) < 0.2  # sparse bright structure
    assert img.max() > 0.8


def test_poisson_noise_scales_with_photons():
    flat = np.full((64, 64), 0.5, np.float32)
    depth = np.zeros((64, 64), np.float32)
    dim = focal_stack(flat, depth, n_slices=2, photons=50, dtype=np.float32, seed=2)
    bright = focal_stack(flat, depth, n_slices=2, photons=5000, dtype=np.float32, seed=2)
    # shot noise std = sqrt(0.5 * photons) / photons
    assert np.std(dim.stack[0]) == pytest.approx(np.sqrt(0.5 * 50) / 50, rel=0.15)
    assert np.std(bright.stack[0]) == pytest.approx(np.sqrt(0.5 * 5000) / 5000, rel=0.15)


def test_step_depth_is_piecewise_whole_slices():
    from napari_mfif.synthetic import step_depth

    d = step_depth((64, 80), 7, seed=3)
    assert d.dtype == np.float32 and set(np.unique(d)) <= set(range(7))
    assert d.min() == 0 and d.max() == 6
    # piecewise constant: most pixels equal their right neighbour, a few steps exist
    same = np.mean(d[:, 1:] == d[:, :-1])
    assert 0.9 < same < 1.0


def test_haze_adds_out_of_focus_glow_not_in_truth():
    sharp = np.zeros((64, 64), np.float32)
    sharp[28:36, 28:36] = 1.0
    depth = np.zeros((64, 64), np.float32)
    clean = focal_stack(sharp, depth, n_slices=2, dtype=np.float32)
    hazy = focal_stack(sharp, depth, n_slices=2, haze=0.5, dtype=np.float32)
    assert np.array_equal(clean.sharp, hazy.sharp)
    extra = hazy.stack[0] - clean.stack[0]
    assert extra.min() >= 0 and extra[32, 32] > extra[2, 2] > 0  # a smooth glow
