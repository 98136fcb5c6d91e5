"""The height map as a 3-D surface: the mesh function on its own, then in a real viewer
through the Fuse widget (run under xvfb-run: napari needs OpenGL)."""

import numpy as np
import pytest

from napari_mfif import MfifError
from napari_mfif import layers as ml
from napari_mfif.synthetic import focal_stack

PLUGIN, FUSE = "napari-mfif", "Fuse focal stack"


def tilted_plane(shape=(30, 50)):
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    return (0.1 * yy + 0.04 * xx).astype(np.float32)


def grid_points(vertices, scale, translate):
    """The (row, column) of each vertex, back from its world y, x."""
    rows = np.rint((vertices[:, 1] - translate[0]) / scale[0]).astype(int)
    cols = np.rint((vertices[:, 2] - translate[1]) / scale[1]).astype(int)
    return rows, cols


# -- the mesh ---------------------------------------------------------------------------

def test_surface_of_a_tilted_plane():
    height = tilted_plane()
    image = np.random.default_rng(0).integers(0, 4096, height.shape).astype(np.uint16)
    scale, translate = (0.5, 0.25), (10.0, -3.0)
    (vertices, faces, values), kwargs, kind = ml.height_surface(
        image, height, z_step=2.0, scale=scale, translate=translate, z_unit="µm",
        units=("µm", "µm"), name="s surface")
    assert kind == "surface" and kwargs["name"] == "s surface"
    assert vertices.shape == (30 * 50, 3) and values.shape == (30 * 50,)
    rows, cols = grid_points(vertices, scale, translate)
    assert np.allclose(vertices[:, 1:], np.stack([translate[0] + rows * scale[0],
                                                  translate[1] + cols * scale[1]], 1))
    # z is the height at each grid point times the z step, in µm
    assert np.allclose(vertices[:, 0], height[rows, cols] * 2.0)
    assert kwargs["metadata"]["napari_mfif"]["z_units"] == "µm"
    assert kwargs["units"] == ("µm", "µm", "µm")
    # faces: two triangles per grid cell, each on three different, existing vertices
    assert faces.shape == (2 * 29 * 49, 3)
    assert faces.min() >= 0 and faces.max() < len(vertices)
    assert all(len(set(face)) == 3 for face in faces.tolist())
    # each triangle spans one grid cell: neighbouring rows and columns only
    assert np.ptp(rows[faces], axis=1).max() == 1 and np.ptp(cols[faces], axis=1).max() == 1
    # the texture is the image itself at the vertices, float, with the image's range
    assert values.dtype == np.float32 and np.array_equal(values, image[rows, cols])
    assert kwargs["colormap"] == "gray"
    assert kwargs["contrast_limits"] == (float(image.min()), float(image.max()))


def test_surface_without_a_z_step_is_in_slices():
    height = tilted_plane()
    (vertices, _, _), kwargs, _ = ml.height_surface(np.ones(height.shape), height,
                                                    z_origin=5.0)
    rows, cols = grid_points(vertices, (1, 1), (0, 0))
    assert np.allclose(vertices[:, 0], 5.0 + height[rows, cols])
    assert kwargs["metadata"]["napari_mfif"]["z_units"] == "slice"
    assert "units" not in kwargs


def test_rgb_texture_is_rec601_luma():
    height = tilted_plane((12, 16))
    rgb = np.random.default_rng(1).integers(0, 256, (12, 16, 3)).astype(np.uint8)
    (vertices, _, values), kwargs, _ = ml.height_surface(rgb, height)
    rows, cols = grid_points(vertices, (1, 1), (0, 0))
    luma = 0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]
    assert np.allclose(values, luma[rows, cols], atol=1e-3)
    assert np.allclose(kwargs["contrast_limits"], (luma.min(), luma.max()), atol=1e-3)


def test_step_limits_the_vertex_count_and_keeps_the_edges():
    height = tilted_plane((101, 203))
    image = np.zeros(height.shape, np.uint8)
    (vertices, faces, _), kwargs, _ = ml.height_surface(image, height, step=10)
    rows, cols = grid_points(vertices, (1, 1), (0, 0))
    assert set(rows) == {*range(0, 101, 10)}  # 100 is the last row
    assert set(cols) == {*range(0, 203, 10), 202}  # the last column is kept
    assert len(vertices) == 11 * 22 and len(faces) == 2 * 10 * 21
    assert np.allclose(vertices[:, 0], height[rows, cols])
    assert kwargs["metadata"]["napari_mfif"]["grid_step"] == 10
    # by default the step keeps a large image within the vertex budget
    assert ml.surface_step((384, 384)) == 1
    for shape in [(501, 501), (2000, 3000), (20_000, 20_000)]:
        step = ml.surface_step(shape)
        n = len(ml._grid(shape[0], step)) * len(ml._grid(shape[1], step))
        assert n <= ml.SURFACE_MAX_VERTICES
        if step > 1:  # and is no coarser than it needs to be
            m = len(ml._grid(shape[0], step - 1)) * len(ml._grid(shape[1], step - 1))
            assert m > ml.SURFACE_MAX_VERTICES
    big = np.zeros((1200, 1500), np.float32)
    (vertices, _, _), _, _ = ml.height_surface(np.zeros_like(big), big)
    assert len(vertices) <= ml.SURFACE_MAX_VERTICES


