"""Fusion between napari layers: what the widgets do, callable from a script.

Scripted use (the widgets call these same functions)::

    import napari, napari_mfif.layers as ml
    viewer = napari.Viewer()
    (stack,) = viewer.open("stack.tif", plugin="napari-mfif")
    fused, height, *_ = ml.fuse_layer(viewer, stack, method="cnn")
    ml.add_height_surface(viewer, fused)   # the height map as a 3-D surface

Result layers are named after the input (``"<name> fused"``, ``"<name> height map"``, ...),
take its scale, translate and units, and running again updates them instead of adding new
ones. napari itself is imported only by the functions that take a viewer.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from ._errors import MfifError

if TYPE_CHECKING:  # pragma: no cover
    import napari

    from ._api import FusionResult, PairMaps

LayerDataTuple = tuple  # (data, kwargs, layer_type), as napari's LayerDataTuple


@dataclass(frozen=True)
class Geometry:
    """Where a stack sits in the world: (Y, X) scale, translate and units of its slices,
    and the z step between slices (None when unknown) with its origin and unit."""

    name: str
    scale: tuple[float, float]
    translate: tuple[float, float]
    units: tuple[str, str] | None = None
    z_step: float | None = None
    z_origin: float = 0.0
    z_unit: str | None = None

    def common(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"scale": self.scale, "translate": self.translate}
        if self.units is not None:
            kwargs["units"] = self.units
        return kwargs


def _unit_name(unit: Any) -> str | None:
    """A short unit name ('µm'), or None for napari's default 'pixel'."""
    if unit is None:
        return None
    try:
        text = f"{unit:~P}"  # pint's abbreviated, pretty form
    except (TypeError, ValueError):
        text = str(unit)
    return None if text in ("", "px", "pixel", "dimensionless") else text


def _layer_units(layer: Any, axes: Sequence[int]) -> list[str | None]:
    units = getattr(layer, "units", None)
    if units is None:
        return [None] * len(axes)
    return [_unit_name(units[i]) for i in axes]


def _z_step(layer_scale: float, unit: str | None, override: float | None) -> float | None:
    if override is not None and override > 0:
        return float(override)
    if unit is not None or layer_scale != 1.0:
        return float(layer_scale)
    return None  # a scale of 1 pixel and no unit: the step was never set


def time_axis_of(layer) -> int | None:
    """The axis of a 4-D image layer that holds time points, where our reader named it
    (``T`` in ``metadata["napari_mfif"]["axes"]``, e.g. a CZI time series); else None."""
    axes = (getattr(layer, "metadata", None) or {}).get("napari_mfif", {}).get("axes")
    if not isinstance(axes, str) or getattr(layer, "ndim", 0) != 4:
        return None
    axes = axes.replace("S", "") if getattr(layer, "rgb", False) else axes
    return axes.index("T") if len(axes) == 4 and "T" in axes else None


