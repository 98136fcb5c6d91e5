"""Reproducible, offline training of the ``focusnet`` method's network
(``python -m napari_mfif.train_focusnet``).

The network (:mod:`napari_mfif.focus.focusnet`) scores every slice of a stack; the softmax of
the scores across slices weights the slices. It is trained on whole simulated stacks with a
known in-focus image, for the quantity users see: the weighted average of the noisy slices
should equal the noise-free in-focus image (mean squared error, each stack's error relative
to its own contrast), plus a small cross-entropy that points the weights at the slice nearest
the true depth where the truth has texture (so the height map follows the depth there).

Training stacks, 128 x 128 px, 5-11 slices, rendered once before training into a pool
(seeds disjoint from every test and benchmark), then drawn with fresh camera noise, a random
dihedral transform, a random run of consecutive slices and a random slice order:

- ``blur``: the papers' kind: sharp photographs and micrographs that ship with scikit-image
  and procedural cell images (the same training images as ``napari_mfif.train``), Gaussian
  defocus of 0.4-3 px per slice, depth smooth, in steps or flat, some with out-of-focus haze;
- ``brightfield`` and ``fluorescence``: the physical simulator (:mod:`napari_mfif.optics`) with
  random optics, specimen and camera (``train.random_optics``), a third of them with sparse
  objects on empty background and, in fluorescence, a third with z steps finer than the depth
  of field (0.15-0.5 of it);
- ``reflected``: flat reflecting pads and traces (:func:`napari_mfif.optics.reflector`) in
  epi-illumination;

and, in half of the draws from flat stacks, stacks where no slice is in focus: only the
slices 1.5 slices or more on one side of the specimen are kept, so the least defocused slice is
the best answer.

Held out: a pool rendered from other seeds; the record reports the PSNR of the fused image
against the truth there, per kind, beside the best single slice and the depth oracle (each
pixel from the slice nearest its depth).

    python -m napari_mfif.train_focusnet -o src/napari_mfif/focus/weights/focusnet.pt

Seeds are fixed; the same command on the same versions gives the same weights.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

KINDS = ("blur", "brightfield", "fluorescence", "reflected")
#: stacks of each kind in the training and the held-out pool
POOL = {"train": {"blur": 160, "brightfield": 120, "fluorescence": 120, "reflected": 60},
        "heldout": {"blur": 16, "brightfield": 16, "fluorescence": 16, "reflected": 8}}
SHAPE = (128, 128)
#: first seed of each pool: disjoint from train.py's pools (100_000, 900_000), from the
#: tests and from the benchmarks (< 10_000)
SEED_BASE = {"train": 300_000, "heldout": 700_000}
#: no slice in focus: a draw from a flat stack is one with probability 2.5x this (a half)
OUT_OF_FOCUS = 0.2


# ---------------------------------------------------------------------------------------
# the pool


def _blur_stack(images, rng, seed):
    from . import train
    from .synthetic import focal_stack, smooth_depth, step_depth

    _, img = images[int(rng.integers(len(images)))]
    h, w = img.shape
    y0, x0 = int(rng.integers(0, h - SHAPE[0] + 1)), int(rng.integers(0, w - SHAPE[1] + 1))
    sharp = img[y0:y0 + SHAPE[0], x0:x0 + SHAPE[1]].astype(np.float32)
    sharp = 0.1 + 0.8 * sharp if rng.random() < 0.5 else sharp * rng.uniform(0.3, 1.0)
    n = int(rng.integers(5, 12))
    u = rng.random()
    if u < 0.45:
        depth = smooth_depth(SHAPE, n, seed=seed)
    elif u < 0.75:
        depth = step_depth(SHAPE, n, n_regions=int(rng.integers(2, 8)), seed=seed)
    else:
        depth = np.full(SHAPE, rng.uniform(0, n - 1), np.float32)
    haze = rng.uniform(0.1, 0.5) if rng.random() < 0.2 else 0.0
    s = focal_stack(sharp, depth, n_slices=n, blur_per_slice=train._log_uniform(rng, 0.4, 3.0),
                    haze=haze, dtype=np.float32, seed=seed)
    camera = dict(photons=train._log_uniform(rng, 100, 30000), read_noise=rng.uniform(0, 5),
                  dtype=str(rng.choice(["uint8", "uint16", "float32"])))
    return dict(kind="blur", clean=s.stack, sharp=s.sharp, depth=s.depth, camera=camera,
                camera_kind="brightfield")


def _optics_stack(kind, rng, seed, stained: float = 0.0):
    from . import optics, train

    settings = train.random_optics(kind, rng)
    spec = dict(settings["specimen"])
    if kind == "brightfield" and stained > 0:
        # stained cells (amplitude objects): drawn from their own generator, so that the
        # pool without them is the pool it always was
        srng = np.random.default_rng([seed, 17])
        if srng.random() < stained:
            spec.update(absorption=srng.uniform(0.3, 0.7), phase=srng.uniform(0.2, 0.8),
                        cells=str(srng.choice(["rbc", "mixed"])))
    if rng.random() < 1 / 3:  # sparse objects on empty background
        for key in ("n_cells", "n_granules", "n_fibres"):
            spec[key] = int(round(spec[key] * rng.uniform(0.05, 0.3)))
        spec["n_cells"] = max(1, spec["n_cells"])
    if kind == "fluorescence" and rng.random() < 1 / 3:  # z steps finer than the DOF
        settings["spacing"] = settings["dof"] * rng.uniform(0.15, 0.5)
        settings["n_slices"] = int(rng.integers(7, 12))
        if not isinstance(settings["depth"], str):
            settings["depth"] = float(rng.uniform(0, settings["n_slices"] - 1))
    sp = optics.specimen(tuple(settings["shape"]), seed=seed, **spec)
    common = dict(n_slices=settings["n_slices"], spacing=settings["spacing"],
                  wavelength=settings["wavelength"], na=settings["na"],
                  medium_index=settings["medium_index"], noise=False, dtype=np.float32,
                  seed=seed)
    if kind == "brightfield":
        s = optics.brightfield_stack(sp, settings["depth"], condenser_na=settings["condenser_na"],
                                     **common)
    else:
        s = optics.fluorescence_stack(sp, settings["depth"], **common)
    return dict(kind=kind, clean=s.stack, sharp=s.sharp, depth=s.depth,
                camera=settings["camera"], camera_kind=kind)


def _reflected_stack(rng, seed):
    from . import optics, train

    n = int(rng.integers(5, 12))
    na = rng.uniform(0.1, 0.9)
    wavelength = rng.uniform(0.45, 0.65)
    dof = wavelength / na ** 2
    condenser = na * rng.uniform(0.3, 1.0)
    pixel = wavelength / (2 * (na + condenser)) * rng.uniform(0.5, 1.0)
    spec = optics.reflector(SHAPE, pixel_size=pixel, wavelength=wavelength,
                            roughness=rng.uniform(0.0, 0.05), heights=(0.05, 0.5), seed=seed)
    if rng.random() < 0.7:
        depth = float(rng.uniform(0, n - 1))
    else:  # a tilted wafer
        y, x = np.mgrid[0:SHAPE[0], 0:SHAPE[1]].astype(np.float32) / SHAPE[0]
        a = rng.uniform(0, 2 * np.pi)
        depth = (np.cos(a) * x + np.sin(a) * y) * rng.uniform(1, n - 1)
        depth = depth - depth.min() + rng.uniform(0, 1)
    s = optics.brightfield_stack(spec, depth, n_slices=n,
                                 spacing=dof * train._log_uniform(rng, 0.4, 2.5),
                                 wavelength=wavelength, na=na,
                                 condenser_na=condenser, noise=False,
                                 dtype=np.float32, seed=seed)
    camera = dict(photons=train._log_uniform(rng, 300, 30000), read_noise=rng.uniform(0, 5),
                  dtype=str(rng.choice(["uint8", "uint16", "float32"])))
    return dict(kind="reflected", clean=s.stack, sharp=s.sharp, depth=s.depth, camera=camera,
                camera_kind="brightfield")


def render_pool(split: str, seed: int = 0, scale: float = 1.0, log=None,
                stained: float = 0.0) -> list[dict]:
    """The simulated stacks of one split ('train' or 'heldout'), each kind's count times
    ``scale``; stack ``i`` of kind ``j`` has seed ``SEED_BASE[split] + 1000 * seed + 10 * i +
    j``."""
    from . import train

    images = train.source_images("train" if split == "train" else "heldout", seed)
    images = [(n, im) for n, im in images if min(im.shape) >= SHAPE[0]]
    pool = []
    base = SEED_BASE[split] + 1000 * seed
    for j, kind in enumerate(KINDS):
        for i in range(max(1, int(round(POOL[split][kind] * scale)))):
            s = base + 10 * i + j
            rng = np.random.default_rng(s)
            if kind == "blur":
                st = _blur_stack(images, rng, s)
            elif kind == "reflected":
                st = _reflected_stack(rng, s)
            else:
                st = _optics_stack(kind, rng, s, stained)
            st["seed"] = s
            pool.append(st)
    if log is not None:
        counts = {k: sum(p["kind"] == k for p in pool) for k in KINDS}
        log(f"  rendered {len(pool)} {split} stacks {counts}")
    return pool


# ---------------------------------------------------------------------------------------
# drawing a training example


def _sim(st):
    """A pool stack's camera as ``train.SimStack`` carries it (its kind and settings), for
    ``train._camera``'s model and :func:`_expected`."""
    from .train import SimStack

    return SimStack(kind="brightfield" if st["camera_kind"] != "fluorescence" else "fluorescence",
                    clean=None, sharp=None, depth=None, spacing=1.0, dof=1.0,
                    camera=st["camera"], span=(0, 1), seed=0, optics={})


