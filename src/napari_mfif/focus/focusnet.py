"""A small focus network that scores whole slices at a quarter of their resolution.

The ``cnn`` method's networks judge 16 x 16 patches on a 2-pixel grid; their 8 x 8 head (the
papers' fully connected layer run densely) is most of their cost. This network is a plain
stack of convolutions instead:

    1 -> c0   3 x 3, stride 2        (1/2 resolution)
    c0 -> c1  3 x 3, stride 2        (1/4 resolution)
    c1 -> c2  3 x 3
    c2 -> c3  3 x 3, dilation 2
    c3 -> c3  3 x 3, dilation 4
    c3 -> 1   1 x 1                  one focus score per 4 x 4 cell

with ReLU after every layer but the last. Its receptive field is 63 x 63 pixels, enough to
see the rings a defocused brightfield cell throws around itself and the haze beside an
out-of-focus fluorescent object, at about 1,500 multiply-adds per pixel (the ``compact``
patch network: about 40,000).

Every slice of a stack is scored once; the scores are upsampled bilinearly to full size and
a softmax across the slices gives each slice's weight. The network is trained for exactly
that: the weighted average of the slices should equal the in-focus truth of simulated stacks
(``napari_mfif.train_focusnet``). So where one slice is clearly the sharpest it takes the
pixel, where slices are equally good they share it (and average their noise away), and where
no slice is in focus the least defocused one wins.

Input: one stack's gray slices scaled to about [0, 1] with one pair of percentiles for the
whole stack (as for ``cnn``). The image is mirrored by :data:`PAD` pixels before scoring, so
that the border pixels are judged on mirrored context rather than on zeros.
"""

from __future__ import annotations

import json
import math
from functools import lru_cache
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .._errors import MfifError

#: the score grid's step in pixels
STRIDE = 4
#: receptive-field radius in pixels (63 x 63 field)
RADIUS = 31
#: the image is mirrored by this much before scoring (a multiple of STRIDE, >= RADIUS)
PAD = 32
FORMAT = "napari-mfif-focusnet-stack-1"
WEIGHTS = Path(__file__).parent / "weights" / "focusnet.pt"
CHANNELS = (8, 16, 32, 32)


