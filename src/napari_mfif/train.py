"""Reproducible, offline training of the focus CNN (``python -m napari_mfif.train``).

The papers' recipe (Liu et al. 2017): sharp natural images in grayscale; blurred versions by
cascading a Gaussian blur (sigma 2, 7 x 7 kernel) five times; random 16 x 16 patch pairs
(clear, blurred) labelled by their order, both orders used. What microscopy adds here:

- slices of one stack share an intensity scale but not their noise: each pair gets one random
  gain and offset (8- to 16-bit-like ranges are normalised to [0, 1] before scoring), and each
  patch its own Poisson-Gaussian noise, so that noise is not taken for focus;
- a share of pairs with mild blur (sigma 0.6-1.5) so that near-focus slices are told apart;
- flat pairs (no texture in the sharp patch) are not used: nothing tells their order.

Sources, all offline and none of them evaluation data: the photographs and micrographs that
ship inside scikit-image (``skimage.data``), and procedurally generated cell images
(``napari_mfif.synthetic.cells_image``). Patches are drawn from held-out images for the
reported accuracy. Seeds are fixed; the same command on the same versions gives the same
weights.

    python -m napari_mfif.train --arch compact -o src/napari_mfif/focus/weights/compact.pt

The variants (``docs/cnn.md``) train on the same data with the same held-out protocol, e.g.
the dual-stream net as paper 004 trains it (Adam, binary cross-entropy, early stopping on the
validation loss)::

    python -m napari_mfif.train --arch dual --loss bce --early-stop 4 --steps 2500 \
        -o src/napari_mfif/focus/weights/dual.pt

Early stopping (``--early-stop PATIENCE``) evaluates the loss on validation pairs drawn from
the *training* images with their own seed (the held-out images stay untouched) every
``--val-every`` steps, stops after PATIENCE evaluations without improvement and keeps the
best weights.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from .synthetic import cells_image

#: (skimage.data name, used for training or held out)
SKIMAGE_SOURCES = {
    "astronaut": "train", "brick": "train", "camera": "train", "chelsea": "train",
    "coffee": "train", "coins": "train", "grass": "train", "gravel": "train",
    "hubble_deep_field": "train", "immunohistochemistry": "train", "page": "train",
    "retina": "train", "text": "train", "cell": "train",
    "rocket": "heldout", "stereo_motorcycle": "heldout",
}
N_CELL_IMAGES = {"train": 6, "heldout": 2}
CTX = 16 + 2 * 4  # a 16 x 16 patch with its 4-pixel context margin
SCALES = (2, 3)  # extra copies of every source image, downscaled by these factors


def _gray01(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim == 3:
        image = image[..., :3] @ np.array([0.2989, 0.5870, 0.1140])
    image = image.astype(np.float32)
    lo, hi = np.percentile(image, [0.5, 99.5])
    return np.clip((image - lo) / max(hi - lo, 1e-6), 0, 1)


def source_images(split: str, seed: int) -> list[tuple[str, np.ndarray]]:
    """Grayscale [0, 1] source images for 'train' or 'heldout'."""
    import skimage.data

    images = []
    for name, use in SKIMAGE_SOURCES.items():
        if use == split:
            data = getattr(skimage.data, name)()
            images.append((name, _gray01(data[0] if isinstance(data, tuple) else data)))
    base = 1000 if split == "train" else 5000
    for i in range(N_CELL_IMAGES[split]):
        images.append((f"cells{base + seed + i}", cells_image((384, 384), seed=base + seed + i)))
    # the same scenes 2x and 3x smaller (anti-aliased): fine, near-Nyquist texture such as
    # woven or periodic structure is rare at the photographs' own scale
    from skimage.transform import rescale

    for name, img in list(images):
        for factor in SCALES:
            small = rescale(img, 1 / factor, anti_aliasing=True, order=1).astype(np.float32)
            if min(small.shape) > 2 * CTX:
                images.append((f"{name}/{factor}", small))
    return images


def cascade(image: np.ndarray, levels: int = 5, sigma: float = 2.0) -> list[np.ndarray]:
    """The paper's blur ladder: Gaussian (sigma 2, 7 x 7) applied 1..levels times."""
    out, cur = [], image
    for _ in range(levels):
        cur = ndi.gaussian_filter(cur, sigma, truncate=1.5, mode="reflect")  # radius 3: 7 x 7
        out.append(cur)
    return out