def _expected(sim, clean):
    """The camera's expected (noise-free) value of noise-free ``clean``, float32."""
    from .optics import _WHITE

    cam = sim.camera
    dt = np.dtype(cam["dtype"])
    if sim.kind == "brightfield":
        return (clean * np.float32(_WHITE[dt])).astype(np.float32)
    mean = clean * cam["photons"] + cam["background"]
    if dt.kind == "f":
        return (mean / np.float32(cam["photons"])).astype(np.float32)
    return (cam["offset"] + cam["gain"] * mean).astype(np.float32)


def draw(st: dict, rng: np.random.Generator, out_of_focus: float = OUT_OF_FOCUS):
    """One training example from a pool stack: (slices (Z, Y, X), truth (Y, X), depth (Y, X)),
    slices and truth scaled to [0, 1] by the slices' (0.1, 99.9) percentiles as at
    inference, depth in the drawn slices' units (may lie outside them)."""
    from .train import _camera, _dihedral

    clean, sharp, depth = st["clean"], st["sharp"], st["depth"]
    z = clean.shape[0]
    ks = np.arange(z)
    flat = float(depth.max() - depth.min()) < 0.5
    chosen = None
    if flat and rng.random() < out_of_focus * 2.5:
        # no slice in focus: only slices 1.5 slices or more above (or below) the depth
        d = float(depth.mean())
        above, below = ks[ks >= d + 1.5], ks[ks <= d - 1.5]
        sides = [s for s in (above, below) if len(s) >= 2]
        if sides:
            chosen = sides[int(rng.integers(len(sides)))]
    if chosen is None:
        n = int(rng.integers(min(3, z), z + 1))
        k0 = int(rng.integers(0, z - n + 1))
        chosen = ks[k0:k0 + n]
    if rng.random() < 0.5:
        chosen = chosen[::-1]
    sim = _sim(st)
    noisy = _camera(sim, clean[chosen], rng)
    truth = _expected(sim, sharp)
    lo, hi = (float(v) for v in np.percentile(noisy, [0.1, 99.9]))
    scale = 1.0 / (hi - lo) if hi > lo else 1.0
    t = int(rng.integers(8))
    slices = np.stack([_dihedral(s, t) for s in (noisy - lo) * scale])
    truth = _dihedral((truth - lo) * scale, t)
    # depth in the drawn slices' index (the drawn slices are consecutive, in either order)
    d = _dihedral(depth, t)
    step = chosen[1] - chosen[0] if len(chosen) > 1 else 1
    d = (d - chosen[0]) / step
    return (np.ascontiguousarray(slices, np.float32), np.ascontiguousarray(truth, np.float32),
            np.ascontiguousarray(d, np.float32))


