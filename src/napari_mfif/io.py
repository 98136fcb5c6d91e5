"""Reading focal stacks and writing results.

Reading goes by content, not by file extension: TIFF (including BigTIFF) through
tifffile, everything else Pillow recognises (PNG, JPEG, BMP, ...) through Pillow.

Writing is atomic and never clobbers by accident: the image is written to a temporary
file in the target directory and moved into place at the end, so a crash or Ctrl-C leaves
no partial output; an existing file is kept unless ``overwrite=True``.

TIFF files can also be read lazily (:func:`read_lazy`, a dask array reading one page per
chunk) and carry a physical pixel size (:func:`read_physical_scale`; ``write_image(...,
scale=...)``), in micrometres where the file names a unit of length.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import re
import struct
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np

from ._errors import MfifError
from .stack import MAX_CHANNELS, as_stack


@contextmanager
def _quiet_tifffile():
    """Hold back tifffile's own log lines (e.g. "invalid offset to first page") while we
    read: a damaged file is reported once, in our sentence, not twice."""
    log = logging.getLogger("tifffile")
    was = log.disabled
    log.disabled = True
    try:
        yield
    finally:
        log.disabled = was


def _quiet(function):
    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        with _quiet_tifffile():
            return function(*args, **kwargs)
    return wrapper


_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")

#: output extension -> format name; TIFF takes any dtype, PNG 8 and 16 bits, JPEG 8 bits
_FORMATS = {".tif": "TIFF", ".tiff": "TIFF", ".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG"}

#: The most image data can shrink in a TIFF, by compression code: not at all uncompressed,
#: 1032 to 1 with deflate, 128 to 1 with PackBits, about 7000 to 1 with LZMA (all zeros);
#: other codecs get _MAX_RATIO_OTHER, above what blank images reach. A header declaring
#: more image data than that is damaged, and its data is not allocated.
_MAX_COMPRESSION_RATIO = {1: 1, 8: 1100, 32946: 1100, 50013: 1100, 32773: 130, 34925: 10_000}
_MAX_RATIO_OTHER = 2**16


def _open_check(path: Path) -> None:
    if not path.exists():
        raise MfifError(f"input file not found: {path}")
    if path.is_dir():
        raise MfifError(f"input is a directory, not an image file: {path}")
    if not path.is_file():  # a pipe would block the reading, a device never end it
        raise MfifError(f"input is not a regular file: {path}")
    if not os.access(path, os.R_OK):
        raise MfifError(f"input file is not readable (permission denied): {path}")


def is_tiff(path: str | os.PathLike) -> bool:
    """True if the file starts with a TIFF or BigTIFF header."""
    with open(path, "rb") as f:
        return f.read(4) in _TIFF_MAGIC


def _open_tiff(path: Path):
    """``tifffile.TiffFile(path)``, once its chain of image directories (IFDs) is known to
    end: tifffile follows a chain that loops back for ever (it looks for loops only among
    the first 100 IFDs, and not when a series is built page by page).

    Raises
    ------
    MfifError
        If the chain loops back to an IFD it passed.
    """
    import tifffile

    with open(path, "rb", buffering=0) as f:  # a few bytes per IFD, read as they are
        size = os.fstat(f.fileno()).st_size
        header = f.read(8)
        order = "<" if header[:2] == b"II" else ">"
        # entry count, offset: 2 and 4 bytes in TIFF, 8 and 8 in BigTIFF (its header is 16)
        count, offset, entry = ("Q", "Q", 20) if header[2:4] in (b"+\x00", b"\x00+") else (
            "H", "I", 12)
        count, offset = struct.Struct(order + count), struct.Struct(order + offset)

        def read(what: struct.Struct, at: int) -> int:
            f.seek(at)
            data = f.read(what.size)
            return what.unpack(data)[0] if len(data) == what.size else 0

        ifd, seen = read(offset, 4 if offset.size == 4 else 8), set()
        while 0 < ifd < size:  # tifffile reports where else the chain ends
            if ifd in seen:
                raise MfifError(f"cannot read TIFF file {path}: it is damaged (its chain of "
                                f"image directories loops back to byte {ifd})")
            seen.add(ifd)
            ifd = read(offset, ifd + count.size + read(count, ifd) * entry)
    return tifffile.TiffFile(path)


#: the ``kind`` of the series :func:`_first_series` makes of pages written one by one
PAGES_AS_SLICES = "pages as slices"


def _first_series(path: Path, tif):
    """The first image series of an open TIFF file (the image :func:`read_image` returns).

    A file written page by page, each page its own series (tifffile's ``TiffWriter.write``
    called once per slice, and other writers that leave the pages unrelated), is one series
    of all its pages, axes ``I`` + the page's, when every page is a 2-D or RGB image of one
    shape and dtype: its pages are the slices."""
    if not tif.series:
        raise MfifError(f"cannot read TIFF file {path}: it holds no image data")
    first = tif.series[0]
    if len(tif.series) < 2 or len(first.pages) != 1 or not (
            first.ndim == 2 or (first.ndim == 3 and first.axes.endswith("S"))):
        return first
    pages = []
    for series in tif.series:
        if (len(series.pages) != 1 or tuple(series.shape) != tuple(first.shape)
                or series.dtype != first.dtype or series.axes != first.axes
                or series.pages[0] is None):
            return first
        pages.append(series.pages[0])
    import tifffile

    return tifffile.TiffPageSeries(pages, (len(pages), *first.shape), first.dtype,
                                   "I" + first.axes, parent=tif, kind=PAGES_AS_SLICES)


@_quiet
def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read one image file (any page count for TIFF) into a numpy array, by content.

    The file is only read. A damaged file ends in a clear error before its pixels are
    decoded where the damage shows in its header: a TIFF whose chain of image directories
    loops, whose strips or tiles run past the end of the file or are missing, or whose
    header declares more image data than the file could hold or memory take.

    Parameters
    ----------
    path : str or path-like
        A TIFF or BigTIFF file (the first series, length-1 axes dropped, as tifffile
        reads it), or any image Pillow reads.

    Returns
    -------
    ndarray

    Raises
    ------
    MfifError
        If the file is missing, not a regular file, unreadable, damaged or not an image,
        with a one-sentence reason.
    """
    path = Path(path)
    _open_check(path)
    if is_tiff(path):
        try:
            with _open_tiff(path) as tif:  # what tifffile.imread does, checked first
                series = _first_series(path, tif)
                _check_tiff_series(path, series)
                array = series.asarray() if series.kind == PAGES_AS_SLICES else tif.asarray()
        except MfifError:
            raise
        except Exception as exc:  # tifffile raises many types for damaged files
            raise MfifError(f"cannot read TIFF file {path}: {_first_line(exc)}") from None
        if array is None or np.asarray(array).size == 0:
            raise MfifError(f"cannot read TIFF file {path}: it holds no image data")
        return np.asarray(array)
    png = _png_header(path)
    if png is not None and png[2] == 16:
        return _read_png16(path, png[0] * png[1])
    from PIL import Image, UnidentifiedImageError

    try:
        with open(path, "rb") as f, Image.open(_ClampedReads(f)) as im:
            if im.mode == "P":
                im = im.convert("RGBA" if "transparency" in im.info else "RGB")
            elif im.mode in ("1", "CMYK", "YCbCr", "LAB", "HSV"):
                im = im.convert("L" if im.mode == "1" else "RGB")
            array = np.asarray(im)
    except UnidentifiedImageError:
        raise MfifError(
            f"cannot read {path}: not a TIFF and not an image format Pillow recognises"
        ) from None
    except Image.DecompressionBombError:
        raise _too_many_pixels(path) from None
    except Exception as exc:  # Pillow raises many types for damaged files
        raise MfifError(f"cannot read image file {path}: {_first_line(exc)}") from None
    if array.dtype == np.int32 and array.size and array.min() >= 0 and array.max() < 65536:
        array = array.astype(np.uint16)  # Pillow's "I" mode for 16-bit grey (PGM, ...)
    return array


