"""napari sample data: the bundled synthetic focal stack (made on the fly, no download)."""

from __future__ import annotations


def synthetic_focal_stack():
    """The synthetic 10-slice uint16 stack of cells, with its ground truth in metadata."""
    from .synthetic import SAMPLE_SCALE, sample_stack

    sample = sample_stack()
    return [
        (
            sample.stack,
            {
                "name": "synthetic focal stack",
                "scale": SAMPLE_SCALE,
                "metadata": {"napari_mfif": {"ground_truth": sample.sharp,
                                             "true_depth": sample.depth}},
            },
            "image",
        )
    ]
