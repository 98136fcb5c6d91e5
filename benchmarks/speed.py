"""Speed: throughput, peak memory and whole-process time, against the tools users would pick.

    .venv/bin/python benchmarks/speed.py [--quick] [--work DIR] [--out PAGE]

Writes docs/benchmarks/speed.md and docs/benchmarks/img/speed_scaling.png (``--quick``: a
small configuration, written to the work folder unless ``--out`` is given). Sections:

1. throughput of every method and mode, in memory (``napari_mfif.fuse``, height map
   included) on a 20 x 1024 x 1024 uint16 synthetic stack (the CNN methods on
   10 x 512 x 512): megapixels per second per slice (slices x Y x X / 1e6 / seconds, the
   median of 3 runs after a warm-up run) and peak memory, each method in a fresh process;
2. baselines measured in the same run on the same stacks: a plain numpy choose-max-variance
   fusion (below, :func:`numpy_max_variance`), pyclesperanto's extended-depth-of-focus
   projections on the CPU through an OpenCL CPU driver (pocl), and enfuse (Hugin's
   exposure/focus blender, run as a focus stacker) where they are installed;
3. the whole process of the command line (start-up, reading, fusion, height map, writing) on
   a multi-page TIFF of 20 x 1024 x 1024 uint8 and uint16, against the goal of issue 10
   (7 MP/s per slice, 1.5 x focus-stack's 4.5) and against enfuse on the same slices;
4. scaling of the default method with slices (5 to 40) and pixels (512^2 to 4096^2);
5. a profile (cProfile) of the default method, grouped into the pipeline's stages.

Peak memory: the high-water mark of the process's resident set (VmHWM, reset through
/proc/self/clear_refs after loading the stack and the warm-up run) minus its resident set
at that point; for whole processes, ru_maxrss from wait4.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from _common import DOCS, machine

IMG = DOCS / "img"
PY = sys.executable
CLI = str(Path(sys.executable).parent / "napari-mfif")
HERE = Path(__file__).resolve()

#: issue 10: focus-stack takes about 4.5 s for 20 x 1024 x 1024 8-bit on the project's
#: 2-core machine (about 4.5 MP/s per slice); the goal is 1.5 x that
FOCUS_STACK_MPS = 4.5
GOAL_MPS = 7.0

FULL = dict(main=(20, 1024), cnn=(10, 512), cli=(20, 1024), repeats=3,
            slices=(5, 10, 20, 40), slices_size=1024,
            sizes=((10, 512), (10, 1024), (10, 2048), (5, 4096)),
            profile_cli=(20, 1024), profile_fuse=(5, 4096))
QUICK = dict(main=(6, 256), cnn=(4, 128), cli=(6, 256), repeats=1,
             slices=(3, 6, 12), slices_size=256,
             sizes=((4, 128), (4, 256), (2, 512)),
             profile_cli=(6, 256), profile_fuse=(3, 512))

CNN_METHODS = ("cnn", "cnn_wavelet")


# -- the stacks ------------------------------------------------------------------------------

def stack_file(work: Path, z: int, n: int, dtype: str) -> Path:
    """A synthetic z x n x n stack (and its sharp ground truth) as .npy, made once."""
    path = work / f"stack_{z}x{n}_{dtype}.npy"
    if not path.exists():
        import napari_mfif as mf

        syn = mf.focal_stack(n_slices=z, shape=(n, n), noise=0.01, dtype=np.dtype(dtype),
                             seed=1000 + z)
        np.save(path, np.ascontiguousarray(syn.stack))
        np.save(path.with_suffix(".sharp.npy"), syn.sharp)
    return path


# -- the numpy baseline ----------------------------------------------------------------------

def numpy_max_variance(stack: np.ndarray, size: int = 7) -> tuple[np.ndarray, np.ndarray]:
    """The simplest choose-max fusion: local variance over a size x size box (scipy's
    uniform_filter), the slice of the highest variance per pixel, that slice's value.
    Returns (fused image, height map)."""
    from scipy.ndimage import uniform_filter

    z = stack.shape[0]
    var = np.empty(stack.shape, np.float32)
    for k in range(z):
        g = stack[k].astype(np.float32)
        m = uniform_filter(g, size)
        var[k] = uniform_filter(g * g, size) - m * m
    index = np.argmax(var, axis=0)
    fused = np.take_along_axis(stack, index[None], axis=0)[0]
    return fused, index.astype(np.float32)


# -- worker: one configuration in a fresh process ---------------------------------------------

def _status_kib(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _psnr(sharp: np.ndarray, image: np.ndarray) -> float:
    ref = sharp.astype(np.float64)
    rng = float(ref.max() - ref.min()) or 1.0
    mse = float(np.mean((np.asarray(image, np.float64) - ref) ** 2))
    return 10 * np.log10(rng * rng / mse) if mse > 0 else float("inf")


def worker(spec: dict) -> dict:
    """Time one configuration: load the stack, one warm-up run, then ``repeats`` timed
    runs; peak memory above the resident set after the warm-up."""
    stack = np.load(spec["stack"])
    kind = spec["kind"]
    if kind == "fuse":
        import napari_mfif as mf

        def go():
            res = mf.fuse(stack, method=spec["method"], mode=spec["mode"],
                          device=spec.get("device", "cpu"))
            return res.image, res.index_map
    elif kind == "numpy":
        def go():
            return numpy_max_variance(stack)
    elif kind.startswith("cle_"):
        import pyclesperanto as cle

        device = cle.select_device(spec.get("cl_device", ""), "cpu")
        func = getattr(cle, f"extended_depth_of_focus_{kind[4:]}_projection")

        def go():
            gpu = cle.push(stack, device=device)
            out = func(gpu, device=device)
            return cle.pull(out), None
    else:
        raise ValueError(kind)

    info: dict = {"kind": kind}
    if kind.startswith("cle_"):
        info["cl_device"] = str(device.name)
    warm = spec.get("warmup", "full")
    if warm == "full":
        go()
    elif warm == "small":  # lazy imports and caches, not the full-size run
        keep = stack
        stack = np.ascontiguousarray(keep[:3, :128, :128])
        go()
        t = time.perf_counter()
        go()
        small = time.perf_counter() - t
        stack = keep
        # a baseline far slower than the rest runs on a centre crop that fits the budget
        predicted = small * stack.size / (3 * 128 * 128)
        limit = spec.get("budget", float("inf")) / max(spec["repeats"], 1)
        if predicted > limit:
            side = max(128, int(stack.shape[1] * (limit / predicted) ** 0.5) // 16 * 16)
            y0, x0 = (stack.shape[1] - side) // 2, (stack.shape[2] - side) // 2
            stack = np.ascontiguousarray(stack[:, y0:y0 + side, x0:x0 + side])
            info["crop"] = [y0, x0, side]
            info["predicted_full_s"] = predicted
    base = _status_kib("VmRSS")
    reset = _reset_peak()
    seconds, cpu = [], []
    image = None
    for _ in range(spec["repeats"]):
        t, c = time.perf_counter(), time.process_time()
        image, _height = go()
        seconds.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
        if sum(seconds) > spec.get("budget", float("inf")):
            break  # a slow baseline: fewer runs (the page gives the count)
    peak = _status_kib("VmHWM") if reset else None
    if peak is None:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    info.update(seconds=seconds, cpu=cpu, base_mib=base / 1024,
                peak_mib=(peak - base) / 1024, peak_reset=reset)
    info["shape"] = list(stack.shape)
    sharp = Path(spec["stack"]).with_suffix(".sharp.npy")
    if sharp.exists() and image is not None:
        sharp = np.load(sharp)
        if "crop" in info:
            y0, x0, side = info["crop"]
            sharp = sharp[y0:y0 + side, x0:x0 + side]
        info["psnr"] = _psnr(sharp, image)
    return info


def run_worker(spec: dict, timeout: float = 3600) -> dict:
    res = subprocess.run([PY, str(HERE), "--worker", json.dumps(spec)], capture_output=True,
                         text=True, timeout=timeout)
    if res.returncode != 0:
        return {"error": (res.stderr.strip().splitlines() or ["?"])[-1]}
    return json.loads(res.stdout.strip().splitlines()[-1])


# -- whole processes -------------------------------------------------------------------------

def timed_process(cmd: list[str], repeats: int, env: dict | None = None) -> dict:
    """One warm-up run (file cache), then ``repeats`` timed runs: medians."""
    runs = []
    for i in range(repeats + 1):
        r = _popen_wait4(cmd, env)
        if r["rc"] != 0:
            return {"error": f"exit {r['rc']}: {r['err'].strip()[-300:]}"}
        if i:
            runs.append(r)
    return {"seconds": [r["seconds"] for r in runs], "cpu": [r["cpu"] for r in runs],
            "peak_mib": max(r["peak_mib"] for r in runs)}


def _popen_wait4(cmd: list[str], env: dict | None = None) -> dict:
    """Wall time (from launch to exit), CPU time and peak RSS of one process. The peak is
    read by GNU time where it is installed: a child forked from this (large) process would
    count this process's pages in its ru_maxrss until it execs."""
    gnu_time = shutil.which("time") or ("/usr/bin/time" if os.path.exists("/usr/bin/time") else None)
    report = None
    if gnu_time:
        fd, report = tempfile.mkstemp(suffix=".time")
        os.close(fd)
        cmd = [gnu_time, "-o", report, "-f", "%U %S %M", *cmd]
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    err = proc.stderr.read()
    proc.stderr.close()
    _pid, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t
    proc.returncode = os.waitstatus_to_exitcode(status)
    out = {"rc": proc.returncode, "seconds": wall, "err": err.decode(errors="replace"),
           "cpu": usage.ru_utime + usage.ru_stime, "peak_mib": usage.ru_maxrss / 1024}
    if report:
        try:
            user, system, kib = Path(report).read_text().split()[-3:]
            out.update(cpu=float(user) + float(system), peak_mib=int(kib) / 1024)
        except ValueError:
            pass
        os.unlink(report)
    return out


