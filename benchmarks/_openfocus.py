"""A thin adapter to `openfocus` (PyPI), to measure its fusion methods beside ours.

openfocus (MIT licence, https://github.com/Xinzhe99/OpenFocus) is an optional benchmark
dependency, not a dependency of napari-mfif; install it without letting pip swap torch::

    .venv/bin/pip install --no-deps openfocus
    .venv/bin/pip install opencv-python-headless dtcwt imageio pillow-heif rawpy

Its wheel installs top-level packages with generic names (``core``, ``utils``,
``fusion_methods``, ``weights``, ``constants``); they are imported here only, lazily.

Interface (other benchmarks import exactly this):

- :func:`available` -- openfocus is installed and importable;
- :data:`METHODS` -- the openfocus methods worth measuring (its own method ids, as its
  ``--method`` option spells them);
- :func:`fuse` -- ``fuse(stack, method) -> ndarray``: our stack convention in, the fused image
  in the input dtype, scale and channel layout out;
- :func:`height_map` -- openfocus's own focus-position map, in slices (a separate pass);
  :func:`has_height_map` tells which methods have one.

What it does with a stack: the openfocus Python API (``core.multi_focus_fusion.
MultiFocusFusion(...).fuse(list_of_frames)``, the call its command line makes after an
optional registration step) with **no registration**, ``use_gpu=False`` (CPU), and its
defaults otherwise (:data:`SETTINGS`). openfocus works on OpenCV frames: BGR (or gray) uint8,
or float32 on a 0-255 scale (it turns uint16 into that itself, dividing by 65535). So:

- uint8 stacks go in unchanged (its native 8-bit path);
- every other dtype (uint16, float32, ...) is mapped linearly to float32 0-255 by the stack's
  own range (``min(0, stack.min())`` to ``stack.max()``), not by 65535, which would leave
  12-bit camera data at 1/16 of the networks' input range; the result is mapped back, rounded
  and clipped to the input dtype;
- RGB is reversed to BGR and back; gray stacks go in as 2-D frames, and the methods that
  answer in BGR (StackMFF V1, DTCWT, guided filter) are averaged back to one channel;
  (Z, Y, X, 1) keeps its axis; other channel counts are refused.
"""

from __future__ import annotations

import contextlib
import io
import os

import numpy as np

#: the openfocus methods measured by the benchmarks: the three StackMFF networks (all run on
#: the CPU), the dual-tree complex wavelet fusion (the closest stand-in for Fiji's
#: complex-wavelet Extended Depth of Field) and the guided-filter fusion (GFF, Li et al. 2013)
METHODS = ("stackmffv3", "stackmffv2", "stackmff", "dtcwt", "guided_filter")

#: openfocus settings used for every call besides the method: CPU, and the defaults of its
#: command line (exposure matched to the last frame, frame order kept, no base-frame
#: correction, tiles of 1024 px with 256 px overlap above its size thresholds). No
#: registration: ``fuse`` never calls openfocus's alignment.
SETTINGS = dict(use_gpu=False, exposure_match=True, sort_mode="asc", base_frame="none",
                tile_enabled=True, tile_block_size=1024, tile_overlap=256,
                tile_threshold=2048)


def available() -> bool:
    """True when openfocus (the distribution) is installed and its fusion API imports."""
    try:
        from importlib.metadata import PackageNotFoundError, version

        version("openfocus")
    except PackageNotFoundError:
        return False
    try:
        with _quiet():
            from core.algorithms import get_fusion  # noqa: F401
            from core.multi_focus_fusion import MultiFocusFusion  # noqa: F401
    except Exception:
        return False
    return True


def version() -> str:
    from importlib.metadata import version as _version

    return _version("openfocus")


def display_name(method: str) -> str:
    """openfocus's own name for a method id, e.g. 'StackMFF V3'."""
    from core.algorithms import get_fusion

    return get_fusion(method).display_name


def has_height_map(method: str) -> bool:
    from core.algorithms import get_fusion

    return get_fusion(method).depth is not None


@contextlib.contextmanager
def _quiet():
    """openfocus prints resource plans and notes on stdout; keep the benchmark output clean.
    It also sets torch's global thread count; put it back afterwards."""
    try:
        import torch

        threads = torch.get_num_threads()
    except ImportError:  # pragma: no cover - torch is a dependency of both packages
        torch = threads = None
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        if torch is not None and torch.get_num_threads() != threads:
            torch.set_num_threads(threads)


