"""The napari surface in a real viewer (run under xvfb-run: napari needs OpenGL).

The plain layer functions are tested first, then the widgets as a user drives them: runs
happen off the UI thread, so each test waits for the run to end.
"""

import subprocess
import sys

import numpy as np
import pytest
from napari.layers import Image
from napari.utils.notifications import notification_manager

import napari_mfif as mf
from napari_mfif import MfifError
from napari_mfif import io as mio
from napari_mfif import layers as ml
from napari_mfif.synthetic import cells_image, focal_stack

from conftest import psnr

PLUGIN, FUSE, INSPECT = "napari-mfif", "Fuse focal stack", "Inspect focus map"


@pytest.fixture
def notifications():
    seen = []

    def record(event):
        seen.append(event.value if hasattr(event, "value") else event)

    notification_manager.notification_ready.connect(record)
    yield seen
    notification_manager.notification_ready.disconnect(record)


def messages(notifications):
    return [str(n.message) for n in notifications]


def run_and_wait(qtbot, widget, timeout=120_000):
    widget.run()
    qtbot.waitUntil(lambda: not widget.running, timeout=timeout)


def shown(widget):
    """Whether a widget is set to show (magicgui's .visible is False in a hidden window)."""
    return not widget.native.isHidden()


def open_widget(viewer, name):
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, name)
    return widget


# -- the plain functions ----------------------------------------------------------------

def test_stack_from_layer_moves_the_z_axis_first_and_keeps_geometry():
    data = np.zeros((7, 5, 3), np.uint8)  # (Y, Z, X)
    layer = Image(data, scale=(0.5, 2.0, 0.25), translate=(10, 3, 20),
                  units=("um", "um", "um"))
    stack, geo = ml.stack_from_layer(layer, z_axis=1)
    assert stack.shape == (5, 7, 3)
    assert geo.scale == (0.5, 0.25) and geo.translate == (10.0, 20.0)
    assert geo.z_step == 2.0 and geo.z_origin == 3.0 and geo.z_unit == "µm"
    assert geo.units == ("µm", "µm")
    # a z scale of 1 without a unit is no known step, unless one is given
    plain = Image(np.zeros((3, 4, 4)))
    assert ml.stack_from_layer(plain)[1].z_step is None
    assert ml.stack_from_layer(plain, z_step=0.3)[1].z_step == 0.3


@pytest.mark.parametrize("layers, match", [
    ([Image(np.zeros((8, 8)), name="a")], "1 layer selected"),
    ([Image(np.zeros((8, 8)), name="a"), Image(np.zeros((8, 9)), name="b")], "same shape"),
    ([Image(np.zeros((8, 8)), name="a"), Image(np.zeros((8, 8), np.uint8), name="b")],
     "same dtype"),
    ([Image(np.zeros((8, 8)), name="a"), Image(np.zeros((2, 8, 8)), name="b")], "not a 2-D"),
])
def test_bad_slice_layers_are_one_sentence(layers, match):
    with pytest.raises(MfifError, match=match):
        ml.stack_from_layers(layers)


def test_a_2d_layer_is_not_a_stack():
    with pytest.raises(MfifError, match="single 2-D image"):
        ml.stack_from_layer(Image(np.zeros((8, 8))))


def test_fuse_layer_from_a_script(make_napari_viewer):
    viewer = make_napari_viewer()
    s = focal_stack(n_slices=5, shape=(96, 96), dtype=np.uint16, seed=2)
    layer = viewer.add_image(s.stack, name="stack", scale=(1.5, 0.4, 0.4))
    fused, height, physical = ml.fuse_layer(viewer, layer, method="tenengrad")
    assert [lay.name for lay in viewer.layers] == [
        "stack", "stack fused", "stack height map", "stack height (z units)"]
    assert fused.data.dtype == np.uint16 and tuple(fused.scale) == (0.4, 0.4)
    assert np.allclose(physical.data, height.data * 1.5)
    assert psnr(s.sharp, fused.data, 4095) > max(psnr(s.sharp, sl, 4095) for sl in s.stack) + 6
    # again, with weights: same layers updated, one added
    ml.fuse_layer(viewer, layer, mode="series", return_weights=True)
    assert len(viewer.layers) == 5
    weights = viewer.layers["stack weights"]
    assert weights.data.shape == s.stack.shape and tuple(weights.scale) == (1.5, 0.4, 0.4)
    assert viewer.layers["stack fused"].metadata["napari_mfif"]["mode"] == "series"


