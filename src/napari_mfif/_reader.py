"""napari reader: TIFF focal stacks, and CZI, ND2, LIF and OME-Zarr files, as lazy (dask)
layers with their physical pixel size and z step.

napari calls :func:`napari_get_reader` with the path being opened; it answers with a reader
function for a single TIFF file (by extension and content) or a microscope file
(:mod:`napari_mfif.formats`) and None for anything else, so that other readers get their
turn.
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
    from .formats import is_microscope_file

    if is_microscope_file(path):
        return read_microscope_file
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


def read_microscope_file(path) -> list[tuple]:
    """Read a CZI, ND2, LIF or OME-Zarr file as napari image layers, one per scene and
    channel, read on demand.

    Each layer is (T, Z, Y, X) or (Z, Y, X), the planes in rising z (a file recorded top
    down is turned over), with the file's pixel size and z step as ``scale`` (in µm), the
    channel's name, and ``metadata["napari_mfif"]`` holding the source, the scene, the axes
    letters (which the Fuse widget takes its z axis from), the units and the planes' z.
    """
    if isinstance(path, (list, tuple)):
        if len(path) != 1:
            raise MfifError(f"the napari-mfif reader opens one file at a time, not {len(path)}")
        path = path[0]
    import numpy as np

    from .formats import _stem, open_scenes

    path = Path(path)
    scenes = open_scenes(path, "all")
    layers = []
    for stack in scenes:
        data = stack.data_in_z_order()
        sizes = stack.sizes
        keep_t, keep_z = sizes["T"] > 1, sizes["Z"] > 1
        # the axes kept, each with its scale, unit and offset: T, C, Z only where longer
        # than 1 (C is split into layers by napari), then Y, X (and RGB samples)
        z = stack.sorted_z()
        step = float(np.mean(np.diff(z))) if z is not None and len(z) > 1 else None
        z_known = step is not None and step > 0
        pixel = stack.pixel_size
        geometry = [("T", 1.0, "pixel", 0.0), ("C", 1.0, "pixel", 0.0),
                    ("Z", step if z_known else 1.0, "µm" if z_known else "pixel",
                     float(z[0]) + 0.0 if z_known else 0.0),
                    ("Y", pixel[0] if pixel else 1.0, "µm" if pixel else "pixel", 0.0),
                    ("X", pixel[1] if pixel else 1.0, "µm" if pixel else "pixel", 0.0)]
        keep = [i for i, (axis, *_) in enumerate(geometry)
                if (axis != "T" or keep_t) and (axis != "Z" or keep_z)]
        index = tuple(slice(None) if i in keep else 0 for i in range(5))
        data = data[index]
        axes = "".join(geometry[i][0] for i in keep) + ("S" if "S" in stack.dims else "")
        spatial = [geometry[i] for i in keep if geometry[i][0] != "C"]
        scale = tuple(g[1] for g in spatial)
        units = tuple(g[2] for g in spatial) if (z_known or pixel) else None
        name = _stem(path) + (f" [{stack.scene}]" if len(scenes) > 1 else "")
        names = [f"{name} {c}" if sizes["C"] > 1 else name
                 for c in (stack.channel_names or [str(i) for i in range(sizes["C"])])]
        meta = {"napari_mfif": {"source": str(path), "scene": stack.scene,
                                "axes": axes.replace("C", ""), "units": units,
                                "z_positions": None if z is None else [float(v) for v in z]}}
        kwargs = {"scale": scale, "rgb": "S" in axes, "metadata": meta,
                  "translate": tuple(g[3] for g in spatial)}
        kwargs.update(_layer_units_kwarg(units))
        channel = axes.index("C")
        if sizes["C"] > 1:
            kwargs.update(channel_axis=channel, name=names)
        else:
            data = data[(slice(None),) * channel + (0,)]
            kwargs["name"] = names[0]
        if not keep_z and sizes["C"] == 1:  # a 2-D image: its pyramid, where it has one
            levels = _zarr_levels(stack, lambda a: a[index][(slice(None),) * channel + (0,)])
            if levels:
                data, kwargs["multiscale"] = [data] + levels, True
        layers.append((data, kwargs, "image"))
    return layers


def _zarr_levels(stack, cut) -> list:
    """The smaller levels of an OME-Zarr image's pyramid (a fused image written by
    napari-mfif has them), each cut by ``cut`` as level 0 was; empty for other files."""
    from .formats import _bioimage, _zarr_images, is_ome_zarr

    if not is_ome_zarr(stack.path):
        return []
    try:
        image = _bioimage(_zarr_images(stack.path)[stack.scene_index], zarr=True)
        levels = []
        for level in image.resolution_levels[1:]:
            image.set_resolution_level(level)
            levels.append(cut(image.get_image_dask_data(stack.dims)))
    except Exception:  # noqa: BLE001 - a pyramid that cannot be read: level 0 alone
        return []
    return levels
