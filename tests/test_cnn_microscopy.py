"""The focus CNN trained on simulated microscope stacks (issue 12): the microscopy pair
generator, the shipped ``compact_microscopy`` weights and their selection in the ``cnn``
method, and the papers' path left as it was."""

import json

import numpy as np
import pytest

import napari_mfif as mf
from napari_mfif import MfifError, optics
from napari_mfif.train import (CTX, MICRO_KINDS, MICRO_SEED_BASE, MicroscopyPairSampler,
                               random_optics, render_stack)

torch = pytest.importorskip("torch")

from napari_mfif.focus.cnn import (TRAININGS, DenseScorer, builtin_weights,  # noqa: E402
                                   load_net, read_weights)
from napari_mfif.fusion.cnn_pipeline import normalise  # noqa: E402


def _small_settings(kind, depth, n_slices=5, seed=3):
    settings = random_optics(kind, np.random.default_rng(seed), n_slices=n_slices,
                             shape=(64, 64))
    settings["depth"] = depth
    # enough objects that most patches have texture
    settings["specimen"].update(n_cells=3, n_granules=20, n_fibres=2)
    return settings


@pytest.fixture(scope="module")
def flat_brightfield():
    """A flat brightfield specimen in focus exactly at slice 2 of 5."""
    return render_stack(_small_settings("brightfield", 2.0), seed=11)


def test_pairs_from_a_flat_specimen_prefer_the_in_focus_slice(flat_brightfield):
    sampler = MicroscopyPairSampler([flat_brightfield], np.random.default_rng(0),
                                    sharp_fraction=0.0, equal_fraction=0.0)
    n = 300
    info = np.empty((n, 5), np.intp)
    kinds = np.empty(n, np.intp)
    a, b, y = sampler.sample(n, kinds, info)
    assert a.shape == b.shape == (n, CTX, CTX) and set(np.unique(y)) <= {0.0, 1.0}
    assert np.all(kinds == MICRO_KINDS.index("brightfield"))
    da, db = np.abs(info[:, 1] - 2), np.abs(info[:, 2] - 2)
    # slices 1 and 3 are equally far from focus: never a pair
    assert np.all(da != db)
    # the label says which slice is nearer focus, in both orders
    assert np.array_equal(y == 1.0, da < db)
    assert 0.3 < y.mean() < 0.7
    in_focus = (info[:, 1] == 2) | (info[:, 2] == 2)
    assert in_focus.sum() > 30
    assert np.all(y[info[:, 1] == 2] == 1.0) and np.all(y[info[:, 2] == 2] == 0.0)


def test_pairs_follow_a_depth_map_pixel_by_pixel():
    # depth rises from slice 0 on the left to slice 6 on the right
    h = w = 64
    ramp = np.tile(np.linspace(0, 6, w, dtype=np.float32), (h, 1))
    sim = render_stack(_small_settings("fluorescence", ramp, n_slices=7), seed=12)
    sampler = MicroscopyPairSampler([sim], np.random.default_rng(1), sharp_fraction=0.2,
                                    equal_fraction=0.0)
    n = 300
    info = np.empty((n, 5), np.intp)
    _, _, y = sampler.sample(n, info=info)
    nearer_share = []
    for (_, first, second, r0, c0), label in zip(info, y):
        depth = ramp[r0 + 4:r0 + CTX - 4, c0 + 4:c0 + CTX - 4]
        da = np.zeros_like(depth) if first < 0 else np.abs(first - depth)
        db = np.zeros_like(depth) if second < 0 else np.abs(second - depth)
        share = np.mean(da < db) if label == 1.0 else np.mean(db < da)
        nearer_share.append(share)
    assert min(nearer_share) >= 0.9
    # the in-focus ground truth takes part, and is always the sharper one
    truth = (info[:, 1] == -1) | (info[:, 2] == -1)
    assert truth.sum() > 20
    assert np.all(y[info[:, 1] == -1] == 1.0) and np.all(y[info[:, 2] == -1] == 0.0)


