"""The ``napari-mfif`` command line: a thin layer over :func:`napari_mfif.fuse`.

Bad input ends in one line on stderr (``napari-mfif: error: ...``) and exit status 2,
with no output file written; so does a stack too large to fuse in the free memory, found
from the file headers before any pixel is read. Ctrl-C ends with status 130 and no output
file: a run writes all its outputs or none. ``batch`` fuses every stack of a folder through
the same code, one stack at a time or in worker processes (see :mod:`napari_mfif.batch`).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from . import __version__
from ._errors import MfifError
from ._progress import Progress

EXIT_OK, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 2, 130


#: the --method help until --help is asked for: the method names then come from the registry
_METHOD_HELP = "fusion method (see 'napari-mfif methods')"


def _method_help() -> str:
    """The --method help naming the default and every registered method: the registry
    loads its method modules (scipy, a few tenths of a second; never torch) to tell, so this
    is built when help is shown, not for every run."""
    from .registry import DEFAULT_METHOD, available_methods

    return (f"fusion method (default: {DEFAULT_METHOD}; one of: "
            f"{', '.join(available_methods())}; their parameters: 'napari-mfif methods')")


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, like every other error here
        raise MfifError(f"{message} (see '{self.prog} --help')")

    def format_help(self):
        for action in self._actions:
            if action.dest == "method" and action.help == _METHOD_HELP:
                action.help = _method_help()
        return super().format_help()


def _parse_value(text: str):
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


def _params(items: Sequence[str]) -> dict:
    params = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise MfifError(f"--param takes NAME=VALUE, got {item!r}")
        params[key.strip()] = _parse_value(value.strip())
    return params


def _method_options(parser: argparse.ArgumentParser) -> None:
    """The options of how to fuse, alike for ``fuse`` and ``batch``."""
    parser.add_argument("--method", default=None, help=_METHOD_HELP)
    parser.add_argument("--mode", default="nway", choices=("series", "nway"),
                        help="nway: all slices at once (default); series: two at a time, in "
                             "order")
    parser.add_argument("--param", "-p", action="append", metavar="NAME=VALUE", default=[],
                        help="a method parameter, e.g. -p window=4 (repeatable)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                        help="where to compute (default auto: a CUDA GPU when the method can "
                             "use one)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="napari-mfif",
        description="Fuse a microscope focal stack into one all-in-focus image and a height map.",
    )
    parser.add_argument("--version", action="version", version=f"napari-mfif {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    fuse = sub.add_parser(
        "fuse",
        help="fuse a focal stack",
        description=(
            "Fuse a focal stack. INPUT is one multi-page TIFF (slices along the axis its "
            "metadata names Z, else the first; RGB last allowed) or two or more image files "
            "(TIFF, PNG, JPEG, BMP; read by content) taken as slices in the natural order of "
            "their names (plane_2 before plane_10; signed z offsets in the names in the "
            "order of z), or in the order given with --keep-order."
        ),
    )
    fuse.add_argument("inputs", nargs="*", metavar="INPUT", help="the stack or its slices")
    fuse.add_argument("-o", "--output", required=True, metavar="OUTPUT",
                      help="fused image: .tif or .ome.zarr (any dtype; OME-Zarr with a pyramid, "
                           "needs the formats extra), .png (8 or 16-bit) or .jpg (8-bit); keeps "
                           "the input dtype")
    _method_options(fuse)
    fuse.add_argument("--height-map", metavar="HEIGHT.tif", default=None,
                      help="also write the height map (float32: .tif or .ome.zarr)")
    fuse.add_argument("--height-units", default="auto", choices=("auto", "slices", "um"),
                      help="the height map in micrometres where the z step is known (from the "
                           "file, or --z-step) and in slices (0 = first slice) otherwise "
                           "(auto, the default), or always in slices, or always in "
                           "micrometres (an error where the z step is unknown)")
    fuse.add_argument("--z-step", type=float, default=None, metavar="UM",
                      help="distance between slices in micrometres (overrides the file's)")
    fuse.add_argument("--z-from-names", action="store_true",
                      help="several files: the last number in each file's name is its z in "
                           "micrometres (e.g. -43.4 in z=-43.4.tiff); the height map then "
                           "holds those z values")
    fuse.add_argument("--scene", default=None, metavar="N|NAME|all",
                      help="CZI, ND2, LIF and OME-Zarr files: the scene (position, series) to "
                           "fuse, by number from 0 or name, or 'all' for one output each "
                           "(named OUTPUT_s0, OUTPUT_s1, ...); default the first")
    fuse.add_argument("--channel-axis", type=int, default=None, metavar="N",
                      help="the axis holding channels, e.g. 1 for (Z, C, Y, X); read from the "
                           "TIFF's axes when it names them (default: channels last, if any)")
    fuse.add_argument("--focus-channel", default=None, metavar="N|W,W,...",
                      help="judge focus on this channel (e.g. DAPI), or on these per-channel "
                           "weights; the decision is applied to every channel")
    fuse.add_argument("--z-axis", type=int, default=None, metavar="N",
                      help="the axis holding the slices, e.g. 2 for (Y, X, Z); read from the "
                           "TIFF's axes when it names them (default: the first axis that is "
                           "neither channels nor time)")
    fuse.add_argument("--keep-order", action="store_true",
                      help="take several input files as slices in the order given, not in "
                           "the natural order of their names")
    fuse.add_argument("--time-axis", type=int, default=None, metavar="N",
                      help="the axis of a time series, fused per time point (read from the "
                           "TIFF's axes when it names them)")
    fuse.add_argument("--align", default=None, choices=("translation", "similarity"),
                      help="register the slices before fusing (off by default); similarity "
                           "also corrects focus breathing")
    fuse.add_argument("--align-frame", default="crop", choices=("crop", "pad"),
                      help="aligned result: cropped to what every slice covers (default) or "
                           "the whole reference frame")
    tiles = fuse.add_argument_group(
        "whole slides", "fuse tile by tile: the stack is read region by region from the TIFF "
        "and the outputs are written as tiled BigTIFFs band by band, so memory stays bounded "
        "whatever the slide size; used automatically when the stack would not fit in memory")
    tiles.add_argument("--tile-size", type=int, default=None, metavar="PX",
                       help="tile edge in pixels (rounded up to a multiple of 64; default 1024)")
    tiles.add_argument("--overlap", type=int, default=None, metavar="PX",
                       help="context around each tile (default: the method's reach, which "
                            "makes the result match whole-image fusion)")
    tiles.add_argument("--workers", type=int, default=None, metavar="N",
                       help="run the tiles on a local dask.distributed cluster of N worker "
                            "processes")
    tiles.add_argument("--scheduler", default=None, metavar="ADDRESS",
                       help="run the tiles on an existing dask.distributed cluster, e.g. "
                            "tcp://10.0.0.5:8786 (the workers must see the input files)")
    fuse.add_argument("--large-images", action="store_true",
                      help="read PNG, JPEG and BMP slices of any size: Pillow refuses files "
                           "of more than about 179 megapixels, as decompression bombs would "
                           "be; use it for trusted files only")
    tiles.add_argument("--in-memory", action="store_true",
                       help="fuse the whole image at once even where the stack is large "
                            "enough to go tile by tile (an error if it does not fit in memory)")
    tiles.add_argument("--pyramid", action="store_true",
                       help="also write downsampled levels (2x, 4x, ...) into the output "
                            "TIFFs, for fast viewing of whole slides")
    fuse.add_argument("--overwrite", action="store_true", help="replace existing output files")
    fuse.add_argument("-q", "--quiet", action="store_true", help="print nothing on success")

    batch = sub.add_parser(
        "batch",
        help="fuse every focal stack in a folder with one setting",
        description=(
            "Fuse every focal stack in a folder with one setting, each through the same "
            "checks as 'napari-mfif fuse'. A stack is each multi-page TIFF in INPUT_DIR, "
            "each scene of each CZI, ND2, LIF file and OME-Zarr there, and each subfolder holding two or more image files (TIFF, PNG, JPEG, BMP; slices in "
            "the natural order of their names). Outputs NAME_fused.tif (and NAME_height.tif) "
            "go beside the inputs or into OUT_DIR; a stack whose outputs exist is skipped, so "
            "a stopped run is resumed by running it again. A stack that fails is reported and "
            "the others are still fused (exit status 2 if any failed). A summary, "
            "batch_summary.csv, is written into the output folder."
        ),
    )
    batch.add_argument("input_dir", metavar="INPUT_DIR", help="the folder of stacks")
    batch.add_argument("-o", "--output", default=None, metavar="OUT_DIR",
                       help="where the outputs go (created if missing; default: INPUT_DIR)")
    _method_options(batch)
    batch.add_argument("--height-map", action="store_true",
                       help="also write each height map, NAME_height.tif (float32)")
    batch.add_argument("--height-units", default="auto", choices=("auto", "slices", "um"),
                       help="the height maps in micrometres where the z step is known (from "
                            "each file, or --z-step) and in slices otherwise (auto, the "
                            "default), or always in slices, or always in micrometres")
    batch.add_argument("--z-step", type=float, default=None, metavar="UM",
                       help="distance between slices in micrometres, for every stack")
    batch.add_argument("--format", default="tif", choices=("tif", "png", "ome.zarr"),
                       help="format of the fused images (default tif, any dtype; png holds 8 "
                            "and 16-bit results; ome.zarr, any dtype with a pyramid, writes "
                            "the height maps as OME-Zarr too)")
    batch.add_argument("--z-axis", type=int, default=None, metavar="N",
                       help="the axis holding the slices in every TIFF stack (default: as each "
                            "file names it, else the first)")
    batch.add_argument("--channel-axis", type=int, default=None, metavar="N",
                       help="the axis holding channels in every TIFF stack")
    batch.add_argument("--time-axis", type=int, default=None, metavar="N",
                       help="the axis of a time series in every TIFF stack")
    batch.add_argument("--focus-channel", default=None, metavar="N|W,W,...",
                       help="judge focus on this channel, or on these per-channel weights")
    batch.add_argument("--align", default=None, choices=("translation", "similarity"),
                       help="register the slices of each stack before fusing (off by default)")
    batch.add_argument("--align-frame", default="crop", choices=("crop", "pad"),
                       help="aligned results: cropped to what every slice covers (default) or "
                            "the whole reference frame")
    batch.add_argument("--z-from-names", action="store_true",
                       help="folders of slice files: the last number in each file's name is "
                            "its z in micrometres, for the height maps")
    batch.add_argument("--large-images", action="store_true",
                       help="read PNG, JPEG and BMP slices of any size (trusted files only)")
    batch.add_argument("--jobs", "-j", type=int, default=1, metavar="N",
                       help="fuse up to N stacks at once, in separate processes (default 1; "
                            "memory use grows with N)")
    batch.add_argument("--overwrite", action="store_true",
                       help="fuse every stack again, replacing its outputs")
    batch.add_argument("-q", "--quiet", action="store_true",
                       help="print nothing unless a stack fails (warnings still go to the "
                            "summary)")

    sample = sub.add_parser("sample", help="write the bundled synthetic focal stack",
                            description="Write the bundled synthetic focal stack (uint16 TIFF).")
    sample.add_argument("-o", "--output", required=True, metavar="STACK.tif")
    sample.add_argument("--overwrite", action="store_true", help="replace an existing file")

    sub.add_parser("methods", help="list the fusion methods and their parameters",
                   description="List the fusion methods and their parameters.")
    return parser


def _readable_tiff(io, path: str) -> bool:
    """True for a readable file with a TIFF header (the reader reports anything else)."""
    try:
        return Path(path).is_file() and io.is_tiff(path)
    except OSError:
        return False


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def _first_tiff_info(io, inputs: Sequence[str]):
    """The tags of the first input if it is a readable TIFF (its axes and pixel size, read
    once), else None: read_stack says what is wrong with a damaged file."""
    try:
        return io._tiff_info(Path(inputs[0])) if io.is_tiff(inputs[0]) else None
    except (OSError, MfifError):
        return None


def _pixel_size(io, info, output: Path) -> dict:
    """The (y, x) pixel size of the first input (``info``, its TIFF tags, or None), to keep
    in a TIFF output: ``scale`` and ``unit`` keywords for ``write_image``, or none when it
    is unknown."""
    if io.output_format(output) not in ("TIFF", "OME-Zarr") or info is None:
        return {}
    scale, units = info.physical
    if units is None and all(s == 1.0 for s in scale[-2:]):
        return {}
    unit = None if units is None else [u if u != "pixel" else None for u in units[-2:]]
    return {"scale": tuple(scale[-2:]), "unit": unit}


#: Pillow image mode -> (channels, dtype) of the array io.read_image makes of it
_PIL_MODES = {
    "1": (1, "uint8"), "L": (1, "uint8"), "P": (4, "uint8"), "LA": (2, "uint8"),
    "PA": (2, "uint8"), "RGB": (3, "uint8"), "RGBA": (4, "uint8"), "RGBX": (4, "uint8"),
    "CMYK": (3, "uint8"), "YCbCr": (3, "uint8"), "LAB": (3, "uint8"), "HSV": (3, "uint8"),
    "I": (1, "uint16"), "I;16": (1, "uint16"), "I;16B": (1, "uint16"),
    "I;16L": (1, "uint16"), "I;16N": (1, "uint16"), "F": (1, "float32"),
}


def _stack_header(io, inputs: Sequence[str]) -> tuple[tuple[int, ...], str] | None:
    """The (shape, dtype) of the stack the inputs make, from the file headers alone (a TIFF
    through the checks of io.read_lazy, which read only its tags, without importing dask;
    other images through Pillow, which decodes nothing until asked); None when that cannot
    be told, and io.read_stack then
    says what is wrong (tifffile's own log lines about a damaged file are held back here)."""
    import logging

    tifffile_log = logging.getLogger("tifffile")
    was_disabled, tifffile_log.disabled = tifffile_log.disabled, True
    try:
        if len(inputs) == 1:
            if not io.is_tiff(inputs[0]):
                return None
            layout = io._tiff_layout(inputs[0])
            shape, dtype = tuple(layout.shape), str(layout.dtype)
            return (shape, dtype) if len(shape) in (3, 4) else None
        slices = set()
        for path in inputs:
            if io.is_tiff(path):
                layout = io._tiff_layout(path)
                slices.add((tuple(layout.shape), str(layout.dtype)))
                continue
            from PIL import Image

            with Image.open(path) as im:
                channels, dtype = _PIL_MODES.get(im.mode, (None, None))
                if channels is None:
                    return None
                shape = (im.height, im.width) + ((channels,) if channels > 1 else ())
                slices.add((shape, dtype))
    except Exception:  # any trouble is for io.read_stack to report, in its words
        return None
    finally:
        tifffile_log.disabled = was_disabled
    if len(slices) != 1:
        return None
    (shape, dtype), = slices
    return ((len(inputs), *shape), dtype) if len(shape) in (2, 3) else None


def _layout(args, info) -> dict:
    """``channel_axis``, ``time_axis`` and ``z_axis`` for fuse(): as given, or from the axes
    a single TIFF names (``info``, its tags: ImageJ and OME hyperstacks, tifffile's shaped
    TIFFs: T, Z, C), else None (z: where it is not the first axis that is neither channels
    nor time, which fuse() takes by default)."""
    layout = {"channel_axis": args.channel_axis, "time_axis": args.time_axis,
              "z_axis": args.z_axis}
    given = any(v is not None for v in layout.values())
    if given and len(args.inputs) != 1:
        raise MfifError("--channel-axis, --time-axis and --z-axis apply to one multi-page TIFF, "
                        "not to several files")
    if given or len(args.inputs) != 1 or info is None:
        return layout
    axes = info.axes
    if "Z" in axes and "S" not in axes:
        if "C" in axes:
            layout["channel_axis"] = axes.index("C")
        if "T" in axes:
            layout["time_axis"] = axes.index("T")
    if "Z" in axes:
        first = next(i for i, a in enumerate(axes) if a not in "CTS")
        if axes.index("Z") != first:
            layout["z_axis"] = axes.index("Z")
    return layout


def _check_slice_axis(args, info, shape) -> None:
    """Refuse a single-file stack of ``shape`` whose slice axis only a guess could tell:
    no axis given or named Z by the file, and a last axis that looks like z (see
    stack.looks_like_z_last)."""
    from .stack import check_z_layout

    if len(args.inputs) != 1 or args.z_axis is not None or args.channel_axis is not None \
            or args.time_axis is not None or (info is not None and "Z" in info.axes):
        return
    check_z_layout(tuple(shape), "--z-axis")


def _with_known_z(args, info, layout: dict) -> dict:
    """``layout`` with ``z_axis=0`` where the slices are known to be the first axis (several
    files; a TIFF whose axes name Z first), so that fuse() does not question the shape."""
    if all(v is None for v in layout.values()) and (
            len(args.inputs) > 1 or (info is not None and "Z" in info.axes)):
        return dict(layout, z_axis=0)
    return layout


def _print_slice_order(args) -> None:
    """The slice files in the order fused, for the user to check (several files only)."""
    if len(args.inputs) > 1:
        how = "as given" if args.keep_order else "natural order of the names"
        print(f"slices ({how}): {_slice_order(args.inputs)}")


def _slice_order(inputs: Sequence[str]) -> str:
    """The input files in slice order, for the user to check: all names up to 8, else the
    first three and the last two."""
    names = [Path(p).name for p in inputs]
    if len(names) > 8:
        names = names[:3] + [f"... ({len(inputs) - 5} more)"] + names[-2:]
    return ", ".join(names)


def _z_step_um(args, info, stored: float | None = None) -> float | None:
    """The distance between slices in micrometres for the height map, or None for a height
    map in slices: --z-step, else the input's (``info``, a TIFF's tags, or ``stored``, what
    a tiled source read), as --height-units asks (auto: micrometres where known)."""
    if args.height_units == "slices":
        return None
    if args.z_step is not None:
        if not args.z_step > 0:
            raise MfifError(f"--z-step must be a positive number of micrometres, got {args.z_step}")
        return float(args.z_step)
    if len(args.inputs) == 1 and info is not None:
        axes, (scale, units) = info.axes, info.physical
        if "Z" in axes and units is not None and units[axes.index("Z")] == "µm":
            return float(scale[axes.index("Z")])
    if stored is not None:
        return float(stored)
    if args.height_units == "auto":
        return None
    raise MfifError("the height map in um needs the z step, which the input does not store; "
                    "give it with --z-step")


def _height_note(z_step: float | None, given: bool) -> str:
    """How the height map is measured, for the run summary."""
    if z_step is None:
        return "in slices, 0 = first slice; the z step is unknown (give it with --z-step)"
    return f"in µm: z step {z_step:g} µm, {'--z-step' if given else 'from the file'}"


def _tiles_asked(args) -> bool:
    """Whether the command line asks for tiles (--tile-size, --overlap, --workers,
    --scheduler, --pyramid); refused together with --in-memory."""
    asked = any(v is not None for v in (args.tile_size, args.overlap, args.workers,
                                        args.scheduler)) or args.pyramid
    if asked and args.in_memory:
        raise MfifError("--in-memory and the tile options (--tile-size, --overlap, --workers, "
                        "--scheduler, --pyramid) exclude each other")
    return asked


def _one_time_point(shape: tuple[int, ...], channel_axis: int | None,
                    time_axis: int | None, z_axis: int | None = None) -> tuple[int, ...]:
    """The (Z, Y, X[, C]) shape one fuse() call works on, for the memory check."""
    axes = list(range(len(shape)))
    t = None if time_axis is None else axes[time_axis]
    c = None if channel_axis is None else axes[channel_axis]
    z = None if z_axis is None else axes[z_axis]
    rest = [i for i in axes if i not in (t, c)]
    if z in rest:
        rest = [z] + [i for i in rest if i != z]
    return tuple([shape[i] for i in rest] + ([shape[c]] if c is not None else []))


def _focus_channel(text: str | None):
    if text is None:
        return None
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise MfifError(f"--focus-channel takes a channel number or comma-separated weights, "
                        f"got {text!r}") from None
    if len(values) == 1:
        if values[0] != int(values[0]):
            raise MfifError(f"--focus-channel takes a whole channel number, got {text!r}")
        return int(values[0])
    return values


def _cmd_fuse(args, report: dict | None = None) -> int:
    """``napari-mfif fuse``; also run once per stack by ``napari-mfif batch``, which passes
    ``report`` (a dict) to learn the number of slices fused (``report["slices"]``)."""
    if getattr(args, "large_images", False):
        from .io import large_images

        with large_images():
            return _fuse_command(args, report)
    return _fuse_command(args, report)


def _fuse_command(args, report: dict | None = None) -> int:
    from . import io
    from ._api import fuse
    from ._memory import check_fits, tiles_pay
    from .registry import DEFAULT_METHOD, get_method

    if not args.inputs:
        raise MfifError("no input given: name one multi-page TIFF or two or more image files")
    method = args.method or DEFAULT_METHOD
    spec = get_method(method)
    params = spec.resolve_params(_params(args.param))
    outputs = [Path(args.output)] + ([Path(args.height_map)] if args.height_map else [])
    if args.height_map and io.output_format(args.height_map) not in ("TIFF", "OME-Zarr"):
        raise MfifError("the height map is float32: give it a .tif, .tiff or .ome.zarr name")
    if len(outputs) == 2 and outputs[0].resolve() == outputs[1].resolve():
        raise MfifError("the fused image and the height map must go to different files")
    if len(args.inputs) == 1:
        from .formats import is_microscope_file, tiff_plane_positions

        if is_microscope_file(args.inputs[0]) or (
                _readable_tiff(io, args.inputs[0])
                and tiff_plane_positions(args.inputs[0]) is not None):
            return _fuse_microscope(args, method, params, outputs, report)
    if args.scene is not None:
        raise MfifError("--scene applies to CZI, ND2, LIF and OME-Zarr files")
    for out in outputs:
        for inp in args.inputs:
            if _same_file(out, Path(inp)) or out.resolve() == Path(inp).resolve():
                raise MfifError(f"output {out} is one of the inputs; inputs are never overwritten")
        io.check_output(out, overwrite=args.overwrite)

    start = time.perf_counter()
    if len(args.inputs) > 1 and not args.keep_order:
        args.inputs = io.natural_sorted(args.inputs)
    names_z = _names_z(args)  # --z-from-names: every name's z, rising, checked before work
    info = _first_tiff_info(io, args.inputs)
    layout = _layout(args, info)
    header = _stack_header(io, args.inputs)
    if header is not None:
        _check_slice_axis(args, info, header[0])
    tiled = _tiles_asked(args)
    can_tile = (spec.tiling is not None and not args.align and args.focus_channel is None
                and all(v is None for v in layout.values())
                and (len(args.inputs) > 1 or _readable_tiff(io, args.inputs[0]))
                and all(io.output_format(out) in ("TIFF", "OME-Zarr") for out in outputs))
    if header is not None and not tiled:  # large, or too large for memory: before reading
        shape = _one_time_point(header[0], **layout)
        if can_tile and not args.in_memory and tiles_pay(shape, header[1], method, args.mode,
                                                         params=params):
            tiled = True
        else:
            try:
                check_fits(shape, header[1], method, args.mode, params=params)
            except MfifError:
                # tile by tile instead, where that can be done; else the message stands
                if not can_tile or args.in_memory:
                    raise
                tiled = True
    if tiled:
        return _fuse_tiled(args, io, spec, params, outputs, info, layout, start, report,
                           header, names_z)
    if any(v is not None for v in layout.values()):  # fuse() checks the unusual layout
        stack = io.read_image(args.inputs[0])
    else:  # aligned slices may differ in size: framed below
        stack = io.read_stack(args.inputs, same_shape=not args.align)
    if isinstance(stack, list):
        from .align import common_frame

        stack = common_frame(stack, rule=args.align_frame)[0]
    if header is None:
        _check_slice_axis(args, info, stack.shape)
    if report is not None:
        report["slices"] = _one_time_point(stack.shape, **layout)[0]
    if not args.align and not args.quiet and layout["channel_axis"] is None \
            and layout["time_axis"] is None:
        _warn_if_shifted(stack if layout["z_axis"] is None
                         else np.moveaxis(stack, layout["z_axis"], 0))
    io.check_output(outputs[0], overwrite=args.overwrite, dtype=stack.dtype)
    result = fuse(stack, method=method, mode=args.mode, device=args.device,
                  progress=Progress("fusing", "step", quiet=args.quiet),
                  tile_size=0 if args.in_memory else None,
                  focus_channel=_focus_channel(args.focus_channel), align=args.align,
                  align_frame=args.align_frame, **_with_known_z(args, info, layout), **params)
    pixel = _pixel_size(io, info, outputs[0])
    height = result.index_map
    z_step = _z_step_um(args, info) if args.height_map else None
    to_height = _names_height(names_z) if args.height_map else None
    if to_height is not None:
        height, z_step = to_height(height), None
    elif z_step is not None:
        height = (height * z_step).astype(np.float32)
    images = [result.image] + ([height] if args.height_map else [])
    written = []
    try:
        for path, image in zip(outputs, images):
            io.write_image(path, image, overwrite=args.overwrite, **pixel)
            written.append(path)
    except BaseException:  # Ctrl-C or a full disk on the height map: no fused image alone
        for path in written:
            path.unlink(missing_ok=True)
        raise
    if not args.quiet:
        elapsed = time.perf_counter() - start
        if layout["z_axis"] is not None and layout["channel_axis"] is None \
                and layout["time_axis"] is None and stack.ndim == 3:
            z = layout["z_axis"] % 3
            h, w = (n for i, n in enumerate(stack.shape) if i != z)
            what = (f"{stack.shape[z]} slices of {h}x{w} {stack.dtype} (z axis {z} of "
                    f"{'x'.join(str(n) for n in stack.shape)})")
        elif any(v is not None for v in layout.values()):
            what = f"a {'x'.join(str(n) for n in stack.shape)} {stack.dtype} stack"
        else:
            what = f"{stack.shape[0]} slices of {stack.shape[1]}x{stack.shape[2]} {stack.dtype}"
        print(f"fused {what} with {method} ({args.mode}, {result.device}) in {elapsed:.1f} s")
        _print_slice_order(args)
        if not args.height_map and info is not None and "Z" in info.axes \
                and len(args.inputs) == 1:
            step = _z_step_um(argparse.Namespace(**{**vars(args), "height_units": "auto"}),
                              info)
            print("z step " + (f"{step:g} µm" if step is not None else
                               "unknown: the file does not store it (--z-step gives it)"))
        alignments = result.alignment if isinstance(result.alignment, list) else [result.alignment]
        for alignment in alignments:
            if alignment is not None:
                print(alignment.report())
        print(f"fused image: {outputs[0].resolve()}")
        if args.height_map:
            note = _names_note(names_z) or _height_note(z_step, args.z_step is not None)
            print(f"height map:  {outputs[1].resolve()} ({note})")
    return EXIT_OK


def _names_z(args) -> np.ndarray | None:
    """With --z-from-names: each input's z (µm) from its name, rising in slice order."""
    if not getattr(args, "z_from_names", False):
        return None
    from .io import z_from_name

    if len(args.inputs) < 2:
        raise MfifError("--z-from-names takes the z of each slice file from its name: give "
                        "two or more files")
    if args.z_step is not None:
        raise MfifError("--z-from-names and --z-step exclude each other")
    z = [z_from_name(p) for p in args.inputs]
    missing = [Path(p).name for p, v in zip(args.inputs, z) if v is None]
    if missing:
        raise MfifError(f"--z-from-names: no number in the name of {missing[0]}")
    z = np.asarray(z, dtype=np.float64)
    if np.any(np.diff(z) <= 0):
        raise MfifError("--z-from-names: the z values in the names do not rise in the order "
                        "of the slices (" + ", ".join(f"{v:g}" for v in z[:6])
                        + (", ..." if len(z) > 6 else "") + "); drop --keep-order, or "
                        "rename the files")
    return z


def _names_height(z: np.ndarray | None):
    """The function turning a height map in slices into the z of the names, ``z`` from
    :func:`_names_z` (None without --z-from-names)."""
    if z is None:
        return None
    from .formats import height_in_micrometres

    return lambda height: height_in_micrometres(height, z)


def _names_note(z: np.ndarray | None) -> str | None:
    if z is None:
        return None
    return f"height in µm: planes at z = {_z_list(z)} µm (from the file names)"


def _scene_output(path: Path, scene: int, several: bool) -> Path:
    """``path`` for one scene: as given for a single scene, else with ``_s<scene>`` before
    its extension (``fused.ome.tif`` -> ``fused_s1.ome.tif``)."""
    if not several:
        return path
    from .formats import split_name

    stem, ext = split_name(path.name)
    return path.with_name(f"{stem}_s{scene}{ext}")


def _fuse_microscope(args, method: str, params: dict, outputs: list[Path],
                     report: dict | None = None) -> int:
    """``fuse`` of a CZI, ND2, LIF or OME-Zarr file (napari_mfif.formats): axes, pixel size
    and z from the file's metadata; one scene, or each with --scene all."""
    from . import io
    from ._memory import check_fits, tiles_pay
    from .formats import fuse_scene, open_scenes

    for flag, value in (("--z-axis", args.z_axis), ("--channel-axis", args.channel_axis),
                        ("--time-axis", args.time_axis)):
        if value is not None:
            raise MfifError(f"{flag} is not needed for {Path(args.inputs[0]).name}: its axes "
                            "are read from the file's metadata")

    tiled = _tiles_asked(args)
    source = Path(args.inputs[0])
    scenes = open_scenes(source, "all" if args.scene == "all" else
                         [0 if args.scene is None else args.scene])
    several = args.scene == "all" and len(scenes[0].scenes) > 1
    plans = []
    for stack in scenes:
        outs = [_scene_output(out, stack.scene_index, several) for out in outputs]
        for out in outs:
            if out.resolve() == source.resolve() or _same_file(out, source):
                raise MfifError(f"output {out} is the input; inputs are never overwritten")
            io.check_output(out, overwrite=args.overwrite,
                            dtype=stack.data.dtype if out == outs[0] else None)
        plans.append((stack, outs))
    for stack, outs in plans:
        start = time.perf_counter()
        sizes = stack.sizes
        one = (sizes["Z"], sizes["Y"], sizes["X"]) + ((sizes["C"],) if sizes["C"] > 1 else ()) \
            + ((sizes["S"],) if "S" in sizes else ())
        if report is not None:
            report["slices"] = sizes["Z"]
        if args.z_step is not None:
            stack = _with_z_step(stack, _z_step_um(args, None))
        elif args.height_units == "um" and args.height_map and stack.z_positions is None:
            raise MfifError("the height map in um needs the z step, which the input does not "
                            "store; give it with --z-step")
        by_tiles = tiled or (not args.in_memory and _scene_tileable(args, stack, method, outs)
                             and tiles_pay(one, stack.data.dtype, method, args.mode,
                                           params=params))
        try:
            if not by_tiles:
                check_fits(one, stack.data.dtype, method, args.mode, params=params)
        except MfifError:  # tile by tile instead, where that can be done
            if args.in_memory or not _scene_tileable(args, stack, method, outs):
                raise
            by_tiles = True
        if by_tiles:
            _fuse_scene_tiled(args, stack, method, params, outs, start)
            continue
        scene = fuse_scene(stack, method, mode=args.mode, device=args.device,
                           progress=Progress("fusing", "step", quiet=args.quiet),
                           tile_size=0 if args.in_memory else None,
                           focus_channel=_focus_channel(args.focus_channel), align=args.align,
                           align_frame=args.align_frame, **params)
        height = scene.height
        if args.height_units == "slices" and scene.z is not None:
            height = scene.result.index_map.astype(np.float32)
        z_note = _z_note(stack, scene, args.height_units)
        images = [(scene.image, scene.axes, None)]
        if args.height_map:
            images.append((height, ("T" if "T" in scene.axes else "") + "YX", z_note))
        written = []
        try:
            for path, (image, axes, note) in zip(outs, images):
                if io.output_format(path) == "OME-Zarr":
                    from .ngff import write_ome_zarr

                    write_ome_zarr(path, image, axes, pixel_size=stack.pixel_size,
                                   overwrite=args.overwrite, name=path.name,
                                   attributes={"description": note} if note else None)
                elif io.output_format(path) == "TIFF":
                    io.write_ome_tiff(path, image, axes, pixel_size=stack.pixel_size,
                                      description=note, overwrite=args.overwrite)
                else:
                    io.write_image(path, image, overwrite=args.overwrite)
                written.append(path)
        except BaseException:
            for path in written:
                path.unlink(missing_ok=True)
            raise
        if not args.quiet:
            elapsed = time.perf_counter() - start
            print(f"fused scene {stack.scene_index} ({stack.scene!r}) of {source.name}: "
                  f"{stack.describe()}; {sizes['Y']}x{sizes['X']} {stack.data.dtype}, with "
                  f"{method} ({args.mode}, {scene.result.device}) in {elapsed:.1f} s")
            if stack.z_positions is not None and stack.z_positions[-1] < stack.z_positions[0]:
                print("planes fused in rising z: the file records them top down")
            print(f"fused image: {outs[0].resolve()}")
            if args.height_map:
                print(f"height map:  {outs[1].resolve()} ({z_note})")
    if not args.quiet and args.scene is None and len(scenes[0].scenes) > 1:
        print(f"{source.name} holds {len(scenes[0].scenes)} scenes; scene 0 was fused "
              "(--scene N for another, --scene all for each)")
    return EXIT_OK


def _scene_tileable(args, stack, method: str, outputs) -> bool:
    """Whether a microscope scene can go tile by tile: one time point and one channel (or
    RGB), a method that tiles, no alignment or focus channel, TIFF outputs."""
    from . import io
    from .registry import get_method

    sizes = stack.sizes
    return (sizes["T"] == 1 and sizes["C"] == 1 and get_method(method).tiling is not None
            and not args.align and args.focus_channel is None
            and all(io.output_format(out) in ("TIFF", "OME-Zarr") for out in outputs))


def _fuse_scene_tiled(args, stack, method: str, params: dict, outputs, start: float) -> None:
    """One scene of a microscope file tile by tile: read region by region where the file
    is chunked (OME-Zarr), written as tiled BigTIFFs band by band."""
    from .formats import height_in_micrometres
    from .registry import get_method
    from .tiles import DEFAULT_TILE, check_tile_size

    if not _scene_tileable(args, stack, method, outputs):
        raise MfifError("tile by tile, a scene of one time point and one channel is fused "
                        "(no --align or --focus-channel) into .tif outputs; this one has "
                        f"{stack.describe()}")
    if args.overlap is not None and args.overlap < 0:
        raise MfifError(f"--overlap must be a whole number of pixels >= 0, got {args.overlap}")
    spec = get_method(method)
    tile = check_tile_size(args.tile_size if args.tile_size is not None else DEFAULT_TILE)
    array = stack.data_in_z_order()[0, 0]
    array = array.rechunk((1, tile, tile) + array.shape[3:])
    z = stack.sorted_z()
    to_height = None
    if z is not None and args.height_units != "slices":
        to_height = lambda h: height_in_micrometres(h, z)  # noqa: E731
    run, device = _tile_and_write(args, spec, params, outputs, array, stack.pixel_size,
                                  to_height, tile)
    if not args.quiet:
        sizes = stack.sizes
        print(f"fused scene {stack.scene_index} ({stack.scene!r}) of {stack.path.name}: "
              f"{stack.describe()}; {sizes['Y']}x{sizes['X']} {stack.data.dtype}, with "
              f"{method} ({args.mode}, {device}) in {time.perf_counter() - start:.1f} s: "
              f"{run.plan.n_tiles} tiles of {run.plan.tile} px")
        print(f"fused image: {outputs[0].resolve()}")
        if args.height_map:
            note = (f"height in µm: planes at z = {_z_list(z)} µm ({stack.z_source})"
                    if to_height is not None else "height in slices, 0 = lowest plane")
            print(f"height map:  {outputs[1].resolve()} ({note})")


def _with_z_step(stack, step: float):
    """``stack`` with its planes ``step`` micrometres apart (--z-step overrides the file)."""
    from dataclasses import replace

    return replace(stack, z_positions=np.arange(stack.sizes["Z"]) * step,
                   z_source=f"z step {step:g} µm (--z-step)")


def _z_note(stack, scene, units: str) -> str:
    """What the height map's values mean, for the summary and the file's description."""
    if scene.z is None or units == "slices":
        why = "" if scene.z is not None else "; the z step is unknown (give it with --z-step)"
        return f"height in slices, 0 = lowest plane{why}"
    return f"height in µm: planes at z = {_z_list(scene.z)} µm ({stack.z_source})"


def _z_list(z) -> str:
    """The planes' z for a summary line: all of up to 12, else the first two and the last."""
    z = np.asarray(z) + 0.0  # no "-0"
    return ", ".join(f"{v:g}" for v in z) if len(z) <= 12 else \
        f"{z[0]:g}, {z[1]:g}, ... {z[-1]:g}"


def _warn_if_shifted(stack) -> None:
    """Say on stderr when the slices are visibly shifted against each other (a cheap
    check on a reduced copy, align.visible_shift), naming --align."""
    from .align import visible_shift

    shift = visible_shift(stack)
    if shift is not None:
        print(f"napari-mfif: warning: the slices are shifted by up to {shift:.0f} px against "
              "each other (stage drift or a handheld camera), which doubles edges in the "
              "fused image; fuse with --align translation to register them first",
              file=sys.stderr, flush=True)


def _cluster(args):
    """A dask.distributed client for --workers / --scheduler (None for neither), and what
    to close afterwards."""
    if args.workers is None and args.scheduler is None:
        return None, []
    if args.workers is not None and args.scheduler is not None:
        raise MfifError("give --workers (a local cluster) or --scheduler (an existing one), "
                        "not both")
    try:
        import distributed
    except ImportError:
        raise MfifError("--workers and --scheduler need the 'distributed' package "
                        "(pip install distributed)") from None
    if args.scheduler is not None:
        try:
            client = distributed.Client(args.scheduler, timeout="20s")
        except (OSError, TimeoutError) as exc:
            raise MfifError(f"cannot reach the dask scheduler at {args.scheduler}: "
                            f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
                            ) from None
        return client, [client]
    if args.workers < 1:
        raise MfifError(f"--workers must be at least 1, got {args.workers}")
    import logging

    logging.getLogger("distributed").setLevel(logging.WARNING)
    cluster = distributed.LocalCluster(n_workers=args.workers, threads_per_worker=1,
                                       processes=True, dashboard_address=None)
    client = distributed.Client(cluster)
    return client, [client, cluster]


def _tile_and_write(args, spec, params, outputs, array, pixel_size, to_height, tile: int):
    """Fuse the (Z, Y, X[, C]) dask ``array`` tile by tile into tiled BigTIFFs written band
    by band (``outputs``: fused image[, height map]; ``to_height`` turns a band of the height
    map from slices into its units, None keeps slices); returns (run, device)."""
    from ._device import release, resolve_device
    from .tiles import run_tiles

    h, w = (int(n) for n in array.shape[1:3])
    device = resolve_device(args.device, spec.devices, spec.name,
                            auto_cuda=spec.auto_cuda)
    client, to_close = _cluster(args)
    height_written = False
    try:
        with _band_writer(args, outputs[0], array.shape[1:], array.dtype,
                          pixel_size) as fused_out:
            height_out = None
            if args.height_map:
                height_out = _band_writer(args, outputs[1], (h, w), np.float32, pixel_size)
            try:
                def on_band(y0, image, height):
                    fused_out.write_band(y0, image)
                    if height_out is not None:
                        if to_height is not None:
                            height = to_height(height)
                        height_out.write_band(y0, height)

                run = run_tiles(array, spec.name, args.mode, device, params,
                                tile=tile, overlap=args.overlap, dtype=array.dtype,
                                on_band=on_band,
                                progress=Progress("tiles", "tile", quiet=args.quiet))
                if height_out is not None:
                    height_out.close()
                    height_written = True
            except BaseException:
                if height_out is not None:
                    height_out.abort()
                raise
        # the fused image is moved into place last of all; if that fails, no height map alone
    except BaseException:
        if height_written:  # the fused image failed after it: no height map alone
            outputs[1].unlink(missing_ok=True)
        raise
    finally:
        release(device)
        for thing in to_close:
            thing.close()
    return run, device


def _band_writer(args, path: Path, shape, dtype, pixel_size):
    """The writer that takes an output band by band: a tiled BigTIFF (a pyramid with
    --pyramid) or an OME-Zarr store (always with its pyramid)."""
    from . import io

    if io.output_format(path) == "OME-Zarr":
        from .ngff import OmeZarrWriter

        return OmeZarrWriter(path, shape, dtype, axes="YX" if len(shape) == 2 else "YXS",
                             pixel_size=pixel_size, overwrite=args.overwrite, name=path.name)
    from .slide_io import TiledTiffWriter

    return TiledTiffWriter(path, shape, dtype, pyramid=args.pyramid, overwrite=args.overwrite,
                           pixel_size=pixel_size, unit="um" if pixel_size else None)


class _InMemorySource:
    """A stack already in memory, in place of a TiffStackSource (no pixel size, no z
    step): its work goes tile by tile all the same."""

    def __init__(self, stack: np.ndarray):
        self.stack, self.shape, self.dtype = stack, stack.shape, stack.dtype
        self.pixel_size = self.z_step_um = None


def _fits_in_memory(header) -> bool:
    """Whether a stack of ``header`` (shape, dtype; None: unknown) can be held in memory:
    its bytes are under 80 % of the free memory (True where that cannot be told)."""
    from ._memory import available_bytes, stack_bytes

    if header is None:
        return True
    free = available_bytes()
    return free is None or stack_bytes(*header) < 0.8 * free


def _fuse_tiled(args, io, spec, params, outputs, info, layout, start, report=None,
                header=None, names_z=None) -> int:
    """``fuse`` tile by tile: TIFF inputs read region by region, tiled BigTIFF outputs
    written band by band (see napari_mfif.tiles)."""
    from .slide_io import TiffStackSource
    from .tiles import DEFAULT_TILE, as_dask, check_tile_size, tileable

    tileable(spec)
    if args.align:
        raise MfifError("--align needs the whole stack in memory; it cannot run tile by tile")
    if any(v is not None for v in layout.values()):
        raise MfifError("tile by tile, the input is one (Z, Y, X) or (Z, Y, X, RGB) stack; "
                        "--channel-axis, --time-axis, --z-axis and TIFF hyperstacks with C or "
                        "T axes or z not first are not supported with tiles")
    if args.focus_channel is not None:
        raise MfifError("--focus-channel is not supported with tiles (focus is judged on the "
                        "luminance)")
    for out in outputs:
        if io.output_format(out) not in ("TIFF", "OME-Zarr"):
            raise MfifError(f"tile by tile, the outputs are tiled BigTIFFs or OME-Zarr; give "
                            f"{out.name} a .tif, .tiff or .ome.zarr name")
    if args.overlap is not None and args.overlap < 0:
        raise MfifError(f"--overlap must be a whole number of pixels >= 0, got {args.overlap}")
    tile = check_tile_size(args.tile_size if args.tile_size is not None else DEFAULT_TILE)
    source = None
    if all(io.is_tiff(path) for path in args.inputs):  # read region by region
        try:
            source = TiffStackSource.open(args.inputs if len(args.inputs) > 1
                                          else args.inputs[0])
        except MfifError:
            # a layout the region reader does not take (colour samples in separate planes,
            # packed bits, ...): read whole, as fusing in memory would, and tile the work,
            # so that a stack is the same stack at every size; if it cannot be held either,
            # the region reader's reason stands
            if not _fits_in_memory(header):
                raise
    if source is None:  # PNG, JPEG, ...: the slices are held, the work tiled
        source = _InMemorySource(io.read_stack(args.inputs))
    _check_slice_axis(args, info, source.shape)
    z, h, w = source.shape[:3]
    if report is not None:
        report["slices"] = z
    if spec.name == "cnn":
        from .fusion.cnn_pipeline import check_size

        check_size(h, w)
    z_step = _z_step_um(args, info, source.z_step_um) if args.height_map else None
    to_height = None if z_step is None else (lambda h: (h * z_step).astype(np.float32))
    if args.height_map and names_z is not None:
        to_height = _names_height(names_z)
    array = as_dask(source.stack if isinstance(source, _InMemorySource) else source, tile)
    run, device = _tile_and_write(args, spec, params, outputs, array, source.pixel_size,
                                  to_height, tile)
    if not args.quiet:
        elapsed = time.perf_counter() - start
        plan = run.plan
        print(f"fused {z} slices of {h}x{w} {source.dtype} with {spec.name} ({args.mode}, "
              f"{device}) in {elapsed:.1f} s: {plan.n_tiles} tiles of {plan.tile} px, overlap "
              f"{plan.overlap} px, {run.passes} pass{'es' if run.passes > 1 else ''}, "
              f"{run.workers} worker{'s' if run.workers > 1 else ''}")
        _print_slice_order(args)
        print(f"fused image: {outputs[0].resolve()}")
        if args.height_map:
            note = _names_note(names_z) or _height_note(z_step, args.z_step is not None)
            print(f"height map:  {outputs[1].resolve()} ({note})")
    return EXIT_OK


def _cmd_batch(args) -> int:
    from .batch import run_batch

    return run_batch(args)


def _cmd_sample(args) -> int:
    from . import io
    from .synthetic import SAMPLE_SCALE, sample_stack

    io.check_output(args.output, overwrite=args.overwrite, dtype="uint16")
    sample = sample_stack()
    path = io.write_image(args.output, sample.stack, overwrite=args.overwrite,
                          scale=SAMPLE_SCALE, unit="µm", stack=True)
    z, y, x = sample.stack.shape
    print(f"sample focal stack ({z} slices of {y}x{x} uint16): {path.resolve()}")
    return EXIT_OK


def _cmd_methods(args) -> int:
    from .registry import DEFAULT_METHOD, available_methods

    for name, spec in available_methods().items():
        default = " (default)" if name == DEFAULT_METHOD else ""
        print(f"{name}{default}: {spec.summary}")
        print(f"    modes: {', '.join(spec.modes)}; devices: {', '.join(spec.devices)}")
        for key, value in spec.params.items():
            print(f"    -p {key}={value}  {spec.param_help.get(key, '')}")
    return EXIT_OK


def _os_error(exc: OSError) -> str:
    """An OSError in one line: what went wrong and on which file."""
    where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
    return f"{exc.strerror or exc}{where}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help()
            return EXIT_BAD_INPUT
        return {"fuse": _cmd_fuse, "batch": _cmd_batch, "sample": _cmd_sample,
                "methods": _cmd_methods}[args.command](args)
    except MfifError as exc:
        print(f"napari-mfif: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as exc:  # disk full, permissions changed under us, ...
        print(f"napari-mfif: error: {_os_error(exc)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("napari-mfif: interrupted; no output was written", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
