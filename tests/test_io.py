"""Reading by content and atomic, no-clobber writing, on real files."""

import os

import numpy as np
import pytest
import tifffile
from PIL import Image

from napari_mfif import MfifError
from napari_mfif.io import read_image, read_stack, write_image


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


def test_png_and_jpeg_are_eight_bit_only(tmp_path):
    rgb = np.random.default_rng(4).integers(0, 255, (10, 12, 3), dtype=np.uint8)
    write_image(tmp_path / "out.png", rgb)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "out.png")), rgb)
    write_image(tmp_path / "out.jpg", rgb)
    assert np.asarray(Image.open(tmp_path / "out.jpg")).shape == rgb.shape
    with pytest.raises(MfifError, match="8-bit images only"):
        write_image(tmp_path / "deep.png", rgb.astype(np.uint16))
    assert not (tmp_path / "deep.png").exists()


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
