"""Whole-slide I/O: region reads from TIFF focal stacks, band-by-band tiled writing."""

from __future__ import annotations

import os
import pickle
import struct
import time
import tracemalloc

import numpy as np
import pytest
import tifffile

from napari_mfif import MfifError
from napari_mfif.io import read_image, read_physical_scale
from napari_mfif.slide_io import (
    TiffStackSource,
    TiledTiffWriter,
    as_dask,
    downsample2,
    write_tiled,
)

SHAPE = (4, 300, 500)  # small, with sizes that are no multiple of any tile

#: regions (y0, y1, x0, x1): whole slice, inside, at each edge and corner, one pixel, empty
REGIONS = [(0, 300, 0, 500), (37, 211, 45, 301), (0, 1, 0, 500), (299, 300, 0, 500),
           (0, 300, 499, 500), (250, 300, 450, 500), (63, 65, 63, 65), (150, 150, 10, 20),
           (0, 64, 0, 64), (255, 300, 384, 500)]


@pytest.fixture(scope="module")
def stack16():
    rng = np.random.default_rng(7)
    return rng.integers(0, 65535, SHAPE, dtype=np.uint16)


@pytest.fixture(scope="module")
def rgb8():
    rng = np.random.default_rng(8)
    return rng.integers(0, 255, (3, 301, 257, 3), dtype=np.uint8)


def _check_regions(source: TiffStackSource, stack: np.ndarray) -> None:
    assert source.shape == stack.shape and source.dtype == stack.dtype
    for z in range(stack.shape[0]):
        for y0, y1, x0, x1 in REGIONS:
            y1, x1 = min(y1, stack.shape[1]), min(x1, stack.shape[2])
            y0, x0 = min(y0, y1), min(x0, x1)
            region = source.read(z, y0, y1, x0, x1)
            assert region.dtype == stack.dtype
            np.testing.assert_array_equal(region, stack[z, y0:y1, x0:x1])


WRITERS = {
    "stripped, one strip": dict(),
    "stripped, 7 rows a strip": dict(rowsperstrip=7),
    "tiled": dict(tile=(64, 64)),
    "tiled, zlib, predictor": dict(tile=(32, 48), compression="zlib", predictor=True),
    "stripped, zlib": dict(rowsperstrip=16, compression="zlib"),
    "bigtiff, tiled": dict(bigtiff=True, tile=(128, 128)),
    "big-endian": dict(byteorder=">"),
    "big-endian, tiled, zlib": dict(byteorder=">", tile=(64, 64), compression="zlib"),
}


@pytest.mark.parametrize("options", WRITERS.values(), ids=WRITERS.keys())
def test_region_reads_match_numpy(tmp_path, stack16, options):
    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, stack16, photometric="minisblack", **options)
    source = TiffStackSource.open(path)
    _check_regions(source, stack16)
    assert source.pixel_size is None and source.z_step_um is None


@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_other_dtypes(tmp_path, dtype):
    stack = (np.random.default_rng(2).random((3, 70, 90)) * 250).astype(dtype)
    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, stack, photometric="minisblack", tile=(32, 32), compression="zlib")
    _check_regions(TiffStackSource.open(path), stack)


def test_imagej_hyperstack_with_pixel_size(tmp_path, stack16):
    path = tmp_path / "hyperstack.tif"
    tifffile.imwrite(path, stack16, imagej=True, resolution=(2.0, 4.0),
                     metadata={"axes": "ZYX", "spacing": 2.5, "unit": "um"})
    source = TiffStackSource.open(path)
    _check_regions(source, stack16)
    assert source.pixel_size == pytest.approx((0.25, 0.5))
    assert source.z_step_um == pytest.approx(2.5)


def test_imagej_stack_stored_as_one_block(tmp_path, stack16):
    """An ImageJ hyperstack over 4 GB has one image directory; its slices follow it in one
    block. Made here by cutting a small one's chain of directories after the first."""
    path = tmp_path / "block.tif"
    tifffile.imwrite(path, stack16, imagej=True, metadata={"axes": "ZYX"})
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        next_ifd = page.offset + 2 + len(page.tags) * 12
    data = bytearray(path.read_bytes())
    struct.pack_into("<I", data, next_ifd, 0)
    path.write_bytes(bytes(data))
    with tifffile.TiffFile(path) as tif:
        assert len(tif.pages) == 1 and tif.series[0].shape == SHAPE
    _check_regions(TiffStackSource.open(path), stack16)


