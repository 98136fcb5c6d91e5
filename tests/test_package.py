"""Packaging contract: cheap import, lazy API, the napari manifest found and valid."""

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "napari", "qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "vispy")


def _modules_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", code + "\nimport sys; print(' '.join(sorted(sys.modules)))"],
        check=True, capture_output=True, text=True,
    ).stdout.split()
    return {m for m in out if m.split(".")[0] in HEAVY}


def test_import_does_not_load_torch_qt_or_napari():
    assert _modules_after("import napari_mfif") == set()


def test_classic_fusion_does_not_load_torch_qt_or_napari():
    code = (
        "import numpy as np, napari_mfif as mf\n"
        "r = mf.fuse(np.random.default_rng(0).random((3, 16, 16), dtype=np.float32))\n"
        "assert r.device == 'cpu'"
    )
    assert _modules_after(code) == set()


def test_listing_methods_does_not_load_torch():
    # the widget lists the methods; the CNN method must not pull torch in to be listed
    code = "import napari_mfif as mf\nassert 'cnn' in mf.available_methods()"
    assert _modules_after(code) == set()


def test_public_names_resolve_lazily():
    import napari_mfif as mf

    for name in mf.__all__:
        assert getattr(mf, name) is not None
    with pytest.raises(AttributeError):
        mf.no_such_name  # noqa: B018


def test_packaged_manifest_is_the_top_level_one():
    from importlib.resources import files

    packaged = files("napari_mfif").joinpath("napari.yaml").read_text()
    assert packaged == (ROOT / "napari.yaml").read_text()


def test_npe2_validates_and_lists_the_plugin():
    npe2 = shutil.which("npe2", path=str(Path(sys.executable).parent))
    assert npe2, "npe2 is installed with the testing extra"
    res = subprocess.run([npe2, "validate", "napari-mfif"], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    from npe2 import PluginManager

    pm = PluginManager.instance()
    pm.discover()
    manifest = pm.get_manifest("napari-mfif")
    assert [w.display_name for w in manifest.contributions.widgets] == [
        "Fuse focal stack", "Inspect focus map"]
    assert [s.key for s in manifest.contributions.sample_data] == [
        "focal_stack", "fluorescence_stack", "brightfield_stack"]
    (reader,) = manifest.contributions.readers
    assert reader.filename_patterns == ["*.tif", "*.tiff", "*.czi", "*.nd2", "*.lif", "*.zarr"]
    assert reader.accepts_directories  # OME-Zarr folders
    tiff, zarr = manifest.contributions.writers
    assert tiff.layer_types == zarr.layer_types == ["image"]
    assert tiff.filename_extensions == [".tif", ".tiff"]
    assert zarr.filename_extensions == [".zarr"]


def test_wheel_carries_the_manifest(tmp_path):
    res = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "-w", str(tmp_path), str(ROOT)],
        capture_output=True, text=True,
    )
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    (wheel,) = tmp_path.glob("napari_mfif-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        manifest = zf.read("napari_mfif/napari.yaml").decode()
        entry_points = next(n for n in zf.namelist() if n.endswith("entry_points.txt"))
        eps = zf.read(entry_points).decode()
    assert manifest == (ROOT / "napari.yaml").read_text()
    assert "napari-mfif = napari_mfif:napari.yaml" in eps
    assert "napari-mfif = napari_mfif.cli:main" in eps
