"""The memory guard: free memory, the estimate of a fusion's peak, and refusing in time."""

import os
import subprocess
import sys
import textwrap

import dask
import dask.array as da
import numpy as np
import pytest
import tifffile

import napari_mfif as mf
from napari_mfif import MfifError, _memory
from napari_mfif._memory import available_bytes, check_fits, fusion_bytes, stack_bytes
from napari_mfif.cli import main

GIB = 2**30


def _total_ram():
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        pytest.skip("total RAM is not known on this platform")


def test_available_bytes_is_positive_and_at_most_the_ram():
    free = available_bytes()
    assert isinstance(free, int) and 0 < free <= _total_ram()


def _cgroup_v2(tmp_path, limit, current, inactive):
    mount = tmp_path / "cgroup"
    job = mount / "batch" / "job 7"  # a space: mountinfo escapes it, /proc/self/cgroup not
    job.mkdir(parents=True)
    (job / "memory.max").write_text(f"{limit}\n")
    (job / "memory.current").write_text(f"{current}\n")
    (job / "memory.stat").write_text(f"anon {current}\ninactive_file {inactive}\n")
    (mount / "batch" / "memory.max").write_text("max\n")
    cgroups = "0::/batch/job 7\n"
    escaped = str(mount).replace(" ", "\\040")
    mountinfo = (f"30 23 0:26 / {escaped} rw,nosuid - cgroup2 cgroup2 rw\n"
                 "22 1 8:1 / / rw,relatime - ext4 /dev/sda1 rw\n")
    return cgroups, mountinfo