# -- profile ---------------------------------------------------------------------------------

#: (function, caller or None) -> stage. A function's own time goes to the stage of the
#: first rule that names it (from that caller); any other function's time goes to its
#: callers' stages, in proportion to the time spent under each caller (gprof's rule).
STAGE_RULES = [
    (("<frozen importlib", None), None, "start-up: imports"),
    (("cli.py", "_stack_header"), None, "reading"),
    (("cli.py", "_first_tiff_info"), None, "reading"),
    (("io.py", "read_stack"), None, "reading"),
    (("io.py", "read_image"), None, "reading"),
    (("_api.py", "fuse"), None, "input checks, float conversion"),
    # slice by slice: each slice is converted when it is read (LazySlices.__getitem__);
    # the consistency check's rescored boxes (_SliceScore.__getitem__) are its own
    (("stack.py", "__getitem__"), ("consistency.py", "check"), "choice, consistency check, running sums"),
    (("stack.py", "__getitem__"), None, "input checks, float conversion"),
    (("stack.py", "_fill_flat"), None, "noise floor + flat-area fill"),
    (("stack.py", "__init__"), None, "noise floor + flat-area fill"),  # _FillScales
    (("stack.py", "at"), None, "noise floor + flat-area fill"),
    (("stack.py", "smoothed"), None, "decision smoothing"),
    (("stack.py", "nway_fuse"), None, "choice, consistency check, running sums"),
    (("stack.py", "noise_sigma"), None, "noise floor + flat-area fill"),
    (("classic.py", "noise_score"), None, "noise floor + flat-area fill"),
    (("stack.py", "fill_flat_areas"), None, "noise floor + flat-area fill"),
    (("dog.py", "fine_band_energy"), None, "focus measure"),
    (("classic.py", "tenengrad"), None, "focus measure"),
    (("classic.py", "local_variance"), None, "focus measure"),
    (("classic.py", "_choose"), None, "choice, consistency check, running sums"),
    (("stack.py", "nway_choice"), None, "choice, consistency check, running sums"),
    (("consistency.py", "check"), None, "choice, consistency check, running sums"),
    (("classic.py", "_gaussian"), None, "decision smoothing"),
    (("stack.py", "blend"), None, "blend + height map"),
    (("stack.py", "to_dtype"), None, "blend + height map"),
    (("stack.py", "index_from_weights"), ("classic.py", "_fuse"), "blend + height map"),
    (("classic.py", "_fuse"), None, "blend + height map"),
    (("io.py", "write_image"), None, "writing"),
    (("cli.py", "_pixel_size"), None, "writing"),
]
STAGES = ["start-up: interpreter", "start-up: imports", "reading",
          "input checks, float conversion", "focus measure", "choice, consistency check, running sums",
          "decision smoothing", "noise floor + flat-area fill", "blend + height map",
          "writing", "other"]