def test_flat_stacks_give_no_pairs():
    settings = _small_settings("brightfield", 1.0, n_slices=3)
    settings["specimen"].update(n_cells=0, n_granules=0, n_fibres=0)
    sim = render_stack(settings, seed=13)
    sampler = MicroscopyPairSampler([sim], np.random.default_rng(2), equal_fraction=0.0)
    with pytest.raises(RuntimeError, match="no usable patch pairs"):
        sampler.sample(2)


def test_random_settings_stay_valid_and_seeds_are_disjoint():
    for seed in range(40):
        for kind in MICRO_KINDS:
            s = random_optics(kind, np.random.default_rng(seed))
            assert 5 <= s["n_slices"] <= 11
            assert s["na"] <= s["medium_index"]
            assert s["specimen"]["pixel_size"] <= s["wavelength"] / (2 * (s["na"]
                                                                         + s["condenser_na"]))
            if kind == "brightfield":
                assert s["depth"] == "smooth" or isinstance(s["depth"], float)
    assert MICRO_SEED_BASE["heldout"] - MICRO_SEED_BASE["train"] >= 1000 * 100


# -- the shipped weights ------------------------------------------------------------------

def test_shipped_microscopy_weights_and_their_record():
    path = builtin_weights("compact", "microscopy")
    assert path.name == "compact_microscopy.pt" and path.stat().st_size < 5e6
    assert builtin_weights("compact") == builtin_weights("compact", "papers")
    meta = read_weights(path)["meta"]
    record = json.loads(path.with_suffix(".json").read_text())
    assert meta == record
    assert meta["data"] == "microscopy" and meta["arch"] == "compact"
    # held out on both kinds of pairs, reported separately
    assert meta["heldout_accuracy_score_head"] > 0.97          # the papers' pairs
    assert meta["heldout_accuracy_score_head_microscopy"] > 0.75
    for kind in MICRO_KINDS:
        assert f"heldout_accuracy_pair_head_{kind}" in meta
    seeds = meta["micro_pool"]
    assert seeds["train_seeds"][1] < seeds["heldout_seeds"][0]
    assert "microscopy" in TRAININGS


def _score_maps(training, stack):
    """The slice-score head's dense maps (Z, h, w) of a stack scaled as the method does."""
    net, _ = load_net(None, "compact", "cpu", training)
    scorer = DenseScorer(net)
    g = normalise(stack.astype(np.float32))
    return np.stack([scorer.slice_scores(scorer.features(s))[0].numpy() for s in g])


@pytest.fixture(scope="module")
def fringes():
    """Unstained cells (phase, little absorption) in focus at slice 4 of 9, 1 um apart
    (0.77 depths of field), a closed condenser: out of focus they grow strong fringes."""
    spec = optics.specimen((96, 96), cells="mixed", phase=1.8, absorption=0.05, seed=7)
    return optics.brightfield_stack(spec, 4.0, n_slices=9, condenser_na=0.2, seed=7)


def test_microscopy_weights_score_focus_above_fringes(fringes):
    # the contrast of the defocused slices beats the in-focus one's (the fringes)
    std = fringes.stack.astype(float).std(axis=(1, 2))
    assert std[[0, 1, 2, 6, 7, 8]].min() > 1.5 * std[4]
    strong = [0, 1, 2, 6, 7, 8]  # 2 to 4 um from focus
    micro = _score_maps("microscopy", fringes.stack)
    # in focus above every strongly defocused, fringy slice, on average and patch by patch
    mean = micro.mean(axis=(1, 2))
    assert mean[4] > mean[strong].max()
    assert min(np.mean(micro[4] > micro[k]) for k in strong) > 0.55
    # (the papers' weights score the in-focus slice below every other one here: they take
    # the fringes for detail; docs/cnn.md)


