"""The command line, end to end on real files: round trips and one-line errors."""

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

import napari_mfif as mf
from napari_mfif.cli import main
from napari_mfif.synthetic import focal_stack


def run_cli(*args, cwd=None):
    """The installed console script, as a user runs it."""
    exe = Path(sys.executable).parent / "napari-mfif"
    return subprocess.run([str(exe), *map(str, args)], capture_output=True, text=True, cwd=cwd)


@pytest.fixture(scope="module")
def tiff_stack(tmp_path_factory):
    s = focal_stack(n_slices=5, shape=(64, 80), dtype=np.uint16, seed=11)
    path = tmp_path_factory.mktemp("in") / "stack.tif"
    tifffile.imwrite(path, s.stack)
    return path, s


def test_tiff_round_trip_matches_the_api(tiff_stack, tmp_path):
    path, s = tiff_stack
    out, height = tmp_path / "fused.tif", tmp_path / "height.tif"
    res = run_cli("fuse", path, "-o", out, "--height-map", height, "--method", "tenengrad",
                  "--mode", "series", "--device", "cpu", "-p", "window=2")
    assert res.returncode == 0, res.stderr
    assert str(out) in res.stdout and str(height) in res.stdout
    api = mf.fuse(s.stack, method="tenengrad", mode="series", device="cpu", window=2)
    fused = tifffile.imread(out)
    assert fused.dtype == np.uint16 and np.array_equal(fused, api.image)
    assert np.array_equal(tifffile.imread(height), api.index_map)


def test_list_of_png_files(tmp_path):
    s = focal_stack(n_slices=3, shape=(40, 50), dtype=np.uint8, seed=12)
    names = []
    for k, sl in enumerate(s.stack):
        names.append(tmp_path / f"plane_{k}.png")
        Image.fromarray(sl).save(names[-1])
    assert main(["fuse", *map(str, names), "-o", str(tmp_path / "fused.png"), "-q"]) == 0
    fused = np.asarray(Image.open(tmp_path / "fused.png"))
    assert np.array_equal(fused, mf.fuse(s.stack).image)


def test_sample_then_fuse(tmp_path):
    assert main(["sample", "-o", str(tmp_path / "sample.tif")]) == 0
    stack = tifffile.imread(tmp_path / "sample.tif")
    assert np.array_equal(stack, mf.sample_stack().stack)
    assert main(["fuse", str(tmp_path / "sample.tif"), "-o", str(tmp_path / "f.tif"),
                 "--height-map", str(tmp_path / "h.tif"), "-q"]) == 0
    assert tifffile.imread(tmp_path / "f.tif").dtype == np.uint16
    # the sample's pixel size travels to the stack file and on to the outputs
    from napari_mfif.io import read_physical_scale
    from napari_mfif.synthetic import SAMPLE_SCALE

    assert read_physical_scale(tmp_path / "sample.tif").scale == SAMPLE_SCALE
    for name in ("f.tif", "h.tif"):
        assert read_physical_scale(tmp_path / name) == (SAMPLE_SCALE[1:], ("µm", "µm"))


def test_methods_lists_the_registry(capsys):
    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    for name in mf.available_methods():
        assert name in out


def _bad_cases(tmp, stack_path):
    single = tmp / "single.png"
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(single)
    a, b = tmp / "a.png", tmp / "b.png"
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(a)
    Image.fromarray(np.zeros((16, 20), np.uint8)).save(b)
    text = tmp / "notes.txt"
    text.write_text("not an image")
    exists = tmp / "exists.tif"
    exists.write_bytes(b"keep me")
    return {
        "single 2-D image": ([single], "single image"),
        "different shapes": ([a, b], "same shape"),
        "empty list": ([], "no input given"),
        "non-image file": ([text, a], "not a TIFF"),
        "missing file": ([tmp / "nope.tif"], "not found"),
        "unknown method": ([stack_path, "--method", "magic"], "unknown method"),
        "bad param": ([stack_path, "-p", "radius=3"], "no parameter 'radius'"),
        "missing out dir": ([stack_path, "-o", tmp / "no" / "f.tif"], "does not exist"),
        "existing output": ([stack_path, "-o", exists], "exists"),
        "16-bit to jpeg": ([stack_path, "-o", tmp / "f.jpg"], "JPEG holds 8-bit images only"),
        "output is input": ([stack_path, "-o", stack_path, "--overwrite"], "one of the inputs"),
        "bad flag": ([stack_path, "--frobnicate"], "unrecognized arguments"),
    }


