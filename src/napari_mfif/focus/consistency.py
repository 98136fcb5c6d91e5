"""A neighbourhood consistency check on the N-way choice (issue 12: defocus fringes).

In brightfield, a defocused object grows bright and dark rings (Becke lines, phase fringes)
whose local contrast can beat the in-focus plane's, so choose-max picks far planes in rings
and the fused image shows bull's-eyes that were never there. Such picks are isolated in
depth: around them most textured pixels picked planes near the true focus. A real depth step
(an object at another height) is not isolated: its own pixels agree with each other.

The check, for the per-pixel choice ``c(i)`` (the slice with the highest score):

1. votes: each pixel votes for its chosen slice with weight ``confidence`` (the noise-floor
   trust, 0 in flat or noise-only areas, so the background does not vote; 1 without a
   floor). The votes are summed in a Gaussian neighbourhood of sigma ``consistency`` px:
   ``V_k(i)``;
2. a pixel keeps its choice when the votes for slices within one slice of it are at least
   ``agreement`` (a share) of all the votes around it;
3. otherwise it takes, among the slices within one slice of the neighbourhood's weighted
   median height, the one that scores highest there.

The votes are gathered on a grid of 4 x 4-pixel blocks fixed in the whole image (block sums,
then the Gaussian at a quarter of the sigma on the grid), which costs a sixteenth of the
full-resolution filter, and each pixel reads its block's votes. Windows of a tiled run start on
that grid, so a window's result equals the whole image's wherever its overlap covers
:func:`reach`.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from ..stack import _block_sums
from ._ops import radius

#: the vote grid's block size (px)
BLOCK = 4
#: slices within this distance of a choice count as agreeing with it
TOLERANCE = 1


def reach(consistency: float) -> int:
    """How far (px) the check reaches: the Gaussian on the block grid plus one block."""
    if consistency <= 0:
        return 0
    return (radius(consistency / BLOCK) + 1) * BLOCK


def check(choice: np.ndarray, scores, confidence: np.ndarray | None, *, consistency: float,
          agreement: float) -> np.ndarray:
    """The checked choice.

    Parameters
    ----------
    choice : (Y, X) integer array
        Each pixel's chosen slice (the highest score).
    scores : sequence of (Y, X) arrays
        Every slice's focus score (used to pick among the slices near the median).
    confidence : (Y, X) array or None
        The noise-floor trust in [0, 1] (None: every pixel votes with weight 1).
    consistency : float
        Sigma (px) of the vote neighbourhood; 0 returns ``choice`` unchanged.
    agreement : float
        The share of the votes around a pixel that must be within one slice of its choice.

    Returns
    -------
    (Y, X) array of the same dtype as ``choice``.
    """
    z = len(scores)
    if consistency <= 0 or z < 3:  # with two slices every choice is within one slice
        return choice
    h, w = choice.shape
    weight = (np.ones((h, w), np.float32) if confidence is None
              else confidence.astype(np.float32, copy=False))
    sigma = consistency / BLOCK
    # cumulative votes C[k] = sum_{j < k} V_j on the block grid, C[0] = 0
    cum = np.zeros((z + 1, -(-h // BLOCK), -(-w // BLOCK)), np.float32)
    for k in range(z):
        # means over the blocks' full area (partial blocks at the edges: over their pixels)
        means = _block_sums(np.where(choice == k, weight, 0), BLOCK) / (BLOCK * BLOCK)
        votes = ndi.gaussian_filter(means, sigma, mode="reflect", truncate=3.0)
        cum[k + 1] = cum[k] + votes
    by = (np.arange(h) // BLOCK)[:, None]
    bx = (np.arange(w) // BLOCK)[None, :]
    total = cum[z][by, bx]
    lo = np.clip(choice - TOLERANCE, 0, z - 1)
    hi = np.clip(choice + TOLERANCE, 0, z - 1) + 1
    near = cum[hi, by, bx] - cum[lo, by, bx]
    bad = (near < agreement * total) & (total > 1e-3)
    if not bad.any():
        return choice
    # the weighted median height per block: the first k with C[k + 1] >= half the total
    median = np.minimum((cum[1:] < 0.5 * cum[z][None]).sum(axis=0), z - 1)[by, bx]
    best = np.full((h, w), -np.inf, np.float32)
    alternative = median.copy()
    for k in range(z):
        ok = bad & (np.abs(median - k) <= TOLERANCE)
        if not ok.any():
            continue
        score = np.asarray(scores[k])
        better = ok & (score > best)
        best[better] = score[better]
        alternative[better] = k
    return np.where(bad, alternative, choice).astype(choice.dtype, copy=False)
