"""The napari surface in a real viewer (run under xvfb-run: napari needs OpenGL)."""

import numpy as np
import pytest
from napari.utils.notifications import notification_manager

import napari_mfif as mf
from napari_mfif._widget import layer_stack

from conftest import psnr

PLUGIN, WIDGET = "napari-mfif", "Fuse focal stack"


@pytest.fixture
def notifications():
    seen = []

    def record(event):
        seen.append(event.value if hasattr(event, "value") else event)

    notification_manager.notification_ready.connect(record)
    yield seen
    notification_manager.notification_ready.disconnect(record)


def test_layer_stack_moves_the_z_axis_first():
    from napari.layers import Image

    data = np.zeros((7, 5, 3), np.uint8)  # (Y, Z, X)
    layer = Image(data, scale=(0.5, 2.0, 0.25), translate=(10, 0, 20))
    stack, scale, translate = layer_stack(layer, focus_axis=1)
    assert stack.shape == (5, 7, 3)
    assert scale == (0.5, 0.25) and translate == (10.0, 20.0)


def test_widget_fuses_the_sample_in_a_real_viewer(make_napari_viewer, notifications):
    viewer = make_napari_viewer(show=True)
    (layer,) = viewer.open_sample(PLUGIN, "focal_stack")
    original = layer.data.copy()
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, WIDGET)
    assert set(widget.method.choices) == set(mf.available_methods())

    widget.image.value = layer
    widget()

    fused = viewer.layers[f"{layer.name} fused"]
    height = viewer.layers[f"{layer.name} height map"]
    assert fused.data.dtype == layer.data.dtype == np.uint16
    assert fused.data.shape == layer.data.shape[1:]
    assert tuple(fused.scale) == tuple(layer.scale[1:])
    assert tuple(height.scale) == tuple(layer.scale[1:])
    assert height.data.dtype == np.float32
    assert np.array_equal(layer.data, original)  # the input layer is never modified

    truth = layer.metadata["napari_mfif"]["ground_truth"]
    depth = layer.metadata["napari_mfif"]["true_depth"]
    assert psnr(truth, fused.data, 4095) > max(psnr(truth, s, 4095) for s in layer.data) + 6
    assert np.median(np.abs(height.data - depth)) < 0.5

    # running again updates the result layers instead of adding new ones
    n_layers = len(viewer.layers)
    widget.mode.value = "series"
    widget()
    assert len(viewer.layers) == n_layers
    assert viewer.layers[f"{layer.name} fused"].metadata["napari_mfif"]["mode"] == "series"

    # the viewer really renders (OpenGL under Xvfb), and shows the fused image
    shot = viewer.screenshot(canvas_only=True)
    assert shot.ndim == 3 and shot[..., :3].std() > 5


def test_widget_reports_bad_input_as_a_notification(make_napari_viewer, notifications):
    viewer = make_napari_viewer()
    layer = viewer.add_image(np.zeros((32, 32), np.uint8), name="flat")
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, WIDGET)
    widget.image.value = layer
    widget()
    assert [lay.name for lay in viewer.layers] == ["flat"]  # nothing added
    messages = [str(n.message) for n in notifications]
    assert any("single 2-D image" in m for m in messages), messages