def test_ome_rgb_stack(tmp_path, rgb8):
    path = tmp_path / "rgb.ome.tif"
    tifffile.imwrite(path, rgb8, photometric="rgb", tile=(64, 64), compression="zlib",
                     metadata={"axes": "ZYXS", "PhysicalSizeX": 0.3, "PhysicalSizeY": 0.3,
                               "PhysicalSizeZ": 1.5})
    source = TiffStackSource.open(path)
    assert source.shape == rgb8.shape and source.ndim == 4
    _check_regions(source, rgb8)
    assert source.pixel_size == pytest.approx((0.3, 0.3))
    assert source.z_step_um == pytest.approx(1.5)
    np.testing.assert_array_equal(source[1, 3:80, 200:, 1], rgb8[1, 3:80, 200:, 1])


def test_list_of_files(tmp_path, stack16, rgb8):
    grey = []
    for z, image in enumerate(stack16):
        grey.append(tmp_path / f"grey{z}.tif")
        options = [dict(), dict(tile=(64, 64), compression="zlib"), dict(rowsperstrip=5),
                   dict(bigtiff=True)][z % 4]
        tifffile.imwrite(grey[-1], image, photometric="minisblack", **options)
    source = TiffStackSource.open(grey)
    assert source.paths == tuple(str(p) for p in grey)
    _check_regions(source, stack16)
    rgb = []
    for z, image in enumerate(rgb8):
        rgb.append(tmp_path / f"rgb{z}.tif")
        write_tiled(rgb[-1], image, tile=64, pyramid=True, pixel_size=(0.4, 0.4))
    source = TiffStackSource.open(rgb)
    _check_regions(source, rgb8)
    assert source.pixel_size == pytest.approx((0.4, 0.4)) and source.z_step_um is None


def test_pickled_source_reads(tmp_path, stack16):
    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, stack16, photometric="minisblack", tile=(64, 64),
                     compression="zlib")
    source = TiffStackSource.open(path)
    data = pickle.dumps(source)
    assert len(data) < 2000  # paths and offsets, not pixels or tile tables
    copy = pickle.loads(data)
    np.testing.assert_array_equal(copy.read(2, 10, 200, 30, 480), stack16[2, 10:200, 30:480])
    assert copy.shape == source.shape and copy.dtype == source.dtype


def test_numpy_style_indexing(tmp_path, stack16, rgb8):
    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, stack16, photometric="minisblack", rowsperstrip=9)
    source = TiffStackSource.open(path)
    keys = [np.s_[:], np.s_[1], np.s_[-1], np.s_[1:3, 5:9, 100:], np.s_[0, 7, :],
            np.s_[2, 7, 9], np.s_[..., 3], np.s_[1:, :, -4:], np.s_[0:0], np.s_[:, 290:400],
            np.s_[3, ..., 10:20], np.s_[np.int64(2), 1:2]]
    for key in keys:
        np.testing.assert_array_equal(source[key], stack16[key], err_msg=str(key))
    with pytest.raises(IndexError):
        source[::2]
    with pytest.raises(IndexError):
        source[4]
    with pytest.raises(IndexError):
        source[0, 0, 0, 0]
    rgb_path = tmp_path / "rgb.tif"
    tifffile.imwrite(rgb_path, rgb8, photometric="rgb", tile=(32, 32))
    rgb = TiffStackSource.open(rgb_path)
    for key in [np.s_[1, ..., 2], np.s_[:, 10:20, 30:40, 1:], np.s_[2, 3, 4], np.s_[0, :5]]:
        np.testing.assert_array_equal(rgb[key], rgb8[key], err_msg=str(key))


