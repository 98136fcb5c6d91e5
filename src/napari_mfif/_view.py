"""Where an array being processed sits in the whole image (for tile-by-tile processing).

Steps of a method that are not local (a noise level measured on the whole stack, an
intensity range, wide smoothing of a confidence map) are written in the image's global
coordinates, so that running them on one window covering the whole image and running them
window by window give the same numbers. A :class:`View` tells such a step where its window
is; :meth:`View.whole` is the window of whole-image processing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class View:
    """A window of the whole image.

    Attributes
    ----------
    origin : (int, int)
        Global (y, x) of the window's first pixel.
    shape : (int, int)
        The whole image's (H, W).
    core : (int, int, int, int)
        ``(y0, y1, x0, x1)`` in window coordinates: the pixels this window is responsible
        for (the rest is overlap, there only as context for local steps).
    """

    origin: tuple[int, int]
    shape: tuple[int, int]
    core: tuple[int, int, int, int]

    @classmethod
    def whole(cls, h: int, w: int) -> "View":
        return cls((0, 0), (int(h), int(w)), (0, int(h), 0, int(w)))

    @property
    def core_global(self) -> tuple[int, int, int, int]:
        """The core box ``(y0, y1, x0, x1)`` in global coordinates."""
        oy, ox = self.origin
        y0, y1, x0, x1 = self.core
        return oy + y0, oy + y1, ox + x0, ox + x1

    @property
    def is_whole(self) -> bool:
        return self.origin == (0, 0) and self.core == (0, self.shape[0], 0, self.shape[1])


@dataclass(frozen=True)
class Context:
    """What a method's ``run`` is given when it runs on one window of a tiled run: where
    the window is, and the whole-image results of its earlier passes (see
    :class:`napari_mfif.tiles.Tiling`)."""

    view: View
    stats: Any = None
    coarse: Any = None
