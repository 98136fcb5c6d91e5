"""Which axis and which order the slices are in: a stack fused along the wrong axis or in
the wrong order with exit status 0 is the worst result the tool can give, so every way the
layout is known (an argument, the file's axes, the file names) is checked against the same
stack laid out plainly, and a layout only a guess could tell is refused."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image
from scipy import ndimage as ndi

import napari_mfif as mf
from napari_mfif import MfifError
from napari_mfif.align import visible_shift
from napari_mfif.io import natural_sorted
from napari_mfif.stack import looks_like_z_last
from napari_mfif.synthetic import cells_image, focal_stack

from conftest import psnr


def run_cli(*args):
    exe = Path(sys.executable).parent / "napari-mfif"
    return subprocess.run([str(exe), *map(str, args)], capture_output=True, text=True)


@pytest.fixture(scope="module")
def stack():
    """10 slices of 96 x 96 uint16 with ground truth."""
    return focal_stack(n_slices=10, shape=(96, 96), dtype=np.uint16, seed=31)


# -- the API ---------------------------------------------------------------------------------


def test_shape_rule():
    assert looks_like_z_last((256, 256, 10))      # ten slices laid out last
    assert looks_like_z_last((256, 256, 10, 3))   # ... in colour
    assert not looks_like_z_last((10, 256, 256))  # the usual (Z, Y, X)
    assert not looks_like_z_last((200, 150, 150))  # many slices of a small crop
    assert not looks_like_z_last((5, 64, 64, 3))
    assert not looks_like_z_last((256, 256, 3))   # one RGB image (refused elsewhere)


def test_api_refuses_z_last_without_being_told(stack):
    yxz = np.moveaxis(stack.stack, 0, -1)
    with pytest.raises(MfifError, match=r"which axis holds the slices of a \(96, 96, 10\).*z_axis"):
        mf.fuse(yxz)


def test_api_z_axis_gives_the_plain_result(stack):
    plain = mf.fuse(stack.stack)
    yxz = np.moveaxis(stack.stack, 0, -1)
    before = yxz.copy()
    moved = mf.fuse(yxz, z_axis=2)
    assert np.array_equal(yxz, before)  # input untouched
    assert np.array_equal(moved.image, plain.image)
    assert np.array_equal(moved.index_map, plain.index_map)
    assert np.array_equal(mf.fuse(yxz, z_axis=-1).image, plain.image)
    # the answer is the in-focus image, not a fusion across x
    assert psnr(stack.sharp, moved.image, 65535) > \
        max(psnr(stack.sharp, s, 65535) for s in stack.stack) + 3


def test_api_z_axis_with_channel_and_time_axes(stack):
    rgb = np.stack([stack.stack, stack.stack // 2, stack.stack // 3], axis=-1)  # (Z, Y, X, C)
    plain = mf.fuse(rgb)
    # (C, Y, X, Z): every axis named, counted on the array as given
    cyxz = np.transpose(rgb, (3, 1, 2, 0))
    assert np.array_equal(mf.fuse(cyxz, z_axis=3, channel_axis=0).image, plain.image)
    # (T, Y, X, Z): two time points
    series = np.stack([stack.stack, stack.stack[::-1]])
    tyxz = np.moveaxis(series, 1, -1)
    out = mf.fuse(tyxz, z_axis=3, time_axis=0)
    assert np.array_equal(out.image[0], mf.fuse(series[0]).image)
    assert np.array_equal(out.index_map[1], mf.fuse(series[1]).index_map)


@pytest.mark.parametrize("kwargs, message", [
    (dict(z_axis=3), "z_axis 3 does not exist in a 3-D stack"),
    (dict(z_axis=1.5), "z_axis 1.5 does not exist"),
])
def test_api_bad_z_axis(stack, kwargs, message):
    with pytest.raises(MfifError, match=message):
        mf.fuse(stack.stack, **kwargs)


def test_api_z_axis_and_channel_axis_clash(stack):
    rgb = np.stack([stack.stack] * 3, axis=-1)
    with pytest.raises(MfifError, match="z_axis and channel_axis name the same axis"):
        mf.fuse(rgb, z_axis=3, channel_axis=3)


# -- the command line: axes ------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiffs(stack, tmp_path_factory):
    d = tmp_path_factory.mktemp("axes")
    yxz = np.moveaxis(stack.stack, 0, -1).copy()
    tifffile.imwrite(d / "zyx.tif", stack.stack)
    tifffile.imwrite(d / "yxz plain.tif", yxz)
    tifffile.imwrite(d / "yxz named.tif", yxz, metadata={"axes": "YXZ"})
    tifffile.imwrite(d / "zyx imagej.tif", stack.stack, imagej=True, metadata={"axes": "ZYX"})
    return d


def test_cli_refuses_an_unnamed_z_last_tiff(tiffs, tmp_path):
    res = run_cli("fuse", tiffs / "yxz plain.tif", "-o", tmp_path / "out.tif")
    assert res.returncode == 2 and not (tmp_path / "out.tif").exists()
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "--z-axis" in lines[0] and "(96, 96, 10)" in lines[0]


@pytest.mark.parametrize("name, extra", [
    ("yxz plain.tif", ["--z-axis", "2"]),
    ("yxz named.tif", []),          # tifffile's axes "YXZ"
    ("zyx imagej.tif", []),         # ImageJ hyperstack, Z first
])
def test_cli_reads_the_slice_axis(tiffs, tmp_path, name, extra):
    out, height = tmp_path / "out.tif", tmp_path / "height.tif"
    res = run_cli("fuse", tiffs / name, "-o", out, "--height-map", height, *extra)
    assert res.returncode == 0, res.stderr
    assert "fused 10 slices of 96x96 uint16" in res.stdout
    ref_out, ref_height = tmp_path / "ref.tif", tmp_path / "ref_height.tif"
    assert run_cli("fuse", tiffs / "zyx.tif", "-o", ref_out, "--height-map",
                   ref_height).returncode == 0
    assert np.array_equal(tifffile.imread(out), tifffile.imread(ref_out))
    assert np.array_equal(tifffile.imread(height), tifffile.imread(ref_height))


def test_cli_z_axis_needs_one_file(tiffs, tmp_path):
    res = run_cli("fuse", tiffs / "zyx.tif", tiffs / "zyx imagej.tif", "-o", tmp_path / "o.tif",
                  "--z-axis", "0")
    assert res.returncode == 2 and "--z-axis apply to one multi-page TIFF" in res.stderr


# -- the command line: the order of slice files ----------------------------------------------


@pytest.fixture(scope="module")
def numbered(stack, tmp_path_factory):
    """The stack as 10 PNG-free TIFF files plane_1 ... plane_10 (z order)."""
    d = tmp_path_factory.mktemp("numbered")
    files = []
    for k, sl in enumerate(stack.stack):
        files.append(d / f"plane_{k + 1}.tif")
        tifffile.imwrite(files[-1], sl)
    return files


def test_natural_order():
    assert natural_sorted(["a_10.tif", "a_9.tif", "a_1.tif"]) == ["a_1.tif", "a_9.tif", "a_10.tif"]
    # signed, decimal z offsets in the order of z; a hyphen after a letter is a separator
    assert natural_sorted(["t_47.5.tif", "t_-0.45.tif", "t_0.tif", "t_-43.4.tif", "t_7.97.tif"]) \
        == ["t_-43.4.tif", "t_-0.45.tif", "t_0.tif", "t_7.97.tif", "t_47.5.tif"]
    assert natural_sorted(["plane-2.jpg", "plane-10.jpg", "plane-1.jpg"]) \
        == ["plane-1.jpg", "plane-2.jpg", "plane-10.jpg"]
    assert natural_sorted(["B_2.png", "a_2.png", "a_1.png"]) == ["a_1.png", "a_2.png", "B_2.png"]


def test_cli_sorts_a_shell_glob_naturally(stack, numbered, tmp_path):
    shell = sorted(map(str, numbered))  # what plane_*.tif expands to: 1, 10, 2, 3, ...
    assert Path(shell[1]).name == "plane_10.tif"
    out, height = tmp_path / "out.tif", tmp_path / "h.tif"
    res = run_cli("fuse", *shell, "-o", out, "--height-map", height)
    assert res.returncode == 0, res.stderr
    assert "slices (natural order of the names): plane_1.tif, plane_2.tif, plane_3.tif, ... " \
           "(5 more), plane_9.tif, plane_10.tif" in res.stdout
    expected = mf.fuse(stack.stack)
    assert np.array_equal(tifffile.imread(out), expected.image)
    assert np.array_equal(tifffile.imread(height), expected.index_map)
    # the height map follows the true depth (slice units), not the shell's order
    assert np.corrcoef(tifffile.imread(height).ravel(), stack.depth.ravel())[0, 1] > 0.9


def test_cli_keep_order_takes_the_order_given(stack, numbered, tmp_path):
    given = list(reversed(numbered))
    out, height = tmp_path / "out.tif", tmp_path / "h.tif"
    res = run_cli("fuse", *given, "-o", out, "--height-map", height, "--keep-order")
    assert res.returncode == 0, res.stderr
    assert "slices (as given): plane_10.tif, plane_9.tif" in res.stdout
    assert np.array_equal(tifffile.imread(height), mf.fuse(stack.stack[::-1]).index_map)


# -- shifted slices --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def drifting():
    """8 slices of 256 x 256, each shifted 1.5 px further down and 1 px left (stage drift),
    defocus growing away from the middle; and the same stack without drift."""
    sharp = cells_image((256, 256), seed=5)
    still, moved = [], []
    for k in range(8):
        blurred = ndi.gaussian_filter(sharp, 0.5 + abs(k - 4) * 0.8)
        still.append(blurred)
        moved.append(ndi.shift(blurred, ((k - 4) * 1.5, -(k - 4) * 1.0), mode="nearest"))
    to8 = lambda a: np.clip(np.asarray(a) * 255, 0, 255).astype(np.uint8)  # noqa: E731
    return to8(still), to8(moved)


def test_visible_shift_finds_drift(drifting):
    still, moved = drifting
    assert visible_shift(still) is None
    shift = visible_shift(moved)
    assert shift is not None and abs(shift - 6.0) < 1.0  # slice 0: 6 px up from the middle


def test_cli_warns_about_shifted_slices(drifting, tmp_path):
    still, moved = drifting
    tifffile.imwrite(tmp_path / "moved.tif", moved)
    tifffile.imwrite(tmp_path / "still.tif", still)
    res = run_cli("fuse", tmp_path / "moved.tif", "-o", tmp_path / "a.tif")
    assert res.returncode == 0, res.stderr
    assert "shifted by up to 6 px" in res.stderr and "--align translation" in res.stderr
    res = run_cli("fuse", tmp_path / "moved.tif", "-o", tmp_path / "b.tif", "--align",
                  "translation")
    assert res.returncode == 0 and "shifted" not in res.stderr
    res = run_cli("fuse", tmp_path / "still.tif", "-o", tmp_path / "c.tif")
    assert res.returncode == 0 and res.stderr == ""


def test_png_slices_in_natural_order_with_the_api_too(stack, tmp_path):
    """io.natural_sorted is what scripts use on a glob; read_stack keeps the order given."""
    from napari_mfif.io import read_stack

    files = []
    for k, sl in enumerate(stack.stack[:3]):
        files.append(tmp_path / f"s_{k + 9}.png")  # s_9, s_10, s_11
        Image.fromarray((sl >> 8).astype(np.uint8)).save(files[-1])
    shell = sorted(map(str, files))
    assert [Path(p).name for p in natural_sorted(shell)] == ["s_9.png", "s_10.png", "s_11.png"]
    assert np.array_equal(read_stack(natural_sorted(shell))[0], read_stack(files)[0])
