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

from ..stack import BAND_PIXELS
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
        Every slice's focus score (used to pick among the slices near the median);
        ``scores[k][ys, xs]`` is read only for the pixels where slice k is a candidate,
        so it may be a sequence that computes the scores when asked.
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
    sigma = consistency / BLOCK
    hb, wb = -(-h // BLOCK), -(-w // BLOCK)
    index = np.int32 if z * hb * wb < 2**31 else np.intp
    # the image is read in bands of whole block rows, so that the per-pixel temporaries
    # stay small however large the image; every block lies in one band
    rows = max(1, BAND_PIXELS // 2 // (w * BLOCK)) * BLOCK
    bx = (np.arange(w) // BLOCK).astype(index)[None, :]

    def cells(r0: int) -> tuple[np.ndarray, int, int]:
        """Every pixel's (slice, block) cell in the band of rows from ``r0``, numbered within
        the band's blocks, with the band's first block row and its count of block rows."""
        part = choice[r0:r0 + rows]
        n = part.shape[0]
        b0, nb = r0 // BLOCK, -(-n // BLOCK)
        cell = part.astype(index)
        cell *= index(nb * wb)
        cell += (np.arange(n) // BLOCK).astype(index)[:, None] * index(wb)
        cell += bx
        return cell, b0, nb

    # every slice's vote sums per block (exact in float64 whatever the order: 16 float32
    # values), as means over the blocks' full area (partial blocks at the edges: over
    # their pixels); each band's blocks are counted on their own, in the same order
    sums = np.zeros((z, hb, wb), np.float64)
    for r0 in range(0, h, rows):
        cell, b0, nb = cells(r0)
        weight = (np.ones(cell.shape, np.float32) if confidence is None
                  else confidence[r0:r0 + rows].astype(np.float32, copy=False))
        sums[:, b0:b0 + nb] += np.bincount(cell.ravel(), weights=weight.ravel(),
                                           minlength=z * nb * wb).reshape(z, nb, wb)
        del cell, weight
    sums /= BLOCK * BLOCK
    # cumulative votes C[k] = sum_{j < k} V_j on the block grid, C[0] = 0
    cum = np.zeros((z + 1, hb, wb), np.float32)
    for k in range(z):
        votes = ndi.gaussian_filter(sums[k], sigma, mode="reflect", truncate=3.0)
        cum[k + 1] = cum[k] + votes
    del sums, votes
    # whether a choice of slice k in a block would stand, decided on the grid (slice by
    # slice: no more (Z, blocks) arrays) and read by each pixel through its cell
    total = cum[z]
    need = agreement * total
    voted = total > 1e-3
    bad_cell = np.zeros((z, hb, wb), bool)
    for k in range(z):
        near = cum[min(k + TOLERANCE, z - 1) + 1] - cum[max(k - TOLERANCE, 0)]
        np.logical_and(near < need, voted, out=bad_cell[k])
    if not bad_cell.any():
        return choice
    # the weighted median height per block: the first k with C[k + 1] >= half the total
    below = np.zeros((hb, wb), np.intp)
    half = 0.5 * total
    for k in range(z):
        below += cum[k + 1] < half
    median_grid = np.minimum(below, z - 1)
    del cum, below
    out = choice.copy()
    for r0 in range(0, h, rows):
        cell, b0, nb = cells(r0)
        ys, xs = np.nonzero(bad_cell[:, b0:b0 + nb].ravel()[cell])
        del cell
        if not ys.size:
            continue
        ys += r0
        # among the slices within one of the median, the best-scoring one
        median = median_grid[ys // BLOCK, xs // BLOCK]
        best = np.full(ys.size, -np.inf, np.float32)
        alternative = median.copy()
        for k in range(z):
            ok = np.flatnonzero(np.abs(median - k) <= TOLERANCE)
            if not ok.size:
                continue
            score = scores[k][ys[ok], xs[ok]]  # only where slice k is a candidate
            better = score > best[ok]
            best[ok[better]] = score[better]
            alternative[ok[better]] = k
        out[ys, xs] = alternative
    return out