@pytest.mark.parametrize("case", [
    "single 2-D image", "different shapes", "empty list", "non-image file", "missing file",
    "unknown method", "bad param", "missing out dir", "existing output", "16-bit to jpeg",
    "output is input", "bad flag",
])
def test_bad_input_gives_one_line_and_no_output(tiff_stack, tmp_path, case):
    args, message = _bad_cases(tmp_path, tiff_stack[0])[case]
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")}
    args = [str(x) for x in args]
    if "-o" not in args:
        args += ["-o", str(tmp_path / "fused.tif")]
    res = run_cli("fuse", *args)
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("napari-mfif: error: "), res.stderr
    assert message in lines[0]
    assert "Traceback" not in res.stderr and res.stdout == ""
    after = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")}
    assert after == before  # nothing written, nothing touched
    assert (tmp_path / "exists.tif").read_bytes() == b"keep me"


def test_overwrite_flag_replaces_output(tiff_stack, tmp_path):
    out = tmp_path / "f.tif"
    out.write_bytes(b"old")
    assert main(["fuse", str(tiff_stack[0]), "-o", str(out), "--overwrite", "-q"]) == 0
    assert tifffile.imread(out).shape == (64, 80)
    assert os.listdir(tmp_path) == ["f.tif"]


def test_module_entry_point_and_version():
    res = subprocess.run([sys.executable, "-m", "napari_mfif", "--version"],
                         capture_output=True, text=True)
    assert res.returncode == 0 and res.stdout.strip() == f"napari-mfif {mf.__version__}"


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def _wait_until_fusing(proc: subprocess.Popen, timeout: float = 120.0) -> None:
    """Until the CLI is past its imports and has spent a CPU second on the network."""
    deadline, torch_at = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the run ended before it could be interrupted"
        if torch_at is None:
            with open(f"/proc/{proc.pid}/maps") as f:
                if "libtorch" in f.read():
                    torch_at = time.monotonic()
        elif time.monotonic() - torch_at > 1.0 and _cpu_seconds(proc.pid) > 3.0:
            return
        time.sleep(0.05)
    raise AssertionError("the run did not start fusing in time")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="watches the run in /proc")
