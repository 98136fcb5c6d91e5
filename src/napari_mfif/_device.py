"""Choosing the compute device without importing torch unless it matters."""

from __future__ import annotations

from ._errors import MfifError

DEVICES = ("auto", "cpu", "cuda")


#: device nodes and driver files one of which a machine with a GPU torch could use has on
#: Linux: NVIDIA's driver (also inside containers), WSL2's GPU bridge, AMD's ROCm (HIP)
_GPU_SIGNS = ("/proc/driver/nvidia/version", "/dev/nvidiactl", "/dev/nvidia0", "/dev/dxg",
              "/dev/kfd")


def _may_have_gpu() -> bool:
    """False when this machine certainly has no GPU for torch, found out without importing
    torch (about two seconds): on Linux, none of the driver's files exist; on macOS there
    is no CUDA. Elsewhere (Windows) only torch can tell."""
    import os
    import sys

    if sys.platform.startswith("linux"):
        return any(os.path.exists(sign) for sign in _GPU_SIGNS)
    return sys.platform != "darwin"


def cuda_available() -> bool:
    """True when torch is installed and sees a CUDA device (imports torch, unless the
    machine has no GPU driver at all)."""
    if not _may_have_gpu():
        return False
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return False
    return bool(torch.cuda.is_available())


def resolve_device(device: str, supported: tuple[str, ...], method: str, *,
                   auto_cuda: bool = True) -> str:
    """The concrete device ('cpu' or 'cuda') a method runs on.

    ``auto`` takes CUDA when the method supports it (and ``auto_cuda``: it wants the GPU
    unasked) and a GPU is present, else the CPU;
    an explicit ``cuda`` that cannot be honoured is an error, never a silent fallback.
    Torch is imported only to answer whether CUDA is present, and only for methods
    that can use it.
    """
    if device not in DEVICES:
        raise MfifError(f"unknown device {device!r}; choose one of: {', '.join(DEVICES)}")
    if device == "cpu":
        return "cpu"
    if device == "auto":
        return "cuda" if auto_cuda and "cuda" in supported and cuda_available() else "cpu"
    if "cuda" not in supported:
        raise MfifError(
            f"method {method!r} runs on the CPU only; use device 'cpu' or 'auto'"
        )
    if not cuda_available():
        raise MfifError("device 'cuda' was asked for but no CUDA GPU is available to torch")
    return "cuda"


def cuda_name() -> str | None:
    """The name of the first CUDA device torch sees, or None (imports torch)."""
    if not cuda_available():
        return None
    import torch

    return str(torch.cuda.get_device_name(0))


def release(device: str) -> None:
    """Hand cached GPU memory back to the driver after a run on ``device`` ends or is
    cancelled, so that napari's other GPU users (and the next run) get it."""
    if device != "cuda":
        return
    import sys

    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()