#: finer rows: the consistency check alone (its share of "choice, consistency check, running sums")
DETAIL = [(("consistency.py", "check"), "of which: consistency check"),
          (("stack.py", "noise_sigma"), "of which: noise level (Immerkaer)"),
          (("stack.py", "_fill_flat"), "of which: flat-area fill")]


def _match(func, pattern) -> bool:
    filename, _line, name = func
    where, what = pattern
    if what is None:
        return filename.startswith(where)
    return filename.endswith(where) and name == what


def stage_times(stats) -> dict[str, float]:
    """Own time of every profiled function, assigned to :data:`STAGES`."""
    raw = stats.stats
    dist: dict = {f: {"other": 1.0} for f in raw}

    def edge_stage(f, caller):
        for pattern, from_, stage in STAGE_RULES:
            if _match(f, pattern) and (from_ is None or _match(caller, from_)):
                return stage
        return None

    for _ in range(60):  # fixed point (call cycles: imports, recursion)
        new = {}
        for f, (_cc, _nc, _tt, _ct, callers) in raw.items():
            fixed = edge_stage(f, ("", 0, ""))
            if fixed is not None and all(edge_stage(f, c) == fixed for c in callers):
                new[f] = {fixed: 1.0}
                continue
            total = sum(v[3] for v in callers.values())
            if not callers or total <= 0:
                new[f] = {fixed or "other": 1.0}
                continue
            acc: dict = {}
            for c, v in callers.items():
                share = v[3] / total
                stage = edge_stage(f, c)
                src = {stage: 1.0} if stage else dist.get(c, {"other": 1.0})
                for s, w in src.items():
                    acc[s] = acc.get(s, 0.0) + share * w
            new[f] = acc
        dist = new
    out = {s: 0.0 for s in STAGES}
    for f, (_cc, _nc, tt, _ct, _callers) in raw.items():
        for s, w in dist[f].items():
            out[s] = out.get(s, 0.0) + tt * w
    for pattern, name in DETAIL:
        out[name] = sum(v[3] for f, v in raw.items() if _match(f, pattern))
    return out


def top_functions(stats, n: int = 12) -> list[tuple[str, float, float, int]]:
    rows = []
    for (filename, line, name), (_cc, nc, tt, ct, _c) in stats.stats.items():
        short = filename.split("site-packages/")[-1].split("src/")[-1]
        rows.append((f"{short}:{line}({name})" if line else name, tt, ct, nc))
    rows.sort(key=lambda r: -r[1])
    return rows[:n]


#: the modules a command-line fusion imports, in the order it imports them
DISCOVER = """\
import sys, json
before = set(sys.modules)
from napari_mfif.cli import main
main(sys.argv[2:])
new = [m for m in sys.modules if m not in before]
open(sys.argv[1], "w").write(json.dumps(new))
"""

