"""Fusion-quality metrics of the multi-focus image fusion (MFIF) literature.

The no-reference metrics (:func:`qabf`, :func:`nmi`, :func:`q_y`, :func:`q_cb`) are ports
of the MATLAB code that the MFIF survey used for its published tables,

    Y. Liu, L. Wang, J. Cheng, C. Li, X. Chen, "Multi-focus image fusion: A Survey of the
    state of the art", Information Fusion 64 (2020) 71-91; code: GitHub
    ``yuliu316316/MFIF``, folder ``evaluation/`` (``evaluate_color.m`` and
    ``objective_metrics/metric*.m``, themselves derived from Z. Liu's toolbox
    ``zhengliu6699/imageFusionMetrics``),

so that numbers computed here can be compared with the survey's. As in
``evaluate_color.m``, colour images are first converted to gray with MATLAB's
``rgb2gray`` (see :func:`to_gray`) and then used as float64 ("double"). On the survey's
20 Lytro colour pairs and the published CNN results (Liu et al. 2017) this port
reproduces the published per-image Q_G, Q_MI and Q_CB to the six decimals the table
holds, and Q_Y to about 1e-4 (see :func:`q_y` for why not better).

Every metric takes the two source images and the fused image, all of the same shape,
2-D or (H, W, 3) colour, any real dtype, and returns a Python float; larger is better.
:data:`NO_REFERENCE` maps their names to the functions.

Also here: :func:`psnr` and :func:`ssim` (thin wrappers over :mod:`skimage.metrics` for
comparisons with a ground truth), :func:`height_error` for height (index) maps, and two
single-image scores that MFIF papers report for the fused image alone: :func:`entropy`
(bits; higher is more information) and :func:`piqe` (MATLAB's PIQE; lower is better).
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np
from scipy import ndimage, signal

from ._errors import MfifError

__all__ = [
    "NO_REFERENCE",
    "PiqeMaps",
    "entropy",
    "height_error",
    "nmi",
    "piqe",
    "piqe_maps",
    "psnr",
    "q_cb",
    "q_y",
    "qabf",
    "ssim",
    "to_gray",
]

# MATLAB's rgb2gray weights: the first row of the inverse of the NTSC (YIQ) matrix, which
# MATLAB's documentation rounds to 0.2989, 0.5870, 0.1140. The exact values matter: with
# the rounded ones, uint8 pixels near a .5 boundary round the other way and the survey's
# published Q_G / Q_MI values are missed by up to 7e-5 instead of matched to 5e-7.
_RGB2GRAY = (0.298936021293775, 0.587043074451121, 0.114020904255103)

# the 1e-5 that the reference adds to zero gradients before dividing (metricXydeas.m)
_EPS_G = 0.00001


# --------------------------------------------------------------------------- helpers


def _round_half_away(x: np.ndarray) -> np.ndarray:
    """MATLAB ``round``: halves go away from zero (numpy's ``round`` goes to even)."""
    return np.copysign(np.floor(np.abs(x) + 0.5), x)


def to_gray(image) -> np.ndarray:
    """Convert an image to gray exactly as MATLAB ``double(rgb2gray(image))`` does.

    Parameters
    ----------
    image : array_like
        A 2-D image (returned as float64, values unchanged) or an (H, W, 3) RGB image.

    Returns
    -------
    numpy.ndarray
        The (H, W) float64 gray image.

    Notes
    -----
    Gray = 0.298936 R + 0.587043 G + 0.114021 B, with MATLAB's exact weights (the first
    row of the inverse NTSC matrix; MATLAB's documentation prints them rounded as 0.2989,
    0.5870, 0.1140, but the code uses the exact values, and only those reproduce the
    survey's numbers). For integer inputs the result is rounded (halves away from zero)
    and saturated to the input dtype, as MATLAB's ``rgb2gray`` returns an image of the
    input class; for float inputs the weighted sum is returned as is (no rounding and,
    unlike old MATLAB releases, no clipping to [0, 1], so any intensity scale works).
    """
    array = np.asarray(image)
    if array.dtype.kind not in "uif":
        raise MfifError(
            f"cannot convert an image of dtype {array.dtype} to gray; give real intensities"
        )
    if array.ndim == 2:
        return array.astype(np.float64)
    if array.ndim != 3 or array.shape[-1] != 3:
        raise MfifError(
            f"expected a 2-D gray image or an (H, W, 3) RGB image, got shape {array.shape}"
        )
    rgb = array.astype(np.float64)
    gray = _RGB2GRAY[0] * rgb[..., 0] + _RGB2GRAY[1] * rgb[..., 1] + _RGB2GRAY[2] * rgb[..., 2]
    if array.dtype.kind in "ui":
        info = np.iinfo(array.dtype)
        gray = np.clip(_round_half_away(gray), info.min, info.max)
    return gray


def _three_gray(a, b, fused) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    images = tuple(to_gray(x) for x in (a, b, fused))
    shapes = {x.shape for x in images}
    if len(shapes) != 1:
        raise MfifError(
            "the two sources and the fused image must have the same size, got "
            + ", ".join(str(x.shape) for x in images)
        )
    if not all(np.isfinite(x).all() for x in images):
        raise MfifError("the images contain NaN or infinite values")
    return images


def _divide(num: np.ndarray, den: np.ndarray, zero_by_zero: float) -> np.ndarray:
    """num / den, with ``zero_by_zero`` where both are 0 (the reference's NaNs)."""
    both = (num == 0) & (den == 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = num / np.where(both, 1.0, den)
    out[both] = zero_by_zero
    return out


# ------------------------------------------------------------------------------ Q_AB/F

_SOBEL_X = np.array([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])  # horizontal
_SOBEL_Y = np.array([[-1.0, -2.0, -1.0], [0.0, 0.0, 0.0], [1.0, 2.0, 1.0]])  # vertical


def _sobel(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Gradient magnitude and angle as metricXydeas.m: filter2 (zero-padded correlation)."""
    gx = ndimage.correlate(image, _SOBEL_X, mode="constant", cval=0.0)
    gy = ndimage.correlate(image, _SOBEL_Y, mode="constant", cval=0.0)
    magnitude = np.sqrt(gx * gx + gy * gy)
    gx = gx + (gx == 0) * _EPS_G
    return magnitude, np.arctan(gy / gx)


def qabf(a, b, fused) -> float:
    r"""Q_AB/F (Q_G): gradient-based edge preservation (Xydeas & Petrovic 2000).

    Port of ``metricXydeas.m`` of the MFIF survey (Liu et al. 2020), which corrects the
    constants of Z. Liu's toolbox version to those of the original paper.

    Parameters
    ----------
    a, b : array_like
        The two source images (2-D, or (H, W, 3) RGB, converted with :func:`to_gray`).
    fused : array_like
        The fused image, same shape.

    Returns
    -------
    float
        Q_AB/F, in [0, Q0] with Q0 = 0.9994 / (1 + e^-7.5) * 0.9879 / (1 + e^-4.4)
        ~= 0.974794, the value reached when the fused image equals both sources
        (G = 1, A = 1 everywhere). Constant (e.g. all-zero) images give Q0 too.

    Notes
    -----
    For each image X, Sobel responses by zero-padded correlation ('same' size, MATLAB
    ``filter2``), :math:`s_x` with [[-1,0,1],[-2,0,2],[-1,0,1]] and :math:`s_y` with
    [[-1,-2,-1],[0,0,0],[1,2,1]]; :math:`g_X = \sqrt{s_x^2 + s_y^2}` and
    :math:`\alpha_X = \arctan(s_y / s_x)`, where 1e-5 is added to :math:`s_x` where it
    is 0. For a source X and the fused image F:

    .. math::

        G^{XF} = g_F / g_X \text{ if } g_X > g_F \text{ else } g_X / g_F, \qquad
        A^{XF} = 1 - 2 |\alpha_X - \alpha_F| / \pi,

        Q^{XF} = \frac{0.9994}{1 + e^{-15 (G^{XF} - 0.5)}}
                 \cdot \frac{0.9879}{1 + e^{-22 (A^{XF} - 0.8)}},

        Q_{AB/F} = \frac{\sum (Q^{AF} w_A + Q^{BF} w_B)}{\sum (w_A + w_B)}.

    Details kept from the reference code, which matter only at pixels with zero
    gradient: before dividing, 1e-5 is added to :math:`g_X` where it is 0 and to
    :math:`g_F` where it is 0, and the weights :math:`w_X` are these patched
    :math:`g_X`. The comparison :math:`g_X > g_F` and the ratio :math:`g_F / g_X` for
    source A use the unpatched :math:`g_F`, those for source B the patched one (the
    reference patches :math:`g_F` in place between the two). Hence swapping the sources
    can change the result, but only at the 1e-12 level.

    References
    ----------
    C. S. Xydeas, V. Petrovic, "Objective image fusion performance measure",
    Electronics Letters 36 (4) (2000) 308-309.
    """
    img1, img2, fim = _three_gray(a, b, fused)
    g_f, alpha_f = _sobel(fim)
    g_1, alpha_1 = _sobel(img1)
    g_2, alpha_2 = _sobel(img2)

    def preservation(g_x, alpha_x, g_f):
        larger = g_x > g_f
        g_x = g_x + (g_x == 0) * _EPS_G
        ratio_fx = g_f / g_x
        g_f = g_f + (g_f == 0) * _EPS_G
        ratio_xf = g_x / g_f
        strength = np.where(larger, ratio_fx, ratio_xf)
        orientation = 1.0 - np.abs(alpha_x - alpha_f) * 2.0 / np.pi
        q = 0.9994 / (1.0 + np.exp(-15.0 * (strength - 0.5)))
        q = q * (0.9879 / (1.0 + np.exp(-22.0 * (orientation - 0.8))))
        return q, g_x, g_f

    q_af, w_a, g_f = preservation(g_1, alpha_1, g_f)
    q_bf, w_b, g_f = preservation(g_2, alpha_2, g_f)
    return float(np.sum(q_af * w_a + q_bf * w_b) / np.sum(w_a + w_b))


# -------------------------------------------------------------------------------- Q_MI


def _normalize255(image: np.ndarray) -> np.ndarray:
    """normalize1.m: min-max to 0..255 and round; a constant image becomes all zeros.

    (The reference leaves an all-zero image as is and fails with NaNs on any other
    constant image; mapping every constant image to zeros extends the all-zero case.)
    """
    high, low = image.max(), image.min()
    if high == low:
        return np.zeros_like(image)
    return _round_half_away((image - low) / (high - low) * 255.0)


def _entropy(p: np.ndarray) -> float:
    p = p[p > 0]
    return float(-np.sum(p * np.log2(p)))


def _mutual_information(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    """mutual_info.m: MI, H(X), H(Y) from the 256 x 256 joint histogram, in bits."""
    codes = x.astype(np.int64).ravel() * 256 + y.astype(np.int64).ravel()
    joint = np.bincount(codes, minlength=256 * 256).reshape(256, 256).astype(np.float64)
    joint /= joint.sum()
    h_x = _entropy(joint.sum(axis=1))
    h_y = _entropy(joint.sum(axis=0))
    h_xy = _entropy(joint.ravel())
    return h_x + h_y - h_xy, h_x, h_y


def nmi(a, b, fused) -> float:
    r"""Q_MI: normalised mutual information (Hossny et al. 2008).

    Port of ``metricMI.m`` with ``sw=1`` (with ``normalize1.m`` and ``mutual_info.m``)
    as used by the MFIF survey (Liu et al. 2020).

    Parameters
    ----------
    a, b : array_like
        The two source images (2-D, or (H, W, 3) RGB, converted with :func:`to_gray`).
    fused : array_like
        The fused image, same shape.

    Returns
    -------
    float
        Q_MI, in [0, 2]; 2 when the fused image equals both sources (and they are not
        constant).

    Notes
    -----
    Each image is min-max normalised to 0..255 and rounded (halves away from zero, as
    MATLAB). With the 256 x 256 joint histogram of a source X and the fused image F
    (as probabilities) and entropies in bits,

    .. math::

        MI(X, F) = H(X) + H(F) - H(X, F),

        Q_{MI} = 2 \left( \frac{MI(A, F)}{H(A) + H(F)}
                        + \frac{MI(B, F)}{H(B) + H(F)} \right).

    Constant images, where the reference fails: a constant image is normalised to
    all zeros (entropy 0); a term whose denominator H(X) + H(F) is 0 (both X and F
    constant) counts as 0, since there is no information to transfer. So three
    constant images give 0.

    References
    ----------
    M. Hossny, S. Nahavandi, D. Creighton, "Comments on 'Information measure for
    performance of image fusion'", Electronics Letters 44 (18) (2008) 1066-1067.
    """
    img1, img2, fim = (_normalize255(x) for x in _three_gray(a, b, fused))
    total = 0.0
    for source in (img1, img2):
        mi, h_x, h_f = _mutual_information(source, fim)
        if h_x + h_f > 0:
            total += mi / (h_x + h_f)
    return float(2.0 * total)


# --------------------------------------------------------------------------------- Q_Y

_YANG_MIN_SIZE = 11
_YANG_C = 2e-16


def _gaussian_window(size: int, sigma: float) -> np.ndarray:
    """MATLAB ``fspecial('gaussian', size, sigma)``, normalised to sum 1."""
    x = np.arange(size) - (size - 1) / 2.0
    h = np.exp(-(x[:, None] ** 2 + x[None, :] ** 2) / (2.0 * sigma * sigma))
    h[h < np.finfo(float).eps * h.max()] = 0.0
    h /= h.sum()
    return h / h.sum()


_YANG_WINDOW = _gaussian_window(7, 1.5)


def _filter_valid(image: np.ndarray) -> np.ndarray:
    """filter2(window, image, 'valid') with the 7 x 7 Gaussian window."""
    r = _YANG_WINDOW.shape[0] // 2
    return ndimage.correlate(image, _YANG_WINDOW, mode="constant")[r:-r, r:-r]


def _flat_windows(image: np.ndarray) -> np.ndarray:
    """True at 'valid' positions whose 7 x 7 window is exactly constant."""
    n = _YANG_WINDOW.shape[0]
    r = n // 2
    high = ndimage.maximum_filter(image, size=n)
    low = ndimage.minimum_filter(image, size=n)
    return (high == low)[r:-r, r:-r]


def _ssim_yang(x: np.ndarray, y: np.ndarray):
    """ssim_yang of metricYang.m: SSIM map (7 x 7 Gaussian, C1 = C2 = 2e-16) and the
    local variances of x and y, all on the 'valid' grid."""
    mu_x = _filter_valid(x)
    mu_y = _filter_valid(y)
    var_x = _filter_valid(x * x) - mu_x * mu_x
    var_y = _filter_valid(y * y) - mu_y * mu_y
    cov = _filter_valid(x * y) - mu_x * mu_y
    # In a window where an image is constant its variance (and the covariance) is
    # exactly 0, but E[x^2] - E[x]^2 leaves rounding noise of ~1e-12, far above
    # C2 = 2e-16, which makes the SSIM there an arbitrary ratio of noises (it can
    # reach 1e6). Use the exact zeros instead.
    flat_x = _flat_windows(x)
    flat_y = _flat_windows(y)
    var_x[flat_x] = 0.0
    var_y[flat_y] = 0.0
    cov[flat_x | flat_y] = 0.0
    c = _YANG_C
    ssim_map = ((2 * mu_x * mu_y + c) * (2 * cov + c)) / (
        (mu_x * mu_x + mu_y * mu_y + c) * (var_x + var_y + c)
    )
    return ssim_map, var_x, var_y


def q_y(a, b, fused) -> float:
    r"""Q_Y: Yang's SSIM-based fusion metric (Yang et al. 2008).

    Port of ``metricYang.m`` of the MFIF survey (Liu et al. 2020). The survey's
    repository has held two revisions of it; this follows the one that avoids NaNs by
    adding 0.5 to both variances where they sum to 0, which is the one that reproduces
    the published values (the other, which substitutes (SSIM(A,F) + SSIM(B,F)) / 2
    where lambda is NaN, misses two Lytro pairs by 3.5e-5).

    Parameters
    ----------
    a, b : array_like
        The two source images (2-D, or (H, W, 3) RGB, converted with :func:`to_gray`),
        at least 11 x 11.
    fused : array_like
        The fused image, same shape.

    Returns
    -------
    float
        Q_Y; 1 when the fused image equals both sources (constant images included).

    Notes
    -----
    SSIM maps on the 'valid' grid (MATLAB ``filter2(w, ., 'valid')``) with a 7 x 7
    Gaussian window w (sigma 1.5, sum 1) and C1 = C2 = 2e-16:

    .. math::

        SSIM(X, Y) = \frac{(2 \mu_X \mu_Y + C_1)(2 \sigma_{XY} + C_2)}
                          {(\mu_X^2 + \mu_Y^2 + C_1)(\sigma_X^2 + \sigma_Y^2 + C_2)},
        \quad \sigma_X^2 = w * X^2 - \mu_X^2, \ \sigma_{XY} = w * XY - \mu_X \mu_Y.

    With :math:`\lambda = \sigma_A^2 / (\sigma_A^2 + \sigma_B^2)` (both variances
    raised by 0.5 where their sum is 0, so :math:`\lambda = 1/2` there), per pixel

    .. math::

        Q = \begin{cases}
            \lambda\, SSIM(A, F) + (1 - \lambda)\, SSIM(B, F)
                & SSIM(A, B) \ge 0.75, \\
            \max(SSIM(A, F), SSIM(B, F)) & \text{otherwise,}
            \end{cases}

    and Q_Y is the mean of Q.

    One deliberate difference from the reference: in 7 x 7 windows where an image is
    exactly constant its variance and covariances are set to exactly 0. With
    C1 = C2 = 2e-16 the reference's SSIM there is a ratio of floating-point rounding
    noise (of whatever summation order MATLAB's ``conv2`` uses), which numpy cannot
    reproduce and which, evaluated with numpy's rounding, can blow the mean up by
    several units. The exact values differ from MATLAB's only where two images are
    constant over a window with different values; on the survey's Lytro set that moves
    Q_Y by at most 1.2e-4 per image (by < 1e-6 on 11 of the 20). Windows that are
    not exactly constant are well conditioned and unaffected.

    References
    ----------
    C. Yang, J.-Q. Zhang, X.-R. Wang, X. Liu, "A novel similarity based quality metric
    for image fusion", Information Fusion 9 (2) (2008) 156-160.
    """
    img1, img2, fim = _three_gray(a, b, fused)
    if min(img1.shape) < _YANG_MIN_SIZE:
        raise MfifError(
            f"Q_Y needs images of at least {_YANG_MIN_SIZE} x {_YANG_MIN_SIZE} pixels, "
            f"got {img1.shape[0]} x {img1.shape[1]}"
        )
    ssim_ab, var_a, var_b = _ssim_yang(img1, img2)
    ssim_af, _, _ = _ssim_yang(img1, fim)
    ssim_bf, _, _ = _ssim_yang(img2, fim)
    similar = ssim_ab >= 0.75
    patch = (var_a + var_b == 0) * 0.5
    var_a = var_a + patch
    var_b = var_b + patch
    lam = var_a / (var_a + var_b)
    q_similar = (lam * ssim_af + (1.0 - lam) * ssim_bf) * similar
    q_other = np.maximum(ssim_af, ssim_bf) * ~similar
    return float(np.mean(q_similar + q_other))


# -------------------------------------------------------------------------------- Q_CB

# metricChenBlum.m: contrast sensitivity function (DoG in the frequency domain) ...
_CSF_F0, _CSF_F1, _CSF_A = 15.3870, 1.3456, 0.7622
# ... and the local contrast: C = |G1 * I / G2 * I - 1|, C' = k C^p / (h C^q + Z)
_CB_K, _CB_H, _CB_P, _CB_Q, _CB_Z = 1.0, 1.0, 3.0, 2.0, 0.0001


def _gaussian31(sigma: float) -> np.ndarray:
    """gaussian2d of metricChenBlum.m: 31 x 31, unnormalised 2-D Gaussian density."""
    x = np.arange(-15, 16, dtype=np.float64)
    r2 = x[None, :] ** 2 + x[:, None] ** 2
    return np.exp(-r2 / (2.0 * sigma * sigma)) / (2.0 * np.pi * sigma * sigma)


_CB_G1 = _gaussian31(2.0)
_CB_G2 = _gaussian31(4.0)


def _csf(shape: tuple[int, int]) -> np.ndarray:
    """The DoG contrast sensitivity filter on MATLAB's ``freqspace`` grid (centred)."""
    rows, cols = shape
    # freqspace: ((0:n-1) - floor(n/2)) * 2/n; scaled by n/30 (the reference's 'DoG1')
    u = (np.arange(cols) - cols // 2) * (2.0 / cols) * (cols / 30.0)
    v = (np.arange(rows) - rows // 2) * (2.0 / rows) * (rows / 30.0)
    r = np.sqrt(u[None, :] ** 2 + v[:, None] ** 2)
    return np.exp(-((r / _CSF_F0) ** 2)) - _CSF_A * np.exp(-((r / _CSF_F1) ** 2))


def _contrast_response(image: np.ndarray, csf: np.ndarray) -> np.ndarray:
    filtered = np.fft.ifft2(np.fft.ifftshift(np.fft.fftshift(np.fft.fft2(image)) * csf))
    # the filter is even, so the result is real up to rounding (~1e-13); the reference
    # keeps the complex array, whose tiny imaginary part does not change the metric
    filtered = filtered.real
    # filter2(G, ., 'same'): G is symmetric, so correlation = convolution
    fine = signal.fftconvolve(filtered, _CB_G1, mode="same")
    coarse = signal.fftconvolve(filtered, _CB_G2, mode="same")
    contrast = np.abs(_divide(fine, coarse, zero_by_zero=1.0) - 1.0)
    contrast[(coarse == 0) & (fine != 0)] = 0.0
    return _CB_K * contrast**_CB_P / (_CB_H * contrast**_CB_Q + _CB_Z)


def q_cb(a, b, fused) -> float:
    r"""Q_CB: Chen & Blum's human-perception-inspired fusion metric (Chen & Blum 2009).

    Port of ``metricChenBlum.m`` (Z. Liu's toolbox, as used unchanged by the MFIF
    survey, Liu et al. 2020), frequency-domain filtering with :mod:`numpy.fft`.

    Parameters
    ----------
    a, b : array_like
        The two source images (2-D, or (H, W, 3) RGB, converted with :func:`to_gray`).
    fused : array_like
        The fused image, same shape.

    Returns
    -------
    float
        Q_CB, in [0, 1]; 1 when the fused image equals both sources.

    Notes
    -----
    Each image is min-max normalised to 0..255 and rounded (as in :func:`nmi`), then
    filtered in the frequency domain by the contrast sensitivity function

    .. math::

        S(r) = e^{-(r / f_0)^2} - a\, e^{-(r / f_1)^2},
        \quad f_0 = 15.3870,\ f_1 = 1.3456,\ a = 0.7622,

    on MATLAB's ``freqspace`` grid scaled by (width / 30, height / 30). Local contrast
    with 31 x 31 Gaussians :math:`G_1` (sigma 2) and :math:`G_2` (sigma 4), zero-padded
    'same' filtering: :math:`C = |G_1 * I / G_2 * I - 1|` and the masked contrast
    :math:`C' = C^3 / (C^2 + 10^{-4})`. For a source X and the fused image F the
    contrast preservation is :math:`Q_{XF} = C'_X / C'_F` if :math:`C'_X < C'_F`,
    else :math:`C'_F / C'_X`; the saliency weights are
    :math:`\lambda_A = C_A'^2 / (C_A'^2 + C_B'^2)`, :math:`\lambda_B = 1 - \lambda_A`, and

    .. math::

        Q_{CB} = \operatorname{mean}(\lambda_A Q_{AF} + \lambda_B Q_{BF}).

    Where the reference divides 0 by 0 (only with constant images: a constant image is
    normalised to all zeros, see :func:`nmi`) this port uses the limits "no contrast":
    C = 0 where :math:`G_2 * I = 0`, :math:`Q_{XF} = 1` where
    :math:`C'_X = C'_F = 0`, and :math:`\lambda_A = \lambda_B = 1/2` where
    :math:`C'_A = C'_B = 0`. So three constant images give 1, and a constant fused
    image with textured sources gives about 0.

    References
    ----------
    Y. Chen, R. S. Blum, "A new automated quality assessment algorithm for image
    fusion", Image and Vision Computing 27 (10) (2009) 1421-1432.
    """
    images = [_normalize255(x) for x in _three_gray(a, b, fused)]
    csf = _csf(images[0].shape)
    c_a, c_b, c_f = (_contrast_response(x, csf) for x in images)

    def preservation(c_x):
        return np.where(
            c_x < c_f, _divide(c_x, c_f, zero_by_zero=1.0), _divide(c_f, c_x, zero_by_zero=1.0)
        )

    q_af = preservation(c_a)
    q_bf = preservation(c_b)
    energy = c_a * c_a + c_b * c_b
    lam_a = _divide(c_a * c_a, energy, zero_by_zero=0.5)
    lam_b = _divide(c_b * c_b, energy, zero_by_zero=0.5)
    return float(np.mean(lam_a * q_af + lam_b * q_bf))


# ---------------------------------------------------------------- full-reference metrics


def _data_range(reference: np.ndarray, data_range: float | None) -> float:
    if data_range is not None:
        if not data_range > 0:
            raise MfifError(f"data_range must be positive, got {data_range}")
        return float(data_range)
    if reference.dtype.kind in "ui":
        info = np.iinfo(reference.dtype)
        return float(info.max) - float(info.min)
    if reference.dtype.kind == "f":
        span = float(np.max(reference)) - float(np.min(reference))
        if not span > 0:
            raise MfifError("the reference image is constant; give data_range explicitly")
        return span
    raise MfifError(f"unsupported dtype {reference.dtype}; give real intensities")


def _pair(reference, image) -> tuple[np.ndarray, np.ndarray]:
    reference = np.asarray(reference)
    image = np.asarray(image)
    if reference.shape != image.shape:
        raise MfifError(
            f"the reference {reference.shape} and the image {image.shape} differ in shape"
        )
    return reference, image


def psnr(reference, image, data_range: float | None = None) -> float:
    r"""Peak signal-to-noise ratio in dB (:func:`skimage.metrics.peak_signal_noise_ratio`).

    Parameters
    ----------
    reference : array_like
        The ground truth (any shape; colour channels are simply more values).
    image : array_like
        The image to assess, same shape.
    data_range : float, optional
        The peak value. Default: the dtype's range for integer references (255 for
        uint8), max - min of the reference for float ones.

    Returns
    -------
    float
        :math:`10 \log_{10}(R^2 / \mathrm{MSE})`; ``inf`` for identical images.
    """
    reference, image = _pair(reference, image)
    peak = _data_range(reference, data_range)
    if np.array_equal(reference, image):
        return float("inf")
    from skimage.metrics import peak_signal_noise_ratio

    return float(
        peak_signal_noise_ratio(
            reference.astype(np.float64), image.astype(np.float64), data_range=peak
        )
    )


def ssim(reference, image, data_range: float | None = None) -> float:
    """Mean structural similarity (:func:`skimage.metrics.structural_similarity`).

    Parameters
    ----------
    reference : array_like
        The ground truth, 2-D or (H, W, C) colour (then ``channel_axis=-1``: the mean of
        the per-channel SSIMs). At least 7 x 7.
    image : array_like
        The image to assess, same shape.
    data_range : float, optional
        As for :func:`psnr`.

    Returns
    -------
    float
        Mean SSIM (scikit-image defaults: 7 x 7 uniform window, K1 = 0.01,
        K2 = 0.03); 1.0 for identical images.

    References
    ----------
    Z. Wang, A. C. Bovik, H. R. Sheikh, E. P. Simoncelli, "Image quality assessment:
    from error visibility to structural similarity", IEEE Transactions on Image
    Processing 13 (4) (2004) 600-612.
    """
    reference, image = _pair(reference, image)
    if reference.ndim not in (2, 3):
        raise MfifError(f"expected a 2-D or (H, W, C) image, got shape {reference.shape}")
    if min(reference.shape[:2]) < 7:
        raise MfifError(f"SSIM needs images of at least 7 x 7 pixels, got shape {reference.shape}")
    peak = _data_range(reference, data_range)
    from skimage.metrics import structural_similarity

    kwargs = {"channel_axis": -1} if reference.ndim == 3 else {}
    return float(
        structural_similarity(
            reference.astype(np.float64), image.astype(np.float64), data_range=peak, **kwargs
        )
    )


def height_error(index_map, true_depth, mask=None) -> float:
    """Mean absolute error of a height (index) map, in slices.

    Parameters
    ----------
    index_map : array_like
        The estimated (fractional) slice index per pixel, e.g. ``FusionResult.index_map``.
    true_depth : array_like
        The true slice index per pixel, same shape.
    mask : array_like of bool, optional
        Only pixels where ``mask`` is True count.

    Returns
    -------
    float
        ``mean(|index_map - true_depth|)`` over the (masked) pixels.
    """
    estimate = np.asarray(index_map, dtype=np.float64)
    truth = np.asarray(true_depth, dtype=np.float64)
    if estimate.shape != truth.shape:
        raise MfifError(
            f"the index map {estimate.shape} and the true depth {truth.shape} differ in shape"
        )
    error = np.abs(estimate - truth)
    if mask is not None:
        mask = np.asarray(mask)
        if mask.dtype != bool:
            raise MfifError(f"the mask must be boolean, got dtype {mask.dtype}")
        if mask.shape != estimate.shape:
            raise MfifError(
                f"the mask {mask.shape} and the index map {estimate.shape} differ in shape"
            )
        error = error[mask]
    if error.size == 0:
        raise MfifError("no pixels to compare (empty image or empty mask)")
    return float(np.mean(error))


# ------------------------------------------------------------------ single-image metrics


def _one_gray(image) -> np.ndarray:
    """to_gray plus the checks every single-image metric needs (not empty, finite)."""
    gray = to_gray(image)
    if gray.size == 0:
        raise MfifError("the image is empty")
    if not np.isfinite(gray).all():
        raise MfifError("the image contains NaN or infinite values")
    return gray


def entropy(image) -> float:
    r"""Shannon entropy of the gray-level histogram, in bits (256 bins).

    The "EN" / "entropy" of the MFIF literature (e.g. paper 001 of the project's
    sources): how much information the (fused) image carries; higher means more.

    Parameters
    ----------
    image : array_like
        A 2-D image or an (H, W, 3) RGB image (converted with :func:`to_gray`), any
        real dtype.

    Returns
    -------
    float
        :math:`H = -\sum_{k=0}^{255} p_k \log_2 p_k` (terms with :math:`p_k = 0`
        omitted), in [0, 8]; 0 for a constant image, 8 for 256 equally frequent levels.

    Notes
    -----
    The 256 gray levels are those of :func:`nmi` (``normalize1.m`` of the MFIF survey):
    the gray image is min-max scaled to 0..255 over its own data range and rounded
    (halves away from zero), :math:`k = \operatorname{round}(255 (x - \min) /
    (\max - \min))`, and :math:`p_k` is the fraction of pixels at level k. So

    - for **uint8** images (and RGB uint8, whose gray is rounded to uint8 as MATLAB's
      ``rgb2gray`` does) this is exactly the entropy of the plain 256-level histogram of
      the pixel values, as MATLAB's ``entropy`` and the literature compute it: the
      stretch maps at most 256 distinct integers one-to-one onto levels, so it moves
      no pixel into another pixel's bin;
    - for **uint16 and float** images the 256 bins span the image's own range
      [min, max] (the inner 254 bins of width (max - min) / 255, centred on the levels;
      the two end bins half as wide), not the dtype's range. This deliberately differs
      from MATLAB's ``entropy``, which bins uint16 over 0..65535 and float over [0, 1]:
      a microscope's 12-bit data in uint16 would otherwise fall into 16 bins, and floats
      here can be on any intensity scale;
    - a constant image (every dtype) has entropy 0.
    """
    levels = _normalize255(_one_gray(image)).astype(np.int64)
    counts = np.bincount(levels.ravel(), minlength=256).astype(np.float64)
    return _entropy(counts / counts.sum()) + 0.0  # + 0.0: no -0.0 for constant images


# PIQE (piqe.m of MATLAB's Image Processing Toolbox, R2018b and later)
_PIQE_BLOCK = 16  # blocks of 16 x 16 pixels
_PIQE_ACTIVITY_T = 0.1  # a block is active when its MSCN variance exceeds this
_PIQE_IMPAIRED_T = 0.1  # an edge segment with a smaller std marks a noticeable artifact
_PIQE_SEGMENT = 6  # edge segments of 6 contiguous pixels (11 per block edge)
_PIQE_C = 1.0  # the constant added to the pooled score and to the number of active blocks
# the block's "centre": its two middle columns (0-based 7 and 8); its "surround": every
# column but 7 and 9, as piqe.m deletes column 8 (1-based) and then column 9 of what is
# left, i.e. the original column 10
_PIQE_CENTRE = np.array([7, 8])
_PIQE_SURROUND = np.array([c for c in range(_PIQE_BLOCK) if c not in (7, 9)])


def _gaussian_1d(size: int, sigma: float) -> np.ndarray:
    x = np.arange(size) - (size - 1) / 2.0
    h = np.exp(-(x * x) / (2.0 * sigma * sigma))
    return h / h.sum()


_PIQE_WINDOW = _gaussian_1d(7, 7.0 / 6.0)


class PiqeMaps(NamedTuple):
    """What :func:`piqe_maps` returns: MATLAB ``piqe``'s four outputs and the block scores."""

    #: the PIQE score, as :func:`piqe`
    score: float
    #: (H, W) bool: pixels of spatially active blocks (MATLAB's ``ActivityMask``)
    activity_mask: np.ndarray
    #: (H, W) bool: active blocks with a noticeable artifact, i.e. blockiness or another
    #: sudden flat edge (MATLAB's ``NoticeableArtifactsMask``)
    artifact_mask: np.ndarray
    #: (H, W) bool: active blocks judged noisy (MATLAB's ``NoiseMask``)
    noise_mask: np.ndarray
    #: (ceil(H/16), ceil(W/16)) float: each block's distortion D_k (0 for an active block
    #: with neither distortion), NaN for blocks that are not active
    block_distortion: np.ndarray


def _piqe_gray255(image, data_range: float | None) -> np.ndarray:
    """The gray image on MATLAB's ``round(255 * im2double(I))`` scale (see :func:`piqe`)."""
    array = np.asarray(image)
    gray = _one_gray(array)
    if data_range is not None:
        if not (np.isfinite(data_range) and data_range > 0):
            raise MfifError(f"data_range must be a positive number, got {data_range}")
        offset = float(np.iinfo(array.dtype).min) if array.dtype.kind in "ui" else 0.0
        span = float(data_range)
    elif array.dtype.kind in "ui":
        info = np.iinfo(array.dtype)
        offset, span = float(info.min), float(info.max) - float(info.min)
    else:
        offset, high = float(gray.min()), float(gray.max())
        span = high - offset
        if span == 0:
            return np.zeros_like(gray)
    return _round_half_away(255.0 * ((gray - offset) / span))


def _mscn(image: np.ndarray) -> np.ndarray:
    """Mean-subtracted contrast-normalised coefficients as piqe.m: 7 x 7 Gaussian
    (sigma 7/6), replicate padding, (I - mu) / (sigma + 1)."""

    def blur(x):
        x = ndimage.correlate1d(x, _PIQE_WINDOW, axis=0, mode="nearest")
        return ndimage.correlate1d(x, _PIQE_WINDOW, axis=1, mode="nearest")

    mu = blur(image)
    sigma = np.sqrt(np.abs(blur(image * image) - mu * mu))
    return (image - mu) / (sigma + 1.0)


def _piqe(image, data_range: float | None):
    gray = _piqe_gray255(image, data_range)
    rows, cols = gray.shape
    n = _PIQE_BLOCK
    # piqe.m pads (replicating the last row / column) up to a multiple of 16, then
    # computes the MSCN coefficients on the padded image
    gray = np.pad(gray, ((0, -rows % n), (0, -cols % n)), mode="edge")
    mscn = _mscn(gray)
    by, bx = gray.shape[0] // n, gray.shape[1] // n
    blocks = mscn.reshape(by, n, bx, n).swapaxes(1, 2)  # (by, bx, 16, 16)

    variance = blocks.reshape(by, bx, n * n).var(axis=-1, ddof=1)
    active = variance > _PIQE_ACTIVITY_T

    # noticeable artifacts: any 6-pixel segment of any of the four block edges is
    # (nearly) flat, std < 0.1
    edges = np.stack(
        [blocks[..., 0, :], blocks[..., :, n - 1], blocks[..., n - 1, :], blocks[..., :, 0]],
        axis=-2,
    )  # (by, bx, 4, 16)
    segments = np.lib.stride_tricks.sliding_window_view(edges, _PIQE_SEGMENT, axis=-1)
    impaired = (segments.std(axis=-1, ddof=1) < _PIQE_IMPAIRED_T).any(axis=(-2, -1))

    # noise: the block's std sigma against beta = |sigma - r| / max(sigma, r), where r is
    # the ratio of the centre's std to the surround's (0 when 0 / 0)
    sigma = np.sqrt(variance)
    centre_std = blocks[..., _PIQE_CENTRE].reshape(by, bx, -1).std(axis=-1, ddof=1)
    surround_std = blocks[..., _PIQE_SURROUND].reshape(by, bx, -1).std(axis=-1, ddof=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = centre_std / surround_std
        ratio[np.isnan(ratio)] = 0.0
        beta = np.abs(sigma - ratio) / np.maximum(sigma, ratio)
        noisy = sigma > 2.0 * beta  # NaN (r = inf, or 0 / 0) compares False, as in MATLAB

    impaired &= active
    noisy &= active
    distortion = impaired * (1.0 - variance) + noisy * variance
    score = (float(distortion[active].sum()) + _PIQE_C) / (_PIQE_C + int(active.sum())) * 100.0
    block_distortion = np.where(active, distortion, np.nan)
    return score, active, impaired, noisy, block_distortion, (rows, cols)


def piqe(image, data_range: float | None = None) -> float:
    r"""PIQE: Perception-based Image Quality Evaluator (Venkatanath et al. 2015).

    A no-reference (blind) score of perceived distortion, blockiness and noise, in
    "percent": lower is better. Follows MATLAB's ``piqe`` (Image Processing Toolbox),
    the implementation behind the numbers that MFIF papers report (e.g. paper 001 of
    the project's sources), step by step and with its constants; vectorised over blocks.

    Parameters
    ----------
    image : array_like
        A 2-D image or an (H, W, 3) RGB image (converted with :func:`to_gray`), any
        real dtype, any size (padded to multiples of 16 as MATLAB does).
    data_range : float, optional
        The intensity that maps to 255 (the "1" of MATLAB's ``im2double``); for integer
        dtypes it is counted from the dtype's minimum (0 for unsigned), for floats from 0.
        Default: the dtype's range for integer images (uint8 used as is, uint16 divided
        by 257, exactly as MATLAB), the image's own [min, max] for float images (MATLAB
        assumes float images in [0, 1]: pass ``data_range=1`` to reproduce that).

    Returns
    -------
    float
        The PIQE score. 0 to 100 in practice (the pooling does not clip; MATLAB's
        documentation gives [0, 100] and reads 0-20 as excellent, 21-35 good, 36-50
        fair, 51-80 poor, 81-100 bad). An image without any spatially active
        block, e.g. a constant one, scores (0 + C) / (0 + C) * 100 = 100, as MATLAB.

    Notes
    -----
    The gray image is brought to 0..255 and rounded (MATLAB's
    ``round(255 * im2double(I))``, see ``data_range``), padded at the bottom and the
    right by replicating its last row / column to multiples of 16, and turned into
    MSCN coefficients

    .. math::

        \hat I = \frac{I - \mu}{\sigma + 1}, \quad \mu = w * I, \quad
        \sigma = \sqrt{|w * I^2 - \mu^2|},

    with w the 7 x 7 Gaussian window of sigma 7/6 (sum 1, replicate padding). For every
    non-overlapping 16 x 16 block k of :math:`\hat I`, with :math:`v_k` the (sample,
    n - 1) variance of its 256 coefficients:

    - the block is **active** (spatially prominent) when :math:`v_k > 0.1`; only
      active blocks count;
    - it has a **noticeable artifact** (:math:`W_{NDC} = 1`) when any segment of 6
      contiguous pixels of any of its four edges (11 overlapping segments per edge:
      first and last row, first and last column) has a sample std below 0.1;
    - it is **noisy** (:math:`W_{NC} = 1`) when :math:`\sqrt{v_k} > 2 \beta_k`,
      :math:`\beta_k = |\sqrt{v_k} - r_k| / \max(\sqrt{v_k}, r_k)`, where :math:`r_k`
      is the ratio of the sample std of the block's centre (its two middle columns,
      0-based 7 and 8) to that of its surround (0 if both are 0). As in MATLAB's code
      the surround is every column but 7 and **9** (it deletes column 8 and then
      column 9 of what is left), so column 8 counts in both; kept for identical results.

    The block's distortion is :math:`D_k = W_{NDC} (1 - v_k) + W_{NC} v_k` and, with
    :math:`N_a` active blocks and C = 1,

    .. math::

        \mathrm{PIQE} = \frac{\sum_{k\ \mathrm{active}} D_k + C}{N_a + C} \cdot 100.

    Checked against a block-by-block transcription of MATLAB's ``piqe.m`` (in the
    tests). The Python ports ``pypiqe`` (M. Rutherford) and ``pyiqa``'s PIQE differ
    from MATLAB for images that are not uint8 in [0, 255] with a maximum of 255: they
    scale by the image maximum and pad symmetrically instead of replicating; this
    function follows MATLAB there.

    References
    ----------
    N. Venkatanath, D. Praneeth, M. C. Bh, S. S. Channappayya, S. S. Medasani, "Blind
    image quality evaluation using perception based features", Twenty First National
    Conference on Communications (NCC), 2015, doi:10.1109/NCC.2015.7084843.
    """
    return _piqe(image, data_range)[0]


def piqe_maps(image, data_range: float | None = None) -> PiqeMaps:
    """PIQE with its spatial quality masks, as MATLAB's ``[Score, ActivityMask,
    NoticeableArtifactsMask, NoiseMask] = piqe(I)``, and the per-block distortions.

    Parameters
    ----------
    image : array_like
        As for :func:`piqe`.
    data_range : float, optional
        As for :func:`piqe`.

    Returns
    -------
    PiqeMaps
        ``score`` (as :func:`piqe`), ``activity_mask``, ``artifact_mask`` and
        ``noise_mask`` ((H, W) bool, whole 16 x 16 blocks, cropped to the image where
        it was padded) and ``block_distortion`` (one value D_k per block, NaN where the
        block is not active).
    """
    score, active, impaired, noisy, block_distortion, (rows, cols) = _piqe(image, data_range)

    def pixels(mask):
        full = np.repeat(np.repeat(mask, _PIQE_BLOCK, axis=0), _PIQE_BLOCK, axis=1)
        return full[:rows, :cols]

    return PiqeMaps(score, pixels(active), pixels(impaired), pixels(noisy), block_distortion)


#: the no-reference fusion metrics, by name (all ``metric(a, b, fused) -> float``)
NO_REFERENCE: dict[str, Callable[..., float]] = {
    "qabf": qabf,
    "nmi": nmi,
    "q_y": q_y,
    "q_cb": q_cb,
}
