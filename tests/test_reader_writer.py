"""Pixel size, lazy reading, and the napari reader, writer and samples, on real TIFF files.

The napari tests use a real viewer (run under xvfb-run: napari needs OpenGL).
"""

import os

import dask.array as da
import numpy as np
import pytest
import tifffile
from PIL import Image

from napari_mfif import MfifError
from napari_mfif._reader import napari_get_reader, read_tiff
from napari_mfif._writer import write_tiff
from napari_mfif.io import read_lazy, read_physical_scale, write_image

PLUGIN = "napari-mfif"
UM = "µm"


def _stack(shape=(5, 24, 32), dtype=np.uint16, seed=0):
    rng = np.random.default_rng(seed)
    if np.dtype(dtype).kind == "f":
        return rng.random(shape).astype(dtype)
    return rng.integers(0, min(np.iinfo(dtype).max, 4095), shape, dtype=dtype)


# -- physical pixel size ---------------------------------------------------------------------

@pytest.mark.parametrize("unit,factor", [("micron", 1.0), ("um", 1.0), ("\\u00B5m", 1.0),
                                         ("nm", 1e-3), ("mm", 1e3)])
def test_imagej_resolution_spacing_and_unit(tmp_path, unit, factor):
    path = tmp_path / "ij.tif"
    tifffile.imwrite(path, _stack(), imagej=True, resolution=(1 / 0.65, 1 / 0.5),
                     metadata={"axes": "ZYX", "spacing": 2.0, "unit": unit})
    scale, units = read_physical_scale(path)
    assert scale == pytest.approx((2.0 * factor, 0.5 * factor, 0.65 * factor))
    assert units == (UM, UM, UM)


def test_imagej_unit_rules_over_the_resolution_unit_tag(tmp_path):
    path = tmp_path / "ij.tif"
    tifffile.imwrite(path, _stack(), imagej=True, resolution=(1 / 0.65, 1 / 0.65),
                     resolutionunit="INCH", metadata={"axes": "ZYX", "unit": "micron"})
    assert read_physical_scale(path) == ((1.0, 0.65, 0.65), ("pixel", UM, UM))
    # no unit at all: the numbers are kept without one, as ImageJ shows them
    tifffile.imwrite(path, _stack(), imagej=True, resolution=(1 / 0.65, 1 / 0.65),
                     metadata={"axes": "ZYX", "spacing": 3.0})
    assert read_physical_scale(path) == ((3.0, 0.65, 0.65), None)


def test_imagej_rgb_stack_has_no_scale_for_the_colour_axis(tmp_path):
    path = tmp_path / "rgb.tif"
    tifffile.imwrite(path, _stack((3, 24, 32, 3), np.uint8), imagej=True, photometric="rgb",
                     resolution=(2.0, 2.0), metadata={"axes": "ZYXS", "spacing": 1.5,
                                                      "unit": "micron"})
    assert read_physical_scale(path) == ((1.5, 0.5, 0.5), (UM, UM, UM))


def test_ome_physical_sizes_in_their_units(tmp_path):
    path = tmp_path / "s.ome.tif"
    tifffile.imwrite(path, _stack(), ome=True, photometric="minisblack", metadata={
        "axes": "ZYX", "PhysicalSizeX": 0.65, "PhysicalSizeY": 0.65, "PhysicalSizeZ": 1500.0,
        "PhysicalSizeXUnit": "µm", "PhysicalSizeZUnit": "nm",  # Y: the OME default, µm
    })
    scale, units = read_physical_scale(path)
    assert scale == pytest.approx((1.5, 0.65, 0.65)) and units == (UM, UM, UM)


