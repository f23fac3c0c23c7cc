"""Device choice (CUDA, then Apple MPS, then CPU), the defaults each device gets, mixed
precision, pinned host-to-device copies and out-of-memory detection.

The same code runs on every device; only :func:`device_plan`'s numbers differ. On CUDA the
defaults grow with the free memory (a wider U-Net, larger batches: a GPU is held back by small
ones, a CPU by the step count); :func:`plan_for_memory` is the decision, a pure function of
the free bytes, so it is tested on a CPU-only machine.
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass

import numpy as np
import torch

from .config import InferenceConfig, ModelConfig, TrainConfig

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


def pin_memory(device: torch.device) -> bool:
    """Whether host batches bound for ``device`` go through pinned (page-locked) memory: on
    CUDA, so the copy runs asynchronously (``non_blocking``); never on the CPU."""
    return device.type == "cuda"


def to_device(x: np.ndarray | torch.Tensor, device: torch.device) -> torch.Tensor:
    """A batch on ``device``: on the CPU the array itself (no copy); on CUDA copied from
    pinned memory without blocking; elsewhere an ordinary copy."""
    t = torch.from_numpy(x) if isinstance(x, np.ndarray) else x
    if device.type == "cpu":
        return t
    if pin_memory(device):
        t = t.pin_memory()
    return t.to(device, non_blocking=True)


# the CPU defaults are the configurations' own (measured on a 2-core CPU, see the README)
_CPU_WIDTH, _CPU_BATCH = ModelConfig.width, TrainConfig.batch_size
_CPU_TILE_BATCH = InferenceConfig.batch_size
# bytes one 128x128 training patch needs per unit of U-Net width: the leaf layers' outputs
# (about 24 * width * pixels values at depth 3), kept in float32 for the backward pass and as
# much again for the gradients
_TRAIN_BYTES_PER_WIDTH_PIXEL = 24 * 4 * 2
_MAX_TRAIN_BATCH, _MAX_TILE_BATCH = 64, 16


@dataclass(frozen=True)
class DevicePlan:
    """What a device gets by default: the U-Net ``width``, the training ``batch_size``, the
    inference ``tile_batch``, mixed precision (``amp``) and pinned copies (``pin_memory``);
    ``name`` and ``free_mb`` describe the device (None on a CPU)."""

    device: str
    name: str
    width: int
    batch_size: int
    tile_batch: int
    amp: bool
    pin_memory: bool
    free_mb: int | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def train_bytes(width: int, batch: int, patch_size: int = 128) -> int:
    """Estimated GPU bytes of a training step's activations and their gradients."""
    return _TRAIN_BYTES_PER_WIDTH_PIXEL * width * patch_size**2 * batch


def plan_for_memory(free_bytes: int, *, patch_size: int = 128, name: str = "cuda"
                    ) -> DevicePlan:
    """The CUDA plan for a GPU with ``free_bytes`` free: width 32 from 4 GiB free (16 from
    2 GiB, else the CPU's 8), then the largest power-of-two batch up to 64 whose step
    (:func:`train_bytes`) takes at most half of the free memory (the rest: cuDNN workspaces,
    the optimiser, other programs); inference batches 16 tiles from 8 GiB free, 8 from
    4 GiB. A batch that still runs out of memory is halved by the training loop."""
    gib = 2**30
    width = 32 if free_bytes >= 4 * gib else 16 if free_bytes >= 2 * gib else _CPU_WIDTH
    budget = free_bytes // 2
    batch = _MAX_TRAIN_BATCH
    while batch > 1 and train_bytes(width, batch, patch_size) > budget:
        batch //= 2
    tiles = _MAX_TILE_BATCH if free_bytes >= 8 * gib else 8 if free_bytes >= 4 * gib \
        else _CPU_TILE_BATCH
    return DevicePlan("cuda", name, width, batch, tiles, amp=True, pin_memory=True,
                      free_mb=int(free_bytes // 2**20))


def device_plan(device: str | torch.device = "auto") -> DevicePlan:
    """The defaults for ``device`` on this machine: the CPU's configuration defaults on a CPU
    (or MPS), :func:`plan_for_memory` of the free memory (``torch.cuda.mem_get_info``) on
    CUDA."""
    dev = choose_device(device)
    if dev.type == "cuda":
        free, _total = torch.cuda.mem_get_info(dev)
        return plan_for_memory(free, name=torch.cuda.get_device_name(dev))
    name = "CPU" if dev.type == "cpu" else dev.type.upper()
    return DevicePlan(dev.type, f"{name} ({torch.get_num_threads()} threads)"
                      if dev.type == "cpu" else name, _CPU_WIDTH, _CPU_BATCH, _CPU_TILE_BATCH,
                      amp=False, pin_memory=False)