#: the command line under cProfile; the imports are done first, timed without the profiler
#: (which slows the import machinery's many small calls several times over)
PROFILE_CLI = """\
import time, sys
t0 = time.time()
import importlib, json
mods = json.loads(open(sys.argv[2]).read())
ta = time.perf_counter()
for m in mods:
    try:
        importlib.import_module(m)
    except Exception:
        pass
imports = time.perf_counter() - ta
import napari_mfif.stack
napari_mfif.stack.MAX_SLICE_THREADS = 1  # cProfile sees the main thread only
import cProfile
pr = cProfile.Profile()
pr.enable()
from napari_mfif.cli import main
rc = main(sys.argv[3:])
pr.disable()
t1 = time.time()
pr.dump_stats(sys.argv[1])
print(json.dumps({"t0": t0, "t1": t1, "imports": imports, "rc": rc}))
"""

PROFILE_FUSE = """\
import sys, time, json, cProfile
import numpy as np
import napari_mfif as mf
import napari_mfif.stack
napari_mfif.stack.MAX_SLICE_THREADS = 1  # cProfile sees the main thread only
stack = np.load(sys.argv[2])
mf.fuse(np.ascontiguousarray(stack[:3, :128, :128]), device="cpu")  # lazy imports
t = time.perf_counter()
mf.fuse(stack, device="cpu")
plain = time.perf_counter() - t
pr = cProfile.Profile()
t = time.perf_counter()
pr.enable()
mf.fuse(stack, device="cpu")
pr.disable()
prof = time.perf_counter() - t
pr.dump_stats(sys.argv[1])
print(json.dumps({"plain": plain, "profiled": prof}))
"""


def profile_cli(work: Path, tif: Path, shape) -> dict:
    import pstats

    import napari_mfif as mf

    prof, mods = work / "cli.prof", work / "cli_modules.json"
    out, height = work / "prof_out.tif", work / "prof_h.tif"
    args = ["fuse", str(tif), "-o", str(out), "--height-map", str(height), "--overwrite", "-q"]
    tiny = work / "tiny.tif"
    tifffile_write(tiny, mf.focal_stack(n_slices=3, shape=(64, 64), dtype=np.uint16).stack)
    subprocess.run([PY, "-c", DISCOVER, str(mods), "fuse", str(tiny), "-o", str(out),
                    "--height-map", str(height), "--overwrite", "-q"], capture_output=True,
                   check=True)
    cmd = [PY, "-c", PROFILE_CLI, str(prof), str(mods), *args]
    subprocess.run(cmd, capture_output=True, check=True)  # warm the file cache
    launch = time.time()
    res = subprocess.run(cmd, capture_output=True, text=True, check=True)
    end = time.time()
    marks = json.loads(res.stdout.strip().splitlines()[-1])
    stats = pstats.Stats(str(prof))
    stages = stage_times(stats)
    stages["start-up: interpreter"] = marks["t0"] - launch
    stages["start-up: imports"] += marks["imports"]
    return {"shape": shape, "stages": stages, "wall": end - launch,
            "profiled": marks["t1"] - marks["t0"], "top": top_functions(stats)}


def tifffile_write(path: Path, array: np.ndarray) -> None:
    import tifffile

    tifffile.imwrite(path, array)


def profile_fuse(work: Path, npy: Path, shape) -> dict:
    import pstats

    prof = work / "fuse.prof"
    res = subprocess.run([PY, "-c", PROFILE_FUSE, str(prof), str(npy)], capture_output=True,
                         text=True, check=True)
    marks = json.loads(res.stdout.strip().splitlines()[-1])
    stats = pstats.Stats(str(prof))
    return {"shape": shape, "stages": stage_times(stats), "plain": marks["plain"],
            "profiled": marks["profiled"], "top": top_functions(stats)}


# -- tables ----------------------------------------------------------------------------------

def table(header, rows) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return out + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]


def mps(z: int, n: int, seconds: float) -> float:
    """Megapixels per second per slice: slices x height x width / 1e6 / seconds."""
    return z * n * n / 1e6 / seconds


def med(r: dict) -> float:
    return statistics.median(r["seconds"])


def cores(r: dict) -> str:
    return f"{statistics.median(r['cpu']) / med(r):.1f}"


def f2(x) -> str:
    return "" if x is None else f"{x:.2f}"


def throughput_rows(results, z, n, base, reps):
    rows = []
    base_rate = mps(z, n, med(base)) if "error" not in base else None
    for name, r in results:
        if "error" in r:
            rows.append([name, "failed: " + r["error"][:80], "", "", "", "", "", ""])
            continue
        zz, yy, xx = r.get("shape", (z, n, n))[:3]
        rate = zz * yy * xx / 1e6 / med(r)
        ratio = f"{rate / base_rate:.2f}" if base_rate else ""
        runs = len(r["seconds"])
        if "crop" in r:
            name += (f" (on a {zz} x {yy} x {xx} crop: the whole stack would take about "
                     f"{r['predicted_full_s']:.0f} s)")
        secs = f"{med(r):.2f}" + (f" ({runs} run{'s' * (runs > 1)})" if runs < reps else "")
        rows.append([name, secs, f"{rate:.2f}", ratio, cores(r),
                     f"{r['peak_mib']:.0f}", f2(r.get("psnr")), r.get("gpu", "")])
    return rows