def test_plain_resolution_tags_in_centimetres_and_inches(tmp_path):
    path = tmp_path / "cm.tif"
    tifffile.imwrite(path, _stack(), photometric="minisblack",
                     resolution=(1e4 / 0.25, 1e4 / 0.5), resolutionunit="CENTIMETER")
    scale, units = read_physical_scale(path)  # no z in plain tags: 1 and no unit there
    assert scale == pytest.approx((1.0, 0.5, 0.25)) and units == ("pixel", UM, UM)

    path = tmp_path / "inch.tif"
    tifffile.imwrite(path, _stack()[0], photometric="minisblack",
                     resolution=(25400 / 0.8, 25400 / 0.8), resolutionunit="INCH")
    scale, units = read_physical_scale(path)
    assert scale == pytest.approx((0.8, 0.8)) and units == (UM, UM)


def test_no_pixel_size_is_ones_and_no_unit(tmp_path):
    tifffile.imwrite(tmp_path / "none.tif", _stack(), photometric="minisblack")
    assert read_physical_scale(tmp_path / "none.tif") == ((1.0, 1.0, 1.0), None)
    # 300 dpi is what image editors write for printing, not a pixel size
    tifffile.imwrite(tmp_path / "dpi.tif", _stack()[0], photometric="minisblack",
                     resolution=(300, 300), resolutionunit="INCH")
    assert read_physical_scale(tmp_path / "dpi.tif") == ((1.0, 1.0), None)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "rgb.png")
    assert read_physical_scale(tmp_path / "rgb.png") == ((1.0, 1.0), None)


@pytest.mark.parametrize(
    "dtype,shape,kind",
    [(np.uint8, (5, 24, 32), "imagej"), (np.uint16, (5, 24, 32), "imagej"),
     (np.float32, (24, 32), "imagej"), (np.uint8, (4, 24, 32, 3), "imagej"),
     (np.float64, (5, 24, 32), "ome"), (np.int32, (24, 32), "ome"),
     (np.uint16, (4, 24, 32, 3), "ome")],
)
def test_written_scale_reads_back(tmp_path, dtype, shape, kind):
    image = _stack(shape, dtype)
    n = 3 if len(shape) == 4 or (len(shape) == 3 and shape[-1] > 4) else 2
    scale = (2.5, 0.5, 0.25)[-n:]
    path = write_image(tmp_path / "out.tif", image, scale=scale, unit="micrometer")
    with tifffile.TiffFile(path) as tif:
        assert (tif.is_imagej, tif.is_ome) == (kind == "imagej", kind == "ome")
        assert np.array_equal(tif.asarray(), image) and tif.series[0].dtype == dtype
    assert read_physical_scale(path) == (scale, (UM,) * n)


def test_written_scale_units_are_converted_or_kept_unitless(tmp_path):
    image = _stack()
    path = write_image(tmp_path / "nm.tif", image, scale=(500, 100, 100), unit="nm")
    assert read_physical_scale(path) == ((0.5, 0.1, 0.1), (UM,) * 3)
    path = write_image(tmp_path / "mixed.tif", image, scale=(3, 0.5, 0.5),
                       unit=("pixel", "µm", "µm"))
    assert read_physical_scale(path) == ((3.0, 0.5, 0.5), ("pixel", UM, UM))
    path = write_image(tmp_path / "bare.tif", image, scale=(3, 0.5, 0.5))
    assert read_physical_scale(path) == ((3.0, 0.5, 0.5), None)


@pytest.mark.parametrize(
    "name,kwargs,message",
    [("out.tif", {"scale": (1.0, 1.0)}, "3 positive pixel sizes"),
     ("out.tif", {"scale": (1.0, 0.0, 1.0)}, "positive pixel sizes"),
     ("out.tif", {"scale": (1.0, 1.0, 1.0), "unit": "furlong"}, "unknown unit"),
     ("out.png", {"scale": (1.0, 1.0)}, "carry no pixel size")],
)
def test_bad_scale_is_a_clear_error_and_writes_nothing(tmp_path, name, kwargs, message):
    image = _stack(dtype=np.uint8)
    with pytest.raises(MfifError, match=message):
        write_image(tmp_path / name, image if name.endswith(".tif") else image[0], **kwargs)
    assert os.listdir(tmp_path) == []


# -- lazy reading ----------------------------------------------------------------------------

