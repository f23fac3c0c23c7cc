"""Per-image vectors for the diversity-based strategies: gradient embeddings and descriptors.

Gradient embedding (BADGE, Ash et al. 2020; ALGES, 2022). The 1x1 head maps the last feature
map ``f (D, H, W)`` to logits; with the predicted label ``y = onehot(argmax p)`` taken as truth,
the gradient of the pixel's cross-entropy w.r.t. the head weights ``W (K, D)`` is the outer
product ``(p - y) ⊗ f``, of norm ``||p - y|| * ||f||``. The image embedding is the gradient of
the mean loss, i.e. the mean of the outer products over pixels, computed as one
``einsum("khw,dhw->kd")`` per tile (no per-pixel outer product is ever stored).

Both functions run tile by tile under ``torch.inference_mode`` with the model in eval mode, so
memory depends on the tile size, not on the image size.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..validation import check_positive

__all__ = ["gradient_embedding", "image_descriptor"]


def _as_chw(image: np.ndarray, model: nn.Module) -> np.ndarray:
    img = np.asarray(image, dtype=np.float32)
    if img.ndim == 2:
        img = img[None]
    if img.ndim != 3 or img.size == 0:
        raise ValueError(f"Expected a normalised (C, H, W) or (H, W) image, got shape "
                         f"{np.shape(image)}.")
    cfg = getattr(model, "config", None)
    if cfg is not None and img.shape[0] != cfg.in_channels:
        raise ValueError(f"The model expects {cfg.in_channels} channel(s), the image has "
                         f"{img.shape[0]} (shape {img.shape}).")
    return np.ascontiguousarray(img)


def _grid(length: int, tile: int) -> list[tuple[int, int]]:
    return [(s, min(s + tile, length)) for s in range(0, length, tile)]


def _device(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


class _EvalMode:
    """Eval mode (BatchNorm statistics, no dropout) for the block; restores the mode after."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    def __enter__(self) -> nn.Module:
        self.training = self.model.training
        self.mc = getattr(self.model, "mc_dropout", None)
        self.model.eval()
        if self.mc is not None:
            self.model.mc_dropout = False
        return self.model

    def __exit__(self, *exc) -> None:
        self.model.train(self.training)
        if self.mc is not None:
            self.model.mc_dropout = self.mc


def gradient_embedding(
    model: nn.Module, image: np.ndarray, *, tile_size: int = 256, halo: int = 16
) -> tuple[np.ndarray, np.ndarray]:
    """Last-layer gradient embedding of an image and its per-pixel gradient-norm map.

    Parameters
    ----------
    model : core.model.UNet
        Any model with ``forward_with_features(x) -> (logits (N, K, H, W), feats (N, D, H, W))``
        where ``logits = head(feats)`` is a 1x1 convolution.
    image : (C, H, W) or (H, W) float32 ndarray
        Normalised image.
    tile_size : int
        Core size of the tiles the image is processed in (bounds the memory).
    halo : int
        Context added around each tile and cropped away, so tile seams do not show.

    Returns
    -------
    embedding : (K * D,) float32 ndarray
        ``mean over pixels of (p - onehot(argmax p)) ⊗ f``, class-major (``W.grad.ravel()``).
    grad_norm : (H, W) float32 ndarray
        Per-pixel ``||p - y|| * ||f||``: the norm of each pixel's gradient (ALGES).
    """
    img = _as_chw(image, model)
    tile = check_positive(tile_size, name="tile_size", integer=True)
    halo = check_positive(halo, name="halo", allow_zero=True, integer=True)
    _, h, w = img.shape
    device = _device(model)
    grad_norm = np.empty((h, w), np.float32)
    acc: torch.Tensor | None = None  # (K, D) float64
    src = torch.from_numpy(img)
    with _EvalMode(model), torch.inference_mode():
        for y0, y1 in _grid(h, tile):
            for x0, x1 in _grid(w, tile):
                py0, px0 = max(0, y0 - halo), max(0, x0 - halo)
                py1, px1 = min(h, y1 + halo), min(w, x1 + halo)
                x = src[:, py0:py1, px0:px1][None].to(device)
                logits, feats = model.forward_with_features(x)
                sl = (slice(y0 - py0, y1 - py0), slice(x0 - px0, x1 - px0))
                p = torch.softmax(logits[0].float(), dim=0)[:, sl[0], sl[1]]  # (K, h, w)
                f = feats[0].float()[:, sl[0], sl[1]]  # (D, h, w)
                k = p.shape[0]
                r = p - F.one_hot(p.argmax(0), k).permute(2, 0, 1).to(p.dtype)  # (K, h, w)
                part = torch.einsum("khw,dhw->kd", r, f).double()  # (K, D)
                acc = part if acc is None else acc + part
                grad_norm[y0:y1, x0:x1] = (r.norm(dim=0) * f.norm(dim=0)).cpu().numpy()
    assert acc is not None
    emb = (acc / float(h * w)).reshape(-1).float().cpu().numpy()
    return emb, grad_norm


def image_descriptor(model: nn.Module, image: np.ndarray, *, tile_size: int = 512) -> np.ndarray:
    """Global-average-pooled bottleneck features of an image.

    Parameters
    ----------
    model : core.model.UNet
        Any model with ``features(x) -> (N, D)``.
    image : (C, H, W) or (H, W) float32 ndarray
    tile_size : int
        Large images are cut into tiles of at most this size; the descriptor is the
        area-weighted mean of the tiles' pooled features (scale stays that of training).

    Returns
    -------
    (D,) float32 ndarray
    """
    img = _as_chw(image, model)
    tile = check_positive(tile_size, name="tile_size", integer=True)
    _, h, w = img.shape
    device = _device(model)
    acc = None
    src = torch.from_numpy(img)
    with _EvalMode(model), torch.inference_mode():
        for y0, y1 in _grid(h, tile):
            for x0, x1 in _grid(w, tile):
                x = src[:, y0:y1, x0:x1][None].to(device)
                v = model.features(x)[0].double() * ((y1 - y0) * (x1 - x0))  # (D,)
                acc = v if acc is None else acc + v
    assert acc is not None
    return (acc / float(h * w)).float().cpu().numpy()
