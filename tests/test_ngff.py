"""OME-Zarr output (napari_mfif.ngff): round trip of dtype, shape, scale and units, the
pyramid, atomic and no-clobber writing, the CLI in memory and tile by tile, napari's reader
and writer, and napari-ome-zarr opening our output at the right scale."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from napari_mfif._errors import MfifError
from napari_mfif.cli import main
from napari_mfif.slide_io import downsample2
from napari_mfif.synthetic import focal_stack

zarr = pytest.importorskip("zarr")
pytest.importorskip("ome_zarr")
from napari_mfif.ngff import OmeZarrWriter, write_ome_zarr  # noqa: E402


def multiscales(path):
    return dict(zarr.open_group(str(path), mode="r").attrs)["multiscales"][0]


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int8, np.float32])
def test_round_trip_keeps_dtype_shape_scale_and_units(tmp_path, dtype):
    rng = np.random.default_rng(1)
    image = (rng.random((150, 130)) * 120).astype(dtype)
    path = write_ome_zarr(tmp_path / "a.ome.zarr", image, "YX", pixel_size=(0.25, 0.5))
    group = zarr.open_group(str(path), mode="r")
    assert group["0"].dtype == np.dtype(dtype) and np.array_equal(group["0"][:], image)
    meta = multiscales(path)
    assert meta["version"] == "0.4"
    assert [a["name"] for a in meta["axes"]] == ["y", "x"]
    assert all(a["unit"] == "micrometer" for a in meta["axes"])
    assert meta["datasets"][0]["coordinateTransformations"][0]["scale"] == [0.25, 0.5]


def test_pyramid_levels_are_2x2_means_in_the_dtype(tmp_path):
    image = np.random.default_rng(2).integers(-100, 100, (301, 257)).astype(np.int16)
    with OmeZarrWriter(tmp_path / "p.zarr", image.shape, image.dtype, pixel_size=(1.0, 1.0),
                       chunk=64) as out:
        for y0 in range(0, 301, 37):  # bands of odd heights: pairs of rows span bands
            out.write_band(y0, image[y0:y0 + 37])
    group = zarr.open_group(str(tmp_path / "p.zarr"), mode="r")
    expected = image
    shapes = []
    for k, entry in enumerate(multiscales(tmp_path / "p.zarr")["datasets"]):
        assert np.array_equal(group[entry["path"]][:], expected), k
        assert entry["coordinateTransformations"][0]["scale"] == [2.0**k, 2.0**k]
        shapes.append(expected.shape)
        expected = downsample2(expected)
    assert shapes == [(301, 257), (151, 129), (76, 65), (38, 33)]  # until it fits a chunk


def test_rgb_and_time_axes(tmp_path):
    rgb = np.random.default_rng(3).integers(0, 255, (2, 90, 70, 3)).astype(np.uint8)
    path = write_ome_zarr(tmp_path / "t.ome.zarr", rgb, "TYXS")
    assert [a["name"] for a in multiscales(path)["axes"]] == ["t", "c", "y", "x"]
    stored = zarr.open_group(str(path), mode="r")["0"][:]
    assert np.array_equal(stored, np.moveaxis(rgb, -1, 1))


def test_atomic_and_never_clobbering(tmp_path):
    image = np.ones((64, 64), np.uint16)
    path = write_ome_zarr(tmp_path / "a.zarr", image)
    with pytest.raises(MfifError, match="output exists"):
        write_ome_zarr(path, image * 2)
    assert zarr.open_group(str(path), mode="r")["0"][0, 0] == 1
    write_ome_zarr(path, image * 2, overwrite=True)
    assert zarr.open_group(str(path), mode="r")["0"][0, 0] == 2
    # a run that stops half-way leaves nothing, not even a temporary folder
    with pytest.raises(ValueError, match="only 32 of the image's 64 rows"):
        with OmeZarrWriter(tmp_path / "b.zarr", (64, 64), np.uint16) as out:
            out.write_band(0, image[:32])
            out.close()
    with pytest.raises(ValueError, match="bands go top to bottom"):
        OmeZarrWriter(tmp_path / "c.zarr", (64, 64), np.uint16).write_band(8, image[:8])
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".c.zarr")) \
        == ["a.zarr"]


def test_cli_writes_ome_zarr_in_memory_and_by_tiles_alike(tmp_path):
    s = focal_stack(n_slices=5, shape=(200, 180), dtype=np.uint16, seed=4)
    stack = tmp_path / "s.tif"
    tifffile.imwrite(stack, s.stack, imagej=True, resolution=(2.0, 2.0),
                     metadata={"axes": "ZYX", "spacing": 1.5, "unit": "um"})
    tif, whole, tiles = tmp_path / "f.tif", tmp_path / "w.ome.zarr", tmp_path / "t.ome.zarr"
    assert main(["fuse", str(stack), "-o", str(tif), "--height-map", str(tmp_path / "h.tif"),
                 "-q"]) == 0
    assert main(["fuse", str(stack), "-o", str(whole), "--height-map",
                 str(tmp_path / "wh.ome.zarr"), "-q"]) == 0
    assert main(["fuse", str(stack), "-o", str(tiles), "--height-map",
                 str(tmp_path / "th.ome.zarr"), "--tile-size", "64", "-q"]) == 0
    fused = tifffile.imread(tif)
    for out, height in ((whole, "wh.ome.zarr"), (tiles, "th.ome.zarr")):
        group = zarr.open_group(str(out), mode="r")
        assert group["0"].dtype == np.uint16 and np.array_equal(group["0"][:], fused)
        assert multiscales(out)["datasets"][0]["coordinateTransformations"][0]["scale"] \
            == [0.5, 0.5]
        h = zarr.open_group(str(tmp_path / height), mode="r")["0"][:]
        assert np.allclose(h, tifffile.imread(tmp_path / "h.tif"))  # in µm, as the TIFF
    assert main(["fuse", str(stack), "-o", str(whole), "-q"]) == 2  # exists: kept


def test_napari_reads_and_writes_our_ome_zarr(make_napari_viewer, tmp_path):
    pytest.importorskip("napari_ome_zarr")
    image = (np.random.default_rng(5).random((300, 260)) * 60000).astype(np.uint16)
    with OmeZarrWriter(tmp_path / "m.ome.zarr", image.shape, image.dtype,
                       pixel_size=(0.25, 0.5), chunk=64) as out:
        out.write_band(0, image)
    viewer = make_napari_viewer()
    for plugin in ("napari-ome-zarr", "napari-mfif"):
        (layer,) = viewer.open(str(tmp_path / "m.ome.zarr"), plugin=plugin)
        assert layer.multiscale and len(layer.data) == 4, plugin
        assert np.allclose(layer.scale, (0.25, 0.5)), plugin
        assert np.array_equal(np.asarray(layer.data[0]), image), plugin
    # napari's writer (Layer.save through the plugin): a new store, dtype and scale kept
    layer = viewer.layers[-1]
    saved = layer.save(str(tmp_path / "back.ome.zarr"), plugin="napari-mfif")
    group = zarr.open_group(saved[0], mode="r")
    assert np.array_equal(group["0"][:], image)
    assert multiscales(saved[0])["datasets"][0]["coordinateTransformations"][0]["scale"] \
        == [0.25, 0.5]


def test_batch_writes_ome_zarr_and_resumes(tmp_path):
    """batch --format ome.zarr: fused images and height maps as OME-Zarr beside the inputs;
    a second run skips them and does not take its own OME-Zarr outputs for stacks."""
    folder = tmp_path / "in"
    folder.mkdir()
    for name, seed in (("a", 1), ("b", 2)):
        s = focal_stack(n_slices=4, shape=(96, 96), dtype=np.uint16, seed=seed)
        tifffile.imwrite(folder / f"{name}.tif", s.stack, imagej=True,
                         metadata={"axes": "ZYX", "spacing": 2.0, "unit": "um"})
    args = ["batch", str(folder), "--format", "ome.zarr", "--height-map", "-q"]
    assert main(args) == 0
    for name in "ab":
        fused = zarr.open_group(str(folder / f"{name}_fused.ome.zarr"), mode="r")["0"][:]
        expected = tifffile.imread(folder / f"{name}.tif")
        assert fused.dtype == np.uint16 and fused.shape == expected.shape[1:]
        assert (folder / f"{name}_height.ome.zarr" / ".zattrs").is_file()
    before = sorted(p.name for p in folder.iterdir())
    assert main(args) == 0  # resumed: both skipped, nothing new
    assert sorted(p.name for p in folder.iterdir()) == before
    import csv

    with open(folder / "batch_summary.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["status"] for r in rows] == ["skipped", "skipped"]