def stack_from_layer(layer: "napari.layers.Image", z_axis: int = 0, *,
                     z_step: float | None = None,
                     time_point: int | None = None) -> tuple[Any, Geometry]:
    """The stack held by one image layer, z axis first, and where it sits.

    Grey (Z, Y, X) and RGB (Z, Y, X, 3|4) layers are accepted, in memory or lazy (dask,
    computed only when fused); a multiscale layer gives its full-resolution level.
    ``z_step`` overrides the layer's z scale (None or 0: take the layer's). A (T, Z, Y, X)
    layer whose time axis our reader named (:func:`time_axis_of`) gives the stack of
    ``time_point`` (default 0); ``z_axis`` then counts the axes left.
    """
    data = layer.data[0] if getattr(layer, "multiscale", False) else layer.data
    t_axis = time_axis_of(layer)
    if t_axis is not None:
        n = int(data.shape[t_axis])
        t = 0 if time_point is None else int(time_point)
        if not 0 <= t < n:
            raise MfifError(f"layer {layer.name!r} has time points 0 to {n - 1}, not {t}")
        return _time_point_stack(layer, data, t_axis, t, z_axis, z_step)
    ndim = layer.ndim  # spatial dimensions; an RGB layer's colour axis is not counted
    if ndim < 3:
        raise MfifError(
            f"layer {layer.name!r} is a single 2-D image; pick a layer that holds a z-stack, "
            "or two or more 2-D layers as slices"
        )
    if ndim > 3:
        raise MfifError(
            f"layer {layer.name!r} has {ndim} dimensions; only (Z, Y, X) stacks, grey or "
            "RGB, are supported so far"
        )
    if not -ndim <= z_axis < ndim:
        raise MfifError(f"z axis {z_axis} does not exist in the 3-D layer {layer.name!r}")
    z_axis %= ndim
    stack = data if z_axis == 0 else np.moveaxis(data, z_axis, 0)  # a view (dask stays lazy)
    keep = [i for i in range(ndim) if i != z_axis]
    units = _layer_units(layer, [z_axis, *keep])
    geometry = Geometry(
        name=layer.name,
        scale=tuple(float(layer.scale[i]) for i in keep),
        translate=tuple(float(layer.translate[i]) for i in keep),
        units=(units[1] or "pixel", units[2] or "pixel") if any(units[1:]) else None,
        z_step=_z_step(float(layer.scale[z_axis]), units[0], z_step),
        z_origin=float(layer.translate[z_axis]),
        z_unit=units[0],
    )
    return stack, geometry


def _time_point_stack(layer, data, t_axis: int, t: int, z_axis: int,
                     z_step: float | None) -> tuple[Any, Geometry]:
    """stack_from_layer for one time point of a (T, Z, Y, X) layer."""
    from types import SimpleNamespace

    keep = [i for i in range(4) if i != t_axis]
    units = _layer_units(layer, list(range(4)))
    view = SimpleNamespace(
        name=f"{layer.name} t{t}", data=data[(slice(None),) * t_axis + (t,)],  # a view
        ndim=3, rgb=getattr(layer, "rgb", False), multiscale=False,
        scale=[float(layer.scale[i]) for i in keep],
        translate=[float(layer.translate[i]) for i in keep],
        units=[units[i] or "pixel" for i in keep] if any(units) else None)
    return stack_from_layer(view, z_axis, z_step=z_step)


def set_name(names: Sequence[str]) -> str:
    """A name for a stack made of 2-D layers: what their names share, without the slice
    numbers and separators that follow (``plane_01`` ... ``plane_12`` -> ``plane``;
    ``DSC_0356`` ... -> ``DSC``), else ``slices``."""
    import os

    common = os.path.commonprefix([str(n) for n in names]) if len(names) > 1 else ""
    common = common.rstrip("0123456789").rstrip(" _-.=([")
    return common or "slices"


def is_result(layer) -> bool:
    """True for a layer this plugin made from a fusion or a focus map (fused image, height
    map, weights, surface, focus maps): not an input to offer."""
    info = (getattr(layer, "metadata", None) or {}).get("napari_mfif", {})
    return isinstance(info, dict) and ("method" in info or "decision_from" in info)


def stack_from_layers(layers: Sequence["napari.layers.Image"], *,
                      z_step: float | None = None) -> tuple[list, Geometry]:
    """Two or more 2-D image layers (grey or RGB) taken as slices, in the order given."""
    layers = list(layers)
    if len(layers) < 2:
        raise MfifError(
            f"{len(layers)} layer{'s' if len(layers) != 1 else ''} selected; pick two or more "
            "2-D layers as slices"
        )
    first = layers[0]
    for layer in layers:
        if layer.ndim != 2:
            raise MfifError(
                f"layer {layer.name!r} is not a 2-D image ({layer.ndim} dimensions); as slices "
                "pick 2-D layers, or fuse a 3-D layer as one stack"
            )
        if layer.rgb != first.rgb or layer.data.shape != first.data.shape:
            raise MfifError(
                f"layer {layer.name!r} has shape {tuple(layer.data.shape)} but {first.name!r} "
                f"has {tuple(first.data.shape)}; all slices must have the same shape"
            )
        if layer.data.dtype != first.data.dtype:
            raise MfifError(
                f"layer {layer.name!r} is {layer.data.dtype} but {first.name!r} is "
                f"{first.data.dtype}; all slices must have the same dtype"
            )
    slices = [layer.data[0] if layer.multiscale else layer.data for layer in layers]
    units = _layer_units(first, [0, 1])
    geometry = Geometry(
        name=set_name([layer.name for layer in layers]),
        scale=(float(first.scale[0]), float(first.scale[1])),
        translate=(float(first.translate[0]), float(first.translate[1])),
        units=(units[0] or "pixel", units[1] or "pixel") if any(units) else None,
        z_step=float(z_step) if z_step else None,
    )
    return slices, geometry


