"""The guided filter (He, Sun & Tang) in torch, for CPU and CUDA tensors alike.

The multi-focus CNN fusion of Liu et al. (2017) refines its binary decision map with a
guided filter (``r = 8``, ``eps = 0.1``) guided by the initial fused gray image, so that
the seams between the source images follow the image edges. This module implements the
gray-guide filter of He et al., Algorithm 1, with O(1)-per-pixel box means computed from
cumulative sums, exactly as in the authors' MATLAB reference code (box windows clipped at
the image borders, normalised by the number of pixels that exist).

References
----------
.. [1] K. He, J. Sun and X. Tang, "Guided Image Filtering", ECCV 2010, pp. 1-14;
   IEEE Trans. Pattern Anal. Mach. Intell. 35(6):1397-1409, 2013.
.. [2] Y. Liu, X. Chen, H. Peng and Z. Wang, "Multi-focus image fusion with a deep
   convolutional neural network", Information Fusion 36:191-207, 2017.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["box_mean", "guided_filter", "guided_filter_np"]


def _box_mean_1d(x: torch.Tensor, r: int, dim: int) -> torch.Tensor:
    """Mean over the window ``[i - r, i + r]`` (clipped to the axis) along ``dim``."""
    n = x.shape[dim]
    # Subtracting the mean along `dim` (constant within every window) first keeps the
    # cumulative sums small, which matters for float32 on large images; it is added back
    # after the division, so the result is mathematically unchanged.
    offset = x.mean(dim=dim, keepdim=True)
    csum = torch.cumsum(x - offset, dim=dim)
    zero = torch.zeros_like(csum.narrow(dim, 0, 1))
    csum = torch.cat([zero, csum], dim=dim)  # csum[k] = sum of the first k entries

    idx = torch.arange(n, device=x.device)
    hi = torch.clamp(idx + r + 1, max=n)  # exclusive end of the clipped window
    lo = torch.clamp(idx - r, min=0)
    sums = csum.index_select(dim, hi) - csum.index_select(dim, lo)

    count = (hi - lo).to(x.dtype)
    shape = [1] * x.ndim
    shape[dim] = n
    return sums / count.reshape(shape) + offset


def box_mean(x: torch.Tensor, r: int) -> torch.Tensor:
    """Mean over the ``(2r+1) x (2r+1)`` window around each pixel, clipped at the borders.

    Near the borders the window holds fewer pixels; the mean is taken over those that
    exist (window sum divided by the pixel count), as ``boxfilter(I, r) ./ N`` with
    ``N = boxfilter(ones(h, w), r)`` in the reference code of He et al. [1]_. Computed
    with cumulative sums along H and then W: O(1) work per pixel, whatever ``r``.

    Parameters
    ----------
    x : torch.Tensor, shape (..., H, W)
        Floating-point tensor (float32 or float64); any leading dimensions. The result is
        computed in this dtype, on this device.
    r : int
        Window radius in pixels, ``r >= 0``. ``r = 0`` returns ``x`` unchanged; a radius
        larger than the image gives the mean of the whole image at every pixel.

    Returns
    -------
    torch.Tensor, shape (..., H, W)
        The box means, same dtype and device as ``x``.

    References
    ----------
    .. [1] K. He, J. Sun and X. Tang, "Guided Image Filtering", ECCV 2010; IEEE TPAMI
       35(6):1397-1409, 2013.
    """
    r = int(r)
    if r < 0:
        raise ValueError(f"box radius must be >= 0, got {r}")
    if x.ndim < 2:
        raise ValueError(f"expected shape (..., H, W), got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"box_mean needs a floating-point tensor, got {x.dtype}")
    if r == 0:
        return x
    return _box_mean_1d(_box_mean_1d(x, r, x.ndim - 2), r, x.ndim - 1)


def guided_filter(
    guide: torch.Tensor, src: torch.Tensor, r: int = 8, eps: float = 0.1
) -> torch.Tensor:
    """Edge-preserving smoothing of ``src`` guided by the gray image ``guide``.

    The gray-guide guided filter of He et al. [1]_ (Algorithm 1): in every window
    :math:`\\omega_k` the output is a linear function of the guide,
    :math:`q_i = a_k I_i + b_k`, with

    .. math::

        a_k = \\frac{\\operatorname{cov}_{\\omega_k}(I, p)}
                   {\\operatorname{var}_{\\omega_k}(I) + \\epsilon},
        \\qquad b_k = \\bar p_k - a_k \\bar I_k,

    and the coefficients of all windows containing pixel ``i`` are averaged:
    :math:`q_i = \\bar a_i I_i + \\bar b_i`. All means are box means over the
    ``(2r+1) x (2r+1)`` window clipped at the borders (:func:`box_mean`).

    Liu et al. [2]_ use ``r = 8`` and ``eps = 0.1`` to refine the binary decision map,
    with the initial fused image as the guide. ``eps`` is relative to the guide's
    variance, so that value assumes a guide scaled to ``[0, 1]``: scale the guide (e.g.
    divide by the dtype's maximum) before filtering.

    Parameters
    ----------
    guide : torch.Tensor, shape (..., H, W)
        The guidance image ``I``, expected in ``[0, 1]`` (see above).
    src : torch.Tensor, shape (..., H, W)
        The image ``p`` to filter. It must broadcast against ``guide``; e.g. a guide of
        shape (H, W) and ``src`` of shape (K, H, W) filters K maps with one guide.
    r : int, default 8
        Window radius in pixels. 0 returns ``src`` itself (a 1 x 1 window has no
        variance), which turns the filter off.
    eps : float, default 0.1
        Regularisation; larger values smooth more (fewer edges are kept).

    Returns
    -------
    torch.Tensor, shape ``broadcast(guide.shape, src.shape)``
        The filtered image ``q``, on the inputs' device, in their (promoted) floating
        dtype; integer inputs are converted to torch's default float dtype.

    References
    ----------
    .. [1] K. He, J. Sun and X. Tang, "Guided Image Filtering", ECCV 2010, pp. 1-14;
       IEEE TPAMI 35(6):1397-1409, 2013.
    .. [2] Y. Liu, X. Chen, H. Peng and Z. Wang, "Multi-focus image fusion with a deep
       convolutional neural network", Information Fusion 36:191-207, 2017.
    """
    if guide.ndim < 2 or src.ndim < 2:
        raise ValueError(
            f"guide and src must have shape (..., H, W); got {tuple(guide.shape)} "
            f"and {tuple(src.shape)}"
        )
    if guide.shape[-2:] != src.shape[-2:]:
        raise ValueError(
            f"guide and src differ in (H, W): {tuple(guide.shape[-2:])} vs "
            f"{tuple(src.shape[-2:])}"
        )
    torch.broadcast_shapes(guide.shape, src.shape)  # raises if they do not broadcast
    if eps < 0:
        raise ValueError(f"eps must be >= 0, got {eps}")

    dtype = torch.result_type(guide, src)
    if not dtype.is_floating_point:
        dtype = torch.get_default_dtype()
    guide = guide.to(dtype)
    src = src.to(dtype)

    mean_i = box_mean(guide, r)
    mean_p = box_mean(src, r)
    corr_i = box_mean(guide * guide, r)
    corr_ip = box_mean(guide * src, r)
    var_i = corr_i - mean_i * mean_i
    cov_ip = corr_ip - mean_i * mean_p

    a = cov_ip / (var_i + eps)
    b = mean_p - a * mean_i
    return box_mean(a, r) * guide + box_mean(b, r)


def guided_filter_np(
    guide: np.ndarray,
    src: np.ndarray,
    r: int = 8,
    eps: float = 0.1,
    device: str | torch.device = "cpu",
) -> np.ndarray:
    """:func:`guided_filter` for numpy arrays, computed in float32 on ``device``.

    Parameters
    ----------
    guide : ndarray, shape (..., H, W)
        The guidance image, expected scaled to ``[0, 1]`` (``eps`` is relative to that
        range).
    src : ndarray, shape (..., H, W)
        The image(s) to filter; must broadcast against ``guide``.
    r : int, default 8
        Window radius in pixels. 0 returns ``src`` itself (a 1 x 1 window has no
        variance), which turns the filter off.
    eps : float, default 0.1
        Regularisation.
    device : str or torch.device, default "cpu"
        Where to compute ("cpu", "cuda", ...).

    Returns
    -------
    ndarray of float32, shape ``broadcast(guide.shape, src.shape)``
        The filtered image.

    References
    ----------
    .. [1] K. He, J. Sun and X. Tang, "Guided Image Filtering", ECCV 2010; IEEE TPAMI
       35(6):1397-1409, 2013.
    """
    g = torch.as_tensor(np.asarray(guide, dtype=np.float32), device=device)
    s = torch.as_tensor(np.asarray(src, dtype=np.float32), device=device)
    q = guided_filter(g, s, r=r, eps=eps)
    return q.cpu().numpy().astype(np.float32, copy=False)
