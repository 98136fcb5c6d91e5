"""Whole slides from the command line: TIFF read by regions, tiled BigTIFF written by bands."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

import napari_mfif as mf
from napari_mfif import _memory, io
from napari_mfif.cli import main
from napari_mfif.registry import DEFAULT_METHOD, get_method
from napari_mfif.synthetic import fluorescence_image, focal_stack
from napari_mfif.tiles import default_overlap


def run_cli(*args, env=None):
    import os

    exe = Path(sys.executable).parent / "napari-mfif"
    return subprocess.run([str(exe), *map(str, args)], capture_output=True, text=True,
                          env=None if env is None else {**os.environ, **env})


@pytest.fixture(scope="module")
def slide(tmp_path_factory):
    """A 6-slice 301 x 453 uint16 stack as an ImageJ hyperstack with pixel size and z step,
    and as one tiled zlib BigTIFF per slice."""
    s = focal_stack(fluorescence_image((301, 453), seed=4), n_slices=6, photons=300.0,
                    dtype=np.uint16, seed=4)
    folder = tmp_path_factory.mktemp("slide")
    stack = folder / "stack.tif"
    tifffile.imwrite(stack, s.stack, imagej=True, resolution=(2.0, 2.0),
                     metadata={"axes": "ZYX", "spacing": 1.5, "unit": "um"})
    planes = []
    for k, plane in enumerate(s.stack):
        planes.append(folder / f"plane_{k}.tif")
        tifffile.imwrite(planes[-1], plane, bigtiff=True, tile=(64, 64), compression="zlib")
    return s, stack, planes


def test_tiled_cli_equals_whole_image_cli_and_keeps_pixel_size(slide, tmp_path):
    s, stack, _ = slide
    whole, tiled = tmp_path / "whole.tif", tmp_path / "tiled.tif"
    assert main(["fuse", str(stack), "-o", str(whole), "-q"]) == 0
    res = run_cli("fuse", stack, "-o", tiled, "--height-map", tmp_path / "h.tif",
                  "--height-units", "um", "--tile-size", "128",
                  env={"NAPARI_MFIF_PROGRESS_DELAY": "0"})  # lines even for a quick run
    assert res.returncode == 0, res.stderr
    spec = get_method(DEFAULT_METHOD)  # the overlap is the default method's reach
    overlap = default_overlap(spec, dict(spec.params), len(s.stack), "nway")
    assert f"12 tiles of 128 px, overlap {overlap} px, 3 passes" in res.stdout
    # the progress over tiles: a line per tenth on a pipe (no terminal), the last at 100 %
    lines = [line for line in res.stderr.splitlines() if line.startswith("tiles: ")]
    assert 5 <= len(lines) <= 10 and lines[-1].startswith("tiles: 36/36 tiles (100%)")
    assert "s left" in lines[0]
    a, b = tifffile.imread(whole), tifffile.imread(tiled)
    assert b.dtype == np.uint16 and np.array_equal(a, b)
    api = mf.fuse(s.stack)
    assert np.array_equal(b, api.image)
    assert np.array_equal(tifffile.imread(tmp_path / "h.tif"), api.index_map * np.float32(1.5))
    scale = io.read_physical_scale(tiled)
    assert scale.scale == pytest.approx((0.5, 0.5)) and scale.units == ("µm", "µm")
    with tifffile.TiffFile(tiled) as tif:
        assert tif.pages[0].is_tiled and tif.is_bigtiff


def test_one_file_per_slice_compressed_tiles_and_a_pyramid(slide, tmp_path):
    s, _, planes = slide
    out = tmp_path / "fused.tif"
    assert main(["fuse", *map(str, planes), "-o", str(out), "--tile-size", "192",
                 "--pyramid", "-q"]) == 0
    with tifffile.TiffFile(out) as tif:
        levels = [level.asarray() for level in tif.series[0].levels]
    assert np.array_equal(levels[0], mf.fuse(s.stack).image)
    assert len(levels) >= 2 and levels[1].shape == (151, 227)
    expected = levels[0][:300, :452].reshape(150, 2, 226, 2).astype(float).mean(axis=(1, 3))
    assert np.abs(levels[1][:150, :226] - expected).max() <= 0.5


def test_local_cluster_from_the_command_line(slide, tmp_path):
    s, stack, _ = slide
    out = tmp_path / "fused.tif"
    res = run_cli("fuse", stack, "-o", out, "--workers", "2", "--tile-size", "128")
    assert res.returncode == 0, res.stderr
    assert "2 workers" in res.stdout
    assert np.array_equal(tifffile.imread(out), mf.fuse(s.stack).image)


def test_too_large_for_memory_is_tiled_automatically(slide, tmp_path, monkeypatch, capsys):
    s, stack, _ = slide
    # room for a slice, not for fusing the stack in memory
    monkeypatch.setattr(_memory, "available_bytes", lambda: 4 * 2**20)
    out = tmp_path / "fused.tif"
    assert main(["fuse", str(stack), "-o", str(out)]) == 0
    assert "tiles of 1024 px" in capsys.readouterr().out
    assert np.array_equal(tifffile.imread(out), mf.fuse(s.stack).image)


def test_interrupted_tiled_run_leaves_no_output(slide, tmp_path, monkeypatch, capsys):
    from napari_mfif import cli

    _, stack, _ = slide
    out, height = tmp_path / "fused.tif", tmp_path / "h.tif"

    def interrupt(self, done, total):
        if done > total // 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(cli.Progress, "__call__", interrupt)
    code = main(["fuse", str(stack), "-o", str(out), "--height-map", str(height),
                 "--tile-size", "128"])
    assert code == 130 and "no output was written" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no output, no temp file


def test_existing_outputs_are_kept_without_overwrite(slide, tmp_path):
    _, stack, _ = slide
    out = tmp_path / "fused.tif"
    out.write_bytes(b"keep me")
    res = run_cli("fuse", stack, "-o", out, "--tile-size", "128")
    assert res.returncode == 2 and "exists" in res.stderr
    assert out.read_bytes() == b"keep me"
    assert run_cli("fuse", stack, "-o", out, "--tile-size", "128", "--overwrite").returncode == 0
    assert tifffile.imread(out).shape == (301, 453)


@pytest.mark.parametrize("extra,message", [
    (["--tile-size", "128", "--align", "translation"], "--align needs the whole stack"),
    (["--workers", "2", "--scheduler", "tcp://127.0.0.1:1"], "not both"),
    (["--tile-size", "0"], "tile size must be a positive"),
    (["--overlap", "-1"], "--overlap must be a whole number"),
    (["--tile-size", "128", "--method", "cnn", "-p", "min_region=0", "--focus-channel", "0"],
     "--focus-channel is not supported with tiles"),
])
def test_bad_tiled_requests_are_one_line_errors(slide, tmp_path, extra, message):
    _, stack, _ = slide
    res = run_cli("fuse", stack, "-o", tmp_path / "out.tif", *extra)
    assert res.returncode == 2, res.stderr
    assert message in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert not (tmp_path / "out.tif").exists()


def test_png_output_is_refused_with_tiles(slide, tmp_path):
    _, stack, _ = slide
    res = run_cli("fuse", stack, "-o", tmp_path / "out.png", "--tile-size", "128")
    assert res.returncode == 2 and "tiled BigTIFFs" in res.stderr


def test_large_stacks_go_tile_by_tile_unasked_and_in_memory_overrides(slide, tmp_path,
                                                                      monkeypatch, capsys):
    """Above the rule's threshold (lowered here) a stack is fused tile by tile without any
    option, to the same result; --in-memory keeps it whole; with tile options it is an
    error."""
    from napari_mfif import cli

    _, stack, _ = slide
    assert main(["fuse", str(stack), "-o", str(tmp_path / "a.tif")]) == 0
    assert "tiles of" not in capsys.readouterr().out  # small: whole image
    monkeypatch.setattr(_memory, "TILE_ABOVE_BYTES", 1024)
    assert main(["fuse", str(stack), "-o", str(tmp_path / "b.tif")]) == 0
    assert "tiles of 1024 px" in capsys.readouterr().out
    assert main(["fuse", str(stack), "-o", str(tmp_path / "c.tif"), "--in-memory"]) == 0
    assert "tiles of" not in capsys.readouterr().out
    a, b, c = (tifffile.imread(tmp_path / f"{n}.tif") for n in "abc")
    assert np.array_equal(a, b) and np.array_equal(a, c)
    assert main(["fuse", str(stack), "-o", str(tmp_path / "d.tif"), "--in-memory",
                 "--tile-size", "128"]) == 2
    assert "exclude each other" in capsys.readouterr().err


def test_png_slices_go_tile_by_tile_from_memory(tmp_path, monkeypatch, capsys):
    """Image files that cannot be read by region (PNG) still fuse tile by tile: the slices
    are held, the work is tiled; the result equals whole-image fusion."""
    from PIL import Image

    from napari_mfif import cli

    s = focal_stack(n_slices=4, shape=(200, 230), dtype=np.uint8, seed=6)
    names = []
    for k, plane in enumerate(s.stack):
        names.append(str(tmp_path / f"plane_{k}.png"))
        Image.fromarray(plane).save(names[-1])
    assert main(["fuse", *names, "-o", str(tmp_path / "whole.tif"), "-q"]) == 0
    assert main(["fuse", *names, "-o", str(tmp_path / "tiles.tif"), "--tile-size", "64"]) == 0
    assert "tiles of 64 px" in capsys.readouterr().out
    monkeypatch.setattr(_memory, "TILE_ABOVE_BYTES", 1024)
    assert main(["fuse", *names, "-o", str(tmp_path / "auto.tif"), "-q"]) == 0
    whole = tifffile.imread(tmp_path / "whole.tif")
    assert np.array_equal(tifffile.imread(tmp_path / "tiles.tif"), whole)
    assert np.array_equal(tifffile.imread(tmp_path / "auto.tif"), whole)


def test_planar_rgb_layout_is_one_stack_at_every_size(tmp_path, capsys):
    """tifffile's default layout for a (3, Y, X) array (colour samples in separate planes)
    is fused as 3 slices in memory; tile by tile (asked for here, as a large one would be)
    it is now the same stack, read whole since the region reader does not take that layout,
    instead of being refused."""
    s = focal_stack(n_slices=3, shape=(256, 256), dtype=np.uint8, seed=9)
    path = tmp_path / "planar.tif"
    tifffile.imwrite(path, s.stack)  # photometric RGB, PlanarConfiguration 2
    with tifffile.TiffFile(path) as tif:
        assert tif.pages[0].planarconfig == 2
    assert main(["fuse", str(path), "-o", str(tmp_path / "whole.tif"), "-q"]) == 0
    assert main(["fuse", str(path), "-o", str(tmp_path / "tiles.tif"), "--tile-size", "64"]) == 0
    assert "fused 3 slices of 256x256 uint8" in capsys.readouterr().out
    whole = tifffile.imread(tmp_path / "whole.tif")
    assert whole.shape == (256, 256)
    assert np.array_equal(tifffile.imread(tmp_path / "tiles.tif"), whole)
