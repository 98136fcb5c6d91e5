"""Reading by content and atomic, no-clobber writing, on real files."""

import os

import numpy as np
import pytest
import tifffile
from PIL import Image

from napari_mfif import MfifError
from napari_mfif._reader import napari_get_reader
from napari_mfif.io import read_image, read_lazy, read_physical_scale, read_stack, write_image


def test_multipage_tiff_stack_round_trip(tmp_path):
    stack = np.random.default_rng(0).integers(0, 4096, (4, 20, 30), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "s.tif", stack, photometric="minisblack")
    assert np.array_equal(read_stack(tmp_path / "s.tif"), stack)


def test_rgb_tiff_stack(tmp_path):
    stack = np.random.default_rng(1).integers(0, 255, (3, 20, 30, 3), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "s.tif", stack, photometric="rgb")
    assert np.array_equal(read_stack(tmp_path / "s.tif"), stack)


def test_files_are_read_by_content_not_extension(tmp_path):
    a = np.random.default_rng(2).integers(0, 255, (16, 16), dtype=np.uint8)
    Image.fromarray(a).save(tmp_path / "slice.jpg", format="PNG")   # a PNG named .jpg
    tifffile.imwrite(tmp_path / "slice.png", a)                      # a TIFF named .png
    Image.fromarray(a).save(tmp_path / "slice.bmp", format="BMP")
    for name in ("slice.jpg", "slice.png", "slice.bmp"):
        assert np.array_equal(read_image(tmp_path / name), a), name


def test_sixteen_bit_png_keeps_its_values(tmp_path):
    a = np.array([[0, 1000], [40000, 65535]], np.uint16)
    Image.fromarray(a).save(tmp_path / "a.png")
    out = read_image(tmp_path / "a.png")
    assert out.dtype == np.uint16 and np.array_equal(out, a)


def test_list_of_files_stacks_in_order(tmp_path):
    slices = [np.full((8, 8), v, np.uint8) for v in (10, 20, 30)]
    paths = []
    for i, s in enumerate(slices):
        paths.append(tmp_path / f"z{i}.png")
        Image.fromarray(s).save(paths[-1])
    assert np.array_equal(read_stack(paths[::-1]), np.stack(slices[::-1]))


@pytest.mark.parametrize(
    "make,message",
    [
        (lambda p: None, "not found"),
        (lambda p: p.write_text("hello, not an image"), "not a TIFF"),
        (lambda p: p.write_bytes(b"II*\x00" + b"\x00" * 10), "cannot read TIFF"),
        (lambda p: p.mkdir(), "is a directory"),
    ],
    ids=["missing", "text", "truncated-tiff", "directory"],
)
def test_unreadable_inputs_are_clear_errors(tmp_path, make, message):
    path = tmp_path / "input.tif"
    make(path)
    with pytest.raises(MfifError, match=message):
        read_image(path)


def test_single_image_is_not_a_stack(tmp_path):
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "rgb.png")
    with pytest.raises(MfifError, match="single image"):
        read_stack(tmp_path / "rgb.png")


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_tiff_write_keeps_dtype_and_values(tmp_path, dtype):
    image = (np.random.default_rng(3).random((10, 12)) * 200).astype(dtype)
    write_image(tmp_path / "out.tif", image)
    assert np.array_equal(tifffile.imread(tmp_path / "out.tif"), image)


@pytest.mark.parametrize("shape", [(10, 12, 2), (10, 12, 3), (10, 12, 5), (3, 10, 12), (4, 10, 12, 3)])
def test_tiff_layouts_round_trip(tmp_path, shape):
    image = np.random.default_rng(5).integers(0, 60000, shape, dtype=np.uint16)
    write_image(tmp_path / "out.tif", image)
    assert np.array_equal(tifffile.imread(tmp_path / "out.tif"), image)


def test_single_channel_is_written_as_grey(tmp_path):
    image = np.arange(20, dtype=np.uint8).reshape(4, 5, 1)
    write_image(tmp_path / "out.tif", image)
    assert np.array_equal(tifffile.imread(tmp_path / "out.tif"), image[..., 0])