def result_layer_data(result: "FusionResult", geometry: Geometry, *,
                      contrast_limits: Sequence[float] | None = None) -> list[LayerDataTuple]:
    """The layers of a fusion: fused image, height map in slices, height in physical units
    (when the z step is known) and each slice's weights (when the result has them)."""
    z = int(result.weights.shape[0]) if result.weights is not None else None
    geometry = aligned_geometry(geometry, result.alignment)
    name = geometry.name
    info = {"source": name, "method": result.method, "mode": result.mode,
            "device": result.device, "params": result.params}
    if result.alignment is not None:
        a = result.alignment
        info["alignment"] = {"box": tuple(int(v) for v in a.box), "shifts": a.shifts.tolist(),
                             "scales": a.scales.tolist(), "report": a.report()}
    common = geometry.common()
    fused_kwargs: dict[str, Any] = {"name": f"{name} fused", "metadata": {"napari_mfif": info},
                                    **common}
    rgb = result.image.ndim == 3 and result.image.shape[-1] in (3, 4)
    fused_kwargs["rgb"] = rgb
    if contrast_limits is not None and not rgb:
        fused_kwargs["contrast_limits"] = tuple(float(c) for c in contrast_limits)
    top = float(max(result.index_map.max(initial=0.0), 1.0))
    out = [
        (result.image, fused_kwargs, "image"),
        (result.index_map, {"name": f"{name} height map", "colormap": "viridis",
                            "contrast_limits": (0.0, top),
                            "metadata": {"napari_mfif": {**info, "units": "slice",
                                                         "z_step": geometry.z_step,
                                                         "z_origin": geometry.z_origin,
                                                         "z_unit": geometry.z_unit}},
                            **common},
         "image"),
    ]
    if geometry.z_step is not None:
        unit = geometry.z_unit or "z units"
        height = (geometry.z_origin + result.index_map * geometry.z_step).astype(np.float32)
        lo, hi = sorted((geometry.z_origin, geometry.z_origin + top * geometry.z_step))
        out.append((height, {"name": f"{name} height ({unit})", "colormap": "viridis",
                             "contrast_limits": (lo, hi if hi > lo else lo + 1),
                             "metadata": {"napari_mfif": {**info, "units": unit,
                                                          "z_step": geometry.z_step}},
                             **common}, "image"))
    if result.weights is not None:
        scale = ((geometry.z_step or 1.0), *geometry.scale)
        translate = (geometry.z_origin, *geometry.translate)
        kwargs = {"name": f"{name} weights", "colormap": "magma", "contrast_limits": (0.0, 1.0),
                  "scale": scale, "translate": translate,
                  "metadata": {"napari_mfif": {**info, "n_slices": z}}}
        if geometry.units is not None:
            kwargs["units"] = (geometry.z_unit or "pixel", *geometry.units)
        out.append((result.weights, kwargs, "image"))
    return out


def aligned_geometry(geometry: Geometry, alignment: Any) -> Geometry:
    """Where an aligned (cropped) result sits: its crop box offset added to the translate."""
    if alignment is None:
        return geometry
    y0, _, x0, _ = alignment.box
    sy, sx = geometry.scale
    ty, tx = geometry.translate
    return replace(geometry, translate=(ty + y0 * sy, tx + x0 * sx))