# ---------------------------------------------------------------------------------------
# loss and evaluation


def _texture(truth):
    """1 where the truth has texture (local gradient energy above a quarter of its mean)."""
    import torch.nn.functional as F

    gy = truth[1:, :] - truth[:-1, :]
    gx = truth[:, 1:] - truth[:, :-1]
    g = F.pad(gy[:, :-1] ** 2 + gx[:-1, :] ** 2, (0, 1, 0, 1))
    g = F.avg_pool2d(g[None, None], 9, stride=1, padding=4)[0, 0]
    return (g > 0.25 * g.mean()).float() * (g > 1e-5).float()


def example_loss(net, slices, truth, depth, grad_weight: float = 0.0):
    """(image loss, cross-entropy) of one example; see the module docstring."""
    import torch

    from .focus.focusnet import slice_scores

    s = slice_scores(net, slices)                    # (Z, H, W)
    logw = torch.log_softmax(s, dim=0)
    fused = (logw.exp() * slices).sum(dim=0)
    img = ((fused - truth) ** 2).mean() / (truth.var() + 1e-3)
    if grad_weight:
        # blur costs more than in the squared error alone: compare the gradients too
        gy = lambda a: a[1:, :] - a[:-1, :]  # noqa: E731
        gx = lambda a: a[:, 1:] - a[:, :-1]  # noqa: E731
        grad = (((gy(fused) - gy(truth)) ** 2).mean() + ((gx(fused) - gx(truth)) ** 2).mean()) \
            / (gy(truth).var() + gx(truth).var() + 1e-3)
        img = img + grad_weight * grad
    nearest = depth.round().clamp(0, slices.shape[0] - 1).long()
    ce_map = -logw.gather(0, nearest[None])[0]
    mask = _texture(truth)
    ce = (ce_map * mask).sum() / mask.sum().clamp(min=1.0)
    return img, ce


