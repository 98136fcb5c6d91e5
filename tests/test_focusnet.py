"""The ``focusnet`` method: a small learned focus network that scores every slice at a
quarter of its resolution and weights the slices by the softmax of the scores."""

import json

import numpy as np
import pytest
from scipy import ndimage as ndi

import napari_mfif as mf
from napari_mfif import optics
from napari_mfif.synthetic import cells_image, fluorescence_image, focal_stack, step_depth

torch = pytest.importorskip("torch")

from napari_mfif import train_focusnet  # noqa: E402
from napari_mfif.focus import focusnet  # noqa: E402
from napari_mfif.fusion.focusnet_pipeline import REACH  # noqa: E402


def _psnr(truth, image, data_range):
    mse = np.mean((truth.astype(np.float64) - image) ** 2)
    return 10 * np.log10(data_range ** 2 / mse)


def test_shipped_weights_are_small_and_carry_their_record():
    path = focusnet.WEIGHTS
    assert path.is_file() and path.stat().st_size < 2e6
    blob = focusnet.read(path)
    meta = blob["meta"]
    assert meta == json.loads(path.with_suffix(".json").read_text())
    assert meta["command"].startswith("python -m napari_mfif.train_focusnet")
    # held-out simulated stacks: the fused image beats the best single slice by far in
    # brightfield, fluorescence and Gaussian blur (not in reflected light: docs/focusnet.md)
    assert set(meta["heldout_psnr"]) == set(train_focusnet.KINDS)
    for kind in ("blur", "brightfield", "fluorescence"):
        row = meta["heldout_psnr"][kind]
        assert row["fused"] > row["best slice"] + 2, kind
    net, _ = focusnet.load(None, "cpu")
    assert focusnet.count_parameters(net) < 100_000
    assert focusnet.multiply_adds_per_pixel() < 3000


