"""The focus CNN: dense map == patch-by-patch scoring, shipped weights, the fusion method."""

import math

import numpy as np
import pytest
import torch
from scipy import ndimage as ndi

import napari_mfif as mf
from napari_mfif import MfifError
from napari_mfif.focus.cnn import (ARCHS, MARGIN, PATCH, DenseScorer, FocusNet, builtin_weights,
                                   count_parameters, load_net, pad_for_dense, read_weights,
                                   save_weights, score_map_shape)

from conftest import psnr


@pytest.fixture(scope="module")
def random_net():
    torch.manual_seed(0)
    return FocusNet((8, 12, 16), 24).eval()


@pytest.mark.parametrize("shape", [(40, 44), (41, 37)])
def test_dense_map_equals_scoring_each_patch(random_net, shape):
    rng = np.random.default_rng(1)
    a, b = rng.random(shape, dtype=np.float32), rng.random(shape, dtype=np.float32)
    scorer = DenseScorer(random_net)
    fa, fb = scorer.features(a), scorer.features(b)
    dense_pair = scorer.pair_probability(fa, fb)[0].numpy()
    dense_score = scorer.slice_scores(fa)[0].numpy()
    assert dense_pair.shape == score_map_shape(*shape) == (
        math.ceil(shape[0] / 2) - 7, math.ceil(shape[1] / 2) - 7)

    # patch (i, j) covers rows 2i..2i+15 and cols 2j..2j+15; score it alone, with its margin,
    # the fully connected layers as Linear layers on the flattened 8 x 8 blocks
    pa = pad_for_dense(torch.from_numpy(a)[None, None])[0, 0]
    pb = pad_for_dense(torch.from_numpy(b)[None, None])[0, 0]
    net = random_net
    fc1 = net.pair_fc.weight.reshape(net.fc, -1)
    fc2 = net.pair_out.weight.reshape(2, -1)
    sc1 = net.score_fc.weight.reshape(net.fc, -1)
    sc2 = net.score_out.weight.reshape(1, -1)
    ctx = PATCH + 2 * MARGIN
    with torch.no_grad():
        for i in range(dense_pair.shape[0]):
            for j in range(0, dense_pair.shape[1], 3):
                crop_a = pa[2 * i:2 * i + ctx, 2 * j:2 * j + ctx][None, None]
                crop_b = pb[2 * i:2 * i + ctx, 2 * j:2 * j + ctx][None, None]
                va = net.features(crop_a).flatten()
                vb = net.features(crop_b).flatten()
                assert va.numel() == net.channels[2] * 8 * 8
                hidden = torch.relu(fc1 @ torch.cat([va, vb]) + net.pair_fc.bias)
                logits = fc2 @ hidden + net.pair_out.bias
                p_first = torch.softmax(logits, 0)[0].item()
                assert p_first == pytest.approx(dense_pair[i, j], abs=1e-5)
                score = sc2 @ torch.relu(sc1 @ va + net.score_fc.bias) + net.score_out.bias
                assert score.item() == pytest.approx(dense_score[i, j], abs=1e-4)


