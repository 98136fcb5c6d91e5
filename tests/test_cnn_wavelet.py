"""cnn_wavelet: DWT fusion driven by the focus CNN's decision, resampled to every level."""

import numpy as np
import pytest
import tifffile
from scipy import ndimage as ndi

import napari_mfif as mf
from napari_mfif.cli import main
from napari_mfif.fusion import cnn_wavelet as cw
from napari_mfif.fusion import multiscale as ms
from napari_mfif.synthetic import cells_image, fluorescence_image, focal_stack

from conftest import psnr

MODES = ["nway", "series"]


def test_is_a_registered_cnn_method():
    spec = mf.available_methods()["cnn_wavelet"]
    cnn = mf.available_methods()["cnn"]
    assert spec.modes == ("nway", "series") and spec.devices == ("cpu", "cuda")
    assert not spec.pixelwise and spec.tiling is not None
    # its own DWT parameters, then the cnn method's, with the cnn's defaults and choices
    assert spec.params == {"wavelet": "db2", "levels": 5, **cnn.params}
    assert spec.param_choices["wavelet"] == ms.WAVELETS
    assert spec.param_choices["arch"] == cnn.param_choices["arch"]
    assert all(spec.param_help[k] == cnn.param_help[k] for k in cnn.params)


# -- the maps on the coefficient grids ------------------------------------------------------------

@pytest.mark.parametrize("wavelet", ms.WAVELETS)
@pytest.mark.parametrize("shape", [(97, 131), (16, 16), (40, 23)])
def test_level_maps_have_the_band_sizes_and_keep_a_constant(wavelet, shape):
    levels = ms.wavelet_levels(shape, wavelet, 5)
    coeffs = ms.wavelet_decompose(np.zeros(shape, np.float32), wavelet, levels)
    const = np.full((3,) + shape, 0.37, np.float32)
    maps = cw.level_maps(const, wavelet, levels)
    assert len(maps) == levels
    # finest first; the last also has the low band's size
    assert [m.shape[1:] for m in maps] == [b[0].shape for b in reversed(coeffs[1:])]
    assert maps[-1].shape[1:] == coeffs[0].shape
    for m in maps:
        assert m.dtype == np.float32
        np.testing.assert_array_equal(m, np.float32(0.37))


