"""Will an in-memory fusion fit? Estimate its peak memory and compare with what is free.

:func:`napari_mfif.fuse` and the command line call :func:`check_fits` on the stack's shape
before any pixel is loaded or converted, so that a stack too large for this machine ends in
one clear sentence instead of the process being killed by the out-of-memory killer (or the
machine swapping for an hour). There is no tiled path yet to fall back on.

Free memory (:func:`available_bytes`) is the kernel's ``MemAvailable`` (free memory plus
the page cache it can reclaim), lowered to the headroom left under a cgroup memory limit
(containers, batch jobs: ``memory.max`` or ``memory.limit_in_bytes`` minus the memory in
use, its reclaimable page cache left out). Elsewhere it comes from ``os.sysconf`` or, on
Windows, ``GlobalMemoryStatusEx``. Swap is not counted.

The estimate (:func:`fusion_bytes`) is the peak resident memory ``fuse`` adds on top of the
stack itself once the stack is in memory, for a stack of Z slices of Y x X pixels with C
channels (C = 1 for grey), on the CPU::

    bytes = s * (a * Z*Y*X*C + b * Z*Y*X + c * Y*X*C + d * Y*X) + n * Y*X + overhead

with ``s = 1`` when the work is done in float32 (uint8, uint16, int16, float32 input) and
``s = 2`` in float64 (float64 and 32-bit integer input). The factors were measured by
running ``fuse`` in a fresh process on stacks from 2 x 256 x 256 to 24 x 4096 x 4096 (grey
and RGB; uint8, uint16, float32), reading the peak resident set (``VmHWM``, reset just
before the call, after a first small call had done the imports) and fitting the line that
lies at or above the large runs:

=======================  ====  ====  ====  ====  ==========================  ==================
method, mode              a     b     c     d    n (network, per Y*X)        overhead
=======================  ====  ====  ====  ====  ==========================  ==================
slice by slice, nway      0     1    18    10    -                           24 + 16 T MiB
slice by slice, series    0     0    16    24    -                           24 MiB
classic, nway             6    20     2    56    -                           8 MiB
classic, series           6     0     7    26    -                           8 MiB
cnn, nway                 6    46     0     0    240 compact, 1250 liu2017   352 MiB
cnn, series               6     6     0     0    400 compact, 1850 liu2017   352 MiB
cnn_wavelet, nway         6    46     0     0    as cnn                      352 MiB
cnn_wavelet, series       6     6    18    36    as cnn                      352 MiB
=======================  ====  ====  ====  ====  ==========================  ==================

"slice by slice" is every method that reads the slices one at a time (the choose-max
methods: ``dog``, ``tenengrad``, ``variance``, ``sml``; :attr:`Method.slice_by_slice
<napari_mfif.registry.Method.slice_by_slice>`): no float copy of the stack and no per-slice
maps kept. In N-way mode only the consistency check's vote grid (a sixteenth of the
pixels, ``b``) grows with the number of slices, and the slices are worked on in bands of
rows (:data:`napari_mfif.stack.BAND_PIXELS`), so that the temporaries do not grow with the
image either: ``c`` and ``d`` hold the running best, the choice, the running sums, the
confidence and the conversion back to the input's dtype; T is the threads the per-slice
steps use (:func:`napari_mfif.stack.slice_threads`, 1 to 4), each with one band's
temporaries. In series mode (one thread) they hold the running result and its gray image,
the slice being added and the pair's focus maps. Measured on 8 to 24 slices of 1024^2 to
8192^2 (grey uint16, RGB uint8; ``dog``, ``tenengrad``, ``sml``, with and without the noise
floor and ``return_weights``; two threads), the peaks were 0.6 (1024^2) to 0.92 times the
estimate in N-way mode, 0.67 to 0.94 in series. "classic" is the other methods (pyramid,
wavelet, focusnet, and methods registered from outside the package, whose needs are
unknown), and the choose-max methods when the slices are aligned first. Of ``a``, 4 bytes
per value are the float32 copy of the stack; ``b`` holds
the per-slice maps kept for all slices at once (decision maps; the flat-area blend; for the
CNN, the score maps, their softmax and the guided filter); the CNN's ``n`` is one slice's
feature maps (16 and 32 full-size channels for the compact net, 64 and 128 for liu2017; a
``weights`` file is taken to be liu2017). The CNN overhead includes importing torch (about
270 MiB). ``cnn_wavelet`` was measured against ``cnn`` (compact; 3 to 18 x 1024 x 1024, grey,
RGB and 8 channels): in N-way its DWT pass stays below the CNN's own peak (the same peak to
within 1 %); in series the running result and the two slices' decompositions (with the gray
image as one more channel) add about 18 bytes per image value plus 36 per pixel.
``return_weights=True`` adds 6 bytes per voxel in the classic series mode, 5 (N-way) and
7 (series) slice by slice (the weights themselves, 4) and nothing in the classic N-way mode
(which holds them anyway).
Of the runs whose peak passed 100 MiB, the classic methods measured 0.73 to 0.95 times the
estimate, the CNN 0.71 to 1.0 times from 1 GiB up and up to 1.3 times its estimate without
the torch import below that (its peak varies by some 15 % from run to run). On a GPU the
host needs less than this, except for the choose-max methods asked for ``device="cuda"``,
which bring every slice's weights back to the host (the "classic" figures); the CPU figure
is used anyway.

When the stack is not in memory yet (a dask array, a list of slices, a file the command
line is about to read), its own bytes are added.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ._errors import MfifError
from .stack import slice_threads, work_dtype

_MIB = 2**20
_GIB = 2**30

#: (method kind, mode) -> bytes per (stack value, voxel, image value, image pixel), float32 work
_FACTORS = {
    ("streamed", "nway"): (0, 1, 18, 10),
    ("streamed", "series"): (0, 0, 16, 24),
    ("classic", "nway"): (6, 20, 2, 56),
    ("classic", "series"): (6, 0, 7, 26),
    ("cnn", "nway"): (6, 46, 0, 0),
    ("cnn", "series"): (6, 6, 0, 0),
    ("cnn_wavelet", "nway"): (6, 46, 0, 0),
    ("cnn_wavelet", "series"): (6, 6, 18, 36),
}
#: CNN architecture -> mode -> bytes per image pixel of one slice's feature maps
_NETWORK = {
    "compact": {"nway": 240, "series": 400},
    "liu2017": {"nway": 1250, "series": 1850},
    # compact-sized variants: compact's figures, not measured separately (the wavelet net's
    # features are at half resolution, so it needs less)
    "dual": {"nway": 240, "series": 400},
    "wavelet": {"nway": 240, "series": 400},
    "compact_mixed": {"nway": 240, "series": 400},
}
_OVERHEAD = {"streamed": 24 * _MIB, "classic": 8 * _MIB, "cnn": 352 * _MIB}
#: bytes of one thread's temporaries (a band of one slice), slice by slice
_THREAD = 16 * _MIB
#: extra bytes per voxel for ``return_weights=True``, by kind and mode
_WEIGHTS = {("classic", "series"): 6, ("streamed", "nway"): 5, ("streamed", "series"): 7}

#: a cgroup memory limit at least this large means "no limit"
_NO_LIMIT = 2**60


# -- free memory -----------------------------------------------------------------------------

def available_bytes() -> int | None:
    """Bytes this process can still take without swapping or being killed, or None if unknown.

    Linux: ``MemAvailable`` from ``/proc/meminfo``, lowered to the headroom under a cgroup
    (v2 or v1) memory limit of this process or of any cgroup above it. Elsewhere:
    ``os.sysconf`` (free physical pages) or, on Windows, ``GlobalMemoryStatusEx``.
    """
    found = []
    meminfo = _meminfo_available()
    if meminfo is not None:
        found.append(meminfo)
    else:
        other = _sysconf_available() if hasattr(os, "sysconf") else _windows_available()
        if other is not None:
            found.append(other)
    headroom = _cgroup_headroom()
    if headroom is not None:
        found.append(headroom)
    return min(found) if found else None


def _read(path: str | Path) -> str | None:
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            return f.read()
    except OSError:
        return None


def _meminfo_available(text: str | None = None) -> int | None:
    text = _read("/proc/meminfo") if text is None else text
    for line in (text or "").splitlines():
        key, _, value = line.partition(":")
        if key == "MemAvailable":
            fields = value.split()
            if fields and fields[0].isdigit():
                return int(fields[0]) * (1024 if fields[1:] == ["kB"] else 1)
    return None


def _sysconf_available() -> int | None:
    try:
        pages, size = os.sysconf("SC_AVPHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        return None
    return pages * size if pages > 0 and size > 0 else None


def _windows_available() -> int | None:  # pragma: no cover - Windows only
    if sys.platform != "win32":
        return None
    import ctypes

    class _Status(ctypes.Structure):
        _fields_ = [("dwLength", ctypes.c_ulong), ("dwMemoryLoad", ctypes.c_ulong),
                    ("ullTotalPhys", ctypes.c_ulonglong), ("ullAvailPhys", ctypes.c_ulonglong),
                    ("ullTotalPageFile", ctypes.c_ulonglong),
                    ("ullAvailPageFile", ctypes.c_ulonglong),
                    ("ullTotalVirtual", ctypes.c_ulonglong),
                    ("ullAvailVirtual", ctypes.c_ulonglong),
                    ("ullAvailExtendedVirtual", ctypes.c_ulonglong)]

    status = _Status()
    status.dwLength = ctypes.sizeof(_Status)
    if not ctypes.windll.kernel32.GlobalMemoryStatusEx(ctypes.byref(status)):
        return None
    return int(status.ullAvailPhys)


def _cgroup_headroom(cgroups: str | None = None, mountinfo: str | None = None) -> int | None:
    """The smallest (limit - usage) over the memory cgroups this process is in and their
    ancestors, or None when no limit is set. The arguments (the text of
    ``/proc/self/cgroup`` and ``/proc/self/mountinfo``) are for tests."""
    cgroups = _read("/proc/self/cgroup") if cgroups is None else cgroups
    mountinfo = _read("/proc/self/mountinfo") if mountinfo is None else mountinfo
    if not cgroups or not mountinfo:
        return None
    v2_path = v1_path = None
    for line in cgroups.splitlines():
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hierarchy == "0" and controllers == "":
            v2_path = path
        elif "memory" in controllers.split(","):
            v1_path = path
    best = None
    for line in mountinfo.splitlines():
        fields = line.split()
        if " - " not in line or len(fields) < 5:
            continue
        after = line.split(" - ", 1)[1].split()
        fstype, options = after[0], (after[2] if len(after) > 2 else "")
        root, mount = _unescape(fields[3]), Path(_unescape(fields[4]))
        if fstype == "cgroup2" and v2_path is not None:
            files, path = ("memory.max", "memory.current", "inactive_file"), v2_path
        elif fstype == "cgroup" and v1_path is not None and "memory" in options.split(","):
            files, path = (("memory.limit_in_bytes", "memory.usage_in_bytes",
                            "total_inactive_file"), v1_path)
        else:
            continue
        for directory in _cgroup_dirs(mount, root, path):
            headroom = _headroom(directory, *files)
            if headroom is not None and (best is None or headroom < best):
                best = headroom
    return best


def _unescape(field: str) -> str:
    """mountinfo writes space, tab, newline and backslash as octal escapes."""
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field = field.replace(code, char)
    return field


def _cgroup_dirs(mount: Path, root: str, path: str) -> list[Path]:
    """The directory of cgroup ``path`` under a mount of (part of) the hierarchy whose
    ``root`` is mounted at ``mount``, then its ancestors up to the mount point."""
    if root != "/" and (path == root or path.startswith(root.rstrip("/") + "/")):
        path = path[len(root.rstrip("/")):]
    directory = mount / path.lstrip("/")
    if not directory.is_dir():  # a cgroup namespace or a mount of our own cgroup only
        directory = mount
    dirs = [directory]
    while directory != mount and mount in directory.parents:
        directory = directory.parent
        dirs.append(directory)
    return dirs


def _headroom(directory: Path, limit_file: str, usage_file: str, inactive_key: str) -> int | None:
    limit = _read_int(directory / limit_file)
    if limit is None or limit >= _NO_LIMIT:
        return None
    usage = _read_int(directory / usage_file) or 0
    for line in (_read(directory / "memory.stat") or "").splitlines():
        key, _, value = line.partition(" ")
        if key == inactive_key and value.strip().isdigit():  # page cache it can drop
            usage -= int(value)
            break
    return max(limit - max(usage, 0), 0)


def _read_int(path: Path) -> int | None:
    text = (_read(path) or "").strip()
    return int(text) if text.isdigit() else None  # "max" (no limit) and "" are None


# -- the estimate ----------------------------------------------------------------------------

#: methods that run the focus CNN (its network and torch overhead), with their own factors
_CNN_METHODS = ("cnn", "cnn_wavelet")


def _kind(method: str) -> str:
    if method in _CNN_METHODS:
        return "cnn"
    from .registry import available_methods

    spec = available_methods().get(method)
    if spec is not None and spec.slice_by_slice:
        return "streamed"
    return "classic"


def _network(params: Mapping[str, Any] | None) -> str:
    params = params or {}
    if params.get("weights"):  # a trained file of either size: assume the larger
        return "liu2017"
    arch = params.get("arch", "compact")
    return arch if arch in _NETWORK else "liu2017"


def _dims(shape) -> tuple[int, int, int, int]:
    shape = tuple(int(s) for s in shape)
    if len(shape) not in (3, 4):
        raise ValueError(f"a stack shape is (Z, Y, X) or (Z, Y, X, C), got {shape}")
    z, y, x = shape[:3]
    return z, y, x, (shape[3] if len(shape) == 4 else 1)


def fusion_bytes(shape, dtype, method: str = "tenengrad", mode: str = "nway", *,
                 params: Mapping[str, Any] | None = None, return_weights: bool = False) -> int:
    """The peak memory, in bytes, that fusing a stack in memory adds to the stack itself.

    Parameters
    ----------
    shape : tuple of int
        (Z, Y, X) or (Z, Y, X, C).
    dtype : dtype
        The stack's dtype (float64 and 32-bit integers are worked on in float64).
    method, mode : str
        As for :func:`napari_mfif.fuse`.
    params : dict, optional
        The method's parameters: for ``cnn``, ``arch`` and ``weights`` pick the network.
    return_weights : bool
        As for :func:`napari_mfif.fuse`.

    Returns
    -------
    int
        The estimate (see the module docstring for the measured factors).
    """
    z, y, x, c = _dims(shape)
    mode = mode if mode in ("nway", "series") else "nway"
    kind = _kind(method)
    key = (method if method in _CNN_METHODS else kind, mode)
    a, b, c_image, d = _FACTORS[key]
    scale = work_dtype(np.dtype(dtype)).itemsize // 4
    voxels, pixels = z * y * x, y * x
    total = scale * (a * voxels * c + b * voxels + c_image * pixels * c + d * pixels)
    if kind == "cnn":
        total += _NETWORK[_network(params)][mode] * pixels
    if return_weights:
        total += scale * _WEIGHTS.get((kind, mode), 0) * voxels
    if kind == "streamed" and mode == "nway":  # series runs on one thread
        total += _THREAD * slice_threads()
    return total + _OVERHEAD[kind]


def stack_bytes(shape, dtype) -> int:
    """The bytes a stack of this shape and dtype takes in memory."""
    return int(np.prod([int(s) for s in shape], dtype=np.int64)) * np.dtype(dtype).itemsize


def _size(n: float, digits: int) -> str:
    if n >= _GIB:
        value, unit = n / _GIB, "GiB"
    else:
        value, unit = n / _MIB, "MiB"
    if digits == 0 and value < 10:
        digits = 1
    return f"{value:.{digits}f} {unit}"


def check_fits(shape, dtype, method: str = "tenengrad", mode: str = "nway", *,
               params: Mapping[str, Any] | None = None, return_weights: bool = False,
               in_memory: bool = False) -> None:
    """Raise :class:`MfifError` when fusing this stack in memory would not fit in free memory.

    ``in_memory`` says the stack is already loaded (a numpy array); otherwise its own bytes
    are counted too. Does nothing when free memory cannot be told.
    """
    need = fusion_bytes(shape, dtype, method, mode, params=params,
                        return_weights=return_weights)
    if not in_memory:
        need += stack_bytes(shape, dtype)
    free = available_bytes()
    if free is None or need <= free:
        return
    digits = 0
    while _size(need, digits) == _size(free, digits) and digits < 3:
        digits += 1  # never "needs about 12 GiB but only 12 GiB is available"
    dims = " x ".join(str(int(s)) for s in shape)
    raise MfifError(
        f"fusing this {dims} {np.dtype(dtype)} stack with {method} ({mode}) in memory needs "
        f"about {_size(need, digits)} but only {_size(free, digits)} is available; fuse a "
        "crop or fewer slices, or tile by tile (tile_size=, --tile-size) with a method that can"
    )


def check_stack(stack: Any, method: str, mode: str, *, params: Mapping[str, Any] | None = None,
                return_weights: bool = False) -> None:
    """:func:`check_fits` for what :func:`napari_mfif.fuse` was given, from its shape and
    dtype alone (a dask array is not computed). Input that is not a plausible stack is left
    to the input checks, which say what is wrong with it."""
    if isinstance(stack, (list, tuple)):
        if len(stack) < 2 or not all(hasattr(s, "shape") and hasattr(s, "dtype") for s in stack):
            return
        first = tuple(stack[0].shape)
        if any(tuple(s.shape) != first for s in stack):
            return
        shape, dtype, in_memory = (len(stack), *first), stack[0].dtype, False
    elif hasattr(stack, "shape") and hasattr(stack, "dtype"):
        shape, dtype = tuple(stack.shape), stack.dtype
        in_memory = isinstance(stack, np.ndarray)  # a dask array or the like is loaded first
    else:
        return
    try:
        shape = tuple(int(s) for s in shape)  # a dask array may have unknown (NaN) sizes
        dtype = np.dtype(dtype)
    except (TypeError, ValueError, OverflowError):
        return
    if len(shape) not in (3, 4) or min(shape) < 1 or dtype.kind not in "uif":
        return
    check_fits(shape, dtype, method, mode, params=params, return_weights=return_weights,
               in_memory=in_memory)


#: a stack whose in-memory fusion is estimated to take more than this (the stack plus the
#: method's working memory, :func:`fusion_bytes`, which errs high: for dog the measured peak
#: is about half of it) goes tile by tile without being asked. Measured with dog on 8-slice
#: uint16 slides (benchmarks/tiling_rule.py): tiles take 1.07-1.20x the time of whole-image
#: fusion from 64 MiB to 1 GiB stacks but a near-constant 0.5-0.65 GiB where whole-image
#: fusion peaks at 8x the stack (0.7 GiB at 64 MiB, 2 GiB at 256 MiB, 8 GiB at 1 GiB); this
#: keeps stacks of ~100 MiB and less whole (a few seconds, under 1 GiB) and tiles the rest.
TILE_ABOVE_BYTES = 1536 * _MIB
#: ... and so does one that would take more than this share of the free memory
TILE_ABOVE_SHARE = 0.5


def tiles_pay(shape, dtype, method: str, mode: str = "nway", *,
              params: Mapping[str, Any] | None = None, in_memory: bool = False) -> bool:
    """Whether fusing this stack tile by tile beats fusing it whole: its in-memory estimate
    (the method's working memory, plus the stack's bytes unless ``in_memory``) is above
    :data:`TILE_ABOVE_BYTES` or :data:`TILE_ABOVE_SHARE` of the free memory."""
    need = fusion_bytes(shape, dtype, method, mode, params=params)
    if not in_memory:
        need += stack_bytes(shape, dtype)
    free = available_bytes()
    return need > TILE_ABOVE_BYTES or (free is not None and need > TILE_ABOVE_SHARE * free)