@pytest.mark.parametrize("shape", [(64, 64), (37, 53), (8, 9), (130, 67)])
def test_scores_cover_every_pixel_on_a_four_pixel_grid(shape):
    net, _ = focusnet.load(None, "cpu")
    x = torch.rand((2,) + shape)
    with torch.inference_mode():
        grid = focusnet.grid_scores(net, x)
        full = focusnet.slice_scores(net, x)
    assert grid.shape == (2, -(-shape[0] // 4), -(-shape[1] // 4))
    assert full.shape == (2,) + shape and torch.isfinite(full).all()
    assert torch.allclose(focusnet.upsample(grid, shape), full)
    # a grid score sits at its cell's centre (4i + 1.5, 4j + 1.5): an affine grid comes back
    # as the same affine function of the pixel coordinates between the outermost centres
    i, j = torch.meshgrid(torch.arange(6.0), torch.arange(7.0), indexing="ij")
    up = focusnet.upsample((0.3 * i - 0.2 * j)[None], (24, 28))[0]
    y, x = torch.meshgrid(torch.arange(24.0), torch.arange(28.0), indexing="ij")
    inner = (slice(2, 22), slice(2, 26))
    expect = 0.3 * (y - 1.5) / 4 - 0.2 * (x - 1.5) / 4
    assert torch.allclose(up[inner], expect[inner], atol=1e-5)


def test_receptive_field_is_within_the_declared_reach():
    """Changing one pixel changes the scores only within RADIUS (+ the grid cell and the
    upsampling) of it, which the tiled runs' overlap covers."""
    net, _ = focusnet.load(None, "cpu")
    x = torch.rand(1, 192, 192)
    y = x.clone()
    y[0, 96, 96] += 1.0
    with torch.inference_mode():
        d = (focusnet.slice_scores(net, x) - focusnet.slice_scores(net, y)).abs()[0]
    rows, cols = np.nonzero(d.numpy() > 1e-6)
    assert len(rows) > 0
    assert max(np.abs(rows - 96).max(), np.abs(cols - 96).max()) <= REACH


def test_finds_the_in_focus_slice_of_a_gaussian_blur_stack_with_steps():
    sharp = cells_image((192, 192), seed=41)
    depth = step_depth((192, 192), 6, seed=41)
    s = focal_stack(sharp, depth, n_slices=6, noise=0.005, dtype=np.uint16, seed=41)
    res = mf.fuse(s.stack, method="focusnet")
    assert res.image.dtype == np.uint16 and res.index_map.shape == (192, 192)
    # the height map within half a slice of the truth away from the steps
    edges = ndi.binary_dilation(ndi.morphological_gradient(depth, size=3) > 0, iterations=6)
    err = np.abs(res.index_map - depth)[~edges]
    assert np.median(err) < 0.25 and np.mean(err < 0.5) > 0.9
    # and the image near the truth: better than the best single slice by far
    best = max(_psnr(s.sharp, sl, 4095) for sl in s.stack)
    assert _psnr(s.sharp, res.image, 4095) > best + 5


def test_brightfield_fringes_are_not_taken_for_focus():
    """Defocused phase cells grow fringes with more contrast than the in-focus plane; the
    network takes the in-focus plane where classic gradient measures take a fringe."""
    syn = optics.brightfield_stack(shape=(192, 192), depth=3.0, n_slices=7, condenser_na=0.1,
                                   seed=5)
    res = mf.fuse(syn.stack, method="focusnet")
    truth = syn.sharp
    ours = _psnr(truth, res.image, float(truth.max() - truth.min()))
    tenengrad = _psnr(truth, mf.fuse(syn.stack, method="tenengrad").image,
                      float(truth.max() - truth.min()))
    assert ours > tenengrad + 3
    assert abs(float(np.median(res.index_map)) - 3.0) < 0.75


def test_no_slice_in_focus_takes_the_least_defocused_not_an_average():
    """A flat specimen below the whole stack: the nearest slice is the best answer; an
    average of all slices would be washed out (less detail than any slice near focus)."""
    syn = optics.reflected_stack(shape=(160, 160), depth=-1.5, n_slices=7, seed=3)
    res = mf.fuse(syn.stack, method="focusnet")

    def detail(img):
        return float(np.mean(np.abs(np.diff(img.astype(np.float64), axis=1))))

    rng = float(syn.sharp.max() - syn.sharp.min())
    assert float(np.median(res.index_map)) < 0.5
    assert _psnr(syn.sharp, res.image, rng) > _psnr(syn.sharp, syn.stack[0], rng) - 0.3
    mean = syn.stack.astype(np.float64).mean(0)
    assert detail(res.image) > 0.9 * detail(syn.stack[0]) > 1.2 * detail(mean)


def test_equally_sharp_noisy_slices_are_averaged():
    """Identical slices with their own noise: no slice is better, so the weights spread and
    the noise goes down (crisp choice would keep one slice's noise)."""
    rng = np.random.default_rng(0)
    clean = 1000 + 800 * fluorescence_image((128, 128), seed=2)
    stack = np.stack([clean + rng.normal(0, 20, clean.shape) for _ in range(6)]).astype(np.float32)
    res = mf.fuse(stack, method="focusnet", return_weights=True)
    one = np.std(stack[0] - clean)
    assert np.std(res.image - clean) < 0.75 * one
    assert res.weights.max(axis=0).mean() < 0.6


def _boundary_pair():
    """Two slices of one cells image, each sharp on its own half (Gaussian blur 2 px on the
    other): the papers' kind of pair, with a straight focus boundary at x = 80."""
    sharp = (200 + 3000 * cells_image((160, 160), seed=7)).astype(np.float32)
    blur = ndi.gaussian_filter(sharp, 2.0)
    left = np.zeros(sharp.shape, bool)
    left[:, :80] = True
    return sharp, np.stack([np.where(left, sharp, blur), np.where(left, blur, sharp)]
                           ).astype(np.uint16)


def test_fine_detail_sharpens_a_focus_boundary():
    """With the dog pick (``detail``) the switch from one slice to the other is narrower and
    the image near the boundary closer to the truth than with the network alone."""
    sharp, stack = _boundary_pair()
    rng = float(sharp.max() - sharp.min())
    out = {}
    for d in (0.0, 5.0):  # 5 is the default
        res = mf.fuse(stack, method="focusnet", detail=d, return_weights=True)
        profile = res.weights[0][:, 60:100].mean(axis=0)
        out[d] = (int(np.sum((profile > 0.1) & (profile < 0.9))),
                  _psnr(sharp[:, 72:88], res.image[:, 72:88], rng), _psnr(sharp, res.image, rng))
        assert profile[:10].min() > 0.95 and profile[-10:].max() < 0.05  # the right sides
    assert out[5.0][0] <= out[0.0][0] - 3          # 5 px against 9
    assert out[5.0][1] > out[0.0][1] + 2           # 37.2 dB against 33.9 near the boundary
    assert out[5.0][2] > out[0.0][2] + 2           # 47.2 dB against 43.8 overall


def test_detail_zero_is_the_network_alone():
    """``detail=0``: the weights are the softmax of the network's scores, nothing else."""
    import torch

    from napari_mfif.fusion.cnn_pipeline import normalise
    from napari_mfif.fusion.focusnet_pipeline import DEFAULTS

    _, stack = _boundary_pair()
    res = mf.fuse(stack, method="focusnet", detail=0, return_weights=True)
    net, _ = focusnet.load(None, "cpu")
    with torch.inference_mode():
        s = focusnet.slice_scores(net, torch.as_tensor(normalise(stack.astype(np.float32))),
                                  DEFAULTS["neighbourhood"], DEFAULTS["neighbourhood_weight"])
    assert np.allclose(res.weights, torch.softmax(s, dim=0).numpy(), atol=1e-5)
    with_detail = mf.fuse(stack, method="focusnet", return_weights=True).weights
    assert np.abs(with_detail - res.weights).max() > 0.2  # and the default is not that


def test_keeps_dtype_and_leaves_the_input_alone():
    s = focal_stack(n_slices=4, shape=(96, 96), dtype=np.uint8, seed=1)
    before = s.stack.copy()
    res = mf.fuse(s.stack, method="focusnet", mode="series")
    assert res.image.dtype == np.uint8 and np.array_equal(s.stack, before)
    rgb = np.repeat(s.stack[..., None], 3, axis=-1)
    out = mf.fuse(rgb, method="focusnet").image
    assert out.shape == (96, 96, 3) and out.dtype == np.uint8


@pytest.mark.parametrize("mode,hood", [("nway", 32.0), ("nway", 8.0), ("series", 8.0)])
def test_tiles_match_the_whole_image(mode, hood):
    """Windows with interior edges (the overlap covers the receptive field and the
    neighbourhood's reach, 4 sigma) give what the whole image gives."""
    from napari_mfif.tiles import plan_tiles
    from napari_mfif.fusion.focusnet_pipeline import DEFAULTS, _reach

    shape = (300, 760)
    params = {**DEFAULTS, "neighbourhood": hood}
    plan = plan_tiles(shape, 128, _reach(params, 4, mode))
    assert any(t.box[3] < shape[1] for t in plan.tiles)  # some window ends inside the image
    s = focal_stack(fluorescence_image(shape, seed=3), n_slices=4, photons=200.0,
                    dtype=np.uint16, seed=3)
    whole = mf.fuse(s.stack, "focusnet", mode, neighbourhood=hood)
    tiled = mf.fuse(s.stack, "focusnet", mode, neighbourhood=hood, tile_size=128)
    assert np.abs(whole.image.astype(np.int64) - tiled.image).max() <= 1
    assert np.abs(whole.index_map - tiled.index_map).max() < 1e-4


@pytest.mark.parametrize("tile_size", [0, 64])
def test_a_negative_detail_is_refused(tile_size):
    with pytest.raises(mf.MfifError, match="'detail' of method 'focusnet' must be >= 0"):
        mf.fuse(np.zeros((3, 128, 128), np.uint8), method="focusnet", detail=-1,
                tile_size=tile_size)


def test_too_small_slices_are_refused():
    with pytest.raises(mf.MfifError, match="at least 8 x 8"):
        mf.fuse(np.zeros((3, 4, 40), np.uint8), method="focusnet")


def test_a_weights_file_of_another_kind_is_refused(tmp_path):
    from napari_mfif.focus.cnn import builtin_weights

    with pytest.raises(mf.MfifError, match="not a weights file of the focusnet method"):
        mf.fuse(np.zeros((2, 32, 32), np.uint8), method="focusnet",
                weights=str(builtin_weights("compact")))


def test_training_is_reproducible_and_its_weights_load(tmp_path):
    """Two tiny runs with one seed give the same tensors; the file loads into the method."""
    outs = []
    for name in ("a.pt", "b.pt"):
        path = tmp_path / name
        assert train_focusnet.main(["-o", str(path), "--steps", "3", "--batch", "1",
                                    "--pool-scale", "0.01", "--heldout-scale", "0.05",
                                    "--threads", "1"]) == 0
        outs.append(focusnet.read(path))
    for k, v in outs[0]["state_dict"].items():
        assert torch.equal(v, outs[1]["state_dict"][k]), k
    assert set(outs[0]["meta"]["heldout_psnr"]) == set(train_focusnet.KINDS)
    s = focal_stack(n_slices=3, shape=(64, 64), seed=2)
    assert mf.fuse(s.stack, method="focusnet", weights=str(tmp_path / "a.pt")).image.shape == \
        (64, 64)


def test_stained_cells_change_only_the_brightfield_stacks_they_are_drawn_for():
    """``--stained``: some brightfield stacks get absorbing cells; every other stack, and the
    whole pool without the option, stay what they were (the shipped weights' command still
    gives the shipped weights)."""
    plain = train_focusnet.render_pool("heldout", 0, scale=0.07)
    again = train_focusnet.render_pool("heldout", 0, scale=0.07, stained=0.0)
    stained = train_focusnet.render_pool("heldout", 0, scale=0.07, stained=1.0)
    assert [p["seed"] for p in plain] == [p["seed"] for p in stained]
    for a, b, c in zip(plain, again, stained):
        assert np.array_equal(a["clean"], b["clean"])
        same = np.array_equal(a["clean"], c["clean"])
        assert same == (a["kind"] != "brightfield"), a["kind"]


def test_draw_gives_scaled_slices_truth_and_depth_in_slice_units():
    pool = train_focusnet.render_pool("heldout", 0, scale=0.07)
    rng = np.random.default_rng(0)
    for st in pool:
        slices, truth, depth = train_focusnet.draw(st, rng, out_of_focus=0.0)
        assert slices.ndim == 3 and slices.shape[1:] == truth.shape == depth.shape
        assert 2 <= slices.shape[0] <= st["clean"].shape[0]
        lo, hi = np.percentile(slices, [0.1, 99.9])
        assert -0.05 < lo < 0.05 and 0.95 < hi < 1.05


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_agrees_with_the_cpu():
    s = focal_stack(n_slices=5, shape=(128, 160), dtype=np.uint16, seed=4)
    cpu = mf.fuse(s.stack, method="focusnet", device="cpu")
    gpu = mf.fuse(s.stack, method="focusnet", device="cuda")
    assert np.abs(cpu.image.astype(np.int64) - gpu.image).max() <= 2
    assert np.abs(cpu.index_map - gpu.index_map).max() < 0.02
