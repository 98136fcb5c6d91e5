"""Microscope files (napari_mfif.formats): OME-Zarr written here with known physical sizes,
the z order and z values of the height map, the CLI, batch and the napari reader; and the
real CZI, ND2, LIF, OME-TIFF and OME-Zarr files of ../shared/data/vendor_formats where
they are present (skipped where not)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import tifffile

import napari_mfif as mf
from napari_mfif import formats
from napari_mfif._errors import MfifError
from napari_mfif.cli import main
from napari_mfif.io import read_physical_scale
from napari_mfif.synthetic import focal_stack

pytest.importorskip("bioio_ome_zarr")
zarr = pytest.importorskip("zarr")

VENDOR = Path(os.environ.get("MFIF_SHARED_DATA",
                             Path(__file__).resolve().parents[2] / "shared" / "data")
              ) / "vendor_formats"


def write_ome_zarr(root: Path, stack: np.ndarray, scale_zyx, *, bioformats2raw=False,
                   name: str = "synthetic") -> Path:
    """A (Z, Y, X) stack, or a (T, C, Z, Y, X) array, as an NGFF 0.4 OME-Zarr (zarr v2, axes
    t c z y x, one level, one chunk per plane), in the layout bioformats2raw writes (image
    in group "0") when asked."""
    data = stack if stack.ndim == 5 else stack[None, None]
    image = root / "0" if bioformats2raw else root
    group = zarr.open_group(str(image), mode="w", zarr_format=2)
    group.create_array("0", data=data, chunks=(1, 1, 1) + data.shape[3:])
    group.attrs["multiscales"] = [{
        "version": "0.4", "name": name,
        "axes": [{"name": "t", "type": "time"}, {"name": "c", "type": "channel"},
                 {"name": "z", "type": "space", "unit": "micrometer"},
                 {"name": "y", "type": "space", "unit": "micrometer"},
                 {"name": "x", "type": "space", "unit": "micrometer"}],
        "datasets": [{"path": "0", "coordinateTransformations": [
            {"type": "scale", "scale": [1.0, 1.0, *scale_zyx]}]}],
    }]
    if bioformats2raw:
        (root / ".zattrs").write_text(json.dumps({"bioformats2raw.layout": 3}))
        (root / ".zgroup").write_text(json.dumps({"zarr_format": 2}))
        (root / "OME").mkdir()
        (root / "OME" / ".zattrs").write_text(json.dumps({"series": ["0"]}))
        (root / "OME" / ".zgroup").write_text(json.dumps({"zarr_format": 2}))
    return root


@pytest.fixture(scope="module")
def sample():
    return focal_stack(n_slices=5, shape=(96, 96), blur_per_slice=1.5, dtype=np.uint16, seed=5)


@pytest.mark.parametrize("layout", [False, True], ids=["image", "bioformats2raw"])
def test_ome_zarr_fused_like_the_array_with_height_in_micrometres(tmp_path, sample, layout):
    root = write_ome_zarr(tmp_path / "s.ome.zarr", sample.stack, (2.5, 0.4, 0.4),
                          bioformats2raw=layout)
    stack = formats.open_stack(root)
    assert stack.sizes == {"T": 1, "C": 1, "Z": 5, "Y": 96, "X": 96}
    assert stack.pixel_size == (0.4, 0.4)
    assert np.allclose(stack.z_positions, [0, 2.5, 5, 7.5, 10])
    out, height = tmp_path / "f.ome.tif", tmp_path / "h.tif"
    assert main(["fuse", str(root), "-o", str(out), "--height-map", str(height), "-q"]) == 0
    expected = mf.fuse(sample.stack)
    fused = tifffile.imread(out)
    assert fused.dtype == np.uint16 and np.array_equal(fused, expected.image)
    assert np.allclose(tifffile.imread(height), expected.index_map * 2.5, atol=1e-4)
    assert read_physical_scale(out).scale == (0.4, 0.4)
    with tifffile.TiffFile(height) as tif:
        assert "planes at z = 0, 2.5, 5, 7.5, 10 µm" in tif.ome_metadata
    # --height-units slices keeps slices; --z-step overrides the file's step
    assert main(["fuse", str(root), "-o", str(tmp_path / "g.tif"), "--height-map",
                 str(tmp_path / "hs.tif"), "--height-units", "slices", "-q"]) == 0
    assert np.allclose(tifffile.imread(tmp_path / "hs.tif"), expected.index_map)
    assert main(["fuse", str(root), "-o", str(tmp_path / "k.tif"), "--height-map",
                 str(tmp_path / "hz.tif"), "--z-step", "0.5", "-q"]) == 0
    assert np.allclose(tifffile.imread(tmp_path / "hz.tif"), expected.index_map * 0.5,
                       atol=1e-4)


def _stack_with_z(data: np.ndarray, z) -> formats.MicroscopeStack:
    import dask.array as da

    return formats.MicroscopeStack(
        path=Path("made.czi"), scene="0", scene_index=0, scenes=("0",),
        data=da.from_array(data[None, None]), dims="TCZYX", channel_names=("c",),
        pixel_size=(1.0, 1.0), z_positions=None if z is None else np.asarray(z, float),
        z_source="test")


def test_planes_recorded_top_down_are_fused_in_rising_z(sample):
    """A negative z step (Leica writes them): the planes are turned over, so the same
    result as the stack given bottom up, and the height map holds the planes' real z."""
    up = _stack_with_z(sample.stack, [0, 2, 4, 6, 8])
    down = _stack_with_z(sample.stack[::-1].copy(), [8, 6, 4, 2, 0])
    a, b = formats.fuse_scene(up), formats.fuse_scene(down)
    assert np.array_equal(a.image, b.image) and np.allclose(a.height, b.height)
    truth_z = np.asarray(sample.depth, float) * 2  # the sharpest plane's z
    assert np.mean(np.abs(a.height - truth_z) < 1.0) > 0.9
    negative = _stack_with_z(sample.stack[::-1].copy(), [0, -2, -4, -6, -8])
    c = formats.fuse_scene(negative)
    assert np.array_equal(c.image, a.image) and np.allclose(c.height, a.height - 8)


