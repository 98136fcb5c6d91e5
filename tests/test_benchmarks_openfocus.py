"""The openfocus adapter of the benchmarks (benchmarks/_openfocus.py): our stack convention in,
the input's dtype, scale and layout out. Skipped where openfocus (an optional benchmark
dependency, not one of ours) is not installed."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from napari_mfif.synthetic import cells_image

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "_openfocus.py"
_spec = importlib.util.spec_from_file_location("_openfocus_adapter", _PATH)
of = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(of)

pytestmark = pytest.mark.skipif(not of.available(), reason="openfocus is not installed")


def _slice(dtype, channels):
    image = cells_image((64, 72), seed=2)  # float32 in [0, 1]
    if channels:
        image = np.stack([image, 0.8 * image, 0.6 * image + 0.2], axis=-1)[..., :channels]
    if dtype == np.uint8:
        return np.rint(image * 255).astype(np.uint8)
    if dtype == np.uint16:
        return np.rint(image * 4095).astype(np.uint16)  # 12-bit data in uint16
    return image.astype(np.float32)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
@pytest.mark.parametrize("channels", [0, 1, 3])
def test_identical_slices_come_back(dtype, channels):
    sl = _slice(dtype, channels)
    stack = np.stack([sl, sl])
    for method in ("dtcwt", "guided_filter"):
        out = of.fuse(stack, method)
        assert out.dtype == sl.dtype and out.shape == sl.shape, method
        scale = float(sl.max())
        err = np.abs(out.astype(np.float64) - sl.astype(np.float64)).max() / scale
        assert err < 0.01, (method, err)


def test_stackmff_v3_picks_the_sharp_slice_and_gives_heights():
    from scipy import ndimage as ndi

    sharp = _slice(np.uint16, 0)
    blurred = np.rint(ndi.gaussian_filter(sharp.astype(np.float64), 3)).astype(np.uint16)
    stack = np.stack([blurred, sharp, blurred])
    out = of.fuse(stack, "stackmffv3")
    assert out.dtype == np.uint16 and out.shape == sharp.shape
    err = np.abs(out.astype(np.float64) - sharp).mean()
    assert err < np.abs(blurred.astype(np.float64) - sharp).mean() / 2
    heights = of.height_map(stack, "stackmffv3")
    assert heights.shape == sharp.shape and heights.dtype == np.float32
    assert 0.0 <= heights.min() and heights.max() <= 2.0


def test_unsupported_channels_refused():
    with pytest.raises(ValueError, match="channels"):
        of.fuse(np.zeros((2, 16, 16, 2), np.uint8), "dtcwt")
