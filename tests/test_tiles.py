"""Tile-by-tile fusion: the same answer as whole-image fusion, on any scheduler."""

import dask.array as da
import numpy as np
import pytest

import napari_mfif as mf
from napari_mfif import FusionCancelled, MfifError
from napari_mfif.synthetic import fluorescence_image, focal_stack
from napari_mfif.tiles import TILE_MULTIPLE, plan_tiles

# odd sizes, and tiles (128) that do not divide them
SHAPE = (301, 453)


def _fluorescence(dtype=np.uint16, n_slices=6, shape=SHAPE, seed=3):
    """Sparse objects on a dark noisy background: flat areas, so the noise floor and the
    flat-area fill (with its whole-image scales) are exercised."""
    sharp = fluorescence_image(shape, seed=seed)
    return focal_stack(sharp, n_slices=n_slices, photons=200.0, dtype=dtype, seed=seed)


def _same(a, b):
    assert a.image.dtype == b.image.dtype and a.image.shape == b.image.shape
    assert np.array_equal(a.image, b.image), np.abs(a.image.astype(float) - b.image).max()
    assert np.array_equal(a.index_map, b.index_map), np.abs(a.index_map - b.index_map).max()


def test_plan_covers_every_pixel_once_with_windows_on_the_grid():
    plan = plan_tiles(SHAPE, 100, 40)  # rounded up: tiles of 128, overlap of 48
    assert plan.tile == 128 and plan.overlap == 48
    covered = np.zeros(SHAPE, int)
    for t in plan.tiles:
        y0, y1, x0, x1 = t.view.core_global
        covered[y0:y1, x0:x1] += 1
        wy0, wy1, wx0, wx1 = t.box
        assert 0 <= wy0 and wy1 <= SHAPE[0] and 0 <= wx0 and wx1 <= SHAPE[1]
        assert wy0 % 16 == 0 and wx0 % 16 == 0 and y0 % TILE_MULTIPLE == 0
        # the overlap is there on every side except at the image edge
        assert y0 - wy0 == min(48, y0) and wx1 - x1 == min(48, SHAPE[1] - x1)
    assert (covered == 1).all()
    assert plan.n_tiles == 3 * 4


@pytest.mark.parametrize("method", ["tenengrad", "variance", "sml"])
@pytest.mark.parametrize("mode", ["nway", "series"])
def test_classic_tiles_equal_whole_image_bit_for_bit(method, mode):
    s = _fluorescence()
    whole = mf.fuse(s.stack, method, mode)
    tiled = mf.fuse(s.stack, method, mode, tile_size=128)
    assert tiled.tiles is not None and tiled.tiles.plan.n_tiles == 12
    _same(whole, tiled)


def test_the_noise_floor_fill_is_exercised_and_still_exact():
    # sml: the noise floor alone (the default method adds a consistency check, whose reach
    # the explicit 64-px overlap below would not cover)
    s = _fluorescence()
    plain = mf.fuse(s.stack, "sml", noise_floor=0)
    floored = mf.fuse(s.stack, "sml")
    # the fill changed a good part of the image (flat background), so the whole-image
    # scales it uses (noise level, 32 and 128 px fills) really went through the tiles
    changed = np.abs(plain.index_map - floored.index_map) > 0.5
    assert changed.mean() > 0.2, changed.mean()
    _same(floored, mf.fuse(s.stack, "sml", tile_size=64))
    # the 128-px scale reaches beyond any window: a single textured corner steers the rest
    _same(floored, mf.fuse(s.stack, "sml", tile_size=64, overlap=64))


@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_rgb_and_other_dtypes_tile_exactly(dtype):
    s = _fluorescence(dtype=np.float32)
    rgb = np.stack([s.stack, s.stack ** 2, 1 - s.stack], axis=-1)
    if dtype == np.uint8:
        rgb = np.clip(np.rint(rgb * 255), 0, 255).astype(np.uint8)
    rgb = rgb.astype(dtype)
    whole, tiled = mf.fuse(rgb), mf.fuse(rgb, tile_size=192)
    assert tiled.image.shape == SHAPE + (3,)
    _same(whole, tiled)


def test_focus_channel_and_channel_axis_go_through_tiles():
    s = _fluorescence()
    two = np.stack([s.stack, s.stack[::-1]], axis=1)  # (Z, C, Y, X)
    whole = mf.fuse(two, channel_axis=1, focus_channel=0)
    tiled = mf.fuse(two, channel_axis=1, focus_channel=0, tile_size=128)
    _same(whole, tiled)


