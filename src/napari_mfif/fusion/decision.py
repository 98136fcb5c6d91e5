"""Decision maps of the multi-focus CNN fusion: focus map, binary map, region cleanup.

The pipeline of Liu et al. [1]_ for two source images A and B:

1. a CNN scores every 16 x 16 patch pair (stride 2) with the probability that the patch
   of A is the sharper one: the *score map*;
2. each score is spread over the pixels of its patch and overlapping patches are
   averaged: the *focus map* (:func:`patch_focus_map`); networks trained to judge the
   patch centre place each score there instead (:func:`centre_focus_map`);
3. the focus map is thresholded at 0.5: the *binary map*;
4. regions smaller than ``0.01 * H * W`` pixels are flipped (:func:`remove_small_regions`,
   :func:`min_region_area`); :func:`remove_small_regions_labels` is the N-way
   counterpart for a map of slice indices;
5. the cleaned map is refined with a guided filter (``r = 8``, ``eps = 0.1``, guided by
   the initial fused gray image; :mod:`napari_mfif.fusion.guided_filter`), giving the
   final decision map ``D``, and the fused image is ``F = D * A + (1 - D) * B``.

References
----------
.. [1] Y. Liu, X. Chen, H. Peng and Z. Wang, "Multi-focus image fusion with a deep
   convolutional neural network", Information Fusion 36:191-207, 2017.
.. [2] K. He, J. Sun and X. Tang, "Guided Image Filtering", IEEE TPAMI
   35(6):1397-1409, 2013.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage as ndi

__all__ = [
    "patch_focus_map",
    "centre_focus_map",
    "remove_small_regions",
    "remove_small_regions_labels",
    "min_region_area",
]

# 8-connectivity in 2-D (MATLAB's bwareaopen default, used by the reference code)
_EIGHT = np.ones((3, 3), dtype=bool)
_MAX_LABEL_PASSES = 5


def _nearest_true(covered: np.ndarray) -> np.ndarray:
    """For each index of a 1-D bool array, the index of the nearest True entry."""
    if covered.all():
        return np.arange(covered.size)
    idx = ndi.distance_transform_edt(~covered, return_distances=False, return_indices=True)
    return idx[0]


def patch_focus_map(
    scores: torch.Tensor,
    image_shape: tuple[int, int],
    patch: int = 16,
    stride: int = 2,
) -> torch.Tensor:
    """Spread patch scores over their patches and average the overlaps.

    Score ``(i, j)`` belongs to the image patch with rows ``[stride*i, stride*i+patch)``
    and columns ``[stride*j, stride*j+patch)``; each pixel of the result is the mean of
    the scores of all patches that cover it, the focus map of Liu et al. [1]_. The sums
    and the coverage counts are computed with transposed convolutions by a ones kernel
    (separably, a ``patch x 1`` then a ``1 x patch`` kernel), cropped to the image.

    With the usual score-map size ``h = ceil(H / stride) - patch / stride + 1`` (and the
    same for ``w``) every pixel is covered. Pixels covered by no patch (a score map too
    small for the image, or ``stride > patch``) take the value of the nearest covered
    pixel (Euclidean distance).

    Parameters
    ----------
    scores : torch.Tensor, shape (..., h, w)
        Patch scores; any leading dimensions (e.g. one map per slice pair). Integer
        scores are converted to torch's default float dtype.
    image_shape : tuple of int
        ``(H, W)``, the size of the image the patches were taken from.
    patch : int, default 16
        Patch side length in pixels.
    stride : int, default 2
        Step between neighbouring patches in pixels.

    Returns
    -------
    torch.Tensor, shape (..., H, W)
        The focus map, on the device and in the (floating) dtype of ``scores``.

    Notes
    -----
    On GPUs, float32 sums are accumulated in float64, so that TF32 convolution kernels
    cannot round the scores; CPU and GPU then agree to float32 precision.

    References
    ----------
    .. [1] Y. Liu, X. Chen, H. Peng and Z. Wang, "Multi-focus image fusion with a deep
       convolutional neural network", Information Fusion 36:191-207, 2017.
    """
    H, W, patch, stride = _checked(scores, image_shape, patch, stride)
    h, w = scores.shape[-2:]

    out_dtype = scores.dtype if scores.is_floating_point() else torch.get_default_dtype()
    work_dtype = out_dtype if out_dtype in (torch.float32, torch.float64) else torch.float32
    if scores.device.type != "cpu" and work_dtype == torch.float32:
        work_dtype = torch.float64  # no TF32 rounding in cuDNN convolutions
    lead = scores.shape[:-2]
    x = scores.reshape(-1, 1, h, w).to(work_dtype)
    device = x.device

    # window sums: ones kernel, separably along H then W
    k_h = torch.ones(1, 1, patch, 1, dtype=work_dtype, device=device)
    k_w = torch.ones(1, 1, 1, patch, dtype=work_dtype, device=device)
    total = F.conv_transpose2d(x, k_h, stride=(stride, 1))
    total = F.conv_transpose2d(total, k_w, stride=(1, stride))

    # coverage counts: the same transposed convolution of ones, one 1-D factor per axis
    k_1d = torch.ones(1, 1, patch, dtype=work_dtype, device=device)
    count_h = F.conv_transpose1d(torch.ones(1, 1, h, dtype=work_dtype, device=device),
                                 k_1d, stride=stride)[0, 0]
    count_w = F.conv_transpose1d(torch.ones(1, 1, w, dtype=work_dtype, device=device),
                                 k_1d, stride=stride)[0, 0]

    # crop (or zero-pad) to the image size
    total = F.pad(total, (0, max(W - total.shape[-1], 0), 0, max(H - total.shape[-2], 0)))
    total = total[..., :H, :W]
    count_h = F.pad(count_h, (0, max(H - count_h.shape[0], 0)))[:H]
    count_w = F.pad(count_w, (0, max(W - count_w.shape[0], 0)))[:W]

    covered_h = (count_h > 0).cpu().numpy()
    covered_w = (count_w > 0).cpu().numpy()
    if not covered_h.any() or not covered_w.any():
        raise ValueError(f"no pixel of the {H} x {W} image is covered by a patch")
    focus = total / (count_h.clamp(min=1)[:, None] * count_w.clamp(min=1)[None, :])

    if not (covered_h.all() and covered_w.all()):
        # coverage is a product of a row and a column pattern, so the nearest covered
        # pixel is (nearest covered row, nearest covered column)
        rows = torch.as_tensor(_nearest_true(covered_h), device=device)
        cols = torch.as_tensor(_nearest_true(covered_w), device=device)
        focus = focus.index_select(-2, rows).index_select(-1, cols)

    return focus.reshape(*lead, H, W).to(out_dtype)


def _checked(scores: torch.Tensor, image_shape, patch, stride) -> tuple[int, int, int, int]:
    """``(H, W, patch, stride)`` as ints, after the checks both focus maps make."""
    H, W = (int(n) for n in image_shape)
    patch, stride = int(patch), int(stride)
    if H < 1 or W < 1:
        raise ValueError(f"image_shape must be positive, got {tuple(image_shape)}")
    if patch < 1 or stride < 1:
        raise ValueError(f"patch and stride must be >= 1, got {patch} and {stride}")
    if scores.ndim < 2:
        raise ValueError(f"scores must have shape (..., h, w), got {tuple(scores.shape)}")
    if min(scores.shape[-2:]) < 1:
        raise ValueError(f"empty score map of shape {tuple(scores.shape)}")
    return H, W, patch, stride


def _centre_axis(x: torch.Tensor, n: int, patch: int, stride: int, dim: int) -> torch.Tensor:
    """Linear interpolation of ``x`` along ``dim`` from the patch centres to pixels 0..n-1."""
    m = x.shape[dim]
    u = ((torch.arange(n, dtype=torch.float64, device=x.device) - (patch - 1) / 2) / stride)
    u = u.clamp_(0, m - 1)
    i0 = u.floor().long()
    i1 = (i0 + 1).clamp_(max=m - 1)
    w = (u - i0).to(x.dtype)
    shape = [1] * x.ndim
    shape[dim] = n
    w = w.reshape(shape)
    return x.index_select(dim, i0) * (1 - w) + x.index_select(dim, i1) * w


def centre_focus_map(
    scores: torch.Tensor,
    image_shape: tuple[int, int],
    patch: int = 16,
    stride: int = 2,
) -> torch.Tensor:
    """Place each patch score at its patch's centre and interpolate linearly between centres.

    The alternative to :func:`patch_focus_map` for networks trained to judge the centre of a
    patch (``python -m napari_mfif.train --boundary-fraction``): score ``(i, j)`` stands for
    the pixel ``(stride*i + (patch-1)/2, stride*j + (patch-1)/2)``; pixels between centres are
    interpolated bilinearly, pixels beyond the outermost centres take the nearest one's value.
    A focus boundary then stays where the network puts it instead of being spread over a
    patch.

    Parameters and result as for :func:`patch_focus_map` (scores ``(..., h, w)``, result
    ``(..., H, W)``, same device and floating dtype).
    """
    H, W, patch, stride = _checked(scores, image_shape, patch, stride)
    x = scores if scores.is_floating_point() else scores.to(torch.get_default_dtype())
    x = _centre_axis(x, H, patch, stride, x.ndim - 2)
    return _centre_axis(x, W, patch, stride, x.ndim - 1)


def _dilate8(mask: np.ndarray) -> np.ndarray:
    """Binary dilation of a 2-D bool array by a 3 x 3 square (separable, by slicing)."""
    rows = mask.copy()
    rows[1:] |= mask[:-1]
    rows[:-1] |= mask[1:]
    out = rows.copy()
    out[:, 1:] |= rows[:, :-1]
    out[:, :-1] |= rows[:, 1:]
    return out


def _flip_small(mask: np.ndarray, value: bool, min_area: float) -> None:
    """In place: set 8-connected regions of ``value`` with area < min_area to ``not value``.

    A region that fills the whole image is never flipped.
    """
    regions, n = ndi.label(mask == value, structure=_EIGHT)
    if n == 0:
        return
    sizes = np.bincount(regions.ravel(), minlength=n + 1)
    small = (sizes < min_area) & (sizes < mask.size)
    small[0] = False  # background of the labelling: pixels of the other value
    if small.any():
        mask[small[regions]] = not value


def remove_small_regions(mask: np.ndarray, min_area: float) -> np.ndarray:
    """Flip small 8-connected regions of a binary decision map.

    The "small region removal" of Liu et al. [1]_ (``bwareaopen`` on the map and on its
    complement in the reference code): first every 8-connected region of True with
    fewer than ``min_area`` pixels is set to False, then, on that result, every
    8-connected region of False with fewer than ``min_area`` pixels is set to True. The
    order matters where a small True speck lies inside a small False hole (the speck is
    removed first, which may let the hole grow beyond ``min_area``). A region of exactly
    ``min_area`` pixels is kept. A region that fills the whole image is never flipped.

    Parameters
    ----------
    mask : ndarray of bool, shape (H, W)
        The binary decision map (True: take image A). Other dtypes are read as
        ``mask != 0``.
    min_area : float
        Regions with area (pixel count) strictly below this are flipped; the paper uses
        ``0.01 * H * W`` (:func:`min_region_area`). ``min_area <= 0`` disables the step.

    Returns
    -------
    ndarray of bool, shape (H, W)
        A new array; ``mask`` is not modified.

    References
    ----------
    .. [1] Y. Liu, X. Chen, H. Peng and Z. Wang, "Multi-focus image fusion with a deep
       convolutional neural network", Information Fusion 36:191-207, 2017.
    """
    out = np.array(mask, dtype=bool, copy=True)
    if out.ndim != 2:
        raise ValueError(f"mask must be 2-D, got shape {out.shape}")
    if min_area <= 0:
        return out
    _flip_small(out, True, min_area)
    _flip_small(out, False, min_area)
    return out


def _reassign_small(out: np.ndarray, value, min_area: float, values: np.ndarray) -> bool:
    """In place: give every small region of ``value`` its neighbours' majority label.

    ``values`` holds the sorted label values that may occur in ``out``. Returns whether
    any pixel changed. All small regions of one value are handled at once: regions of
    one value are never 8-adjacent, and their bordering pixels (of other values) are not
    modified here, so this equals handling them one after another.
    """
    regions, n = ndi.label(out == value, structure=_EIGHT)
    if n == 0:  # every pixel of this value was reassigned earlier in the pass
        return False
    sizes = np.bincount(regions.ravel(), minlength=n + 1)
    small = sizes < min_area
    small[0] = False  # pixels of other values
    if not small.any():
        return False

    # outside border of the small regions: the 8-neighbours that hold another value
    in_small = small[regions]
    border = _dilate8(in_small)
    border &= regions == 0
    by, bx = np.nonzero(border)

    # the small regions each border pixel touches, each counted once per pixel
    padded = np.pad(regions, 1)
    touching = np.stack([
        padded[by + 1 + dy, bx + 1 + dx]
        for dy in (-1, 0, 1)
        for dx in (-1, 0, 1)
        if dy or dx
    ])  # (8, n_border)
    touching[~small[touching]] = 0
    touching.sort(axis=0)
    first_seen = touching != 0
    first_seen[1:] &= touching[1:] != touching[:-1]
    if not first_seen.any():  # only a region filling the whole image has no border
        return False

    # votes (region, label) -> count; the winner has the most votes, then the smallest
    # label.
    n_values = values.size
    label_idx = np.searchsorted(values, out[by, bx]).astype(np.int64)
    region_of = touching[first_seen].astype(np.int64)
    label_of = np.broadcast_to(label_idx, touching.shape)[first_seen]
    keys = np.sort(region_of * n_values + label_of)
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    counts = np.diff(np.r_[starts, keys.size])
    key_region, key_label = np.divmod(keys[starts], n_values)
    order = np.lexsort((key_label, -counts, key_region))
    key_region, key_label = key_region[order], key_label[order]
    first = np.ones(key_region.size, dtype=bool)
    first[1:] = key_region[1:] != key_region[:-1]

    target = np.zeros(n + 1, dtype=out.dtype)
    target[key_region[first]] = values[key_label[first]]
    reassign = np.zeros(n + 1, dtype=bool)
    reassign[key_region[first]] = True
    pix = reassign[regions]
    out[pix] = target[regions[pix]]
    return True


def remove_small_regions_labels(labels: np.ndarray, min_area: float) -> np.ndarray:
    """Reassign small 8-connected regions of a label map to their surrounding label.

    The N-way counterpart of :func:`remove_small_regions` for a map of slice indices:
    every 8-connected region of one label with fewer than ``min_area`` pixels takes the
    label that occurs most often among the pixels bordering it (its outside
    8-neighbours, each counted once; ties go to the smallest label). Label values are
    processed one at a time, in increasing order; the regions of each value are
    labelled (:func:`scipy.ndimage.label`) just before it is processed, so regions
    merged by earlier reassignments are seen whole. The sweep over all values is
    repeated until nothing changes, at most 5 times. A region without outside
    neighbours (it fills the whole image) is kept.

    All small regions of one value are handled together with array operations (their
    border pixels and votes are gathered at once), so the cost is a few full-image
    operations per label value and pass, whatever the number of regions.

    Parameters
    ----------
    labels : ndarray of int, shape (H, W)
        The label (slice index) of every pixel.
    min_area : float
        Regions with area (pixel count) strictly below this are reassigned
        (:func:`min_region_area`). ``min_area <= 0`` disables the step.

    Returns
    -------
    ndarray, shape (H, W)
        A new array of the same dtype; ``labels`` is not modified.

    References
    ----------
    .. [1] Y. Liu, X. Chen, H. Peng and Z. Wang, "Multi-focus image fusion with a deep
       convolutional neural network", Information Fusion 36:191-207, 2017.
    """
    out = np.array(labels, copy=True)
    if out.ndim != 2:
        raise ValueError(f"labels must be 2-D, got shape {out.shape}")
    if out.dtype.kind not in "iub":
        raise TypeError(f"labels must be an integer array, got dtype {out.dtype}")
    if min_area <= 0 or out.size == 0:
        return out

    for _ in range(_MAX_LABEL_PASSES):
        values = np.unique(out)  # reassignments only ever use values already present
        changed = False
        for value in values:
            changed |= _reassign_small(out, value, min_area, values)
        if not changed:
            break
    return out


def min_region_area(shape: tuple[int, int], ratio: float = 0.01) -> float:
    """The small-region threshold of Liu et al. [1]_: ``ratio * H * W`` pixels.

    Parameters
    ----------
    shape : tuple of int
        ``(H, W)``, the image size.
    ratio : float, default 0.01
        Fraction of the image area (the paper's value is 0.01).

    Returns
    -------
    float
        The area threshold, for :func:`remove_small_regions` and
        :func:`remove_small_regions_labels`.

    References
    ----------
    .. [1] Y. Liu, X. Chen, H. Peng and Z. Wang, "Multi-focus image fusion with a deep
       convolutional neural network", Information Fusion 36:191-207, 2017.
    """
    H, W = (int(n) for n in shape)
    return float(ratio) * H * W