def test_irregular_plane_positions_give_the_height_map(sample):
    z = [0.0, 1.0, 3.0, 7.0, 15.0]
    result = formats.fuse_scene(_stack_with_z(sample.stack, z))
    index = result.result.index_map
    assert np.allclose(result.height, np.interp(index, np.arange(5), z), atol=1e-4)
    # where the index is whole, the height is that plane's z, not index x mean step
    whole = np.isclose(index, 3)
    assert whole.any() and np.allclose(result.height[whole], 7.0, atol=1e-3)


def test_unknown_z_gives_slices(sample):
    result = formats.fuse_scene(_stack_with_z(sample.stack, None))
    assert result.z is None and result.height_units == "slices"
    assert np.allclose(result.height, result.result.index_map)


def test_missing_plugin_is_named(tmp_path, monkeypatch):
    import importlib.util

    (tmp_path / "a.nd2").write_bytes(b"not really")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "bioio_nd2" else real(name, *a))
    with pytest.raises(MfifError, match=r'bioio-nd2 package: pip install "napari-mfif\[formats\]"'):
        formats.open_stack(tmp_path / "a.nd2")


def test_bad_scene_and_bad_zarr(tmp_path, sample):
    root = write_ome_zarr(tmp_path / "s.zarr", sample.stack, (1.0, 1.0, 1.0))
    with pytest.raises(MfifError, match="has 1 scene .0 to 0., not scene 3"):
        formats.open_stack(root, 3)
    zarr.open_group(str(tmp_path / "plain.zarr"), mode="w", zarr_format=2)
    with pytest.raises(MfifError, match="not an OME-Zarr image"):
        formats.open_stack(tmp_path / "plain.zarr")
    assert main(["fuse", str(root), "-o", str(tmp_path / "o.tif"), "--z-axis", "1"]) == 2
    assert not (tmp_path / "o.tif").exists()