def scaling_plot(path: Path, by_slices, by_size, goal) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    side = int(round(np.sqrt(by_slices[0][2] * 1e6)))
    for ax, pts, xlabel in ((axes[0], by_slices, f"slices ({side} x {side})"),
                            (axes[1], by_size, "megapixels per slice")):
        xs = np.array([p[0] for p in pts], float)
        ys = np.array([p[1] for p in pts], float)
        ax.plot(xs, ys, "o-", label="dog nway (seconds)")
        slope = float(np.sum(xs * ys) / np.sum(xs * xs))
        grid = np.linspace(0, xs.max() * 1.05, 50)
        ax.plot(grid, slope * grid, ":", color="gray", label="proportional fit")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("seconds (in memory, median)")
        ax.set_xlim(0, None)
        ax.set_ylim(0, None)
        ax.grid(alpha=0.3)
    axes[0].plot(grid_slices := np.linspace(0, by_slices[-1][0] * 1.05, 50),
                 grid_slices * by_slices[0][2] / goal, "--", color="C3",
                 label=f"goal: {goal:g} MP/s per slice")
    axes[0].legend()
    axes[1].set_xlabel("megapixels per slice")
    axes[1].set_ylabel("seconds per 10 slices (in memory, median)")
    axes[1].legend()
    fig.suptitle("Cost of the default method against slices and pixels")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# -- main ------------------------------------------------------------------------------------

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small configuration")
    parser.add_argument("--work", type=Path, default=None, help="work folder (kept)")
    parser.add_argument("--out", type=Path, default=None, help="the page to write")
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed runs per configuration (default 3; 1 with --quick)")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return

    cfg = dict(QUICK if args.quick else FULL)
    if args.repeats:
        cfg["repeats"] = args.repeats
    work = args.work or Path(tempfile.mkdtemp(prefix="mfif-speed-"))
    work.mkdir(parents=True, exist_ok=True)
    out_page = args.out or (work / "speed.md" if args.quick else DOCS / "speed.md")
    img_dir = out_page.parent / "img"
    img_dir.mkdir(parents=True, exist_ok=True)
    reps = cfg["repeats"]
    t_start = time.perf_counter()

    import napari_mfif as mf
    from napari_mfif.registry import DEFAULT_METHOD

    def log(msg):
        print(f"[{time.perf_counter() - t_start:6.0f} s] {msg}", flush=True)

    gpu = subprocess.run([PY, "-c", "import torch; print(torch.cuda.is_available())"],
                         capture_output=True, text=True).stdout.strip() == "True"
    log("GPU: " + ("CUDA available" if gpu else "no GPU on this machine"))

    # 1 + 2: throughput and the in-memory baselines ---------------------------------------
    z, n = cfg["main"]
    main_npy = stack_file(work, z, n, "uint16")
    zc, nc = cfg["cnn"]
    cnn_npy = stack_file(work, zc, nc, "uint16")
    log(f"stacks ready in {work}")
    methods = mf.available_methods()

    def measure(stack, **spec):
        r = run_worker(dict(stack=str(stack), repeats=reps, **spec))
        tag = spec.get("method", spec["kind"]) + " " + spec.get("mode", "")
        log(f"{tag}: " + (r["error"] if "error" in r else
                          f"{med(r):.2f} s, peak {r['peak_mib']:.0f} MiB"))
        return r

    def gpu_col(stack, zz, nn, name, mode):
        if not gpu or "cuda" not in methods[name].devices:
            return "no GPU on this machine" if not gpu else "CPU only"
        r = measure(stack, kind="fuse", method=name, mode=mode, device="cuda")
        return "" if "error" in r else f"{mps(zz, nn, med(r)):.2f}"

    classic, cnn_rows = [], []
    for name, spec in methods.items():
        target, rows, zz, nn = ((cnn_npy, cnn_rows, zc, nc) if name in CNN_METHODS
                                else (main_npy, classic, z, n))
        for mode in spec.modes:
            r = measure(target, kind="fuse", method=name, mode=mode)
            if "error" not in r:
                r["gpu"] = gpu_col(target, zz, nn, name, mode)
            label = f"{name} {mode}" + (" (default)" if name == DEFAULT_METHOD and mode == "nway" else "")
            rows.append((label, r))
    base_main = measure(main_npy, kind="numpy")
    base_cnn = measure(cnn_npy, kind="numpy")

    cle_info = {}
    try:
        import pyclesperanto as cle

        cle_info["version"] = cle.__version__
        cle_info["devices"] = cle.list_available_devices()
    except Exception as exc:  # not installed, or no OpenCL driver
        cle_info["error"] = f"{type(exc).__name__}: {exc}"
    baselines = [("numpy choose-max variance (baseline)", base_main)]
    if "error" not in cle_info:
        for kind, what in (("cle_variance", "variance"), ("cle_sobel", "sobel")):
            r = measure(main_npy, kind=kind, warmup="small", budget=90.0)
            baselines.append((f"pyclesperanto EDF {what} projection", r))
            if "cl_device" in r:
                cle_info["used"] = r["cl_device"]

    # 3: the whole command-line process -------------------------------------------------
    import tifffile

    zl, nl = cfg["cli"]
    cli_rows = []
    tifs = {}
    for dtype in ("uint8", "uint16"):
        arr = np.load(stack_file(work, zl, nl, dtype))
        tif = work / f"cli_{dtype}.tif"
        tifffile.imwrite(tif, arr)
        tifs[dtype] = (tif, arr)
        r = timed_process([CLI, "fuse", str(tif), "-o", str(work / f"fused_{dtype}.tif"),
                           "--height-map", str(work / f"height_{dtype}.tif"), "--overwrite",
                           "-q"], reps)
        log(f"CLI {dtype}: " + (r.get("error") or f"{med(r):.2f} s"))
        cli_rows.append((f"napari-mfif fuse ({DEFAULT_METHOD}), {dtype} multi-page TIFF", r))
    # the same slices as one file each, for the tools that read files
    slices_dir = work / "slices_uint8"
    slices_dir.mkdir(exist_ok=True)
    slice_files = []
    for k, s in enumerate(tifs["uint8"][1]):
        p = slices_dir / f"z{k:02d}.tif"
        tifffile.imwrite(p, s)
        slice_files.append(str(p))
    r = timed_process([CLI, "fuse", *slice_files, "-o", str(work / "fused_files.tif"),
                       "--height-map", str(work / "height_files.tif"), "--overwrite", "-q"],
                      reps)
    log(f"CLI {zl} files: " + (r.get("error") or f"{med(r):.2f} s"))
    cli_rows.append((f"napari-mfif fuse ({DEFAULT_METHOD}), {zl} uint8 TIFF files", r))
    enfuse = shutil.which("enfuse")
    enfuse_version = ""
    if enfuse:
        enfuse_version = subprocess.run([enfuse, "--version"], capture_output=True,
                                        text=True).stdout.splitlines()[0]
        r = timed_process([enfuse, "--exposure-weight=0", "--saturation-weight=0",
                           "--contrast-weight=1", "--hard-mask", "--contrast-window-size=5",
                           f"--output={work / 'enfuse.tif'}", *slice_files], reps)
        if "error" not in r:
            from PIL import Image  # enfuse writes LZW, which tifffile reads only with imagecodecs

            out = np.array(Image.open(work / "enfuse.tif"))
            out = out[..., 0] if out.ndim == 3 else out  # grey + alpha
            sharp = np.load(stack_file(work, zl, nl, "uint8").with_suffix(".sharp.npy"))
            r["psnr"] = _psnr(sharp, out)
        log("enfuse: " + (r.get("error") or f"{med(r):.2f} s"))
        cli_rows.append((f"enfuse (Hugin), {zl} uint8 TIFF files, no height map", r))
    startup = timed_process([PY, "-c", "import napari_mfif.cli"], reps)
    bare = timed_process([PY, "-c", "pass"], reps)
    heavy = timed_process([PY, "-c", "import napari_mfif._api, napari_mfif.io, "
                           "napari_mfif.focus.dog"], reps)
    for dtype, (tif, arr) in tifs.items():  # PSNR of the CLI's results
        sharp = np.load(stack_file(work, zl, nl, dtype).with_suffix(".sharp.npy"))
        for label, r in cli_rows:
            if dtype in label and "multi-page" in label and "error" not in r:
                r["psnr"] = _psnr(sharp, tifffile.imread(work / f"fused_{dtype}.tif"))

    # 4: scaling ------------------------------------------------------------------------
    by_slices, by_size = [], []
    ns = cfg["slices_size"]
    done: dict = {}

    def default_run(zs, nn):
        if (zs, nn) not in done:
            warm = "full" if zs * nn * nn <= 20 * 1024 * 1024 else "small"
            done[zs, nn] = measure(stack_file(work, zs, nn, "uint16"), kind="fuse",
                                   method=DEFAULT_METHOD, mode="nway", warmup=warm)
        return done[zs, nn]

    for zs in cfg["slices"]:
        r = default_run(zs, ns)
        by_slices.append((zs, med(r), ns * ns / 1e6, r))
    for zs, nn in cfg["sizes"]:
        r = default_run(zs, nn)
        by_size.append((nn * nn / 1e6, med(r), zs, r, nn))
    # plot seconds per slice against megapixels so that 5 x 4096² sits on the same line
    scaling_plot(img_dir / "speed_scaling.png",
                 [(zs, s, mp) for zs, s, mp, _ in by_slices],
                 [(mp, s / zs * 10, zs) for mp, s, zs, _r, _n in by_size], GOAL_MPS)

    # 5: profiles -----------------------------------------------------------------------
    zp, np_ = cfg["profile_cli"]
    prof_tif = tifs["uint16"][0]
    if (zp, np_) != (zl, nl):
        prof_tif = work / "profile.tif"
        tifffile.imwrite(prof_tif, np.load(stack_file(work, zp, np_, "uint16")))
    prof_cli = profile_cli(work, prof_tif, (zp, np_))
    log(f"profile CLI: {prof_cli['wall']:.2f} s wall")
    zf, nf = cfg["profile_fuse"]
    prof_fuse = profile_fuse(work, stack_file(work, zf, nf, "uint16"), (zf, nf))
    log(f"profile fuse: {prof_fuse['plain']:.2f} s plain, {prof_fuse['profiled']:.2f} s profiled")

    # the page --------------------------------------------------------------------------
    import platform

    import scipy

    versions = (f"napari-mfif {mf.__version__}, Python {platform.python_version()}, numpy "
                f"{np.__version__}, scipy {scipy.__version__}")
    if "version" in cle_info:
        versions += f", pyclesperanto {cle_info['version']}"
    lines = [
        "# Speed: throughput, memory and the whole process",
        "",
        f"Made by `benchmarks/speed.py{' --quick' if args.quick else ''}` on "
        f"{time.strftime('%Y-%m-%d')}, {machine()}; {versions}. "
        + ("GPU: CUDA available." if gpu else "No GPU on this machine: CPU only.")
        + " Where the time goes, and what would make it faster: [speed](../speed.md).",
        "",
        "Throughput is in **megapixels per second per slice**: slices x height x width / 1e6 "
        "/ seconds, so a stack twice as deep at the same rate takes twice as long. "
        "In-memory figures are the median of "
        f"{reps} runs of `napari_mfif.fuse(stack, method, mode, device=\"cpu\")` (fused "
        "image and height map) after a warm-up run, each configuration in a fresh process. "
        "*cores*: CPU time / wall time (the classic methods' N-way per-slice steps run "
        "on up to four threads, their series mode and the pyramids on one; torch uses "
        "every core; pocl and enfuse use both). *peak MiB*: the process's resident-set high-water mark during "
        "the timed runs minus its resident set before them (stack loaded, warm-up done). "
        "PSNR against the synthetic stack's sharp ground truth (peak = its range).",
        "",
        "## Every method, in memory",
        "",
        f"Synthetic stack: {z} x {n} x {n} uint16 (`napari_mfif.focal_stack`, noise 0.01), "
        f"{z * n * n * 2 / 2**20:.0f} MiB. *x numpy*: throughput relative to the plain numpy "
        "baseline below, measured in this run on the same stack.",
        "",
    ]
    header = ["method", "seconds", "MP/s per slice", "x numpy", "cores", "peak MiB",
              "PSNR (dB)", "GPU MP/s per slice"]
    lines += table(header, throughput_rows(classic + baselines, z, n, base_main, reps))
    lines += [
        "",
        f"The CNN methods (about 1 MP/s per slice) on a smaller stack, {zc} x {nc} x {nc} "
        "uint16, with the numpy baseline measured on that stack:",
        "",
    ]
    lines += table(header, throughput_rows(
        cnn_rows + [("numpy choose-max variance (baseline)", base_cnn)], zc, nc, base_cnn, reps))
    lines += [
        "",
        "Baselines, measured in the same run on the same stack:",
        "",
        "- **numpy choose-max variance** (`numpy_max_variance` in `benchmarks/speed.py`): "
        "local variance over a 7 x 7 box (`scipy.ndimage.uniform_filter`), per-pixel argmax "
        "over the slices, that slice's value; the simplest thing that fuses (no smoothing, "
        "no noise floor; its height map is the argmax).",
    ]
    if "error" in cle_info:
        lines.append(f"- **pyclesperanto**: not measured ({cle_info['error']}).")
    else:
        lines.append(
            f"- **pyclesperanto** {cle_info['version']} "
            "`extended_depth_of_focus_variance_projection` (radius 10, sigma 5) and "
            "`extended_depth_of_focus_sobel_projection` (sigma 5), their defaults, on the "
            f"OpenCL CPU device `{cle_info.get('used', '?')}` (Debian's `pocl-opencl-icd`), "
            "timed from the numpy stack to the numpy result (push, projection, pull); they "
            "return the image only, no height map.")
    lines += [
        "- **focus-stack** (the C++/OpenCV stacker users compare us with) is not packaged for "
        "Debian 12 or 13 nor on PyPI, and its sources could not be fetched on this "
        "machine, so it is not measured here; the figure users reported for it on this machine "
        f"({FOCUS_STACK_MPS} MP/s per slice, about 4.5 s for 20 x 1024 x 1024 8-bit) is "
        "quoted below.",
        "",
        "## The whole process on the command line",
        "",
        f"Wall time of one process from start to exit (Python start-up, imports, reading, "
        f"fusion with height map, writing both TIFFs), {zl} x {nl} x {nl}, median of {reps} "
        "runs after a warm-up run (files in the page cache); peak RSS is the process's "
        "`ru_maxrss`. Goal: at least "
        f"{GOAL_MPS:g} MP/s per slice (1.5 x focus-stack's {FOCUS_STACK_MPS} MP/s per "
        "slice on this machine).",
        "",
    ]
    crow = []
    for label, r in cli_rows:
        if "error" in r:
            crow.append([label, "failed: " + r["error"][:80], "", "", "", "", "", ""])
            continue
        rate = mps(zl, nl, med(r))
        crow.append([label, f"{med(r):.2f}", f"{rate:.2f}", f"{rate / GOAL_MPS:.2f}",
                     f"{rate / FOCUS_STACK_MPS:.2f}", cores(r), f"{r['peak_mib']:.0f}",
                     f2(r.get("psnr"))])
    lines += table(["process", "seconds", "MP/s per slice", "x goal (7)",
                    "x focus-stack (4.5, quoted)", "cores", "peak RSS MiB", "PSNR (dB)"], crow)
    en = [r for label, r in cli_rows if label.startswith("enfuse") and "error" not in r]
    ours = [r for label, r in cli_rows if "uint8 multi-page" in label and "error" not in r]
    lines.append("")
    if en and ours:
        ratio = med(en[0]) / med(ours[0])
        versus = (f"{ratio:.1f} x faster than" if ratio >= 1 else
                  f"{1 / ratio:.1f} x slower than")
        lines.append(
            f"Against enfuse on the same slices, measured in this run: napari-mfif's whole "
            f"process on the uint8 stack is {versus} enfuse's. enfuse "
            f"({enfuse_version}, from Debian's `enfuse` package; `--exposure-weight=0 "
            "--saturation-weight=0 --contrast-weight=1 --hard-mask --contrast-window-size=5`, "
            "the Hugin manual's focus-stacking recipe) blends a multi-resolution pyramid and "
            "writes no height map.")
    elif not enfuse:
        lines.append("enfuse is not installed (Debian: `apt-get install enfuse`); not measured.")
    lines += [
        "",
        f"Start-up alone: `python -c \"import napari_mfif.cli\"` {med(startup):.2f} s; "
        f"`python -c pass` {med(bare):.2f} s; importing what a fusion needs (`napari_mfif._api`, "
        f"`napari_mfif.io`, `napari_mfif.focus.dog`: numpy, scipy.ndimage, tifffile) "
        f"{med(heavy):.2f} s (medians of {reps}).",
        "",
        "## Scaling of the default method",
        "",
        f"`{DEFAULT_METHOD}` N-way in memory, uint16, median of {reps} runs after a warm-up "
        "(a small warm-up stack for the largest sizes).",
        "",
    ]
    srows = []
    for zs, s, mp, r in by_slices:
        srows.append([f"{zs} x {ns} x {ns}", f"{s:.2f}", f"{s / zs:.3f}",
                      f"{mps(zs, ns, s):.2f}", f"{r['peak_mib']:.0f}"])
    for mp, s, zs, r, nn in by_size:
        srows.append([f"{zs} x {nn} x {nn}", f"{s:.2f}", f"{s / zs:.3f}",
                      f"{mps(zs, nn, s):.2f}", f"{r['peak_mib']:.0f}"])
    lines += table(["stack", "seconds", "seconds per slice", "MP/s per slice", "peak MiB"],
                   srows)
    lines += [
        "",
        "![seconds against slices and against megapixels per slice]"
        "(img/speed_scaling.png)",
        "",
        f"Left: seconds against the number of slices at {ns} x {ns}, with a line through the "
        "origin fitted to the points and the goal's time. Right: seconds per 10 slices "
        "against the megapixels of one slice (stacks of other depths scaled to 10 slices).",
        "",
        "## Where the time goes",
        "",
        "cProfile of the default method, each function's own time assigned to the stage "
        "it serves (a shared function such as `gaussian_filter` split by the time spent "
        "under each caller). The profiler adds some overhead; the totals are given with "
        "it and without. cProfile sees only the main thread, so the profiled runs use one "
        "thread (`napari_mfif.stack.MAX_SLICE_THREADS = 1`): the table shows the work done; "
        "the timed runs above spread the per-slice steps over the cores.",
        "",
    ]

    def stage_table(p, total, with_startup):
        rows = []
        for s in STAGES + [d[1] for d in DETAIL]:
            v = p["stages"].get(s, 0.0)
            if not with_startup and s.startswith(("start-up", "reading", "writing")):
                continue
            if v < 0.0005 and not s.startswith("of which"):
                continue
            rows.append([s, f"{v:.3f}", f"{100 * v / total:.1f} %"])
        return rows

    total_cli = prof_cli["stages"]["start-up: interpreter"] + prof_cli["profiled"]
    lines += [
        f"Whole command line, {zp} x {np_} x {np_} uint16 multi-page TIFF "
        f"(`napari-mfif fuse stack.tif -o fused.tif --height-map height.tif`): "
        f"{prof_cli['wall']:.2f} s wall under the profiler (including writing the profile), "
        f"{total_cli:.2f} s from launch to the end of the work; unprofiled whole process: "
        + (f"{med(cli_rows[1][1]):.2f} s." if "error" not in cli_rows[1][1] else "failed."),
        "",
    ]
    lines += table(["stage", "seconds", "share"], stage_table(prof_cli, total_cli, True))
    lines += [
        "",
        f"`fuse` in memory, {zf} x {nf} x {nf} uint16: {prof_fuse['plain']:.2f} s for the "
        "first full-size run in its process, without the profiler (it pays the page faults "
        f"of fresh memory), {prof_fuse['profiled']:.2f} s for the profiled run after it.",
        "",
    ]
    lines += table(["stage", "seconds", "share"],
                   stage_table(prof_fuse, prof_fuse["profiled"], False))
    lines += ["", f"Functions with the most own time ({zf} x {nf} x {nf} `fuse`):", ""]
    lines += table(["function", "own s", "cumulative s", "calls"],
                   [[f"`{name}`", f"{tt:.3f}", f"{ct:.3f}", nc]
                    for name, tt, ct, nc in prof_fuse["top"]])
    lines += ["", f"Total time of this benchmark: {time.perf_counter() - t_start:.0f} s.", ""]
    out_page.write_text("\n".join(lines))
    (work / "speed.json").write_text(json.dumps({
        "classic": classic, "cnn": cnn_rows, "baselines": baselines,
        "cli": cli_rows, "startup": startup, "bare": bare, "heavy": heavy,
        "by_slices": by_slices, "by_size": by_size,
        "profile_cli": prof_cli, "profile_fuse": prof_fuse}, default=str, indent=1))
    log(f"wrote {out_page}")


if __name__ == "__main__":
    main()