def applied_layer_data(image: np.ndarray, layer: Any, result: "FusionResult",
                       geometry: Geometry) -> LayerDataTuple:
    """A layer for another stack (another channel) fused with ``result``'s decision."""
    geometry = aligned_geometry(geometry, result.alignment)
    rgb = image.ndim == 3 and image.shape[-1] in (3, 4)
    kwargs: dict[str, Any] = {
        "name": f"{layer.name} fused", "rgb": rgb, **geometry.common(),
        "metadata": {"napari_mfif": {"source": layer.name, "decision_from": geometry.name,
                                     "method": result.method, "mode": result.mode}},
    }
    if not rgb:
        kwargs["contrast_limits"] = tuple(float(c) for c in layer.contrast_limits)
        kwargs["colormap"] = layer.colormap.name
    return (image, kwargs, "image")


def pair_layer_data(maps: "PairMaps", geometry: Geometry, slice_a: int,
                    slice_b: int) -> list[LayerDataTuple]:
    """The focus inspector's layers: the method's score and its decision for slices A, B."""
    info = {"source": geometry.name, "method": maps.method, "device": maps.device,
            "params": maps.params, "slice_a": slice_a, "slice_b": slice_b}
    common = {**geometry.common(), "colormap": "viridis", "contrast_limits": (0.0, 1.0),
              "metadata": {"napari_mfif": info}}
    return [
        (maps.score, {"name": f"{geometry.name} focus score", **common}, "image"),
        (maps.decision, {"name": f"{geometry.name} focus decision", **common}, "image"),
    ]


#: the most vertices :func:`height_surface` makes by default (a 500 x 500 grid)
SURFACE_MAX_VERTICES = 250_000
#: Rec. 601 luma weights of (R, G, B)
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)


def surface_step(shape: Sequence[int], max_vertices: int = SURFACE_MAX_VERTICES) -> int:
    """The smallest grid step (in pixels) that keeps a surface over an image of ``shape``
    (Y, X) within ``max_vertices`` vertices (1 for images up to about 500 x 500)."""
    h, w = int(shape[0]), int(shape[1])
    step = max(1, int(np.ceil(np.sqrt(h * w / max_vertices))))
    while len(_grid(h, step)) * len(_grid(w, step)) > max_vertices:
        step += 1
    return step


def _grid(n: int, step: int) -> np.ndarray:
    """Every ``step``-th index of ``n``, and the last one, so the grid covers the image."""
    index = np.arange(0, n, step)
    return index if index[-1] == n - 1 else np.append(index, n - 1)


def _luma(image: np.ndarray) -> np.ndarray:
    """Grey values as float32; RGB(A) as Rec. 601 luma (alpha dropped)."""
    image = np.asarray(image)
    if image.ndim == 3:
        return np.tensordot(image[..., :3].astype(np.float32), _LUMA, axes=([-1], [0]))
    return image.astype(np.float32)