def _too_many_pixels(path: Path) -> MfifError:
    from PIL import Image

    return MfifError(
        f"cannot read image file {path}: it declares more pixels than Pillow opens "
        f"({Image.MAX_IMAGE_PIXELS * 2}), as a damaged or malicious file would; if you trust "
        "it, fuse with --large-images (napari_mfif.io.large_images() in Python)"
    )


@contextmanager
def large_images():
    """Read PNG, JPEG, BMP, ... files of any size within this block: Pillow's guard against
    decompression bombs (files that declare more than about 179 megapixels) is lifted for
    trusted files, such as a 20000 x 20000 PNG from a slide scanner. TIFF has no such limit.
    """
    from PIL import Image

    was = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = was


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _png_header(path: Path) -> tuple[int, int, int] | None:
    """(width, height, bit depth) from a PNG file's header, or None for anything else."""
    with open(path, "rb") as f:
        head = f.read(26)
    if len(head) < 26 or not head.startswith(_PNG_SIGNATURE) or head[12:16] != b"IHDR":
        return None
    width, height = struct.unpack(">II", head[16:24])
    return width, height, head[24]


def _read_png16(path: Path, pixels: int) -> np.ndarray:
    """A 16-bit PNG (grey, grey + alpha, RGB or RGBA) of ``pixels`` pixels as uint16,
    through imagecodecs: Pillow reads 16-bit colour PNGs as 8-bit, which would lose the low
    byte."""
    import imagecodecs
    from PIL import Image

    if Image.MAX_IMAGE_PIXELS is not None and pixels > 2 * Image.MAX_IMAGE_PIXELS:
        # the limit Pillow sets other files
        raise _too_many_pixels(path)
    try:
        array = imagecodecs.png_decode(path.read_bytes())
    except Exception as exc:  # imagecodecs raises its own error types for damaged files
        raise MfifError(f"cannot read image file {path}: {_first_line(exc)}") from None
    array = np.asarray(array)
    if array.dtype.byteorder not in ("=", "|"):
        array = array.astype(array.dtype.newbyteorder("="))
    return array


class _ClampedReads:
    """A binary file whose reads never ask for more bytes than are left in it.

    Pillow reads a chunk of the length the file declares, and Python allocates that
    length before it reads: a damaged length would allocate gigabytes for a small file.
    """

    def __init__(self, file):
        self._file = file
        self._size = os.fstat(file.fileno()).st_size

    def read(self, size: int | None = -1) -> bytes:
        left = max(self._size - self._file.tell(), 0)
        return self._file.read(left if size is None or size < 0 else min(size, left))

    def __getattr__(self, name):  # seek, tell, ...
        return getattr(self._file, name)


# -- slice order -----------------------------------------------------------------------------

#: a number in a file name: digits with an optional decimal part, negative where a minus
#: sign follows something other than a letter, digit or dot ("z_-0.45" is -0.45; "plane-2"
#: is plane 2, its hyphen a separator)
_NUMBER = re.compile(r"(?:(?<![0-9A-Za-z.])-)?\d+(?:\.\d+)?")


def natural_key(path: str | os.PathLike) -> tuple:
    """The sort key of a slice file in :func:`natural_sorted` order: its name split into
    text (compared case-blind) and numbers (compared by value, signed and decimal)."""
    name = Path(path).name
    key, at = [], 0
    for m in _NUMBER.finditer(name):
        if m.start() > at:
            key.append((1, 0.0, name[at:m.start()].lower()))
        key.append((0, float(m.group()), ""))
        at = m.end()
    if at < len(name):
        key.append((1, 0.0, name[at:].lower()))
    return (tuple(key), os.fspath(path))


def z_from_name(path: str | os.PathLike) -> float | None:
    """The last number in a file's name without its extension, signed and decimal as
    :func:`natural_key` reads it (``tile_-43.418.tiff`` -> -43.418), or None where the name
    has none: the z some acquisition programs write only into the names."""
    numbers = _NUMBER.findall(Path(path).stem)
    return float(numbers[-1]) if numbers else None


def natural_sorted(paths: Sequence[str | os.PathLike]) -> list:
    """``paths`` in the natural order of their file names: numbers by value, so
    ``plane_2`` comes before ``plane_10`` (a shell's ``plane_*.jpg`` gives plane_1,
    plane_10, plane_2, ...), and signed z offsets such as ``tile_-0.45.tif``, ``tile_0.tif``
    and ``tile_7.97.tif`` in the order of z.

    >>> from napari_mfif.io import natural_sorted
    >>> natural_sorted(["plane_10.jpg", "plane_2.jpg", "plane_1.jpg"])
    ['plane_1.jpg', 'plane_2.jpg', 'plane_10.jpg']
    >>> natural_sorted(["z_7.9.tif", "z_-0.45.tif", "z_0.tif", "z_-19.9.tif"])
    ['z_-19.9.tif', 'z_-0.45.tif', 'z_0.tif', 'z_7.9.tif']
    """
    return sorted(paths, key=natural_key)


