"""fuse(): answers checked against synthetic stacks with known ground truth."""

import dask.array as da
import numpy as np
import pytest
from scipy import ndimage as ndi

import napari_mfif as mf
from napari_mfif import MfifError
from napari_mfif.registry import _REGISTRY, Method
from napari_mfif.synthetic import focal_stack

from conftest import psnr

METHODS = ["tenengrad", "variance"]
MODES = ["nway", "series"]


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
@pytest.mark.parametrize("mode", MODES)
def test_dtype_in_is_dtype_out_without_rescaling(dtype, mode):
    s = focal_stack(n_slices=4, shape=(48, 48), dtype=dtype, seed=5)
    res = mf.fuse(s.stack, mode=mode)
    assert res.image.dtype == dtype and res.image.shape == (48, 48)
    assert res.index_map.dtype == np.float32 and res.index_map.shape == (48, 48)
    # a weighted average of the slices never leaves their range (no rescaling)
    assert s.stack.min() <= res.image.min() and res.image.max() <= s.stack.max()


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("mode", MODES)
def test_fused_beats_every_slice_and_height_is_right(synth, method, mode):
    res = mf.fuse(synth.stack, method=method, mode=mode)
    data_range = 4095
    fused_psnr = psnr(synth.sharp, res.image, data_range)
    slice_psnr = [psnr(synth.sharp, sl, data_range) for sl in synth.stack]
    assert fused_psnr > max(slice_psnr) + 6, (fused_psnr, slice_psnr)

    # height within one slice of the truth on textured pixels (where focus is observable)
    sharp = synth.sharp.astype(np.float32)
    energy = ndi.gaussian_filter(ndi.sobel(sharp, 0) ** 2 + ndi.sobel(sharp, 1) ** 2, 2)
    textured = energy > np.percentile(energy, 25)
    err = np.abs(res.index_map - synth.depth)[textured]
    assert np.mean(err <= 1.0) > 0.99, np.mean(err <= 1.0)
    assert np.median(err) < 0.5


def test_series_index_map_on_two_slices():
    rng = np.random.default_rng(0)
    sharp = rng.random((64, 64)).astype(np.float32)
    blurred = ndi.gaussian_filter(sharp, 3)
    left, right = np.hstack([sharp[:, :32], blurred[:, 32:]]), np.hstack([blurred[:, :32], sharp[:, 32:]])
    res = mf.fuse([left, right], mode="series")
    # away from the seam by more than the default method's reach (dog: 3 + 9 px measure,
    # 8 px decision smoothing)
    assert np.all(res.index_map[:, :20] < 0.05) and np.all(res.index_map[:, 44:] > 0.95)
    assert np.allclose(res.image[:, :20], sharp[:, :20], atol=1e-4)
    assert np.allclose(res.image[:, 44:], sharp[:, 44:], atol=1e-4)


def test_colour_stack_uses_one_decision_for_all_channels(synth):
    gray = synth.stack.astype(np.float32)
    gains = np.array([0.5, 1.0, 2.0], np.float32)
    rgb = gray[..., None] * gains
    res = mf.fuse(rgb)
    ref = mf.fuse(gray)
    assert res.image.shape == gray.shape[1:] + (3,) and res.image.dtype == np.float32
    np.testing.assert_allclose(res.image, ref.image[..., None] * gains, rtol=1e-4, atol=1e-2)
    np.testing.assert_allclose(res.index_map, ref.index_map, atol=1e-5)


def test_numpy_dask_and_list_inputs_agree_and_input_is_untouched(synth):
    stack = synth.stack.copy()
    a = mf.fuse(stack)
    assert np.array_equal(stack, synth.stack)
    b = mf.fuse(da.from_array(stack, chunks=(2, 50, 70)))
    c = mf.fuse(list(stack))
    for other in (b, c):
        assert np.array_equal(a.image, other.image)
        assert np.array_equal(a.index_map, other.index_map)


def test_constant_stack_is_a_valid_result():
    stack = np.full((3, 20, 20), 1234, np.uint16)
    res = mf.fuse(stack)
    assert np.all(res.image == 1234)
    assert np.all((res.index_map >= 0) & (res.index_map <= 2))


def test_params_change_the_result_and_are_reported(synth):
    hard = mf.fuse(synth.stack, smooth=0)
    soft = mf.fuse(synth.stack, smooth=4)
    assert hard.params["smooth"] == 0 and soft.params["smooth"] == 4.0
    # a hard choice gives whole slice numbers; a smoothed one blends at the seams
    assert np.all(hard.index_map == np.round(hard.index_map))
    assert np.any(soft.index_map != np.round(soft.index_map))


def test_progress_is_reported_to_the_end(synth):
    seen = []
    mf.fuse(synth.stack, progress=lambda done, total: seen.append((done, total)))
    assert seen and seen[-1][0] == seen[-1][1]
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)


def test_a_new_method_is_one_registry_entry(synth):
    def first_slice(stack, gray, *, mode, device, progress, keep_weights, offset):
        return stack[0] + offset, np.zeros(gray.shape[1:], np.float32)

    mf.register_method(Method("first-slice", "the first slice", first_slice, {"offset": 0.0}))
    try:
        assert "first-slice" in mf.available_methods()
        res = mf.fuse(synth.stack.astype(np.float32), method="first-slice", offset=1.0)
        assert np.array_equal(res.image, synth.stack[0].astype(np.float32) + 1)
        with pytest.raises(ValueError, match="already registered"):
            mf.register_method(Method("first-slice", "again", first_slice))
    finally:
        _REGISTRY.pop("first-slice", None)


