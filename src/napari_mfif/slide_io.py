"""Whole-slide focal stacks on disk: reading regions of slices, writing tiled results.

A whole-slide focal stack (8 to 30 slices of 16k x 16k pixels, several GiB) does not fit
in memory, and need not: fusion works tile by tile. This module is its input and output.

:class:`TiffStackSource` is a lazy view of a stack in TIFF files (one multi-page file or
one file per slice). :meth:`~TiffStackSource.read` returns a region of one slice and reads
only the bytes it needs: the rows of the region from an uncompressed page, the strips or
tiles that intersect it from a tiled, stripped or deflate-compressed one. The view holds
paths and offsets only, never an open file, so that it pickles to worker processes, and
it slices like a numpy array so that :func:`as_dask` can wrap it in a dask array.

:class:`TiledTiffWriter` writes one image band by band, top to bottom, to a tiled BigTIFF
(OME-TIFF, with the pixel size), optionally with a pyramid of 2x-downsampled levels as
SubIFDs, holding about one row of tiles in memory whatever the image size. As
:func:`napari_mfif.io.write_image` it writes a temporary file and moves it into place at
the end, and never replaces an existing file unless asked to.

Errors in the input (a damaged or truncated file, a format that cannot be read region by
region, a region outside the slice) raise :class:`~napari_mfif.MfifError` with a
one-sentence message, as in :mod:`napari_mfif.io`.
"""

from __future__ import annotations

import functools
import math
import os
import queue
import tempfile
import threading
from pathlib import Path
from typing import Iterator, NamedTuple, Sequence

import numpy as np

from ._errors import MfifError
from .io import (
    _first_line,
    check_compression,
    _first_series,
    _micrometres_per,
    _move_into_place,
    _open_check,
    _open_tiff,
    _positive,
    _quiet,
    _quiet_tifffile,
    _tiff_info,
    check_output,
    is_tiff,
    tiff_layout,
)

__all__ = ["TiffStackSource", "TiledTiffWriter", "as_dask", "downsample2", "write_tiled"]

#: the dtypes whole-slide stacks are read and written in
SUPPORTED_DTYPES = (np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.float32))

#: A compressed strip or tile may be a little larger than its pixels (incompressible data,
#: codec headers); a byte count beyond this many times the pixels (plus a margin) is damage
#: and is not read: it would allocate what the header declares.
_MAX_SEGMENT_GROWTH = 2
_SEGMENT_MARGIN = 1 << 16


def _dtype_name(dtype) -> str:
    return ", ".join(str(d) for d in dtype) if isinstance(dtype, tuple) else str(dtype)


def _check_dtype(dtype, what: str) -> np.dtype:
    dtype = np.dtype(dtype)
    if dtype.newbyteorder("=") not in SUPPORTED_DTYPES:
        raise MfifError(f"{what} has dtype {dtype}; whole-slide stacks are read and written as "
                        f"{_dtype_name(tuple(str(d) for d in SUPPORTED_DTYPES))} only")
    return dtype.newbyteorder("=")


def _stamp(path: str) -> tuple[int, int]:
    """What tells that a file changed: its modification time and size."""
    st = os.stat(path)
    return st.st_mtime_ns, st.st_size


# -- reading ---------------------------------------------------------------------------------

class _Layout(NamedTuple):
    """Where the pixels of one TIFF page are, as far as a region read needs to know."""

    height: int
    width: int
    samples: int  # interleaved samples per pixel (1 for grey)
    stored: np.dtype  # the pixel dtype with the file's byte order
    compression: int
    predictor: int
    segment: tuple[int, int]  # (rows, columns) of a tile, or (rows per strip, width)
    tiled: bool
    offsets: np.ndarray  # per strip or tile
    counts: np.ndarray
    decode: object  # tifffile's decode closure (or None where it cannot be made)

    @property
    def rowbytes(self) -> int:
        return self.width * self.samples * self.stored.itemsize

    @property
    def per_row(self) -> bool:
        """True if rows are read straight from the file (uncompressed strips)."""
        return not self.tiled and self.compression == 1 and self.predictor == 1


def _page_at(tif, ifd: int):
    """The TIFF page whose image directory starts at byte ``ifd`` of an open file."""
    import tifffile

    if ifd == tif.pages[0].offset:
        return tif.pages[0]
    tif.filehandle.seek(ifd)
    return tifffile.TiffPage(tif, index=0)