def test_cnn_method_selects_the_microscopy_weights(fringes):
    spec = mf.get_method("cnn")
    assert spec.params["training"] == "papers"
    assert spec.param_choices["training"] == ("papers", "microscopy", "boundary")
    assert mf.get_method("cnn_wavelet").params["training"] == "papers"
    stack = fringes.stack
    papers = mf.fuse(stack, method="cnn", device="cpu")
    assert papers.params["training"] == "papers"
    for mode in ("nway", "series"):
        res = mf.fuse(stack, method="cnn", mode=mode, device="cpu", training="microscopy")
        assert res.image.dtype == stack.dtype == np.uint16 and res.image.shape == (96, 96)
        assert res.params["training"] == "microscopy"
    micro = mf.fuse(stack, method="cnn", device="cpu", training="microscopy")
    assert not np.array_equal(micro.image, papers.image)
    # the height map of a flat specimen at slice 4
    assert abs(float(np.median(micro.index_map)) - 4) < 0.5
    f32 = mf.fuse(stack.astype(np.float32), method="cnn", training="microscopy", device="cpu")
    assert f32.image.dtype == np.float32
    cw = mf.fuse(stack, method="cnn_wavelet", mode="series", device="cpu",
                 training="microscopy")
    assert cw.image.dtype == np.uint16


def test_training_choice_errors(tmp_path):
    stack = np.random.default_rng(0).random((2, 32, 32), dtype=np.float32)
    with pytest.raises(MfifError, match="training.* must be one of: papers, microscopy"):
        mf.fuse(stack, method="cnn", training="imagenet")
    with pytest.raises(MfifError, match="no weights trained on microscopy data ship for "
                                        "architecture 'dual'.*compact"):
        mf.fuse(stack, method="cnn", arch="dual", training="microscopy")
    # a weights file overrides the choice
    res = mf.fuse(stack, method="cnn", training="microscopy",
                  weights=str(builtin_weights("compact")))
    np.testing.assert_array_equal(res.image, mf.fuse(stack, method="cnn").image)


# -- the papers' path ---------------------------------------------------------------------

def test_papers_path_is_unchanged(synth):
    net, meta = load_net(None, "compact", "cpu")
    assert net is load_net(None, "compact", "cpu", "papers")[0]
    assert "data" not in meta and not any("microscopy" in k for k in meta)
    a = mf.fuse(synth.stack, method="cnn", device="cpu")
    b = mf.fuse(synth.stack, method="cnn", device="cpu", training="papers")
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.index_map, b.index_map)


def test_training_records_keep_the_papers_format(tmp_path, monkeypatch):
    from napari_mfif import train
    from napari_mfif.synthetic import cells_image

    # two small source images instead of skimage's, so that the runs take seconds
    monkeypatch.setattr(train, "source_images", lambda split, seed: [
        (f"cells{split}", cells_image((96, 96), seed=1 if split == "train" else 2))])
    shipped = json.loads(builtin_weights("compact").with_suffix(".json").read_text())
    out = tmp_path / "p.pt"
    assert train.main(["--steps", "2", "--batch", "8", "--heldout-pairs", "32",
                       "-o", str(out)]) == 0
    assert set(read_weights(out)["meta"]) == set(shipped)      # --data papers: no new keys
    out = tmp_path / "m.pt"
    assert train.main(["--data", "microscopy", "--micro-stacks", "1", "--steps", "2",
                       "--batch", "8", "--heldout-pairs", "32", "-o", str(out)]) == 0
    meta = read_weights(out)["meta"]
    assert set(shipped) < set(meta)
    assert meta["data"] == "microscopy" and meta["micro_pool"]["stacks_per_kind"] == 1
    for head in ("pair", "score"):
        for name in ("microscopy",) + MICRO_KINDS:
            assert 0 <= meta[f"heldout_accuracy_{head}_head_{name}"] <= 1
    res = mf.fuse(np.random.default_rng(0).random((2, 40, 40), dtype=np.float32),
                  method="cnn", weights=str(out))
    assert res.image.shape == (40, 40)
