"""``napari-mfif batch``: fuse every focal stack in a folder with one setting.

Each stack is fused by the code of ``napari-mfif fuse`` itself (``cli._cmd_fuse``, called
with the Namespace a ``fuse`` command line for that stack would give), so every check of a
single run applies to each stack alike: the slice axis, the memory estimate and the switch
to tiles, the natural order of slice files, atomic writing that never clobbers.

A stack is each multi-page TIFF directly in the input folder, each scene of each CZI, ND2,
LIF file and OME-Zarr there, and each subfolder holding two or more image files (its
slices). A stack whose outputs all exist is skipped, which makes a
stopped batch resumable by running the same command again; a stack that fails is reported
in one line and the others are still fused. What was done is written to
``batch_summary.csv`` in the output folder.
"""

from __future__ import annotations

import argparse
import csv
import os
import signal
import sys
import time
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass, field
from io import StringIO
from pathlib import Path

from ._errors import MfifError
from .cli import (EXIT_BAD_INPUT, EXIT_INTERRUPTED, EXIT_OK, _cmd_fuse, _os_error, _params,
                  build_parser)
from .formats import is_ome_zarr as is_zarr
from .stack import available_cores

#: image files a subfolder's slices may be (by name: the folder is listed, not read)
IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp")
TIFF_SUFFIXES = (".tif", ".tiff")
SUMMARY_NAME = "batch_summary.csv"
COLUMNS = ("input", "scene", "output", "height_map", "method", "mode", "seconds", "slices", "status",
           "message")

#: options of ``batch`` passed on unchanged to each stack's ``fuse``
_SHARED = ("method", "mode", "param", "device", "height_units", "z_step", "focus_channel",
           "align", "align_frame", "overwrite", "large_images")
#: layout options, which ``fuse`` takes for one multi-page TIFF only: passed to TIFF stacks
_LAYOUT = ("z_axis", "channel_axis", "time_axis")

_WARNING = "napari-mfif: warning: "


@dataclass
class Stack:
    """One stack of the batch: what it is read from and where its outputs go."""

    source: Path  # the TIFF, or the folder of slices
    inputs: list[str]  # the files ``fuse`` is given
    outputs: list[Path]  # fused image[, height map]
    result: dict = field(default_factory=dict)  # status, seconds, slices, message
    scene: int | None = None  # of a microscope file (CZI, ND2, LIF, OME-Zarr)

    @property
    def label(self) -> str:
        """The stack as messages name it: the file name, or the folder name and a slash,
        and the scene of a file that holds several."""
        name = self.source.name + ("/" if self.source.is_dir() else "")
        return name if self.scene is None else f"{name} scene {self.scene}"


def _scene_stacks(path: Path, out_dir: Path, fmt: str, height_map: bool) -> list[Stack]:
    """One stack per scene of a microscope file (one for a file of one scene, or that
    cannot be opened here: fusing it then says why)."""
    from .formats import list_scenes

    try:
        n = len(list_scenes(path))
    except MfifError:
        n = 1
    name = _stem(path)
    if n == 1:
        return [Stack(path, [os.fspath(path)], _output_paths(name, out_dir, fmt, height_map))]
    return [Stack(path, [os.fspath(path)],
                  _output_paths(f"{name}_s{i}", out_dir, fmt, height_map), scene=i)
            for i in range(n)]


def _visible(path: Path) -> bool:
    return not path.name.startswith(".")  # temporary .NAME.*.part files, macOS ._ files


def _single_image(path: Path) -> bool:
    """True when a TIFF holds one image (one page, grey or RGB), not a stack. A file that
    cannot be read is taken for a stack, so that fusing it reports why."""
    from . import io

    try:
        with io._quiet_tifffile():
            layout = io._tiff_layout(path)
    except Exception:
        return False
    shape = tuple(layout.shape)
    return layout.n_pages <= 1 and (len(shape) == 2 or (len(shape) == 3 and shape[-1] in (3, 4)))


def _output_paths(name: str, out_dir: Path, fmt: str, height_map: bool) -> list[Path]:
    height = "ome.zarr" if fmt == "ome.zarr" else "tif"
    return [out_dir / f"{name}_fused.{fmt}"] + ([out_dir / f"{name}_height.{height}"]
                                                if height_map else [])


