"""The ``dog`` method (fine-band energy with a consistency check, issue 12) and the N-way
consistency check shared by the classic measures: known answers on stacks built so that the
right choice is known, including stacks whose defocused slices grow fringes
(``synthetic.fringe_stack``)."""

import numpy as np
import pytest
import tifffile
from scipy import ndimage as ndi

import napari_mfif as mf
from napari_mfif.cli import main
from napari_mfif.focus import _ops, consistency
from napari_mfif.focus.classic import _fuse
from napari_mfif.focus.dog import fine_band_energy
from napari_mfif.registry import get_method
from napari_mfif.synthetic import cells_image, focal_stack
from napari_mfif.synthetic import fringe_stack as synthetic_fringes

from conftest import psnr


def fringe_stack(n=7, k0=3, shape=(160, 160), seed=0, noise=0.003, fringe=0.05):
    s = synthetic_fringes(n, in_focus=k0, shape=shape, seed=seed, noise=noise, fringe=fringe)
    return s.stack, s.sharp


def test_fringes_fool_sml_but_not_dog():
    stack, sharp = fringe_stack()
    best_slice = max(psnr(sharp, s, 1.0) for s in stack)
    sml = mf.fuse(stack, method="sml")
    dog = mf.fuse(stack, method="dog")
    # sml takes fringes for focus next to every cell edge; dog stays on the in-focus slice
    assert psnr(sharp, sml.image, 1.0) < best_slice - 10
    assert psnr(sharp, dog.image, 1.0) > best_slice - 1
    assert psnr(sharp, dog.image, 1.0) > psnr(sharp, sml.image, 1.0) + 10
    cells = sharp < 0.5
    assert np.mean(np.abs(dog.index_map[cells] - 3) < 0.5) > 0.97


@pytest.mark.parametrize("seed", [1, 2])
def test_each_part_of_dog_matters_on_fringes(seed):
    """Stronger fringes (contrast 0.08 per slice of defocus): the fine band alone, or the
    consistency check on sml, loses 8 dB or more; together they keep the in-focus slice."""
    stack, sharp = fringe_stack(seed=seed, fringe=0.08)
    dog = psnr(sharp, mf.fuse(stack, method="dog").image, 1.0)
    no_check = psnr(sharp, mf.fuse(stack, method="dog", consistency=0).image, 1.0)
    sml_check = psnr(sharp, mf.fuse(stack, method="sml", consistency=16).image, 1.0)
    sml = psnr(sharp, mf.fuse(stack, method="sml").image, 1.0)
    assert dog > 35 and dog > no_check + 8 and dog > sml_check + 8, (dog, no_check, sml_check)
    assert sml_check > sml  # the check helps sml too, a little


@pytest.mark.parametrize("mode", ["nway", "series"])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_dog_beats_every_slice_and_keeps_dtype(mode, dtype):
    s = focal_stack(n_slices=6, shape=(128, 128), blur_per_slice=1.5, dtype=dtype, seed=3)
    res = mf.fuse(s.stack, method="dog", mode=mode)
    assert res.image.dtype == dtype and res.image.shape == (128, 128)
    top = {np.uint8: 255, np.uint16: 4095, np.float32: 1.0}[dtype]
    fused = psnr(s.sharp, res.image, top)
    assert fused > max(psnr(s.sharp, sl, top) for sl in s.stack) + 6
    assert s.stack.min() <= res.image.min() and res.image.max() <= s.stack.max()