@pytest.mark.parametrize("image, height, match", [
    (np.zeros((8, 8)), np.zeros((8, 9)), "same fusion"),
    (np.zeros((8, 8)), np.zeros((2, 8, 8)), "2-D"),
    (np.zeros((1, 8)), np.zeros((1, 8)), "too small"),
])
def test_bad_surface_input_is_one_sentence(image, height, match):
    with pytest.raises(MfifError, match=match):
        ml.height_surface(image, height)


# -- in napari --------------------------------------------------------------------------

def test_widget_adds_the_surface_in_a_real_viewer(make_napari_viewer, qtbot):
    viewer = make_napari_viewer(show=True)
    s = focal_stack(n_slices=6, shape=(64, 64), dtype=np.uint16, seed=3)
    layer = viewer.add_image(s.stack, name="stack", scale=(2.0, 0.5, 0.5))
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, FUSE)
    widget.image.value = layer
    assert not widget.surface.value  # off unless asked for
    widget.surface.value = True
    widget.run()
    qtbot.waitUntil(lambda: not widget.running, timeout=120_000)

    surface = viewer.layers["stack surface"]
    assert type(surface).__name__ == "Surface"
    assert viewer.dims.ndisplay == 2  # the display is never switched silently
    height = viewer.layers["stack height map"].data
    fused = viewer.layers["stack fused"].data
    vertices, faces, values = surface.data
    assert len(vertices) == 64 * 64  # a small image: every pixel is a vertex
    rows, cols = grid_points(vertices, (0.5, 0.5), (0.0, 0.0))
    assert np.allclose(vertices[:, 1], rows * 0.5) and np.allclose(vertices[:, 2], cols * 0.5)
    assert np.allclose(vertices[:, 0], height[rows, cols] * 2.0, atol=1e-4)  # z in µm
    assert np.array_equal(values, fused[rows, cols].astype(np.float32))
    assert surface.metadata["napari_mfif"]["z_step"] == 2.0
    assert tuple(surface.contrast_limits) == (float(fused.min()), float(fused.max()))

    # running again updates the surface instead of adding another
    n_layers = len(viewer.layers)
    widget.run()
    qtbot.waitUntil(lambda: not widget.running, timeout=120_000)
    assert len(viewer.layers) == n_layers and viewer.layers["stack surface"] is surface

    # the surface renders in 3-D
    for other in viewer.layers:
        other.visible = other is surface
    viewer.dims.ndisplay = 3
    camera = viewer.scene.camera if hasattr(viewer, "scene") else viewer.camera  # napari 0.9
    camera.angles = (0.0, 40.0, 60.0)
    viewer.reset_view()
    shot = viewer.screenshot(canvas_only=True)
    assert shot.ndim == 3 and shot[..., :3].std() > 5


def test_add_height_surface_from_a_script(make_napari_viewer):
    viewer = make_napari_viewer()
    s = focal_stack(n_slices=4, shape=(48, 40), dtype=np.uint16, seed=5)
    stack = viewer.add_image(s.stack, name="st", scale=(1.5, 0.4, 0.4), translate=(3, 1, 2),
                             units=("µm", "µm", "µm"))
    fused, height, physical = ml.fuse_layer(viewer, stack, method="tenengrad")
    surface = ml.add_height_surface(viewer, fused, step=2)
    assert surface.name == "st surface" and len(viewer.layers) == 5
    vertices = surface.data[0]
    rows, cols = grid_points(vertices, (0.4, 0.4), (1.0, 2.0))
    # z sits over the stack in world coordinates: z origin + height x z step, in µm
    assert np.allclose(vertices[:, 0], physical.data[rows, cols], atol=1e-4)
    assert surface.metadata["napari_mfif"]["z_units"] == "µm"
    assert len(vertices) == 25 * 21  # every second pixel, and the last row and column
    # the physical height layer gives the same surface; the layer is updated, not added
    again = ml.add_height_surface(viewer, fused, physical, step=2)
    assert again is surface and len(viewer.layers) == 5
    assert np.allclose(surface.data[0], vertices, atol=1e-4)
    # fuse_layer(surface=True) adds it too, from the result
    *_, last = ml.fuse_layer(viewer, stack, method="tenengrad", surface=True)
    assert last is surface and np.allclose(last.data[0][:, 0].max(), vertices[:, 0].max(),
                                           atol=0.5)
    with pytest.raises(MfifError, match="no layer 'other height map'"):
        ml.add_height_surface(viewer, viewer.add_image(np.zeros((8, 8)), name="other fused"))