def _layout_of(page, path: str, what: str) -> _Layout:
    """The :class:`_Layout` of an open page, once it is known to be readable region by
    region (raises MfifError with a one-sentence reason otherwise)."""
    import tifffile

    name = f"TIFF file {path}"
    if page.dtype is None or np.dtype(page.dtype).newbyteorder("=") not in SUPPORTED_DTYPES:
        dtype = "an unsupported sample format" if page.dtype is None else page.dtype
        raise MfifError(f"{name} holds {dtype} pixels; whole-slide stacks are read as "
                        f"{_dtype_name(tuple(str(d) for d in SUPPORTED_DTYPES))} only")
    samples = int(page.samplesperpixel)
    if samples > 1 and page.planarconfig != 1:
        raise MfifError(f"{name} stores its {samples} colour samples in separate planes; "
                        "only interleaved samples (PlanarConfiguration 1) are read region by "
                        "region")
    if page.imagedepth != 1:
        raise MfifError(f"{name} holds volume tiles (ImageDepth {page.imagedepth}), which are "
                        "not read region by region")
    if int(page.bitspersample) != np.dtype(page.dtype).itemsize * 8 or page.fillorder != 1:
        raise MfifError(f"{name} packs its pixels in {page.bitspersample} bits; only 8, 16 "
                        "and 32-bit samples are read region by region")
    compression, predictor = int(page.compression), int(page.predictor)
    check_compression(compression, name)
    if predictor != 1:
        try:
            tifffile.TIFF.UNPREDICTORS[predictor]
        except KeyError as exc:
            need = " needs the imagecodecs package" if "imagecodecs" in str(exc) else \
                " is not one tifffile reads"
            raise MfifError(f"cannot read {name}: its predictor {predictor}{need}") from None
    height, width = int(page.imagelength), int(page.imagewidth)
    if not height or not width:
        raise MfifError(f"cannot read {name}: {what} holds no image data")
    tiled = bool(page.is_tiled)
    if tiled:
        segment = (int(page.tilelength), int(page.tilewidth))
        count = math.ceil(height / segment[0]) * math.ceil(width / segment[1])
    else:
        segment = (max(1, min(int(page.rowsperstrip or height), height)), width)
        count = math.ceil(height / segment[0])
    offsets = np.asarray(page.dataoffsets, dtype=np.int64)
    counts = np.asarray(page.databytecounts, dtype=np.int64)
    if len(offsets) < count or len(counts) < count:
        raise MfifError(f"cannot read {name}: it is damaged ({what} lists {len(offsets)} of "
                        f"the {count} {'tiles' if tiled else 'strips'} its size needs)")
    offsets, counts = offsets[:count], counts[:count]
    stored = np.dtype(page.dtype).newbyteorder(page.parent.byteorder)
    layout = _Layout(height, width, samples, stored, compression, predictor, segment, tiled,
                     offsets, counts, None)
    size = page.parent.filehandle.size
    used = counts > 0
    if np.any(offsets[used] < 0) or np.any(counts < 0) or (
            used.any() and int((offsets[used] + counts[used]).max()) > size):
        raise MfifError(f"cannot read {name}: it is truncated (the data of {what} runs past "
                        "the end of the file)")
    raw = segment[0] * segment[1] * samples * stored.itemsize
    if layout.per_row:  # every strip must hold its rows: they are read by offset
        rows = np.minimum(segment[0], height - np.arange(count) * segment[0])
        if np.any(counts < rows * layout.rowbytes):
            raise MfifError(f"cannot read {name}: it is damaged (a strip of {what} is shorter "
                            "than its rows)")
    elif used.any() and int(counts.max()) > raw * _MAX_SEGMENT_GROWTH + _SEGMENT_MARGIN:
        raise MfifError(f"cannot read {name}: it is damaged (a {'tile' if tiled else 'strip'} "
                        f"of {what} declares {int(counts.max())} bytes for {raw} bytes of "
                        "pixels)")
    if not layout.per_row:
        layout = layout._replace(decode=page.decode)
    return layout


@functools.lru_cache(maxsize=512)
@_quiet
def _cached_layout(path: str, ifd: int, stamp: tuple[int, int]) -> _Layout:
    """The layout of the page at byte ``ifd`` of ``path``, parsed once per process (and per
    version of the file, which ``stamp`` names). No file stays open."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            return _layout_of(_page_at(tif, ifd), path, f"the page at byte {ifd}")
    except MfifError:
        raise
    except Exception as exc:  # tifffile raises many types for damaged files
        raise MfifError(f"cannot read TIFF file {path}: {_first_line(exc)}") from None


class _Slice(NamedTuple):
    """Where one z slice is: a file, the image directory of its page and, for a series
    stored as one block behind its first page (ImageJ over 4 GB), the slice's data."""

    file: int  # index into TiffStackSource.paths
    ifd: int  # the page whose layout describes the slice
    data: int  # -1, or the byte where the slice's rows start one after the other