def test_as_dask(tmp_path, stack16, rgb8):
    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, stack16, photometric="minisblack", tile=(64, 64))
    source = TiffStackSource.open(path)
    array = as_dask(source, 128)
    assert array.chunks == ((1,) * 4, (128, 128, 44), (128, 128, 128, 116))
    np.testing.assert_array_equal(array.compute(), stack16)
    np.testing.assert_array_equal(array[2, 100:250, 7:333].compute(), stack16[2, 100:250, 7:333])
    assert as_dask(TiffStackSource.open(path), 128).name == array.name  # stable
    assert as_dask(source, 64).name != array.name
    tifffile.imwrite(path, stack16 + 1, photometric="minisblack")
    os.utime(path, ns=(1, 1))
    assert as_dask(TiffStackSource.open(path), 128).name != array.name  # new content
    rgb_path = tmp_path / "rgb.tif"
    tifffile.imwrite(rgb_path, rgb8, photometric="rgb")
    rgb = as_dask(TiffStackSource.open(rgb_path), 100)
    assert rgb.chunksize == (1, 100, 100, 3)
    np.testing.assert_array_equal(rgb.compute(), rgb8)


@pytest.mark.parametrize("options", [dict(), dict(tile=(256, 256), compression="zlib")],
                         ids=["uncompressed", "zlib tiles"])
def test_region_read_memory_is_bounded(tmp_path, options):
    """A 1024 x 1024 region of a 4096 x 4096 slice (32 MB) allocates about the region."""
    rng = np.random.default_rng(0)
    image = rng.integers(0, 4096, (4096, 4096), dtype=np.uint16)  # compresses a little
    path = tmp_path / "big.tif"
    tifffile.imwrite(path, np.stack([image, image[::-1]]), photometric="minisblack", **options)
    source = TiffStackSource.open(path)
    source.read(1, 0, 1, 0, 1)  # the page's tile table, parsed once per process
    tracemalloc.start()
    try:
        region = source.read(1, 1000, 2024, 1500, 2524)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    np.testing.assert_array_equal(region, image[::-1][1000:2024, 1500:2524])
    assert peak < 2 * region.nbytes, f"{peak} bytes for a {region.nbytes}-byte region"


# -- bad input -------------------------------------------------------------------------------

def _one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


def test_slices_must_match(tmp_path):
    a, b, c = tmp_path / "a.tif", tmp_path / "b.tif", tmp_path / "c.tif"
    tifffile.imwrite(a, np.zeros((40, 50), np.uint16))
    tifffile.imwrite(b, np.zeros((40, 51), np.uint16))
    tifffile.imwrite(c, np.zeros((40, 50), np.uint8))
    with pytest.raises(MfifError) as error:
        TiffStackSource.open([a, b])
    message = _one_line(error)
    assert str(b) in message and str(a) in message
    assert "(40, 51)" in message and "(40, 50)" in message
    with pytest.raises(MfifError, match="dtype uint8 but .* uint16"):
        TiffStackSource.open([a, c])


def test_refuses_what_it_cannot_read_by_region(tmp_path, stack16):
    cases = {}
    cases["int32"] = tmp_path / "int32.tif"
    tifffile.imwrite(cases["int32"], stack16.astype(np.int32), photometric="minisblack")
    cases["single image"] = tmp_path / "single.tif"
    tifffile.imwrite(cases["single image"], stack16[0])
    cases["planar RGB"] = tmp_path / "planar.tif"
    tifffile.imwrite(cases["planar RGB"], np.zeros((2, 3, 20, 30), np.uint8),
                     photometric="rgb", planarconfig="separate")
    cases["channels"] = tmp_path / "channels.tif"
    tifffile.imwrite(cases["channels"], np.zeros((2, 3, 20, 30), np.uint16), imagej=True,
                     metadata={"axes": "ZCYX"})
    cases["unknown codec"] = tmp_path / "codec.tif"  # a compression code no library knows
    tifffile.imwrite(cases["unknown codec"], stack16, photometric="minisblack")
    data = bytearray(cases["unknown codec"].read_bytes())
    with tifffile.TiffFile(cases["unknown codec"]) as tif:
        for page in tif.pages:
            struct.pack_into("<H", data, page.tags["Compression"].valueoffset, 61234)
    cases["unknown codec"].write_bytes(bytes(data))
    cases["not a TIFF"] = tmp_path / "text.tif"
    cases["not a TIFF"].write_text("hello")
    expected = {"int32": "int32", "single image": "single image", "planar RGB": "separate planes",
                "channels": "(Z, Y, X)", "unknown codec": "compression code 61234 is not one tifffile reads",
                "not a TIFF": "not a TIFF"}
    for name, path in cases.items():
        with pytest.raises(MfifError) as error:
            TiffStackSource.open(path)
        assert expected[name] in _one_line(error), name
    with pytest.raises(MfifError, match="not found"):
        TiffStackSource.open(tmp_path / "missing.tif")