class StackFocusNet(nn.Module):
    """One focus score per 4 x 4 cell of a slice; see the module docstring."""

    def __init__(self, channels=CHANNELS):
        super().__init__()
        c0, c1, c2, c3 = (int(c) for c in channels)
        self.channels = (c0, c1, c2, c3)
        self.body = nn.Sequential(
            nn.Conv2d(1, c0, 3, stride=2, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(c0, c1, 3, stride=2, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(c1, c2, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(c2, c3, 3, padding=2, dilation=2), nn.ReLU(inplace=True),
            nn.Conv2d(c3, c3, 3, padding=4, dilation=4), nn.ReLU(inplace=True),
            nn.Conv2d(c3, 1, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 1, H, W) with H, W multiples of STRIDE -> (N, H/4, W/4) scores."""
        return self.body(x)[:, 0]


def grid_scores(net: StackFocusNet, x: torch.Tensor) -> torch.Tensor:
    """Scores of (N, H, W) slices on the 4-pixel grid, from the images mirrored by PAD and
    padded to a multiple of STRIDE: (N, ceil(H/4), ceil(W/4)); cell (i, j) covers pixels
    4i..4i+3, 4j..4j+3 and its score sits at their centre (4i + 1.5, 4j + 1.5)."""
    h, w = x.shape[-2:]
    t = x[:, None]
    mode = "reflect" if min(h, w) > PAD else "replicate"
    t = F.pad(t, (PAD, PAD, PAD, PAD), mode=mode)
    eh, ew = (-h) % STRIDE, (-w) % STRIDE
    if eh or ew:
        t = F.pad(t, (0, ew, 0, eh), mode="replicate")
    if t.device.type == "cpu":
        t = t.contiguous(memory_format=torch.channels_last)
    s = net(t)
    p = PAD // STRIDE
    return s[:, p:s.shape[-2] - p, p:s.shape[-1] - p].contiguous()


def upsample(scores: torch.Tensor, shape) -> torch.Tensor:
    """Grid scores (N, h, w) bilinearly to full size (N, H, W): each score at its cell's
    centre, edge values held beyond the outermost centres."""
    h, w = scores.shape[-2:]
    up = F.interpolate(scores[:, None], size=(h * STRIDE, w * STRIDE), mode="bilinear",
                       align_corners=False)
    return up[:, 0, :shape[0], :shape[1]]


def with_neighbourhood(grid: torch.Tensor, sigma: float, weight: float) -> torch.Tensor:
    """Grid scores (N, h, w) plus ``weight`` times their Gaussian blur of ``sigma`` pixels
    (on the grid: sigma / STRIDE cells, cut at 4 sigma, mirrored at the border): where the
    local evidence is weak (flat areas, a uniformly defocused field), the neighbourhood's
    decides; where it is strong, it still wins."""
    if sigma <= 0 or weight == 0:
        return grid
    sc = sigma / STRIDE
    r = max(1, int(math.ceil(4 * sc)))
    k = torch.exp(-0.5 * (torch.arange(-r, r + 1, device=grid.device, dtype=grid.dtype) / sc) ** 2)
    k = k / k.sum()
    t = grid[:, None]
    h, w = t.shape[-2:]
    t = F.pad(t, (r, r, 0, 0), mode="reflect" if w > r else "replicate")
    t = F.conv2d(t, k.view(1, 1, 1, -1))
    t = F.pad(t, (0, 0, r, r), mode="reflect" if h > r else "replicate")
    t = F.conv2d(t, k.view(1, 1, -1, 1))
    return grid + weight * t[:, 0]


def slice_scores(net: StackFocusNet, x: torch.Tensor, neighbourhood: float = 0.0,
                 weight: float = 0.0) -> torch.Tensor:
    """Full-size scores of (N, H, W) [0, 1] slices, with the neighbourhood's evidence added
    (:func:`with_neighbourhood`) when ``neighbourhood`` (pixels) and ``weight`` are set."""
    return upsample(with_neighbourhood(grid_scores(net, x), neighbourhood, weight),
                    x.shape[-2:])


# -- weights ----------------------------------------------------------------------------

def save(net: StackFocusNet, path: str | Path, meta: dict) -> None:
    """Write the weights with their training record (loadable with weights_only=True)."""
    state = {k: v.detach().to("cpu", torch.float32).clone() for k, v in net.state_dict().items()}
    meta = json.loads(json.dumps(meta, default=str))
    torch.save({"format": FORMAT, "channels": list(net.channels), "state_dict": state,
                "meta": meta}, path)


def read(path: str | Path) -> dict:
    """The saved dict of a focusnet weights file (see :func:`save`)."""
    from .cnn import load_blob

    return load_blob(path, FORMAT, "a weights file of the focusnet method")


@lru_cache(maxsize=4)
def _cached(path: str, mtime: float, device: str) -> tuple[StackFocusNet, dict]:
    blob = read(path)
    try:
        net = StackFocusNet(tuple(blob["channels"]))
        net.load_state_dict(blob["state_dict"])
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise MfifError(f"weights in {path} do not fit the focusnet network: "
                        f"{str(exc).splitlines()[0]}") from None
    net = net.to(device).eval()
    if device == "cpu":
        net = net.to(memory_format=torch.channels_last)
    return net, dict(blob.get("meta", {}))


def load(weights: str | Path | None, device: str) -> tuple[StackFocusNet, dict]:
    """The network for a weights file (default: the shipped ``focusnet.pt``) on ``device``,
    cached per file and device, and its training record."""
    path = Path(weights).expanduser() if weights else WEIGHTS
    if not path.is_file():
        raise MfifError(f"weights file not found: {path}")
    path = path.resolve()
    return _cached(str(path), path.stat().st_mtime, str(device))


def count_parameters(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def multiply_adds_per_pixel(channels=CHANNELS) -> float:
    """Multiply-adds per input pixel of one scoring pass."""
    c0, c1, c2, c3 = channels
    return (9 * c0 / 4 + 9 * c0 * c1 / 16 + 9 * c1 * c2 / 16 + 9 * c2 * c3 / 16
            + 9 * c3 * c3 / 16 + c3 / 16)