def test_png_holds_8_and_16_bits_and_jpeg_8(tmp_path):
    rgb = np.random.default_rng(4).integers(0, 255, (10, 12, 3), dtype=np.uint8)
    write_image(tmp_path / "out.png", rgb)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "out.png")), rgb)
    write_image(tmp_path / "out.jpg", rgb)
    assert np.asarray(Image.open(tmp_path / "out.jpg")).shape == rgb.shape
    with pytest.raises(MfifError, match="JPEG holds 8-bit images only"):
        write_image(tmp_path / "deep.jpg", rgb.astype(np.uint16))
    with pytest.raises(MfifError, match="PNG holds 8-bit and 16-bit images only .* float32"):
        write_image(tmp_path / "float.png", rgb.astype(np.float32))
    assert not (tmp_path / "deep.jpg").exists() and not (tmp_path / "float.png").exists()


@pytest.mark.parametrize("shape", [(10, 12), (10, 12, 3), (10, 12, 4)])
def test_16_bit_png_round_trip_keeps_every_bit(tmp_path, shape):
    deep = np.random.default_rng(5).integers(0, 65536, shape, dtype=np.uint16)
    write_image(tmp_path / "deep.png", deep)
    back = read_image(tmp_path / "deep.png")
    assert back.dtype == np.uint16 and np.array_equal(back, deep)
    if len(shape) == 2:  # an independent reader agrees
        assert np.array_equal(np.asarray(Image.open(tmp_path / "deep.png")), deep)


def test_16_bit_colour_png_is_read_at_16_bits(tmp_path):
    """Pillow reads a 48-bit PNG as 8-bit RGB; the reader keeps the low byte."""
    import imagecodecs

    deep = np.random.default_rng(6).integers(0, 65536, (9, 11, 3), dtype=np.uint16)
    (tmp_path / "camera.png").write_bytes(imagecodecs.png_encode(deep))
    assert np.asarray(Image.open(tmp_path / "camera.png")).dtype == np.uint8  # what Pillow does
    back = read_image(tmp_path / "camera.png")
    assert back.dtype == np.uint16 and np.array_equal(back, deep)


def test_existing_output_is_kept_unless_overwrite(tmp_path):
    target = tmp_path / "out.tif"
    target.write_bytes(b"precious")
    with pytest.raises(MfifError, match="exists"):
        write_image(target, np.zeros((4, 4), np.uint8))
    assert target.read_bytes() == b"precious"
    write_image(target, np.ones((4, 4), np.uint8), overwrite=True)
    assert np.array_equal(tifffile.imread(target), np.ones((4, 4), np.uint8))
    assert sorted(os.listdir(tmp_path)) == ["out.tif"]  # no temporary files left


def test_failed_write_leaves_nothing(tmp_path):
    with pytest.raises(MfifError, match="no alpha"):
        write_image(tmp_path / "out.jpg", np.zeros((4, 4, 4), np.uint8))
    assert os.listdir(tmp_path) == []


def test_bad_output_paths(tmp_path):
    with pytest.raises(MfifError, match="does not exist"):
        write_image(tmp_path / "missing" / "out.tif", np.zeros((4, 4), np.uint8))
    with pytest.raises(MfifError, match="unsupported output extension"):
        write_image(tmp_path / "out.xyz", np.zeros((4, 4), np.uint8))


def test_written_file_has_ordinary_permissions(tmp_path):
    path = write_image(tmp_path / "out.tif", np.zeros((4, 4), np.uint8))
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~umask


# -- layouts of stacks whose shape alone is ambiguous ----------------------------------------

