"""The array operations the classic focus measures are written in, for numpy and for torch.

Each measure is written once against an ``ops`` object (:data:`NUMPY` or a :class:`TorchOps`),
so the CPU path (scipy.ndimage) and the GPU path (torch) compute the same formula:

- ``ops.correlate1d(x, weights, axis)``: ``scipy.ndimage.correlate1d`` with ``mode="reflect"``
  (the half-sample symmetric extension ``d c b a | a b c d | d c b a``, repeated when the
  kernel is longer than the image);
- ``ops.gaussian(x, sigma)``: ``scipy.ndimage.gaussian_filter(x, sigma, mode="reflect",
  truncate=3.0)`` (the same kernel, radius ``int(3 * sigma + 0.5)``); sigma <= 0 is no filter;
- ``ops.clip0(x)``: ``max(x, 0)``.

Torch computes a correlation as a weighted sum of shifted views of the padded image, in
float32, not with ``conv1d``: cuDNN would round the products to TF32 on recent GPUs, and the
results would differ from the CPU's by about 1e-3 instead of float rounding. Torch is imported
only when a :class:`TorchOps` is made.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy import ndimage as ndi

#: Gaussian kernels are cut at this many sigmas (as ``truncate`` in scipy)
TRUNCATE = 3.0


def radius(sigma: float) -> int:
    """Pixels a Gaussian of ``sigma`` reaches (scipy: ``int(truncate * sigma + 0.5)``)."""
    return int(TRUNCATE * sigma + 0.5) if sigma > 0 else 0


@lru_cache(maxsize=64)
def gaussian_kernel(sigma: float) -> np.ndarray:
    """scipy's 1-D Gaussian kernel for ``sigma`` (normalised to sum 1), float64."""
    r = radius(sigma)
    x = np.arange(-r, r + 1, dtype=np.float64)
    phi = np.exp(-0.5 / (sigma * sigma) * x * x)
    return phi / phi.sum()


def reflect_index(n: int, before: int, after: int) -> np.ndarray:
    """Indices into an axis of length ``n`` that extend it by ``before`` and ``after``
    samples with scipy's ``reflect`` rule (half-sample symmetric, period 2n)."""
    i = np.arange(-before, n + after) % (2 * n)
    return np.where(i < n, i, 2 * n - 1 - i)


class _NumpyOps:
    """The CPU path: scipy.ndimage on numpy arrays."""

    name = "numpy"

    @staticmethod
    def correlate1d(x: np.ndarray, weights: np.ndarray, axis: int) -> np.ndarray:
        return ndi.correlate1d(x, np.asarray(weights, dtype=x.dtype), axis=axis, mode="reflect")

    @staticmethod
    def gaussian(x: np.ndarray, sigma: float) -> np.ndarray:
        if sigma <= 0:
            return x
        return ndi.gaussian_filter(x, sigma, mode="reflect", truncate=TRUNCATE)

    @staticmethod
    def clip0(x: np.ndarray) -> np.ndarray:
        return np.maximum(x, 0)


NUMPY = _NumpyOps()


class TorchOps:
    """The same operations on torch tensors on ``device`` (float32)."""

    name = "torch"

    def __init__(self, device="cpu"):
        import torch

        self.torch = torch
        self.device = torch.device(device)
        self._index: dict[tuple[int, int, int], object] = {}

    def tensor(self, array: np.ndarray):
        """``array`` as a float32 tensor on the device."""
        return self.torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)).to(
            self.device, non_blocking=True)

    @staticmethod
    def numpy(tensor) -> np.ndarray:
        return tensor.detach().to("cpu").numpy()

    def _reflect(self, n: int, before: int, after: int):
        key = (n, before, after)
        if key not in self._index:
            self._index[key] = self.torch.from_numpy(reflect_index(n, before, after)).to(
                self.device)
        return self._index[key]

    def correlate1d(self, x, weights, axis: int):
        weights = np.asarray(weights, dtype=np.float64)
        size = weights.size
        before = size // 2  # scipy's origin 0: the kernel's centre is at size // 2
        after = size - 1 - before
        axis = axis % x.dim()
        n = x.shape[axis]
        padded = x.index_select(axis, self._reflect(n, before, after))
        out = None
        for k, w in enumerate(weights):
            if w == 0:
                continue
            term = padded.narrow(axis, k, n) * float(w)
            out = term if out is None else out.add_(term)
        return out if out is not None else self.torch.zeros_like(x)

    def gaussian(self, x, sigma: float):
        if sigma <= 0:
            return x
        kernel = gaussian_kernel(float(sigma))
        for axis in range(x.dim()):
            x = self.correlate1d(x, kernel, axis)
        return x

    def clip0(self, x):
        return x.clamp(min=0)
