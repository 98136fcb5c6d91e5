"""Sum-modified-Laplacian focus measure (Nayar & Nakagawa 1994; Pertuz et al. 2013, LAP2).

The modified Laplacian adds the absolute second differences along the two axes instead of
letting them cancel (as they do in the ordinary Laplacian on saddle-like texture)::

    ML(x, y) = |2 g(x, y) - g(x - 1, y) - g(x + 1, y)| + |2 g(x, y) - g(x, y - 1) - g(x, y + 1)|

with a step of one pixel, so that its reach is one pixel like the Sobel of ``tenengrad``.
It is summed over a Gaussian neighbourhood (``window``) after an optional Gaussian
pre-smoothing (``presmooth``); Nayar's threshold is left out (as in Pertuz's LAP2): the
pre-smoothing and the shared noise floor take its role.

The sum is returned squared. Choose-max is unchanged by that (the sums are >= 0), and it makes
the score quadratic in intensity like the other measures, which the shared noise floor
(:func:`napari_mfif.focus.classic.noise_score`) and the pair score f(a) / (f(a) + f(b))
assume.
"""

from __future__ import annotations

from ._ops import NUMPY
from .classic import register_measure

_SECOND_DIFFERENCE = (-1.0, 2.0, -1.0)


def sum_modified_laplacian(gray, *, presmooth: float, window: float, ops=NUMPY):
    """Sum-modified-Laplacian (Nayar & Nakagawa 1994; Pertuz et al. 2013, LAP2), squared.

    ``gray`` (Y, X) float; ``presmooth`` and ``window`` are Gaussian sigmas in pixels (0 = off).
    Returns a (Y, X) map of the same dtype. ``ops``: numpy (default) or torch, see
    :mod:`napari_mfif.focus._ops`.
    """
    g = ops.gaussian(gray, presmooth)
    ml = abs(ops.correlate1d(g, _SECOND_DIFFERENCE, 0))
    ml += abs(ops.correlate1d(g, _SECOND_DIFFERENCE, 1))
    summed = ops.gaussian(ml, window)
    summed *= summed  # a fresh map (or ml itself): squared in place
    return summed


register_measure("sml", sum_modified_laplacian,
                 "sum-modified-Laplacian focus measure (Nayar & Nakagawa), choose-max with a "
                 "smoothed decision")
