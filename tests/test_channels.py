"""Microscopy layouts: channels, time series, slice alignment, 12-bit and signed data."""

import numpy as np
import pytest

import napari_mfif as mf
from napari_mfif import MfifError
from napari_mfif.synthetic import cells_image, fluorescence_image, focal_stack, smooth_depth

from conftest import psnr


@pytest.fixture(scope="module")
def three_channels():
    """Channel 0 carries the structure (a nuclear stain); 1 and 2 are dim and mostly noise."""
    depth = smooth_depth((96, 96), 6, seed=2)
    s = focal_stack(cells_image((96, 96), seed=2), depth, n_slices=6, dtype=np.float32, seed=2)
    rng = np.random.default_rng(3)
    other = [0.2 * focal_stack(fluorescence_image((96, 96), seed=k), depth, n_slices=6,
                               dtype=np.float32, seed=k).stack
             + rng.normal(0, 0.05, s.stack.shape).astype(np.float32) for k in (4, 5)]
    return s, np.stack([s.stack, *other], axis=-1)  # (Z, Y, X, 3)


def test_one_decision_for_every_channel(three_channels):
    s, stack = three_channels
    res = mf.fuse(stack, focus_channel=0, return_weights=True)
    alone = mf.fuse(stack[..., 0])
    # the decision is the one made on channel 0 alone, and it is applied to every channel
    assert np.array_equal(res.index_map, alone.index_map)
    assert np.allclose(res.image[..., 0], alone.image, atol=1e-5)
    for c in range(3):
        assert np.allclose(mf.apply_fusion(stack[..., c], res), res.image[..., c], atol=1e-5)
    # judging on the structured channel beats judging on the mean of all three
    mean_judged = mf.fuse(stack)
    err = lambda r: np.abs(r.index_map - s.depth).mean()  # noqa: E731
    assert err(res) < err(mean_judged)


def test_channel_axis_and_weighted_focus_channel(three_channels):
    _, stack = three_channels
    zcyx = np.ascontiguousarray(np.moveaxis(stack, -1, 1))
    last = mf.fuse(stack, focus_channel=0)
    first = mf.fuse(zcyx, channel_axis=1, focus_channel=0)
    assert np.array_equal(first.image, last.image) and first.image.shape == (96, 96, 3)
    combo = mf.fuse(stack, focus_channel=[1, 0, 0])
    assert np.array_equal(combo.index_map, last.index_map)


@pytest.mark.parametrize("kwargs, match", [
    ({"focus_channel": 3}, "focus channel 3 does not exist"),
    ({"focus_channel": [1, -1, 0]}, "non-negative weights"),
    ({"focus_channel": [1, 1]}, "3 non-negative weights"),
    ({"channel_axis": 4}, "must be an axis"),
])
def test_channel_options_are_checked(three_channels, kwargs, match):
    with pytest.raises(MfifError, match=match):
        mf.fuse(three_channels[1], **kwargs)


def test_time_series_is_fused_per_time_point(three_channels):
    _, stack = three_channels
    series = np.stack([stack, stack[:, ::-1]])  # (T, Z, Y, X, C)
    tczyx = np.moveaxis(series, -1, 1)  # (T, C, Z, Y, X)
    steps = []
    res = mf.fuse(tczyx, time_axis=0, channel_axis=1, focus_channel=0,
                  progress=lambda d, t: steps.append((d, t)))
    assert res.image.shape == (2, 96, 96, 3) and res.index_map.shape == (2, 96, 96)
    for t in range(2):
        one = mf.fuse(series[t], focus_channel=0)
        assert np.array_equal(res.image[t], one.image)
    assert steps[-1][0] == steps[-1][1] and [d for d, _ in steps] == sorted(d for d, _ in steps)


def test_apply_fusion_checks_what_it_gets(three_channels):
    _, stack = three_channels
    with pytest.raises(MfifError, match="return_weights=True"):
        mf.apply_fusion(stack, mf.fuse(stack))
    res = mf.fuse(stack, return_weights=True)
    with pytest.raises(MfifError, match="same shape"):
        mf.apply_fusion(stack[:, :50], res)