def test_cgroup_v2_limit_leaves_limit_minus_usage(tmp_path):
    cgroups, mountinfo = _cgroup_v2(tmp_path, 2 * GIB, GIB, GIB // 4)
    # the page cache it can drop (inactive_file) is not counted as used
    assert _memory._cgroup_headroom(cgroups, mountinfo) == 2 * GIB - (GIB - GIB // 4)


def test_cgroup_without_limit_gives_none(tmp_path):
    cgroups, mountinfo = _cgroup_v2(tmp_path, "max", GIB, 0)
    assert _memory._cgroup_headroom(cgroups, mountinfo) is None


def test_cgroup_v1_limit_of_a_parent_counts(tmp_path):
    mount = tmp_path / "memory"
    job = mount / "slurm" / "job_3"
    job.mkdir(parents=True)
    (job / "memory.limit_in_bytes").write_text(f"{2**63 - 4096}\n")  # "unlimited"
    (mount / "slurm" / "memory.limit_in_bytes").write_text(f"{4 * GIB}\n")
    (mount / "slurm" / "memory.usage_in_bytes").write_text(f"{3 * GIB}\n")
    (mount / "slurm" / "memory.stat").write_text("cache 0\ntotal_inactive_file 0\n")
    cgroups = "5:memory:/slurm/job_3\n4:cpu,cpuacct:/slurm/job_3\n0::/\n"
    mountinfo = f"35 31 0:32 / {mount} rw,relatime - cgroup cgroup rw,memory\n"
    assert _memory._cgroup_headroom(cgroups, mountinfo) == GIB


def test_meminfo_parsing():
    text = "MemTotal:       24684096 kB\nMemFree:  100 kB\nMemAvailable:   23914752 kB\n"
    assert _memory._meminfo_available(text) == 23914752 * 1024
    assert _memory._meminfo_available("MemTotal: 5 kB\n") is None  # kernels before 3.14


@pytest.mark.parametrize("method", ["tenengrad", "variance", "cnn"])
@pytest.mark.parametrize("mode", ["nway", "series"])
def test_estimate_grows_linearly(method, mode):
    def est(z=10, y=512, x=512, c=None):
        shape = (z, y, x) if c is None else (z, y, x, c)
        return fusion_bytes(shape, np.uint16, method, mode)

    by_slices = est(20) - est(10)
    assert by_slices == est(30) - est(20)                        # in the slice count
    if method == "cnn":
        assert by_slices > 10 * 512 * 512 * 4
    elif mode == "nway":  # slice by slice: only the consistency check's vote grid grows
        assert 0 < by_slices <= 10 * 512 * 512 * 1
    else:  # slice by slice in series: nothing grows with the slices
        assert by_slices == 0
    assert est(y=1024) - est() == est(y=1536) - est(y=1024) > 0  # in the slice area
    assert est(c=3) - est(c=2) == est(c=4) - est(c=3) > 0        # in the channel count
    # float64 work arrays take twice the room of float32 ones
    assert fusion_bytes((10, 512, 512), np.float64, method, mode) > est()


def test_bigger_network_and_kept_weights_need_more():
    shape = (10, 1024, 1024)
    compact = fusion_bytes(shape, np.uint16, "cnn", "nway")
    assert fusion_bytes(shape, np.uint16, "cnn", "nway", params={"arch": "liu2017"}) > compact
    assert fusion_bytes(shape, np.uint16, "cnn", "nway", params={"weights": "my.pt"}) > compact
    for mode in ("series", "nway"):
        plain = fusion_bytes(shape, np.uint16, "tenengrad", mode)
        assert fusion_bytes(shape, np.uint16, "tenengrad", mode, return_weights=True) > plain


_MEASURE = textwrap.dedent("""
    import sys
    import numpy as np
    import napari_mfif as mf

    def status(key):
        with open("/proc/self/status") as f:
            return next(int(l.split()[1]) * 1024 for l in f if l.startswith(key + ":"))

    rng = np.random.default_rng(0)
    stack = rng.integers(0, 4096, (12, 2048, 2048), dtype=np.uint16)
    mf.fuse(stack[:2, :64, :64], method="tenengrad")  # imports and first-call set-up
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # VmHWM := VmRSS
    before = status("VmRSS")
    mf.fuse(stack, method="tenengrad", mode=sys.argv[1])
    print(status("VmHWM") - before)
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads VmHWM from /proc")
@pytest.mark.parametrize("mode", ["nway", "series"])
def test_estimate_is_honest_for_the_classic_methods(mode):
    """A real fusion's peak memory (in a fresh process) lies within the estimate, and not
    far below it. If this fails after a change to the fusion code, measure again and update
    the factors in napari_mfif/_memory.py (its docstring says how)."""
    res = subprocess.run([sys.executable, "-c", _MEASURE, mode], capture_output=True,
                         text=True)
    assert res.returncode == 0, res.stderr
    peak = int(res.stdout)
    est = fusion_bytes((12, 2048, 2048), np.uint16, "tenengrad", mode)
    assert 0.6 * est < peak <= est, (mode, peak / 2**20, est / 2**20)


def _lazy_stack(shape, dtype, calls):
    def load():
        calls.append(1)
        return np.zeros(shape, dtype)

    return da.from_delayed(dask.delayed(load)(), shape=shape, dtype=dtype)


def test_fuse_refuses_a_dask_stack_too_large_without_computing_it(monkeypatch):
    calls = []
    stack = _lazy_stack((6, 512, 512), np.uint16, calls)
    monkeypatch.setattr(_memory, "available_bytes", lambda: 16 * 2**20)
    # the weights are as large as the stack, so this cannot be tiled either
    with pytest.raises(MfifError) as info:
        mf.fuse(stack, return_weights=True)
    message = str(info.value)
    assert "6 x 512 x 512 uint16" in message and "16 MiB is available" in message
    assert "MiB" in message.split("needs about")[1].split("but")[0]
    assert "\n" not in message and "tile by tile (tile_size=, --tile-size)" in message
    assert calls == []  # never loaded
    # without weights it is fused tile by tile instead of refused
    tiled = mf.fuse(stack)
    assert tiled.tiles is not None and tiled.image.shape == (512, 512) and calls
    monkeypatch.undo()
    calls.clear()
    whole = mf.fuse(stack)
    assert whole.tiles is None and calls == [1]
    assert np.array_equal(whole.image, tiled.image)


def test_a_loaded_stack_is_not_counted_twice(monkeypatch):
    shape = (6, 256, 256)
    need = fusion_bytes(shape, np.uint16, "tenengrad", "nway")
    monkeypatch.setattr(_memory, "available_bytes", lambda: need)
    mf.fuse(np.zeros(shape, np.uint16))  # in memory already: only the work must fit
    with pytest.raises(MfifError, match="needs about"):  # a dask array is loaded first
        mf.fuse(_lazy_stack(shape, np.uint16, []), return_weights=True)
    with pytest.raises(MfifError, match="needs about"):
        mf.fuse(list(np.zeros(shape, np.uint16)))  # the slices are stacked into a copy


def test_message_reads_like_the_docs(monkeypatch):
    monkeypatch.setattr(_memory, "available_bytes", lambda: 12 * GIB)
    with pytest.raises(MfifError) as info:
        check_fits((96, 8192, 8192), np.uint16, "tenengrad", "nway")
    message = str(info.value)
    need = fusion_bytes((96, 8192, 8192), np.uint16) + stack_bytes((96, 8192, 8192), np.uint16)
    assert message == (
        f"fusing this 96 x 8192 x 8192 uint16 stack with tenengrad (nway) in memory needs about "
        f"{need / GIB:.0f} GiB but only 12 GiB is available; fuse a crop or fewer slices, "
        "or tile by tile (tile_size=, --tile-size) with a method that can"
    )


def test_sizes_that_round_alike_get_a_decimal(monkeypatch):
    need = fusion_bytes((8, 4096, 4096), np.uint16) + stack_bytes((8, 4096, 4096), np.uint16)
    monkeypatch.setattr(_memory, "available_bytes", lambda: need - 16 * 2**20)
    with pytest.raises(MfifError) as info:
        check_fits((8, 4096, 4096), np.uint16)
    sizes = str(info.value).split("about ")[1].split(" is available")[0].split(" but only ")
    assert sizes[0] != sizes[1], sizes


def test_a_normal_stack_passes_the_guard(synth):
    check_fits(synth.stack.shape, synth.stack.dtype, "cnn", "series")
    assert mf.fuse(synth.stack).image.shape == synth.stack.shape[1:]


def test_unknown_free_memory_does_not_block(monkeypatch):
    monkeypatch.setattr(_memory, "available_bytes", lambda: None)
    check_fits((400, 65536, 65536), np.float64, "cnn", "nway")


def test_bad_input_is_left_to_the_input_checks(monkeypatch):
    monkeypatch.setattr(_memory, "available_bytes", lambda: 1)
    with pytest.raises(MfifError, match="single 2-D image"):
        mf.fuse(np.zeros((64, 64), np.uint8))
    with pytest.raises(MfifError, match="same shape"):
        mf.fuse([np.zeros((8, 8)), np.zeros((8, 9))])


def _tiff(tmp_path, shape=(6, 256, 256), dtype=np.uint16):
    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, np.zeros(shape, dtype), photometric="minisblack")
    return path


def test_cli_refuses_before_reading_the_pixels(tmp_path, monkeypatch, capsys):
    from napari_mfif import io

    path = _tiff(tmp_path)
    monkeypatch.setattr(_memory, "available_bytes", lambda: 8 * 2**20)

    def read_stack(*args, **kwargs):
        raise AssertionError("the pixels were read")

    monkeypatch.setattr(io, "read_stack", read_stack)
    out = tmp_path / "fused.tif"
    # aligning needs the whole stack in memory, so this run cannot be tiled instead
    assert main(["fuse", str(path), "-o", str(out), "--method", "cnn", "--align",
                 "translation"]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("napari-mfif: error: fusing this 6 x 256 x 256 "
                                                   "uint16 stack with cnn (nway)"), captured.err
    assert "MiB" in lines[0] and captured.out == ""
    assert os.listdir(tmp_path) == ["stack.tif"]


def test_cli_adds_up_the_slices_of_several_files(tmp_path, monkeypatch, capsys):
    from PIL import Image

    names = []
    for k in range(4):
        names.append(str(tmp_path / f"z{k}.png"))
        Image.fromarray(np.zeros((300, 400, 3), np.uint8)).save(names[-1])
    monkeypatch.setattr(_memory, "available_bytes", lambda: 8 * 2**20)
    assert main(["fuse", *names, "-o", str(tmp_path / "f.png")]) == 2
    assert "4 x 300 x 400 x 3 uint8 stack" in capsys.readouterr().err
    assert not (tmp_path / "f.png").exists()


def test_cli_fuses_a_stack_that_fits(tmp_path):
    path = _tiff(tmp_path, (3, 64, 64))
    assert main(["fuse", str(path), "-o", str(tmp_path / "f.tif"), "-q"]) == 0
    assert tifffile.imread(tmp_path / "f.tif").shape == (64, 64)