# -- the Fuse focal stack widget ---------------------------------------------------------

def test_widget_fuses_the_sample_in_a_real_viewer(make_napari_viewer, qtbot, notifications):
    viewer = make_napari_viewer(show=True)
    (layer,) = viewer.open_sample(PLUGIN, "focal_stack")
    original = layer.data.copy()
    widget = open_widget(viewer, FUSE)
    assert set(widget.method.choices) == set(mf.available_methods())
    assert widget.image.value is layer  # the only stack layer is chosen

    run_and_wait(qtbot, widget)
    fused = viewer.layers[f"{layer.name} fused"]
    height = viewer.layers[f"{layer.name} height map"]
    assert fused.data.dtype == layer.data.dtype == np.uint16
    assert fused.data.shape == layer.data.shape[1:]
    assert tuple(fused.scale) == tuple(layer.scale[1:])
    assert tuple(height.scale) == tuple(layer.scale[1:])
    assert height.data.dtype == np.float32
    assert np.array_equal(layer.data, original)  # the input layer is never modified
    # the sample's z step and unit (its layer scale) give the height in micrometres too
    physical = viewer.layers[f"{layer.name} height (µm)"]
    assert np.allclose(physical.data, height.data * layer.scale[0])
    # progress advanced to the end, per slice
    assert widget.job is None and any("fused" in m for m in messages(notifications))

    truth = layer.metadata["napari_mfif"]["ground_truth"]
    depth = layer.metadata["napari_mfif"]["true_depth"]
    assert psnr(truth, fused.data, 4095) > max(psnr(truth, s, 4095) for s in layer.data) + 6
    assert np.median(np.abs(height.data - depth)) < 0.5

    # running again updates the result layers instead of adding new ones
    n_layers = len(viewer.layers)
    widget.mode.value = "series"
    run_and_wait(qtbot, widget)
    assert len(viewer.layers) == n_layers
    assert viewer.layers[f"{layer.name} fused"].metadata["napari_mfif"]["mode"] == "series"

    # the viewer really renders (OpenGL under Xvfb), and shows the fused image
    shot = viewer.screenshot(canvas_only=True)
    assert shot.ndim == 3 and shot[..., :3].std() > 5