@pytest.mark.parametrize("wavelet", ["haar", "db2", "bior4.4"])
def test_level_weights_sum_to_one_at_every_level(wavelet):
    rng = np.random.default_rng(0)
    raw = rng.random((5, 70, 90)).astype(np.float32) ** 4  # uneven, some near zero
    weights = raw / raw.sum(axis=0)
    levels = ms.wavelet_levels((70, 90), wavelet, 5)
    for w in cw.level_weights(weights, wavelet, levels):
        assert w.min() >= 0
        np.testing.assert_allclose(w.sum(axis=0), 1, atol=1e-6)
    # the block means keep the slices' shares: a one-hot map stays one-hot away from seams
    onehot = np.zeros((2, 64, 64), np.float32)
    onehot[0, :, :32] = onehot[1, :, 32:] = 1
    for level, w in enumerate(cw.level_weights(onehot, wavelet, 3), start=1):
        assert np.allclose(w[0, :, : 16 // 2 ** level], 1) and np.allclose(w[0, :, -2:], 0)


@pytest.mark.parametrize("wavelet", ["haar", "db2", "db4"])
def test_level_maps_are_block_means_on_the_dwt_grid(wavelet):
    # coefficient i of level l stands for the 2^l pixels from 2^l i - s (2^l - 1), where s is
    # the symmetric-mode grid's shift (filter length - 2) / 2
    rng = np.random.default_rng(1)
    m = rng.random((80, 96))
    s = (ms._pywt().Wavelet(wavelet).dec_len - 2) // 2
    for level, mapped in enumerate(cw.level_maps(m, wavelet, 3), start=1):
        n = 2 ** level
        for i, j in [(5, 6), (7, 9), (8, 3)]:
            y0, x0 = n * i - s * (n - 1), n * j - s * (n - 1)
            assert mapped[i, j] == pytest.approx(m[y0:y0 + n, x0:x0 + n].mean(), rel=1e-12)


# -- fusion ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", MODES)
def test_identical_slices_give_the_slice_back(mode):
    image = cells_image((48, 61), seed=4)
    res = mf.fuse(np.stack([image] * 3), "cnn_wavelet", mode)
    assert res.image.dtype == np.float32
    np.testing.assert_allclose(res.image, image, atol=1e-5)
    for dtype, top in ((np.uint8, 255), (np.uint16, 65535)):
        ints = np.round(image * top).astype(dtype)
        out = mf.fuse(np.stack([ints] * 3), "cnn_wavelet", mode).image
        assert out.dtype == dtype and np.array_equal(out, ints)
    rgb = np.round(np.stack([image, image ** 2, 1 - image], axis=-1) * 255).astype(np.uint8)
    out = mf.fuse(np.stack([rgb] * 3), "cnn_wavelet", mode).image
    assert out.dtype == np.uint8 and np.array_equal(out, rgb)


@pytest.mark.parametrize("mode", MODES)
def test_fused_beats_every_slice_and_height_is_right(synth, mode):
    res = mf.fuse(synth.stack, "cnn_wavelet", mode)
    assert res.image.dtype == np.uint16 and res.image.shape == synth.sharp.shape
    assert res.weights is None
    fused_psnr = psnr(synth.sharp, res.image, 4095)
    slice_psnr = [psnr(synth.sharp, sl, 4095) for sl in synth.stack]
    assert fused_psnr > max(slice_psnr) + 6, (fused_psnr, slice_psnr)
    # as good as the CNN's own pixel blend, within a dB (33.0 against 33.4 dB in nway)
    assert fused_psnr > psnr(synth.sharp, mf.fuse(synth.stack, "cnn", mode).image, 4095) - 1
    sharp = synth.sharp.astype(np.float32)
    energy = ndi.gaussian_filter(ndi.sobel(sharp, 0) ** 2 + ndi.sobel(sharp, 1) ** 2, 2)
    textured = energy > np.percentile(energy, 25)
    err = np.abs(res.index_map - synth.depth)[textured]
    assert np.mean(err <= 1.0) > 0.95, np.mean(err <= 1.0)


def test_nway_index_map_is_the_cnns():
    s = focal_stack(n_slices=4, shape=(64, 72), seed=5)
    ours = mf.fuse(s.stack, "cnn_wavelet", "nway")
    cnn = mf.fuse(s.stack, "cnn", "nway")
    np.testing.assert_allclose(ours.index_map, cnn.index_map, atol=1e-6)
    # a different fusion of the same decision
    assert not np.array_equal(ours.image, cnn.image)


def test_colour_uses_one_decision_and_stays_in_range(synth):
    gray = synth.stack.astype(np.float32)
    gains = np.array([0.5, 1.0, 2.0], np.float32)
    for mode in MODES:
        res = mf.fuse(gray[..., None] * gains, "cnn_wavelet", mode)
        ref = mf.fuse(gray, "cnn_wavelet", mode)
        assert res.image.shape == gray.shape[1:] + (3,)
        np.testing.assert_allclose(res.image, ref.image[..., None] * gains, rtol=1e-4, atol=0.05)
        np.testing.assert_allclose(res.index_map, ref.index_map, atol=1e-4)
        assert gray.min() <= ref.image.min() and ref.image.max() <= gray.max()


def test_parameters_are_checked_and_change_the_result(synth):
    with pytest.raises(mf.MfifError, match="must be one of"):
        mf.fuse(synth.stack, "cnn_wavelet", wavelet="nope")
    with pytest.raises(mf.MfifError, match="must be one of"):
        mf.fuse(synth.stack, "cnn_wavelet", arch="nope")
    a = mf.fuse(synth.stack, "cnn_wavelet", wavelet="haar", levels=2)
    b = mf.fuse(synth.stack, "cnn_wavelet", wavelet="db4", levels=4)
    assert a.params["wavelet"] == "haar" and b.params["levels"] == 4
    assert not np.array_equal(a.image, b.image)


def test_no_pixel_weights_and_progress_to_the_end(synth):
    for mode in MODES:
        seen = []
        res = mf.fuse(synth.stack, "cnn_wavelet", mode, return_weights=True,
                      progress=lambda done, total: seen.append((done, total)))
        assert res.weights is None
        assert seen and seen[-1][0] == seen[-1][1]
        assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    with pytest.raises(mf.MfifError, match="transform domain"):
        mf.apply_fusion(synth.stack, res)


def test_slices_smaller_than_a_patch_are_one_sentence():
    with pytest.raises(mf.MfifError, match="'cnn_wavelet' judges 16 x 16 patches") as info:
        mf.fuse(np.zeros((2, 12, 40), np.float32), "cnn_wavelet")
    assert "\n" not in str(info.value)


def test_focus_map_of_two_slices_is_the_cnns():
    sharp = cells_image((64, 96), seed=8)
    blurred = ndi.gaussian_filter(sharp, 3)
    a, b = np.hstack([sharp[:, :48], blurred[:, 48:]]), np.hstack([blurred[:, :48], sharp[:, 48:]])
    ours = mf.focus_map(a, b, method="cnn_wavelet")
    cnn = mf.focus_map(a, b, method="cnn")
    assert np.array_equal(ours.decision, cnn.decision) and np.array_equal(ours.score, cnn.score)
    assert ours.decision[8:-8, 8:36].mean() > 0.9 and ours.decision[8:-8, 60:88].mean() < 0.1


# -- surfaces, tiles, memory ------------------------------------------------------------------

def test_cli_runs_it(tmp_path, capsys):
    s = focal_stack(n_slices=3, shape=(40, 52), dtype=np.uint16, seed=12)
    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, s.stack)
    assert main(["fuse", str(path), "-o", str(tmp_path / "f.tif"), "--method", "cnn_wavelet",
                 "-p", "wavelet=haar", "-p", "levels=2", "-q"]) == 0
    assert np.array_equal(tifffile.imread(tmp_path / "f.tif"),
                          mf.fuse(s.stack, "cnn_wavelet", wavelet="haar", levels=2).image)
    capsys.readouterr()
    assert main(["methods"]) == 0
    assert "cnn_wavelet" in capsys.readouterr().out


@pytest.mark.parametrize("mode,z,rule", [("nway", 3, "soft"), ("nway", 3, "hard"),
                                         ("series", 2, "soft")])
def test_tiles_match_whole_image_within_float_tolerance(mode, z, rule):
    # two levels and a small guided filter keep the reach (62 px) at one 64-px overlap, so
    # that the windows (at most 192 px) are smaller than the image in both directions
    s = focal_stack(fluorescence_image((250, 283), seed=3), n_slices=3, photons=200.0, seed=3)
    kw = dict(levels=2, gf_radius=2, min_region=0, nway_rule=rule)
    whole = mf.fuse(s.stack[:z], "cnn_wavelet", mode, **kw)
    tiled = mf.fuse(s.stack[:z], "cnn_wavelet", mode, tile_size=64, **kw)
    plan = tiled.tiles.plan
    assert plan.overlap == 64 and plan.n_tiles == 20
    assert all(t.box[1] - t.box[0] < 250 and t.box[3] - t.box[2] < 283 for t in plan.tiles)
    diff = np.abs(whole.image.astype(np.int64) - tiled.image)
    assert diff.max() <= 1 and (diff > 0).mean() < 0.01  # rounding of equal floats
    assert np.abs(whole.index_map - tiled.index_map).max() < 1e-4


def test_tile_reach_covers_both_parts_and_levels_must_be_fixed():
    spec = mf.available_methods()["cnn_wavelet"]
    cnn = mf.available_methods()["cnn"]
    params = spec.resolve_params({})
    wavelet = ms._tile_reach("wavelet", {"levels": 5, "consistency": 0, "wavelet": "db2"}, 4,
                             "nway")
    reach = spec.tiling.reach(params, 4, "nway")
    assert reach == wavelet + cnn.tiling.reach(cnn.resolve_params({}), 4, "nway")
    assert spec.tiling.reach(params, 4, "series") == 3 * reach
    assert spec.tiling.align == 64
    s = focal_stack(n_slices=2, shape=(64, 64), seed=1)
    with pytest.raises(mf.MfifError, match="cnn_wavelet needs a fixed number of levels"):
        mf.fuse(s.stack, "cnn_wavelet", levels=0, tile_size=64)
    with pytest.raises(mf.MfifError, match="cnn_wavelet needs a fixed number of levels"):
        mf.fuse(s.stack, "cnn_wavelet", levels=7, tile_size=64)


def test_memory_estimate():
    from napari_mfif._memory import fusion_bytes

    def est(mode, z=10, c=None):
        shape = (z, 512, 512) if c is None else (z, 512, 512, c)
        return fusion_bytes(shape, np.uint16, "cnn_wavelet", mode)

    for mode in MODES:
        assert est(mode, 20) - est(mode, 10) == est(mode, 30) - est(mode, 20) > 0
        assert est(mode, c=4) - est(mode, c=3) == est(mode, c=5) - est(mode, c=4) > 0
        # the CNN's needs, and in series the DWT's on top
        cnn = fusion_bytes((10, 512, 512), np.uint16, "cnn", mode)
        assert est(mode) >= cnn and (est(mode) > cnn) == (mode == "series")