def _psnr(truth, image):
    rng = float(truth.max() - truth.min()) or 1.0
    mse = float(np.mean((truth - image) ** 2))
    return 10 * np.log10(rng ** 2 / max(mse, 1e-12))


def evaluate(net, examples) -> dict:
    """Mean PSNR per kind of the fused image against the truth on held-out examples, beside
    the best single slice and the depth oracle."""
    import torch

    from .focus.focusnet import slice_scores

    out: dict = {}
    with torch.inference_mode():
        for kind, slices, truth, depth in examples:
            x = torch.as_tensor(slices)
            w = torch.softmax(slice_scores(net, x), dim=0).numpy()
            fused = (w * slices).sum(0)
            k = np.clip(np.rint(depth), 0, len(slices) - 1).astype(np.intp)
            oracle = np.take_along_axis(slices, k[None], 0)[0]
            row = out.setdefault(kind, {"fused": [], "best slice": [], "oracle": []})
            row["fused"].append(_psnr(truth, fused))
            row["best slice"].append(max(_psnr(truth, s) for s in slices))
            row["oracle"].append(_psnr(truth, oracle))
    return {kind: {k: round(float(np.mean(v)), 2) for k, v in row.items()}
            for kind, row in out.items()}


def heldout_examples(pool, seed: int = 1):
    rng = np.random.default_rng(SEED_BASE["heldout"] + seed)
    out = []
    for st in pool:
        for _ in range(2):
            out.append((st["kind"], *draw(st, rng)))
    return out


# ---------------------------------------------------------------------------------------