def test_batch_fuses_each_ome_zarr(tmp_path, sample):
    folder = tmp_path / "in"
    folder.mkdir()
    write_ome_zarr(folder / "a.ome.zarr", sample.stack, (2.0, 0.5, 0.5))
    write_ome_zarr(folder / "b.zarr", sample.stack[::-1].copy(), (2.0, 0.5, 0.5),
                   bioformats2raw=True)
    assert main(["batch", str(folder), "-o", str(tmp_path / "out"), "--height-map", "-q"]) == 0
    a = tifffile.imread(tmp_path / "out" / "a_fused.tif")
    b = tifffile.imread(tmp_path / "out" / "b_fused.tif")
    assert np.array_equal(a, b)  # the same slices, in reverse: the same image
    ha = tifffile.imread(tmp_path / "out" / "a_height.tif")
    assert 0 <= ha.min() and ha.max() <= 8 and ha.max() > 2  # micrometres, 2 µm a plane


# ---- the real files of ../shared/data/vendor_formats -------------------------------------

def vendor(relative: str) -> Path:
    path = VENDOR / relative
    if not path.exists():
        pytest.skip(f"{relative} not present (../shared/data/vendor_formats)")
    return path


def _fuse(tmp_path, path, *extra, height=True):
    out, h = tmp_path / "f.ome.tif", tmp_path / "h.ome.tif"
    args = ["fuse", str(path), "-o", str(out)] + (["--height-map", str(h)] if height else [])
    assert main(args + list(extra)) == 0
    return out, h


def test_nd2_fused_like_its_sharpest_plane_with_height_in_micrometres(tmp_path, capsys):
    pytest.importorskip("bioio_nd2")
    path = vendor("nd2/example-zstack.nd2")
    out, h = _fuse(tmp_path, path)
    assert "z step 6 µm from the file" in capsys.readouterr().out
    planes = formats.open_stack(path).data[0, 0].compute()
    fused, height = tifffile.imread(out), tifffile.imread(h)
    assert fused.dtype == np.uint16 and fused.shape == (128, 128)
    corr = [np.corrcoef(planes[z].ravel(), fused.ravel())[0, 1] for z in range(11)]
    assert int(np.argmax(corr)) == 5 and corr[5] > 0.99
    assert abs(float(np.median(height)) - 30.0) < 1.5  # plane 5 x 6 µm
    assert read_physical_scale(out).scale == pytest.approx((0.32339, 0.32339), rel=1e-4)


def test_ome_zarr_real_keeps_its_3um_step(tmp_path, capsys):
    path = vendor("ome_zarr/xyz_8bit__mitotic_plate_calibrated.ome.zarr")
    out, h = _fuse(tmp_path, path)
    assert "planes at z = 0, 3, 6, 9, 12, 15 µm" in capsys.readouterr().out
    height = tifffile.imread(h)
    assert height.min() >= 0 and height.max() <= 15
    # the chromosomes lie on several planes: the fused image draws on more than one
    assert len(np.unique(np.round(height / 3))) >= 3
    assert tifffile.imread(out).dtype == np.uint8


def test_czi_time_and_channels_each_fused(tmp_path):
    pytest.importorskip("bioio_czi")
    path = vendor("czi_czitools/CellDivision_T3_Z5_CH2_X240_Y170.czi")
    out, h = _fuse(tmp_path, path)
    with tifffile.TiffFile(out) as tif:
        assert tif.series[0].axes == "TCYX" and tif.series[0].shape == (3, 2, 170, 240)
    assert tifffile.imread(h).shape == (3, 170, 240)
    assert read_physical_scale(out).scale[-2:] == pytest.approx((0.0905767,) * 2, rel=1e-4)


def test_czi_scenes(tmp_path, capsys):
    pytest.importorskip("bioio_czi")
    path = vendor("czi_neubias/xyz__multiple_images.czi")
    _fuse(tmp_path, path, height=False)
    assert "holds 2 scenes; scene 0 was fused" in capsys.readouterr().out
    assert main(["fuse", str(path), "-o", str(tmp_path / "all.tif"), "--scene", "all",
                 "-q"]) == 0
    s0, s1 = (tifffile.imread(tmp_path / f"all_s{i}.tif") for i in (0, 1))
    assert s0.shape == s1.shape == (251, 251) and not np.array_equal(s0, s1)
    assert main(["fuse", str(path), "-o", str(tmp_path / "one.tif"), "--scene",
                 "xyz__multiple_images-1", "-q"]) == 0
    assert np.array_equal(tifffile.imread(tmp_path / "one.tif"), s1)