def test_aligned_fusion_of_a_drifting_stack():
    # a stack whose slices drift by up to 20 px (stage drift), cut from a larger scene
    big = focal_stack(cells_image((256, 256), seed=7), smooth_depth((256, 256), 8, seed=7),
                      n_slices=8, blur_per_slice=1.5, dtype=np.uint16, seed=7)
    drift = np.array([[0, 0], [3, -2], [7, -5], [10, -9], [12, -12], [15, -14], [18, -17],
                      [20, -20]])
    y0, x0, size = 40, 60, 160
    shifted = np.stack([big.stack[k, y0 + dy:y0 + dy + size, x0 + dx:x0 + dx + size]
                        for k, (dy, dx) in enumerate(drift)])
    res = mf.fuse(shifted, align="translation")
    a = res.alignment
    ref = a.reference
    expected = -(drift - drift[ref])  # content moves opposite to the window
    assert np.abs(a.shifts - expected).max() < 0.5
    # compare with fusing the undrifted stack, on the same part of the scene
    by0, by1, bx0, bx1 = a.box
    ry, rx = y0 + drift[ref][0], x0 + drift[ref][1]
    region = (slice(ry + by0, ry + by1), slice(rx + bx0, rx + bx1))
    still = mf.fuse(big.stack[(slice(None), *region)])
    truth = big.sharp[region]
    assert res.image.shape == truth.shape and res.image.dtype == np.uint16
    assert psnr(truth, res.image, 4095) > psnr(truth, still.image, 4095) - 1.0
    # and without alignment the drift ruins it
    naive = mf.fuse(shifted)  # in the first slice's window
    naive_truth = big.sharp[y0:y0 + size, x0:x0 + size]
    assert psnr(truth, res.image, 4095) > psnr(naive_truth, naive.image, 4095) + 3
    assert "slice 7" in a.report()


def test_12_bit_data_in_16_bit_keeps_its_range():
    s = focal_stack(n_slices=5, shape=(64, 64), dtype=np.uint16, seed=8)  # 0..4095
    assert s.stack.max() <= 4095
    res = mf.fuse(s.stack)
    assert res.image.dtype == np.uint16 and res.image.max() <= 4095
    assert res.image.max() > 0.9 * s.stack.max()  # not rescaled down either


def test_float32_keeps_negative_values():
    s = focal_stack(n_slices=5, shape=(64, 64), dtype=np.float32, seed=9)
    signed = s.stack - 0.5  # e.g. background-subtracted data
    res = mf.fuse(signed)
    assert res.image.dtype == np.float32 and res.image.min() < -0.2
    assert np.allclose(res.image, mf.fuse(s.stack).image - 0.5, atol=1e-5)


# -- the same through the command line ------------------------------------------------------

def test_cli_reads_channels_and_time_from_an_imagej_hyperstack(three_channels, tmp_path):
    import tifffile

    from napari_mfif.cli import main

    _, stack = three_channels
    series = np.stack([stack, stack[:, :, ::-1]])  # (T, Z, Y, X, C)
    tzcyx = np.ascontiguousarray(np.moveaxis(series, -1, 2))
    path = tmp_path / "hyper.tif"
    tifffile.imwrite(path, tzcyx, imagej=True, metadata={"axes": "TZCYX"})
    out = tmp_path / "fused.tif"
    assert main(["fuse", str(path), "-o", str(out), "--focus-channel", "0", "-q"]) == 0
    fused = tifffile.imread(out)
    expected = mf.fuse(series, time_axis=0, focus_channel=0).image
    assert fused.shape == expected.shape == (2, 96, 96, 3)
    assert np.array_equal(fused, expected)


def test_cli_aligns_and_reports_the_shifts(tmp_path, capsys):
    import tifffile

    from napari_mfif.cli import main

    big = focal_stack(cells_image((200, 200), seed=1), smooth_depth((200, 200), 5, seed=1),
                      n_slices=5, dtype=np.uint16, seed=1)
    drift = [(0, 0), (4, 2), (8, 4), (12, 6), (16, 8)]
    shifted = np.stack([big.stack[k, 20 + dy:150 + dy, 20 + dx:150 + dx]
                        for k, (dy, dx) in enumerate(drift)])
    tifffile.imwrite(tmp_path / "drift.tif", shifted)
    assert main(["fuse", str(tmp_path / "drift.tif"), "-o", str(tmp_path / "f.tif"),
                 "--align", "translation"]) == 0
    out = capsys.readouterr().out
    assert "aligned 5 slices to slice 2" in out
    line = next(ln for ln in out.splitlines() if ln.startswith("slice 4:"))
    dy, dx = (float(v.split()[1]) for v in line.split(":")[1].split(","))
    assert abs(dy + 8) < 0.5 and abs(dx + 4) < 0.5
    assert tifffile.imread(tmp_path / "f.tif").shape[0] < 130  # cropped to the common frame