@_quiet
def read_stack(paths: str | os.PathLike | Sequence[str | os.PathLike], *,
               same_shape: bool = True) -> np.ndarray | list[np.ndarray]:
    """Read a focal stack: one multi-page TIFF (slices along the first axis, optional RGB
    last), or two or more image files taken as slices in the given order.

    Returns a checked (Z, Y, X) or (Z, Y, X, C) array. With ``same_shape=False``, files of
    different sizes are accepted and returned as a list of slices (to be brought to a
    common frame, see :func:`napari_mfif.align.common_frame`).
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    paths = [Path(p) for p in paths]
    if not paths:
        raise MfifError("no input given: name one multi-page TIFF or two or more image files")
    if len(paths) == 1:
        array = read_image(paths[0])
        if array.ndim == 2 or (array.ndim == 3 and array.shape[-1] in (3, 4) and
                               not is_tiff(paths[0])):
            raise MfifError(
                f"{paths[0]} holds a single image; give one multi-page TIFF (a z-stack) or "
                "two or more image files as slices"
            )
        return as_stack(array)
    slices = []
    for i, p in enumerate(paths):
        a = read_image(p)
        if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[-1] not in (1, 3, 4)):
            raise MfifError(
                f"{p} has shape {a.shape}; when several files are given each must hold one "
                "2-D or RGB image"
            )
        if same_shape and slices and a.shape != slices[0].shape:
            raise MfifError(
                f"{p} has shape {tuple(a.shape)} but {paths[0]} has {tuple(slices[0].shape)}; "
                "all slices must have the same shape (or align them, which brings them to a "
                "common frame)"
            )
        if slices and a.dtype != slices[0].dtype:
            raise MfifError(
                f"{p} has dtype {a.dtype} but {paths[0]} has {slices[0].dtype}; all slices "
                "must have the same dtype"
            )
        slices.append(a)
    if len({a.shape for a in slices}) > 1:
        return slices
    return as_stack(slices)


# -- physical pixel size ---------------------------------------------------------------------

#: the unit :func:`read_physical_scale` reports lengths in (pint and napari read it)
MICROMETRE = "µm"

#: micrometres per unit, for the length units ImageJ, OME-XML, pint and people write
_MICROMETRES = {
    "pm": 1e-6, "picometer": 1e-6, "picometre": 1e-6,
    "å": 1e-4, "angstrom": 1e-4,
    "nm": 1e-3, "nanometer": 1e-3, "nanometre": 1e-3,
    "µm": 1.0, "μm": 1.0, "um": 1.0, "micron": 1.0, "microns": 1.0,
    "micrometer": 1.0, "micrometre": 1.0,
    "mm": 1e3, "millimeter": 1e3, "millimetre": 1e3,
    "cm": 1e4, "centimeter": 1e4, "centimetre": 1e4,
    "m": 1e6, "meter": 1e6, "metre": 1e6,
    "in": 25400.0, "inch": 25400.0, "inches": 25400.0,
}
#: TIFF ResolutionUnit -> micrometres per unit (1, "none", has no absolute unit)
_RESOLUTION_UNITS = {2: 25400.0, 3: 1e4, 4: 1e3, 5: 1.0}
#: Resolutions of at most this many pixels per inch are the print or screen settings that
#: cameras and image editors write (72, 96, 300 dpi, ...), not a pixel size.
_MAX_PLACEHOLDER_DPI = 1200.0


class PhysicalScale(NamedTuple):
    """The pixel size of an image file along each axis of its array.

    Attributes
    ----------
    scale : tuple of float
        One entry per axis of the array :func:`read_image` returns, a trailing RGB(A) axis
        left out (the axes napari's ``scale`` takes): micrometres where the file names a
        unit of length, the file's own numbers where it gives a size without a unit, and
        1.0 where it gives none.
    units : tuple of str or None
        ``"µm"`` or ``"pixel"`` for each entry of ``scale``; None when no axis has a unit.
    """

    scale: tuple[float, ...]
    units: tuple[str, ...] | None


class _TiffInfo(NamedTuple):
    axes: str  # tifffile's letters for the axes of read_image's array
    rgb: bool
    physical: PhysicalScale


def _micrometres_per(unit) -> float | None:
    """Micrometres in one ``unit`` (a name such as "nm", "micron", "µm", or a pint unit);
    None if it is not a unit of length."""
    if unit is None:
        return None
    name = str(unit).strip().replace("\\u00B5", "µ").replace("\\u00b5", "µ").lower()
    return _MICROMETRES.get(name)


@_quiet
def read_physical_scale(path: str | os.PathLike) -> PhysicalScale:
    """The physical pixel size stored in an image file, per axis of its array.

    For TIFF it is taken, axis by axis, from the first of: ImageJ metadata (resolution tags
    in ``unit`` for x and y, ``spacing`` for z), OME-XML (``PhysicalSizeX/Y/Z`` and their
    units), and the plain resolution tags with a ResolutionUnit of centimetre or inch.
    Lengths are converted to micrometres. A resolution of 1200 pixels per inch or less is
    taken for the print setting image editors write, not a pixel size, and ignored. Other
    formats carry no pixel size here: their scale is all ones.

    Parameters
    ----------
    path : str or path-like
        The image file.

    Returns
    -------
    PhysicalScale
        ``(scale, units)``: one entry per axis of ``read_image(path)`` except a trailing
        RGB(A) axis; unknown axes get 1.0.
    """
    path = Path(path)
    _open_check(path)
    if not is_tiff(path):
        return PhysicalScale((1.0, 1.0), None)  # read_image gives (Y, X) or (Y, X, RGB)
    return _tiff_info(path).physical


@_quiet
def _tiff_info(path: Path) -> _TiffInfo:
    import tifffile

    try:
        with _open_tiff(path) as tif:
            series = _first_series(path, tif)
            axes, shape = series.axes, tuple(series.shape)
            rgb = (series.keyframe.photometric == tifffile.PHOTOMETRIC.RGB
                   and axes.endswith("S") and shape[-1] in (3, 4))
            sizes = _tiff_pixel_sizes(tif)
    except MfifError:
        raise
    except Exception as exc:  # tifffile raises many types for damaged files
        raise MfifError(f"cannot read TIFF file {path}: {_first_line(exc)}") from None
    scale, units = [], []
    for axis in axes[:-1] if rgb else axes:
        size, micrometres = sizes.get(axis, (1.0, None))
        scale.append(float(f"{size * (micrometres or 1.0):.10g}"))  # drops rational noise
        units.append("pixel" if micrometres is None else MICROMETRE)
    physical = PhysicalScale(tuple(scale), tuple(units) if MICROMETRE in units else None)
    return _TiffInfo(axes, bool(rgb), physical)


def _tiff_pixel_sizes(tif) -> dict[str, tuple[float, float | None]]:
    """Pixel size per axis letter ("X", "Y", "Z") as (size, micrometres per unit of size),
    the second None when the file gives the size without a unit of length."""
    page = tif.pages[0]
    tag_unit = int(page.tags.valueof("ResolutionUnit", 2))  # TIFF's default is inch
    tag_micrometres = _RESOLUTION_UNITS.get(tag_unit)
    resolution = {"X": _pixel_size_from_tag(page, "XResolution"),
                  "Y": _pixel_size_from_tag(page, "YResolution")}
    if tag_unit == 2:  # print settings are not pixel sizes (see _MAX_PLACEHOLDER_DPI)
        in_tag_unit = {axis: None if size is None or 1.0 / size <= _MAX_PLACEHOLDER_DPI
                       else size for axis, size in resolution.items()}
    else:
        in_tag_unit = resolution
    sizes: dict[str, tuple[float, float | None]] = {}

    if tif.is_imagej:  # ImageJ: ResolutionUnit none, unit (yunit, zunit) in the description
        imagej = tif.imagej_metadata or {}
        unit = imagej.get("unit")
        for axis, key in (("X", "unit"), ("Y", "yunit")):
            name = imagej.get(key, unit)
            if name is not None and resolution[axis] is not None:
                sizes[axis] = (resolution[axis], _micrometres_per(name))
            elif name is None and in_tag_unit[axis] is not None:  # as ImageJ: the tag's unit
                sizes[axis] = (in_tag_unit[axis], tag_micrometres)
        spacing = _positive(imagej.get("spacing"))
        if spacing is not None:
            sizes["Z"] = (spacing, _micrometres_per(imagej.get("zunit", unit)))

    pixels = _ome_pixels(tif) if tif.is_ome else {}
    for axis in "XYZ":
        size = _positive(pixels.get(f"PhysicalSize{axis}"))
        if axis not in sizes and size is not None:
            unit = pixels.get(f"PhysicalSize{axis}Unit", "µm")  # the OME schema's default
            sizes[axis] = (size, _micrometres_per(unit))

    if tag_micrometres is not None:
        for axis in "XY":
            if axis not in sizes and in_tag_unit[axis] is not None:
                sizes[axis] = (in_tag_unit[axis], tag_micrometres)
    return sizes


def _pixel_size_from_tag(page, name: str) -> float | None:
    """Units per pixel from a resolution tag (which holds pixels per unit), or None."""
    value = page.tags.valueof(name)
    try:
        numerator, denominator = value
        return _positive(denominator / numerator)
    except (TypeError, ValueError, ZeroDivisionError):
        return _positive(1.0 / value) if isinstance(value, (int, float)) and value else None


def _positive(value) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if np.isfinite(value) and value > 0 else None


def _ome_pixels(tif) -> dict[str, str]:
    """The attributes of the first image's Pixels element in a TIFF's OME-XML."""
    from xml.etree import ElementTree

    try:
        root = ElementTree.fromstring(tif.ome_metadata or "")
    except ElementTree.ParseError:
        return {}
    for element in root.iter():
        if element.tag.rsplit("}", 1)[-1] == "Pixels":
            return dict(element.attrib)
    return {}


# -- lazy reading ----------------------------------------------------------------------------

class _TiffLayout(NamedTuple):
    """Where a TIFF's first series lies in the file, as :func:`read_lazy` reads it."""

    shape: tuple[int, ...]
    dtype: np.dtype
    page_shape: tuple[int, ...]
    locations: list  # (file, offset of the page's IFD) per page
    block: int | None  # the series' data offset when it is one contiguous block
    stored: np.dtype  # dtype with the file's byte order
    one_page_per_chunk: bool
    pages_fit: bool
    n_pages: int


def _tiff_layout(path: Path) -> _TiffLayout:
    """The shape, dtype and page layout of a TIFF's first series from its tags alone, with
    the checks of :func:`read_lazy` (which builds its dask array from this; the command
    line calls it to learn a stack's size without importing dask)."""
    path = Path(path)
    _open_check(path)
    if not is_tiff(path):
        raise MfifError(f"cannot read {path} lazily: it is not a TIFF file (use read_image)")
    try:
        with _open_tiff(path) as tif:
            series = _first_series(path, tif)
            shape, dtype = tuple(series.shape), np.dtype(series.dtype)
            page_shape = tuple(series.keyframe.shape)
            pages = list(series)
            locations = []  # (file, offset of the page's IFD)
            for page in pages:
                if page is None:
                    break
                locations.append((os.fspath(page.parent.filehandle.path), page.offset))
            n_pages, rest = divmod(math.prod(shape), max(math.prod(page_shape), 1))
            pages_fit = not rest and shape[len(shape) - len(page_shape):] == page_shape
            plain = getattr(series, "transform", None) is None
            one_page_per_chunk = (pages_fit and plain and len(locations) == len(pages) == n_pages
                                  and not getattr(series, "is_truncated", False))
            block = None if one_page_per_chunk or not plain else series.dataoffset
            stored = dtype.newbyteorder(tif.byteorder)
            chunked = one_page_per_chunk or (block is not None and pages_fit)
            _check_tiff_series(path, series, page_shape if chunked else None, pages)
    except MfifError:
        raise
    except Exception as exc:  # tifffile raises many types for damaged files
        raise MfifError(f"cannot read TIFF file {path}: {_first_line(exc)}") from None
    if not math.prod(shape):
        raise MfifError(f"cannot read TIFF file {path}: it holds no image data")
    if (not one_page_per_chunk and block is not None
            and block + math.prod(shape) * dtype.itemsize > path.stat().st_size):
        raise _truncated(path, "the image data")
    return _TiffLayout(shape, dtype, page_shape, locations, block, stored, one_page_per_chunk,
                       pages_fit, n_pages)


@_quiet
def read_lazy(path: str | os.PathLike):
    """A TIFF file's image as a dask array that reads its pages on demand.

    The array is that of :func:`read_image` (the first series, length-1 axes dropped), one
    chunk per TIFF page: building it reads only the file's tags, and computing a slice
    decodes only the pages it covers. A series stored as one contiguous block described by
    its first page (an ImageJ hyperstack over 4 GB, for instance) is read by byte offset,
    one page-sized chunk at a time; any other layout becomes a single chunk. Damage that
    shows without decoding (a truncated file, a looping chain of image directories, missing
    strips, a header declaring more than the file holds, a compression that needs the
    ``imagecodecs`` package) is reported here, not when a slice is first shown, and so is a
    chunk too large for the memory available.

    Parameters
    ----------
    path : str or path-like
        A TIFF or BigTIFF file.

    Returns
    -------
    dask.array.Array
    """
    import dask
    import dask.array as da

    path = Path(path)
    (shape, dtype, page_shape, locations, block, stored, one_page_per_chunk, pages_fit,
     n_pages) = _tiff_layout(path)
    if one_page_per_chunk:
        read = dask.delayed(_read_tiff_page)
        tasks = [read(file, offset, page_shape) for file, offset in locations]
    elif block is not None:
        read = dask.delayed(_read_tiff_bytes)
        page_bytes = math.prod(page_shape) * dtype.itemsize
        if pages_fit:
            tasks = [read(os.fspath(path), block + i * page_bytes, page_shape, stored.str)
                     for i in range(n_pages)]
        else:
            page_shape, tasks = shape, [read(os.fspath(path), block, shape, stored.str)]
    else:
        page_shape, tasks = shape, [dask.delayed(_read_tiff_series)(os.fspath(path), shape)]
    chunks = [da.from_delayed(task, shape=page_shape, dtype=dtype) for task in tasks]
    if len(chunks) == 1:
        return chunks[0].reshape(shape)
    return da.stack(chunks).reshape(shape)


@_quiet
def _read_tiff_page(file: str, offset: int, shape: tuple[int, ...]) -> np.ndarray:
    """Decode the TIFF page whose IFD starts at ``offset`` in ``file``: one chunk of
    :func:`read_lazy`."""
    import tifffile

    try:
        with tifffile.TiffFile(file) as tif:
            tif.filehandle.seek(offset)
            page = tifffile.TiffPage(tif, index=0)
            if math.prod(page.shape) != math.prod(shape):  # not decoded: it may be huge
                raise MfifError(f"cannot read TIFF file {file}: its page at byte {offset} has "
                                f"shape {page.shape}, not {shape} as the first page")
            data = page.asarray()
        return data.reshape(shape)
    except MfifError:
        raise
    except Exception as exc:
        raise MfifError(
            f"cannot read the page at byte {offset} of TIFF file {file}: {_first_line(exc)}"
        ) from None


def _read_tiff_bytes(file: str, offset: int, shape: tuple[int, ...], stored: str) -> np.ndarray:
    """Read uncompressed image data of dtype ``stored`` (with its byte order) at ``offset``:
    one chunk of :func:`read_lazy` for a contiguous series."""
    count = math.prod(shape)
    data = np.fromfile(file, dtype=stored, count=count, offset=offset)
    if data.size != count:
        raise MfifError(f"cannot read TIFF file {file}: it ends inside the image data")
    return data.astype(np.dtype(stored).newbyteorder("="), copy=False).reshape(shape)


def _read_tiff_series(file: str, shape: tuple[int, ...]) -> np.ndarray:
    """Read a TIFF file's first series at once: the single chunk of :func:`read_lazy` when
    its pages do not map one to one onto chunks."""
    array = read_image(file)
    if array.size != math.prod(shape):  # a damaged file that tifffile reads two ways
        raise MfifError(f"cannot read TIFF file {file}: it is damaged (its pages hold "
                        f"{array.size} values, not the {math.prod(shape)} its header declares)")
    return array.reshape(shape)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def check_compression(compression: int, name: str) -> None:
    """Refuse, in one sentence naming ``name`` (e.g. "TIFF file x.tif"), a TIFF compression
    tifffile cannot decode here (LZW, JPEG, ... without the imagecodecs package)."""
    import tifffile

    if compression == 1:
        return
    try:
        tifffile.TIFF.DECOMPRESSORS[compression]
    except KeyError as exc:
        try:
            codec = f"{tifffile.COMPRESSION(compression).name} compression"
        except ValueError:
            codec = f"compression code {compression}"
        if "imagecodecs" in str(exc):
            raise MfifError(f"cannot read {name}: its {codec} needs the imagecodecs "
                            "package (pip install imagecodecs)") from None
        raise MfifError(f"cannot read {name}: its {codec} is not one tifffile reads") from None


def _check_tiff_series(path: Path, series, chunk_shape: tuple[int, ...] | None = None,
                       pages: list | None = None) -> None:
    """Refuse, before any pixel is decoded, a TIFF series whose compression cannot be
    decoded, whose header declares more image data than the file can hold (see
    ``_MAX_COMPRESSION_RATIO``), or whose ``chunk_shape`` (all of it by default) would not
    fit in the memory available: a damaged header must not make us allocate gigabytes.

    ``pages`` are the series' pages where the caller has them; without them, a series that
    tifffile reads as one block is checked without loading its pages."""
    keyframe = series.keyframe
    compression = int(keyframe.compression)
    check_compression(compression, f"TIFF file {path}")
    shape = tuple(int(n) for n in series.shape)
    stored = -(-math.prod(shape) * int(keyframe.bitspersample) // 8)
    block = series.dataoffset if pages is None else None
    if block is not None:  # uncompressed, in one block: tifffile reads it at once
        room = keyframe.parent.filehandle.size
        if block + stored > room:  # not read: Python would allocate what is declared
            raise _truncated(path, "the image data")
    else:
        segments = math.prod(keyframe.chunked)  # strips or tiles per page
        files = {}
        for index, page in enumerate(series if pages is None else pages):
            if page is None:
                continue
            size = files.setdefault(id(page.parent), page.parent.filehandle.size)
            ends = [o + n for o, n in zip(page.dataoffsets, page.databytecounts) if n]
            if ends and max(ends) > size:  # as above
                raise _truncated(path, f"the data of page {index}")
            if len(page.dataoffsets) < segments:  # tifffile would go through all it declares
                raise MfifError(f"cannot read TIFF file {path}: it is damaged (page {index} "
                                f"lists {len(page.dataoffsets)} of the {segments} strips or "
                                "tiles its size needs)")
        room = sum(files.values()) or path.stat().st_size
    if stored > room * _MAX_COMPRESSION_RATIO.get(compression, _MAX_RATIO_OTHER):
        raise MfifError(
            f"cannot read TIFF file {path}: it is damaged or truncated (its header declares "
            f"{_byte_size(stored)} of image data, more than its {_byte_size(room)} can hold)"
        )
    from ._memory import available_bytes

    needed = math.prod(chunk_shape or shape) * np.dtype(series.dtype).itemsize
    available = available_bytes()
    if available is not None and needed > available:
        raise MfifError(
            f"cannot read TIFF file {path}: its image needs {_byte_size(needed)} of memory "
            f"and only {_byte_size(available)} is available"
        )


def _truncated(path: Path, what: str) -> MfifError:
    return MfifError(f"cannot read TIFF file {path}: it is truncated ({what} runs past the "
                     "end of the file)")


def _byte_size(n: int) -> str:
    """``n`` bytes for people: "512 bytes", "3.6 MB", "68.7 GB"."""
    for unit, factor in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= factor:
            return f"{n / factor:.3g} {unit}"
    return f"{n} bytes"


#: the dtypes each output format holds (TIFF: any)
_FORMAT_DTYPES = {"PNG": (np.dtype(np.uint8), np.dtype(np.uint16)), "JPEG": (np.dtype(np.uint8),)}


def output_format(path: str | os.PathLike) -> str:
    """The format an output path asks for, from its extension."""
    suffix = Path(path).suffix.lower()
    if suffix == ".zarr":
        return "OME-Zarr"
    try:
        return _FORMATS[suffix]
    except KeyError:
        raise MfifError(
            f"cannot write {Path(path).name}: unsupported output extension "
            f"{suffix or '(none)'!r}; use .tif/.tiff (any dtype), .ome.zarr (any dtype), .png "
            "(8 or 16-bit) or .jpg (8-bit)"
        ) from None


def check_output(path: str | os.PathLike, *, overwrite: bool = False,
                 dtype: np.dtype | None = None) -> Path:
    """Check before any work that ``path`` can be written; return it as a Path."""
    path = Path(path)
    fmt = output_format(path)
    if fmt == "OME-Zarr":
        from .ngff import check_output as check_zarr

        return check_zarr(path, overwrite=overwrite)
    if dtype is not None and np.dtype(dtype) not in _FORMAT_DTYPES.get(fmt, (np.dtype(dtype),)):
        holds = "8-bit and 16-bit" if fmt == "PNG" else "8-bit"
        raise MfifError(
            f"{fmt} holds {holds} images only and this result is {np.dtype(dtype)}; write a "
            ".tif instead (no rescaling is done)"
        )
    check_output_folder(path)
    if path.is_dir():
        raise MfifError(f"output path is a directory: {path}")
    if path.exists() and not overwrite:
        raise MfifError(f"output file exists: {path} (use --overwrite to replace it)")
    return path


def check_output_folder(path: Path) -> None:
    """Refuse an output whose folder does not exist or cannot be written, in one sentence."""
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise MfifError(f"output directory does not exist: {parent}")
    if not os.access(parent, os.W_OK):
        raise MfifError(f"output directory is not writable: {parent}")


def write_image(path: str | os.PathLike, image: np.ndarray, *, overwrite: bool = False,
                metadata: dict | None = None, scale: Sequence[float] | None = None,
                unit: str | Sequence[str | None] | None = None, stack: bool = False) -> Path:
    """Write ``image`` atomically to ``path`` in the format its extension names.

    TIFF keeps any dtype; PNG takes uint8 and uint16, JPEG uint8 only (at quality 95). A (Y, X, 3|4)
    array is written as RGB(A). No rescaling is done. An existing file is kept unless
    ``overwrite=True``; on any failure no file is left behind.

    A TIFF holds a stack as one page per slice: a (Z, Y, X, C) array as Z pages of C
    interleaved channels (as OME-TIFF has them), which :func:`read_image` returns with the
    same shape. A 3-D array whose last axis is at most 16 long is ambiguous: it is written
    as one (Y, X, C) image unless ``stack=True``.

    Parameters
    ----------
    path : str or path-like
        The output file; its extension names the format.
    image : ndarray
        (Y, X), (Y, X, C) or (Y, X, 3|4) RGB(A), (Z, Y, X) or (Z, Y, X, C|3|4).
    overwrite : bool
        Replace an existing file.
    metadata : dict, optional
        Passed to tifffile (TIFF only).
    scale : sequence of float, optional
        TIFF only: the pixel size along (y, x) of an image or (z, y, x) of a stack (a
        colour or channel axis has none), stored where :func:`read_physical_scale`, Fiji
        and OME readers find it: as ImageJ metadata (resolution tags, ``spacing``,
        ``unit``) for grey uint8, uint16 and float32 and RGB uint8, as OME-XML
        (``PhysicalSizeX/Y/Z``, plus resolution tags in centimetres) for other dtypes and
        for every ``.ome.tif`` / ``.ome.tiff`` name (which is always written as OME-TIFF).
        The pages are laid out as without it.
    unit : str or sequence of str, optional
        The unit of ``scale``, one for all axes or one per entry: a length such as "µm",
        "micron", "nm" or "mm" (stored in micrometres), or None or "pixel" for a size
        without a unit.
    stack : bool
        True if ``image`` is a stack, (Z, Y, X) or (Z, Y, X, C|3|4): its first axis is then
        written as slices, one page each, however short its last axis is. Callers that know
        they write a stack should say so; with False a 3-D array whose last axis is at most
        16 long is taken for one image with that many channels.
    """
    image = np.asarray(image)
    path = check_output(path, overwrite=overwrite, dtype=image.dtype)
    fmt = output_format(path)
    if stack and image.ndim not in (3, 4):
        raise MfifError(f"a stack is (Z, Y, X) or (Z, Y, X, C), not shape {image.shape}")
    if fmt == "OME-Zarr":
        return _write_zarr(path, image, overwrite, scale, unit, stack)
    pixel_size = None
    if scale is not None:
        if fmt != "TIFF":
            raise MfifError(f"{fmt} files carry no pixel size here; write a .tif to keep it")
        pixel_size = _tiff_pixel_size(image, scale, unit, metadata, stack,
                                      ome=is_ome_name(path))
    elif fmt == "TIFF" and is_ome_name(path):  # OME-XML naming the axes, as the name promises
        _, axes = tiff_layout(image, stack=stack)
        if axes:
            pixel_size = {"ome": True, "metadata": dict(metadata or {}, axes=axes)}
    write_atomically(path, lambda tmp: _encode(tmp, image, fmt, metadata, pixel_size, stack),
                     overwrite=overwrite)
    return path


def _write_zarr(path: Path, image: np.ndarray, overwrite: bool, scale, unit,
                stack: bool) -> Path:
    """write_image for an OME-Zarr name: a (Y, X), (Y, X, C|3|4) image with its (y, x) pixel
    size in micrometres (see napari_mfif.ngff)."""
    from .ngff import write_ome_zarr

    image, stack = _drop_single_channel(image, stack)
    if stack or image.ndim not in (2, 3):
        raise MfifError(f"an OME-Zarr output here holds one (Y, X) or (Y, X, C) image, not "
                        f"shape {image.shape}")
    pixel = None
    if scale is not None:
        sizes = [float(v) for v in np.ravel(scale)][-2:]
        units = [unit] * 2 if unit is None or isinstance(unit, str) else list(unit)[-2:]
        factors = [_micrometres_per(u) for u in units]
        if None not in factors and len(sizes) == 2:
            pixel = (sizes[0] * factors[0], sizes[1] * factors[1])
    return write_ome_zarr(path, image, "YX" if image.ndim == 2 else "YXS", pixel_size=pixel,
                          overwrite=overwrite, name=path.name)


def write_atomically(path: Path, write, *, overwrite: bool = False) -> None:
    """Write a file by ``write(tmp)`` into a temporary file beside ``path``, put its bytes on
    disk and only then give it its name: a crash or Ctrl-C leaves no partial file, and an
    existing ``path`` is kept unless ``overwrite`` (checked again at the last moment)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        os.close(fd)
        write(tmp)
        with open(tmp, "rb+") as f:  # the bytes are on disk before the file gets its name
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files; outputs are ordinary files
        _move_into_place(tmp, path, overwrite)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _drop_single_channel(image: np.ndarray, stack: bool = False) -> tuple[np.ndarray, bool]:
    """``image`` without a trailing length-1 channel axis, and whether it is a stack (a
    (Z, Y, X, 1) array is one, and stays one as (Z, Y, X))."""
    if image.ndim == 4 and image.shape[-1] == 1:
        return image[..., 0], True
    if image.ndim == 3 and image.shape[-1] == 1 and not stack:
        return image[..., 0], False
    return image, stack


def tiff_layout(image: np.ndarray, *, stack: bool = False) -> tuple[dict, str]:
    """How :func:`write_image` lays out ``image`` in a TIFF file.

    Parameters
    ----------
    image : ndarray
        The array to write.
    stack : bool
        True if the first axis of a 3-D ``image`` is Z (see :func:`write_image`).

    Returns
    -------
    layout : dict
        The tifffile keywords (photometric, planarconfig).
    axes : str
        The meaning of the written axes: "YX", "YXS" (RGB or channels last, one page),
        "ZYX" (one page per slice), "ZYXS" (one RGB or multichannel page per slice), or ""
        for other shapes, whose axes have no fixed meaning. A trailing length-1 channel
        axis is written as grey and has no letter.
    """
    image, stack = _drop_single_channel(image, stack)
    channels = image.shape[-1] if image.ndim else 0
    if image.ndim == 2:
        return {"photometric": "minisblack"}, "YX"
    if image.ndim == 3 and not stack and channels in (3, 4):
        return {"photometric": "rgb", "planarconfig": "contig"}, "YXS"
    if image.ndim == 3 and not stack and channels <= MAX_CHANNELS:  # (Y, X, C): one page
        return {"photometric": "minisblack", "planarconfig": "contig"}, "YXS"
    if image.ndim == 3:  # (Z, Y, X): a stack, one page per slice
        return {"photometric": "minisblack"}, "ZYX"
    if image.ndim == 4 and channels in (3, 4):
        return {"photometric": "rgb", "planarconfig": "contig"}, "ZYXS"
    if image.ndim == 4 and channels <= MAX_CHANNELS:  # (Z, Y, X, C): a page per slice
        return {"photometric": "minisblack", "planarconfig": "contig"}, "ZYXS"
    return {"photometric": "minisblack"}, ""


def is_ome_name(path: str | os.PathLike) -> bool:
    """True for a name that promises an OME-TIFF (``.ome.tif`` / ``.ome.tiff``)."""
    return Path(path).name.lower().endswith((".ome.tif", ".ome.tiff"))


def _tiff_pixel_size(image: np.ndarray, scale, unit, metadata: dict | None,
                     stack: bool = False, ome: bool = False) -> dict:
    """The tifffile keywords that store ``scale`` (see :func:`write_image`)."""
    layout, axes = tiff_layout(image, stack=stack)
    image, _ = _drop_single_channel(image, stack)
    spatial = axes.replace("S", "")
    if not spatial:
        raise MfifError(
            f"a pixel size can be stored for a 2-D image or a (Z, Y, X) stack, grey or RGB, "
            f"not for shape {image.shape}"
        )
    given = list(np.ravel(np.asarray(scale, dtype=object)))
    sizes = [_positive(s) for s in given]
    if len(sizes) != len(spatial) or None in sizes:
        raise MfifError(
            f"scale must hold {len(spatial)} positive pixel sizes ({', '.join(spatial.lower())})"
            f" for an image of shape {image.shape}, got {tuple(given)}"
        )
    units = [unit] * len(spatial) if unit is None or isinstance(unit, str) else list(unit)
    if len(units) != len(spatial):
        raise MfifError(f"unit must be one unit or {len(spatial)} units, one per entry of scale")
    micrometres = []
    for u in units:
        factor = _micrometres_per(u)
        if factor is None and u is not None and str(u).strip().lower() != "pixel":
            raise MfifError(f"unknown unit of length {str(u)!r}; use e.g. 'µm', 'nm' or 'mm'")
        micrometres.append(factor)
    # axis letter -> (size, True if in micrometres)
    size = {a: (s * m if m else s, m is not None) for a, s, m in zip(spatial, sizes, micrometres)}

    extra = dict(metadata or {}, axes=axes)
    rgb = layout["photometric"] == "rgb"
    imagej = not ome and (
        image.nbytes < 2**32 - 2**25  # ImageJ hyperstacks are not BigTIFF
        and ((not axes.endswith("S") and image.dtype in (np.uint8, np.uint16, np.float32))
             or (rgb and image.dtype == np.uint8 and image.shape[-1] == 3))
    )
    if imagej:
        # ImageJ: ResolutionUnit none, pixels per `unit` in the resolution tags; z spacing
        # and per-axis units (yunit, zunit) in the description.
        def name(axis):
            return "micron" if size[axis][1] else None

        if name("X"):
            extra["unit"] = name("X")
        for axis, key in (("Y", "yunit"), ("Z", "zunit")):
            if axis in size and name(axis) != name("X"):
                extra[key] = name(axis) or "pixel"
        if "Z" in size:
            extra["spacing"] = size["Z"][0]
        return {"imagej": True, "metadata": extra,
                "resolution": (1.0 / size["X"][0], 1.0 / size["Y"][0])}
    import tifffile

    for axis, (value, in_micrometres) in size.items():
        extra[f"PhysicalSize{axis}"] = value
        extra[f"PhysicalSize{axis}Unit"] = MICROMETRE if in_micrometres else "pixel"
    kwargs = {"ome": True, "metadata": extra}
    if size["X"][1] and size["Y"][1]:  # also for readers of plain TIFF tags
        kwargs.update(resolution=(1e4 / size["X"][0], 1e4 / size["Y"][0]),
                      resolutionunit=tifffile.RESUNIT.CENTIMETER)
    return kwargs


def _encode(target: str, image: np.ndarray, fmt: str, metadata: dict | None,
            pixel_size: dict | None = None, stack: bool = False) -> None:
    if fmt == "TIFF":
        import tifffile

        # Say how the axes are laid out: left alone, tifffile guesses from the shape and
        # stores e.g. a (3, Y, X) stack as one planar RGB image.
        layout, axes = tiff_layout(image, stack=stack)
        image, _ = _drop_single_channel(image, stack)
        if pixel_size is None:  # tifffile's description names the axes for readers
            pixel_size = {"metadata": dict({"axes": axes} if axes else {}, **(metadata or {}))}
        tifffile.imwrite(target, image, **layout, **pixel_size)
        return
    image, _ = _drop_single_channel(image)
    rgb = image.ndim == 3 and image.shape[-1] in (3, 4)
    from PIL import Image

    if image.ndim not in (2, 3) or (image.ndim == 3 and not rgb):
        raise MfifError(f"{fmt} takes gray or RGB(A) images, not shape {image.shape}")
    if fmt == "JPEG" and rgb and image.shape[-1] == 4:
        raise MfifError("JPEG has no alpha channel; write a .png or .tif instead")
    if image.dtype not in _FORMAT_DTYPES[fmt]:
        raise MfifError(f"{fmt} does not hold {image.dtype} images; write a .tif instead (no "
                        "rescaling is done)")
    if image.dtype == np.uint16:  # Pillow writes 16-bit grey PNG only; imagecodecs all kinds
        import imagecodecs

        with open(target, "wb") as f:
            f.write(imagecodecs.png_encode(np.ascontiguousarray(image)))
        return
    kwargs = {"quality": 95} if fmt == "JPEG" else {}
    Image.fromarray(image).save(target, format=fmt, **kwargs)


def _move_into_place(tmp: str, path: Path, overwrite: bool) -> None:
    if overwrite:
        os.replace(tmp, path)
        return
    try:
        os.link(tmp, path)  # atomic, and fails if something appeared at path meanwhile
    except FileExistsError:
        raise MfifError(f"output file exists: {path} (use --overwrite to replace it)") from None
    except OSError:  # file systems without hard links
        if path.exists():
            raise MfifError(f"output file exists: {path} (use --overwrite to replace it)") from None
        os.replace(tmp, path)
        return
    os.unlink(tmp)


def write_ome_tiff(path: str | os.PathLike, image: np.ndarray, axes: str, *,
                   pixel_size: tuple[float, float] | None = None,
                   description: str | None = None, overwrite: bool = False) -> Path:
    """Write ``image`` atomically as an OME-TIFF whose OME-XML names its ``axes`` (letters
    from T, C, Y, X and a trailing S for RGB samples), its (y, x) ``pixel_size`` in
    micrometres where known (also as resolution tags in centimetres, for plain TIFF
    readers), and ``description`` (e.g. the z values a height map was made from)."""
    import tifffile

    image = np.asarray(image)
    path = check_output(path, overwrite=overwrite)
    if output_format(path) != "TIFF" or len(axes) != image.ndim:
        raise MfifError(f"an OME-TIFF needs a .tif name and one axis letter per axis, got "
                        f"{Path(path).name!r} and {axes!r} for shape {image.shape}")
    metadata: dict = {"axes": axes}
    kwargs: dict = {"photometric": "rgb" if axes.endswith("S") else "minisblack"}
    if pixel_size is not None:
        y, x = (float(v) for v in pixel_size)
        metadata.update(PhysicalSizeY=y, PhysicalSizeYUnit=MICROMETRE,
                        PhysicalSizeX=x, PhysicalSizeXUnit=MICROMETRE)
        kwargs.update(resolution=(1e4 / x, 1e4 / y), resolutionunit=tifffile.RESUNIT.CENTIMETER)
    if description:
        metadata["Description"] = description

    def encode(tmp):
        tifffile.imwrite(tmp, image, ome=True, metadata=metadata, **kwargs)

    write_atomically(path, encode, overwrite=overwrite)
    return path
