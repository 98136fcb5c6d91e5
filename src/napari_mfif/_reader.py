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
    data = read_lazy(path)
    info = _tiff_info(path)
    scale, units = info.physical
    kwargs = {
        "name": path.stem,
        "scale": scale,
        "rgb": info.rgb,
        "metadata": {"napari_mfif": {"source": str(path), "axes": info.axes,
                                     "units": units}},
    }
    kwargs.update(_layer_units_kwarg(units))
    return [(data, kwargs, "image")]


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