class TiffStackSource:
    """A focal stack in TIFF files, read region by region.

    Build it with :meth:`open`. It holds the paths, the byte offsets of the slices' image
    directories and the metadata, never an open file, so it pickles (to dask.distributed
    workers, for instance). Each :meth:`read` opens the file, reads what the region needs
    and closes it; the strip and tile tables of a page are parsed once per process.

    Attributes
    ----------
    paths : tuple of str
        The files, in slice order for a list of files.
    shape : tuple of int
        (Z, Y, X), or (Z, Y, X, C) for RGB(A) samples (C = 3 or 4).
    dtype : numpy.dtype
        uint8, uint16 or float32 (native byte order, whatever the file's).
    ndim : int
        3 or 4.
    pixel_size : tuple of float or None
        (y, x) pixel size in micrometres where the (first) file gives one in a unit of
        length, else None.
    z_step_um : float or None
        The distance between slices in micrometres where the file gives one (ImageJ
        ``spacing``, OME ``PhysicalSizeZ``), else None.
    """

    def __init__(self, paths: Sequence[str], shape: tuple[int, ...], dtype: np.dtype,
                 slices: Sequence[_Slice], stamps: Sequence[tuple[int, int]],
                 pixel_size: tuple[float, float] | None = None,
                 z_step_um: float | None = None):
        self.paths = tuple(os.fspath(p) for p in paths)
        self.shape = tuple(int(n) for n in shape)
        self.dtype = np.dtype(dtype)
        self.ndim = len(self.shape)
        self.pixel_size = pixel_size
        self.z_step_um = z_step_um
        self._slices = tuple(_Slice(*s) for s in slices)
        self._stamps = tuple(tuple(s) for s in stamps)

    # -- building ------------------------------------------------------------------------

    @classmethod
    @_quiet
    def open(cls, paths: str | os.PathLike | Sequence[str | os.PathLike]) -> TiffStackSource:
        """Open a focal stack without reading its pixels.

        Parameters
        ----------
        paths : str, path-like or sequence of them
            One TIFF file whose first series is the stack, (Z, Y, X) or (Z, Y, X, 3|4): a
            multi-page TIFF or BigTIFF, an ImageJ hyperstack with Z as its only axis beyond
            Y and X, an OME-TIFF. Or two or more TIFF files holding one (Y, X) or (Y, X,
            3|4) image each, the slices in the given order.

        Returns
        -------
        TiffStackSource

        Raises
        ------
        MfifError
            If a file is missing, not a TIFF, damaged or truncated (as far as its tags
            show), holds an unsupported dtype (not uint8, uint16 or float32), a compression
            tifffile cannot decode without the imagecodecs package (LZW, JPEG, ...),
            samples in separate planes, or a shape that is not a stack; or if the slices
            differ in shape or dtype.
        """
        if isinstance(paths, (str, os.PathLike)):
            paths = [paths]
        paths = [Path(p) for p in paths]
        if not paths:
            raise MfifError("no input given: name one multi-page TIFF or two or more TIFF files")
        for path in paths:
            _open_check(path)
            if not is_tiff(path):
                raise MfifError(f"cannot read {path} region by region: it is not a TIFF file")
        if len(paths) == 1:
            source = cls._open_one(paths[0])
        else:
            source = cls._open_many(paths)
        try:
            info = _tiff_info(paths[0])
            physical, axes = info.physical, info.axes.replace("S", "")
        except MfifError:  # the pixels are readable: the stack is, without a pixel size
            physical, axes = None, ""
        if physical is not None and physical.units is not None:
            size = dict(zip(axes, zip(physical.scale, physical.units)))
            y, x = size.get("Y", (1.0, "pixel")), size.get("X", (1.0, "pixel"))
            if y[1] == x[1] == "µm":
                source.pixel_size = (float(y[0]), float(x[0]))
            z = size.get("Z")
            if len(paths) == 1 and z is not None and z[1] == "µm":
                source.z_step_um = float(z[0])
        return source

    @classmethod
    def _open_one(cls, path: Path) -> TiffStackSource:
        file = os.fspath(path)
        try:
            with _open_tiff(path) as tif:
                series = _first_series(path, tif)
                keyframe = series.keyframe
                shape, page_shape = tuple(series.shape), tuple(keyframe.shape)
                layout = _layout_of(keyframe, file, "its first page")
                _check_stack_shape(path, shape, page_shape, series.axes, layout)
                n = shape[0]
                pages = list(series) if getattr(series, "transform", None) is None else []
                slices, files = [], [file]
                if len(pages) == n and all(p is not None for p in pages):
                    for index, page in enumerate(pages):
                        if tuple(page.shape) != page_shape:
                            raise MfifError(f"{path} has pages of shape {tuple(page.shape)} "
                                            f"and {page_shape}; all slices must have the "
                                            "same shape")
                        if page is not keyframe:  # its strip or tile table: checked now
                            _check_segments(path, page, layout, index)
                        where = os.fspath(page.parent.filehandle.path)  # multi-file OME
                        if not os.path.samefile(where, file):
                            if where not in files:
                                files.append(where)
                        else:
                            where = file
                        slices.append(_Slice(files.index(where), int(page.offset), -1))
                elif len(pages) == n and getattr(series, "dataoffset", None) is None:
                    missing = sum(p is None for p in pages)
                    raise MfifError(f"cannot read TIFF file {path}: {missing} of its {n} "
                                    "slices are missing (a multi-file OME-TIFF without all "
                                    "its files?)")
                elif series.dataoffset is not None and layout.compression == 1:
                    block = int(series.dataoffset)
                    page_bytes = layout.height * layout.rowbytes
                    if block + n * page_bytes > tif.filehandle.size:
                        raise MfifError(f"cannot read TIFF file {path}: it is truncated (the "
                                        "image data runs past the end of the file)")
                    slices = [_Slice(0, int(keyframe.offset), block + z * page_bytes)
                              for z in range(n)]
                else:
                    raise MfifError(f"cannot read TIFF file {path} region by region: its "
                                    f"{n} slices are not stored one per page")
                dtype = np.dtype(series.dtype).newbyteorder("=")
        except MfifError:
            raise
        except Exception as exc:  # tifffile raises many types for damaged files
            raise MfifError(f"cannot read TIFF file {path}: {_first_line(exc)}") from None
        return cls(files, shape, dtype, slices, [_stamp(f) for f in files])

    @classmethod
    def _open_many(cls, paths: list[Path]) -> TiffStackSource:
        slices, first = [], None
        for index, path in enumerate(paths):
            file = os.fspath(path)
            try:
                with _open_tiff(path) as tif:
                    series = _first_series(path, tif)
                    page = series.keyframe
                    shape, dtype = tuple(series.shape), np.dtype(series.dtype)
                    if len(series) != 1 or tuple(page.shape) != shape or not (
                            len(shape) == 2 or (len(shape) == 3 and shape[-1] in (3, 4))):
                        raise MfifError(f"{path} has shape {shape}; when several files are "
                                        "given each must hold one 2-D or RGB(A) image")
                    _check_dtype(dtype, str(path))
                    if first is not None and shape != first[1]:
                        raise MfifError(f"{path} has shape {shape} but {paths[0]} has "
                                        f"{first[1]}; all slices must have the same shape")
                    if first is not None and dtype.newbyteorder("=") != first[2]:
                        raise MfifError(f"{path} has dtype {dtype.newbyteorder('=')} but "
                                        f"{paths[0]} has {first[2]}; all slices must have "
                                        "the same dtype")
                    _layout_of(page, file, "its image")
                    if first is None:
                        first = (path, shape, dtype.newbyteorder("="))
                    slices.append(_Slice(index, int(page.offset), -1))
            except MfifError:
                raise
            except Exception as exc:  # tifffile raises many types for damaged files
                raise MfifError(f"cannot read TIFF file {path}: {_first_line(exc)}") from None
        return cls(paths, (len(paths),) + first[1], first[2], slices,
                   [_stamp(os.fspath(p)) for p in paths])

    # -- reading -------------------------------------------------------------------------

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        where = self.paths[0] if len(self.paths) == 1 else f"{len(self.paths)} files"
        return f"TiffStackSource({where!r}, shape={self.shape}, dtype={self.dtype})"

    @property
    def nbytes(self) -> int:
        """Bytes of the whole stack in memory (what is never read at once)."""
        return math.prod(self.shape) * self.dtype.itemsize

    def read(self, z: int, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """The region ``[y0:y1, x0:x1]`` of slice ``z``, read from disk.

        Only the bytes the region needs are read: its rows from an uncompressed stripped
        page, the tiles or strips that intersect it from any other page.

        Parameters
        ----------
        z : int
            The slice, 0 <= z < Z.
        y0, y1, x0, x1 : int
            The region's rows and columns, half-open: 0 <= y0 <= y1 <= Y and likewise x.

        Returns
        -------
        ndarray
            (y1 - y0, x1 - x0) or (y1 - y0, x1 - x0, C), of :attr:`dtype`.

        Raises
        ------
        MfifError
            If the region lies outside the slice, or the file is damaged, truncated or has
            changed since it was opened.
        """
        z, y0, y1, x0, x1 = self._check_region(z, y0, y1, x0, x1)
        out = np.zeros((y1 - y0, x1 - x0) + self.shape[3:], dtype=self.dtype)
        if out.size:
            self._read_into(out, z, y0, x0)
        return out

    def _check_region(self, z, y0, y1, x0, x1) -> tuple[int, ...]:
        try:
            values = tuple(int(v) for v in (z, y0, y1, x0, x1))
            if any(v != w for v, w in zip(values, (z, y0, y1, x0, x1))):
                raise ValueError
        except (TypeError, ValueError):
            raise MfifError(f"a region is given by whole numbers, not {(z, y0, y1, x0, x1)}") \
                from None
        z, y0, y1, x0, x1 = values
        n, height, width = self.shape[:3]
        if not (0 <= z < n and 0 <= y0 <= y1 <= height and 0 <= x0 <= x1 <= width):
            raise MfifError(f"region z={z}, y={y0}:{y1}, x={x0}:{x1} lies outside the stack "
                            f"of shape {self.shape}")
        return values

    def _read_into(self, out: np.ndarray, z: int, y0: int, x0: int) -> None:
        """Fill ``out`` (C-contiguous, of :attr:`dtype`) with slice ``z`` from (y0, x0)."""
        where = self._slices[z]
        path = self.paths[where.file]
        try:
            with open(path, "rb", buffering=0) as f:
                st = os.fstat(f.fileno())
                if (st.st_mtime_ns, st.st_size) != self._stamps[where.file]:
                    raise MfifError(f"cannot read TIFF file {path}: it has changed since the "
                                    "stack was opened")
                layout = _cached_layout(path, where.ifd, self._stamps[where.file])
                if (layout.height, layout.width) != tuple(self.shape[1:3]) or (
                        layout.samples != (self.shape[3] if self.ndim == 4 else 1)):
                    raise MfifError(f"cannot read TIFF file {path}: the page of slice {z} has "
                                    f"{layout.height} x {layout.width} pixels of "
                                    f"{layout.samples} samples, not the stack's {self.shape}")
                if where.data >= 0 or layout.per_row:
                    _read_rows(f.fileno(), layout, where.data, out, y0, x0, path)
                else:
                    _read_segments(f.fileno(), layout, out, y0, x0, path, z)
        except MfifError:
            raise
        except OSError as exc:
            raise MfifError(f"cannot read TIFF file {path}: {exc.strerror or exc}") from None

    def __getitem__(self, key) -> np.ndarray:
        """Numpy basic indexing with integers and slices of step 1 (what dask asks)."""
        index = _normalise_key(key, self.shape)
        ranges = [(i, i + 1) if isinstance(i, int) else (i.start, i.stop) for i in index]
        (z0, z1), (y0, y1), (x0, x1) = ranges[:3]
        out = np.zeros((z1 - z0, y1 - y0, x1 - x0) + self.shape[3:], dtype=self.dtype)
        if out.size:
            for z in range(z0, z1):
                self._check_region(z, y0, y1, x0, x1)
                self._read_into(out[z - z0], z, y0, x0)
        if self.ndim == 4:
            c = index[3]
            out = out[..., c] if isinstance(c, int) else out[..., c.start:c.stop]
        drop = tuple(a for a, i in enumerate(index[:3]) if isinstance(i, int))
        return out.squeeze(axis=drop) if drop else out

    def token(self) -> str:
        """A name for this stack's content: its files, their versions, shape and dtype."""
        from dask.base import tokenize

        return tokenize(self.paths, self._stamps, self.shape, str(self.dtype), self._slices)


def _check_stack_shape(path: Path, shape: tuple, page_shape: tuple, axes: str,
                       layout: _Layout) -> None:
    if shape == page_shape:
        raise MfifError(f"{path} holds a single image; give one multi-page TIFF (a z-stack) "
                        "or two or more TIFF files as slices")
    rgb = len(page_shape) == 3 and page_shape[-1] in (3, 4)
    if len(shape) != len(page_shape) + 1 or shape[1:] != page_shape or not (
            len(page_shape) == 2 or rgb) or (layout.samples > 1) != rgb:
        raise MfifError(f"{path} holds an image of shape {shape} (axes {axes}); a focal stack "
                        "is (Z, Y, X) or (Z, Y, X, 3|4) with one page per slice")


def _check_segments(path: Path, page, layout: _Layout, index: int) -> None:
    """Check a page's strip or tile table against the file size (as _layout_of does)."""
    offsets = np.asarray(page.dataoffsets, dtype=np.int64)
    counts = np.asarray(page.databytecounts, dtype=np.int64)
    if len(offsets) < len(layout.offsets) or len(counts) < len(layout.counts):
        raise MfifError(f"cannot read TIFF file {path}: it is damaged (page {index} lists "
                        f"{len(offsets)} of the {len(layout.offsets)} strips or tiles its size "
                        "needs)")
    offsets, counts = offsets[:len(layout.offsets)], counts[:len(layout.counts)]
    used = counts > 0
    if np.any(counts < 0) or (used.any() and (
            int((offsets[used] + counts[used]).max()) > page.parent.filehandle.size
            or int(offsets[used].min()) < 0)):
        raise MfifError(f"cannot read TIFF file {path}: it is truncated (the data of page "
                        f"{index} runs past the end of the file)")


def _normalise_key(key, shape: tuple[int, ...]) -> list:
    """``key`` as one int or slice(start, stop) per axis, in range (numpy's rules)."""
    if not isinstance(key, tuple):
        key = (key,)
    if any(k is Ellipsis for k in key):
        at = next(i for i, k in enumerate(key) if k is Ellipsis)
        key = key[:at] + (slice(None),) * (len(shape) - len(key) + 1) + key[at + 1:]
    if len(key) > len(shape):
        raise IndexError(f"too many indices for a stack of {len(shape)} dimensions")
    key = tuple(key) + (slice(None),) * (len(shape) - len(key))
    index = []
    for axis, (k, n) in enumerate(zip(key, shape)):
        if isinstance(k, slice):
            start, stop, step = k.indices(n)
            if step != 1:
                raise IndexError("a TiffStackSource is sliced with steps of 1 only")
            index.append(slice(start, max(start, stop)))
        elif isinstance(k, (int, np.integer)) and not isinstance(k, (bool, np.bool_)):
            i = int(k) + n if int(k) < 0 else int(k)
            if not 0 <= i < n:
                raise IndexError(f"index {int(k)} is out of bounds for axis {axis} with size {n}")
            index.append(i)
        else:
            raise IndexError(f"a TiffStackSource takes integers and slices, not {k!r}")
    return index


def _read_rows(fd: int, layout: _Layout, data: int, out: np.ndarray, y0: int, x0: int,
               path: str) -> None:
    """Read ``out``'s rows straight from the file: uncompressed pixels, row by row (or in
    one piece where whole rows follow one another)."""
    rows, cols = out.shape[:2]
    rowbytes = layout.rowbytes
    pixel = layout.samples * layout.stored.itemsize
    target = out if layout.stored == out.dtype else np.empty(out.shape, layout.stored)
    r = np.arange(y0, y0 + rows, dtype=np.int64)
    if data >= 0:
        starts = data + r * rowbytes
    else:
        per_strip = layout.segment[0]
        starts = layout.offsets[r // per_strip] + (r % per_strip) * rowbytes
    starts += x0 * pixel
    flat = target.reshape(rows, -1).view(np.uint8)
    if cols == layout.width:  # whole rows: one read per run of rows that follow each other
        breaks = np.flatnonzero(np.diff(starts) != rowbytes) + 1
        runs = zip(np.concatenate(([0], breaks)), np.concatenate((breaks, [rows])))
    else:
        runs = ((i, i + 1) for i in range(rows))
    for a, b in runs:
        a, b = int(a), int(b)
        want = (b - a) * cols * pixel
        got = os.preadv(fd, [flat[a:b].reshape(-1)], int(starts[a]))
        if got != want:
            raise MfifError(f"cannot read TIFF file {path}: it is truncated (row {y0 + a} "
                            "runs past the end of the file)")
    if target is not out:
        out[...] = target  # from the file's byte order


def _read_segments(fd: int, layout: _Layout, out: np.ndarray, y0: int, x0: int, path: str,
                   z: int) -> None:
    """Decode the strips or tiles that intersect ``out``'s region, one at a time."""
    rows, cols = out.shape[:2]
    y1, x1 = y0 + rows, x0 + cols
    seg_rows, seg_cols = layout.segment
    across = math.ceil(layout.width / seg_cols)
    kind = "tile" if layout.tiled else "strip"
    for ty in range(y0 // seg_rows, (y1 - 1) // seg_rows + 1):
        for tx in range(x0 // seg_cols, (x1 - 1) // seg_cols + 1):
            index = ty * across + tx
            count, offset = int(layout.counts[index]), int(layout.offsets[index])
            if count == 0:  # a sparse file's missing segment reads as zeros
                continue
            data = os.pread(fd, count, offset)
            if len(data) != count:
                raise MfifError(f"cannot read TIFF file {path}: it is truncated ({kind} {index} "
                                f"of slice {z} runs past the end of the file)")
            try:
                with _quiet_tifffile():
                    segment, _, _ = layout.decode(data, index)
            except Exception as exc:
                raise MfifError(f"cannot decode {kind} {index} of slice {z} in TIFF file "
                                f"{path}: {_first_line(exc)}") from None
            del data
            if segment is None:
                continue
            segment = segment.reshape(segment.shape[-3:])  # (rows, columns, samples)
            sy, sx = ty * seg_rows, tx * seg_cols
            a, b = max(y0, sy), min(y1, sy + segment.shape[0])
            c, d = max(x0, sx), min(x1, sx + segment.shape[1])
            if a >= b or c >= d:
                continue
            piece = segment[a - sy:b - sy, c - sx:d - sx]
            out[a - y0:b - y0, c - x0:d - x0] = piece if out.ndim == 3 else piece[..., 0]


def as_dask(source: TiffStackSource, tile: int):
    """A dask array of ``source`` with one chunk per ``tile`` x ``tile`` region of a slice.

    Each chunk is read by :meth:`TiffStackSource.__getitem__` when computed. The array's
    name is derived from the files, their modification times and sizes, and the chunking,
    so that the same stack gives the same name in every process.

    Parameters
    ----------
    source : TiffStackSource
    tile : int
        Rows and columns of a chunk (the last ones along each axis are shorter).

    Returns
    -------
    dask.array.Array
        Of ``source.shape`` and ``source.dtype``, chunks (1, tile, tile[, C]).
    """
    import dask.array as da
    from dask.base import tokenize

    tile = int(tile)
    if tile < 1:
        raise MfifError(f"tile must be a positive number of pixels, not {tile}")
    chunks = (1, tile, tile) + tuple(source.shape[3:])
    name = "mfif-slide-" + tokenize(source.token(), chunks)
    meta = np.empty((0,) * source.ndim, dtype=source.dtype)
    return da.from_array(source, chunks=chunks, name=name, asarray=False, meta=meta,
                         fancy=False)


# -- writing ---------------------------------------------------------------------------------

_DONE, _ABORT = object(), object()


class _Aborted(Exception):
    """Raised inside the writing thread when the writer is aborted."""


def downsample2(rows: np.ndarray) -> np.ndarray:
    """The mean of each 2 x 2 block of ``rows`` ((Y, X) or (Y, X, C)), in its dtype.

    An odd last row or column is averaged with itself (as if repeated): the result has
    ceil(Y / 2) x ceil(X / 2) pixels. Integers are rounded half up.
    """
    rows = np.asarray(rows)
    pad = [(0, rows.shape[0] % 2), (0, rows.shape[1] % 2)] + [(0, 0)] * (rows.ndim - 2)
    if pad[0][1] or pad[1][1]:
        rows = np.pad(rows, pad, mode="edge")
    if rows.dtype.kind == "f":
        total = rows[0::2].astype(np.float64) + rows[1::2]
        return ((total[:, 0::2] + total[:, 1::2]) / 4).astype(rows.dtype)
    total = rows[0::2].astype(np.int64) + rows[1::2]  # signed too (int8, int16)
    total = total[:, 0::2] + total[:, 1::2]
    return ((total + 2) // 4).astype(rows.dtype)


class TiledTiffWriter:
    """Write one image band by band to a tiled BigTIFF (OME-TIFF), in bounded memory.

    Bands arrive top to bottom (:meth:`write_band`); the writer keeps at most one row of
    tiles of them and hands full rows of tiles to a background thread running
    ``tifffile.TiffWriter.write`` through a small queue. The file is written to a temporary
    file beside ``path`` and moved into place by :meth:`close`; :meth:`abort` (or leaving a
    ``with`` block by an exception) removes it and leaves an existing ``path`` alone.

    With ``pyramid=True`` the file also holds levels downsampled by 2, 4, ... (the mean of
    2 x 2 blocks) as SubIFDs of the image, down to the first that fits in one tile. They
    are computed as the bands arrive and spilled to temporary raw files beside ``path``,
    then written after the full-resolution image, one row of tiles at a time.

    Parameters
    ----------
    path : str or path-like
        The output file, .tif or .tiff.
    shape : tuple of int
        (Y, X) or (Y, X, C), C = 3 or 4 for RGB(A) (C = 1 is written as grey).
    dtype : dtype
        uint8, uint16 or float32.
    tile : int
        Rows and columns of a TIFF tile: a multiple of 16.
    pyramid : bool
        Also write the downsampled levels.
    pixel_size : (float, float), optional
        The pixel size along (y, x) in ``unit``: stored as OME ``PhysicalSizeY/X`` and in
        the resolution tags (pixels per centimetre), where
        :func:`napari_mfif.io.read_physical_scale`, Fiji (Bio-Formats), QuPath and OME
        readers find it. Pyramid levels get resolution tags scaled by 2, 4, ...
    unit : str or None
        A unit of length ("um", "µm", "nm", "mm", ...) or None / "pixel" for a size without
        a unit.
    overwrite : bool
        Replace an existing ``path``.
    compression : None or "zlib"
        Tiles are stored uncompressed or deflate-compressed (readable without imagecodecs).
    compression_level : int, optional
        zlib's level, 0 to 9 (default 6). Level 1 compresses noisy microscope images about
        as well, 2 to 3 times faster.
    description : str, optional
        Stored as the OME image's Description.
    metadata : dict, optional
        Further OME image metadata for tifffile (e.g. ``{"Name": "fused"}``).

    Raises
    ------
    MfifError
        For an unusable output path (exists, directory missing or read-only, not .tif), an
        unsupported dtype or shape, a tile size that is not a multiple of 16, a bad pixel
        size or unit.
    """

    def __init__(self, path: str | os.PathLike, shape: Sequence[int], dtype, *,
                 tile: int = 256, pyramid: bool = False,
                 pixel_size: Sequence[float] | None = None, unit: str | None = "um",
                 overwrite: bool = False, compression: str | None = None,
                 compression_level: int | None = None,
                 description: str | None = None, metadata: dict | None = None):
        self.path = check_output(path, overwrite=overwrite)
        if self.path.suffix.lower() not in (".tif", ".tiff"):
            raise MfifError(f"cannot write {self.path.name}: a tiled image is written as "
                            ".tif or .tiff")
        self.dtype = _check_dtype(dtype, "the image")
        shape = tuple(int(n) for n in shape)
        if len(shape) == 3 and shape[-1] == 1:
            shape = shape[:2]
        if len(shape) not in (2, 3) or (len(shape) == 3 and shape[-1] not in (3, 4)) or \
                min(shape) < 1:
            raise MfifError(f"a tiled TIFF holds a (Y, X) or (Y, X, 3|4) image, not shape "
                            f"{tuple(shape)}")
        self.shape = shape
        if isinstance(tile, bool) or int(tile) != tile or tile < 16 or tile % 16:
            raise MfifError(f"tile must be a multiple of 16 pixels (TIFF's rule), not {tile}")
        self.tile = int(tile)
        if compression not in (None, "zlib", "deflate"):
            raise MfifError(f"compression must be None or 'zlib' (readable without the "
                            f"imagecodecs package), not {compression!r}")
        self.compression = "zlib" if compression else None
        if compression_level is not None and (
                isinstance(compression_level, bool) or compression_level not in range(10)):
            raise MfifError(f"compression_level must be 0 to 9, not {compression_level!r}")
        self.compression_level = compression_level
        self.overwrite = overwrite
        self._options = self._tiff_options(pixel_size, unit, description, metadata)
        self.levels = [shape[:2]]  # (rows, columns) of each level
        if pyramid:
            while max(self.levels[-1]) > self.tile:
                h, w = self.levels[-1]
                self.levels.append((-(-h // 2), -(-w // 2)))
        self._next_row = 0
        self._buffer = None
        self._filled = 0
        self._error: BaseException | None = None
        self._finished = False
        self._queue: queue.Queue = queue.Queue(maxsize=1)
        self._tmp = self._spills = None
        fd, self._tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".part",
                                         dir=self.path.parent)
        os.close(fd)
        try:
            self._spills = []
            for level in range(1, len(self.levels)):
                fd, spill = tempfile.mkstemp(prefix=f".{self.path.name}.level{level}.",
                                             suffix=".part", dir=self.path.parent)
                os.close(fd)
                self._spills.append(spill)
            self._thread = threading.Thread(target=self._run, name=f"write {self.path.name}",
                                            daemon=True)
            self._thread.start()
        except BaseException:
            self._remove_temporaries()
            raise

    def _tiff_options(self, pixel_size, unit, description, metadata) -> dict:
        """tifffile keywords for the full-resolution image: layout and pixel size."""
        import tifffile

        dummy = np.broadcast_to(np.zeros((), self.dtype), (1, 1) + self.shape[2:])
        layout, axes = tiff_layout(dummy)
        meta = dict(metadata or {}, axes=axes)
        if description is not None:
            meta["Description"] = str(description)
        options = dict(layout, metadata=meta)
        if pixel_size is not None:
            given = list(np.ravel(np.asarray(pixel_size, dtype=object)))
            sizes = [_positive(s) for s in given]
            if len(sizes) != 2 or None in sizes:
                raise MfifError(f"pixel_size must hold 2 positive pixel sizes (y, x), got "
                                f"{tuple(given)}")
            micrometres = _micrometres_per(unit)
            if micrometres is None and unit is not None and \
                    str(unit).strip().lower() != "pixel":
                raise MfifError(f"unknown unit of length {str(unit)!r}; use e.g. 'µm', 'nm' or "
                                "'mm'")
            y, x = (s * (micrometres or 1.0) for s in sizes)
            name = "µm" if micrometres else "pixel"
            meta.update(PhysicalSizeX=x, PhysicalSizeXUnit=name,
                        PhysicalSizeY=y, PhysicalSizeYUnit=name)
            if micrometres:
                options.update(resolution=(1e4 / x, 1e4 / y),
                               resolutionunit=tifffile.RESUNIT.CENTIMETER)
        return options

    # -- the caller's side ---------------------------------------------------------------

    def __enter__(self) -> TiledTiffWriter:
        return self

    def __exit__(self, kind, value, traceback) -> None:
        if kind is None:
            self.close()
        else:
            self.abort()

    @property
    def rows_written(self) -> int:
        """Rows handed to :meth:`write_band` so far."""
        return self._next_row

    def write_band(self, y0: int, band: np.ndarray) -> None:
        """Append rows ``y0`` to ``y0 + len(band)`` of the image.

        Parameters
        ----------
        y0 : int
            The first row of ``band``: the row after the last band's (0 at first).
        band : ndarray
            (rows, X) or (rows, X, C) of the writer's dtype; any number of rows.

        Raises
        ------
        ValueError
            If ``band`` is out of order, of the wrong shape or dtype, or runs past the
            image's last row.
        Exception
            Whatever stopped the writing thread (a full disk, for instance).
        """
        self._check_open()
        band = np.asarray(band)
        if band.ndim == 3 and band.shape[-1] == 1 and len(self.shape) == 2:
            band = band[..., 0]
        if band.dtype != self.dtype:
            raise ValueError(f"band has dtype {band.dtype}, the image {self.dtype}")
        if band.ndim != len(self.shape) or band.shape[1:] != self.shape[1:]:
            raise ValueError(f"band has shape {band.shape}; the image {self.shape} takes "
                             f"bands of shape (rows,) + {self.shape[1:]}")
        if y0 != self._next_row:
            raise ValueError(f"band starts at row {y0}, but the next row to write is "
                             f"{self._next_row} (bands go top to bottom, without gaps)")
        if y0 + band.shape[0] > self.shape[0]:
            raise ValueError(f"band rows {y0}:{y0 + band.shape[0]} run past the image's "
                             f"{self.shape[0]} rows")
        done = 0
        while done < band.shape[0]:
            if self._buffer is None:
                rows = min(self.tile, self.shape[0] - self._next_row)
                self._buffer = np.empty((rows,) + self.shape[1:], self.dtype)
                self._filled = 0
            take = min(band.shape[0] - done, self._buffer.shape[0] - self._filled)
            self._buffer[self._filled:self._filled + take] = band[done:done + take]
            self._filled += take
            done += take
            self._next_row += take
            if self._filled == self._buffer.shape[0]:
                buffer, self._buffer = self._buffer, None
                self._put(buffer)

    def close(self) -> Path:
        """Finish the file and move it into place; return its path.

        Raises
        ------
        ValueError
            If fewer rows than the image has were written (the file is then not kept).
        MfifError
            If ``path`` appeared meanwhile and ``overwrite`` is False.
        Exception
            Whatever stopped the writing thread.
        """
        if self._finished and self._error is None:
            return self.path
        self._check_open()
        if self._next_row != self.shape[0]:
            self.abort()
            raise ValueError(f"only {self._next_row} of the image's {self.shape[0]} rows were "
                             "written; nothing was saved")
        try:
            self._put(_DONE)
            self._thread.join()
            self._raise_failure()
            with open(self._tmp, "rb+") as f:  # the bytes are on disk before the name
                os.fsync(f.fileno())
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(self._tmp, 0o666 & ~umask)
            _move_into_place(self._tmp, self.path, self.overwrite)
        except BaseException:
            self.abort()
            raise
        self._finished = True
        self._remove_temporaries()
        return self.path

    def abort(self) -> None:
        """Stop writing and remove the temporary files; an existing output is untouched."""
        if self._thread.is_alive():
            while self._thread.is_alive():
                try:
                    self._queue.put(_ABORT, timeout=0.05)
                    break
                except queue.Full:
                    try:  # make room: what is queued is not wanted
                        self._queue.get_nowait()
                    except queue.Empty:
                        pass
            self._thread.join()
        self._buffer = None
        self._finished = True
        self._remove_temporaries()

    def _check_open(self) -> None:
        if self._error is not None:
            self._raise_failure()
        if self._finished:
            raise ValueError(f"the writer of {self.path} is closed")

    def _raise_failure(self) -> None:
        error = self._error
        if error is None:
            return
        self._finished = True
        self._remove_temporaries()
        raise error

    def _put(self, item) -> None:
        while True:
            if self._error is not None:
                self._raise_failure()
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                if not self._thread.is_alive():
                    self._raise_failure()
                    raise RuntimeError(f"the thread writing {self.path} stopped")

    def _remove_temporaries(self) -> None:
        for tmp in [self._tmp] + list(self._spills or []):
            if tmp and os.path.exists(tmp):
                try:
                    os.unlink(tmp)
                except OSError:
                    pass

    # -- the writing thread --------------------------------------------------------------

    def _run(self) -> None:
        import tifffile

        try:
            with _quiet_tifffile(), tifffile.TiffWriter(self._tmp, bigtiff=True,
                                                        ome=True) as tif:
                spill = open(self._spills[0], "wb") if self._spills else None
                try:
                    self._write_level(tif, 0, self._incoming(), spill)
                finally:
                    if spill is not None:
                        spill.close()
                for level in range(1, len(self.levels)):
                    spill = open(self._spills[level], "wb") if level < len(self._spills) \
                        else None
                    try:
                        self._write_level(tif, level, self._spilled(level), spill)
                    finally:
                        if spill is not None:
                            spill.close()
                    os.unlink(self._spills[level - 1])  # written: its disk space is free
        except _Aborted:
            pass
        except BaseException as exc:  # handed to the caller's next call
            self._error = exc
            self._drain()

    def _drain(self) -> None:
        """After a failure, take what the caller queues so that it never blocks."""
        try:
            while True:
                self._queue.get_nowait()
        except queue.Empty:
            pass

    def _incoming(self) -> Iterator[np.ndarray]:
        """Rows of tiles of the full-resolution image, as the caller queues them."""
        while True:
            item = self._queue.get()
            if item is _ABORT:
                raise _Aborted
            if item is _DONE:
                return
            yield item

    def _spilled(self, level: int) -> Iterator[np.ndarray]:
        """Rows of tiles of a downsampled level, read back from its spill file."""
        height, width = self.levels[level]
        row_shape = (width,) + self.shape[2:]
        per_row = math.prod(row_shape)
        with open(self._spills[level - 1], "rb") as f:
            for y in range(0, height, self.tile):
                rows = min(self.tile, height - y)
                data = np.fromfile(f, dtype=self.dtype, count=rows * per_row)
                if data.size != rows * per_row:
                    raise OSError(f"the temporary file of pyramid level {level} is short")
                yield data.reshape((rows,) + row_shape)
                if not self._thread_wanted():
                    raise _Aborted

    def _thread_wanted(self) -> bool:
        try:
            item = self._queue.get_nowait()
        except queue.Empty:
            return True
        return item is not _ABORT

    def _write_level(self, tif, level: int, rows: Iterator[np.ndarray], spill) -> None:
        """Write one level from its rows of tiles, spilling the next level's rows."""
        height, width = self.levels[level]
        shape = (height, width) + self.shape[2:]
        tile = self.tile

        def tiles():
            for band in rows:
                if spill is not None:
                    spill.write(downsample2(band).tobytes())
                for x in range(0, width, tile):
                    yield band[:, x:x + tile]

        options = dict(self._options)
        if level:
            scale = 2**level
            options = {k: v for k, v in options.items() if k not in ("metadata", "resolution")}
            options["subfiletype"] = 1
            if "resolution" in self._options:
                options["resolution"] = tuple(r / scale for r in self._options["resolution"])
        elif len(self.levels) > 1:
            options["subifds"] = len(self.levels) - 1
        if self.compression and self.compression_level is not None:
            options["compressionargs"] = {"level": self.compression_level}
        row_bytes = tile * width * math.prod(self.shape[2:]) * self.dtype.itemsize
        tif.write(tiles(), shape=shape, dtype=self.dtype, tile=(tile, tile),
                  compression=self.compression, buffersize=row_bytes, **options)


def write_tiled(path: str | os.PathLike, image, *, band_rows: int | None = None,
                **kwargs) -> Path:
    """Write an image held in memory (or any array that slices into numpy, such as a
    dask array) with :class:`TiledTiffWriter`, one row of tiles at a time.

    Parameters
    ----------
    path : str or path-like
        The output file.
    image : array-like
        (Y, X) or (Y, X, 3|4), uint8, uint16 or float32.
    band_rows : int, optional
        Rows per band (default: the tile size).
    **kwargs
        Passed to :class:`TiledTiffWriter` (tile, pyramid, pixel_size, unit, overwrite,
        compression, compression_level, description, metadata).

    Returns
    -------
    Path
    """
    shape, dtype = tuple(image.shape), np.dtype(image.dtype)
    with TiledTiffWriter(path, shape, dtype, **kwargs) as writer:
        step = int(band_rows or writer.tile)
        for y in range(0, shape[0], step):
            writer.write_band(y, np.asarray(image[y:y + step]))
    return writer.path
