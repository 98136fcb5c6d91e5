"""napari sample data: synthetic focal stacks made on the fly (no download), each with a
scale in micrometres and its ground truth in the layer's metadata
(``metadata["napari_mfif"]["ground_truth"]``, the all-in-focus image, and
``["true_depth"]``, the depth of each pixel in slice units)."""

from __future__ import annotations


def _layer(sample, name: str, scale, *, rgb: bool = False) -> list[tuple]:
    kwargs = {
        "name": name,
        "scale": scale,
        "units": ("µm",) * len(scale),
        "rgb": rgb,
        "metadata": {"napari_mfif": {"ground_truth": sample.sharp,
                                     "true_depth": sample.depth}},
    }
    return [(sample.stack, kwargs, "image")]


def synthetic_focal_stack():
    """The synthetic 10-slice uint16 stack of cells, with its ground truth in metadata."""
    from .synthetic import SAMPLE_SCALE, sample_stack

    return _layer(sample_stack(), "synthetic focal stack", SAMPLE_SCALE)


def fluorescence_focal_stack():
    """A 10-slice uint16 widefield-fluorescence-like stack (haze, shot and read noise),
    with its ground truth in metadata."""
    from .synthetic import FLUORESCENCE_SCALE, fluorescence_sample

    return _layer(fluorescence_sample(), "synthetic fluorescence stack", FLUORESCENCE_SCALE)


def brightfield_focal_stack():
    """An 8-slice RGB uint8 brightfield-like stack of stained cells, with its ground truth
    in metadata."""
    from .synthetic import BRIGHTFIELD_SCALE, brightfield_sample

    return _layer(brightfield_sample(), "synthetic brightfield stack", BRIGHTFIELD_SCALE,
                  rgb=True)