@pytest.mark.parametrize("mode,rule,training", [
    ("nway", "soft", "papers"), ("nway", "hard", "papers"), ("series", "soft", "papers"),
    ("nway", "soft", "boundary"), ("series", "soft", "boundary")])
def test_cnn_tiles_match_whole_image_within_float_tolerance(mode, rule, training):
    """Also with the boundary weights, whose scores are placed at the patch centres."""
    s = _fluorescence(n_slices=4, shape=(211, 333))
    kw = dict(min_region=0, nway_rule=rule, training=training)
    whole = mf.fuse(s.stack, "cnn", mode, **kw)
    tiled = mf.fuse(s.stack, "cnn", mode, tile_size=128, **kw)
    diff = np.abs(whole.image.astype(np.int64) - tiled.image)
    assert diff.max() <= 1 and (diff > 0).mean() < 0.01  # rounding of equal floats
    assert np.abs(whole.index_map - tiled.index_map).max() < 1e-4


@pytest.mark.parametrize("mode", ["nway", "series"])
def test_cnn_tiles_match_with_the_mirrored_centre_spread_on_a_pyramid(mode):
    """The centre spread mirrors each window by half a patch at the coarsest level (16 px at
    two levels): tiles still agree with the whole image, also with no guided filter."""
    s = _fluorescence(n_slices=3, shape=(211, 333))
    kw = dict(min_region=0, training="boundary", pyramid_levels=2, gf_radius=0)
    whole = mf.fuse(s.stack, "cnn", mode, **kw)
    tiled = mf.fuse(s.stack, "cnn", mode, tile_size=128, **kw)
    assert np.abs(whole.image.astype(np.int64) - tiled.image).max() <= 1
    assert np.abs(whole.index_map - tiled.index_map).max() < 1e-4


def test_cnn_small_region_area_is_absolute_in_tiles():
    s = _fluorescence(n_slices=3, shape=(211, 333))
    tiled = mf.fuse(s.stack, "cnn", "nway", nway_rule="hard", tile_size=128, min_region=0.001)
    whole_same_area = mf.fuse(s.stack, "cnn", "nway", nway_rule="hard", min_region=0)
    # 0.001 of 1024^2 px = 1049 px: some regions below that were reassigned in the tiles
    assert not np.array_equal(tiled.index_map, whole_same_area.index_map)
    assert tiled.image.dtype == np.uint16


def test_dask_array_and_progress_over_tiles():
    s = _fluorescence()
    lazy = da.from_array(s.stack, chunks=(1, 100, 100))
    seen = []
    res = mf.fuse(lazy, tile_size=128, progress=lambda done, total: seen.append((done, total)))
    _same(mf.fuse(s.stack), res)
    # three passes (noise sample, coarse fill maps, fusion) over 12 tiles
    assert seen[0] == (0, 36) and seen[-1] == (36, 36)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)


def test_cancel_between_tiles():
    s = _fluorescence()

    def progress(done, total):
        if done >= 5:
            raise FusionCancelled()

    with pytest.raises(FusionCancelled):
        mf.fuse(s.stack, tile_size=128, progress=progress)


def test_a_stack_too_large_for_memory_is_tiled_not_refused(monkeypatch):
    from napari_mfif import _memory

    s = _fluorescence()
    whole = mf.fuse(s.stack)
    monkeypatch.setattr(_memory, "available_bytes", lambda: 1024)
    res = mf.fuse(s.stack)
    assert res.tiles is not None
    _same(whole, res)
    # what cannot be tiled is still refused, in one line
    with pytest.raises(MfifError, match="tile by tile"):
        mf.fuse(s.stack, return_weights=True)


@pytest.mark.parametrize("kwargs,match", [
    ({"tile_size": 128, "align": "translation"}, "align needs the whole stack"),
    ({"tile_size": 128, "return_weights": True}, "return_weights is not available tile by tile"),
    ({"tile_size": -64}, "tile size must be a positive"),
    ({"tile_size": 12.5}, "tile size must be a positive"),
    ({"overlap": -3}, "overlap must be a whole number"),
])
def test_bad_tiling_requests_are_one_line_errors(kwargs, match):
    s = _fluorescence(n_slices=3, shape=(64, 64))
    with pytest.raises(MfifError, match=match) as info:
        mf.fuse(s.stack, **kwargs)
    assert "\n" not in str(info.value)


