"""The classic focus measures on the torch path (the GPU path): the same formulas as on the
CPU, checked on the CPU build of torch against scipy; on a CUDA GPU against the CPU result."""

import subprocess
import sys

import numpy as np
import pytest
import torch
from scipy import ndimage as ndi

import napari_mfif as mf
from napari_mfif import MfifError
from napari_mfif._device import _may_have_gpu, resolve_device
from napari_mfif.focus import _ops
from napari_mfif.focus.classic import _fuse, local_variance, tenengrad
from napari_mfif.focus.sml import sum_modified_laplacian
from napari_mfif.metrics import psnr
from napari_mfif.registry import get_method

MEASURES = {"tenengrad": tenengrad, "variance": local_variance, "sml": sum_modified_laplacian}
TORCH_CPU = _ops.TorchOps("cpu")


def _rand(shape, seed=0):
    return np.random.default_rng(seed).random(shape).astype(np.float32)


@pytest.mark.parametrize("shape", [(40, 33), (5, 7), (1, 9)])
@pytest.mark.parametrize("sigma", [0.6, 1.0, 3.0, 7.5])
def test_torch_gaussian_is_scipys(shape, sigma):
    """Same kernel and the same 'reflect' edges, also when the kernel is longer than the
    image (the extension then reflects again)."""
    x = _rand(shape)
    want = ndi.gaussian_filter(x, sigma, mode="reflect", truncate=3.0)
    got = TORCH_CPU.numpy(TORCH_CPU.gaussian(TORCH_CPU.tensor(x), sigma))
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_torch_correlate1d_is_scipys():
    x = _rand((30, 31), 1)
    for weights in ([-1.0, 0.0, 1.0], [1.0, 2.0, 1.0], [-1.0, 2.0, -1.0], [0.5, 0.2, 0.0, 0.1, 0.2]):
        for axis in (0, 1):
            want = ndi.correlate1d(x, weights, axis=axis, mode="reflect")
            got = TORCH_CPU.numpy(TORCH_CPU.correlate1d(TORCH_CPU.tensor(x), weights, axis))
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_reflect_index_is_half_sample_symmetric():
    assert _ops.reflect_index(3, 4, 4).tolist() == [2, 2, 1, 0, 0, 1, 2, 2, 1, 0, 0]


@pytest.mark.parametrize("name", sorted(MEASURES))
@pytest.mark.parametrize("presmooth,window", [(1.0, 3.0), (0.0, 1.5), (2.0, 0.0)])
def test_measures_agree_between_numpy_and_torch(name, presmooth, window):
    measure = MEASURES[name]
    gray = _rand((64, 80), 2)
    want = measure(gray, presmooth=presmooth, window=window)
    got = TORCH_CPU.numpy(measure(TORCH_CPU.tensor(gray), presmooth=presmooth, window=window,
                                  ops=TORCH_CPU))
    assert got.shape == want.shape
    # float32 sums in another order (variance subtracts two close numbers: E[g^2] - E[g]^2)
    scale = max(float(want.max()), float(gray.max()) ** 2)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * scale)


@pytest.fixture(scope="module")
def noisy():
    return mf.focal_stack(n_slices=6, shape=(96, 112), noise=0.02, seed=5, dtype=np.float32)


def _work(stack):
    work = stack.astype(np.float32)[..., None]
    return work, work[..., 0]


@pytest.mark.parametrize("name", sorted(MEASURES))
@pytest.mark.parametrize("mode", ["nway", "series"])
def test_torch_fusion_agrees_with_numpy(noisy, name, mode):
    """The whole fusion (noise floor and flat-area fill included in N-way) through the torch
    path equals the numpy path up to float rounding: a choice flips only at exact ties."""
    work, gray = _work(noisy.stack)
    params = dict(get_method(name).params)
    out = {}
    for ops in (_ops.NUMPY, TORCH_CPU):
        out[ops.name] = _fuse(MEASURES[name], ops, work, gray, mode=mode, progress=None,
                              keep_weights=False, **params)
    (a_img, a_idx, _), (b_img, b_idx, _) = out["numpy"], out["torch"]
    assert b_img.shape == a_img.shape and b_img.dtype == a_img.dtype
    assert np.mean(np.abs(a_img - b_img) < 1e-4) > 0.999
    assert np.mean(np.abs(a_idx - b_idx) < 1e-3) > 0.999
    # and it is a real fusion: better than the best single slice
    best = max(psnr(noisy.sharp, s) for s in noisy.stack)
    assert psnr(noisy.sharp, b_img[..., 0]) > best


def test_torch_fusion_reports_progress(noisy):
    work, gray = _work(noisy.stack)
    seen = []
    _fuse(tenengrad, TORCH_CPU, work, gray, mode="nway", progress=lambda d, t: seen.append((d, t)),
          keep_weights=False, **get_method("tenengrad").params)
    z = len(noisy.stack)
    assert seen == [(k, 2 * z) for k in range(1, 2 * z + 1)]


def test_classic_methods_offer_cuda_but_auto_keeps_the_cpu():
    for name in MEASURES:
        spec = get_method(name)
        assert "cuda" in spec.devices and not spec.auto_cuda
        assert resolve_device("auto", spec.devices, name, auto_cuda=spec.auto_cuda) == "cpu"
    assert get_method("cnn").auto_cuda


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")
def test_cuda_without_a_gpu_is_one_clear_sentence(noisy):
    with pytest.raises(MfifError, match="no CUDA GPU is available") as info:
        mf.fuse(noisy.stack, method="sml", device="cuda")
    assert "\n" not in str(info.value)


@pytest.mark.skipif(_may_have_gpu(), reason="this machine may have a GPU driver")
def test_auto_device_does_not_import_torch_without_a_gpu_driver():
    code = ("import sys, napari_mfif as mf\n"
            "st = mf.focal_stack(n_slices=3, shape=(32, 32))\n"
            "assert mf.fuse(st.stack, method='cnn' if False else 'sml').device == 'cpu'\n"
            "from napari_mfif._device import cuda_available\n"
            "assert cuda_available() is False\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\n")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("name", sorted(MEASURES))
@pytest.mark.parametrize("mode", ["nway", "series"])
def test_cuda_agrees_with_cpu(noisy, name, mode):
    cpu = mf.fuse(noisy.stack, method=name, mode=mode, device="cpu")
    gpu = mf.fuse(noisy.stack, method=name, mode=mode, device="cuda")
    assert gpu.device == "cuda" and gpu.image.dtype == cpu.image.dtype
    assert np.mean(np.abs(cpu.image - gpu.image) < 1e-4) > 0.999
    maps = mf.focus_map(noisy.stack[0], noisy.stack[-1], method=name, device="cuda")
    ref = mf.focus_map(noisy.stack[0], noisy.stack[-1], method=name, device="cpu")
    np.testing.assert_allclose(maps.score, ref.score, atol=1e-4)