def test_lif_negative_step(tmp_path, capsys):
    pytest.importorskip("bioio_lif")
    path = vendor("lif/PR2729_frameOrderCombinedScanTypes.lif")
    out, h = _fuse(tmp_path, path)
    text = capsys.readouterr().out
    assert "top down" in text and "planes at z = -12.4552, -6.22761, 0 µm" in text
    height = tifffile.imread(h)
    assert height.shape == (2, 127, 127) and height.max() <= 0 and height.min() >= -12.5


def test_ome_tiff_without_physical_sizes_says_z_unknown(tmp_path, capsys):
    path = vendor("ome_tiff/multi-channel-z-series.ome.tif")
    out, _ = _fuse(tmp_path, path, height=False)
    assert "z step unknown" in capsys.readouterr().out
    with tifffile.TiffFile(out) as tif:
        assert tif.is_ome and tif.series[0].dtype == np.int8
        assert tif.series[0].shape == (167, 439, 3)


def test_napari_reader_opens_a_vendor_file_into_the_widget(make_napari_viewer, qtbot):
    """The ND2 through our reader in a real viewer: scale in µm, and the Fuse widget takes
    its z axis and gives the height map in µm (plane 5 x 6 µm)."""
    pytest.importorskip("bioio_nd2")
    path = vendor("nd2/example-zstack.nd2")
    viewer = make_napari_viewer()
    (layer,) = viewer.open(str(path), plugin="napari-mfif")
    assert layer.data.shape == (11, 128, 128) and layer.name == "example-zstack"
    assert np.allclose(layer.scale, (6.0, 0.32339, 0.32339), rtol=1e-4)
    _, widget = viewer.window.add_plugin_dock_widget("napari-mfif", "Fuse focal stack")
    assert widget.image.value is layer and widget.z_axis.value == 0
    widget.run()
    qtbot.waitUntil(lambda: not widget.running, timeout=120_000)
    height = viewer.layers["example-zstack height (µm)"]
    assert abs(float(np.median(np.asarray(height.data))) - 30.0) < 1.5
    fused = viewer.layers["example-zstack fused"]
    assert np.allclose(fused.scale, (0.32339, 0.32339), rtol=1e-4)
    # the same image as the command line and napari_mfif.formats give
    assert np.array_equal(np.asarray(fused.data),
                          formats.fuse_scene(formats.open_stack(path)).image)


def test_ome_tiff_plane_positions_used_for_the_height_map(tmp_path, sample, capsys):
    """An OME-TIFF whose planes carry their own PositionZ (irregular steps, recorded top
    down): fused in rising z, the height map holds those positions."""
    z = np.array([15.0, 7.0, 3.0, 1.0, 0.0])  # file order: top down, irregular
    path = tmp_path / "irregular.ome.tif"
    tifffile.imwrite(path, sample.stack[::-1].copy(), ome=True, metadata={
        "axes": "ZYX", "PhysicalSizeX": 0.5, "PhysicalSizeY": 0.5,
        "Plane": {"PositionZ": list(z), "PositionZUnit": ["µm"] * 5}})
    assert np.allclose(formats.tiff_plane_positions(path), z - 15)
    out, h = _fuse(tmp_path, path)
    assert "top down" in capsys.readouterr().out
    expected = mf.fuse(sample.stack)  # the same planes in rising z
    assert np.array_equal(tifffile.imread(out), expected.image)
    rising = np.sort(z - 15)
    assert np.allclose(tifffile.imread(h), np.interp(expected.index_map, np.arange(5), rising),
                       atol=1e-3)
    # a plain OME-TIFF (no positions) stays with the TIFF reader and its z step
    plain = tmp_path / "plain.ome.tif"
    tifffile.imwrite(plain, sample.stack, ome=True, metadata={"axes": "ZYX",
                                                              "PhysicalSizeZ": 2.0})
    assert formats.tiff_plane_positions(plain) is None
    assert main(["fuse", str(plain), "-o", str(tmp_path / "p.tif"), "--height-map",
                 str(tmp_path / "ph.tif"), "-q"]) == 0
    assert np.allclose(tifffile.imread(tmp_path / "ph.tif"), expected.index_map * 2)