BAD_INPUTS = [
    (np.zeros((32, 32), np.uint8), "single 2-D image"),
    ([np.zeros((8, 8)), np.zeros((8, 9))], "slice 1 has shape"),
    ([np.zeros((8, 8), np.uint8), np.zeros((8, 8), np.uint16)], "slice 1 has dtype"),
    ([], "empty"),
    ([np.zeros((8, 8))], "single image"),
    (np.zeros((1, 8, 8)), "1 slice"),
    (np.zeros((0, 8, 8)), "empty"),
    (np.zeros((2, 0, 8)), "empty"),
    (np.zeros((64, 64, 3), np.uint8), "single colour image"),
    (np.zeros((2, 3, 4, 5, 6)), "(Z, Y, X)"),
    (np.zeros((2, 8, 8, 40)), "channels last"),
    (np.zeros((2, 8, 8), bool), "boolean"),
    (np.zeros((2, 8, 8), np.complex64), "complex"),
    (np.where(np.eye(8)[None, None, 0] > 0, np.nan, np.ones((2, 8, 8))).astype(np.float32),
     "NaN"),
    (np.where(np.eye(8)[None, None, 0] > 0, np.inf, np.ones((2, 8, 8))).astype(np.float32),
     "NaN or infinite"),
    ("not an array", "cannot fuse a str"),
]


@pytest.mark.parametrize("stack,message", BAD_INPUTS, ids=[m for _, m in BAD_INPUTS])
def test_bad_input_is_one_clear_sentence(stack, message):
    with pytest.raises(MfifError, match=message.replace("(", r"\(").replace(")", r"\)")) as info:
        mf.fuse(stack)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"method": "nope"}, "unknown method 'nope'; choose one of: tenengrad"),
        ({"mode": "sideways"}, "unknown mode"),
        ({"device": "tpu"}, "unknown device"),
        ({"method": "wavelet", "device": "cuda"}, "runs on the CPU only"),
        ({"window": "wide"}, "must be a number"),
        ({"window": -1}, "must be >= 0"),
        ({"radius": 3}, "has no parameter 'radius'"),
    ],
)
def test_bad_arguments(synth, kwargs, message):
    with pytest.raises(MfifError, match=message):
        mf.fuse(synth.stack, **kwargs)


@pytest.mark.parametrize("method", ["tenengrad", "cnn"])
@pytest.mark.parametrize("mode", MODES)
def test_weights_are_each_slices_share_of_the_result(synth, method, mode):
    stack = synth.stack.astype(np.float32)
    res = mf.fuse(stack, method=method, mode=mode, return_weights=True)
    w = res.weights
    assert w.shape == stack.shape and w.dtype == np.float32
    assert np.allclose(w.sum(axis=0), 1, atol=1e-4) and w.min() >= -1e-6
    # they reproduce the fused image and the height map
    assert np.allclose(np.einsum("zyx,zyx->yx", w, stack), res.image, rtol=1e-4, atol=0.05)
    assert np.allclose(np.tensordot(np.arange(len(w)), w, axes=(0, 0)), res.index_map, atol=1e-3)
    # and are not returned unless asked for
    assert mf.fuse(stack, method=method, mode=mode).weights is None


def test_series_weights_follow_the_pair_decisions():
    from napari_mfif.stack import series_weights

    rng = np.random.default_rng(0)
    d = [rng.random((3, 4), dtype=np.float32) for _ in range(3)]  # D_1..D_3 for Z = 4
    w = series_weights(d, (4, 3, 4))
    assert np.allclose(w[0], d[0] * d[1] * d[2])
    assert np.allclose(w[1], (1 - d[0]) * d[1] * d[2])
    assert np.allclose(w[3], 1 - d[2])
    assert np.allclose(w.sum(axis=0), 1)


@pytest.mark.parametrize("method", ["tenengrad", "cnn"])
@pytest.mark.parametrize("mode", MODES)
def test_progress_can_cancel_a_run(synth, method, mode):
    stack = synth.stack.copy()
    calls = []

    def progress(done, total):
        calls.append((done, total))
        if len(calls) == 2:
            raise mf.FusionCancelled()

    with pytest.raises(mf.FusionCancelled):
        mf.fuse(stack, method=method, mode=mode, progress=progress)
    assert len(calls) == 2  # it stopped at the step that cancelled it
    assert np.array_equal(stack, synth.stack)


@pytest.mark.parametrize("method", ["tenengrad", "variance", "cnn"])
def test_focus_map_says_which_slice_is_sharp_where(method):
    # left half sharp in A, right half sharp in B
    s = focal_stack(n_slices=2, shape=(96, 128), blur_per_slice=3.0, dtype=np.uint16, seed=1,
                    depth=np.where(np.arange(128) < 64, 0.0, 1.0)[None].repeat(96, 0))
    res = mf.focus_map(s.stack[0], s.stack[1], method=method)
    assert res.score.shape == res.decision.shape == (96, 128)
    assert res.score.dtype == res.decision.dtype == np.float32
    assert 0 <= res.score.min() and res.score.max() <= 1
    inner = (slice(16, -16), slice(8, 48)), (slice(16, -16), slice(80, 120))
    assert res.score[inner[0]].mean() > 0.7 and res.score[inner[1]].mean() < 0.3
    assert res.decision[inner[0]].mean() > 0.9 and res.decision[inner[1]].mean() < 0.1
    swapped = mf.focus_map(s.stack[1], s.stack[0], method=method)
    assert swapped.decision[inner[0]].mean() < 0.1


def test_focus_map_checks_its_input():
    with pytest.raises(MfifError, match="slice 1 has shape"):
        mf.focus_map(np.zeros((8, 8)), np.zeros((8, 9)))
    with pytest.raises(MfifError, match="no parameter"):
        mf.focus_map(np.zeros((8, 8)), np.zeros((8, 8)), window_size=3)