def test_ctrl_c_during_a_long_run_leaves_no_output(tmp_path):
    stack = np.random.default_rng(0).integers(0, 4096, (12, 768, 768), dtype=np.uint16)
    source = tmp_path / "stack.tif"
    tifffile.imwrite(source, stack)
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    out, height = tmp_path / "fused.tif", tmp_path / "height.tif"
    exe = Path(sys.executable).parent / "napari-mfif"
    proc = subprocess.Popen(
        [str(exe), "fuse", str(source), "-o", str(out), "--height-map", str(height),
         "--method", "cnn", "--mode", "series", "--device", "cpu"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        # a shell that started the tests in the background may have left SIGINT ignored
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        _wait_until_fusing(proc)
        interrupted = time.monotonic()
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, stderr
    assert time.monotonic() - interrupted < 10  # it stopped, it did not finish the work
    assert stderr.strip().splitlines() == ["napari-mfif: interrupted; no output was written"]
    assert stdout == ""
    assert os.listdir(tmp_path) == ["stack.tif"]  # no output, no hidden .part file
    assert hashlib.sha256(source.read_bytes()).hexdigest() == digest


def test_ctrl_c_while_the_file_is_written_leaves_nothing(tiff_stack, tmp_path, monkeypatch,
                                                         capsys):
    from napari_mfif import io

    encode = io._encode

    def half_then_interrupt(target, *args, **kwargs):
        encode(target, *args, **kwargs)
        with open(target, "rb+") as f:  # the temporary file holds half the image
            f.truncate(os.path.getsize(target) // 2)
        raise KeyboardInterrupt

    monkeypatch.setattr(io, "_encode", half_then_interrupt)
    assert main(["fuse", str(tiff_stack[0]), "-o", str(tmp_path / "f.tif")]) == 130
    captured = capsys.readouterr()
    assert captured.err.strip().splitlines() == ["napari-mfif: interrupted; no output was written"]
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("error", [KeyboardInterrupt, OSError(28, "No space left on device")])
def test_no_fused_image_without_its_height_map(tiff_stack, tmp_path, monkeypatch, capsys, error):
    from napari_mfif import io

    write, calls = io.write_image, []

    def write_then_fail(path, image, **kwargs):
        calls.append(path)
        if len(calls) == 2:  # the height map, after the fused image was written
            raise error
        return write(path, image, **kwargs)

    monkeypatch.setattr(io, "write_image", write_then_fail)
    out, height = tmp_path / "f.tif", tmp_path / "h.tif"
    code = main(["fuse", str(tiff_stack[0]), "-o", str(out), "--height-map", str(height)])
    assert code == (130 if error is KeyboardInterrupt else 2)
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    assert len(calls) == 2 and os.listdir(tmp_path) == []


def test_progress_lines_on_a_pipe_and_none_with_quiet(tmp_path):
    """An in-memory run reports its progress on stderr, a line per tenth when stderr is not
    a terminal, and nothing with -q; stdout keeps only the summary."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    s = focal_stack(n_slices=6, shape=(96, 96), dtype=np.uint16, seed=2)
    mf.write_image(tmp_path / "s.tif", s.stack, stack=True)
    exe = Path(sys.executable).parent / "napari-mfif"
    env = {**os.environ, "NAPARI_MFIF_PROGRESS_DELAY": "0"}
    res = subprocess.run([str(exe), "fuse", str(tmp_path / "s.tif"), "-o",
                          str(tmp_path / "f.tif")], capture_output=True, text=True, env=env)
    assert res.returncode == 0, res.stderr
    lines = res.stderr.splitlines()
    assert lines and all(line.startswith("fusing: ") for line in lines)
    assert "(100%)" in lines[-1] and len(lines) <= 10
    assert "fusing" not in res.stdout
    res = subprocess.run([str(exe), "fuse", str(tmp_path / "s.tif"), "-o",
                          str(tmp_path / "g.tif"), "-q"], capture_output=True, text=True,
                         env=env)
    assert res.returncode == 0 and res.stderr == "" and res.stdout == ""


def test_progress_bar_on_a_terminal_is_tqdm():
    import io as _io

    from napari_mfif._progress import Progress

    class Terminal(_io.StringIO):
        def isatty(self):
            return True

    out = Terminal()
    bar = Progress("fusing", "step", stream=out)
    bar.start -= 5  # as if the run had gone on for 5 s
    for k in range(1, 11):
        bar(k, 10)
    assert "fusing: 100%" in out.getvalue() and "10/10" in out.getvalue()


def test_z_from_names_gives_the_height_map(tmp_path, capsys):
    """Slices whose z is only in their names (signed, irregular, as an autofocus program
    writes them): --z-from-names puts those z values into the height map, in memory and
    tile by tile alike; names without a number, or z that does not rise, are refused."""
    s = focal_stack(n_slices=4, shape=(96, 96), dtype=np.uint16, seed=12)
    z = [-12.5, -2.0, 0.0, 7.25]
    names = []
    for value, plane in zip(z, s.stack):
        names.append(str(tmp_path / f"tile_{value}.tif"))
        tifffile.imwrite(names[-1], plane)
    h, ht = tmp_path / "h.tif", tmp_path / "ht.tif"
    assert main(["fuse", *names[::-1], "-o", str(tmp_path / "f.tif"), "--height-map", str(h),
                 "--z-from-names"]) == 0
    assert "planes at z = -12.5, -2, 0, 7.25 µm (from the file names)" in capsys.readouterr().out
    index = mf.fuse(s.stack).index_map
    assert np.allclose(tifffile.imread(h), np.interp(index, np.arange(4), z), atol=1e-4)
    assert main(["fuse", *names, "-o", str(tmp_path / "g.tif"), "--height-map", str(ht),
                 "--z-from-names", "--tile-size", "64", "-q"]) == 0
    assert np.allclose(tifffile.imread(ht), tifffile.imread(h), atol=1e-4)
    # refused before any work: z falling with --keep-order, a name without a number
    assert main(["fuse", *names[::-1], "--keep-order", "-o", str(tmp_path / "k.tif"),
                 "--height-map", str(tmp_path / "kh.tif"), "--z-from-names"]) == 2
    assert "do not rise" in capsys.readouterr().err
    other = tmp_path / "plain.tif"
    tifffile.imwrite(other, s.stack[0])
    assert main(["fuse", names[0], str(other), "-o", str(tmp_path / "m.tif"),
                 "--z-from-names"]) == 2
    assert "no number in the name of plain.tif" in capsys.readouterr().err
    assert not (tmp_path / "k.tif").exists() and not (tmp_path / "m.tif").exists()