@pytest.mark.parametrize("frame, size", [("crop", (100, 110)), ("pad", (120, 130))])
def test_slices_of_different_sizes_are_framed_then_aligned(frame, size):
    s = focal_stack(n_slices=3, shape=(120, 130), dtype=np.uint8, seed=12)
    slices = [s.stack[0], s.stack[1, 10:110, 10:120], s.stack[2]]  # centred crop in the middle
    with pytest.raises(MfifError, match="align them"):
        mf.fuse(slices)
    res = mf.fuse(slices, align="translation", align_frame=frame)
    assert res.image.dtype == np.uint8
    assert res.image.shape[0] <= size[0] and res.image.shape[1] <= size[1]
    assert np.abs(res.alignment.shifts).max() < 0.5  # centred frames already line up


def test_cli_height_map_in_micrometres(tmp_path):
    import tifffile

    from napari_mfif.cli import main

    s = focal_stack(n_slices=4, shape=(64, 64), dtype=np.uint16, seed=13)
    mf.write_image(tmp_path / "s.tif", s.stack, scale=(2.5, 0.5, 0.5), unit="µm", stack=True)
    args = ["fuse", str(tmp_path / "s.tif"), "-o", str(tmp_path / "f.tif"), "-q"]
    assert main(args + ["--height-map", str(tmp_path / "h.tif"), "--height-units",
                        "slices"]) == 0
    assert main(args[:3] + [str(tmp_path / "f2.tif"), "-q", "--height-map",
                            str(tmp_path / "hum.tif"), "--height-units", "um"]) == 0
    # by default (auto) in micrometres too, since the file stores its z step
    assert main(args[:3] + [str(tmp_path / "f4.tif"), "-q", "--height-map",
                            str(tmp_path / "hauto.tif")]) == 0
    slices, um = tifffile.imread(tmp_path / "h.tif"), tifffile.imread(tmp_path / "hum.tif")
    assert slices.max() > 1 and np.allclose(um, slices * 2.5)
    assert np.array_equal(tifffile.imread(tmp_path / "hauto.tif"), um)
    # no z step stored and none given: one sentence for um, slices for auto
    tifffile.imwrite(tmp_path / "plain.tif", s.stack, photometric="minisblack")
    assert main(["fuse", str(tmp_path / "plain.tif"), "-o", str(tmp_path / "f3.tif"), "-q",
                 "--height-map", str(tmp_path / "h3.tif"), "--height-units", "um"]) == 2
    assert not (tmp_path / "f3.tif").exists()
    assert main(["fuse", str(tmp_path / "plain.tif"), "-o", str(tmp_path / "f3.tif"), "-q",
                 "--height-map", str(tmp_path / "h3.tif")]) == 0
    assert np.array_equal(tifffile.imread(tmp_path / "h3.tif"), slices)


def test_cli_aligns_files_of_different_sizes(tmp_path):
    from napari_mfif.cli import main

    s = focal_stack(n_slices=3, shape=(120, 130), dtype=np.uint8, seed=12)
    paths = []
    for k, sl in enumerate([s.stack[0], s.stack[1, 10:110, 10:120], s.stack[2]]):
        paths.append(tmp_path / f"z{k}.png")
        mf.write_image(paths[-1], sl)
    out = tmp_path / "f.png"
    assert main(["fuse", *map(str, paths), "-o", str(out), "-q"]) == 2  # sizes differ
    assert main(["fuse", *map(str, paths), "-o", str(out), "-q", "--align", "translation"]) == 0
    h, w = mf.read_stack([out, out]).shape[1:]
    assert 96 <= h <= 100 and 106 <= w <= 110  # the crop rule, less what alignment trims
