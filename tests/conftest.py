import numpy as np
import pytest

from napari_mfif.synthetic import focal_stack


@pytest.fixture(scope="session")
def synth():
    """A small synthetic stack with ground truth (uint16, 6 slices, 128 x 128)."""
    return focal_stack(n_slices=6, shape=(128, 128), blur_per_slice=1.5, dtype=np.uint16, seed=3)


def psnr(reference: np.ndarray, image: np.ndarray, data_range: float) -> float:
    err = np.mean((reference.astype(np.float64) - image.astype(np.float64)) ** 2)
    return float(10 * np.log10(data_range**2 / err))
