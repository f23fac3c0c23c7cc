"""Self-supervised warm-up on the pool before the first label (issue 16, item 3).

The network learns to fill in masked blocks of the project's own (prepared) images: a
random half of the 8 px blocks of each crop is replaced by the crop's mean, and a temporary
1x1 head on the U-Net's last decoder features is trained to reconstruct the original pixels
there (mean squared error over the masked pixels, per channel in units of the crop's variance,
so dim and bright images weigh alike). The skip connections cannot copy a masked pixel, so the
encoder and decoder must learn the images' texture and shapes from context -- the sort of
features the first labels then only have to name. The temporary head is dropped; the class
head keeps its initialisation. Masked image modelling for convolutional networks: SparK
(Tian et al. 2023), ConvNeXt V2 (Woo et al. 2023); as a warm-up for segmentation with few
labels, e.g. Chen et al. 2019 (context restoration).

Nothing here touches a project: :func:`pretrain` takes arrays and returns a state dict that
:meth:`~napari_activeseg.core.training.Trainer.fit` takes as ``init_state``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .config import ModelConfig

__all__ = ["PretrainResult", "mask_blocks", "pretrain"]

#: Side of a masked block in pixels and the share of blocks masked.
BLOCK = 8
MASK_RATIO = 0.5


@dataclass
class PretrainResult:
    """What :func:`pretrain` returns: the U-Net's weights (class head untouched), its steps,
    seconds and loss history (masked-pixel error in units of each crop's variance)."""

    state_dict: dict[str, Any]
    steps: int
    seconds: float
    history: list[float] = field(default_factory=list)


def mask_blocks(shape: tuple[int, int], rng: np.random.Generator, *, block: int = BLOCK,
                ratio: float = MASK_RATIO) -> np.ndarray:
    """A (H, W) bool mask of whole ``block``-px blocks, each drawn masked with ``ratio``."""
    h, w = shape
    grid = rng.random((-(-h // block), -(-w // block))) < ratio
    return np.repeat(np.repeat(grid, block, 0), block, 1)[:h, :w]


def _crops(images: Sequence[np.ndarray], size: int, n: int, rng: np.random.Generator
           ) -> np.ndarray:
    """``n`` random (C, size, size) crops, flipped and rotated at random (images smaller than
    ``size`` are reflect-padded)."""
    out = []
    for _ in range(n):
        img = images[int(rng.integers(len(images)))]
        c, h, w = img.shape
        if h < size or w < size:
            img = np.pad(img, ((0, 0), (0, max(0, size - h)), (0, max(0, size - w))),
                         mode="reflect" if min(h, w) > 1 else "edge")
            h, w = img.shape[1:]
        y, x = int(rng.integers(h - size + 1)), int(rng.integers(w - size + 1))
        crop = img[:, y:y + size, x:x + size]
        if rng.random() < 0.5:
            crop = crop[:, :, ::-1]
        crop = np.rot90(crop, int(rng.integers(4)), axes=(1, 2))
        out.append(np.ascontiguousarray(crop, dtype=np.float32))
    return np.stack(out)


def pretrain(model_config: ModelConfig, images: Sequence[np.ndarray], *, steps: int = 200,
             patch_size: int = 128, batch_size: int = 16, lr: float = 3e-3, seed: int = 0,
             device: Any = "cpu", num_threads: int | None = None, keep: str = "all",
             stop: threading.Event | None = None) -> PretrainResult:
    """Masked-block reconstruction of ``images`` (prepared, (C, H, W) float) for ``steps``.

    Returns the weights of a :class:`~napari_activeseg.core.model.UNet` of ``model_config``
    (its class head as initialised), for a first round to start from. ``stop`` set ends it
    early (the weights so far are returned). ``keep="encoder"``: only the encoder and the
    bottleneck keep what they learnt (the decoder as initialised).
    """
    import torch

    from .device import choose_device
    from .model import UNet

    if not images:
        raise ValueError("Nothing to pre-train on: the pool has no image.")
    if any(np.asarray(im).ndim != 3 or im.shape[0] != model_config.in_channels
           for im in images):
        raise ValueError(f"pretrain takes prepared (C, H, W) images with C = "
                         f"{model_config.in_channels}.")
    if num_threads:
        torch.set_num_threads(int(num_threads))
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    dev = choose_device(device)
    smallest = min(min(im.shape[1:]) for im in images)
    m = model_config.multiple
    size = max(m, min(patch_size, smallest) // m * m)
    # channels-last, as training runs (its convolutions are ~1.7x faster on a CPU)
    net = UNet(model_config).to(dev, memory_format=torch.channels_last).train()
    head = torch.nn.Conv2d(model_config.width, model_config.in_channels, 1).to(
        dev, memory_format=torch.channels_last)
    params = [p for name, p in net.named_parameters() if not name.startswith("head.")]
    opt = torch.optim.AdamW([*params, *head.parameters()], lr=lr, weight_decay=1e-4)
    init = {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}
    history: list[float] = []
    t0 = time.perf_counter()
    step = 0
    for step in range(1, steps + 1):
        if stop is not None and stop.is_set():
            step -= 1
            break
        for g in opt.param_groups:  # short warm-up, then cosine decay
            frac = step / steps
            g["lr"] = lr * min(1.0, frac / 0.05) * 0.5 * (1 + np.cos(np.pi * frac))
        x = _crops(images, size, batch_size, rng)
        masks = np.stack([mask_blocks(x.shape[-2:], rng) for _ in range(len(x))])
        fill = x.mean(axis=(2, 3), keepdims=True)
        scale = x.var(axis=(2, 3), keepdims=True) + 1e-3
        x_in = np.where(masks[:, None], fill, x)
        xt = torch.from_numpy(x_in).to(dev).contiguous(memory_format=torch.channels_last)
        target = torch.from_numpy(x).to(dev)
        mt = torch.from_numpy(masks[:, None].astype(np.float32)).to(dev)
        st = torch.from_numpy(scale.astype(np.float32)).to(dev)
        out = head(net.forward_with_features(xt)[1])
        err = (out - target) ** 2 / st * mt
        loss = err.sum() / (mt.sum() * model_config.in_channels).clamp(min=1.0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        history.append(float(loss.detach()))
    state = {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}
    if keep == "encoder":
        state = {k: v if k.startswith(("encoders.", "bottleneck.")) else init[k]
                 for k, v in state.items()}
    return PretrainResult(state, step, time.perf_counter() - t0, history)