def train(steps: int = 3000, batch: int = 4, lr: float = 2e-3, ce_weight: float = 0.05,
          grad_weight: float = 0.0,
          seed: int = 0, pool_scale: float = 1.0, heldout_scale: float = 1.0,
          log=print, command: str = "", init: str | None = None,
          stained: float = 0.0) -> tuple:
    import torch

    from .focus.focusnet import StackFocusNet, load

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    started = time.perf_counter()
    pool = render_pool("train", seed, pool_scale, log, stained)
    held = heldout_examples(render_pool("heldout", 0, heldout_scale, log, stained))
    log(f"  pools ready in {time.perf_counter() - started:.0f} s")
    net = StackFocusNet()
    if init:  # go on from trained weights
        net.load_state_dict(load(init, "cpu")[0].state_dict())
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    # one-cycle schedule (5 % warm-up, cosine decay); at least two steps of warm-up
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=max(steps, 40),
                                                pct_start=0.05)
    history = []
    t0 = time.perf_counter()
    for step in range(1, steps + 1):
        opt.zero_grad()
        total_img = total_ce = 0.0
        for _ in range(batch):
            st = pool[int(rng.integers(len(pool)))]
            slices, truth, depth = (torch.as_tensor(a) for a in draw(st, rng))
            img, ce = example_loss(net, slices, truth, depth, grad_weight)
            loss = (img + ce_weight * ce) / batch
            loss.backward()
            total_img += img.item() / batch
            total_ce += ce.item() / batch
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % 100 == 0 or step == steps:
            history.append((step, round(total_img, 5), round(total_ce, 4)))
            log(f"  step {step}/{steps}: image loss {total_img:.4f}, ce {total_ce:.3f}, "
                f"{time.perf_counter() - t0:.0f} s")
    net.eval()
    acc = evaluate(net, held)
    log("  held out (PSNR dB, fused / best slice / oracle): " + json.dumps(acc))
    meta = dict(steps=steps, batch=batch, lr=lr, ce_weight=ce_weight, grad_weight=grad_weight,
                seed=seed, init=Path(init).name if init else None, stained=stained,
                pool={k: int(round(v * pool_scale)) for k, v in POOL["train"].items()},
                out_of_focus=OUT_OF_FOCUS, heldout_psnr=acc, history=history[-5:],
                seconds=round(time.perf_counter() - started),
                torch=torch.__version__, numpy=np.__version__, python=platform.python_version(),
                command=command)
    return net, meta


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m napari_mfif.train_focusnet",
                                description="Train the focusnet method's network on simulated "
                                            "stacks (offline, reproducible).")
    p.add_argument("-o", "--output", required=True, help="weights file to write (.pt)")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch", type=int, default=4, help="stacks per step")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--ce-weight", type=float, default=0.05)
    p.add_argument("--grad-weight", type=float, default=0.0,
                   help="weight of the gradient term of the image loss")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--init", default=None, help="start from these weights")
    p.add_argument("--stained", type=float, default=0.0,
                   help="share of brightfield stacks with stained (absorbing) cells")
    p.add_argument("--pool-scale", type=float, default=1.0,
                   help="size of the training pool relative to the default")
    p.add_argument("--heldout-scale", type=float, default=1.0,
                   help="size of the held-out pool relative to the default")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--overwrite", action="store_true")
    args = p.parse_args(argv)
    out = Path(args.output)
    if out.exists() and not args.overwrite:
        p.error(f"{out} exists; pass --overwrite to replace it")
    import torch

    from .focus.focusnet import read, save

    threads = torch.get_num_threads()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        net, meta = train(args.steps, args.batch, args.lr, args.ce_weight, args.grad_weight,
                          args.seed,
                          args.pool_scale, args.heldout_scale, init=args.init,
                          stained=args.stained,
                          command="python -m napari_mfif.train_focusnet "
                                  + " ".join(sys.argv[1:] if argv is None else argv))
    finally:
        torch.set_num_threads(threads)
    tmp = out.with_name(out.name + ".part")
    save(net, tmp, meta)
    tmp.replace(out)
    # the training record beside the weights, readable without torch
    out.with_suffix(".json").write_text(json.dumps(read(out)["meta"], indent=1) + "\n")
    print(f"wrote {out} ({out.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