@pytest.mark.parametrize("compression, tile", [("lzw", None), ("lzw", (64, 64)),
                                               ("zstd", (64, 64)), ("jpeg", None)])
def test_compressed_tiff_is_read_by_region(tmp_path, stack16, compression, tile):
    """LZW (how ImageJ, ZEN and many scanners write), zstd and JPEG through imagecodecs, a
    dependency: every window equals the same window of the whole stack."""
    data = stack16 if compression != "jpeg" else (stack16 >> 8).astype(np.uint8)
    path = tmp_path / f"{compression}.tif"
    tifffile.imwrite(path, data, photometric="minisblack", compression=compression, tile=tile)
    whole = tifffile.imread(path)
    if compression != "jpeg":  # lossless
        assert np.array_equal(whole, data)
    source = TiffStackSource.open(path)
    assert source.shape == data.shape and source.dtype == data.dtype
    for z in range(data.shape[0]):
        assert np.array_equal(source.read(z, 13, 77, 5, 101), whole[z, 13:77, 5:101])


def test_truncated_and_changed_files(tmp_path, stack16):
    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, stack16, photometric="minisblack", tile=(64, 64),
                     compression="zlib")
    data = path.read_bytes()
    cut = tmp_path / "cut.tif"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(MfifError) as error:
        TiffStackSource.open(cut)
    assert str(cut) in _one_line(error)

    source = TiffStackSource.open(path)
    path.write_bytes(data[: len(data) - 1000])  # changed behind the source's back
    with pytest.raises(MfifError, match="changed since"):
        source.read(3, 0, 300, 0, 500)


def test_region_outside_the_stack(tmp_path, stack16):
    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, stack16, photometric="minisblack")
    source = TiffStackSource.open(path)
    for region in [(4, 0, 1, 0, 1), (-1, 0, 1, 0, 1), (0, 0, 301, 0, 1), (0, 10, 5, 0, 1),
                   (0, 0, 1, 0, 501), (0, -1, 1, 0, 1), (0, 0.5, 1, 0, 1)]:
        with pytest.raises(MfifError) as error:
            source.read(*region)
        _one_line(error)


# -- writing ---------------------------------------------------------------------------------

def _image(shape, dtype, seed=0):
    rng = np.random.default_rng(seed)
    if np.dtype(dtype).kind == "f":
        return rng.random(shape, dtype=np.float32)
    return rng.integers(0, np.iinfo(dtype).max, shape, dtype=dtype, endpoint=True)


def _write_in_bands(writer, image, heights):
    y = 0
    for h in heights:
        h = min(h, image.shape[0] - y)
        if h > 0:
            writer.write_band(y, image[y:y + h])
            y += h
    if y < image.shape[0]:
        writer.write_band(y, image[y:])


CASES = [((300, 500), np.uint8), ((333, 517), np.uint16), ((100, 40), np.float32),
         ((301, 257, 3), np.uint8), ((45, 70, 4), np.uint16), ((17, 1000), np.float32)]