def test_dog_on_rgb_applies_one_decision_to_every_channel():
    s = focal_stack(n_slices=4, shape=(64, 64), dtype=np.uint8, seed=4)
    rgb = np.stack([s.stack, s.stack // 2, 255 - s.stack], axis=-1)
    res = mf.fuse(rgb, method="dog")
    grey = mf.fuse(s.stack, method="dog")
    assert res.image.dtype == np.uint8 and res.image.shape == (64, 64, 3)
    np.testing.assert_allclose(res.index_map, grey.index_map, atol=0.05)


def test_fine_band_energy_is_quadratic_and_measures_focus():
    sharp = cells_image((64, 64), seed=10)
    blurred = ndi.gaussian_filter(sharp, 1.5)
    s, b = (fine_band_energy(g, presmooth=0.5, window=2.0) for g in (sharp, blurred))
    assert np.mean(s > b) > 0.95
    np.testing.assert_allclose(fine_band_energy(3 * sharp, presmooth=0.5, window=2.0), 9 * s,
                               rtol=1e-5, atol=1e-12)
    # the band is G_0.5 - G_1: zero on a constant image, and on a ramp away from the edges
    assert np.abs(fine_band_energy(np.full((32, 32), 7.0, np.float32), presmooth=0.5,
                                   window=0)).max() < 1e-10
    ramp = np.tile(np.arange(32, dtype=np.float32), (32, 1))
    assert np.abs(fine_band_energy(ramp, presmooth=0.5, window=0)[8:-8, 8:-8]).max() < 1e-8


def test_fine_band_energy_on_torch_equals_numpy():
    gray = np.random.default_rng(2).random((48, 56)).astype(np.float32)
    want = fine_band_energy(gray, presmooth=0.5, window=3.0)
    ops = _ops.TorchOps("cpu")
    got = ops.numpy(fine_band_energy(ops.tensor(gray), presmooth=0.5, window=3.0, ops=ops))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * float(want.max()))


def test_torch_path_with_the_check_agrees_with_numpy():
    stack, _ = fringe_stack(n=5, k0=2, shape=(96, 96), seed=3)
    work, params = stack[..., None], dict(get_method("dog").params)
    measure = fine_band_energy
    a = _fuse(measure, _ops.NUMPY, work, stack, mode="nway", progress=None, keep_weights=False,
              **params)
    b = _fuse(measure, _ops.TorchOps("cpu"), work, stack, mode="nway", progress=None,
              keep_weights=False, **params)
    assert np.mean(np.abs(a[0] - b[0]) < 1e-4) > 0.999


# -- the consistency check ------------------------------------------------------------------

def _scores_for(choice, z, prefer=4):
    """Scores that make ``choice`` the argmax (1 at the choice, 0.5 at its neighbours, and
    elsewhere a little more the nearer the slice is to ``prefer``)."""
    return [np.where(choice == k, 1.0, np.where(np.abs(choice - k) == 1, 0.5,
                                                0.1 - 0.01 * abs(k - prefer)))
            .astype(np.float32) for k in range(z)]


def test_isolated_far_picks_go_to_the_neighbourhood_height():
    choice = np.full((96, 96), 4, np.intp)
    choice[40:44, 40:44] = 0       # a ring-like patch that picked a far plane
    choice[10:12, 70:90] = 8
    checked = consistency.check(choice, _scores_for(choice, 9), None, consistency=16,
                                agreement=0.4)
    assert (checked == 4).all()


def test_a_real_depth_step_survives_the_check():
    choice = np.full((96, 128), 1, np.intp)
    choice[:, 64:] = 7             # two objects at different depths, side by side
    checked = consistency.check(choice, _scores_for(choice, 9), None, consistency=16,
                                agreement=0.4)
    np.testing.assert_array_equal(checked, choice)


def test_the_check_picks_the_best_slice_near_the_median():
    z = 9
    choice = np.full((64, 64), 4, np.intp)
    choice[30:34, 30:34] = 8
    scores = _scores_for(choice, z)
    scores[5][30:34, 30:34] = 0.9  # slice 5 (within one of the median 4) scores best there
    checked = consistency.check(choice, scores, None, consistency=16, agreement=0.4)
    assert (checked[30:34, 30:34] == 5).all() and (checked[choice == 4] == 4).all()


def test_background_without_confidence_does_not_vote():
    choice = np.full((64, 64), 7, np.intp)   # the flat background "picked" slice 7
    choice[24:40, 24:40] = 2                 # the one textured object
    trust = np.zeros((64, 64), np.float32)
    trust[24:40, 24:40] = 1
    checked = consistency.check(choice, _scores_for(choice, 9), trust, consistency=16,
                                agreement=0.4)
    np.testing.assert_array_equal(checked[24:40, 24:40], 2)


def test_the_check_is_off_at_zero_and_with_two_slices():
    choice = np.random.default_rng(0).integers(0, 9, (32, 32))
    assert consistency.check(choice, _scores_for(choice, 9), None, consistency=0,
                             agreement=0.4) is choice
    two = choice % 2
    assert consistency.check(two, _scores_for(two, 2), None, consistency=16,
                             agreement=0.4) is two


@pytest.mark.parametrize("mode", ["nway", "series"])
def test_dog_tiles_equal_whole_image_bit_for_bit(mode):
    stack, _ = fringe_stack(shape=(200, 264), seed=5)
    stack = (stack * 4095).astype(np.uint16)
    whole = mf.fuse(stack, method="dog", mode=mode)
    tiled = mf.fuse(stack, method="dog", mode=mode, tile_size=64)
    assert tiled.tiles.plan.n_tiles > 4
    np.testing.assert_array_equal(tiled.image, whole.image)
    np.testing.assert_array_equal(tiled.index_map, whole.index_map)


def test_cli_runs_dog(tmp_path):
    s = focal_stack(n_slices=3, shape=(40, 52), dtype=np.uint16, seed=12)
    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, s.stack)
    assert main(["fuse", str(path), "-o", str(tmp_path / "out.tif"), "--method", "dog",
                 "-p", "consistency=8"]) == 0
    out = tifffile.imread(tmp_path / "out.tif")
    assert out.dtype == np.uint16 and out.shape == (40, 52)


def test_agreement_above_one_is_one_clear_sentence():
    s = focal_stack(n_slices=3, shape=(32, 32), seed=1)
    with pytest.raises(mf.MfifError, match="agreement.*from 0 to 1") as info:
        mf.fuse(s.stack, method="dog", agreement=1.5)
    assert "\n" not in str(info.value)