@pytest.mark.parametrize(
    "shape,kwargs",
    [((6, 24, 32), {"photometric": "minisblack"}),
     ((4, 24, 32, 3), {"photometric": "rgb"}),
     ((24, 32), {"photometric": "minisblack"}),
     ((2, 3, 24, 32), {"imagej": True, "metadata": {"axes": "TZYX"}}),
     ((5, 24, 32), {"ome": True, "metadata": {"axes": "ZYX"}}),
     ((5, 24, 32), {"photometric": "minisblack", "compression": "zlib", "tile": (16, 16)}),
     ((5, 24, 32), {"photometric": "minisblack", "byteorder": ">"}),
     ((5, 24, 32), {"imagej": True, "truncate": True, "metadata": {"axes": "ZYX"}})],
    ids=["stack", "rgb", "single-page", "imagej-tzyx", "ome", "tiled-zlib", "big-endian",
         "imagej-one-ifd"],  # the last: one IFD for all slices, as ImageJ does over 4 GB
)
def test_lazy_read_equals_tifffile_one_chunk_per_page(tmp_path, shape, kwargs):
    image = _stack(shape, np.uint16 if shape[-1] != 3 else np.uint8)
    tifffile.imwrite(tmp_path / "s.tif", image, **kwargs)
    lazy = read_lazy(tmp_path / "s.tif")
    assert isinstance(lazy, da.Array)
    assert lazy.shape == image.shape and lazy.dtype == image.dtype
    page = image.shape[-3:] if shape[-1] == 3 else image.shape[-2:]
    assert lazy.chunksize == (1,) * (lazy.ndim - len(page)) + page
    assert np.array_equal(lazy.compute(), tifffile.imread(tmp_path / "s.tif"))


def test_building_the_lazy_array_decodes_nothing(tmp_path, monkeypatch):
    image = _stack((6, 24, 32))
    tifffile.imwrite(tmp_path / "s.tif", image, photometric="minisblack")
    decoded = []
    for cls in (tifffile.TiffPage, tifffile.TiffFrame, tifffile.TiffFile):
        original = cls.asarray

        def counting(self, *args, _original=original, **kwargs):
            decoded.append(self)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(cls, "asarray", counting)
    lazy = read_lazy(tmp_path / "s.tif")
    assert decoded == []
    assert np.array_equal(lazy[4].compute(), image[4])
    assert len(decoded) == 1  # one slice shown, one page decoded


@pytest.mark.parametrize(
    "damage,message",
    [(lambda b: b[: len(b) // 2], "truncated"),
     (lambda b: b[:8] + b"\xff" * 8, "cannot read TIFF")],
    ids=["cut-in-half", "garbage-ifd"],
)
def test_lazy_read_reports_damage_at_once(tmp_path, damage, message):
    path = tmp_path / "s.tif"
    tifffile.imwrite(path, _stack((6, 64, 64)), photometric="minisblack")
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(MfifError, match=message):
        read_lazy(path)
    with pytest.raises(MfifError, match=message):
        read_tiff(str(path))


def test_lazy_read_takes_tiff_only(tmp_path):
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "a.png")
    with pytest.raises(MfifError, match="not a TIFF"):
        read_lazy(tmp_path / "a.png")


# -- reader and writer functions -------------------------------------------------------------

def test_reader_claims_single_tiff_files_only(tmp_path):
    tifffile.imwrite(tmp_path / "s.tif", _stack(), photometric="minisblack")
    tifffile.imwrite(tmp_path / "s.TIFF", _stack(), photometric="minisblack")
    (tmp_path / "text.tif").write_text("not a TIFF")
    (tmp_path / "folder.tif").mkdir()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "a.png")
    tifffile.imwrite(tmp_path / "tiff.png", _stack())  # a TIFF, but not named one
    assert napari_get_reader(str(tmp_path / "s.tif")) is read_tiff
    assert napari_get_reader(str(tmp_path / "s.TIFF")) is read_tiff
    for name in ("text.tif", "folder.tif", "a.png", "tiff.png", "missing.tif"):
        assert napari_get_reader(str(tmp_path / name)) is None, name
    assert napari_get_reader([str(tmp_path / "s.tif")] * 2) is None


