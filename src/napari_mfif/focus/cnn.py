"""The focus CNN of Liu et al. (2017): a siamese network on 16 x 16 patches.

Each branch (shared weights) is three 3x3 convolutions (stride 1, zero "same" padding, ReLU)
with one 2x2 max-pool before the third, giving an 8 x 8 block of features per 16 x 16 patch.
Two heads sit on those blocks:

- the **pair head** of the paper: the two branches' blocks concatenated, a fully connected
  layer (256 in the paper) with ReLU, and a 2-way softmax giving P(first patch is in focus).
  Used for two images and for the papers' series mode;
- a **slice-score head**: the same kind of layer on one branch's block, giving a scalar focus
  score per patch; P(first in focus) = sigmoid(s_first - s_second). Trained jointly with the
  pair head. It scores every slice of a stack once (O(Z) passes), so all slices can be
  compared at once (N-way) and the height map follows.

At inference the fully connected layers run as convolutions (8 x 8, then 1 x 1), so one pass
over a whole image gives a dense score map with patch stride 2, of size
(ceil(H/2) - 8 + 1) x (ceil(W/2) - 8 + 1), as in the paper.

**Patch context.** With zero padding, a conv net scoring an isolated 16 x 16 patch sees zeros
around it, while a whole-image pass sees the neighbouring pixels: the two disagree near patch
borders. Here a patch is always seen with a 4-pixel margin of real image (its receptive field),
in training and at inference, and the image border is mirrored; the dense map then equals
scoring each patch on its own exactly (``tests/test_cnn.py``). The convolution and
fully-connected shapes, and so the parameter counts, are the paper's.

**Variants** (``ARCHS``; ``docs/cnn.md``), all with the same patch, stride, margin and heads,
so the same dense inference and decision steps serve them all:

- ``dual``: the dual-stream, *pseudo-siamese* network of paper 004: two branches of the same
  shape **without** shared weights, one for the first image of a pair (stream 0) and one for
  the second (stream 1). The slice-score head sits on stream 0 only: a single slice is scored
  as a "first" image, so N-way scoring stays O(Z);
- ``wavelet``: the PDMNet idea (paper 002): the branch input is the one-level Haar DWT of the
  image (sub-bands LL, LH, HL, HH as 4 channels at half resolution, computed densely on the
  2-pixel grid), then 3x3, 3x3 and 1x1 convolutions at half resolution. The receptive field
  stays within the 4-pixel margin, so dense == patch-by-patch still holds;
- ``compact_mixed``: ``compact`` with the mixed max/average pooling of paper 001:
  ``lam * max + (1 - lam) * avg`` with one learned ``lam = sigmoid(theta)``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .._errors import MfifError

PATCH = 16
STRIDE = 2
MARGIN = 4  # receptive-field margin around a patch (pixels), see the module docstring

WEIGHTS_DIR = Path(__file__).parent / "weights"
#: the training data of shipped weights: the papers' Gaussian-blur pairs (``<arch>.pt``),
#: those mixed with pairs from physically simulated microscope stacks
#: (``<arch>_microscopy.pt``), or the papers' pairs with focus boundaries through half of them
#: and one camera's noise per pair (``<arch>_boundary.pt``, scores placed at patch centres)
TRAININGS = ("papers", "microscopy", "boundary")
#: the options of ``python -m napari_mfif.train`` that make each training's weights
TRAINING_OPTIONS = {"papers": "", "microscopy": "--data microscopy",
                    "boundary": "--boundary-fraction 0.5 --pair-noise shared"}


@dataclass(frozen=True)
class Arch:
    name: str
    channels: tuple[int, int, int]
    fc: int
    description: str
    streams: int = 1        # 1: siamese (shared branch weights); 2: pseudo-siamese
    pool: str = "max"       # "max" or "mixed" (max/average, paper 001)
    input: str = "gray"     # "gray" or "haar" (one-level Haar sub-bands, paper 002)


ARCHS = {
    "liu2017": Arch("liu2017", (64, 128, 256), 256,
                    "the paper's size: 64/128/256 filters, FC 256 (8.8 M parameters in the "
                    "pair network)"),
    "compact": Arch("compact", (16, 32, 32), 64,
                    "16/32/32 filters, FC 64: about 60x fewer operations per pixel"),
    "dual": Arch("dual", (16, 32, 32), 64,
                 "dual-stream pseudo-siamese (paper 004): compact-sized branches without "
                 "weight sharing; trained with Adam, binary cross-entropy, early stopping",
                 streams=2),
    "wavelet": Arch("wavelet", (16, 32, 32), 64,
                    "Haar wavelet sub-bands LL/LH/HL/HH as the input (PDMNet idea, paper 002), "
                    "3x3-3x3-1x1 convolutions at half resolution",
                    input="haar"),
    "compact_mixed": Arch("compact_mixed", (16, 32, 32), 64,
                          "compact with mixed max/average pooling (paper 001)", pool="mixed"),
}

STREAMS, POOLS, INPUTS = (1, 2), ("max", "mixed"), ("gray", "haar")


class MixedPool2d(nn.Module):
    """Mixed pooling (paper 001): ``lam * maxpool + (1 - lam) * avgpool``, 2 x 2, stride 2,
    with one learned mixing weight ``lam = sigmoid(theta)`` (0.5 at the start)."""

    def __init__(self):
        super().__init__()
        self.theta = nn.Parameter(torch.zeros(()))

    def forward(self, x):
        lam = torch.sigmoid(self.theta)
        return lam * F.max_pool2d(x, 2) + (1 - lam) * F.avg_pool2d(x, 2)


class HaarDWT(nn.Module):
    """One-level orthonormal Haar DWT on the 2-pixel grid: (N, 1, H, W) with even H, W ->
    (N, 4, H/2, W/2) sub-bands LL, LH, HL, HH (no parameters)."""

    def forward(self, x):
        a, b = x[..., 0::2, 0::2], x[..., 0::2, 1::2]
        c, d = x[..., 1::2, 0::2], x[..., 1::2, 1::2]
        return 0.5 * torch.cat([a + b + c + d, a + b - c - d, a - b + c - d, a - b - c + d],
                               dim=1)


def _trunk(channels, pool: str, input: str) -> nn.Sequential:
    c1, c2, c3 = channels
    if input == "haar":
        # everything at half resolution; receptive radius 2 half-res px = MARGIN
        return nn.Sequential(
            HaarDWT(),
            nn.Conv2d(4, c1, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(c1, c2, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(c2, c3, 1), nn.ReLU(inplace=True),
        )
    return nn.Sequential(
        nn.Conv2d(1, c1, 3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(c1, c2, 3, padding=1), nn.ReLU(inplace=True),
        nn.MaxPool2d(2) if pool == "max" else MixedPool2d(),
        nn.Conv2d(c2, c3, 3, padding=1), nn.ReLU(inplace=True),
    )


class FocusNet(nn.Module):
    """Siamese focus network with a pair head (the paper's) and a slice-score head."""

    def __init__(self, channels=(64, 128, 256), fc: int = 256, streams: int = 1,
                 pool: str = "max", input: str = "gray"):
        super().__init__()
        if streams not in STREAMS or pool not in POOLS or input not in INPUTS:
            raise ValueError(f"unknown network variant: streams={streams!r}, pool={pool!r}, "
                             f"input={input!r}")
        c1, c2, c3 = channels
        self.channels, self.fc = tuple(channels), fc
        self.streams, self.pool, self.input = streams, pool, input
        self.trunk = _trunk(channels, pool, input)
        if streams == 2:  # pseudo-siamese: the second image's branch has its own weights
            self.trunk_b = _trunk(channels, pool, input)
        block = PATCH // 2
        self.pair_fc = nn.Conv2d(2 * c3, fc, block)   # = Linear(2 * c3 * 8 * 8, fc)
        self.pair_out = nn.Conv2d(fc, 2, 1)           # = Linear(fc, 2)
        self.score_fc = nn.Conv2d(c3, fc, block)
        self.score_out = nn.Conv2d(fc, 1, 1)

    # -- features -------------------------------------------------------------------
    def features(self, x: torch.Tensor, stream: int = 0) -> torch.Tensor:
        """Branch features for images (N, 1, H, W) that carry a MARGIN-pixel border of
        context: (N, c3, (H - 2*MARGIN)/2, (W - 2*MARGIN)/2). ``stream`` 1 is the second
        image's branch (its own weights in a dual-stream net, the shared one otherwise)."""
        f = (self.trunk_b if stream == 1 and self.streams == 2 else self.trunk)(x)
        m = MARGIN // 2
        return f[..., m:f.shape[-2] - m, m:f.shape[-1] - m]

    # -- heads on feature maps (dense: one value per 8x8 block position) -------------
    def pair_logits(self, fa: torch.Tensor, fb: torch.Tensor) -> torch.Tensor:
        return self.pair_out(F.relu(self.pair_fc(torch.cat([fa, fb], dim=1))))

    def slice_scores(self, f: torch.Tensor) -> torch.Tensor:
        return self.score_out(F.relu(self.score_fc(f)))[:, 0]

    def forward(self, a: torch.Tensor, b: torch.Tensor):
        """Training forward on patch pairs with context, (N, 1, 24, 24) each: returns the
        pair head's 2 logits (N, 2) and the two slice scores (N,), (N,). In a dual-stream
        net the pair head sees A through stream 0 and B through stream 1, and both slice
        scores come from stream 0 (the branch that scores single slices)."""
        fa, fb = self.features(a, 0), self.features(b, 1)
        logits = self.pair_logits(fa, fb)[..., 0, 0]
        fb_score = self.features(b, 0) if self.streams == 2 else fb
        return logits, self.slice_scores(fa)[..., 0, 0], self.slice_scores(fb_score)[..., 0, 0]


def count_parameters(net: nn.Module, heads: str = "pair") -> int:
    """Parameters of the trunk plus the named heads ('pair', 'score' or 'all')."""
    names = {"pair": ("trunk", "trunk_b", "pair_fc", "pair_out"),
             "score": ("trunk", "score_fc", "score_out"),
             "all": ("trunk", "trunk_b", "pair_fc", "pair_out", "score_fc", "score_out")}[heads]
    return sum(p.numel() for n, p in net.named_parameters() if n.split(".")[0] in names)


# -- dense inference ------------------------------------------------------------------

def mirror(x: torch.Tensor, pad: int) -> torch.Tensor:
    """(N, C, H, W) mirrored by ``pad`` pixels on every side (repeated where the image is too
    small to mirror)."""
    return F.pad(x, (pad,) * 4, mode="reflect" if min(x.shape[-2:]) > pad else "replicate")


def pad_for_dense(gray: torch.Tensor) -> torch.Tensor:
    """(N, 1, H, W) -> mirrored to even size, plus the MARGIN border of context."""
    h, w = gray.shape[-2:]
    x = gray
    if h % 2 or w % 2:
        x = F.pad(x, (0, w % 2, 0, h % 2), mode="replicate")
    return mirror(x, MARGIN)


def score_map_shape(h: int, w: int) -> tuple[int, int]:
    """The dense score map's size for an H x W image: ceil(H/2)-8+1 by ceil(W/2)-8+1."""
    block = PATCH // 2
    return math.ceil(h / 2) - block + 1, math.ceil(w / 2) - block + 1


class DenseScorer:
    """Runs a FocusNet over whole images on one device, without gradients; ``meta`` is its
    weights' training record."""

    def __init__(self, net: FocusNet, device: str = "cpu", meta: dict | None = None):
        self.net = net.to(device).eval()
        self.device = torch.device(device)
        self.meta = dict(meta or {})

    @torch.inference_mode()
    def features(self, gray: np.ndarray | torch.Tensor, stream: int = 0) -> torch.Tensor:
        """Dense branch features of one image (H, W) or a batch (N, H, W); ``stream`` 1 for
        the second image of a pair (matters for dual-stream nets only)."""
        if not isinstance(gray, torch.Tensor):
            gray = torch.as_tensor(np.ascontiguousarray(gray, dtype=np.float32), device=self.device)
        t = gray.reshape((-1, 1) + gray.shape[-2:])
        return self.net.features(pad_for_dense(t), stream)

    @torch.inference_mode()
    def pair_probability(self, fa: torch.Tensor, fb: torch.Tensor) -> torch.Tensor:
        """P(first image in focus) per patch position, from two feature maps."""
        return torch.softmax(self.net.pair_logits(fa, fb), dim=1)[:, 0]

    @torch.inference_mode()
    def slice_scores(self, f: torch.Tensor) -> torch.Tensor:
        return self.net.slice_scores(f)


# -- weights ----------------------------------------------------------------------

def builtin_weights(arch: str, training: str = "papers") -> Path:
    """The shipped weights file of ``arch`` trained on ``training`` data (:data:`TRAININGS`):
    ``<arch>.pt`` for the papers' recipe, ``<arch>_<training>.pt`` otherwise."""
    return WEIGHTS_DIR / (f"{arch}.pt" if training == "papers" else f"{arch}_{training}.pt")


def save_weights(net: FocusNet, path: str | Path, arch: str, meta: dict) -> None:
    """Save a state dict with its architecture and training record (loadable with
    ``torch.load(weights_only=True)``)."""
    state = {k: v.detach().to("cpu", torch.float32).clone() for k, v in net.state_dict().items()}
    meta = json.loads(json.dumps(meta, default=str))  # plain types only: weights_only loading
    blob = {"format": "napari-mfif-focusnet-1", "arch": arch, "channels": list(net.channels),
            "fc": net.fc, "state_dict": state, "meta": meta}
    # variant fields only where they differ from the original siamese net, so that files of
    # the original shape keep their exact layout (absent = 1 stream, max pooling, gray input)
    for key, value, default in (("streams", net.streams, 1), ("pool", net.pool, "max"),
                                ("input", net.input, "gray")):
        if value != default:
            blob[key] = value
    torch.save(blob, path)


def load_blob(path: str | Path, fmt: str, what: str) -> dict:
    """The dict saved in a weights file whose ``format`` is ``fmt`` (loaded with
    ``weights_only=True``); a missing, unreadable or other file is refused in one sentence
    saying it is not ``what``."""
    path = Path(path)
    if not path.is_file():
        raise MfifError(f"weights file not found: {path}")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise MfifError(f"cannot load weights from {path}: {str(exc).splitlines()[0]}") from None
    if not isinstance(blob, dict) or blob.get("format") != fmt:
        raise MfifError(f"{path} is not {what}")
    return blob


def read_weights(path: str | Path) -> dict:
    return load_blob(path, "napari-mfif-focusnet-1", "a napari-mfif focus network weights file")


@lru_cache(maxsize=8)
def _cached_net(path: str, mtime: float, device: str) -> FocusNet:
    blob = read_weights(path)
    try:
        net = FocusNet(tuple(int(c) for c in blob["channels"]), int(blob["fc"]),
                       streams=int(blob.get("streams", 1)), pool=str(blob.get("pool", "max")),
                       input=str(blob.get("input", "gray")))
    except (KeyError, TypeError, ValueError):
        raise MfifError(f"{path} does not say which network its weights are for") from None
    state = blob.get("state_dict")
    if not isinstance(state, dict):
        raise MfifError(f"{path} holds no network weights")
    for key, tensor in net.state_dict().items():
        if key not in state:
            raise MfifError(f"weights in {path} do not fit the network: {key} is missing")
        if tuple(state[key].shape) != tuple(tensor.shape):
            raise MfifError(
                f"weights in {path} do not fit the network: {key} has shape "
                f"{tuple(state[key].shape)} where the network needs {tuple(tensor.shape)}"
            )
    try:
        net.load_state_dict(state)
    except RuntimeError as exc:
        raise MfifError(f"weights in {path} do not fit the network: "
                        f"{str(exc).splitlines()[0]}") from None
    return net.to(device).eval()


def load_net(weights: str | Path | None, arch: str, device: str,
             training: str = "papers") -> tuple[FocusNet, dict]:
    """The network for ``weights`` (a file) or the shipped weights of ``arch`` trained on
    ``training`` data (:data:`TRAININGS`; ignored when a file is given); cached per file and
    device. Returns the net and the file's training record."""
    if weights in (None, ""):
        if arch not in ARCHS:
            raise MfifError(f"unknown architecture {arch!r}; choose one of: {', '.join(ARCHS)}")
        if training not in TRAININGS:
            raise MfifError(f"unknown training data {training!r}; choose one of: "
                            f"{', '.join(TRAININGS)}")
        path = builtin_weights(arch, training)
        if not path.is_file():
            if training == "papers":
                raise MfifError(f"no trained weights ship for architecture {arch!r}; train them "
                                f"with 'python -m napari_mfif.train --arch {arch}' and pass "
                                f"weights=FILE")
            have = [a for a in ARCHS if builtin_weights(a, training).is_file()]
            raise MfifError(f"no weights trained on {training} data ship for architecture "
                            f"{arch!r} (they ship for: {', '.join(have) or 'none'}); train them "
                            f"with 'python -m napari_mfif.train --arch {arch} "
                            f"{TRAINING_OPTIONS[training]}' and pass weights=FILE")
    else:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise MfifError(f"weights file not found: {path}")
    path = path.resolve()
    net = _cached_net(str(path), path.stat().st_mtime, device)
    return net, read_weights(path).get("meta", {})