def test_paper_architecture_size():
    net = FocusNet(ARCHS["liu2017"].channels, ARCHS["liu2017"].fc)
    assert count_parameters(net, "pair") == 8_759_042  # "about 8.8 M" in the paper
    convs = [m for m in net.trunk if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [64, 128, 256]
    assert all(c.kernel_size == (3, 3) and c.stride == (1, 1) for c in convs)
    assert sum(isinstance(m, torch.nn.MaxPool2d) for m in net.trunk) == 1


def test_shipped_weights_load_safely_and_report_accuracy():
    path = builtin_weights("compact")
    assert path.is_file() and path.stat().st_size < 5e6
    blob = torch.load(path, map_location="cpu", weights_only=True)
    assert blob["arch"] == "compact"
    meta = blob["meta"]
    assert meta["heldout_accuracy_pair_head"] > 0.97
    assert meta["heldout_accuracy_score_head"] > 0.97
    net, _ = load_net(None, "compact", "cpu")
    assert net is load_net(None, "compact", "cpu")[0]  # cached per device


def test_weights_errors(tmp_path):
    with pytest.raises(MfifError, match="not found"):
        load_net(tmp_path / "nope.pt", "compact", "cpu")
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(MfifError, match="cannot load weights"):
        load_net(tmp_path / "junk.pt", "compact", "cpu")
    wrong = FocusNet((8, 12, 16), 24)
    save_weights(wrong, tmp_path / "wrong.pt", "compact", {})
    blob = read_weights(tmp_path / "wrong.pt")
    blob["channels"] = [16, 32, 32]  # claims one shape, holds another
    torch.save(blob, tmp_path / "wrong.pt")
    with pytest.raises(MfifError, match="do not fit"):
        mf.fuse(np.random.default_rng(0).random((2, 32, 32), dtype=np.float32), method="cnn",
                weights=str(tmp_path / "wrong.pt"))
    with pytest.raises(MfifError, match="unknown architecture"):
        load_net(None, "huge", "cpu")


def _two_halves(shape=(96, 96), seed=0):
    rng = np.random.default_rng(seed)
    sharp = ndi.gaussian_filter(rng.random(shape), 0.7).astype(np.float32)
    blur = ndi.gaussian_filter(sharp, 3)
    half = shape[1] // 2
    left = np.hstack([sharp[:, :half], blur[:, half:]])
    right = np.hstack([blur[:, :half], sharp[:, half:]])
    return sharp, left, right


@pytest.mark.parametrize("mode", ["series", "nway"])
def test_cnn_takes_each_half_from_the_sharp_slice(mode):
    sharp, left, right = _two_halves()
    res = mf.fuse([left, right], method="cnn", mode=mode)
    assert res.device == "cpu"
    # the seam is at column 48; the guided filter (r = 8) reaches 2r = 16 px either side
    assert np.mean(res.index_map[:, :32] < 0.1) > 0.98
    assert np.mean(res.index_map[:, 64:] > 0.9) > 0.98
    err_fused = np.abs(res.image - sharp)[:, 8:-8].mean()
    err_left = np.abs(left - sharp)[:, 8:-8].mean()
    assert err_fused < 0.25 * err_left


@pytest.mark.parametrize("mode", ["series", "nway"])
def test_cnn_on_a_synthetic_stack(synth, mode):
    res = mf.fuse(synth.stack, method="cnn", mode=mode)
    assert res.image.dtype == np.uint16
    fused_psnr = psnr(synth.sharp, res.image, 4095)
    assert fused_psnr > max(psnr(synth.sharp, s, 4095) for s in synth.stack) + 6
    assert np.median(np.abs(res.index_map - synth.depth)) < 0.75


def test_colour_decision_is_shared_by_channels(synth):
    gray = synth.stack[:3].astype(np.float32)
    rgb = gray[..., None] * np.array([0.5, 1.0, 2.0], np.float32)
    a, b = mf.fuse(rgb, method="cnn"), mf.fuse(gray, method="cnn")
    np.testing.assert_allclose(a.image, b.image[..., None] * [0.5, 1.0, 2.0], rtol=1e-4, atol=0.05)


def test_paper_parameters_are_exposed_and_change_the_result():
    spec = mf.get_method("cnn")
    assert spec.params["threshold"] == 0.5 and spec.params["min_region"] == 0.01
    assert spec.params["gf_radius"] == 8 and spec.params["gf_eps"] == 0.1
    _, left, right = _two_halves(seed=3)
    a = mf.fuse([left, right], method="cnn", mode="series")
    b = mf.fuse([left, right], method="cnn", mode="series", gf_radius=0, min_region=0)
    assert not np.array_equal(a.index_map, b.index_map)
    assert set(np.unique(b.index_map)) <= {0.0, 1.0}  # no guided filter: a hard decision


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_agrees_with_cpu(synth):
    cpu = mf.fuse(synth.stack, method="cnn", device="cpu")
    gpu = mf.fuse(synth.stack, method="cnn", device="cuda")
    assert gpu.device == "cuda"
    assert np.abs(cpu.image.astype(float) - gpu.image).max() <= 1
    np.testing.assert_allclose(cpu.index_map, gpu.index_map, atol=1e-3)


def test_training_runs_and_reports(tmp_path):
    from napari_mfif.train import main

    out = tmp_path / "w.pt"
    assert main(["--arch", "compact", "--steps", "3", "--batch", "8", "--heldout-pairs", "64",
                 "-o", str(out)]) == 0
    meta = read_weights(out)["meta"]
    assert 0 <= meta["heldout_accuracy_pair_head"] <= 1 and meta["steps"] == 3
    assert meta["heldout_pairs"] == 64
    res = mf.fuse(np.random.default_rng(0).random((2, 40, 40), dtype=np.float32),
                  method="cnn", weights=str(out))
    assert res.image.shape == (40, 40)


def test_training_pairs_are_labelled_by_sharpness():
    from napari_mfif.train import PairSampler, source_images

    sampler = PairSampler(source_images("heldout", 0)[-1:], np.random.default_rng(0),
                          mild_fraction=0.0, noise=False)
    a, b, y = sampler.sample(200)

    def energy(p):
        return (ndi.sobel(p, 0) ** 2 + ndi.sobel(p, 1) ** 2)[4:-4, 4:-4].sum()

    a_sharper = np.array([energy(pa) > energy(pb) for pa, pb in zip(a, b)])
    assert np.array_equal(a_sharper, y > 0.5)
    assert 0.3 < y.mean() < 0.7


@pytest.mark.parametrize("pair_noise", ["independent", "shared"])
def test_pair_noise_shares_one_camera_or_not(pair_noise):
    """Equally sharp pairs of a flat grey image: each patch is the same grey plus noise, so
    its standard deviation is its noise level. Shared: both patches of a pair have one level
    (both noise-free or both noisy, alike within sampling error); independent: often not."""
    from napari_mfif.train import PairSampler

    flat = [("flat", np.full((96, 96), 0.5, np.float32))]
    sampler = PairSampler(flat, np.random.default_rng(1), equal_fraction=1.0,
                          pair_noise=pair_noise)
    a, b, y = sampler.sample(400)
    assert np.all(y == 0.5)
    sa, sb = a.std(axis=(1, 2)), b.std(axis=(1, 2))
    clean_a, clean_b = sa == 0, sb == 0
    assert 0.1 < clean_a.mean() < 0.4  # a quarter of the cameras are noise-free
    ratio = np.log(sa[~clean_a & ~clean_b] / sb[~clean_a & ~clean_b])
    if pair_noise == "shared":
        assert np.array_equal(clean_a, clean_b)
        assert np.abs(ratio).max() < np.log(1.3)
    else:
        assert (clean_a != clean_b).mean() > 0.2
        assert (np.abs(ratio) > np.log(2)).mean() > 0.3


def test_boundary_pairs_are_labelled_by_the_centre():
    """With a focus boundary through every pair, the label follows the side the patch centre
    is on: the sharper of the two central 6 x 6 regions, not the sharper whole patch."""
    from napari_mfif.train import CTX, PairSampler, source_images

    sampler = PairSampler(source_images("heldout", 0)[:2], np.random.default_rng(4),
                          mild_fraction=0.0, noise=False, boundary_fraction=1.0)
    a, b, y = sampler.sample(400)
    c = CTX // 2

    def energy(p, core):
        g = ndi.sobel(p, 0) ** 2 + ndi.sobel(p, 1) ** 2
        return g[c - core:c + core, c - core:c + core].sum()

    whole = np.array([energy(pa, 8) > energy(pb, 8) for pa, pb in zip(a, b)])
    centre = np.array([energy(pa, 3) > energy(pb, 3) for pa, pb in zip(a, b)])
    sure = (y == 0) | (y == 1)
    assert 0.6 < sure.mean() < 1 and 0.3 < y.mean() < 0.7
    assert (centre[sure] == (y[sure] == 1)).mean() > 0.9
    # the whole patch often says otherwise: the label is not the whole patch's
    assert (whole[sure] != (y[sure] == 1)).mean() > 0.1
    # and the default sampler makes no boundary pairs: whole-patch labels, all 0 or 1
    plain = PairSampler(source_images("heldout", 0)[:2], np.random.default_rng(4),
                        mild_fraction=0.0, noise=False)
    pa, pb, py = plain.sample(200)
    assert set(np.unique(py)) == {0.0, 1.0}
    sharper = np.array([energy(u, 8) > energy(v, 8) for u, v in zip(pa, pb)])
    assert (sharper == (py == 1)).mean() > 0.98


def test_pair_noise_is_checked():
    from napari_mfif.train import PairSampler

    with pytest.raises(ValueError, match="pair_noise must be one of"):
        PairSampler([], np.random.default_rng(0), pair_noise="same")


def test_nway_rule_is_checked(synth):
    with pytest.raises(MfifError, match="nway_rule.* must be one of: soft, hard"):
        mf.fuse(synth.stack, method="cnn", nway_rule="maybe")


def test_soft_nway_averages_equally_sharp_slices_and_their_noise():
    # left: texture in focus in slice 0 only; right: a flat area, the same in every slice
    # but for independent noise. Soft weights average the slices there; a hard choice cannot.
    rng = np.random.default_rng(4)
    z, h, w = 5, 96, 128
    texture = ndi.gaussian_filter(rng.random((h, w)), 1.0)
    texture = (texture - texture.mean()) / texture.std() * 0.15 + 0.5
    clean = np.empty((z, h, w), np.float32)
    for k in range(z):
        clean[k] = ndi.gaussian_filter(texture, 2.0 * k) if k else texture
    clean[:, :, 64:] = 0.5
    noisy = clean + rng.normal(0, 0.03, clean.shape).astype(np.float32)
    soft = mf.fuse(noisy, method="cnn", nway_rule="soft")
    hard = mf.fuse(noisy, method="cnn", nway_rule="hard")
    flat = np.s_[:, 88:]
    assert np.std(soft.image[flat]) < 0.7 * np.std(hard.image[flat])
    assert np.std(soft.image[flat]) < 0.7 * 0.03
    # the textured part still comes from the sharp slice
    assert np.mean(soft.index_map[:, :40] < 0.5) > 0.95