def test_read_tiff_layer_data(tmp_path):
    path = tmp_path / "cells.tif"
    image = _stack((4, 24, 32, 3), np.uint8)
    write_image(path, image, scale=(2.0, 0.5, 0.5), unit="µm")
    ((data, kwargs, kind),) = read_tiff(str(path))
    assert kind == "image" and isinstance(data, da.Array)
    assert kwargs["name"] == "cells" and kwargs["rgb"] is True
    assert kwargs["scale"] == (2.0, 0.5, 0.5) and kwargs["units"] == (UM,) * 3
    assert kwargs["metadata"]["napari_mfif"]["axes"] == "ZYXS"
    assert np.array_equal(data.compute(), image)


def test_write_tiff_keeps_dtype_scale_and_never_overwrites(tmp_path):
    image = _stack((5, 24, 32), np.float32)
    meta = {"scale": (2.0, 0.5, 0.25), "units": ("micrometer",) * 3, "rgb": False}
    target = tmp_path / "out.tif"
    assert write_tiff(str(target), da.from_array(image, chunks=(1, 24, 32)), meta) == [str(target)]
    assert np.array_equal(read_lazy(target).compute(), image)
    assert read_physical_scale(target) == ((2.0, 0.5, 0.25), (UM,) * 3)
    before = target.read_bytes()
    with pytest.warns(UserWarning, match="never replaces"), \
            pytest.raises(MfifError, match="never replaces"):
        write_tiff(str(target), image * 2, meta)
    assert target.read_bytes() == before
    assert os.listdir(tmp_path) == ["out.tif"]  # no temporary file left


def test_write_tiff_other_shapes_keep_data_and_say_the_scale_is_not_stored(tmp_path):
    image = _stack((2, 3, 24, 32))  # (T, Z, Y, X): no fixed meaning for a TIFF's axes
    meta = {"scale": (1.0, 2.0, 0.5, 0.5), "rgb": False}
    with pytest.warns(UserWarning, match="pixel size .* is not stored"):
        write_tiff(str(tmp_path / "tz.tif"), image, meta)
    assert np.array_equal(tifffile.imread(tmp_path / "tz.tif"), image)
    # a multiscale layer: the full-resolution level is written
    levels = [_stack((24, 32)), _stack((12, 16))]
    write_tiff(str(tmp_path / "ms.tif"), levels, {"multiscale": True, "scale": (0.5, 0.5),
                                                   "units": ("µm", "µm")})
    assert np.array_equal(tifffile.imread(tmp_path / "ms.tif"), levels[0])
    assert read_physical_scale(tmp_path / "ms.tif") == ((0.5, 0.5), (UM, UM))


# -- in a real napari viewer -----------------------------------------------------------------

def test_viewer_opens_a_tiff_lazily_with_its_scale(make_napari_viewer, tmp_path):
    path = tmp_path / "stack.tif"
    image = _stack((6, 40, 50))
    tifffile.imwrite(path, image, imagej=True, resolution=(1 / 0.65, 1 / 0.65),
                     metadata={"axes": "ZYX", "spacing": 2.0, "unit": "micron"})
    viewer = make_napari_viewer()
    (layer,) = viewer.open(path, plugin=PLUGIN)
    assert isinstance(layer.data, da.Array) and layer.data.chunksize == (1, 40, 50)
    assert layer.data.dtype == np.uint16 and not layer.rgb
    assert tuple(layer.scale) == pytest.approx((2.0, 0.65, 0.65))
    assert [str(u) for u in layer.units] == ["micrometer"] * 3
    assert layer.name == "stack"
    assert np.array_equal(np.asarray(layer.data), image)