@pytest.mark.parametrize("channels", [2, 5, 16])
def test_multichannel_stack_is_one_page_of_channels_per_slice(tmp_path, channels):
    stack = np.random.default_rng(6).integers(0, 60000, (3, 10, 12, channels), dtype=np.uint16)
    path = write_image(tmp_path / "zyxc.tif", stack)
    with tifffile.TiffFile(path) as tif:
        assert len(tif.pages) == 3 and tif.pages[0].shape == (10, 12, channels)
        assert tif.series[0].axes == "ZYXS"
    assert np.array_equal(read_image(path), stack)
    assert np.array_equal(read_stack(path), stack)
    lazy = read_lazy(path)
    assert lazy.chunksize == (1, 10, 12, channels) and np.array_equal(lazy.compute(), stack)


def test_multichannel_stack_keeps_its_scale(tmp_path):
    stack = np.random.default_rng(7).integers(0, 60000, (3, 10, 12, 2), dtype=np.uint16)
    path = write_image(tmp_path / "zyxc.tif", stack, scale=(2.0, 0.5, 0.25), unit="µm")
    assert np.array_equal(read_image(path), stack)
    scale, units = read_physical_scale(path)  # the channel axis has no size
    assert scale == (2.0, 0.5, 0.25, 1.0) and units == ("µm", "µm", "µm", "pixel")


@pytest.mark.parametrize("shape", [(4, 20, 8), (3, 10, 3), (3, 10, 4), (2, 10, 16), (5, 6, 2)])
def test_stack_with_few_columns_is_written_as_slices_when_said(tmp_path, shape):
    stack = np.random.default_rng(8).integers(0, 60000, shape, dtype=np.uint16)
    path = write_image(tmp_path / "zyx.tif", stack, stack=True)
    with tifffile.TiffFile(path) as tif:
        assert len(tif.pages) == shape[0] and tif.pages[0].shape == shape[1:]
    assert np.array_equal(read_image(path), stack)
    assert np.array_equal(read_lazy(path).compute(), stack)
    # unsaid, the array is taken for one (Y, X, C) image, as before
    path = write_image(tmp_path / "yxc.tif", stack)
    with tifffile.TiffFile(path) as tif:
        assert len(tif.pages) == 1
    assert np.array_equal(read_image(path), stack)


def test_stack_with_few_columns_keeps_its_scale(tmp_path):
    stack = np.random.default_rng(9).integers(0, 60000, (4, 20, 8), dtype=np.uint16)
    path = write_image(tmp_path / "zyx.tif", stack, scale=(2.0, 0.5, 0.25), unit="µm",
                       stack=True)
    assert np.array_equal(read_image(path), stack)
    assert read_physical_scale(path) == ((2.0, 0.5, 0.25), ("µm",) * 3)


def test_single_channel_stack_is_written_as_grey_slices(tmp_path):
    stack = np.arange(3 * 10 * 8, dtype=np.uint16).reshape(3, 10, 8, 1)
    path = write_image(tmp_path / "zyx1.tif", stack)
    with tifffile.TiffFile(path) as tif:
        assert len(tif.pages) == 3 and tif.pages[0].shape == (10, 8)
    assert np.array_equal(read_image(path), stack[..., 0])


def test_stack_keyword_takes_stacks_only(tmp_path):
    with pytest.raises(MfifError, match="a stack is"):
        write_image(tmp_path / "out.tif", np.zeros((8, 8), np.uint8), stack=True)
    assert os.listdir(tmp_path) == []


# -- inputs are only read --------------------------------------------------------------------

