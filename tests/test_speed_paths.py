"""The fast paths of issue 10 give the same numbers as the plain ones they replace.

Per-slice threads, strided noise samples, the one-pass vote sums of the consistency check,
the flat-area blend restricted to unconfident pixels, and a command line that learns a
stack's size without importing dask. (How fast they are is measured in
benchmarks/speed.py, not here.)
"""

import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import tifffile
from scipy import ndimage as ndi

import napari_mfif as mf
from napari_mfif import stack as st
from napari_mfif.focus import consistency
from napari_mfif.focus.dog import fine_band_energy
from napari_mfif.synthetic import fringe_stack


def test_map_slices_keeps_order_and_bounds_what_waits():
    running = 0
    most = 0
    lock = threading.Lock()

    def work(k):
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        time.sleep(0.002 * (k % 3))
        with lock:
            running -= 1
        return k * k

    got = []
    for value in st.map_slices(work, 25, threads=3):
        time.sleep(0.003)  # a slow consumer: results must not pile up
        got.append(value)
    assert got == [k * k for k in range(25)]
    assert most <= 3


def test_map_slices_holds_at_most_threads_plus_one_results():
    started = []

    def work(k):
        started.append(k)
        return k

    iterator = st.map_slices(work, 50, threads=2)
    assert next(iterator) == 0
    time.sleep(0.05)
    assert len(started) <= 3  # 0 handed out, at most 2 more submitted
    iterator.close()  # stops early: nothing else starts
    time.sleep(0.05)
    assert len(started) <= 3


def test_one_thread_inside_tiles_and_restored():
    outside = st.slice_threads()
    assert 1 <= outside <= st.MAX_SLICE_THREADS
    with st.one_thread():
        assert st.slice_threads() == 1
        with st.one_thread():
            assert st.slice_threads() == 1
        assert st.slice_threads() == 1
    assert st.slice_threads() == outside


@pytest.mark.parametrize("with_check", [False, True])
def test_threaded_nway_choice_equals_one_thread(with_check):
    syn = fringe_stack(7, shape=(96, 120), noise=0.01, seed=4)
    gray = syn.stack.astype(np.float32) / 65535

    def focus(g):
        return fine_band_energy(g, presmooth=0.5, window=3.0)

    def smooth(m):
        return ndi.gaussian_filter(m, 2.5, mode="reflect")

    revise = None
    if with_check:
        def revise(choice, scores, trust):
            return consistency.check(choice, scores, trust, consistency=16, agreement=0.4)

    results = [st.nway_choice(focus, gray, smooth, floor=1e-6, revise=revise, threads=n)
               for n in (1, 2, 3)]
    for weights, confidence in results[1:]:
        assert np.array_equal(weights, results[0][0])
        assert np.array_equal(confidence, results[0][1])


def _immerkaer_gathered(g, ys, xs):
    def at(dy, dx):
        return g[np.ix_(ys + dy, xs + dx)]

    r = at(-1, -1) - 2 * at(-1, 0) + at(-1, 1)
    r += -2 * at(0, -1) + 4 * at(0, 0) - 2 * at(0, 1)
    r += at(1, -1) - 2 * at(1, 0) + at(1, 1)
    return r


@pytest.mark.parametrize("shape, step, lo", [((200, 173), 3, 5), ((9, 9), 1, 0),
                                             ((4, 300), 7, 0), ((64, 64), 2, 17)])
def test_strided_noise_samples_equal_gathered_ones(shape, step, lo):
    g = np.random.default_rng(1).random(shape, dtype=np.float32)
    ys = st._grid_points(shape[0], step, lo, shape[0], 0)
    xs = st._grid_points(shape[1], step, 0, shape[1], 0)
    assert np.array_equal(st._immerkaer_at(g, ys, xs), _immerkaer_gathered(g, ys, xs))


