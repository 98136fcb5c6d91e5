"""Microscope files as they come off the instrument: Zeiss CZI, Nikon ND2, Leica LIF and
OME-Zarr, read through bioio and its format plugins, with their physical z.

TIFF (plain, ImageJ and OME-TIFF) stays with tifffile (:mod:`napari_mfif.io`), which is
faster for it; this module is the way in for everything tifffile does not read. bioio and
its plugins come with ``pip install "napari-mfif[formats]"``: they add about 230 MB to an
installation with napari (a CZI library that needs cmake at run time, cloud-storage
clients, xarray), which users who only have TIFFs should not have to carry. Where a plugin
is missing, the error names the package to install.

:func:`open_stack` gives a :class:`MicroscopeStack`: the pixels as a lazy (dask) array in
the file's own T, C, Z, Y, X order, the scenes (positions) the file holds, the pixel size,
and the z position of every plane in micrometres, from the file's z step (which may be
negative: planes recorded top down) or from per-plane positions where the file stores them
and they differ.
"""

from __future__ import annotations

import importlib.util
import json
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ._errors import MfifError

#: file extension -> the bioio plugin that reads it
PLUGINS = {".czi": "bioio-czi", ".nd2": "bioio-nd2", ".lif": "bioio-lif",
           ".zarr": "bioio-ome-zarr"}

_INSTALL = 'pip install "napari-mfif[formats]"'


def is_ome_zarr(path: str | Path) -> bool:
    """True if ``path`` is a directory that holds a zarr group (v2 or v3)."""
    path = Path(path)
    return path.is_dir() and any((path / name).is_file()
                                 for name in (".zattrs", ".zgroup", "zarr.json"))


def is_microscope_file(path: str | Path) -> bool:
    """True if ``path`` is a file this module reads: a .czi, .nd2 or .lif file, or an
    OME-Zarr directory (with or without the .zarr suffix)."""
    path = Path(path)
    if path.suffix.lower() in (".czi", ".nd2", ".lif"):
        return path.is_file()
    return is_ome_zarr(path)


@dataclass(frozen=True)
class MicroscopeStack:
    """One scene of a microscope file, ready to be fused.

    Attributes
    ----------
    path : Path
        The file (or OME-Zarr directory).
    scene : str
        The scene's name in the file.
    scene_index : int
        Its position among ``scenes``.
    scenes : tuple of str
        All scenes (positions) of the file.
    data : dask array
        The pixels, axes as ``dims`` names them, read on demand.
    dims : str
        ``"TCZYX"``, or ``"TCZYXS"`` for RGB samples.
    channel_names : tuple of str
    pixel_size : tuple of float or None
        (y, x) in micrometres, None where the file does not say.
    z_positions : ndarray or None
        The z of each plane in file order, in micrometres; None where the file gives no z.
    z_source : str
        Where ``z_positions`` came from, in words, for the run summary.
    """

    path: Path
    scene: str
    scene_index: int
    scenes: tuple[str, ...]
    data: Any
    dims: str
    channel_names: tuple[str, ...]
    pixel_size: tuple[float, float] | None
    z_positions: np.ndarray | None
    z_source: str

    @property
    def sizes(self) -> dict[str, int]:
        return dict(zip(self.dims, self.data.shape))

    def z_order(self) -> np.ndarray:
        """Plane indices in rising z (file order where z is unknown or already rising)."""
        n = self.sizes["Z"]
        if self.z_positions is None:
            return np.arange(n)
        return np.argsort(self.z_positions, kind="stable")

    def data_in_z_order(self):
        """:attr:`data` with its planes in rising z (as it is where they already rise)."""
        order = self.z_order()
        if np.array_equal(order, np.arange(len(order))):
            return self.data
        return self.data[:, :, order]

    def sorted_z(self) -> np.ndarray | None:
        """The planes' z in micrometres in the order of :meth:`z_order` (rising)."""
        if self.z_positions is None:
            return None
        return np.asarray(self.z_positions, dtype=np.float64)[self.z_order()]

    def describe(self) -> str:
        """One line: dimensions and where the z values come from."""
        sizes = ", ".join(f"{k} {v}" for k, v in self.sizes.items() if k in "TCZ")
        return f"{sizes}; {self.z_source}"