def test_viewer_reports_a_damaged_tiff_in_one_sentence(make_napari_viewer, tmp_path):
    path = tmp_path / "cut.tif"
    tifffile.imwrite(path, _stack((6, 64, 64)), photometric="minisblack")
    path.write_bytes(path.read_bytes()[:3000])
    viewer = make_napari_viewer()
    with pytest.raises(Exception, match="truncated") as info:
        viewer.open(path, plugin=PLUGIN)
    cause = info.value
    while not isinstance(cause, MfifError) and cause.__cause__ is not None:
        cause = cause.__cause__
    assert isinstance(cause, MfifError) and "\n" not in str(cause)
    assert len(viewer.layers) == 0


@pytest.mark.parametrize(
    "dtype,shape,rgb",
    [(np.uint8, (4, 30, 40, 3), True), (np.uint16, (5, 30, 40), False),
     (np.float32, (30, 40), False), (np.float64, (5, 30, 40), False)],
)
def test_viewer_save_round_trip(make_napari_viewer, tmp_path, dtype, shape, rgb):
    image = _stack(shape, dtype)
    scale = (2.0, 0.5, 0.25)[-(len(shape) - rgb):]
    viewer = make_napari_viewer()
    layer = viewer.add_image(image, rgb=rgb, scale=scale, units=("micrometer",) * len(scale))
    target = tmp_path / "saved.tif"
    assert layer.save(str(target), plugin=PLUGIN) == [str(target)]
    (back,) = viewer.open(target, plugin=PLUGIN)
    assert back.data.dtype == dtype and back.rgb == rgb
    assert np.array_equal(np.asarray(back.data), image)
    assert tuple(back.scale) == pytest.approx(scale)
    assert [str(u) for u in back.units] == ["micrometer"] * len(scale)