def test_a_method_that_cannot_tile_says_which_can(monkeypatch):
    from napari_mfif.registry import _REGISTRY, Method

    tenengrad = mf.available_methods()["tenengrad"]
    whole_only = Method(name="whole-only", summary="a method without tiling",
                        run=tenengrad.run, params=dict(tenengrad.params))
    monkeypatch.setitem(_REGISTRY, "whole-only", whole_only)
    s = _fluorescence(n_slices=3, shape=(64, 64))
    assert mf.fuse(s.stack, "whole-only").image.shape == (64, 64)
    with pytest.raises(MfifError, match="'whole-only' cannot run tile by tile.*tenengrad"):
        mf.fuse(s.stack, "whole-only", tile_size=64)


def test_cnn_reach_constants_match_the_network():
    from napari_mfif.focus import cnn
    from napari_mfif.fusion import cnn_pipeline

    assert cnn_pipeline.MARGIN_PX == cnn.MARGIN and cnn_pipeline.PATCH == cnn.PATCH


def test_local_cluster_with_two_worker_processes_gives_the_same_result():
    distributed = pytest.importorskip("distributed")
    s = _fluorescence()
    whole = mf.fuse(s.stack)
    lazy = da.from_array(s.stack, chunks=(1, 128, 128))
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        with distributed.get_task_stream(client) as stream:
            res = mf.fuse(lazy, tile_size=128)
        assert res.tiles.workers == 2
        # the fusion tasks really ran in both worker processes
        ran = {t["worker"] for t in stream.data if "task_fuse" in str(t["key"])}
        assert len(ran) == 2, ran
    _same(whole, res)


def test_bands_taller_than_the_hand_on_slices_arrive_in_order():
    from napari_mfif.tiles import BAND_ROWS, run_tiles

    s = _fluorescence()
    bands = []
    run_tiles(da.from_array(s.stack), "tenengrad", "nway", "cpu",
              mf.available_methods()["tenengrad"].params, tile=320,
              on_band=lambda y0, image, height: bands.append((y0, image, height)))
    assert [y0 for y0, _, _ in bands] == [0, BAND_ROWS]  # one band of 301 rows, in 2 slices
    image = np.concatenate([b[1] for b in bands])
    assert np.array_equal(image, mf.fuse(s.stack, "tenengrad").image)


@pytest.mark.parametrize("method", ["laplacian_pyramid", "wavelet"])
@pytest.mark.parametrize("mode,levels", [("nway", 3), ("nway", 5), ("series", 2)])
def test_multiscale_tiles_equal_whole_image_bit_for_bit(method, mode, levels):
    # 600 x 700 so that even the widest default overlap (384 px) leaves windows smaller
    # than the image; every level's sample grid must line up with the whole image's
    from napari_mfif.synthetic import cells_image

    s = focal_stack(cells_image((600, 700), seed=2), n_slices=4, photons=200.0, seed=2)
    whole = mf.fuse(s.stack, method, mode, levels=levels)
    tiled = mf.fuse(s.stack, method, mode, levels=levels, tile_size=128)
    assert tiled.tiles.plan.overlap % 64 == 0
    _same(whole, tiled)
    # a user overlap is rounded up onto the grid too; too small an overlap shows
    short = mf.fuse(s.stack, method, mode, levels=levels, tile_size=128, overlap=1)
    assert short.tiles.plan.overlap == 64
    if levels == 5:  # its real reach (70-80 px) is beyond 64 px
        assert not np.array_equal(whole.image, short.image)


def test_multiscale_tiles_need_a_fixed_number_of_levels():
    s = _fluorescence(n_slices=3, shape=(64, 64))
    with pytest.raises(MfifError, match="wavelet needs a fixed number of levels"):
        mf.fuse(s.stack, "wavelet", levels=0, tile_size=64)


def test_fuse_tiles_a_large_stack_unasked_and_tile_size_0_keeps_it_whole(monkeypatch):
    """fuse() applies the CLI's rule: a stack whose whole-image fusion would be large
    (threshold lowered here) goes tile by tile, to the same result; tile_size=0 keeps it
    whole; return_weights (which tiles cannot give) keeps it whole too."""
    from napari_mfif import _memory

    s = _fluorescence()
    whole = mf.fuse(s.stack)
    assert whole.tiles is None
    monkeypatch.setattr(_memory, "TILE_ABOVE_BYTES", 1024)
    tiled = mf.fuse(s.stack)
    assert tiled.tiles is not None
    _same(whole, tiled)
    assert mf.fuse(s.stack, tile_size=0).tiles is None
    assert mf.fuse(s.stack, return_weights=True).tiles is None