def height_in_micrometres(index_map: np.ndarray, z: np.ndarray) -> np.ndarray:
    """A height map in slices (0 = first plane of the fused order) turned into micrometres
    by the planes' z values ``z`` (rising): linear between planes for a fractional index."""
    z = np.asarray(z, dtype=np.float64)
    if len(z) == 1:
        return np.full(np.shape(index_map), z[0], dtype=np.float32)
    return np.interp(np.asarray(index_map, dtype=np.float64), np.arange(len(z)), z
                     ).astype(np.float32)


def _need(module: str, package: str, what: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise MfifError(f"reading {what} needs the {package} package: {_INSTALL}")


def _attributes(path: Path) -> dict:
    """A zarr group's attributes (v2 .zattrs or v3 zarr.json), with an NGFF 0.5 "ome"
    block flattened into them."""
    try:
        if (path / ".zattrs").is_file():
            attrs = json.loads((path / ".zattrs").read_text())
        elif (path / "zarr.json").is_file():
            attrs = json.loads((path / "zarr.json").read_text()).get("attributes", {})
        else:
            return {}
    except (OSError, ValueError) as exc:
        raise MfifError(f"cannot read the zarr metadata of {path}: {exc}") from None
    return {**attrs, **attrs.get("ome", {})} if isinstance(attrs, dict) else {}


def _zarr_images(path: Path) -> list[Path]:
    """The images (groups with ``multiscales``) of an OME-Zarr: the path itself, or the
    series of a bioformats2raw layout (its root holds ``bioformats2raw.layout``; the
    images are the groups it lists in ``OME/``, else ``0``, ``1``, ...)."""
    attrs = _attributes(path)
    if "multiscales" in attrs:
        return [path]
    if "bioformats2raw.layout" in attrs:
        series = _attributes(path / "OME").get("series")
        if not series:
            series, i = [], 0
            while (path / str(i)).is_dir():
                series.append(str(i))
                i += 1
        images = [path / s for s in series if "multiscales" in _attributes(path / s)]
        if images:
            return images
    raise MfifError(f"{path} is a zarr group but not an OME-Zarr image (no 'multiscales' "
                    "in its metadata, and not a bioformats2raw layout)")


def list_scenes(path: str | Path) -> tuple[str, ...]:
    """The names of the scenes (positions, series) in a microscope file."""
    return tuple(_scenes(Path(path))[0])


def open_stack(path: str | Path, scene: int | str | None = None) -> MicroscopeStack:
    """Open one scene of a CZI, ND2, LIF or OME-Zarr file, lazily.

    Parameters
    ----------
    path : str or path-like
        The file, or the OME-Zarr directory (a bioformats2raw layout opens from its root).
    scene : int or str, optional
        The scene's index or name; default the first.

    Returns
    -------
    MicroscopeStack
    """
    return open_scenes(path, [0 if scene is None else scene])[0]


def open_scenes(path: str | Path, scenes: Sequence[int | str] | str | None = None
                ) -> list[MicroscopeStack]:
    """Every scene of the file (``scenes="all"`` or None), or the ones named (indices or
    names), each as :func:`open_stack` gives it; the file is opened once."""
    path = Path(path)
    names, make = _scenes(path)
    if scenes is None or scenes == "all":
        return [make(i) for i in range(len(names))]
    return [make(_scene_index(s, names, path)) for s in scenes]


def tiff_plane_positions(path: str | Path) -> np.ndarray | None:
    """The z of each plane (µm, file order) of an OME-TIFF whose OME-XML gives every plane
    its own ``PositionZ`` (at C 0, T 0) and not all the same; None for any other file."""
    import tifffile

    from .io import _quiet_tifffile

    path = Path(path)
    try:
        with _quiet_tifffile(), tifffile.TiffFile(path) as tif:
            if not tif.is_ome:
                return None
            xml = tif.ome_metadata
        image = tifffile.xml2dict(xml)["OME"]["Image"]
        pixels = (image[0] if isinstance(image, list) else image)["Pixels"]
        planes = pixels.get("Plane", [])
        planes = planes if isinstance(planes, list) else [planes]
        n = int(pixels.get("SizeZ", 1))
    except Exception:  # noqa: BLE001 - not a readable OME-TIFF: the TIFF reader says why
        return None
    from .io import _micrometres_per

    z = {}
    for plane in planes:
        if int(plane.get("TheC", 0)) == 0 and int(plane.get("TheT", 0)) == 0 \
                and plane.get("PositionZ") is not None:
            factor = _micrometres_per(plane.get("PositionZUnit", "µm"))
            if factor is None:
                return None
            z[int(plane.get("TheZ", 0))] = float(plane["PositionZ"]) * factor
    if n < 2 or sorted(z) != list(range(n)):
        return None
    values = np.array([z[i] for i in range(n)])
    return None if np.ptp(values) == 0 else values - values[0]


def _ome_tiff_stack(path: Path, z: np.ndarray) -> MicroscopeStack:
    """An OME-TIFF with per-plane z positions as a one-scene MicroscopeStack (tifffile)."""
    import dask.array as da
    import tifffile

    from .io import _first_series, read_image, read_physical_scale

    with tifffile.TiffFile(path) as tif:
        axes = _first_series(path, tif).axes
    if not set(axes) <= set("TCZYXS") or "Z" not in axes:
        raise MfifError(f"{path.name}: axes {axes!r} are not T, C, Z, Y, X")
    data = read_image(path)
    wanted = "TCZYX" + ("S" if "S" in axes else "")
    for axis in wanted:
        if axis not in axes:
            data, axes = data[np.newaxis], axis + axes
    data = np.transpose(data, [axes.index(a) for a in wanted])
    scale, units = read_physical_scale(path)
    pixel = None
    if units is not None and units[-2:] == ("µm", "µm"):
        pixel = (float(scale[-2]), float(scale[-1]))
    return MicroscopeStack(path=path, scene=path.name, scene_index=0, scenes=(path.name,),
                           data=da.from_array(data), dims=wanted, channel_names=(),
                           pixel_size=pixel, z_positions=z,
                           z_source="z from the planes' positions in the file")


def _scenes(path: Path):
    """The scene names of a microscope file, and ``make(i)`` opening scene ``i`` as a
    MicroscopeStack (no pixels read; the file's metadata read once)."""
    if not path.exists():
        raise MfifError(f"no such file: {path}")
    if path.is_file() and path.suffix.lower() in (".tif", ".tiff"):
        z = tiff_plane_positions(path)
        if z is None:
            raise MfifError(f"{path.name} is a TIFF without per-plane z positions: the TIFF "
                            "reader (napari_mfif.io) reads it")
        return [path.name], lambda i: _ome_tiff_stack(path, z)
    if is_ome_zarr(path):
        _need("bioio_ome_zarr", "bioio-ome-zarr", "OME-Zarr")
        images = _zarr_images(path)
        names = [_zarr_name(p) for p in images]
        return names, lambda i: _from_bioio(path, _bioimage(images[i], zarr=True), names, i, 0)
    suffix = path.suffix.lower()
    if suffix not in PLUGINS:
        raise MfifError(f"cannot read {path.name}: not a CZI, ND2, LIF or OME-Zarr file")
    _need("bioio", "bioio", f"{suffix} files")
    module = PLUGINS[suffix].replace("-", "_")
    _need(module, PLUGINS[suffix], f"{suffix} files")
    image = _bioimage(path)
    names = [str(s) for s in image.scenes]
    return names, lambda i: _from_bioio(path, image, names, i, i)


def split_name(name: str) -> tuple[str, str]:
    """A file name as (stem, extension), where ".ome.tif", ".ome.tiff" and ".ome.zarr"
    count as one extension: ``fused.ome.zarr`` -> ("fused", ".ome.zarr")."""
    for ext in (".ome.tiff", ".ome.tif", ".ome.zarr"):
        if name.lower().endswith(ext):
            return name[:-len(ext)], name[-len(ext):]
    path = Path(name)
    return path.stem, path.suffix


def _stem(path: Path) -> str:
    """A file's name without its extension (".ome.zarr", ".ome.tif" count as one)."""
    return split_name(path.name)[0]


def _zarr_name(image: Path) -> str:
    for entry in _attributes(image).get("multiscales", []):
        if entry.get("name"):
            return str(entry["name"])
    return image.name


def _scene_index(scene: int | str, names: Sequence[str], path: Path) -> int:
    if isinstance(scene, str) and scene.strip().lstrip("-").isdigit():
        scene = int(scene)
    if isinstance(scene, (int, np.integer)):
        if not 0 <= scene < len(names):
            raise MfifError(f"{path.name} has {len(names)} scene{'s' * (len(names) != 1)} "
                            f"(0 to {len(names) - 1}), not scene {scene}")
        return int(scene)
    if scene in names:
        return names.index(scene)
    raise MfifError(f"{path.name} has no scene named {scene!r}; its scenes: "
                    f"{', '.join(names)}")


def _bioimage(path: Path, zarr: bool = False):
    from bioio import BioImage

    kwargs = {}
    if zarr:
        import bioio_ome_zarr

        kwargs["reader"] = bioio_ome_zarr.Reader  # picked by suffix otherwise; a series
        # of a bioformats2raw layout ("root/0") has none
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return BioImage(path, **kwargs)
    except Exception as exc:  # the plugins raise many types for damaged files
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise MfifError(f"cannot read {path}: {text}") from None


def _from_bioio(path: Path, image, names: list[str], index: int, scene: int
                ) -> MicroscopeStack:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        image.set_scene(scene)
        dims = "".join(image.dims.order)
        wanted = "TCZYXS" if "S" in dims and image.dims.S > 1 else "TCZYX"
        data = image.get_image_dask_data(wanted)
        sizes = image.physical_pixel_sizes
        channels = tuple(str(c) for c in (image.channel_names or []))
        positions = _plane_positions(image, data.shape[2])
    pixel = None
    if _usable(sizes.Y) and _usable(sizes.X):
        pixel = (abs(float(sizes.Y)), abs(float(sizes.X)))
    n = data.shape[2]
    if positions is not None:
        z, source = positions, "z from the planes' positions in the file"
    elif sizes.Z is not None and _usable(sizes.Z):
        z = np.arange(n) * float(sizes.Z)
        source = f"z step {_um(float(sizes.Z))} from the file"
    else:
        z, source = None, "z step unknown (the file does not store it): height in slices"
    return MicroscopeStack(path=path, scene=names[index], scene_index=index,
                           scenes=tuple(names), data=data, dims=wanted,
                           channel_names=channels, pixel_size=pixel, z_positions=z,
                           z_source=source)


def _usable(value) -> bool:
    return value is not None and math.isfinite(float(value)) and float(value) != 0


def _um(value: float) -> str:
    return f"{value:g} µm"


def _plane_positions(image, n: int) -> np.ndarray | None:
    """Per-plane z positions (µm) from OME metadata where the file stores one for each
    plane (at C 0, T 0) and they are not all the same; else None (the z step is used)."""
    if n < 2:
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pixels = image.ome_metadata.images[image.current_scene_index].pixels
    except Exception:  # noqa: BLE001 - readers without OME metadata raise many types
        return None
    z = {}
    for plane in pixels.planes or []:
        if plane.the_c == 0 and plane.the_t == 0 and plane.position_z is not None:
            from .io import _micrometres_per

            unit = getattr(plane.position_z_unit, "value", plane.position_z_unit)
            factor = _micrometres_per(unit) if unit is not None else 1.0
            if factor is None:
                return None
            z[plane.the_z] = float(plane.position_z) * factor
    if sorted(z) != list(range(n)):
        return None
    values = np.array([z[i] for i in range(n)])
    if np.ptp(values) == 0:
        return None  # the stage z of every frame (ND2): the step says more
    return values - values[0]


@dataclass(frozen=True)
class SceneResult:
    """What :func:`fuse_scene` gives.

    Attributes
    ----------
    image : ndarray
        The fused image, the file's dtype: axes ``axes`` (T only where the file has
        several time points, C only where it has several channels).
    height : ndarray
        float32, (T, Y, X) or (Y, X): in micrometres where ``z`` is known, else in slices
        (0 = the lowest plane).
    axes : str
        The axes of ``image``: "YX", "CYX", "TYX", "TCYX", or with a trailing "S" for RGB.
    z : ndarray or None
        The z of the planes in the order fused (rising), micrometres; None if unknown.
    result : FusionResult
        What :func:`napari_mfif.fuse` returned (height in slices of the fused order).
    """

    image: np.ndarray
    height: np.ndarray
    axes: str
    z: np.ndarray | None
    result: Any

    @property
    def height_units(self) -> str:
        return "µm" if self.z is not None else "slices"


def fuse_scene(stack: MicroscopeStack, method: str | None = None, **kwargs) -> SceneResult:
    """Fuse one scene of a microscope file: every time point on its own, the planes in
    rising z (a file that records them top down, with a negative z step, is turned over),
    channels by :func:`napari_mfif.fuse`'s rule for multichannel stacks.

    ``method`` and ``kwargs`` are passed to :func:`napari_mfif.fuse` (not its axes, which
    the file names). The pixels are read here, whole: check the memory first
    (:func:`napari_mfif.check_fits`) for a large scene.
    """
    from ._api import fuse
    from .registry import DEFAULT_METHOD

    for key in ("channel_axis", "time_axis", "z_axis"):
        if kwargs.get(key) is not None:
            raise MfifError(f"{key} is read from the file's metadata here, not given")
        kwargs.pop(key, None)
    data = stack.data_in_z_order()
    if stack.sizes["C"] > 1 and "S" in stack.dims:
        raise MfifError(f"{stack.path.name}: RGB samples in several channels cannot be fused "
                        "together; export one channel")
    keep = [i for i, (axis, n) in enumerate(zip(stack.dims, data.shape))
            if axis not in "TC" or n > 1]
    index = tuple(slice(None) if i in keep else 0 for i in range(data.ndim))
    array = np.asarray(data[index])
    axes = "".join(stack.dims[i] for i in keep)
    layout = {"z_axis": axes.index("Z"),
              "channel_axis": axes.index("C") if "C" in axes else None,
              "time_axis": axes.index("T") if "T" in axes else None}
    result = fuse(array, method=method or DEFAULT_METHOD, **layout, **kwargs)
    z = stack.sorted_z()
    height = result.index_map if z is None else height_in_micrometres(result.index_map, z)
    image = result.image
    out_axes = ("T" if "T" in axes else "") + "YX" + ("S" if "S" in axes else "")
    if "C" in axes:  # fuse() puts channels last; OME-TIFF and napari want them before Y, X
        image = np.moveaxis(image, -1, 1 if "T" in axes else 0)
        out_axes = out_axes.replace("YX", "CYX")
    return SceneResult(image=image, height=np.asarray(height, dtype=np.float32),
                       axes=out_axes, z=z, result=result)
