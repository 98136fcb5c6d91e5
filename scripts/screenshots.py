"""Screenshots of the widgets docked in napari with real results, for docs/napari.md.

Run under a virtual display (napari needs OpenGL; Mesa from apt):

    xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python scripts/screenshots.py

It opens the bundled synthetic sample through the plugin, runs each widget as a user
would (through the plugin manifest, off the UI thread), waits for the result and saves the
whole window to docs/img/.
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
    fuse.method.value = "cnn"
    fuse.image.value = stack
    fuse.run()
    wait(fuse)
    for name in (f"{stack.name} height map", f"{stack.name} height (µm)"):
        viewer.layers[name].visible = False
    stack.visible = False
    shoot(viewer, "widget_fuse.png")

    viewer.layers[f"{stack.name} fused"].visible = False
    viewer.layers[f"{stack.name} height map"].visible = True
    shoot(viewer, "widget_height_map.png")

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