def test_reading_leaves_read_only_inputs_untouched(tmp_path, monkeypatch):
    import builtins

    stack = np.random.default_rng(10).integers(0, 4095, (3, 20, 24), dtype=np.uint16)
    tif = write_image(tmp_path / "stack.tif", stack, scale=(2.0, 0.5, 0.5), unit="µm")
    png = tmp_path / "slice.png"
    Image.fromarray(stack[0].astype(np.uint8)).save(png)
    os.utime(tif, ns=(10**18, 10**18))  # a time the reading could not have set by chance
    os.utime(png, ns=(10**18, 10**18))
    # As root (CI containers), permissions do not stop writing: there the unchanged bytes
    # and times, and the modes files are opened with, are what shows that nothing wrote.
    opened = []
    real_open = builtins.open

    def recording_open(file, mode="r", *args, **kwargs):
        opened.append((os.fspath(file) if isinstance(file, (str, os.PathLike)) else file, mode))
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", recording_open)
    for path in (tif, png):
        os.chmod(path, 0o444)
    os.chmod(tmp_path, 0o555)
    try:
        before = {p: (p.read_bytes(), os.stat(p).st_mtime_ns) for p in (tif, png)}
        assert np.array_equal(read_image(tif), stack)
        assert np.array_equal(read_stack(tif), stack)
        assert np.array_equal(read_lazy(tif).compute(), stack)
        assert read_physical_scale(tif).scale == (2.0, 0.5, 0.5)
        [(data, _, _)] = napari_get_reader(str(tif))(str(tif))
        assert np.array_equal(data.compute(), stack)
        assert read_image(png).shape == (20, 24) and read_stack([png, png]).shape == (2, 20, 24)
        assert read_physical_scale(png).scale == (1.0, 1.0)
        after = {p: (p.read_bytes(), os.stat(p).st_mtime_ns) for p in (tif, png)}
        assert after == before
        assert sorted(os.listdir(tmp_path)) == ["slice.png", "stack.tif"]  # no lock files
    finally:
        os.chmod(tmp_path, 0o755)
    inputs = {os.fspath(tif), os.fspath(png)}
    modes = {mode for file, mode in opened if file in inputs}
    assert modes and all(set(mode) <= set("rb") for mode in modes), modes


def test_tiff_written_page_by_page_is_a_stack(tmp_path):
    """Each page its own series (TiffWriter.write once per slice): the pages are the
    slices, through every reader, the tiled path and the command line."""
    from napari_mfif.cli import main
    from napari_mfif.slide_io import TiffStackSource

    import napari_mfif as mf
    from napari_mfif.synthetic import focal_stack

    s = focal_stack(n_slices=5, shape=(64, 80), dtype=np.uint16, seed=21)
    path = tmp_path / "pages.tif"
    with tifffile.TiffWriter(path) as tif:
        for plane in s.stack:
            tif.write(plane)
    with tifffile.TiffFile(path) as tif:
        assert len(tif.series) == 5  # what tifffile itself makes of it
    assert np.array_equal(read_image(path), s.stack)
    assert np.array_equal(read_stack(path), s.stack)
    assert np.array_equal(read_lazy(path).compute(), s.stack)
    source = TiffStackSource.open(path)
    assert source.shape == s.stack.shape and np.array_equal(source.read(3, 0, 64, 0, 80), s.stack[3])
    out = tmp_path / "fused.tif"
    assert main(["fuse", str(path), "-o", str(out), "-q"]) == 0
    assert np.array_equal(tifffile.imread(out), mf.fuse(s.stack).image)
    # pages of different shapes are not one stack: the first image alone, refused as such
    mixed = tmp_path / "mixed.tif"
    with tifffile.TiffWriter(mixed) as tif:
        tif.write(s.stack[0])
        tif.write(s.stack[1, :32])
    with pytest.raises(MfifError, match="single image"):
        read_stack(mixed)


@pytest.mark.parametrize("deep", [False, True])
def test_png_declaring_too_many_pixels_is_refused_before_decoding(tmp_path, deep):
    """A header claiming 30000 x 30000 px on a tiny file, 8-bit (Pillow's check) and 16-bit
    (ours, before imagecodecs decodes): the same one-sentence refusal."""
    import zlib

    import imagecodecs

    image = np.zeros((4, 4), np.uint16 if deep else np.uint8)
    data = bytearray(imagecodecs.png_encode(image))
    data[16:24] = (30000).to_bytes(4, "big") * 2  # IHDR width and height ...
    data[29:33] = zlib.crc32(bytes(data[12:29])).to_bytes(4, "big")  # ... and its checksum
    path = tmp_path / "bomb.png"
    path.write_bytes(bytes(data))
    with pytest.raises(MfifError, match="declares more pixels than Pillow opens"):
        read_image(path)
