"""Decision pipeline of the CNN fusion: guided filter, focus map, small-region removal."""

import math

import numpy as np
import pytest
import torch
from numpy.testing import assert_allclose, assert_array_equal
from scipy import ndimage as ndi

from napari_mfif.fusion.decision import (
    centre_focus_map,
    min_region_area,
    patch_focus_map,
    remove_small_regions,
    remove_small_regions_labels,
)
from napari_mfif.fusion.guided_filter import box_mean, guided_filter, guided_filter_np

EIGHT = np.ones((3, 3), dtype=bool)


# --------------------------------------------------------------------------- references


def window(shape, y, x, r):
    """The clipped (2r+1) x (2r+1) window around (y, x), as a pair of slices."""
    H, W = shape
    return slice(max(y - r, 0), min(y + r + 1, H)), slice(max(x - r, 0), min(x + r + 1, W))


def box_mean_loop(x, r):
    out = np.empty_like(x)
    for y in range(x.shape[0]):
        for xx in range(x.shape[1]):
            out[y, xx] = np.mean(x[window(x.shape, y, xx, r)])
    return out


def guided_filter_loop(I, p, r, eps):
    """He et al. 2010, eqs. (5)-(8), one window at a time."""
    H, W = I.shape
    a = np.empty_like(I)
    b = np.empty_like(I)
    for y in range(H):
        for x in range(W):
            win = window(I.shape, y, x, r)
            Iw, pw = I[win], p[win]
            a[y, x] = (np.mean(Iw * pw) - Iw.mean() * pw.mean()) / (np.var(Iw) + eps)
            b[y, x] = pw.mean() - a[y, x] * Iw.mean()
    q = np.empty_like(I)
    for y in range(H):
        for x in range(W):
            # windows containing pixel i are those centred within r of it
            win = window(I.shape, y, x, r)
            q[y, x] = a[win].mean() * I[y, x] + b[win].mean()
    return q


def focus_map_loop(scores, shape, patch, stride):
    total = np.zeros(shape)
    count = np.zeros(shape)
    for i in range(scores.shape[0]):
        for j in range(scores.shape[1]):
            rows = slice(stride * i, stride * i + patch)
            cols = slice(stride * j, stride * j + patch)
            total[rows, cols] += scores[i, j]
            count[rows, cols] += 1
    return total, count


def remove_small_regions_labels_loop(labels, min_area):
    """One region at a time, with full-image operations (slow, obviously right)."""
    out = labels.copy()
    for _ in range(5):
        changed = False
        for value in np.unique(out):
            regions, n = ndi.label(out == value, structure=EIGHT)
            for k in range(1, n + 1):
                region = regions == k
                if region.sum() >= min_area:
                    continue
                ring = ndi.binary_dilation(region, structure=EIGHT) & ~region
                if not ring.any():
                    continue
                vals, counts = np.unique(out[ring], return_counts=True)
                new = vals[np.argmax(counts)]
                if new != value:
                    out[region] = new
                    changed = True
        if not changed:
            break
    return out


# --------------------------------------------------------------------------- box mean


@pytest.mark.parametrize("r", [0, 1, 3, 20])
def test_box_mean_matches_direct_loop(r):
    x = np.random.default_rng(r).random((13, 17))
    got = box_mean(torch.from_numpy(x), r)
    assert got.dtype == torch.float64
    assert_allclose(got.numpy(), box_mean_loop(x, r), rtol=1e-12, atol=1e-14)


def test_box_mean_float32_and_leading_dims():
    x = np.random.default_rng(1).random((2, 3, 9, 11))
    got = box_mean(torch.from_numpy(x.astype(np.float32)), 2)
    assert got.dtype == torch.float32
    assert got.shape == x.shape
    want = np.stack([[box_mean_loop(x[i, j], 2) for j in range(3)] for i in range(2)])
    assert_allclose(got.numpy(), want, rtol=1e-5, atol=1e-6)