class PairSampler:
    """Draws (A, B, label) patch pairs with context; label 1 when A is the sharp one."""

    def __init__(self, images, rng: np.random.Generator, mild_fraction: float = 0.3,
                 noise: bool = True, min_std: float = 0.02, equal_fraction: float = 0.0):
        self.rng, self.mild_fraction, self.noise, self.min_std = rng, mild_fraction, noise, min_std
        self.equal_fraction = equal_fraction
        self.images = [img for _, img in images if min(img.shape) > CTX]
        self.ladders = [cascade(img) for img in self.images]
        self.mild = [0.6, 0.9, 1.2, 1.5]
        self.mild_ladders = [[ndi.gaussian_filter(img, s, mode="reflect") for s in self.mild]
                             for img in self.images]

    def sample(self, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        rng = self.rng
        a = np.empty((n, CTX, CTX), np.float32)
        b = np.empty((n, CTX, CTX), np.float32)
        y = np.empty(n, np.float32)
        i = 0
        while i < n:
            k = rng.integers(len(self.images))
            img = self.images[k]
            r0 = rng.integers(0, img.shape[0] - CTX + 1)
            c0 = rng.integers(0, img.shape[1] - CTX + 1)
            sharp = img[r0:r0 + CTX, c0:c0 + CTX]
            equal = rng.random() < self.equal_fraction
            if not equal and sharp[4:-4, 4:-4].std() < self.min_std:
                continue
            if equal:
                # two copies of one patch at one focus level, each with its own noise:
                # neither is sharper (label 0.5), so equally sharp slices get equal scores
                level = rng.integers(-1, 5)
                sharp = sharp if level < 0 else self.ladders[k][level][r0:r0 + CTX, c0:c0 + CTX]
                blurred = sharp
            elif rng.random() < self.mild_fraction:
                blurred = self.mild_ladders[k][rng.integers(len(self.mild))]
            else:
                blurred = self.ladders[k][rng.integers(5)]
            if not equal:
                blurred = blurred[r0:r0 + CTX, c0:c0 + CTX]
            # one intensity scale for the pair (slices of one stack share it)
            gain, offset = rng.uniform(0.25, 1.0), rng.uniform(0.0, 0.3)
            pa, pb = sharp * gain + offset, blurred * gain + offset
            if self.noise:
                pa, pb = self._noisy(pa), self._noisy(pb)
            t = rng.integers(8)  # one of the 8 flips / rotations, the same for both
            pa, pb = _dihedral(pa, t), _dihedral(pb, t)
            if equal:
                a[i], b[i], y[i] = pa, pb, 0.5
            elif rng.random() < 0.5:
                a[i], b[i], y[i] = pa, pb, 1.0
            else:
                a[i], b[i], y[i] = pb, pa, 0.0
            i += 1
        return a, b, y

    def _noisy(self, patch: np.ndarray) -> np.ndarray:
        """Poisson-Gaussian noise with a random photon budget and read noise."""
        rng = self.rng
        if rng.random() < 0.25:
            return patch
        # photons at intensity 1: noise from about 2 % to 18 % of full scale. Milder noise
        # (1e2..1e4 photons, 40 % noise-free) scored better on clean patch pairs but worse on
        # noisy stacks (docs/cnn.md), so the shipped weights keep this range.
        photons = 10 ** rng.uniform(1.5, 3.5)
        shot = rng.poisson(np.clip(patch, 0, None) * photons) / photons
        return (shot + rng.normal(0, rng.uniform(0, 0.02), patch.shape)).astype(np.float32)


def _dihedral(p: np.ndarray, t: int) -> np.ndarray:
    p = np.rot90(p, t % 4)
    return p[:, ::-1] if t >= 4 else p


def train(arch: str = "compact", steps: int = 3000, batch: int = 128, lr: float = 1e-3,
          optimizer: str = "adam", seed: int = 0, threads: int | None = None,
          heldout_pairs: int = 20000, equal_fraction: float = 0.15,
          loss: str = "ce", early_stop: int = 0, val_every: int = 0, val_pairs: int = 4000,
          log=print) -> tuple[object, dict]:
    """Train a FocusNet; returns the net and a record of the run (accuracy, time, args)."""
    import torch

    from .focus.cnn import ARCHS, FocusNet, count_parameters

    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    spec = ARCHS[arch]
    net = FocusNet(spec.channels, spec.fc, streams=spec.streams, pool=spec.pool, input=spec.input)
    t0 = time.perf_counter()
    train_sampler = PairSampler(source_images("train", seed), rng, equal_fraction=equal_fraction)
    held = source_images("heldout", seed)
    # held-out pairs as the paper makes them (cascaded sigma-2 blur, no noise), and with
    # the microscopy additions (mild blur, gain/offset, Poisson-Gaussian noise)
    paper_set = PairSampler(held, np.random.default_rng(seed + 98), mild_fraction=0.0,
                            noise=False).sample(heldout_pairs)
    micro_set = PairSampler(held, np.random.default_rng(seed + 99)).sample(heldout_pairs)
    val_set = None
    if early_stop > 0:
        # validation pairs from the training images with their own generator
        val_set = PairSampler(source_images("train", seed), np.random.default_rng(seed + 97),
                              equal_fraction=equal_fraction).sample(val_pairs)
        val_every = val_every or max(steps // 25, 1)
    if optimizer == "adam":
        opt = torch.optim.Adam(net.parameters(), lr=lr)
    else:  # the paper: SGD, momentum 0.9, weight decay 5e-4
        opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    log(f"train: {arch} ({count_parameters(net, 'all')} parameters), {steps} steps of {batch} "
        f"pairs, {optimizer} lr {lr}; data ready in {time.perf_counter() - t0:.1f} s")
    net.train()
    t_train = time.perf_counter()
    best = (float("inf"), 0, None)  # (validation loss, step, state) for early stopping
    stale, stopped_at, val_history = 0, None, []
    for step in range(1, steps + 1):
        a, b, y = train_sampler.sample(batch)
        loss_pair, loss_score = _losses(net, a, b, y, loss)
        total = loss_pair + loss_score
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()
        sched.step()
        if step % max(steps // 10, 1) == 0 or step == steps:
            log(f"  step {step}/{steps}  loss {loss_pair.item():.4f} + {loss_score.item():.4f}  "
                f"({time.perf_counter() - t_train:.0f} s)")
        if val_set is not None and (step % val_every == 0 or step == steps):
            v = validation_loss(net, *val_set, loss)
            val_history.append([step, round(v, 5)])
            if v < best[0]:
                best = (v, step, {k: t.detach().clone() for k, t in net.state_dict().items()})
                stale = 0
            else:
                stale += 1
                if stale >= early_stop:
                    stopped_at = step
                    log(f"  early stop at step {step}: no better validation loss for "
                        f"{early_stop} checks (best {best[0]:.4f} at step {best[1]})")
                    break
    if val_set is not None and best[2] is not None:
        net.load_state_dict(best[2])
    train_seconds = time.perf_counter() - t_train
    acc_pair, acc_score = evaluate(net, *paper_set)
    acc_pair_m, acc_score_m = evaluate(net, *micro_set)
    record = {
        "arch": arch, "steps": steps, "batch": batch, "lr": lr, "optimizer": optimizer,
        "seed": seed, "pairs_seen": (stopped_at or steps) * batch,
        "equal_fraction": equal_fraction,
        "scales": list(SCALES),
        "heldout_pairs": heldout_pairs,
        "heldout_accuracy_pair_head": round(acc_pair, 5),
        "heldout_accuracy_score_head": round(acc_score, 5),
        "heldout_accuracy_pair_head_noisy_mild": round(acc_pair_m, 5),
        "heldout_accuracy_score_head_noisy_mild": round(acc_score_m, 5),
        "train_seconds": round(train_seconds, 1),
        **({"loss": loss} if loss != "ce" else {}),
        **({"early_stop_patience": early_stop, "val_every": val_every, "val_pairs": val_pairs,
            "val_source": "training images, own seed", "stopped_at_step": stopped_at,
            "best_step": best[1], "best_val_loss": round(best[0], 5),
            "val_history": val_history} if val_set is not None else {}),
        "threads": torch.get_num_threads(),
        "torch": str(torch.__version__), "numpy": np.__version__, "python": sys.version.split()[0],
        "machine": platform.machine(),
        "train_images": [n for n, _ in source_images("train", seed)],
        "heldout_images": [n for n, _ in source_images("heldout", seed)],
    }
    log(f"held-out accuracy, paper pairs: pair head {acc_pair:.4f}, score head {acc_score:.4f}; "
        f"with noise and mild blur: {acc_pair_m:.4f}, {acc_score_m:.4f}; "
        f"training took {train_seconds:.0f} s")
    return net, record


def _losses(net, a, b, y, loss: str = "ce"):
    """The two training losses of a batch of pairs (pair head, slice-score head)."""
    import torch
    import torch.nn.functional as F

    y_t = torch.from_numpy(y)
    logits, sa, sb = net(torch.from_numpy(a)[:, None], torch.from_numpy(b)[:, None])
    if loss == "bce":
        # binary cross-entropy on P(first in focus) = sigmoid(l0 - l1) (paper 004); the same
        # function of the logits as the 2-way softmax cross-entropy below
        loss_pair = F.binary_cross_entropy_with_logits(logits[:, 0] - logits[:, 1], y_t)
    else:
        # pair head: 2-way softmax, class 0 = "first is in focus" (soft targets: 0.5 for
        # equally sharp pairs)
        loss_pair = F.cross_entropy(logits, torch.stack([y_t, 1 - y_t], dim=1))
    # slice-score head: P(first in focus) = sigmoid(s_a - s_b), binary cross-entropy
    loss_score = F.binary_cross_entropy_with_logits(sa - sb, y_t)
    return loss_pair, loss_score


def validation_loss(net, a, b, y, loss: str = "ce", batch: int = 2048) -> float:
    """Mean (pair + score) loss over validation pairs."""
    import torch

    net.eval()
    total = 0.0
    with torch.inference_mode():
        for s in range(0, len(y), batch):
            lp, ls = _losses(net, a[s:s + batch], b[s:s + batch], y[s:s + batch], loss)
            total += (lp.item() + ls.item()) * len(y[s:s + batch])
    net.train()
    return total / len(y)


def evaluate(net, a: np.ndarray, b: np.ndarray, y: np.ndarray, batch: int = 2048):
    """Held-out patch accuracy of the pair head and of the slice-score head."""
    import torch

    net.eval()
    right_pair = right_score = 0
    with torch.inference_mode():
        for s in range(0, len(y), batch):
            logits, sa, sb = net(torch.from_numpy(a[s:s + batch])[:, None],
                                 torch.from_numpy(b[s:s + batch])[:, None])
            first = (logits[:, 0] > logits[:, 1]).numpy()
            right_pair += int(np.sum(first == (y[s:s + batch] > 0.5)))
            right_score += int(np.sum((sa > sb).numpy() == (y[s:s + batch] > 0.5)))
    net.train()
    return right_pair / len(y), right_score / len(y)


def main(argv=None) -> int:
    from .focus.cnn import ARCHS, save_weights

    p = argparse.ArgumentParser(prog="python -m napari_mfif.train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", default="compact", choices=list(ARCHS))
    p.add_argument("-o", "--output", required=True, help="weights file to write (.pt)")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--optimizer", choices=("adam", "sgd"), default="adam")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--heldout-pairs", type=int, default=20000,
                   help="held-out pairs per accuracy figure")
    p.add_argument("--equal-fraction", type=float, default=0.15,
                   help="share of equally sharp pairs (label 0.5)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--loss", choices=("ce", "bce"), default="ce",
                   help="pair-head loss: 2-way softmax cross-entropy (Liu 2017) or binary "
                        "cross-entropy on P(first in focus) (paper 004); the same function")
    p.add_argument("--early-stop", type=int, default=0, metavar="PATIENCE",
                   help="stop after PATIENCE validation checks without improvement and keep "
                        "the best weights (0 = off)")
    p.add_argument("--val-every", type=int, default=0,
                   help="steps between validation checks (default steps/25)")
    p.add_argument("--val-pairs", type=int, default=4000)
    p.add_argument("--overwrite", action="store_true")
    args = p.parse_args(argv)
    out = Path(args.output)
    if out.exists() and not args.overwrite:
        print(f"train: error: {out} exists (use --overwrite)", file=sys.stderr)
        return 2
    net, record = train(args.arch, args.steps, args.batch, args.lr, args.optimizer, args.seed,
                        args.threads, heldout_pairs=args.heldout_pairs,
                        equal_fraction=args.equal_fraction, loss=args.loss,
                        early_stop=args.early_stop, val_every=args.val_every,
                        val_pairs=args.val_pairs)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".part")
    save_weights(net, tmp, args.arch, record)
    tmp.replace(out)
    out.with_suffix(".json").write_text(json.dumps(record, indent=1) + "\n")
    print(f"weights: {out.resolve()} ({out.stat().st_size / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