def test_widget_reports_progress_per_slice(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    s = focal_stack(n_slices=4, shape=(64, 64), dtype=np.uint8, seed=1)
    viewer.add_image(s.stack, name="s")
    widget = open_widget(viewer, FUSE)
    widget.run()
    job = widget.job  # it records the progress it shows, from before the worker starts
    qtbot.waitUntil(lambda: not widget.running, timeout=60_000)
    steps = job.steps
    assert steps and steps[-1][0] == steps[-1][1] == 8  # sml nway (the default): 2 steps per slice
    assert [d for d, _ in steps] == sorted(d for d, _ in steps)


def test_widget_fuses_an_rgb_stack_layer(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    s = focal_stack(n_slices=4, shape=(80, 80), dtype=np.uint8, seed=4)
    tint = np.array([1.0, 0.8, 0.6])
    rgb = np.clip(s.stack[..., None] * tint, 0, 255).astype(np.uint8)
    layer = viewer.add_image(rgb, rgb=True, name="rgb", scale=(3.0, 0.2, 0.3))
    widget = open_widget(viewer, FUSE)
    widget.image.value = layer
    run_and_wait(qtbot, widget)
    fused = viewer.layers["rgb fused"]
    assert fused.rgb and fused.data.shape == (80, 80, 3) and fused.data.dtype == np.uint8
    assert tuple(fused.scale) == (0.2, 0.3)
    sharp = np.clip(s.sharp[..., None] * tint, 0, 255)
    assert psnr(sharp, fused.data, 255) > max(psnr(sharp, sl, 255) for sl in rgb) + 3


def test_widget_takes_the_z_axis_from_the_file(make_napari_viewer, qtbot, tmp_path,
                                               notifications):
    """A (Y, X, Z) TIFF whose axes say so opens through our reader with z axis 2 chosen,
    and fuses to the same result as the (Z, Y, X) stack; a z-last layer with no axes is
    refused at Run rather than fused across x."""
    viewer = make_napari_viewer()
    s = focal_stack(n_slices=10, shape=(96, 96), dtype=np.uint16, seed=8)
    path = tmp_path / "yxz.tif"
    import tifffile

    tifffile.imwrite(path, np.moveaxis(s.stack, 0, -1).copy(), metadata={"axes": "YXZ"})
    (layer,) = viewer.open(path, plugin=PLUGIN)
    widget = open_widget(viewer, FUSE)
    assert widget.image.value is layer and widget.z_axis.value == 2
    run_and_wait(qtbot, widget)
    expected = mf.fuse(s.stack)
    assert np.array_equal(viewer.layers["yxz fused"].data, expected.image)
    assert np.allclose(viewer.layers["yxz height map"].data, expected.index_map)

    plain = viewer.add_image(np.moveaxis(s.stack, 0, -1), name="plain")
    widget.image.value = plain
    widget.z_axis.value = 0
    run_and_wait(qtbot, widget)
    assert "plain fused" not in viewer.layers
    assert any("(96, 96, 10)" in m and "the z axis box" in m for m in messages(notifications))


def test_widget_fuses_2d_layers_in_layer_order(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    s = focal_stack(n_slices=3, shape=(64, 64), dtype=np.uint16, seed=6)
    chosen = [viewer.add_image(sl, name=f"plane_{k:02d}", scale=(0.5, 0.5))
              for k, sl in enumerate(s.stack)]
    viewer.add_image(np.zeros((10, 10), np.uint16), name="other")
    widget = open_widget(viewer, FUSE)
    widget.source.value = "2-D layers as slices"
    assert not shown(widget.image) and shown(widget.slices)
    widget.slices.value = chosen
    run_and_wait(qtbot, widget)
    # the results are named after the set of slices, not after its first slice
    fused, height = viewer.layers["plane fused"], viewer.layers["plane height map"]
    assert fused.data.dtype == np.uint16 and tuple(fused.scale) == (0.5, 0.5)
    assert "plane height (z units)" not in viewer.layers  # no z step known
    expected = mf.fuse(s.stack)
    assert np.array_equal(fused.data, expected.image)
    assert np.allclose(height.data, expected.index_map)
    # results are not offered as inputs: neither as slices nor as stacks
    names = [name for name, _ in widget._flat_layers()]
    assert names == ["plane_00", "plane_01", "plane_02", "other"]


def test_set_names():
    assert ml.set_name(["plane_01", "plane_02", "plane_10"]) == "plane"
    assert ml.set_name(["DSC_0356", "DSC_0358"]) == "DSC"
    assert ml.set_name(["a", "b"]) == "slices"
    assert ml.set_name(["cell z=1.5", "cell z=2.0"]) == "cell z"


def test_widget_method_parameters_reach_the_method(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    s = focal_stack(n_slices=3, shape=(48, 48), dtype=np.uint8, seed=7)
    viewer.add_image(s.stack, name="s")
    widget = open_widget(viewer, FUSE)
    widget.method.value = "cnn"
    assert shown(widget.params.panel("cnn")) and not shown(widget.params.panel("tenengrad"))
    assert widget.params.values("cnn")["gf_radius"] == 8  # the paper's defaults
    assert widget.params.panel("cnn").nway_rule.choices == ("soft", "hard")
    widget.params.panel("cnn").gf_radius.value = 3
    widget.add_weights.value = True
    qtbot.waitUntil(lambda: "GPU" in widget.device_info.value, timeout=60_000)
    run_and_wait(qtbot, widget)
    info = viewer.layers["s fused"].metadata["napari_mfif"]
    assert info["method"] == "cnn" and info["params"]["gf_radius"] == 3
    assert viewer.layers["s weights"].data.shape == (3, 48, 48)


def test_cancel_leaves_the_layer_list_unchanged(make_napari_viewer, qtbot, notifications):
    viewer = make_napari_viewer()
    s = focal_stack(n_slices=12, shape=(192, 192), dtype=np.uint16, seed=8)
    layer = viewer.add_image(s.stack, name="long")
    widget = open_widget(viewer, FUSE)
    widget.method.value = "cnn"
    widget.image.value = layer
    before = [lay.name for lay in viewer.layers]
    widget.run()
    job = widget.job
    job._relay.progressed.connect(lambda *_: widget.cancel())  # cancel at the first step
    qtbot.waitUntil(lambda: not widget.running, timeout=120_000)
    assert [lay.name for lay in viewer.layers] == before
    assert len(job.steps) < 12  # it stopped early, not after all 13 steps
    assert any("cancelled" in m for m in messages(notifications))
    assert widget.run_button.enabled and not widget.cancel_button.enabled


@pytest.mark.parametrize("setup, match", [
    ("flat", "single 2-D image"),
    ("different shapes", "same shape"),
    ("one slice", "1 layer selected"),
])
def test_bad_selection_shows_an_error_and_adds_nothing(make_napari_viewer, qtbot,
                                                       notifications, setup, match):
    viewer = make_napari_viewer()
    a = viewer.add_image(np.zeros((32, 32), np.uint8), name="a")
    b = viewer.add_image(np.zeros((32, 40), np.uint8), name="b")
    widget = open_widget(viewer, FUSE)
    if setup == "flat":
        widget.image.choices = [("a", a)]  # a user script forcing a 2-D layer in
        widget.image.value = a
    else:
        widget.source.value = "2-D layers as slices"
        widget.slices.value = [a, b] if setup == "different shapes" else [a]
    widget.run()
    assert not widget.running  # refused before any work started
    assert [lay.name for lay in viewer.layers] == ["a", "b"]
    assert any(match in m for m in messages(notifications)), messages(notifications)


def test_errors_in_the_worker_are_a_notification(make_napari_viewer, qtbot, notifications):
    viewer = make_napari_viewer()
    layer = viewer.add_image(np.full((3, 16, 16), np.nan, np.float32), name="nan")
    widget = open_widget(viewer, FUSE)
    widget.image.value = layer
    run_and_wait(qtbot, widget)
    assert [lay.name for lay in viewer.layers] == ["nan"]
    assert any("NaN" in m for m in messages(notifications)), messages(notifications)


# -- the Inspect focus map widget --------------------------------------------------------

@pytest.mark.parametrize("method", ["tenengrad", "cnn"])
def test_inspector_shows_where_each_slice_is_sharp(make_napari_viewer, qtbot, method):
    viewer = make_napari_viewer()
    depth = np.where(np.arange(128) < 64, 0.0, 2.0)[None].repeat(96, 0)
    s = focal_stack(cells_image((96, 128), seed=3), depth, n_slices=3, blur_per_slice=2.0,
                    dtype=np.uint16, seed=3)
    viewer.add_image(s.stack, name="two halves", scale=(1.0, 0.5, 0.5))
    widget = open_widget(viewer, INSPECT)
    widget.method.value = method
    widget.slice_a.value, widget.slice_b.value = 0, 2
    run_and_wait(qtbot, widget)
    score = viewer.layers["two halves focus score"]
    decision = viewer.layers["two halves focus decision"]
    assert tuple(score.scale) == (0.5, 0.5)
    assert score.data[16:-16, 8:48].mean() > 0.7 and score.data[16:-16, 80:120].mean() < 0.3
    assert decision.data[16:-16, 8:48].mean() > 0.9 and decision.data[16:-16, 80:120].mean() < 0.1
    assert decision.metadata["napari_mfif"]["slice_b"] == 2


def test_inspector_rejects_a_missing_slice(make_napari_viewer, notifications):
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((3, 16, 16), np.uint8), name="s")
    widget = open_widget(viewer, INSPECT)
    widget.slice_b.value = 5
    widget.run()
    assert not widget.running and len(viewer.layers) == 1
    assert any("slice 5 does not exist" in m for m in messages(notifications))


# -- start-up cost -----------------------------------------------------------------------

def test_opening_the_widgets_does_not_import_torch():
    code = (
        "import sys, napari\n"
        "v = napari.Viewer(show=False)\n"
        "v.window.add_plugin_dock_widget('napari-mfif', 'Fuse focal stack')\n"
        "v.window.add_plugin_dock_widget('napari-mfif', 'Inspect focus map')\n"
        "v.open_sample('napari-mfif', 'focal_stack')\n"
        "print('torch' in sys.modules)\n"
        "v.close()\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "False"


def test_the_scripted_example_of_the_docs(make_napari_viewer, tmp_path):
    # docs/napari.md "From a script", on a TIFF with a pixel size
    s = focal_stack(n_slices=4, shape=(64, 64), dtype=np.uint16, seed=9)
    mf.write_image(tmp_path / "stack.tif", s.stack, scale=(2.0, 0.5, 0.5), unit="µm")
    viewer = make_napari_viewer()
    (stack,) = viewer.open(tmp_path / "stack.tif", plugin="napari-mfif")
    fused, height, *more = ml.fuse_layer(viewer, stack, method="cnn", mode="nway")
    ml.inspect_focus(viewer, stack, slice_a=0, slice_b=3, method="cnn")
    viewer.layers[fused.name].save(str(tmp_path / "fused.tif"), plugin="napari-mfif")

    assert [lay.name for lay in more] == ["stack height (µm)"]
    assert "stack focus decision" in viewer.layers
    back = mio.read_physical_scale(tmp_path / "fused.tif")
    assert back.scale == (0.5, 0.5) and back.units == ("µm", "µm")
    assert np.array_equal(mio.read_image(tmp_path / "fused.tif"), fused.data)


def test_widget_applies_the_decision_to_other_channels_and_aligns(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    big = focal_stack(cells_image((180, 180), seed=3), n_slices=5, shape=(180, 180),
                      dtype=np.uint16, seed=3)
    drift = [(0, 0), (3, 1), (6, 2), (9, 3), (12, 4)]
    window = [big.stack[k, 10 + dy:140 + dy, 10 + dx:140 + dx] for k, (dy, dx) in enumerate(drift)]
    dapi = viewer.add_image(np.stack(window), name="dapi", scale=(2.0, 0.5, 0.5))
    other = viewer.add_image((np.stack(window) // 3).astype(np.uint16), name="gfp",
                             scale=(2.0, 0.5, 0.5), colormap="green")
    widget = open_widget(viewer, FUSE)
    widget.image.value = dapi
    assert [c for c in widget.apply_to.choices] == [other]
    widget.apply_to.value = [other]
    widget.align.value = "translation"
    run_and_wait(qtbot, widget)
    fused, gfp = viewer.layers["dapi fused"], viewer.layers["gfp fused"]
    assert fused.data.shape == gfp.data.shape and fused.data.shape[0] < 130  # cropped
    # the same decision (and alignment) on both channels: gfp is dapi // 3, fused alike
    assert np.abs(gfp.data.astype(int) - fused.data.astype(int) // 3).max() <= 1
    # the crop sits where it was cut from, in world coordinates, and the shifts are reported
    alignment = fused.metadata["napari_mfif"]["alignment"]
    y0, _, x0, _ = alignment["box"]
    assert tuple(fused.translate) == tuple(gfp.translate) == (y0 * 0.5, x0 * 0.5)
    assert abs(alignment["shifts"][4][0] + 6) < 0.5  # slice 4 vs the reference, slice 2
    assert "aligned 5 slices" in alignment["report"]
    assert gfp.colormap.name == "green"


def test_widget_fuses_a_slide_too_large_for_memory_tile_by_tile(make_napari_viewer, qtbot,
                                                                 tmp_path, monkeypatch):
    import tifffile

    from napari_mfif import _memory

    s = focal_stack(n_slices=4, shape=(300, 420), dtype=np.uint16, seed=6)
    path = tmp_path / "slide.tif"
    tifffile.imwrite(path, s.stack, imagej=True, metadata={"axes": "ZYX"})
    viewer = make_napari_viewer()
    layer, = viewer.open(str(path), plugin=PLUGIN)  # a lazy dask layer
    # room for a window of tiles, not for the whole stack
    monkeypatch.setattr(_memory, "available_bytes", lambda: 6 * 2**20)
    widget = open_widget(viewer, FUSE)
    widget.image.value = layer
    widget.run()
    job = widget.job
    qtbot.waitUntil(lambda: not widget.running, timeout=120_000)
    fused = viewer.layers["slide fused"]
    monkeypatch.undo()
    assert np.array_equal(fused.data, mf.fuse(s.stack).image)
    # progress went over the tile tasks of three passes (one 1024-px tile here)
    assert job.steps[-1] == (3, 3)


def test_simple_view_presets_and_advanced_settings(make_napari_viewer):
    """The Fuse widget opens simple (input, z, specimen, Fuse); the method and its numbers
    are under 'advanced settings'; a specimen preset picks its method with the method's own
    parameters, and changing the method by hand shows 'custom'."""
    from napari_mfif._widget import CUSTOM, PRESETS

    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((4, 32, 32), np.uint16), name="stack")
    widget = open_widget(viewer, FUSE)
    simple = ("image", "z_axis", "z_step", "specimen", "advanced", "run_button")
    advanced = ("method", "params", "mode", "device", "align", "apply_to", "add_weights",
                "surface")
    assert all(shown(getattr(widget, n)) for n in simple)
    assert not any(shown(getattr(widget, n)) for n in advanced)
    assert not shown(widget.time_point)  # only for time series
    widget.advanced.value = True
    assert all(shown(getattr(widget, n)) for n in advanced)
    assert shown(widget.params.panel("dog")) and not shown(widget.params.panel("cnn"))
    reflected = next(p for p in PRESETS if p.startswith("reflected"))
    widget.params.panel("cnn").gf_radius.value = 3
    widget.specimen.value = reflected
    assert widget.method.value == "cnn" and widget.params.values("cnn")["training"] == "papers"
    assert widget.params.values("cnn")["gf_radius"] == 8  # the method's defaults again
    widget.method.value = "sml"
    assert widget.specimen.value == CUSTOM
    widget.specimen.value = next(iter(PRESETS))
    assert widget.method.value == mf.registry.DEFAULT_METHOD
    # every control says what it is for
    for name in simple + ("source", "slices", "method", "mode", "device", "align",
                          "apply_to", "add_weights", "surface", "cancel_button"):
        assert getattr(widget, name).tooltip, name


def test_only_networks_with_shipped_weights_are_offered(make_napari_viewer):
    viewer = make_napari_viewer()
    widget = open_widget(viewer, FUSE)
    panel = widget.params.panel("cnn")
    assert "liu2017" not in panel.arch.choices and "compact" in panel.arch.choices
    panel.arch.value = "compact"
    assert set(panel.training.choices) == {"papers", "microscopy", "boundary"}
    panel.arch.value = "dual"
    assert list(panel.training.choices) == ["papers"] and panel.training.value == "papers"


def test_progress_shows_in_the_widget(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    s = focal_stack(n_slices=6, shape=(384, 384), dtype=np.uint16, seed=3)  # runs ~1 s
    viewer.add_image(s.stack, name="stack")
    widget = open_widget(viewer, FUSE)
    seen = []
    widget.progress.changed.connect(lambda value: seen.append((value, widget.progress.max)))
    widget.run()
    assert shown(widget.progress)
    qtbot.waitUntil(lambda: not widget.running, timeout=60_000)
    # the bar moved through the run's steps (12 for 6 slices: scoring, then smoothing);
    # how many of them reach the widget before the run's end hides it is up to Qt's queue
    assert any(0 < value < top for value, top in seen) and max(t for _, t in seen) == 12
    assert not shown(widget.progress) and widget.status.value == ""
