"""The napari widget "Fuse focal stack": a thin layer over :func:`napari_mfif.fuse`.

Imported by napari only when the widget is opened (never at plugin discovery). The
result layers are named after the input layer, so running again updates them instead of
piling up new ones.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui import magic_factory

from ._errors import MfifError
from .registry import DEFAULT_METHOD, MODES

if TYPE_CHECKING:  # pragma: no cover
    import napari


def _method_names(_widget=None) -> list[str]:
    from .registry import available_methods

    return list(available_methods())


def layer_stack(layer: "napari.layers.Image", focus_axis: int) -> tuple[Any, tuple, tuple]:
    """The stack held by ``layer`` with its z axis first, and the (Y, X) scale/translate."""
    data = layer.data[0] if layer.multiscale else layer.data
    ndim = layer.ndim  # spatial dimensions; an RGB layer's colour axis is not counted
    if ndim < 3:
        raise MfifError(
            f"layer {layer.name!r} is a single 2-D image; pick a layer that holds a z-stack"
        )
    if ndim > 3:
        raise MfifError(
            f"layer {layer.name!r} has {ndim} dimensions; only (Z, Y, X) stacks, grey or "
            "RGB, are supported so far"
        )
    if not -ndim <= focus_axis < ndim:
        raise MfifError(f"focus axis {focus_axis} does not exist in a {ndim}-D layer")
    focus_axis %= ndim
    stack = np.moveaxis(data, focus_axis, 0)
    keep = [i for i in range(ndim) if i != focus_axis]
    scale = tuple(float(layer.scale[i]) for i in keep)
    translate = tuple(float(layer.translate[i]) for i in keep)
    return stack, scale, translate


@magic_factory(
    call_button="Fuse",
    image={"label": "stack layer"},
    focus_axis={"label": "z axis", "min": 0, "max": 2,
                "tooltip": "the layer axis that runs through focus"},
    method={"choices": _method_names, "tooltip": "fusion method (see the docs)"},
    mode={"choices": list(MODES),
          "tooltip": "nway: all slices at once; series: two at a time, in order"},
    device={"choices": ["auto", "cpu", "cuda"]},
)
def fuse_focal_stack_widget(
    image: "napari.layers.Image",
    focus_axis: int = 0,
    method: str = DEFAULT_METHOD,
    mode: str = "nway",
    device: str = "auto",
) -> "list[napari.types.LayerDataTuple]":
    """Fuse a z-stack layer into an all-in-focus image and a height map (slice units)."""
    from napari.utils.notifications import show_error, show_info

    from ._api import fuse

    if image is None:
        show_error("Fuse focal stack: there is no image layer to fuse; open a z-stack first")
        return None
    try:
        stack, scale, translate = layer_stack(image, focus_axis)
        result = fuse(stack, method=method, mode=mode, device=device)
    except MfifError as exc:
        show_error(f"Fuse focal stack: {exc}")
        return None
    z = stack.shape[0]
    info = {"source": image.name, "method": result.method, "mode": result.mode,
            "device": result.device, "params": result.params, "n_slices": z}
    common = {"scale": scale, "translate": translate}
    show_info(f"Fused {z} slices of {image.name!r} with {result.method} ({result.mode})")
    return [
        (result.image, {"name": f"{image.name} fused", "metadata": {"napari_mfif": info},
                        "contrast_limits": image.contrast_limits, **common}, "image"),
        (result.index_map, {"name": f"{image.name} height map", "colormap": "viridis",
                            "contrast_limits": (0.0, float(max(z - 1, 1))),
                            "metadata": {"napari_mfif": {**info, "units": "slice"}}, **common},
         "image"),
    ]
