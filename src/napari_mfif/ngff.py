"""OME-Zarr (NGFF) output: the fused image and the height map as multiscale images with
their physical scale, written chunk by chunk.

The arrays are written with zarr and the NGFF metadata (``multiscales``: axes, units, one
scale transformation per level) with ome-zarr-py, the OME's reference implementation; both
come with the ``formats`` extra. The layout is NGFF 0.4 (zarr v2, "/" chunk keys, Blosc
LZ4), which every current reader takes: napari-ome-zarr, bioio, Fiji's MoBIE and N5
viewers, QuPath, OMERO. Level 0 is the image; each further level halves y and x (the mean of
2 x 2 pixels, in the image's dtype) until it fits in one chunk.

Like every output here, a store is written under a temporary name beside its path and
renamed into place when complete: a crash or Ctrl-C leaves no half-written store, and an
existing store is kept unless ``overwrite``.

:class:`OmeZarrWriter` takes the image band by band (the tiled path's bands), holding no
more than the band it is given and one band of each pyramid level at a time;
:func:`write_ome_zarr` writes an array at once.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np

from ._errors import MfifError

#: chunk edge along y and x
CHUNK = 512
#: the name of the group attribute holding what napari-mfif adds (e.g. the height map's z)
ATTRIBUTE = "napari_mfif"
_INSTALL = 'pip install "napari-mfif[formats]"'


def is_zarr_name(path: str | os.PathLike) -> bool:
    """True for a path that asks for an OME-Zarr store (``.zarr``, ``.ome.zarr``)."""
    return str(path).rstrip("/\\").lower().endswith(".zarr")


def check_output(path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Check before any work that an OME-Zarr store can be written at ``path``."""
    path = Path(path)
    for module, package in (("zarr", "zarr"), ("ome_zarr", "ome-zarr")):
        try:
            __import__(module)
        except ImportError:
            raise MfifError(f"writing OME-Zarr needs the {package} package: {_INSTALL}") from None
    from .io import check_output_folder

    check_output_folder(path)
    if path.is_file():
        raise MfifError(f"output path is a file, not an OME-Zarr folder: {path}")
    if path.exists() and not overwrite:
        raise MfifError(f"output exists: {path} (use --overwrite to replace it)")
    return path


def _layout(shape: Sequence[int], axes: str) -> tuple[str, tuple[int, ...], tuple[int, ...]]:
    """The stored axes (y and x last, samples as channels), the stored shape and the order
    that takes an array of ``axes`` into it."""
    axes = axes.upper()
    if len(axes) != len(shape) or not set(axes) <= set("TCYXS") or len(set(axes)) != len(axes) \
            or "Y" not in axes or "X" not in axes or ("C" in axes and "S" in axes):
        raise MfifError(f"an OME-Zarr image takes axes from T, C, Y, X (S for RGB), one per "
                        f"axis; got {axes!r} for shape {tuple(shape)}")
    stored = "".join(a for a in "TCSYX" if a in axes).replace("S", "C")
    order = tuple(axes.index(a if a in axes else "S") for a in stored)
    return stored.lower(), tuple(int(shape[i]) for i in order), order