def _weights(method: str) -> dict:
    """The checkpoint of a neural method, as an absolute path: without it openfocus resolves
    its default 'weights/...' from the first folder above site-packages holding a README.md
    or .git (here: this repository), not from its own wheel."""
    from core.algorithms import get_fusion
    from utils.weights import weights_path

    spec = get_fusion(method)
    return {"model_path": weights_path(os.path.basename(spec.weights))} if spec.weights else {}


class _Frames:
    """A stack converted to openfocus frames, and how to convert a result back."""

    def __init__(self, stack):
        array = np.stack(stack) if isinstance(stack, (list, tuple)) else np.asarray(stack)
        if array.ndim not in (3, 4) or array.shape[0] < 2:
            raise ValueError(f"expected a (Z, Y, X) or (Z, Y, X, C) stack, got {array.shape}")
        self.dtype = array.dtype
        self.channel_axis = array.ndim == 4
        if self.channel_axis and array.shape[-1] == 1:
            array = array[..., 0]
        if array.ndim == 4 and array.shape[-1] != 3:
            raise ValueError(f"openfocus fuses gray or 3-channel colour stacks, got "
                             f"{array.shape[-1]} channels")
        self.colour = array.ndim == 4
        if self.colour:
            array = array[..., ::-1]  # RGB -> BGR
        if array.dtype == np.uint8:
            self.lo, self.scale = 0.0, 1.0
            frames = array
        else:
            lo = min(0.0, float(array.min()))
            hi = float(array.max())
            self.lo, self.scale = lo, 255.0 / (hi - lo if hi > lo else 1.0)
            frames = ((array.astype(np.float32) - np.float32(lo))
                      * np.float32(self.scale))
        self.frames = [np.ascontiguousarray(f) for f in frames]

    def bgr(self):
        """Frames with three channels (openfocus's depth maps want BGR)."""
        if self.colour:
            return self.frames
        return [np.repeat(f[..., None], 3, axis=-1) for f in self.frames]

    def back(self, fused: np.ndarray) -> np.ndarray:
        fused = np.asarray(fused)
        if self.colour:
            if fused.ndim == 2:
                fused = np.repeat(fused[..., None], 3, axis=-1)
            fused = fused[..., ::-1]  # BGR -> RGB
        elif fused.ndim == 3:  # gray input answered in BGR: the channels are equal
            fused = fused.astype(np.float32).mean(axis=-1)
        if self.dtype == np.uint8:
            out = fused
        else:
            out = fused.astype(np.float64) / self.scale + self.lo
        if self.dtype.kind in "iu":
            info = np.iinfo(self.dtype)
            out = np.clip(np.rint(out), info.min, info.max)
        out = np.ascontiguousarray(out.astype(self.dtype, copy=False))
        return out[..., None] if self.channel_axis and not self.colour else out


def fuse(stack, method: str = "stackmffv3", **params) -> np.ndarray:
    """Fuse a focal stack with one openfocus method on the CPU, without registration.

    ``stack``: (Z, Y, X) or (Z, Y, X, C) with C = 1 or 3 (RGB), uint8 / uint16 / float32, or a
    list of slices. ``method``: an openfocus method id (:data:`METHODS` or any other of its
    fusion list: 'dct', 'gfgfgf', 'openfocus_a', ...). ``params``: that method's openfocus
    parameters (e.g. ``mode='hard'`` for StackMFF V3, ``N=5`` for DTCWT). Returns the fused
    image with the input's dtype, value scale and channel layout.
    """
    from core.multi_focus_fusion import MultiFocusFusion

    frames = _Frames(stack)
    with _quiet():
        fusion = MultiFocusFusion(algorithm=method, fusion_parameters=params or None,
                                  **SETTINGS)
        fused = fusion.fuse(frames.frames, **_weights(method))
    return frames.back(fused)


def height_map(stack, method: str = "stackmffv3", **params) -> np.ndarray:
    """openfocus's focus-position map for ``method`` (its depth-map feature), as float32
    slice indices 0 .. Z-1. A separate pass over the stack (for the networks, a second
    inference); StackMFF V1 and the guided filter have none (:func:`has_height_map`)."""
    from core.depth_map import compute_focus_index

    frames = _Frames(stack)
    if not has_height_map(method):
        raise ValueError(f"openfocus has no height map for {method!r}")
    with _quiet():
        index01 = compute_focus_index(frames.bgr(), method, params or None, use_gpu=False,
                                      model_path=_weights(method).get("model_path"))
    return (np.asarray(index01, np.float32) * (len(frames.frames) - 1)).astype(np.float32)
