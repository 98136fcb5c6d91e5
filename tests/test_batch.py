"""``napari-mfif batch``, end to end on real files: every stack of a folder fused as
``napari_mfif.fuse`` fuses it, resumed runs skip what is done, a bad stack fails alone."""

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

import napari_mfif as mf
from napari_mfif.registry import DEFAULT_METHOD
from napari_mfif.synthetic import focal_stack


def run_cli(*args, cwd=None):
    """The installed console script, as a user runs it."""
    exe = Path(sys.executable).parent / "napari-mfif"
    return subprocess.run([str(exe), *map(str, args)], capture_output=True, text=True, cwd=cwd)


def read_summary(folder):
    with open(folder / "batch_summary.csv", newline="", encoding="utf-8") as f:
        return {Path(row["input"]).name: row for row in csv.DictReader(f)}


def make_folder(root):
    """Two TIFF stacks and a subfolder of PNG slices named plane_1 ... plane_10; the stacks
    by name."""
    root.mkdir()
    stacks = {}
    for name, n, seed in (("alpha", 5, 21), ("beta", 7, 22)):
        s = focal_stack(n_slices=n, shape=(64, 80), dtype=np.uint16, seed=seed).stack
        tifffile.imwrite(root / f"{name}.tif", s)
        stacks[name] = s
    planes = focal_stack(n_slices=10, shape=(64, 80), dtype=np.uint8, seed=23).stack
    (root / "planes").mkdir()
    for k, sl in enumerate(planes, start=1):  # plane_10 lists before plane_2 by plain sorting
        Image.fromarray(sl).save(root / "planes" / f"plane_{k}.png")
    stacks["planes"] = planes
    return stacks


@pytest.fixture(scope="module")
def fused_folder(tmp_path_factory):
    """The folder after one batch run with height maps, the run, and the stacks."""
    root = tmp_path_factory.mktemp("batch") / "in"
    stacks = make_folder(root)
    res = run_cli("batch", root, "--height-map", "--device", "cpu")
    return root, res, stacks


def test_every_stack_fused_as_the_api_fuses_it(fused_folder):
    root, res, stacks = fused_folder
    assert res.returncode == 0, res.stderr
    for name, stack in stacks.items():
        api = mf.fuse(stack, device="cpu")
        fused = tifffile.imread(root / f"{name}_fused.tif")
        assert fused.dtype == stack.dtype and np.array_equal(fused, api.image), name
        # the height map shows the slices were taken in natural order (plane_2 before plane_10)
        assert np.array_equal(tifffile.imread(root / f"{name}_height.tif"), api.index_map), name
    rows = read_summary(root)
    assert set(rows) == {"alpha.tif", "beta.tif", "planes"}
    assert {name: row["slices"] for name, row in rows.items()} == {
        "alpha.tif": "5", "beta.tif": "7", "planes": "10"}
    for name, row in rows.items():
        assert row["status"] == "done" and row["method"] == DEFAULT_METHOD
        assert row["mode"] == "nway" and float(row["seconds"]) >= 0
        assert Path(row["output"]) == (root / f"{Path(name).stem}_fused.tif").resolve()
        assert Path(row["height_map"]) == (root / f"{Path(name).stem}_height.tif").resolve()
    assert "3 stacks: 3 done, 0 skipped, 0 failed" in res.stdout


def test_a_second_run_skips_every_stack_and_touches_nothing(fused_folder):
    root, first, _ = fused_folder
    assert first.returncode == 0, first.stderr
    outputs = sorted(p for p in root.iterdir() if p.name.endswith(("_fused.tif", "_height.tif")))
    assert len(outputs) == 6
    mtimes = {p: p.stat().st_mtime_ns for p in outputs}
    res = run_cli("batch", root, "--height-map", "--device", "cpu")
    assert res.returncode == 0, res.stderr
    assert res.stdout.count("skipped (done)") == 3
    assert "ignored" not in res.stdout  # the first run's outputs are neither stacks nor noted
    assert {p: p.stat().st_mtime_ns for p in outputs} == mtimes
    assert [row["status"] for row in read_summary(root).values()] == ["skipped"] * 3
    assert not [p for p in root.iterdir() if p.name.startswith(".")]  # no temporary files


