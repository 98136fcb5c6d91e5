"""Focus CNN weights trained with boundary pairs (``training="boundary"``) and the centre
spread of their scores: where a focus boundary is, they put it within a pixel."""

import json

import numpy as np
import pytest
from scipy import ndimage as ndi

import napari_mfif as mf
from napari_mfif.synthetic import cells_image

torch = pytest.importorskip("torch")

from napari_mfif.focus.cnn import (TRAININGS, builtin_weights, load_net,  # noqa: E402
                                   read_weights)
from napari_mfif.fusion.cnn_pipeline import resolve_spread  # noqa: E402


def _halves(c0: int):
    """A pair with a straight focus boundary at column ``c0``: A sharp left of it and blurred
    (Gaussian, sigma 2) right of it, B the reverse."""
    img = cells_image((96, 128), seed=11)
    blur = ndi.gaussian_filter(img, 2.0)
    left = np.arange(128)[None, :] < c0
    return (np.where(left, img, blur).astype(np.float32),
            np.where(left, blur, img).astype(np.float32))


def _crossing_error(fm: np.ndarray, c0: int) -> np.ndarray:
    """Per row, |first column where the focus map is no longer above 0.5 - c0|, away from the
    image borders."""
    inner = fm[16:-16, 24:-24] > 0.5
    return np.abs(inner.sum(axis=1) + 24 - c0)


def test_shipped_boundary_weights_and_their_record():
    path = builtin_weights("compact", "boundary")
    assert path.name == "compact_boundary.pt" and path.stat().st_size < 5e6
    meta = read_weights(path)["meta"]
    assert meta == json.loads(path.with_suffix(".json").read_text())
    assert meta["boundary_fraction"] == 0.5 and meta["pair_noise"] == "shared"
    assert meta["heldout_accuracy_pair_head"] > 0.99
    assert "boundary" in TRAININGS
    _, loaded = load_net(None, "compact", "cpu", "boundary")
    assert resolve_spread("auto", loaded) == "centre"
    assert resolve_spread("auto", load_net(None, "compact", "cpu")[1]) == "patch"
    assert resolve_spread("patch", loaded) == "patch"


@pytest.mark.parametrize("c0", [61, 64, 70])
def test_boundary_weights_put_a_focus_boundary_within_a_pixel(c0):
    a, b = _halves(c0)
    sharp = _crossing_error(mf.focus_map(a, b, method="cnn", training="boundary").score, c0)
    paper = _crossing_error(mf.focus_map(a, b, method="cnn").score, c0)
    assert sharp.mean() < 1.0 and sharp.max() <= 2
    assert sharp.mean() < paper.mean()
    # the decision follows: the fused image is the sharp side on both sides of the boundary
    res = mf.fuse(np.stack([a, b]), method="cnn", training="boundary", gf_radius=2,
                  gf_eps=0.01, min_region=0)
    truth = np.where(np.arange(128)[None, :] < c0, a, b)
    err = np.abs(res.image - truth)[16:-16, 8:-8]
    assert np.median(err) < 1e-3 and err.mean() < 0.01


def test_spread_is_a_choice_and_changes_the_map():
    a, b = _halves(64)
    centre = mf.focus_map(a, b, method="cnn", spread="centre").score
    patch = mf.focus_map(a, b, method="cnn", spread="patch").score
    assert mf.focus_map(a, b, method="cnn").params["spread"] == "auto"
    assert np.array_equal(patch, mf.focus_map(a, b, method="cnn").score)  # papers: patch
    assert not np.allclose(centre, patch)
    with pytest.raises(mf.MfifError, match="spread"):
        mf.fuse(np.stack([a, b]), method="cnn", spread="middle")


@pytest.mark.parametrize("c0", [5, 6, 122])
def test_a_focus_boundary_next_to_the_image_border_is_placed_too(c0):
    """Patch centres lie 8 px inside the image; the centre spread scores the image mirrored
    by that much, so a boundary between the border and the outermost centres is found."""
    a, b = _halves(c0)
    fm = mf.focus_map(a, b, method="cnn", training="boundary").score
    crossing = (fm[8:-8] > 0.5).sum(axis=1)  # A sharp left of c0: columns above 0.5
    assert np.abs(crossing - c0).max() <= 1
    for mode in ("nway", "series"):
        res = mf.fuse(np.stack([a, b]), method="cnn", training="boundary", gf_radius=2,
                      gf_eps=0.01, min_region=0, mode=mode)
        truth = np.where(np.arange(128)[None, :] < c0, a, b)
        assert np.abs(res.image - truth)[8:-8].mean() < 0.01
