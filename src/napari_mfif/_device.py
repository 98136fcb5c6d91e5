"""Choosing the compute device without importing torch unless it matters."""

from __future__ import annotations

from ._errors import MfifError

DEVICES = ("auto", "cpu", "cuda")


def cuda_available() -> bool:
    """True when torch is installed and sees a CUDA device (imports torch)."""
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return False
    return bool(torch.cuda.is_available())


def resolve_device(device: str, supported: tuple[str, ...], method: str) -> str:
    """The concrete device ('cpu' or 'cuda') a method runs on.

    ``auto`` takes CUDA when the method supports it and a GPU is present, else the CPU;
    an explicit ``cuda`` that cannot be honoured is an error, never a silent fallback.
    Torch is imported only to answer whether CUDA is present, and only for methods
    that can use it.
    """
    if device not in DEVICES:
        raise MfifError(f"unknown device {device!r}; choose one of: {', '.join(DEVICES)}")
    if device == "cpu":
        return "cpu"
    if device == "auto":
        return "cuda" if "cuda" in supported and cuda_available() else "cpu"
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