@pytest.mark.parametrize("compression", [None, "zlib"])
@pytest.mark.parametrize(("shape", "dtype"), CASES)
def test_writer_round_trip(tmp_path, shape, dtype, compression):
    image = _image(shape, dtype)
    path = tmp_path / "out.tif"
    with TiledTiffWriter(path, shape, dtype, tile=64, compression=compression,
                         pixel_size=(0.5, 0.25)) as writer:
        _write_in_bands(writer, image, [1, 17, 64, 100, 3, 0, 63])
    assert writer.rows_written == shape[0]
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        assert tif.is_bigtiff and page.is_tiled and page.tile == (64, 64)
        assert page.compression == (8 if compression else 1)
        assert tif.series[0].dtype == dtype
    np.testing.assert_array_equal(tifffile.imread(path), image)
    np.testing.assert_array_equal(read_image(path), image)
    scale = read_physical_scale(path)
    assert scale.scale == pytest.approx((0.5, 0.25)) and scale.units == ("µm", "µm")
    assert sorted(os.listdir(tmp_path)) == ["out.tif"]  # no temporary file left


def test_writer_output_opens_in_napari_reader(tmp_path):
    from napari_mfif._reader import napari_get_reader

    image = _image((301, 257, 3), np.uint8)
    path = write_tiled(tmp_path / "rgb.tif", image, tile=32, pyramid=True,
                       pixel_size=(400, 400), unit="nm")
    reader = napari_get_reader(str(path))
    assert reader is not None
    (data, kwargs, kind), = reader(str(path))
    assert kind == "image" and kwargs["rgb"] and kwargs["multiscale"]  # a pyramid
    assert kwargs["scale"] == pytest.approx((0.4, 0.4))
    np.testing.assert_array_equal(np.asarray(data[0]), image)
    np.testing.assert_array_equal(np.asarray(data[1]), _mean2x2(image))


def _mean2x2(image: np.ndarray) -> np.ndarray:
    """The mean of each 2 x 2 block, odd edges averaged over the pixels there are."""
    height, width = image.shape[:2]
    padded = np.full((height + height % 2, width + width % 2) + image.shape[2:], np.nan)
    padded[:height, :width] = image
    blocks = padded.reshape((padded.shape[0] // 2, 2, padded.shape[1] // 2, 2)
                            + image.shape[2:])
    mean = np.nanmean(blocks, axis=(1, 3))
    if image.dtype.kind != "f":
        mean = np.floor(mean + 0.5)
    return mean.astype(image.dtype)


@pytest.mark.parametrize(("shape", "dtype"), [((300, 500), np.uint16), ((301, 257, 3), np.uint8),
                                              ((130, 97), np.float32)])
def test_pyramid_levels_are_2x2_means(tmp_path, shape, dtype):
    image = _image(shape, dtype)
    path = tmp_path / "pyramid.tif"
    with TiledTiffWriter(path, shape, dtype, tile=32, pyramid=True, compression="zlib",
                         pixel_size=(1.0, 1.0)) as writer:
        _write_in_bands(writer, image, [5, 40, 33, 1, 99])
    with tifffile.TiffFile(path) as tif:
        levels = [level.asarray() for level in tif.series[0].levels]
        assert tif.pages[0].subifds is not None
    np.testing.assert_array_equal(levels[0], image)
    expected = image
    for level in levels[1:]:
        expected = _mean2x2(expected)
        assert level.shape == expected.shape and level.dtype == dtype
        if image.dtype.kind == "f":
            np.testing.assert_allclose(level, expected, rtol=1e-6)
        else:
            np.testing.assert_array_equal(level, expected)
    assert max(levels[-1].shape[:2]) <= 32 < max(levels[-2].shape[:2])
    np.testing.assert_array_equal(levels[1], downsample2(image))
    assert sorted(os.listdir(tmp_path)) == ["pyramid.tif"]  # spilled levels removed


def test_writer_refuses_to_overwrite(tmp_path):
    path = tmp_path / "out.tif"
    path.write_bytes(b"precious")
    with pytest.raises(MfifError, match="output file exists") as error:
        TiledTiffWriter(path, (40, 40), np.uint8)
    _one_line(error)
    assert path.read_bytes() == b"precious"
    assert sorted(os.listdir(tmp_path)) == ["out.tif"]
    image = _image((40, 40), np.uint8)
    write_tiled(path, image, tile=16, overwrite=True)
    np.testing.assert_array_equal(tifffile.imread(path), image)


def test_abort_leaves_nothing(tmp_path):
    path = tmp_path / "out.tif"
    image = _image((300, 500), np.uint16)
    writer = TiledTiffWriter(path, image.shape, image.dtype, tile=32, pyramid=True)
    writer.write_band(0, image[:100])
    assert len(os.listdir(tmp_path)) > 0  # the temporary files
    writer.abort()
    assert os.listdir(tmp_path) == []

    with pytest.raises(RuntimeError, match="boom"):
        with TiledTiffWriter(path, image.shape, image.dtype, tile=32, pyramid=True) as writer:
            writer.write_band(0, image[:150])
            raise RuntimeError("boom")
    assert os.listdir(tmp_path) == []

    path.write_bytes(b"old")  # an existing output outlives an aborted overwrite
    with pytest.raises(RuntimeError):
        with TiledTiffWriter(path, image.shape, image.dtype, overwrite=True) as writer:
            writer.write_band(0, image[:10])
            raise RuntimeError
    assert path.read_bytes() == b"old" and os.listdir(tmp_path) == ["out.tif"]

    writer = TiledTiffWriter(tmp_path / "short.tif", image.shape, image.dtype)
    writer.write_band(0, image[:299])
    with pytest.raises(ValueError, match="only 299 of the image's 300 rows"):
        writer.close()
    assert os.listdir(tmp_path) == ["out.tif"]


def test_write_band_checks_its_input(tmp_path):
    image = _image((100, 60, 3), np.uint8)
    with TiledTiffWriter(tmp_path / "out.tif", image.shape, image.dtype, tile=16) as writer:
        with pytest.raises(ValueError, match="dtype"):
            writer.write_band(0, image[:10].astype(np.uint16))
        with pytest.raises(ValueError, match="shape"):
            writer.write_band(0, image[:10, :59])
        with pytest.raises(ValueError, match="shape"):
            writer.write_band(0, image[:10, :, 0])
        with pytest.raises(ValueError, match="next row to write is 0"):
            writer.write_band(10, image[10:20])
        writer.write_band(0, image[:10])
        with pytest.raises(ValueError, match="next row to write is 10"):
            writer.write_band(0, image[:10])
        with pytest.raises(ValueError, match="run past"):
            writer.write_band(10, np.concatenate([image[10:], image[:1]]))
        writer.write_band(10, image[10:])
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "out.tif"), image)