def _levels(rows: int, columns: int, chunk: int) -> list[tuple[int, int]]:
    levels = [(rows, columns)]
    while max(levels[-1]) > chunk:
        h, w = levels[-1]
        levels.append((-(-h // 2), -(-w // 2)))
    return levels


class OmeZarrWriter:
    """Write one image band by band (rows top to bottom) to an OME-Zarr store.

    Parameters
    ----------
    path : str or path-like
        The store (a folder), e.g. ``fused.ome.zarr``.
    shape : sequence of int
        The image's shape, axes as ``axes`` names them.
    dtype : dtype
    axes : str
        Letters from T, C, Y, X and S (RGB samples), e.g. "YX", "YXS", "TCYX"; bands are
        cut along Y. Default: "YX" for 2-D, "YXS" for 3-D.
    pixel_size : (float, float), optional
        (y, x) in micrometres.
    overwrite : bool
    name : str, optional
        The image's name in the metadata.
    attributes : dict, optional
        Kept under the group's ``napari_mfif`` attribute (e.g. the z values of a height
        map).
    """

    def __init__(self, path: str | os.PathLike, shape: Sequence[int], dtype, *,
                 axes: str | None = None, pixel_size: Sequence[float] | None = None,
                 overwrite: bool = False, name: str | None = None,
                 attributes: dict | None = None, chunk: int = CHUNK):
        import numcodecs
        import zarr

        self.path = check_output(path, overwrite=overwrite)
        self.overwrite = overwrite
        shape = tuple(int(n) for n in shape)
        axes = axes or ("YX" if len(shape) == 2 else "YXS")
        self.axes, self.stored_shape, self.order = _layout(shape, axes)
        self.given_axes = axes.upper()
        self.shape = shape
        self.dtype = np.dtype(dtype)
        self.pixel_size = None if pixel_size is None else tuple(float(v) for v in pixel_size)
        self.name = name or Path(self.path).name
        self.attributes = attributes or {}
        self.chunk = int(chunk)
        rows, columns = self.stored_shape[-2:]
        self.levels = _levels(rows, columns, self.chunk)
        self._tmp = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.", suffix=".part",
                                          dir=self.path.parent))
        self._next_row = 0
        self._finished = False
        try:
            self.group = zarr.open_group(str(self._tmp), mode="w", zarr_format=2)
            compressor = numcodecs.Blosc(cname="lz4", clevel=5, shuffle=numcodecs.Blosc.SHUFFLE)
            lead = self.stored_shape[:-2]
            self.arrays = [
                self.group.create_array(
                    str(k), shape=lead + level, dtype=self.dtype,
                    chunks=(1,) * len(lead) + (min(self.chunk, level[0]),
                                               min(self.chunk, level[1])),
                    compressors=compressor, chunk_key_encoding={"name": "v2", "separator": "/"},
                    fill_value=0)
                for k, level in enumerate(self.levels)]
        except BaseException:
            shutil.rmtree(self._tmp, ignore_errors=True)
            raise
        # the rows of each level below 0 not yet written (an odd row waits for its pair)
        self._pending: list[np.ndarray | None] = [None] * len(self.levels)
        self._level_rows = [0] * len(self.levels)

    def __enter__(self) -> OmeZarrWriter:
        return self

    def __exit__(self, kind, value, traceback) -> None:
        if kind is None:
            self.close()
        else:
            self.abort()

    def write_band(self, y0: int, band: np.ndarray) -> None:
        """Write rows ``y0`` to ``y0 + len(band)`` (axes as given, cut along Y)."""
        if self._finished:
            raise ValueError(f"the writer of {self.path} is closed")
        band = np.asarray(band)
        if band.dtype != self.dtype:
            raise ValueError(f"band has dtype {band.dtype}, the image {self.dtype}")
        if y0 != self._next_row:
            raise ValueError(f"band starts at row {y0}, but the next row to write is "
                             f"{self._next_row} (bands go top to bottom, without gaps)")
        stored = np.transpose(band, self.order)
        expected = self.stored_shape[:-2] + (stored.shape[-2], self.stored_shape[-1])
        if stored.shape != expected or y0 + stored.shape[-2] > self.stored_shape[-2]:
            raise ValueError(f"band of shape {band.shape} does not fit rows {y0}: of the "
                             f"image {self.shape} (axes {self.given_axes})")
        self._write(0, stored)
        self._next_row += stored.shape[-2]

    def _write(self, level: int, rows: np.ndarray) -> None:
        y = self._level_rows[level]
        self.arrays[level][..., y:y + rows.shape[-2], :] = rows
        self._level_rows[level] += rows.shape[-2]
        if level + 1 < len(self.levels):
            self._down(level, rows)

    def _down(self, level: int, rows: np.ndarray, last: bool = False) -> None:
        """Pass ``rows`` of ``level`` down: pairs of rows become one row of the next."""
        from .slide_io import downsample2

        pending = self._pending[level]
        if pending is not None:
            rows = np.concatenate([pending, rows], axis=-2)
        even = rows.shape[-2] if last else rows.shape[-2] - rows.shape[-2] % 2
        self._pending[level] = rows[..., even:, :] if even < rows.shape[-2] else None
        if even == 0:
            return
        # downsample2 works on (Y, X[, C]): move the lead axes to the end and back
        lead = rows.ndim - 2
        moved = np.moveaxis(rows[..., :even, :], tuple(range(lead)), tuple(range(-lead, 0))) \
            if lead else rows[..., :even, :]
        flat = moved.reshape(moved.shape[:2] + (-1,)) if lead else moved
        small = downsample2(flat)
        if lead:
            small = small.reshape(small.shape[:2] + rows.shape[:lead])
            small = np.moveaxis(small, tuple(range(2, 2 + lead)), tuple(range(lead)))
        self._write(level + 1, small)

    def close(self) -> Path:
        """Finish the pyramid and the metadata and move the store into place."""
        if self._finished:
            return self.path
        if self._next_row != self.stored_shape[-2]:
            self.abort()
            raise ValueError(f"only {self._next_row} of the image's {self.stored_shape[-2]} "
                             "rows were written; nothing was saved")
        try:
            for level in range(len(self.levels) - 1):
                if self._pending[level] is not None:
                    rows, self._pending[level] = self._pending[level], None
                    self._down(level, rows, last=True)
            self._metadata()
            _move_dir_into_place(self._tmp, self.path, self.overwrite)
        except BaseException:
            self.abort()
            raise
        self._finished = True
        return self.path

    def abort(self) -> None:
        """Remove the temporary store; an existing output is untouched."""
        self._finished = True
        shutil.rmtree(self._tmp, ignore_errors=True)

    def _metadata(self) -> None:
        from ome_zarr.format import FormatV04
        from ome_zarr.writer import write_multiscales_metadata

        size = self.pixel_size or (1.0, 1.0)
        datasets = []
        for k in range(len(self.levels)):
            scale = [1.0] * (len(self.axes) - 2) + [size[0] * 2**k, size[1] * 2**k]
            datasets.append({"path": str(k), "coordinateTransformations": [
                {"type": "scale", "scale": scale}]})
        kinds = {"t": "time", "c": "channel", "y": "space", "x": "space"}
        axes = []
        for a in self.axes:
            entry = {"name": a, "type": kinds[a]}
            if a in "yx" and self.pixel_size is not None:
                entry["unit"] = "micrometer"
            axes.append(entry)
        write_multiscales_metadata(self.group, datasets, fmt=FormatV04(), axes=axes,
                                   name=self.name)
        if self.attributes:
            self.group.attrs[ATTRIBUTE] = json.loads(json.dumps(self.attributes))


def write_ome_zarr(path: str | os.PathLike, image: np.ndarray, axes: str | None = None, *,
                   pixel_size: Sequence[float] | None = None, overwrite: bool = False,
                   name: str | None = None, attributes: dict | None = None) -> Path:
    """Write ``image`` (axes as ``axes`` names them; default "YX" or "YXS") as an OME-Zarr
    store with a pyramid and its (y, x) ``pixel_size`` in micrometres; see
    :class:`OmeZarrWriter`. Returns the path."""
    image = np.asarray(image)
    with OmeZarrWriter(path, image.shape, image.dtype, axes=axes, pixel_size=pixel_size,
                       overwrite=overwrite, name=name, attributes=attributes) as out:
        y = out.given_axes.index("Y")
        step = max(1, out.chunk)
        for y0 in range(0, image.shape[y], step):
            out.write_band(y0, np.take(image, range(y0, min(y0 + step, image.shape[y])),
                                       axis=y))
    return out.path


def _move_dir_into_place(tmp: Path, path: Path, overwrite: bool) -> None:
    """Rename the finished store ``tmp`` to ``path``; an existing ``path`` is replaced only
    with ``overwrite`` (moved aside first, removed once the new one is in place)."""
    if path.exists():
        if not overwrite:
            raise MfifError(f"output exists: {path} (use --overwrite to replace it)")
        old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
        old.rmdir()
        os.replace(path, old)
        try:
            os.replace(tmp, path)
        except BaseException:
            os.replace(old, path)
            raise
        shutil.rmtree(old, ignore_errors=True)
        return
    os.replace(tmp, path)
