"""Bad input through every surface: the API, the CLI and the widget.

Each case of issue 9's list is made once (arrays, files, layers) and sent through each
surface that can receive it. A refused case must give one sentence naming the problem (an
MfifError from the API, exit status 2 and one stderr line from the CLI, a notification in
napari) and write or add nothing. A valid corner case (flat slices) must give a correct
result. docs/errors.md lists these cases and messages; a
test below keeps it in step.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import tifffile

import napari_mfif as mf
from napari_mfif import MfifError
from napari_mfif.cli import main

DOCS = Path(__file__).resolve().parents[1] / "docs" / "errors.md"
rng = np.random.default_rng(0)
texture = rng.integers(0, 255, (3, 24, 24)).astype(np.uint8)


@dataclass
class Case:
    """One kind of bad (or awkward) input, in the forms the surfaces take."""

    message: str  # a fragment of the one-sentence answer; "" for a valid input
    array: np.ndarray | None = None  # a stack: API array input, one stack layer
    slices: list | None = None  # 2-D slices: API list input, 2-D layers, one file each
    files: Callable[[Path], list[Path]] | None = None  # CLI inputs (and read_stack)
    method: str = "tenengrad"
    cli_args: list[str] = field(default_factory=list)
    expect: np.ndarray | None = None  # the right fused image of a valid case


def _write(path: Path, data, **kwargs) -> Path:
    with warnings.catch_warnings():  # tifffile warns about the empty stack it is asked for
        warnings.simplefilter("ignore")
        tifffile.imwrite(path, data, **kwargs)
    return path


def _truncated(tmp: Path) -> list[Path]:
    good = _write(tmp / "good.tif", texture)
    data = good.read_bytes()
    path = tmp / "truncated.tif"
    path.write_bytes(data[: len(data) // 2])
    return [path]


def _corrupt(tmp: Path) -> list[Path]:
    path = tmp / "corrupt.tif"
    path.write_bytes(b"II*\x00" + b"\xff\xff\xff\x7f" + bytes(64))  # first IFD far past the end
    return [path]


def _not_an_image(tmp: Path) -> list[Path]:
    path = tmp / "notes.tif"
    path.write_text("these are my lab notes, not an image\n")
    return [path]


def _weights(tmp: Path, kind: str) -> Path:
    import torch

    from napari_mfif.focus.cnn import FocusNet, save_weights

    path = tmp / f"{kind}.pt"
    if kind == "wrong-shape":  # a valid file whose tensors do not fit the architecture
        net = FocusNet((16, 32, 32), 64)
        save_weights(net, path, "compact", {})
        blob = torch.load(path, weights_only=True)
        blob["channels"] = [8, 16, 16]  # says one size, holds another
        torch.save(blob, path)
    else:
        torch.save({"something": "else"}, path)
    return path


CASES: dict[str, Case] = {
    "single slice": Case("1 slice", array=texture[:1]),
    "single image file": Case("holds a single image",
                              files=lambda t: [_write(t / "one.tif", texture[0])]),
    "slices of different shapes": Case(
        "same shape", slices=[texture[0], texture[1, :20]]),
    "slices of different dtypes": Case(
        "same dtype", slices=[texture[0], texture[1].astype(np.uint16)]),
    "empty stack": Case("empty", array=np.zeros((0, 8, 8), np.uint8)),
    "no input": Case("no input given", files=lambda t: []),
    "NaN values": Case("NaN", array=np.where(texture > 250, np.nan, texture).astype(np.float32)),
    "infinite values": Case("NaN or infinite",
                            array=np.where(texture > 250, np.inf, texture).astype(np.float32)),
    "complex dtype": Case("complex", array=texture.astype(np.complex64)),
    "boolean dtype": Case("boolean", array=texture > 128),
    "flat slices": Case("", array=np.full((3, 24, 24), 37, np.uint16),
                        expect=np.full((24, 24), 37, np.uint16)),
    "flat slices, cnn": Case("", array=np.full((3, 24, 24), 37, np.uint16), method="cnn",
                             expect=np.full((24, 24), 37, np.uint16)),
    "1 x 1 image": Case("judging focus needs at least 8 x 8",
                        array=np.array([[[3]], [[9]], [[5]]], np.uint8)),
    "slices smaller than 8 x 8": Case("the slices are 7 x 24 pixels",
                                      array=texture[:, :7, :]),
    "smaller than a CNN patch": Case("judges 16 x 16 patches", array=texture[:, :10, :12],
                                     method="cnn"),
    "truncated TIFF": Case("cannot read TIFF file", files=_truncated),
    "corrupt TIFF": Case("cannot read TIFF file", files=_corrupt),
    "not an image": Case("not a TIFF and not an image format", files=_not_an_image),
    "missing file": Case("input file not found", files=lambda t: [t / "nowhere.tif"]),
    "a directory as input": Case("is a directory", files=lambda t: [t]),
    "output in a missing directory": Case(
        "output directory does not exist", array=texture,
        cli_args=["-o", "{tmp}/missing/fused.tif"]),
    "weights file of the wrong shape": Case(
        "do not fit the network", array=texture, method="cnn",
        cli_args=["-p", "weights={tmp}/wrong-shape.pt"]),
    "not a weights file": Case(
        "not a napari-mfif focus network weights file", array=texture, method="cnn",
        cli_args=["-p", "weights={tmp}/other.pt"]),
}


def _params(case: Case, tmp: Path) -> dict:
    params = {}
    args = [a.format(tmp=tmp) for a in case.cli_args]
    for i, arg in enumerate(args):
        if args[i - 1] == "-p" and "=" in arg:
            key, value = arg.split("=", 1)
            params[key] = value
    for kind in ("wrong-shape", "other"):
        if any(f"{kind}.pt" in a for a in args):
            _weights(tmp, kind)
    return params


def _check_valid(case: Case, image: np.ndarray, stack: np.ndarray) -> None:
    assert image.dtype == stack.dtype and image.shape == stack.shape[1:]
    if case.expect is not None:
        assert np.array_equal(image, case.expect)
    else:
        assert stack.min() <= image.min() and image.max() <= stack.max()


def _one_sentence(message: str, fragment: str) -> None:
    assert "\n" not in message and "Traceback" not in message
    assert fragment in message, message


# -- the API -----------------------------------------------------------------------------

@pytest.mark.parametrize("name", [n for n in CASES if "output" not in n])  # fuse() writes nothing
def test_api(name, tmp_path):
    case = CASES[name]
    params = _params(case, tmp_path)
    if case.files is not None:
        call = lambda: mf.fuse(mf.read_stack(case.files(tmp_path)), method=case.method)  # noqa: E731
    else:
        stack = case.array if case.array is not None else case.slices
        before = [np.copy(s) for s in stack]
        call = lambda: mf.fuse(stack, method=case.method, **params)  # noqa: E731
    if case.message:
        with pytest.raises(MfifError) as info:
            call()
        _one_sentence(str(info.value), case.message)
    else:
        result = call()
        _check_valid(case, result.image, case.array)
    if case.files is None:
        assert all(np.array_equal(a, b, equal_nan=a.dtype.kind in "fc")
                   for a, b in zip(before, stack))  # the input is never modified


# -- the CLI -----------------------------------------------------------------------------

def _cli_inputs(case: Case, tmp: Path) -> list[Path]:
    if case.files is not None:
        return case.files(tmp)
    if case.slices is not None:
        return [_write(tmp / f"slice{k}.tif", s) for k, s in enumerate(case.slices)]
    return [_write(tmp / "stack.tif", case.array)]


@pytest.mark.parametrize("name", list(CASES))
def test_cli(name, tmp_path, capsys):
    case = CASES[name]
    inputs = _cli_inputs(case, tmp_path)
    _params(case, tmp_path)
    args = [a.format(tmp=tmp_path) for a in case.cli_args]
    if "-o" not in args:
        args += ["-o", str(tmp_path / "fused.tif")]
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")}
    data_before = {p: p.read_bytes() for p in inputs if p.is_file()}
    status = main(["fuse", *map(str, inputs), "--method", case.method, *args])
    out, err = capsys.readouterr()
    if case.message:
        assert status == 2
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("napari-mfif: error: "), err
        _one_sentence(lines[0], case.message)
        after = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")}
        assert after == before  # nothing written, nothing touched
    else:
        assert status == 0, err
        fused = tifffile.imread(tmp_path / "fused.tif")
        _check_valid(case, fused, tifffile.imread(inputs[0]))
    assert {p: p.read_bytes() for p in data_before} == data_before  # inputs unchanged


# -- the widget --------------------------------------------------------------------------

@pytest.fixture
def notifications():
    from napari.utils.notifications import notification_manager

    seen = []

    def record(event):
        seen.append(str((event.value if hasattr(event, "value") else event).message))

    notification_manager.notification_ready.connect(record)
    yield seen
    notification_manager.notification_ready.disconnect(record)


@pytest.mark.parametrize("name", [n for n, c in CASES.items()
                                  if c.files is None and "output" not in n])
def test_widget(name, make_napari_viewer, qtbot, notifications, tmp_path):
    case = CASES[name]
    viewer = make_napari_viewer()
    _, widget = viewer.window.add_plugin_dock_widget("napari-mfif", "Fuse focal stack")
    params = _params(case, tmp_path)
    if case.array is not None and case.array.dtype.kind == "c":
        with pytest.raises(Exception):  # napari itself cannot show complex data as a layer
            viewer.add_image(case.array)
        return
    if case.slices is not None:
        layers = [viewer.add_image(s, name=f"s{k}") for k, s in enumerate(case.slices)]
        widget.source.value = "2-D layers as slices"
        widget.slices.value = layers
        source = case.slices
    else:
        layer = viewer.add_image(case.array, name="stack")
        widget.image.choices = [("stack", layer)]  # also 1-slice / empty layers
        widget.image.value = layer
        source = case.array
    widget.method.value = case.method
    for key, value in params.items():
        getattr(widget.params.panel(case.method), key).value = value
    names = [lay.name for lay in viewer.layers]
    widget.run()
    qtbot.waitUntil(lambda: not widget.running, timeout=60_000)
    if case.message:
        assert [lay.name for lay in viewer.layers] == names  # nothing added
        errors = [m for m in notifications if case.message in m]
        assert errors, notifications
        _one_sentence(errors[0], case.message)
    else:
        fused = viewer.layers[f"{names[0]} fused"].data
        _check_valid(case, fused, np.asarray(source))


# -- the docs ----------------------------------------------------------------------------

def test_docs_list_every_case_and_its_message():
    text = DOCS.read_text()
    for name, case in CASES.items():
        assert re.search(rf"\|\s*{re.escape(name)}\s*\|", text), f"docs/errors.md lacks {name!r}"
        if case.message:
            assert case.message in text, f"docs/errors.md lacks the message of {name!r}"


@pytest.mark.parametrize("name", ["corrupt TIFF", "truncated TIFF", "not an image"])
def test_console_script_prints_exactly_one_line(name, tmp_path):
    # in-process runs above let pytest capture logging; a real run must not print tifffile's
    # own log lines next to ours
    import subprocess
    import sys

    (path,) = CASES[name].files(tmp_path)
    exe = Path(sys.executable).parent / "napari-mfif"
    res = subprocess.run([str(exe), "fuse", str(path), "-o", str(tmp_path / "f.tif")],
                         capture_output=True, text=True)
    assert res.returncode == 2
    assert res.stderr.count("\n") == 1 and res.stderr.startswith("napari-mfif: error: "), res.stderr
    assert CASES[name].message in res.stderr


def test_images_over_pillows_limit_read_with_large_images(tmp_path, monkeypatch, capsys):
    """Pillow refuses files that declare more pixels than its decompression-bomb limit (a
    20000 x 20000 PNG); --large-images reads trusted ones. The limit is lowered here so
    that a small PNG stands in for a huge one."""
    from PIL import Image

    from napari_mfif.cli import main
    from napari_mfif.synthetic import focal_stack

    s = focal_stack(n_slices=3, shape=(64, 64), dtype=np.uint8, seed=1)
    names = []
    for k, plane in enumerate(s.stack):
        names.append(str(tmp_path / f"p{k}.png"))
        Image.fromarray(plane).save(names[-1])
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 64 x 64 > 2 x 1000
    assert main(["fuse", *names, "-o", str(tmp_path / "f.tif")]) == 2
    assert "--large-images" in capsys.readouterr().err
    assert main(["fuse", *names, "-o", str(tmp_path / "f.tif"), "--large-images", "-q"]) == 0
    assert Image.MAX_IMAGE_PIXELS == 1000  # the guard is back after the run
    import tifffile

    assert np.array_equal(tifffile.imread(tmp_path / "f.tif"), mf.fuse(s.stack).image)