def test_writer_refuses_bad_settings(tmp_path):
    path = tmp_path / "out.tif"
    for args, kwargs, words in [
        (((10, 10), np.int16), {}, "dtype int16"),
        (((10, 10, 2), np.uint8), {}, "(Y, X) or (Y, X, 3|4)"),
        (((10, 10), np.uint8), {"tile": 100}, "multiple of 16"),
        (((10, 10), np.uint8), {"compression": "lzw"}, "compression"),
        (((10, 10), np.uint8), {"pixel_size": (1.0, -1.0)}, "positive"),
        (((10, 10), np.uint8), {"pixel_size": (1.0, 1.0), "unit": "parsec"}, "unit"),
    ]:
        with pytest.raises(MfifError, match=words.replace("(", r"\(").replace(")", r"\)")
                           .replace("|", r"\|")):
            TiledTiffWriter(path, *args, **kwargs)
    with pytest.raises(MfifError, match="extension|.tif"):
        TiledTiffWriter(tmp_path / "out.png", (10, 10), np.uint8)
    assert os.listdir(tmp_path) == []


def test_errors_in_the_writing_thread_reach_the_caller(tmp_path, monkeypatch):
    import napari_mfif.slide_io as slide_io

    def broken(rows):
        raise OSError("disk on fire")

    monkeypatch.setattr(slide_io, "downsample2", broken)
    image = _image((200, 100), np.uint8)
    writer = TiledTiffWriter(tmp_path / "out.tif", image.shape, image.dtype, tile=16,
                             pyramid=True)
    with pytest.raises(OSError, match="disk on fire"):
        deadline = time.monotonic() + 10
        for y in range(0, 200, 16):  # the thread fails on the first row of tiles
            writer.write_band(y, image[y:y + 16])
            assert time.monotonic() < deadline
        writer.close()
    with pytest.raises(OSError, match="disk on fire"):
        writer.close()
    assert os.listdir(tmp_path) == []