def test_ome_zarr_tile_by_tile_equals_whole(tmp_path):
    """A scene fused tile by tile (read chunk by chunk from the OME-Zarr, written band by
    band) equals the whole-image fusion, height map in µm included."""
    big = focal_stack(n_slices=4, shape=(200, 200), blur_per_slice=1.5, dtype=np.uint16,
                      seed=8)
    root = write_ome_zarr(tmp_path / "big.ome.zarr", big.stack, (1.5, 0.3, 0.3))
    whole, tiles = tmp_path / "w.tif", tmp_path / "t.tif"
    assert main(["fuse", str(root), "-o", str(whole), "--height-map",
                 str(tmp_path / "wh.tif"), "-q"]) == 0
    assert main(["fuse", str(root), "-o", str(tiles), "--height-map",
                 str(tmp_path / "th.tif"), "--tile-size", "64", "-q"]) == 0
    assert np.array_equal(tifffile.imread(tiles), tifffile.imread(whole))
    assert np.allclose(tifffile.imread(tmp_path / "th.tif"), tifffile.imread(tmp_path / "wh.tif"),
                       atol=1e-4)
    assert read_physical_scale(tiles).scale == pytest.approx((0.3, 0.3))
    # several channels cannot go by tiles: one sentence, nothing written
    assert main(["fuse", str(VENDOR / "czi_czitools/CellDivision_T3_Z5_CH2_X240_Y170.czi"),
                 "-o", str(tmp_path / "c.tif"), "--tile-size", "64"]) == 2 \
        or not (VENDOR / "czi_czitools").exists()
    assert not (tmp_path / "c.tif").exists()


def test_widget_fuses_a_time_point_of_a_time_series(make_napari_viewer, qtbot, tmp_path):
    """A (T, Z, Y, X) layer from our reader (a time series, here an OME-Zarr of 2 time
    points written by the test): the Fuse widget offers a time point, set from the viewer,
    and fuses that point's stack, with its z step in µm."""
    a = focal_stack(n_slices=4, shape=(64, 64), dtype=np.uint16, seed=21)
    b = focal_stack(n_slices=4, shape=(64, 64), dtype=np.uint16, seed=22)
    root = write_ome_zarr(tmp_path / "ts.ome.zarr", np.stack([a.stack, b.stack])[:, None],
                          (2.0, 0.5, 0.5), name="ts")
    viewer = make_napari_viewer()
    (layer,) = viewer.open(str(root), plugin="napari-mfif")
    assert layer.data.shape == (2, 4, 64, 64)
    viewer.dims.set_current_step(0, 1)  # napari shows time point 1
    _, widget = viewer.window.add_plugin_dock_widget("napari-mfif", "Fuse focal stack")
    assert widget.image.value is layer and widget.z_axis.value == 0
    assert not widget.time_point.native.isHidden() and widget.time_point.value == 1
    widget.run()
    qtbot.waitUntil(lambda: not widget.running, timeout=60_000)
    expected = mf.fuse(b.stack)
    assert np.array_equal(viewer.layers["ts t1 fused"].data, expected.image)
    assert np.allclose(viewer.layers["ts t1 height (µm)"].data, expected.index_map * 2.0)


def test_scene_outputs_keep_compound_extensions():
    from napari_mfif.cli import _scene_output

    assert _scene_output(Path("f.ome.tif"), 1, True).name == "f_s1.ome.tif"
    assert _scene_output(Path("f.ome.zarr"), 1, True).name == "f_s1.ome.zarr"
    assert _scene_output(Path("f.png"), 0, True).name == "f_s0.png"
    assert _scene_output(Path("f.ome.zarr"), 0, False).name == "f.ome.zarr"
    assert formats.split_name("a.OME.TIFF") == ("a", ".OME.TIFF")
