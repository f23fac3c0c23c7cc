"""Tiled, overlap-blended prediction of images of any size, with uncertainty maps.

An image is cut into tiles of ``tile_size`` (overlapping by ``overlap`` pixels), tiles are
predicted in batches, and the per-tile probabilities and uncertainty maps are blended with a
weight that ramps down towards the tile borders, where a convolutional network sees the least
context. Peak memory therefore depends on the tile and batch size, not on the image size
(apart from the output arrays themselves).

Stochastic predictions (MC dropout, test-time augmentation, an ensemble) produce T samples per
tile; the uncertainty maps are computed per tile from those samples (:func:`uncertainty.compute_maps`)
and blended like the probabilities, so T full-size probability maps never exist at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from . import uncertainty as unc
from .config import InferenceConfig
from .device import autocast, choose_device, empty_cache, is_oom, to_device
from .progress import run_to_end

MODES = ("single", "mc", "tta", "ensemble")
# maps that are a disagreement between samples, named after the source of the samples
_DISAGREEMENT_ALIASES = {"tta": "tta_disagreement", "ensemble": "ensemble_disagreement"}


@dataclass
class Prediction:
    """Result of :func:`predict`.

    Attributes
    ----------
    probs : (C, H, W) float32 ndarray
        Class probabilities (mean over samples for stochastic modes).
    labels : (H, W) uint8 or uint16 ndarray
        Arg-max class map.
    uncertainty : dict of str -> (H, W) float32 ndarray
        The requested maps (``entropy``, ``margin``, ``least_confidence``, ``bald``,
        ``variance``, ``expected_entropy``, ``tta``, ``ensemble``).
    seconds : float
        Wall time.
    notes : list of str
        Anything the user should know (e.g. the tile was halved after an out-of-memory error).
    """

    probs: np.ndarray
    labels: np.ndarray
    uncertainty: dict[str, np.ndarray] = field(default_factory=dict)
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class TileProgress:
    """Yielded by :func:`predict_iter` after each batch of tiles."""

    done: int
    total: int


def tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    """Start offsets along one axis so tiles of ``min(tile, size)`` cover ``[0, size)``."""
    tile = min(tile, size)
    if size <= tile:
        return [0]
    stride = tile - overlap
    starts = list(range(0, size - tile, stride))
    starts.append(size - tile)
    return starts


def blend_weights(th: int, tw: int, overlap: int) -> np.ndarray:
    """(th, tw) float32 weights: 1 inside, a linear ramp over ``overlap`` px to the borders.

    The ramp never reaches 0, so pixels on the image border (covered by one tile only) keep a
    positive weight and the normalised blend is exact there.
    """

    def ramp(n: int) -> np.ndarray:
        r = np.ones(n, np.float32)
        k = min(overlap, n // 2)
        if k > 0:
            edge = (np.arange(1, k + 1, dtype=np.float32)) / (k + 1)
            r[:k] = edge
            r[n - k:] = edge[::-1]
        return r

    return np.outer(ramp(th), ramp(tw))


def _check_input(image: np.ndarray, in_channels: int) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[None]
    if image.ndim != 3:
        raise ValueError(
            f"Expected a normalised image of shape (C, H, W) or (H, W), got {image.shape}; "
            "use core.imageio.normalize_image first."
        )
    if image.shape[0] != in_channels:
        raise ValueError(
            f"The model expects {in_channels} channel(s) but the image has {image.shape[0]} "
            f"(shape {image.shape}). Convert the image (e.g. gray -> RGB) or train a model with "
            f"in_channels={image.shape[0]}."
        )
    if image.size == 0:
        raise ValueError(f"Empty image of shape {image.shape}.")
    return np.ascontiguousarray(image, dtype=np.float32)


# --- samplers: (B, C_in, h, w) tensor -> (T, B, K, h, w) probabilities ------------------------

Sampler = Callable[[torch.Tensor], torch.Tensor]

_DIHEDRAL = [(k, flip) for flip in (False, True) for k in range(4)]


def _single(model: nn.Module) -> Sampler:
    return lambda x: torch.softmax(model(x).float(), dim=1).unsqueeze(0)


def _mc(model: nn.Module, samples: int, seed: int | None = 0) -> Sampler:
    if not hasattr(model, "mc_forward"):
        raise ValueError("MC-dropout sampling needs a model with mc_forward (core.model.UNet).")
    # one set of masks for every tile (and, with a seed, every image): see UNet.head_masks
    masks = model.head_masks(samples, seed) if hasattr(model, "head_masks") else None
    if masks is not None:
        return lambda x: torch.softmax(model.mc_forward(x, samples, masks=masks).float(), dim=2)
    if seed is None:
        return lambda x: torch.softmax(model.mc_forward(x, samples).float(), dim=2)

    def seeded(x: torch.Tensor) -> torch.Tensor:
        # dropout elsewhere draws from torch's global generator: seed it for each batch of
        # tiles (and put it back), so an image's samples do not depend on what ran before it
        # -- the same here and on a cluster's worker
        with torch.random.fork_rng(devices=[x.device] if x.device.type == "cuda" else []):
            torch.manual_seed(int(seed))
            return torch.softmax(model.mc_forward(x, samples).float(), dim=2)

    return seeded


def _tta(model: nn.Module) -> Sampler:
    def run(x: torch.Tensor) -> torch.Tensor:
        outs = []
        for k, flip in _DIHEDRAL:
            xt = torch.rot90(x, k, dims=(-2, -1))
            if flip:
                xt = torch.flip(xt, dims=(-1,))
            p = torch.softmax(model(xt).float(), dim=1)
            if flip:
                p = torch.flip(p, dims=(-1,))
            outs.append(torch.rot90(p, -k, dims=(-2, -1)))
        return torch.stack(outs)

    return run


def _ensemble(models: Sequence[nn.Module]) -> Sampler:
    return lambda x: torch.stack([torch.softmax(m(x).float(), dim=1) for m in models])


def _model_device(model: nn.Module) -> torch.device | None:
    p = next(model.parameters(), None)
    return p.device if p is not None else None


def _in_channels(model, default: int) -> int:
    first = model[0] if isinstance(model, list | tuple) else model
    cfg = first.config if hasattr(first, "config") else None
    return cfg.in_channels if cfg is not None else default


def _setup(model, mode: str, maps: Sequence[str], config: InferenceConfig
           ) -> tuple[Sampler, torch.device, list[str], list[str]]:
    """Checked mode and maps, the sampler, the device (models moved there, in eval mode), and
    the internal and requested map names."""
    if mode not in MODES:
        raise ValueError(f"Unknown prediction mode {mode!r}; choose one of {list(MODES)}.")
    models = list(model) if isinstance(model, list | tuple) else [model]
    if mode != "ensemble" and len(models) != 1:
        raise ValueError(f"mode={mode!r} takes one model, got {len(models)}; "
                         "use mode='ensemble' for several.")
    maps = list(maps)
    internal = [_DISAGREEMENT_ALIASES.get(m, m) for m in maps]
    valid = set(unc.MAP_NAMES) | set(_DISAGREEMENT_ALIASES)
    bad = [m for m in maps if m not in valid]
    if bad:
        raise ValueError(f"Unknown uncertainty map(s) {bad}; valid maps are {sorted(valid)}.")
    if mode == "single":
        needs_samples = [m for m in maps if m not in (*unc.MAPS_ONE_PASS, "raw_margin")]
        if needs_samples:
            raise ValueError(f"Map(s) {needs_samples} need several samples; use mode='mc', "
                             "'tta' or 'ensemble'.")

    device = _model_device(models[0]) if config.device == "auto" else None
    if device is None or (config.device == "auto" and device.type == "cpu"):
        device = choose_device(config.device)
    for m in models:
        m.to(device).eval()

    if mode == "single":
        sampler = _single(models[0])
    elif mode == "mc":
        sampler = _mc(models[0], config.mc_samples, config.mc_seed)
    elif mode == "tta":
        sampler = _tta(models[0])
    else:
        sampler = _ensemble(models)

    return sampler, device, internal, maps


def predict_iter(
    model: nn.Module | Sequence[nn.Module],
    image: np.ndarray,
    *,
    mode: str = "single",
    maps: Sequence[str] = ("entropy",),
    config: InferenceConfig | None = None,
    stop: Callable[[], bool] | None = None,
) -> Generator[TileProgress, None, Prediction | None]:
    """Predict ``image`` tile by tile, yielding progress; return the :class:`Prediction`.

    Parameters
    ----------
    model : UNet, or a sequence of models for ``mode="ensemble"``
    image : (C, H, W) or (H, W) float32 ndarray
        A normalised image (:func:`core.imageio.normalize_image`).
    mode : {"single", "mc", "tta", "ensemble"}
        How samples are drawn: one deterministic pass, ``config.mc_samples`` MC-dropout
        samples, the 8 flips/rotations, or one pass per ensemble member.
    maps : sequence of str
        Uncertainty maps to compute. One-pass maps (entropy, margin, least_confidence) work in
        every mode; the others need samples (mode != "single").
    config : InferenceConfig
    stop : callable returning bool, optional
        Checked between tile batches; when it returns True the generator returns None.
    """
    config = config or InferenceConfig()
    sampler, device, internal, maps = _setup(model, mode, maps, config)
    image = _check_input(image, _in_channels(model, np.asarray(image).shape[0]))
    t0 = time.perf_counter()
    notes: list[str] = []
    tile, batch = config.tile_size, config.batch_size
    while True:
        try:
            result = yield from _run_tiles(
                sampler, image, internal, maps, tile, config.overlap, batch, device,
                config.amp, stop,
            )
            break
        except Exception as exc:  # noqa: BLE001 - only OOM is handled, the rest re-raised
            if not is_oom(exc):
                raise
            empty_cache(device)
            if batch > 1:
                batch //= 2
                notes.append(f"Out of memory: tile batch halved to {batch}.")
            elif tile > 64:
                tile //= 2
                notes.append(f"Out of memory: tile size halved to {tile}.")
            else:
                raise MemoryError(
                    f"Out of memory on {device} even with one {tile}x{tile} tile; "
                    "close other programs or use device='cpu'."
                ) from exc
    if result is None:
        return None
    probs, out_maps = result
    k = probs.shape[0]
    labels = probs.argmax(axis=0).astype(np.uint8 if k <= 256 else np.uint16)
    return Prediction(probs, labels, out_maps, time.perf_counter() - t0, notes)


def _tile_grid(height: int, width: int, tile: int, overlap: int):
    """Tile size, row-major tile origins and the blend weight (ones for a single tile)."""
    th, tw = min(tile, height), min(tile, width)
    ov = min(overlap, th // 2 - 1 if th > 2 else 0, tw // 2 - 1 if tw > 2 else 0)
    ov = max(ov, 0)
    ys, xs = tile_starts(height, th, ov), tile_starts(width, tw, ov)
    coords = [(y, x) for y in ys for x in xs]
    weight = torch.from_numpy(blend_weights(th, tw, ov if len(coords) > 1 else 0))
    return th, tw, coords, weight


def _predict_batch(sampler: Sampler, tiles: list[torch.Tensor], uniq: list[str],
                   device: torch.device, amp: bool) -> tuple[torch.Tensor, dict]:
    """Mean probabilities (B, K, h, w) and maps {name: (B, h, w)} of a batch of tiles."""
    # inference mode only around the compute: a generator must not leave it switched on
    # for its consumer between yields
    with torch.inference_mode():
        # channels-last input: oneDNN/cuDNN convolutions run ~2x faster on it (CPU here:
        # batch 4 x 512² 754 -> 373 ms, same output to 4e-6)
        # on CUDA through pinned memory, without blocking; on the CPU the tiles themselves
        x = to_device(torch.stack(tiles), device).contiguous(memory_format=torch.channels_last)
        with autocast(device, amp):
            samples = sampler(x)  # (T, B, K, th, tw)
        samples = samples.float()
        mean = samples.mean(dim=0).cpu()
        computed = {k: v.cpu() for k, v in unc.compute_maps(samples, uniq).items()} \
            if uniq else {}
        del samples
    return mean, computed


def _run_tiles(
    sampler: Sampler,
    image: np.ndarray,
    internal: list[str],
    names: list[str],
    tile: int,
    overlap: int,
    batch: int,
    device: torch.device,
    amp: bool,
    stop: Callable[[], bool] | None,
) -> Generator[TileProgress, None, tuple[np.ndarray, dict[str, np.ndarray]] | None]:
    _, height, width = image.shape
    th, tw, coords, weight = _tile_grid(height, width, tile, overlap)
    single_tile = len(coords) == 1

    probs_acc: torch.Tensor | None = None
    maps_acc = {n: torch.zeros(height, width) for n in names}
    wsum = torch.zeros(height, width)
    src = torch.from_numpy(image)
    uniq = list(dict.fromkeys(internal))
    total = len(coords)
    for b0 in range(0, total, batch):
        if stop is not None and stop():
            return None
        chunk = coords[b0:b0 + batch]
        mean, computed = _predict_batch(
            sampler, [src[:, y:y + th, x0:x0 + tw] for y, x0 in chunk], uniq, device, amp)
        if probs_acc is None:
            probs_acc = torch.zeros(mean.shape[1], height, width)
        for i, (y, x0) in enumerate(chunk):
            if single_tile:
                probs_acc[:, y:y + th, x0:x0 + tw] = mean[i]
                for n, key in zip(names, internal, strict=True):
                    maps_acc[n][y:y + th, x0:x0 + tw] = computed[key][i]
                wsum[y:y + th, x0:x0 + tw] = 1.0
                continue
            probs_acc[:, y:y + th, x0:x0 + tw] += mean[i] * weight
            for n, key in zip(names, internal, strict=True):
                maps_acc[n][y:y + th, x0:x0 + tw] += computed[key][i] * weight
            wsum[y:y + th, x0:x0 + tw] += weight
        yield TileProgress(min(b0 + batch, total), total)
    assert probs_acc is not None
    if not single_tile:
        probs_acc /= wsum
        for n in names:
            maps_acc[n] /= wsum
    return probs_acc.numpy(), {n: v.numpy() for n, v in maps_acc.items()}


@dataclass(frozen=True)
class RowBand:
    """Rows ``[y0, y1)`` of a prediction, final (yielded by :func:`predict_rows`)."""

    y0: int
    y1: int
    probs: np.ndarray  # (K, y1 - y0, W) float32
    maps: dict[str, np.ndarray]  # name -> (y1 - y0, W) float32


def predict_rows(
    model: nn.Module | Sequence[nn.Module],
    source: Any,
    *,
    mode: str = "single",
    maps: Sequence[str] = ("entropy",),
    config: InferenceConfig | None = None,
    stop: Callable[[], bool] | None = None,
) -> Generator[RowBand | TileProgress, None, bool]:
    """Predict an image too large to hold, yielding its rows as they become final.

    ``source`` has a ``shape`` ``(C, H, W)`` and ``rows(y0, y1)`` giving the prepared
    ``(C, y1 - y0, W)`` float32 rows (:class:`.largeimage.LazyPrepared`). The tiles, their
    batches and the blending are those of :func:`predict_iter`, so each band equals the same
    rows of its output exactly; only a strip of tiles (input and accumulators) is held at a
    time. Yields :class:`RowBand` (top to bottom, covering the image) and
    :class:`TileProgress`; returns False when ``stop`` ended it. No out-of-memory retry.
    """
    config = config or InferenceConfig()
    sampler, device, internal, maps = _setup(model, mode, maps, config)
    c, height, width = (int(v) for v in source.shape)
    if c != _in_channels(model, c):
        raise ValueError(f"The model expects {_in_channels(model, c)} channel(s) but the image "
                         f"has {c}.")
    th, tw, coords, weight = _tile_grid(height, width, config.tile_size, config.overlap)
    uniq = list(dict.fromkeys(internal))
    inputs: dict[int, torch.Tensor] = {}  # tile row y -> its prepared input strip
    lo = 0  # accumulators hold rows [lo, lo + len)
    probs_acc: torch.Tensor | None = None
    maps_acc = {n: torch.zeros(0, width) for n in maps}
    wsum = torch.zeros(0, width)
    total, batch = len(coords), config.batch_size
    for b0 in range(0, total, batch):
        if stop is not None and stop():
            return False
        chunk = coords[b0:b0 + batch]
        for y in dict.fromkeys(y for y, _ in chunk):
            if y not in inputs:
                inputs[y] = torch.from_numpy(np.ascontiguousarray(
                    source.rows(y, y + th), dtype=np.float32))
        mean, computed = _predict_batch(
            sampler, [inputs[y][:, :, x0:x0 + tw] for y, x0 in chunk], uniq, device, amp=config.amp)
        grow = chunk[-1][0] + th - lo - wsum.shape[0]
        if probs_acc is None:
            probs_acc = torch.zeros(mean.shape[1], 0, width)
        if grow > 0:
            probs_acc = torch.cat([probs_acc, torch.zeros(probs_acc.shape[0], grow, width)], 1)
            maps_acc = {n: torch.cat([v, torch.zeros(grow, width)]) for n, v in maps_acc.items()}
            wsum = torch.cat([wsum, torch.zeros(grow, width)])
        for i, (y, x0) in enumerate(chunk):
            r = y - lo
            probs_acc[:, r:r + th, x0:x0 + tw] += mean[i] * weight
            for n, key in zip(maps, internal, strict=True):
                maps_acc[n][r:r + th, x0:x0 + tw] += computed[key][i] * weight
            wsum[r:r + th, x0:x0 + tw] += weight
        yield TileProgress(min(b0 + batch, total), total)
        done_to = coords[b0 + batch][0] if b0 + batch < total else height
        for y in [y for y in inputs if y < done_to]:
            del inputs[y]
        n = done_to - lo
        if n > 0:
            w = wsum[:n]
            yield RowBand(lo, done_to, (probs_acc[:, :n] / w).numpy(),
                          {k: (v[:n] / w).numpy() for k, v in maps_acc.items()})
            probs_acc, wsum = probs_acc[:, n:].clone(), wsum[n:].clone()
            maps_acc = {k: v[n:].clone() for k, v in maps_acc.items()}
            lo = done_to
    return True


def predict(
    model: nn.Module | Sequence[nn.Module],
    image: np.ndarray,
    *,
    mode: str = "single",
    maps: Sequence[str] = ("entropy",),
    config: InferenceConfig | None = None,
) -> Prediction:
    """Predict ``image`` (see :func:`predict_iter`, which this runs to the end)."""
    return run_to_end(predict_iter(model, image, mode=mode, maps=maps, config=config))