def test_viewer_save_never_overwrites(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    layer = viewer.add_image(_stack())
    target = tmp_path / "taken.tif"
    target.write_bytes(b"precious")
    with pytest.warns(UserWarning, match="never replaces a file"):
        assert layer.save(str(target), plugin=PLUGIN) == []
    assert target.read_bytes() == b"precious"
    assert os.listdir(tmp_path) == ["taken.tif"]
    # a writer chosen in the save dialog: the error itself reaches napari's notifications
    import npe2

    with pytest.raises(MfifError, match="never replaces a file"), pytest.warns(UserWarning):
        npe2.write(str(target), [layer.as_layer_data_tuple()], plugin_name=PLUGIN)
    assert target.read_bytes() == b"precious"


@pytest.mark.parametrize(
    "key,dtype,shape,rgb",
    [("focal_stack", np.uint16, (10, 384, 384), False),
     ("fluorescence_stack", np.uint16, (10, 320, 320), False),
     ("brightfield_stack", np.uint8, (8, 320, 320, 3), True)],
)
def test_samples_open_in_the_viewer(make_napari_viewer, key, dtype, shape, rgb):
    viewer = make_napari_viewer()
    (layer,) = viewer.open_sample(PLUGIN, key)
    assert layer.data.dtype == dtype and layer.data.shape == shape and layer.rgb == rgb
    assert len(layer.scale) == 3 and all(s > 0 for s in layer.scale)
    truth = layer.metadata["napari_mfif"]["ground_truth"]
    depth = layer.metadata["napari_mfif"]["true_depth"]
    assert truth.dtype == dtype and truth.shape == shape[1:]
    assert depth.shape == shape[1:3] and 0 <= depth.min() and depth.max() <= shape[0] - 1


def test_writer_keeps_a_narrow_stack_a_stack(tmp_path):
    # a (Z, Y, X) layer with X <= 16 is not a multichannel image
    from napari_mfif._writer import write_tiff
    from napari_mfif.io import read_image, read_physical_scale

    data = np.arange(3 * 20 * 8, dtype=np.uint16).reshape(3, 20, 8)
    (path,) = write_tiff(str(tmp_path / "narrow.tif"), data,
                         {"scale": (2.0, 0.5, 0.5), "units": ("µm",) * 3, "rgb": False})
    assert np.array_equal(read_image(path), data)
    assert read_physical_scale(path).scale == (2.0, 0.5, 0.5)


def test_a_fused_slide_with_a_pyramid_opens_as_multiscale_read_by_regions(tmp_path):
    from napari_mfif.slide_io import write_tiled

    rng = np.random.default_rng(0)
    image = rng.integers(0, 65535, (1500, 2300), dtype=np.uint16)
    path = tmp_path / "fused.tif"
    write_tiled(path, image, pyramid=True, pixel_size=(0.25, 0.25))
    (data, kwargs, kind), = napari_get_reader(str(path))(str(path))
    assert kind == "image" and kwargs["multiscale"] is True
    assert [d.shape for d in data][:3] == [(1500, 2300), (750, 1150), (375, 575)]
    assert data[0].chunksize == (1024, 1024)  # by regions, not the whole page
    assert np.array_equal(data[0][1000:1400, 2000:2300].compute(), image[1000:1400, 2000:2300])
    assert tuple(kwargs["scale"]) == pytest.approx((0.25, 0.25))


def test_viewer_shows_a_pyramid_slide_as_a_multiscale_layer(make_napari_viewer, tmp_path):
    from napari_mfif.slide_io import write_tiled

    image = (np.arange(1200 * 1300, dtype=np.uint32) % 4001).astype(np.uint16).reshape(1200, 1300)
    path = tmp_path / "fused.tif"
    write_tiled(path, image, pyramid=True)
    viewer = make_napari_viewer()
    layer, = viewer.open(str(path), plugin="napari-mfif")
    assert layer.multiscale and layer.data[0].shape == (1200, 1300)
    assert np.array_equal(np.asarray(layer.data[1][:10, :10]), np.asarray(
        image[:20, :20].reshape(10, 2, 10, 2).astype(float).mean(axis=(1, 3)) + 0.5, dtype=np.uint16))


def test_a_stack_of_large_slices_opens_by_regions(tmp_path, monkeypatch):
    from napari_mfif import _reader

    monkeypatch.setattr(_reader, "_SLIDE_PIXELS", 300 * 300)  # "large" for a small test file
    rng = np.random.default_rng(1)
    stack = rng.integers(0, 255, (3, 400, 2100), dtype=np.uint8)
    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, stack, imagej=True, metadata={"axes": "ZYX"})
    (data, kwargs, _), = napari_get_reader(str(path))(str(path))
    assert "multiscale" not in kwargs and data.shape == stack.shape
    assert data.chunksize == (1, 400, 1024)
    assert np.array_equal(data[1, 100:300, 1000:1500].compute(), stack[1, 100:300, 1000:1500])
    # a small stack is still read page by page
    monkeypatch.setattr(_reader, "_SLIDE_PIXELS", 4096 * 4096)
    (data, _, _), = read_tiff(str(path))
    assert data.chunksize == (1, 400, 2100)


def test_preferred_reader_setting_opens_tiffs_through_the_plugin(make_napari_viewer, tmp_path):
    """What docs/napari.md tells users: with *.tif set to napari-mfif in napari's settings,
    File > Open (and drag and drop) reads through this plugin and keeps the pixel size."""
    import tifffile
    from napari.settings import get_settings

    path = tmp_path / "p.tif"
    tifffile.imwrite(path, np.zeros((3, 32, 32), np.uint16), imagej=True,
                     resolution=(2.0, 2.0), metadata={"axes": "ZYX", "spacing": 1.5,
                                                      "unit": "um"})
    settings = get_settings().plugins
    saved = dict(settings.extension2reader)
    viewer = make_napari_viewer()
    try:
        settings.extension2reader = {**saved, "*.tif": "napari-mfif"}
        viewer.window._qt_viewer._qt_open([str(path)], stack=False)  # File > Open's path
    finally:
        settings.extension2reader = saved
    layer = viewer.layers[-1]
    assert layer.source.reader_plugin == "napari-mfif"
    assert np.allclose(layer.scale, (1.5, 0.5, 0.5))
