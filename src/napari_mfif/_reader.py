"""napari reader: TIFF focal stacks as lazy (dask) layers with their physical pixel size.

napari calls :func:`napari_get_reader` with the path being opened; it answers with a reader
function for a single TIFF file (by extension and content) and None for anything else, so
that other readers get their turn.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from ._errors import MfifError

_EXTENSIONS = (".tif", ".tiff")


def napari_get_reader(path):
    """The reader function for ``path`` if it is one TIFF file, else None.

    Parameters
    ----------
    path : str or list of str
        What napari is opening; a list (several files at once) is left to other readers.

    Returns
    -------
    callable or None
        :func:`read_tiff`, or None.
    """
    if not isinstance(path, (str, os.PathLike)):
        return None
    path = Path(path)
    if path.suffix.lower() not in _EXTENSIONS or not path.is_file():
        return None
    from .io import is_tiff

    try:
        if not is_tiff(path):
            return None
    except OSError:
        return None  # unreadable: let napari say that nothing could open it
    return read_tiff


def read_tiff(path) -> list[tuple]:
    """Read one TIFF file as a napari image layer whose data is read page by page.

    Parameters
    ----------
    path : str or path-like
        A TIFF or BigTIFF file (a list holding one path is accepted too).

    Returns
    -------
    list of (data, kwargs, "image")
        One layer: a dask array (one chunk per TIFF page), named after the file, with the
        file's pixel size as ``scale`` (and ``units`` where napari takes them), ``rgb`` for
        photometric-RGB data, and ``metadata["napari_mfif"]`` holding the source path, the
        axes letters (tifffile's: Z, Y, X, S for samples, I or Q for unnamed pages, ...)
        and the units.

    Raises
    ------
    MfifError
        For a damaged, truncated or otherwise unreadable file, with a one-sentence reason.
    """
    if isinstance(path, (list, tuple)):
        if len(path) != 1:
            raise MfifError(
                f"the napari-mfif reader opens one TIFF file at a time, not {len(path)}"
            )
        path = path[0]
    from .io import _tiff_info, read_lazy

    path = Path(path)
    levels = _slide_levels(path)
    data = read_lazy(path) if levels is None else levels[0] if len(levels) == 1 else levels
    info = _tiff_info(path)
    scale, units = info.physical
    kwargs = {
        "name": path.stem,
        "scale": scale,
        "rgb": info.rgb,
        "metadata": {"napari_mfif": {"source": str(path), "axes": info.axes,
                                     "units": units}},
    }
    if levels is not None and len(levels) > 1:
        kwargs["multiscale"] = True
    kwargs.update(_layer_units_kwarg(units))
    return [(data, kwargs, "image")]


#: a single image larger than this (pixels) is read by regions rather than page by page
_SLIDE_PIXELS = 4096 * 4096
_SLIDE_CHUNK = 1024


def _slide_levels(path: Path):
    """For whole-slide data, dask arrays read region by region (1024-px chunks), so that
    napari decodes only the tiles it shows and tiled fusion reads only its windows:

    - one 2-D (or RGB) image stored in tiles, such as a fused slide: its resolution levels
      (a pyramid's SubIFDs), when it has several or is larger than 4096 x 4096 px;
    - a (Z, Y, X[, RGB]) stack whose slices are larger than 4096 x 4096 px: one array.

    None for anything else, which is read page by page."""
    import numpy as np
    import tifffile

    from .io import _first_series
    from .slide_io import TiffStackSource, _Slice, _stamp, as_dask

    try:
        with tifffile.TiffFile(path) as tif:
            series = _first_series(path, tif)
            levels = list(series.levels)
            page = series.keyframe
            rgb = series.ndim == 3 and series.shape[-1] in (3, 4)
            big = np.prod(page.shape[:2]) > _SLIDE_PIXELS
            stack = len(series) > 1 and series.ndim == (4 if rgb or page.ndim == 3 else 3)
            image = len(series) == 1 and (series.ndim == 2 or rgb) and page.is_tiled
            found = [(tuple(level.shape), np.dtype(level.dtype), int(level.keyframe.offset))
                     for level in levels] if image and (big or len(levels) > 1) else None
    except Exception:  # anything unusual: the page-by-page reader says what is wrong
        return None
    if stack:
        if not big:
            return None
        try:
            return [as_dask(TiffStackSource.open(path), _SLIDE_CHUNK)]
        except MfifError:  # not readable by regions (e.g. channels as pages): page by page
            return None
    if found is None:
        return None
    file = os.fspath(path)
    try:
        arrays = []
        for shape, dtype, ifd in found:
            source = TiffStackSource([file], (1,) + shape, dtype.newbyteorder("="),
                                     [_Slice(0, ifd, -1)], [_stamp(file)])
            arrays.append(as_dask(source, _SLIDE_CHUNK)[0])
        arrays[0][:1, :1].compute()  # the first level's layout is readable by regions
    except MfifError:
        return None
    return arrays


def _layer_units_kwarg(units) -> dict:
    """``{"units": units}`` for the image-layer keywords if napari takes units (0.6 and
    later) and there are some, else an empty dict."""
    if units is None or not _napari_takes_units():
        return {}
    return {"units": tuple(units)}


@lru_cache(maxsize=1)
def _napari_takes_units() -> bool:
    try:
        import inspect

        from napari.layers import Image
    except ImportError:
        return False
    return "units" in inspect.signature(Image.__init__).parameters
