"""N-way fusion one slice at a time (napari_mfif.stack.nway_fuse): the same weights as the
per-slice maps of nway_choice and fill_flat_areas, without a float copy of the stack or any
(Z, Y, X) map, so its memory does not grow with the number of slices."""

import subprocess
import sys
import textwrap
from functools import partial

import numpy as np
import pytest

import napari_mfif as mf
from napari_mfif.focus import consistency
from napari_mfif.focus.classic import noise_score, tenengrad
from napari_mfif.focus.dog import fine_band_energy
from napari_mfif.focus.dog import _reach as dog_reach
from napari_mfif.stack import (LazySlices, blend, fill_flat_areas, index_from_weights,
                               lazy_stack, noise_sigma, nway_choice, nway_fuse)
from napari_mfif.synthetic import focal_stack


def _stack_with_flat_areas(seed=5, z=7, size=160):
    """A synthetic stack whose right third is flat background plus noise, so that the
    noise floor and the flat-area fill have work to do."""
    s = focal_stack(n_slices=z, shape=(size, size), blur_per_slice=1.2, dtype=np.uint16,
                    seed=seed)
    stack = s.stack.astype(np.float32)
    rng = np.random.default_rng(seed)
    stack[:, :, 2 * size // 3:] = 3000
    stack += rng.normal(0, 40, stack.shape)
    return np.clip(stack, 0, 65535).astype(np.uint16)


def _reference(stack, measure, *, presmooth, window, smooth, floor_mult, check):
    """The fusion by the (Z, Y, X) route: nway_choice's weights, fill_flat_areas, blend."""
    gray = stack.astype(np.float32)
    focus = partial(measure, presmooth=presmooth, window=window)
    sigma = noise_sigma(gray)
    floor = floor_mult * noise_score(measure, sigma, presmooth=presmooth, window=window)
    revise = None
    if check:
        def revise(choice, scores, trust):
            return consistency.check(choice, scores, trust, consistency=16.0, agreement=0.4)
    from napari_mfif.focus._ops import NUMPY
    weights, confidence = nway_choice(focus, gray, partial(NUMPY.gaussian, sigma=smooth),
                                      floor=floor, revise=revise)
    weights = fill_flat_areas(weights, confidence, in_place=True)
    return blend(gray[..., None], weights)[..., 0], index_from_weights(weights), weights, floor


@pytest.mark.parametrize("check", [False, True])
def test_slice_by_slice_equals_the_per_slice_maps(check):
    stack = _stack_with_flat_areas()
    params = dict(presmooth=0.5, window=3.0, smooth=2.5)
    fused_ref, height_ref, weights_ref, floor = _reference(
        stack, fine_band_energy, floor_mult=3.0, check=check, **params)
    work, gray, _ = lazy_stack(stack)
    revise = None
    if check:
        def revise(choice, scores, trust):
            return consistency.check(choice, scores, trust, consistency=16.0, agreement=0.4)
    weights = np.empty(gray.shape, np.float32)
    fused, height, confidence = nway_fuse(
        partial(fine_band_energy, presmooth=0.5, window=3.0), gray, 2.5, stack=work,
        weights=weights, floor=floor, revise=revise, focus_reach=dog_reach(params))
    assert 0.05 < float((confidence < 1).mean()) < 0.9  # the fill was exercised
    # the same weights to float rounding (the sums are divided at the end, not per slice)
    np.testing.assert_allclose(weights, weights_ref, atol=2e-6)
    np.testing.assert_allclose(height, height_ref, atol=1e-5)
    np.testing.assert_allclose(fused[..., 0], fused_ref, rtol=1e-5, atol=0.02)
    np.testing.assert_allclose(weights.sum(axis=0), 1, atol=1e-5)


def test_rescoring_a_box_gives_the_whole_slice_scores():
    """The consistency check's scores are computed again over the box around the pixels
    asked about; grown by the measure's reach, they are the whole slice's, bit for bit."""
    rng = np.random.default_rng(1)
    gray = rng.random((3, 90, 110), dtype=np.float32)
    focus = partial(tenengrad, presmooth=1.0, window=3.0)
    reach = 3 + 1 + 9  # presmooth, the derivative, the window
    from napari_mfif.stack import _Rescored
    scores = _Rescored(focus, gray, reach)
    ys = np.array([20, 41, 33, 60])
    xs = np.array([50, 47, 70, 66])
    whole = focus(gray[1])
    assert np.array_equal(scores[1][ys, xs], whole[ys, xs])
    edge = (np.array([0, 89]), np.array([109, 0]))  # boxes clipped at the image's edges
    assert np.array_equal(scores[2][edge], focus(gray[2])[edge])


def test_lazy_slices_convert_on_reading_and_leave_the_input_alone():
    rgb = np.random.default_rng(2).integers(0, 255, (4, 20, 30, 3), dtype=np.uint8)
    before = rgb.copy()
    work, gray, had = lazy_stack(rgb)
    assert had and work.shape == (4, 20, 30, 3) and gray.shape == (4, 20, 30)
    assert work.dtype == gray.dtype == np.float32
    assert np.array_equal(work[2], rgb[2].astype(np.float32))
    assert np.allclose(gray[1], rgb[1].astype(np.float32) @ [0.2989, 0.5870, 0.1140],
                       atol=1e-3)
    assert np.array_equal(work[1, 3:5, 4:8], rgb[1, 3:5, 4:8].astype(np.float32))
    part = work[3]
    part *= 2  # a converted copy: the input does not change
    assert np.array_equal(rgb, before)
    with pytest.raises(TypeError, match="one slice at a time"):
        work[1:3]
    with pytest.raises(mf.MfifError, match="focus channel 5"):
        lazy_stack(rgb, focus_channel=5)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_fuse_does_not_modify_its_input_and_weights_do_not_change_the_result(dtype):
    stack = _stack_with_flat_areas(seed=7).astype(np.float32)
    stack = (stack / 65535 * (255 if dtype == np.uint8 else 65535 if dtype == np.uint16
                              else 1)).astype(dtype)
    before = stack.copy()
    plain = mf.fuse(stack)
    kept = mf.fuse(stack, return_weights=True)
    assert np.array_equal(stack, before)
    assert plain.image.dtype == stack.dtype
    assert np.array_equal(plain.image, kept.image)
    assert np.array_equal(plain.index_map, kept.index_map)
    # the weights are the ones the image was made with
    again = mf.apply_fusion(stack, kept)
    assert np.abs(again.astype(np.float64) - plain.image.astype(np.float64)).max() <= (
        1 if dtype != np.float32 else 1e-5)


_PEAK = textwrap.dedent("""
    import sys
    import numpy as np
    import napari_mfif as mf

    def status(key):
        with open("/proc/self/status") as f:
            return next(int(l.split()[1]) * 1024 for l in f if l.startswith(key + ":"))

    rng = np.random.default_rng(0)
    mf.fuse(rng.integers(0, 4096, (3, 64, 64), dtype=np.uint16))  # imports, set-up
    stack = rng.integers(0, 4096, (int(sys.argv[2]), 1024, 1024), dtype=np.uint16)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # VmHWM := VmRSS
    before = status("VmRSS")
    mf.fuse(stack, method=sys.argv[1], tile_size=0)
    print((status("VmHWM") - before) / 2**20)
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads VmHWM from /proc")
@pytest.mark.parametrize("method", ["dog", "tenengrad"])
def test_memory_beyond_the_stack_does_not_grow_with_the_slices(method):
    """Ten times the slices (36 more 1024^2 slices: 144 MiB more for each float32 map kept
    per slice) add less than a quarter of such a map per slice beyond the stack itself (the
    consistency check's vote grid, 1/16 of the pixels, and the allocator's slack); each
    count in a fresh process."""
    peaks = {}
    for z in (4, 40):
        res = subprocess.run([sys.executable, "-c", _PEAK, method, str(z)],
                             capture_output=True, text=True)
        assert res.returncode == 0, res.stderr
        peaks[z] = float(res.stdout)
    assert peaks[40] - peaks[4] < 36, peaks
    assert peaks[40] < 140, peaks  # a few image-sized maps (4 MiB each), not 40 slices' worth


def test_threads_do_not_change_the_result():
    """The slices are scored and smoothed on several threads but added in slice order."""
    stack = _stack_with_flat_areas(seed=9)
    work, gray, _ = lazy_stack(stack)
    runs = []
    for threads in (1, 3):
        weights = np.empty(gray.shape, np.float32)
        runs.append(nway_fuse(partial(fine_band_energy, presmooth=0.5, window=3.0), gray, 2.5,
                              stack=work, weights=weights, floor=1e3, threads=threads,
                              focus_reach=dog_reach({"presmooth": 0.5, "window": 3.0}))
                    + (weights,))
    for a, b in zip(*runs):
        assert np.array_equal(a, b)


@pytest.mark.parametrize("method", ["dog", "tenengrad"])
def test_bands_of_rows_give_the_whole_image_bit_for_bit(method, monkeypatch):
    """Scoring and smoothing band by band, with the measure's and the smoothing's reach
    around each band, give exactly the numbers of one band covering the image."""
    import napari_mfif.stack as st

    stack = _stack_with_flat_areas(seed=11, size=192)
    one = mf.fuse(stack, method=method, return_weights=True)
    monkeypatch.setattr(st, "BAND_PIXELS", 192 * 40)  # bands of 96 rows (8 x the reach)
    assert len(st._bands(192, 192, 12)) == 2
    monkeypatch.setattr(st, "BAND_PIXELS", 192 * 8)
    banded = mf.fuse(stack, method=method, return_weights=True)
    assert np.array_equal(one.image, banded.image)
    assert np.array_equal(one.index_map, banded.index_map)
    assert np.array_equal(one.weights, banded.weights)


def test_every_path_of_the_choose_max_methods_reads_lazy_slices():
    """Series mode and the GPU code (torch ops, here on the CPU) read the slices one at a
    time too, and give what they give on float arrays."""
    from napari_mfif.focus._ops import NUMPY, TorchOps
    from napari_mfif.focus.classic import _fuse
    from napari_mfif.stack import to_dtype

    stack = _stack_with_flat_areas(seed=13, z=5, size=96)
    work, gray, _ = lazy_stack(stack)
    arrays = stack.astype(np.float32)[..., None]
    params = dict(presmooth=0.5, window=3.0, smooth=2.5, noise_floor=3.0)
    for ops, mode, check in [(TorchOps("cpu"), "nway", 16.0), (TorchOps("cpu"), "nway", 0.0),
                             (TorchOps("cpu"), "series", 0.0), (NUMPY, "series", 0.0)]:
        lazy = _fuse(fine_band_energy, ops, work, gray, mode=mode, progress=None,
                     keep_weights=True, consistency=check, **params)
        eager = _fuse(fine_band_energy, ops, arrays, arrays[..., 0], mode=mode, progress=None,
                      keep_weights=True, consistency=check, **params)
        for a, b in zip(lazy, eager):
            assert np.array_equal(a, b), (mode, check)
    # fuse() in series mode: the float arrays' result, back in the input's dtype
    series = mf.fuse(stack, mode="series")
    assert np.array_equal(series.image, to_dtype(eager[0][..., 0], stack.dtype))
    assert np.array_equal(series.index_map, eager[1])