def test_box_mean_large_image_float32_accuracy():
    x = np.random.default_rng(2).random((1500, 1500))
    got = box_mean(torch.from_numpy(x.astype(np.float32)), 8).double().numpy()
    want = box_mean(torch.from_numpy(x), 8).numpy()
    assert np.abs(got - want).max() < 1e-5


def test_box_mean_rejects_bad_input():
    with pytest.raises(ValueError):
        box_mean(torch.zeros(4, 4), -1)
    with pytest.raises(TypeError):
        box_mean(torch.zeros(4, 4, dtype=torch.int64), 1)


# --------------------------------------------------------------------------- guided filter


def test_guided_filter_matches_direct_window_computation():
    rng = np.random.default_rng(0)
    I = rng.random((12, 15))
    p = rng.random((12, 15))
    got = guided_filter(torch.from_numpy(I), torch.from_numpy(p), r=2, eps=0.01)
    assert got.dtype == torch.float64
    assert_allclose(got.numpy(), guided_filter_loop(I, p, 2, 0.01), rtol=1e-10)


def test_guided_filter_default_parameters_match_direct_computation():
    rng = np.random.default_rng(5)
    I = rng.random((20, 19))
    p = (rng.random((20, 19)) > 0.5).astype(np.float64)
    got = guided_filter(torch.from_numpy(I), torch.from_numpy(p))  # r=8, eps=0.1
    assert_allclose(got.numpy(), guided_filter_loop(I, p, 8, 0.1), rtol=1e-10)


def test_guided_filter_radius_zero_returns_the_source():
    """A 1 x 1 window has no variance: ``gf_radius=0`` turns the filter off."""
    rng = np.random.default_rng(2)
    I, p = rng.random((9, 11)), rng.random((9, 11))
    got = guided_filter(torch.from_numpy(I), torch.from_numpy(p), r=0, eps=0.01)
    assert_allclose(got.numpy(), p, rtol=0, atol=1e-12)
    assert_allclose(guided_filter_loop(I, p, 0, 0.01), p, rtol=0, atol=1e-12)


def test_guided_filter_keeps_a_constant():
    I = torch.from_numpy(np.random.default_rng(1).random((30, 40)))
    q = guided_filter(I, torch.full_like(I, 0.7), r=4, eps=0.05)
    assert_allclose(q.numpy(), 0.7, rtol=0, atol=1e-12)


def test_guided_filter_preserves_guide_edges():
    clean = np.zeros((64, 64))
    clean[:, 32:] = 1.0
    noisy = clean + np.random.default_rng(0).normal(0.0, 0.1, clean.shape)
    q = guided_filter(torch.from_numpy(clean), torch.from_numpy(noisy), r=8, eps=1e-3)
    q = q.numpy()
    err = np.abs(q - clean)
    # away from the edge: denoised (noise sigma is 0.1)
    assert err[:, :16].max() < 0.03 and err[:, 48:].max() < 0.03
    # at the edge: still a step, where a 17 x 17 box mean would give ~0.5 errors
    assert err[:, 30:34].max() < 0.05
    box = ndi.uniform_filter(noisy, 17, mode="nearest")
    assert np.abs(box - clean)[:, 31].mean() > 0.3


def test_guided_filter_one_guide_many_maps():
    rng = np.random.default_rng(2)
    I = torch.from_numpy(rng.random((20, 24)))
    src = torch.from_numpy(rng.random((3, 20, 24)))
    q = guided_filter(I, src, r=3, eps=0.02)
    assert q.shape == (3, 20, 24)
    for k in range(3):
        assert_allclose(q[k].numpy(), guided_filter(I, src[k], r=3, eps=0.02).numpy(),
                        rtol=1e-12, atol=1e-14)


def test_guided_filter_shape_mismatch():
    with pytest.raises(ValueError):
        guided_filter(torch.zeros(10, 10), torch.zeros(10, 11))
    with pytest.raises(RuntimeError):
        guided_filter(torch.zeros(2, 10, 10), torch.zeros(3, 10, 10))


