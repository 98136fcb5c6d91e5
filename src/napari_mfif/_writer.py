"""napari writer: one image layer to a TIFF file, dtype and pixel size kept, never clobbering.

The file is written by :func:`napari_mfif.io.write_image`: atomically (a temporary file
moved into place), with the layer's dtype and values unchanged, and the layer's ``scale``
stored as ImageJ metadata (resolution, ``spacing``, ``unit``) or, for dtypes ImageJ lacks,
OME-XML, so that this plugin's reader, Fiji and OME readers find it again.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from ._errors import MfifError

_EXTENSIONS = (".tif", ".tiff")


def write_tiff(path: str, data, meta: dict) -> list[str]:
    """Write one napari image layer to a new TIFF file.

    Parameters
    ----------
    path : str
        The output file, ending in .tif or .tiff; it must not exist yet.
    data : array-like or list of array-like
        The layer's data (numpy or dask; for a multiscale layer, the full-resolution
        level is written).
    meta : dict
        The layer's state as napari gives it to writers: ``scale``, ``units``, ``rgb``,
        ``multiscale``.

    Returns
    -------
    list of str
        ``[path]``.

    Raises
    ------
    MfifError
        If the file exists (it is never replaced) or cannot be written, with a
        one-sentence reason.
    """
    from .io import _micrometres_per, tiff_layout, write_image

    target = Path(path)
    if target.suffix.lower() not in _EXTENSIONS:
        raise _refusal(f"napari-mfif writes .tif or .tiff files, not {target.name}")
    if target.exists():
        raise _refusal(f"{target} exists and napari-mfif never replaces a file; choose a new name")
    if meta.get("multiscale"):
        data = data[0]
    image = np.asarray(data)

    rgb = bool(meta.get("rgb", False))
    n_axes = image.ndim - rgb  # napari's scale and units have no entry for an RGB axis
    layer_scale = tuple(float(s) for s in meta.get("scale", (1.0,) * n_axes))
    layer_units = meta.get("units") or ("pixel",) * n_axes
    stack = image.ndim == 3 and not rgb  # a (Z, Y, X) layer, however narrow
    _, axes = tiff_layout(image, stack=stack)
    if rgb and not axes.endswith("S"):
        axes = ""
    layer_axes = axes[:-1] if rgb else axes  # a channels-last "S" has a napari axis
    spatial = [i for i, a in enumerate(layer_axes) if a in "ZYX"]

    scale = unit = None
    if len(layer_axes) == n_axes == len(layer_scale) and spatial:
        scale = [layer_scale[i] for i in spatial]
        unit = [None if _micrometres_per(layer_units[i]) is None else str(layer_units[i])
                for i in spatial]
        if all(u is None for u in unit) and all(s == 1.0 for s in scale):
            scale = unit = None  # nothing to store: write a plain TIFF
    elif any(s != 1.0 for s in layer_scale):
        warnings.warn(
            f"the pixel size of a layer of shape {image.shape} is not stored; napari-mfif "
            "stores it for 2-D images and (Z, Y, X) stacks, grey or RGB", stacklevel=2,
        )
    try:
        write_image(target, image, scale=scale, unit=unit, stack=stack)
    except MfifError as exc:
        raise _refusal(str(exc)) from None
    return [str(target)]


def _refusal(message: str) -> MfifError:
    # napari's Layer.save() and LayerList.save() (no writer chosen in a dialog) turn a
    # ValueError, which MfifError is, into "not a valid writer"; the warning carries the
    # reason there.
    warnings.warn(message, stacklevel=3)
    return MfifError(message)


def write_zarr(path: str, data, meta: dict) -> list[str]:
    """Write one 2-D napari image layer (grey or RGB, such as a fused image or a height map)
    to a new OME-Zarr store with a pyramid and the layer's pixel size in micrometres
    (:mod:`napari_mfif.ngff`), band by band: a lazy layer is read a band at a time.

    Parameters
    ----------
    path : str
        The store, ending in .zarr (e.g. ``fused.ome.zarr``); it must not exist yet.
    data : array-like or list of array-like
        The layer's data (for a multiscale layer, the full-resolution level is written).
    meta : dict
        ``scale``, ``units``, ``rgb``, ``multiscale``, ``name``, as napari gives them.

    Returns
    -------
    list of str
        ``[path]``.
    """
    from .io import _micrometres_per
    from .ngff import CHUNK, OmeZarrWriter, is_zarr_name

    target = Path(path)
    if not is_zarr_name(target):
        raise _refusal(f"napari-mfif writes OME-Zarr to a .zarr folder, not {target.name}")
    if target.exists():
        raise _refusal(f"{target} exists and napari-mfif never replaces it; choose a new name")
    if meta.get("multiscale"):
        data = data[0]
    rgb = bool(meta.get("rgb", False))
    if len(data.shape) - rgb != 2:
        raise _refusal(f"napari-mfif writes a 2-D layer (a fused image, a height map) as "
                       f"OME-Zarr, not one of shape {tuple(data.shape)}")
    scale = [float(s) for s in meta.get("scale", (1.0, 1.0))][-2:]
    units = list(meta.get("units") or ("pixel", "pixel"))[-2:]
    factors = [_micrometres_per(str(u)) for u in units]
    pixel = None if None in factors else (scale[0] * factors[0], scale[1] * factors[1])
    try:
        with OmeZarrWriter(target, data.shape, np.dtype(data.dtype),
                           axes="YXS" if rgb else "YX", pixel_size=pixel,
                           name=meta.get("name") or target.name) as out:
            for y0 in range(0, data.shape[0], CHUNK):
                out.write_band(y0, np.asarray(data[y0:y0 + CHUNK]))
    except MfifError as exc:
        raise _refusal(str(exc)) from None
    return [str(target)]