def find_stacks(input_dir: Path, out_dir: Path, *, fmt: str = "tif",
                height_map: bool = False) -> tuple[list[Stack], list[str]]:
    """The stacks in ``input_dir``, in the natural order of their names, and notes on what
    was passed over (single images, folders of fewer than two images).

    Outputs written beside the inputs by an earlier run (``NAME_fused.tif`` next to
    ``NAME.tif``) are neither stacks nor noted, and neither is ``out_dir`` when it lies
    inside ``input_dir``."""
    from . import io

    from .formats import is_microscope_file

    entries = io.natural_sorted([p for p in input_dir.iterdir() if _visible(p)])
    micro = [p for p in entries if not _same_dir(p, out_dir) and is_microscope_file(p)]
    entries = [p for p in entries if p not in micro]
    tiffs = [p for p in entries if p.is_file() and p.suffix.lower() in TIFF_SUFFIXES]
    others = [p for p in entries if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
              and p.suffix.lower() not in TIFF_SUFFIXES]
    folders = [p for p in entries if p.is_dir() and not _same_dir(p, out_dir)]
    # outputs of an earlier run, by name: not inputs when they lie beside the inputs, and
    # never noted as single images (a multi-page one elsewhere is a stack like any other)
    ours = {out.name.casefold() for p in tiffs + folders + micro
            for f in ("tif", "png", "ome.zarr")
            for out in _output_paths(_stem(p), input_dir, f, True)}
    if _same_dir(input_dir, out_dir):
        tiffs = [p for p in tiffs if p.name.casefold() not in ours]
        micro = [p for p in micro if p.name.casefold() not in ours]  # our OME-Zarr outputs
    stacks, singles, thin = [], [p for p in others if p.name.casefold() not in ours], []
    for path in io.natural_sorted(tiffs + folders + micro):
        if path in micro:
            stacks.extend(_scene_stacks(path, out_dir, fmt, height_map))
            continue
        if path.is_dir():
            slices = io.natural_sorted([
                os.fspath(p) for p in path.iterdir()
                if _visible(p) and p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES])
            if len(slices) < 2:
                thin.append(path)
                continue
            inputs = slices
        elif _single_image(path):
            if path.name.casefold() not in ours:
                singles.append(path)
            continue
        else:
            inputs = [os.fspath(path)]
        stacks.append(Stack(path, inputs, _output_paths(_stem(path), out_dir, fmt, height_map)))
    notes = []
    if singles:
        notes.append("ignored, single images and not stacks: "
                     + ", ".join(p.name for p in io.natural_sorted(singles)))
    if thin:
        notes.append("ignored, folders with fewer than 2 image files: "
                     + ", ".join(p.name + "/" for p in thin))
    return stacks, notes


def _stem(path: Path) -> str:
    from .formats import _stem as file_stem

    return path.name if path.is_dir() and not is_zarr(path) else file_stem(path)