def test_guided_filter_np_is_float32_and_matches():
    rng = np.random.default_rng(3)
    I = rng.random((25, 30))
    p = rng.random((2, 25, 30))
    got = guided_filter_np(I, p, r=4, eps=0.1)
    assert isinstance(got, np.ndarray) and got.dtype == np.float32 and got.shape == p.shape
    want = guided_filter(torch.from_numpy(I), torch.from_numpy(p), r=4, eps=0.1).numpy()
    assert_allclose(got, want, rtol=0, atol=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cpu_and_cuda_agree():
    rng = np.random.default_rng(4)
    I = torch.from_numpy(rng.random((300, 257)).astype(np.float32))
    p = torch.from_numpy((rng.random((2, 300, 257)) > 0.5).astype(np.float32))
    cpu = guided_filter(I, p)
    gpu = guided_filter(I.cuda(), p.cuda())
    assert gpu.is_cuda and gpu.dtype == torch.float32
    assert_allclose(gpu.cpu().numpy(), cpu.numpy(), rtol=0, atol=1e-5)

    scores = torch.from_numpy(rng.random((2, 144, 123)).astype(np.float32))
    cpu = patch_focus_map(scores, (300, 257))
    gpu = patch_focus_map(scores.cuda(), (300, 257))
    assert gpu.is_cuda and gpu.dtype == torch.float32
    assert_allclose(gpu.cpu().numpy(), cpu.numpy(), rtol=0, atol=1e-5)


# --------------------------------------------------------------------------- focus map


def test_patch_focus_map_matches_direct_average():
    rng = np.random.default_rng(0)
    scores = rng.random((4, 5))
    shape = (4 * 2 - 2 + 6, 5 * 2 - 2 + 6)  # exactly covered, patch 6, stride 2
    total, count = focus_map_loop(scores, shape, patch=6, stride=2)
    got = patch_focus_map(torch.from_numpy(scores), shape, patch=6, stride=2)
    assert got.dtype == torch.float64 and got.shape == shape
    assert_allclose(got.numpy(), total / count, rtol=1e-12)


def test_patch_focus_map_defaults_and_leading_dims():
    rng = np.random.default_rng(1)
    H, W = 37, 40
    h, w = math.ceil(H / 2) - 8 + 1, math.ceil(W / 2) - 8 + 1
    scores = rng.random((2, 3, h, w)).astype(np.float32)
    got = patch_focus_map(torch.from_numpy(scores), (H, W))
    assert got.shape == (2, 3, H, W) and got.dtype == torch.float32
    for i in range(2):
        for j in range(3):
            s = scores[i, j].astype(np.float64)
            total, count = focus_map_loop(s, (H + 1, W), 16, 2)
            assert_allclose(got[i, j].numpy(), (total / count)[:H, :W], rtol=1e-5)


@pytest.mark.parametrize("H, W", [(32, 32), (33, 35), (16, 16)])
def test_patch_focus_map_covers_every_pixel(H, W):
    h, w = math.ceil(H / 2) - 8 + 1, math.ceil(W / 2) - 8 + 1
    _, count = focus_map_loop(np.ones((h, w)), (H + 2, W + 2), 16, 2)
    assert (count[:H, :W] > 0).all()
    # a constant score map gives that constant everywhere
    got = patch_focus_map(torch.full((h, w), 0.25, dtype=torch.float64), (H, W))
    assert got.shape == (H, W)
    assert_allclose(got.numpy(), 0.25, rtol=1e-12)


def test_patch_focus_map_fills_uncovered_pixels_with_nearest():
    # stride > patch leaves gaps: rows/cols covered are {0, 1, 4, 5}
    scores = np.array([[1.0, 2.0], [3.0, 4.0]])
    got = patch_focus_map(torch.from_numpy(scores), (6, 6), patch=2, stride=4).numpy()
    nearest = [0, 1, 1, 4, 4, 5]  # row/col 2 is nearest to 1, 3 nearest to 4
    covered = np.zeros((6, 6))
    covered[0:2, 0:2], covered[0:2, 4:6] = 1.0, 2.0
    covered[4:6, 0:2], covered[4:6, 4:6] = 3.0, 4.0
    assert_array_equal(got, covered[np.ix_(nearest, nearest)])

    # a score map too small for the image: the bottom rows copy the last covered row
    scores = np.random.default_rng(2).random((3, 3))
    got = patch_focus_map(torch.from_numpy(scores), (12, 8), patch=4, stride=2).numpy()
    total, count = focus_map_loop(scores, (12, 8), 4, 2)
    assert (count[:8, :8] > 0).all() and (count[8:] == 0).all()
    assert_allclose(got[:8], total[:8] / count[:8], rtol=1e-12)
    assert_allclose(got[8:], np.broadcast_to(got[7], (4, 8)), rtol=0)


@pytest.mark.parametrize("shape", [(17, 20), (40, 33)])
def test_centre_focus_map_interpolates_between_patch_centres(shape):
    """Each score sits at its patch centre (stride*i + 7.5); pixels in between are bilinear,
    pixels beyond the outer centres take the nearest centre's value (scipy's
    map_coordinates, order 1, on the clamped centre coordinates)."""
    scores = np.random.default_rng(3).random((2, 4, 6))
    got = centre_focus_map(torch.from_numpy(scores), shape).numpy()
    assert got.shape == (2, *shape) and got.dtype == np.float64
    u = np.clip((np.arange(shape[0]) - 7.5) / 2, 0, 3)
    v = np.clip((np.arange(shape[1]) - 7.5) / 2, 0, 5)
    uu, vv = np.meshgrid(u, v, indexing="ij")
    for k in range(2):
        want = ndi.map_coordinates(scores[k], [uu, vv], order=1, mode="nearest")
        assert_allclose(got[k], want, rtol=1e-12, atol=1e-12)


def test_centre_focus_map_keeps_a_boundary_where_the_scores_put_it():
    """Scores 1 for the patches centred at columns up to 19.5, 0 from 21.5 on: the centre map
    ramps between those two centres only (0.75 at column 20, 0.25 at 21), where the patch map
    spreads the step over 16 px."""
    w = 30
    centres = 2 * np.arange(w) + 7.5
    scores = np.broadcast_to((centres < 20).astype(float), (6, w)).copy()
    row_c = centre_focus_map(torch.from_numpy(scores), (24, 70)).numpy()[10]
    row_p = patch_focus_map(torch.from_numpy(scores), (24, 70)).numpy()[10]
    assert_allclose(row_c[18:23], [1, 1, 0.75, 0.25, 0])
    assert ((row_c > 0) & (row_c < 1)).sum() == 2
    assert ((row_p > 0.01) & (row_p < 0.99)).sum() >= 12


def test_centre_focus_map_rejects_bad_input():
    with pytest.raises(ValueError, match="image_shape"):
        centre_focus_map(torch.zeros(3, 3), (0, 5))
    with pytest.raises(ValueError, match="scores must have shape"):
        centre_focus_map(torch.zeros(3), (5, 5))


# --------------------------------------------------------------------------- small regions


def speck_and_hole_mask():
    mask = np.zeros((40, 40), dtype=bool)
    mask[5:30, 5:30] = True  # big True block (625 px)
    mask[15, 15:18] = False  # 3-pixel hole in the block
    mask[35, 34:37] = True  # 3-pixel speck in the False area
    return mask


def test_remove_small_regions_flips_speck_and_hole():
    mask = speck_and_hole_mask()
    before = mask.copy()
    want = np.zeros((40, 40), dtype=bool)
    want[5:30, 5:30] = True
    out = remove_small_regions(mask, 10)
    assert out.dtype == bool
    assert_array_equal(out, want)
    assert_array_equal(mask, before)  # input untouched


def test_remove_small_regions_zero_area_is_a_copy():
    mask = speck_and_hole_mask()
    for area in (0, -5):
        out = remove_small_regions(mask, area)
        assert_array_equal(out, mask)
        assert out is not mask


def test_remove_small_regions_keeps_exactly_min_area():
    mask = np.zeros((20, 20), dtype=bool)
    mask[2:5, 2:5] = True  # 9 px
    mask[12:14, 12:16] = True  # 8 px
    out = remove_small_regions(mask, 9)
    assert out[2:5, 2:5].all()
    assert not out[12:14, 12:16].any()
    # a 9-px hole in a True background is kept too; an 8-px one is filled
    out = remove_small_regions(~mask, 9)
    assert not out[2:5, 2:5].any()
    assert out[12:14, 12:16].all()


def test_remove_small_regions_uses_8_connectivity():
    mask = np.zeros((10, 10), dtype=bool)
    mask[[2, 3, 4, 5], [2, 3, 4, 5]] = True  # a diagonal line: one 8-connected region
    assert_array_equal(remove_small_regions(mask, 4), mask)
    assert not remove_small_regions(mask, 5).any()


def test_remove_small_regions_true_specks_first():
    # a 1-px speck inside a 8-px hole: the speck goes first, then the 9-px hole is kept
    mask = np.ones((20, 20), dtype=bool)
    mask[5:8, 5:8] = False
    mask[6, 6] = True
    out = remove_small_regions(mask, 9)
    want = np.ones((20, 20), dtype=bool)
    want[5:8, 5:8] = False
    assert_array_equal(out, want)


def test_min_region_area():
    assert min_region_area((200, 300)) == pytest.approx(600.0)
    assert min_region_area((200, 300), ratio=0.05) == pytest.approx(3000.0)


def test_remove_small_regions_labels_island():
    labels = np.zeros((60, 60), dtype=np.int32)
    labels[:, 20:40] = 1
    labels[:, 40:] = 2
    island = np.zeros_like(labels, dtype=bool)
    island[8:11, 5:8] = True  # 9 px of label 2 inside the label-0 region
    labels[island] = 2
    want = np.zeros_like(labels)
    want[:, 20:40] = 1
    want[:, 40:] = 2
    out = remove_small_regions_labels(labels, 20)
    assert out.dtype == labels.dtype
    assert_array_equal(out, want)
    assert labels[island].tolist() == [2] * 9  # input untouched
    assert_array_equal(remove_small_regions_labels(labels, 0), labels)


@pytest.mark.parametrize("c0, want", [(15, 1), (14, 0)])
def test_remove_small_regions_labels_majority_of_border(c0, want):
    labels = np.zeros((30, 30), dtype=np.int64)
    labels[:, 15:] = 1
    labels[10:13, c0:c0 + 2] = 5  # a 3 x 2 island near the 0 | 1 boundary
    # c0 = 15: its 14 border pixels are 5 x label 0 and 9 x label 1 -> 1
    # c0 = 14: 7 x label 0 and 7 x label 1, a tie -> the smaller label, 0
    out = remove_small_regions_labels(labels, 10)
    expected = np.zeros_like(labels)
    expected[:, 15:] = 1
    expected[10:13, c0:c0 + 2] = want
    assert_array_equal(out, expected)


def test_remove_small_regions_labels_whole_image_region_is_kept():
    labels = np.full((8, 9), 3, dtype=np.uint8)
    assert_array_equal(remove_small_regions_labels(labels, 1000), labels)
    labels[2, 2] = 1
    out = remove_small_regions_labels(labels, 1000)
    assert (out == 3).all()


@pytest.mark.parametrize("seed", range(6))
def test_remove_small_regions_labels_matches_region_by_region_loop(seed):
    rng = np.random.default_rng(seed)
    n_labels = 2 + seed % 4
    noise = ndi.gaussian_filter(rng.random((n_labels, 41, 37)), (0, 1.5, 1.5))
    labels = noise.argmax(0).astype(np.int16)
    for area in (4, 15, 40):
        got = remove_small_regions_labels(labels, area)
        assert_array_equal(got, remove_small_regions_labels_loop(labels, area))
        # no small region is left
        for value in np.unique(got):
            regions, n = ndi.label(got == value, structure=EIGHT)
            assert np.bincount(regions.ravel())[1:].min() >= area


def test_remove_small_regions_labels_rejects_floats():
    with pytest.raises(TypeError):
        remove_small_regions_labels(np.zeros((4, 4)), 2)
