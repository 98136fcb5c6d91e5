"""Screenshots of the widgets docked in napari with real results, for docs/napari.md.

Run under a virtual display (napari needs OpenGL; Mesa from apt):

    xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python scripts/screenshots.py

It opens the bundled synthetic sample through the plugin, runs each widget as a user
would (through the plugin manifest, off the UI thread), waits for the result and saves the
whole window to docs/img/: the Fuse widget in its simple view with the default method
(widget_fuse.png), the height map (widget_height_map.png), the height map as a 3-D surface
(height_surface.png) and the focus-map inspector (widget_inspect.png).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import napari
from qtpy.QtWidgets import QApplication

DOCS_IMG = Path(__file__).resolve().parents[1] / "docs" / "img"
PLUGIN = "napari-mfif"


def wait(widget, timeout=300.0) -> None:
    end = time.monotonic() + timeout
    while widget.running:
        QApplication.processEvents()
        if time.monotonic() > end:
            sys.exit(f"{widget.title} did not finish in {timeout:.0f} s")
        time.sleep(0.02)
    for _ in range(20):  # let the layers and the canvas settle
        QApplication.processEvents()
        time.sleep(0.02)


def shoot(viewer, name: str) -> None:
    from skimage.io import imsave

    image = viewer.screenshot(canvas_only=False, flash=False)
    path = DOCS_IMG / name
    imsave(path, image, check_contrast=False)
    print(f"wrote {path.relative_to(DOCS_IMG.parents[1])} {image.shape[1]}x{image.shape[0]}")


def main() -> None:
    DOCS_IMG.mkdir(parents=True, exist_ok=True)
    viewer = napari.Viewer(title="napari-mfif")
    viewer.window.resize(1500, 900)
    (stack,) = viewer.open_sample(PLUGIN, "focal_stack")

    _, fuse = viewer.window.add_plugin_dock_widget(PLUGIN, "Fuse focal stack")
    fuse.image.value = stack  # the simple view, the default specimen preset
    fuse.surface.value = True  # an advanced option, set here for the 3-D picture below
    fuse.run()
    wait(fuse)
    surface = viewer.layers[f"{stack.name} surface"]
    for name in (f"{stack.name} height map", f"{stack.name} height (µm)", surface.name):
        viewer.layers[name].visible = False
    stack.visible = False
    shoot(viewer, "widget_fuse.png")

    viewer.layers[f"{stack.name} fused"].visible = False
    viewer.layers[f"{stack.name} height map"].visible = True
    shoot(viewer, "widget_height_map.png")

    # the height map as a 3-D surface textured with the fused image, relief exaggerated 3x
    for layer in viewer.layers:
        layer.visible = layer is surface
    surface.scale = (3 * surface.scale[0], *surface.scale[1:])
    viewer.dims.ndisplay = 3
    viewer.camera.angles = (-50, -30, -60)  # as docs/napari.md shows it
    viewer.camera.perspective = 30
    viewer.reset_view()
    viewer.camera.angles = (-50, -30, -60)  # reset_view may reset the angles too
    viewer.camera.zoom *= 0.8
    for _ in range(20):
        QApplication.processEvents()
        time.sleep(0.02)
    shoot(viewer, "height_surface.png")
    viewer.dims.ndisplay = 2
    surface.visible = False

    viewer.window.remove_dock_widget(viewer.window._dock_widgets["Fuse focal stack (napari-mfif)"])
    _, inspect = viewer.window.add_plugin_dock_widget(PLUGIN, "Inspect focus map")
    inspect.image.value = stack
    inspect.method.value = "cnn"
    inspect.slice_a.value, inspect.slice_b.value = 2, 7
    inspect.run()
    wait(inspect)
    for layer in viewer.layers:
        layer.visible = layer.name == f"{stack.name} focus decision"
    shoot(viewer, "widget_inspect.png")
    viewer.close()


if __name__ == "__main__":
    main()