def _same_dir(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (b.exists() and os.path.samefile(a, b))
    except OSError:
        return False


def _fuse_args(args: argparse.Namespace, base: argparse.Namespace,
               stack: Stack) -> argparse.Namespace:
    """The Namespace ``napari-mfif fuse`` would get for this stack with these settings."""
    ns = argparse.Namespace(**vars(base))
    for name in _SHARED + (_LAYOUT if stack.source.is_file() else ()):
        setattr(ns, name, getattr(args, name))
    # the z in the names of slice files: for the folders of slices only
    ns.z_from_names = bool(getattr(args, "z_from_names", False)) and len(stack.inputs) > 1
    ns.inputs = list(stack.inputs)
    ns.output = os.fspath(stack.outputs[0])
    ns.height_map = os.fspath(stack.outputs[1]) if len(stack.outputs) > 1 else None
    ns.quiet = False  # its report (and shift warning) is captured, not printed
    ns.scene = stack.scene
    return ns


def fuse_one(ns: argparse.Namespace) -> dict:
    """Fuse one stack by ``fuse``'s own code; what it prints is held back and its warnings
    kept. Never raises for a bad stack (only Ctrl-C gets through): the batch goes on."""
    report, out, err = {}, StringIO(), StringIO()
    start = time.perf_counter()
    status, error = "done", None
    try:
        with redirect_stdout(out), redirect_stderr(err):
            _cmd_fuse(ns, report=report)
    except MfifError as exc:
        status, error = "failed", str(exc)
    except OSError as exc:  # disk full, permissions changed under us, ...
        status, error = "failed", _os_error(exc)
    except Exception as exc:  # a bug: reported for this stack, the others still fused
        first = str(exc).splitlines()[0] if str(exc) else ""
        status, error = "failed", f"unexpected {type(exc).__name__}: {first}".rstrip(": ")
    warnings = [line[len(_WARNING):] for line in err.getvalue().splitlines()
                if line.startswith(_WARNING)]
    return {"status": status, "seconds": time.perf_counter() - start,
            "slices": report.get("slices"), "warnings": warnings, "error": error}


def _init_worker(threads: int) -> None:
    """A worker process: Ctrl-C is acted on only while a stack is fused (see _in_worker),
    and torch and OpenMP get a share of the cores, not all of them each."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(name, str(threads))


def _in_worker(ns: argparse.Namespace) -> dict:
    """fuse_one in a worker process: Ctrl-C stops the stack being fused (which writes no
    output then) and leaves idle workers to end quietly."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return fuse_one(ns)
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def _failed(error: str) -> dict:
    return {"status": "failed", "seconds": None, "slices": None, "warnings": [], "error": error}


def _run(todo: list[tuple[Stack, argparse.Namespace]], jobs: int, on_result) -> None:
    """Fuse the stacks, up to ``jobs`` at a time in worker processes (here, for one),
    calling ``on_result(stack)`` as each ends.

    A stack is handed to a worker only when one is free, so that after Ctrl-C no stack
    queued behind the running ones is still fused. If a worker process dies (killed for
    memory), the stacks it and the others were fusing fail and those not started are
    left for the next run."""
    if jobs == 1 or len(todo) <= 1:
        for stack, ns in todo:
            stack.result = fuse_one(ns)
            on_result(stack)
        return
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    workers = min(jobs, len(todo))
    # spawn, not fork: a fresh interpreter per worker, safe with torch and CUDA
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_init_worker, initargs=(max(1, available_cores() // workers),))
    queue, running, broken = list(reversed(todo)), {}, False
    lost = ("the worker process ended abruptly (killed, perhaps for lack of memory, while "
            "fusing this stack or another one at the same time); run again to retry")
    try:
        while queue or running:
            while queue and not broken and len(running) < workers:
                stack, ns = queue.pop()
                try:
                    running[pool.submit(_in_worker, ns)] = stack
                except BrokenProcessPool:
                    queue.append((stack, ns))
                    broken = True
            if broken and not running:
                for stack, _ in reversed(queue):
                    stack.result = _failed("not fused: the worker processes were lost; run "
                                           "the same command again to fuse it")
                    on_result(stack)
                break
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                stack = running.pop(future)
                try:
                    stack.result = future.result()
                except BrokenProcessPool:
                    stack.result, broken = _failed(lost), True
                on_result(stack)
    except BaseException:  # Ctrl-C: the workers stop too; what ended meanwhile is reported
        pool.shutdown(wait=True, cancel_futures=True)
        for future, stack in running.items():
            if future.done() and not future.cancelled() and future.exception() is None:
                stack.result = future.result()
                on_result(stack)
        raise
    pool.shutdown(wait=True)


def _row(stack: Stack, method: str, mode: str) -> dict:
    result = stack.result
    done = result["status"] != "failed"
    message = " | ".join(result.get("warnings", []) + ([result["error"]] if result.get("error")
                                                        else []))
    seconds = result.get("seconds")
    return {
        "input": os.fspath(stack.source.resolve()),
        "scene": "" if stack.scene is None else str(stack.scene),
        "output": os.fspath(stack.outputs[0].resolve()) if done else "",
        "height_map": os.fspath(stack.outputs[1].resolve()) if done and len(stack.outputs) > 1
        else "",
        "method": method, "mode": mode,
        "seconds": "" if seconds is None else f"{seconds:.2f}",
        "slices": "" if result.get("slices") is None else str(result["slices"]),
        "status": result["status"], "message": message,
    }


def write_summary(path: Path, rows: list[dict]) -> Path:
    """Write the summary CSV atomically, replacing an earlier one (a report, not data)."""
    from .io import write_atomically

    def write(tmp: str) -> None:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=COLUMNS)
            writer.writeheader()
            writer.writerows(rows)

    write_atomically(path, write, overwrite=True)
    return path


def run_batch(args: argparse.Namespace) -> int:
    """``napari-mfif batch``: 0 when every stack was fused or skipped, 2 when any failed
    (or nothing could be started), 130 after Ctrl-C."""
    from .registry import DEFAULT_METHOD, get_method

    method = args.method or DEFAULT_METHOD
    get_method(method).resolve_params(_params(args.param))  # wrong for all: said once, up front
    if args.jobs < 1:
        raise MfifError(f"--jobs must be at least 1, got {args.jobs}")
    input_dir = Path(args.input_dir)
    if not input_dir.is_dir():
        raise MfifError(f"input folder not found: {input_dir}" if not input_dir.exists()
                        else f"input is not a folder: {input_dir}; fuse one stack with "
                             "'napari-mfif fuse'")
    out_dir = Path(args.output) if args.output else input_dir
    if out_dir.exists() and not out_dir.is_dir():
        raise MfifError(f"output folder is a file: {out_dir}")
    stacks, notes = find_stacks(input_dir, out_dir, fmt=args.format, height_map=args.height_map)
    if not stacks:
        raise MfifError(f"no focal stacks in {input_dir}: a stack is a multi-page TIFF or a "
                        "subfolder of two or more image files"
                        + (f" ({notes[0]})" if notes else ""))
    out_dir.mkdir(parents=True, exist_ok=True)

    base = build_parser().parse_args(["fuse", "-o", "-"])  # fuse's defaults, for all else
    owners: dict[str, list[Stack]] = {}
    for stack in stacks:
        owners.setdefault(stack.outputs[0].name.casefold(), []).append(stack)
    todo = []
    for stack in stacks:
        same = [s for s in owners[stack.outputs[0].name.casefold()] if s is not stack]
        if same:
            stack.result = {"status": "failed", "error": f"its outputs would take the names of "
                            f"those of {same[0].label} ({stack.outputs[0].name}); rename one"}
        elif not args.overwrite and all(p.exists() for p in stack.outputs):
            stack.result = {"status": "skipped"}
        else:
            todo.append((stack, _fuse_args(args, base, stack)))

    def say(stack: Stack) -> None:
        result = stack.result
        for warning in result.get("warnings", []):
            if not args.quiet:
                print(f"napari-mfif: warning: {stack.label}: {warning}", file=sys.stderr,
                      flush=True)
        if result["status"] == "failed":
            print(f"napari-mfif: error: {stack.label}: {result['error']}", file=sys.stderr,
                  flush=True)
        elif args.quiet:
            pass
        elif result["status"] == "skipped":
            print(f"{stack.label}: skipped (done)", flush=True)
        else:
            print(f"{stack.label}: done, {result['slices']} slices in {result['seconds']:.1f} s "
                  f"-> {stack.outputs[0].resolve()}", flush=True)

    for stack in stacks:
        if stack.result:
            say(stack)
    summary = out_dir / SUMMARY_NAME
    interrupted = False
    try:
        _run(todo, args.jobs, say)
    except KeyboardInterrupt:
        interrupted = True
    ended = [s for s in stacks if s.result]
    write_summary(summary, [_row(s, method, args.mode) for s in ended])
    counts = {k: sum(s.result["status"] == k for s in ended)
              for k in ("done", "skipped", "failed")}
    if interrupted:
        print(f"napari-mfif: interrupted after {counts['done']} stacks fused; a stack left "
              "unfinished has no output; run the same command again to go on "
              f"(summary: {summary.resolve()})", file=sys.stderr)
        return EXIT_INTERRUPTED
    line = (f"{len(stacks)} stack{'s' if len(stacks) != 1 else ''}: {counts['done']} done, "
            f"{counts['skipped']} skipped, {counts['failed']} failed; summary: {summary.resolve()}")
    if not args.quiet:
        for note in notes:
            print(note)
    if counts["failed"]:
        print(line, file=sys.stderr)
        return EXIT_BAD_INPUT
    if not args.quiet:
        print(line)
    return EXIT_OK