def test_a_damaged_stack_fails_alone(tmp_path):
    root = tmp_path / "in"
    stacks = make_folder(root)
    data = (root / "alpha.tif").read_bytes()
    (root / "broken.tif").write_bytes(data[: len(data) * 6 // 10])  # cut off mid-data
    out = tmp_path / "out" / "deeper"  # created
    res = run_cli("batch", root, "-o", out, "--device", "cpu")
    assert res.returncode == 2
    errors = [line for line in res.stderr.splitlines() if line.startswith("napari-mfif: error:")]
    assert len(errors) == 1 and "broken.tif" in errors[0], res.stderr
    assert "3 done, 0 skipped, 1 failed" in res.stderr
    for name, stack in stacks.items():
        assert np.array_equal(tifffile.imread(out / f"{name}_fused.tif"),
                              mf.fuse(stack, device="cpu").image)
    assert not (out / "broken_fused.tif").exists() and not (root / "alpha_fused.tif").exists()
    rows = read_summary(out)
    assert rows["broken.tif"]["status"] == "failed" and rows["broken.tif"]["output"] == ""
    message = rows["broken.tif"]["message"]
    assert "broken.tif" in message and ("truncated" in message or "damaged" in message)
    assert [rows[n]["status"] for n in ("alpha.tif", "beta.tif", "planes")] == ["done"] * 3


def test_jobs_give_the_same_outputs(tmp_path):
    root = tmp_path / "in"
    make_folder(root)
    for jobs in (1, 2):
        res = run_cli("batch", root, "-o", tmp_path / f"jobs{jobs}", "--jobs", jobs,
                      "--height-map", "--device", "cpu", "-q")
        assert res.returncode == 0, res.stderr
        assert res.stdout == ""
    for name in ("alpha", "beta", "planes"):
        for kind in ("fused", "height"):
            one = tifffile.imread(tmp_path / "jobs1" / f"{name}_{kind}.tif")
            two = tifffile.imread(tmp_path / "jobs2" / f"{name}_{kind}.tif")
            assert one.dtype == two.dtype and np.array_equal(one, two), (name, kind)
    one, two = read_summary(tmp_path / "jobs1"), read_summary(tmp_path / "jobs2")
    assert list(one) == list(two) == ["alpha.tif", "beta.tif", "planes"]  # in input order
    assert [r["slices"] for r in one.values()] == [r["slices"] for r in two.values()]


def test_single_images_are_noted_and_overwrite_fuses_again(tmp_path):
    root = tmp_path / "in"
    root.mkdir()
    s = focal_stack(n_slices=6, shape=(64, 80), dtype=np.uint8, seed=24).stack
    tifffile.imwrite(root / "stack.tif", s)
    tifffile.imwrite(root / "photo.tif", s[0])
    Image.fromarray(s[1]).save(root / "photo.png")
    (root / "notes.txt").write_text("not an image")
    res = run_cli("batch", root, "--format", "png", "--method", "tenengrad", "-p", "window=2",
                  "--mode", "series")
    assert res.returncode == 0, res.stderr
    assert "photo.png, photo.tif" in res.stdout and "notes.txt" not in res.stdout
    api = mf.fuse(s, method="tenengrad", mode="series", window=2)
    assert np.array_equal(np.asarray(Image.open(root / "stack_fused.png")), api.image)
    (row,) = read_summary(root).values()
    assert (row["method"], row["mode"], row["status"]) == ("tenengrad", "series", "done")
    before = (root / "stack_fused.png").stat().st_mtime_ns
    res = run_cli("batch", root, "--format", "png", "--overwrite", "-q")
    assert res.returncode == 0, res.stderr
    assert (root / "stack_fused.png").stat().st_mtime_ns != before
    assert read_summary(root)["stack.tif"]["status"] == "done"


def test_a_folder_without_stacks_is_one_error(tmp_path):
    res = run_cli("batch", tmp_path)
    assert res.returncode == 2
    assert res.stderr.startswith("napari-mfif: error: no focal stacks in ")
    assert len(res.stderr.splitlines()) == 1
    assert not (tmp_path / "batch_summary.csv").exists()


def test_fuse_help_names_the_default_method():
    res = run_cli("fuse", "--help")
    assert res.returncode == 0, res.stderr
    text = " ".join(res.stdout.split())  # argparse wraps the help
    assert f"default: {DEFAULT_METHOD}" in text
    for name in mf.available_methods():
        assert name in text


def test_parser_does_not_load_the_methods():
    code = ("import sys; import napari_mfif.cli as c; c.build_parser(); "
            "print('torch' in sys.modules, 'napari_mfif.focus.dog' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_batch_z_from_names_for_folders_of_slices(tmp_path):
    """--z-from-names reaches the folders of slices (their height maps hold the z of the
    names) and leaves multi-page TIFFs alone (their z step comes from the file)."""
    import tifffile

    from napari_mfif.cli import main
    from napari_mfif.synthetic import focal_stack

    folder = tmp_path / "in"
    (folder / "tiles").mkdir(parents=True)
    s = focal_stack(n_slices=3, shape=(64, 64), dtype=np.uint16, seed=4)
    z = [-5.0, 0.0, 12.5]
    for value, plane in zip(z, s.stack):
        tifffile.imwrite(folder / "tiles" / f"t_{value}.tif", plane)
    tifffile.imwrite(folder / "stack.tif", s.stack, imagej=True,
                     metadata={"axes": "ZYX", "spacing": 2.0, "unit": "um"})
    assert main(["batch", str(folder), "--height-map", "--z-from-names", "-q"]) == 0
    index = mf.fuse(s.stack).index_map
    assert np.allclose(tifffile.imread(folder / "tiles_height.tif"),
                       np.interp(index, np.arange(3), z), atol=1e-4)
    assert np.allclose(tifffile.imread(folder / "stack_height.tif"), index * 2.0, atol=1e-4)
