"""Device choice (CUDA, then Apple MPS, then CPU), mixed precision and out-of-memory detection."""

from __future__ import annotations

import contextlib

import torch

DEVICES = ("auto", "cpu", "cuda", "mps")


def choose_device(device: str | torch.device = "auto") -> torch.device:
    """Resolve ``"auto"`` to CUDA, then MPS, then CPU; check an explicit choice exists.

    Raises
    ------
    ValueError
        If the name is unknown or the requested device is not available on this machine.
    """
    if isinstance(device, torch.device):
        return device
    name = str(device).lower()
    base = name.split(":")[0]
    if base not in DEVICES:
        raise ValueError(f"Unknown device {device!r}; choose one of {list(DEVICES)} "
                         "(or 'cuda:N').")
    if base == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if base == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' was requested but no CUDA GPU is available here; "
                         "use device='auto' or 'cpu'.")
    if base == "mps" and not (getattr(torch.backends, "mps", None) is not None
                              and torch.backends.mps.is_available()):
        raise ValueError("device='mps' was requested but Apple MPS is not available here; "
                         "use device='auto' or 'cpu'.")
    return torch.device(name)


def autocast(device: torch.device, enabled: bool = True):
    """Mixed precision (float16) on CUDA when enabled; a no-op context elsewhere.

    On CPU, bfloat16 autocast is slower than float32 for these small convolutions, and MPS
    autocast support varies, so only CUDA uses it.
    """
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    return contextlib.nullcontext()


def is_oom(exc: BaseException) -> bool:
    """True when ``exc`` is an out-of-memory error from any torch backend."""
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError | MemoryError) and "out of memory" in str(exc).lower()


def empty_cache(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
    elif device.type == "mps" and hasattr(torch, "mps"):
        torch.mps.empty_cache()