def _luma_range(image: Any) -> tuple[float, float]:
    """The fused image's (luma) range, read by bands of rows (no full float copy)."""
    rows = max(1, 2**22 // max(1, int(image.shape[1])))
    lo, hi = np.inf, -np.inf
    for y in range(0, int(image.shape[0]), rows):
        band = _luma(image[y:y + rows])
        lo, hi = min(lo, float(np.nanmin(band))), max(hi, float(np.nanmax(band)))
    if not np.isfinite(lo) or not np.isfinite(hi):
        lo, hi = 0.0, 1.0
    return lo, (hi if hi > lo else lo + 1.0)


def height_surface(fused_image: Any, height_map: Any, *, z_step: float | None = None,
                   scale: Sequence[float] = (1.0, 1.0),
                   translate: Sequence[float] = (0.0, 0.0), step: int | None = None,
                   name: str = "height surface", z_origin: float = 0.0,
                   z_unit: str | None = None, units: Sequence[str] | None = None,
                   contrast_limits: Sequence[float] | None = None,
                   metadata: dict | None = None) -> LayerDataTuple:
    """The height map as a napari Surface layer textured with the fused image:
    ``((vertices, faces, values), kwargs, "surface")``, for ``viewer.add_surface(data,
    **kwargs)`` or :func:`put_layers`.

    A triangulated grid over every ``step``-th pixel (and the last row and column), two
    triangles per grid cell. Vertices are (z, y, x) in world coordinates: z = ``z_origin``
    + height (in slices) x ``z_step`` (physical units when the z step is known, otherwise
    slices: ``z_step=None`` counts as 1), y = ``translate[0]`` + row x ``scale[0]``, x alike,
    so the surface sits over the stack and the fused image. ``values`` are the fused image
    at the vertices as float32 (RGB as Rec. 601 luma), shown with the gray colormap and the
    contrast limits of the whole fused image (or ``contrast_limits``).

    ``step`` None picks the smallest step that keeps the mesh within
    :data:`SURFACE_MAX_VERTICES` vertices (1 up to about 500 x 500 pixels). ``units`` are
    the (Y, X) units, given to the layer with ``z_unit`` when both are known. The layer's
    ``metadata["napari_mfif"]`` says what z is in (``z_units``: the unit, or ``"slice"``),
    the z step and the grid step.
    """
    height_map = np.asarray(height_map) if not hasattr(height_map, "shape") else height_map
    if len(height_map.shape) != 2:
        raise MfifError(f"the height map has shape {tuple(height_map.shape)}; a surface needs "
                        "a 2-D (Y, X) height map")
    h, w = (int(n) for n in height_map.shape)
    shape = tuple(int(n) for n in fused_image.shape)
    rgb = len(shape) == 3 and shape[-1] in (3, 4)
    if shape[:2] != (h, w) or len(shape) != (3 if rgb else 2):
        raise MfifError(f"the fused image has shape {shape} but the height map {(h, w)}; "
                        "they must be of the same fusion")
    if h < 2 or w < 2:
        raise MfifError(f"a {h} x {w} height map is too small for a surface (2 x 2 at least)")
    if step is None:
        step = surface_step((h, w))
    step = int(step)
    if step < 1:
        raise MfifError(f"the surface grid step is {step}; it must be 1 pixel or more")
    rows, cols = _grid(h, step), _grid(w, step)
    known = z_step is not None and z_step > 0
    dz = float(z_step) if known else 1.0

    heights = np.asarray(height_map[rows][:, cols], np.float32)
    yy, xx = np.meshgrid(translate[0] + rows * float(scale[0]),
                         translate[1] + cols * float(scale[1]), indexing="ij")
    vertices = np.stack([float(z_origin) + heights * dz, yy, xx], axis=-1)
    vertices = vertices.reshape(-1, 3).astype(np.float32)

    index = np.arange(len(rows) * len(cols), dtype=np.int32).reshape(len(rows), len(cols))
    top_left, top_right = index[:-1, :-1].ravel(), index[:-1, 1:].ravel()
    bottom_left, bottom_right = index[1:, :-1].ravel(), index[1:, 1:].ravel()
    faces = np.concatenate([np.stack([top_left, bottom_left, top_right], axis=1),
                            np.stack([top_right, bottom_left, bottom_right], axis=1)])

    values = _luma(np.asarray(fused_image[rows][:, cols])).reshape(-1)
    limits = (tuple(float(c) for c in contrast_limits) if contrast_limits is not None
              else _luma_range(fused_image))
    z_units = (z_unit or "z units") if known else "slice"
    info = {**(metadata or {}), "z_units": z_units, "z_step": float(z_step) if known else None,
            "z_origin": float(z_origin), "grid_step": step,
            "n_vertices": int(len(vertices)), "texture": "luma" if rgb else "grey"}
    kwargs: dict[str, Any] = {"name": name, "colormap": "gray", "contrast_limits": limits,
                              "shading": "none", "metadata": {"napari_mfif": info}}
    if units is not None and known and z_unit is not None:
        kwargs["units"] = (z_unit, *units)
    return ((vertices, faces, values), kwargs, "surface")


def surface_layer_data(result: "FusionResult", geometry: Geometry, *,
                       step: int | None = None) -> LayerDataTuple:
    """``"<name> surface"``: a fusion's height map as a 3-D surface textured with its fused
    image (:func:`height_surface`), placed like the other result layers (an aligned result
    at its crop offset) and, when the z step is known, z in its unit over the stack."""
    geometry = aligned_geometry(geometry, result.alignment)
    info = {"source": geometry.name, "method": result.method, "mode": result.mode}
    return height_surface(result.image, result.index_map, z_step=geometry.z_step,
                          scale=geometry.scale, translate=geometry.translate, step=step,
                          name=f"{geometry.name} surface", z_origin=geometry.z_origin,
                          z_unit=geometry.z_unit, units=geometry.units, metadata=info)


def add_height_surface(viewer: "napari.Viewer", fused: Any, height: Any = None, *,
                       geometry: Geometry | None = None, z_step: float | None = None,
                       step: int | None = None) -> Any:
    """Add (or update) ``"<name> surface"``, the height map of a fusion as a 3-D surface
    textured with the fused image, and return the layer. See it in 3-D with napari's 2D/3D
    button (or ``viewer.dims.ndisplay = 3``); the display is not switched here.

    ``fused`` is the ``"<name> fused"`` layer of a run (its ``"<name> height map"`` layer is
    found by name unless ``height``, a layer or an array in slices, is given; its z step and
    origin come from that layer's metadata unless ``z_step`` is given), or a
    :class:`~napari_mfif.FusionResult` with the ``geometry`` of its stack
    (:func:`stack_from_layer`; without it: pixels, z in slices).
    """
    if hasattr(fused, "index_map"):  # a FusionResult
        base = geometry or Geometry(name="fusion", scale=(1.0, 1.0), translate=(0.0, 0.0))
        if z_step is not None:
            base = replace(base, z_step=float(z_step))
        if height is not None:
            fused = replace(fused, index_map=np.asarray(getattr(height, "data", height)))
        return put_layers(viewer, [surface_layer_data(fused, base, step=step)])[0]

    info = (getattr(fused, "metadata", None) or {}).get("napari_mfif", {})
    name = info.get("source") or fused.name.removesuffix(" fused")
    if height is None:
        key = f"{name} height map"
        if key not in viewer.layers:
            raise MfifError(f"there is no layer {key!r}; fuse {name!r} first, or give the "
                            "height map")
        height = viewer.layers[key]
    z_origin, z_unit = 0.0, None
    if hasattr(height, "data"):  # a layer: its z geometry from its metadata
        meta = (getattr(height, "metadata", None) or {}).get("napari_mfif", {})
        height_data = height.data[0] if getattr(height, "multiscale", False) else height.data
        z_origin = float(meta.get("z_origin") or 0.0)
        z_unit = meta.get("z_unit")
        if z_step is None:
            z_step = meta.get("z_step")
        if meta.get("units", "slice") != "slice" and meta.get("z_step"):  # a height in µm
            height_data = (np.asarray(height_data, np.float32) - z_origin) / meta["z_step"]
    else:
        height_data = np.asarray(height)
    image = fused.data[0] if getattr(fused, "multiscale", False) else fused.data
    ndim = fused.ndim
    units = _layer_units(fused, [ndim - 2, ndim - 1])
    place = Geometry(name=name, scale=tuple(float(v) for v in fused.scale[-2:]),
                     translate=tuple(float(v) for v in fused.translate[-2:]),
                     units=(units[0] or "pixel", units[1] or "pixel") if any(units) else None,
                     z_step=z_step, z_origin=z_origin, z_unit=z_unit)
    data = height_surface(image, height_data, z_step=place.z_step, scale=place.scale,
                          translate=place.translate, step=step, name=f"{name} surface",
                          z_origin=place.z_origin, z_unit=place.z_unit, units=place.units,
                          metadata={"source": name, "method": info.get("method"),
                                    "mode": info.get("mode")})
    return put_layers(viewer, [data])[0]


def put_layers(viewer: "napari.Viewer", data: Sequence[LayerDataTuple]) -> list:
    """Add the layers, or update the ones of the same name left by an earlier run."""
    layers = []
    for array, kwargs, layer_type in data:
        name = kwargs["name"]
        old = viewer.layers[name] if name in viewer.layers else None
        # __class__, not type(): a widget's viewer hands out proxies of its layers
        if old is not None and (old.__class__.__name__.lower() != layer_type
                                or old.ndim != _ndim(array, kwargs)
                                or getattr(old, "rgb", False) != kwargs.get("rgb", False)):
            viewer.layers.remove(old)
            old = None
        if old is None:
            layers.append(getattr(viewer, f"add_{layer_type}")(array, **kwargs))
            continue
        old.data = array
        for key, value in kwargs.items():
            if key not in ("name", "rgb", "colormap"):
                setattr(old, key, value)
        layers.append(old)
    return layers


def _ndim(array: Any, kwargs: dict) -> int:
    if isinstance(array, tuple):  # a surface's (vertices, faces, values)
        return int(array[0].shape[1])
    return array.ndim - (1 if kwargs.get("rgb") else 0)


def _source(layer_or_layers: Any, z_axis: int, z_step: float | None,
            time_point: int | None = None) -> tuple[Any, Geometry, Any]:
    if isinstance(layer_or_layers, (list, tuple)):
        stack, geometry = stack_from_layers(layer_or_layers, z_step=z_step)
        first = layer_or_layers[0]
    else:
        stack, geometry = stack_from_layer(layer_or_layers, z_axis, z_step=z_step,
                                           time_point=time_point)
        first = layer_or_layers
    return stack, geometry, first


def fuse_layer(viewer: "napari.Viewer", layer: Any, *, z_axis: int = 0,
               z_step: float | None = None, method: str | None = None, mode: str = "nway",
               device: str = "auto", return_weights: bool = False, surface: bool = False,
               **params: Any) -> list:
    """Fuse an image layer holding a z-stack (or a list of 2-D layers, as slices in order)
    and add or update the result layers in ``viewer``; returns them.

    ``z_axis`` is the layer axis that runs through focus; ``z_step`` the physical distance
    between slices when the layer's z scale does not say it; ``surface`` also adds the
    height map as a 3-D surface (:func:`surface_layer_data`, last in the list). The other
    arguments are those of :func:`napari_mfif.fuse`. The input layer is never modified.
    """
    from ._api import fuse
    from .registry import DEFAULT_METHOD

    stack, geometry, first = _source(layer, z_axis, z_step)
    result = fuse(stack, method=method or DEFAULT_METHOD, mode=mode, device=device,
                  return_weights=return_weights, **params)
    limits = None if first.rgb else first.contrast_limits
    data = result_layer_data(result, geometry, contrast_limits=limits)
    if surface:
        data.append(surface_layer_data(result, geometry))
    return put_layers(viewer, data)


def check_pair(n_slices: int, slice_a: int, slice_b: int) -> None:
    """Check that ``slice_a`` and ``slice_b`` are two different slices of the stack."""
    for k in (slice_a, slice_b):
        if not 0 <= k < n_slices:
            raise MfifError(f"slice {k} does not exist; the stack has slices 0 to {n_slices - 1}")
    if slice_a == slice_b:
        raise MfifError(f"slices A and B are both {slice_a}; pick two different slices")


def pick_pair(stack: Any, slice_a: int, slice_b: int) -> tuple[Any, Any]:
    """Slices ``slice_a`` and ``slice_b`` of a z-first stack (or list of slices), checked."""
    check_pair(len(stack), slice_a, slice_b)
    return np.asarray(stack[slice_a]), np.asarray(stack[slice_b])


def inspect_focus(viewer: "napari.Viewer", layer: Any, slice_a: int = 0, slice_b: int = 1, *,
                  z_axis: int = 0, method: str | None = None, device: str = "auto",
                  **params: Any) -> list:
    """Add (or update) the focus score and decision maps of slices A and B of a stack layer
    (or of a list of 2-D layers): where A is judged sharper than B, and what is taken."""
    from ._api import focus_map
    from .registry import DEFAULT_METHOD

    stack, geometry, _ = _source(layer, z_axis, None)
    a, b = pick_pair(stack, slice_a, slice_b)
    maps = focus_map(a, b, method=method or DEFAULT_METHOD, device=device, **params)
    return put_layers(viewer, pair_layer_data(maps, geometry, slice_a, slice_b))