def _check_per_slice(choice, scores, confidence, consistency_sigma, agreement):
    """The check written the plain way: one full-resolution vote map per slice, every
    pixel's alternative scored over the whole image."""
    z = len(scores)
    h, w = choice.shape
    block = consistency.BLOCK
    weight = np.ones((h, w), np.float32) if confidence is None else confidence
    cum = np.zeros((z + 1, -(-h // block), -(-w // block)), np.float32)
    for k in range(z):
        means = st._block_sums(np.where(choice == k, weight, 0), block) / block ** 2
        cum[k + 1] = cum[k] + ndi.gaussian_filter(means, consistency_sigma / block,
                                                  mode="reflect", truncate=3.0)
    by = (np.arange(h) // block)[:, None]
    bx = (np.arange(w) // block)[None, :]
    c = choice.astype(np.intp)
    total = cum[z][by, bx]
    near = cum[np.clip(c + 1, 0, z - 1) + 1, by, bx] - cum[np.clip(c - 1, 0, z - 1), by, bx]
    bad = (near < agreement * total) & (total > 1e-3)
    median = np.minimum((cum[1:] < 0.5 * cum[z][None]).sum(axis=0), z - 1)[by, bx]
    best = np.full((h, w), -np.inf, np.float32)
    alternative = median.copy()
    for k in range(z):
        better = bad & (np.abs(median - k) <= 1) & (scores[k] > best)
        best[better] = scores[k][better]
        alternative[better] = k
    return np.where(bad, alternative, c)


@pytest.mark.parametrize("dtype", [np.uint8, np.intp])
def test_consistency_check_equals_the_plain_per_slice_version(dtype):
    rng = np.random.default_rng(7)
    z, h, w = 9, 70, 83  # partial blocks at both edges
    truth = np.where(np.arange(w)[None, :] < 40, 2, 6) * np.ones((h, 1), int)
    choice = truth.copy()
    far = rng.random((h, w)) < 0.3
    choice[far] = rng.integers(0, z, far.sum())  # many isolated wrong picks, some at 0
    scores = [rng.random((h, w), dtype=np.float32) for _ in range(z)]
    confidence = rng.random((h, w), dtype=np.float32)
    got = consistency.check(choice.astype(dtype), scores, confidence, consistency=12,
                            agreement=0.5)
    assert got.dtype == dtype
    want = _check_per_slice(choice, scores, confidence, 12, 0.5)
    assert np.array_equal(got.astype(np.intp), want)
    assert (got != choice).sum() > 100  # the check did change something


def test_flat_area_blend_equals_the_formula_everywhere():
    rng = np.random.default_rng(3)
    z, h, w = 6, 64, 80
    weights = rng.random((z, h, w), dtype=np.float32)
    weights /= weights.sum(axis=0, keepdims=True)
    confidence = np.clip(rng.random((h, w), dtype=np.float32) * 2 - 0.5, 0, 1)
    out = st.fill_flat_areas(weights, confidence)
    sure = confidence >= 1
    assert 0 < sure.mean() < 1
    assert np.array_equal(out[:, sure], weights[:, sure])  # confident pixels untouched
    np.testing.assert_allclose(out.sum(axis=0), 1, atol=1e-5)
    # the unconfident ones: c * w + (1 - c) * a normalised Gaussian over slices
    low = ~sure
    c = confidence[low]
    flat = (out[:, low] - c * weights[:, low]) / (1 - c)
    np.testing.assert_allclose(flat.sum(axis=0), 1, atol=1e-3)
    centre = (np.arange(z)[:, None] * flat).sum(axis=0)
    spread = np.sqrt(((np.arange(z)[:, None] - centre) ** 2 * flat).sum(axis=0))
    assert np.all(spread[(centre > 1.5) & (centre < z - 2.5)] > 0.9)
    assert not np.shares_memory(out, weights)


def test_cli_fuses_a_tiff_without_importing_dask(tmp_path):
    syn = mf.focal_stack(n_slices=4, shape=(64, 64), seed=2)
    tif = tmp_path / "stack.tif"
    tifffile.imwrite(tif, syn.stack)
    code = ("import sys; from napari_mfif.cli import main; "
            f"rc = main(['fuse', {str(tif)!r}, '-o', {str(tmp_path / 'out.tif')!r}, '-q']); "
            "print('dask' in sys.modules, rc)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["False", "0"]
    fused = tifffile.imread(tmp_path / "out.tif")
    assert fused.dtype == syn.stack.dtype and fused.shape == syn.sharp.shape


@pytest.mark.parametrize("shape, sigma", [((60, 75), 2.5), ((18, 23), 4.0), ((40, 40), 0.0)])
def test_decision_smoothing_in_boxes_equals_the_whole_map(shape, sigma):
    rng = np.random.default_rng(5)
    z = 6
    # slices win blobs of different sizes, some at the edges, one slice wins nothing
    labels = ndi.zoom(rng.integers(0, z - 1, (4, 5)), (shape[0] / 4, shape[1] / 5), order=0)
    gray = np.stack([np.where(labels == k, 2.0, 1.0) * (1 + 0.1 * rng.random(shape))
                     for k in range(z)]).astype(np.float32)

    def smooth(m):
        return mf.focus._ops.NUMPY.gaussian(m, sigma)

    def focus(g):
        return g

    plain = st.nway_choice(focus, gray, smooth)[0]
    boxed = st.nway_choice(focus, gray, smooth,
                           smooth_reach=mf.focus._ops.radius(sigma))[0]
    assert np.array_equal(plain, boxed)
    assert np.all(boxed[z - 1] == 0)  # the slice nobody chose
