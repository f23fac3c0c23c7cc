"""Training rounds as a generator of progress records.

``Trainer.fit`` is a generator: it yields a :class:`TrainProgress` after every optimiser step
and returns a :class:`TrainResult` (``result = yield from trainer.fit(...)``, or
:func:`~napari_activeseg.core.progress.run_to_end`). The napari widget wraps it in a thread
worker, the CLI in a progress bar; neither holds training logic of its own.
:meth:`Trainer.request_stop` (thread-safe) ends the round after the step under way, and the
result still holds the best weights seen so far.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
import torch

from .config import ModelConfig, TrainConfig
from .consistency import ConsistencyTerm
from .device import autocast, choose_device, empty_cache, is_oom, to_device
from .instances import distance_target, fold_labels
from .losses import dice_score, distance_loss, segmentation_loss
from .model import UNet

# at most this many candidate crop centres are kept per image (bounded memory on huge images)
_MAX_CENTRES = 200_000
#: the largest weight :func:`auto_class_weights` gives a class (a class seen in a handful of
#: pixels must not drown the others)
MAX_AUTO_CLASS_WEIGHT = 10.0
#: patches :func:`auto_class_weights` draws to measure the class shares
_WEIGHT_PATCHES = 64
#: crops :func:`calibrate_logit_bias` predicts when there is no held-back image, the pixels
#: it fits on at most, the logit shifts it tries, and the Dice gain a shift must bring
_CALIB_CROPS = 16
_CALIB_PIXELS = 262_144
_CALIB_GRID = np.round(np.linspace(-4.0, 4.0, 33), 6)
_CALIB_MIN_GAIN = 0.01


@dataclass(frozen=True)
class TrainProgress:
    """One step of a training round.

    ``fraction`` is the share of the round's budget (steps or seconds, whichever binds) used so
    far; ``eta_s`` the estimated seconds left. ``val_dice`` is set on validation steps only.
    """

    step: int
    fraction: float
    epoch: float
    loss: float
    loss_smooth: float
    lr: float
    patches_per_s: float
    elapsed_s: float
    eta_s: float | None
    val_dice: float | None = None
    best_val_dice: float | None = None
    message: str = ""


@dataclass
class TrainResult:
    """What a finished (or stopped) round produced."""

    state_dict: dict[str, torch.Tensor]
    model_config: ModelConfig
    train_config: TrainConfig
    steps: int
    seconds: float
    stop_reason: str  # "budget", "early_stopping", "stop_requested"
    best_val_dice: float | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    n_train_images: int = 0
    n_val_images: int = 0
    #: the class weights the loss used (None: unweighted)
    class_weights: tuple[float, ...] | None = None
    #: the shift added to each class's logit after the round (None: not calibrated; see
    #: :func:`calibrate_logit_bias`), already in ``state_dict``
    logit_bias: tuple[float, ...] | None = None
    #: what the calibration saw (:func:`fit_logit_bias`'s ``info``), None when not calibrated
    calibration: dict[str, Any] | None = None

    def build_model(self) -> UNet:
        model = UNet(self.model_config)
        model.load_state_dict(self.state_dict)
        return model.eval()


class _PatchSampler:
    """Random crops weighted towards reviewed (labelled) pixels, with augmentation."""

    def __init__(
        self,
        images: Sequence[np.ndarray],
        labels: Sequence[np.ndarray],
        reviewed: Sequence[np.ndarray | None],
        cfg: TrainConfig,
        rng: np.random.Generator,
        focus: Sequence[np.ndarray | None] | None = None,
    ) -> None:
        self.images, self.labels, self.cfg, self.rng = images, labels, cfg, rng
        self.reviewed: list[np.ndarray | None] = []
        self.centres: list[np.ndarray] = []
        self.fg_centres: list[np.ndarray] = []
        self.focus_centres: list[np.ndarray] = []
        counts, focus_counts = [], []
        focus = list(focus) if focus is not None else [None] * len(labels)
        for lab, rev, foc in zip(labels, reviewed, focus, strict=True):
            if rev is not None and rev.all():
                rev = None
            self.reviewed.append(rev)
            valid = np.ones(lab.shape, bool) if rev is None else rev
            n_valid = int(valid.sum())
            counts.append(n_valid)
            self.centres.append(self._subsample(np.flatnonzero(valid)))
            self.fg_centres.append(self._subsample(np.flatnonzero(valid & (lab > 0))))
            hard = np.flatnonzero(valid & foc) if foc is not None and foc.shape == lab.shape \
                else np.empty(0, np.int64)
            focus_counts.append(int(hard.size))
            self.focus_centres.append(self._subsample(hard))
        n_focus = sum(focus_counts)
        self.p_focus = np.asarray(focus_counts, float) / n_focus if n_focus else None
        total = sum(counts)
        if total == 0:
            raise ValueError("No reviewed pixel in any training image: review (label) at least "
                             "part of one image before training.")
        # images are picked in proportion to (reviewed area) ** area_exponent: 1 gives every
        # reviewed pixel the same chance whatever the image sizes; lower keeps a few huge
        # images from taking most of the patches of a pool of small ones
        w = np.asarray(counts, float) ** cfg.area_exponent
        w[np.asarray(counts) == 0] = 0.0
        self.p_image = w / w.sum()
        self.total_pixels = total

    def _subsample(self, idx: np.ndarray) -> np.ndarray:
        if idx.size > _MAX_CENTRES:
            idx = np.sort(self.rng.choice(idx, _MAX_CENTRES, replace=False))
        return idx

    def batch(self, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        ps = self.cfg.patch_size
        c = self.images[0].shape[0]
        x = np.empty((n, c, ps, ps), np.float32)
        y = np.zeros((n, ps, ps), np.int64)
        ign = np.ones((n, ps, ps), bool)
        for b in range(n):
            if self.p_focus is not None and self.rng.random() < self.cfg.focus_p:
                # a pixel the previous model got wrong or was unsure of
                i = int(self.rng.choice(len(self.images), p=self.p_focus))
                pool = self.focus_centres[i]
            else:
                i = int(self.rng.choice(len(self.images), p=self.p_image))
                pool = self.fg_centres[i]
                if pool.size == 0 or self.rng.random() >= self.cfg.foreground_p:
                    pool = self.centres[i]
            centre = int(pool[self.rng.integers(pool.size)])
            xi, yi, ii = self._crop(i, centre)
            x[b], y[b], ign[b] = self._augment(xi, yi, ii)
        return x, y, ign

    def _crop(self, i: int, centre: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        img, lab, rev = self.images[i], self.labels[i], self.reviewed[i]
        h, w = lab.shape
        ps = self.cfg.patch_size
        cy, cx = divmod(centre, w)
        # jitter the centre so the labelled pixel is not always in the middle of the patch
        cy += int(self.rng.integers(-ps // 4, ps // 4 + 1))
        cx += int(self.rng.integers(-ps // 4, ps // 4 + 1))
        y0 = int(np.clip(cy - ps // 2, 0, max(h - ps, 0)))
        x0 = int(np.clip(cx - ps // 2, 0, max(w - ps, 0)))
        xi = img[:, y0:y0 + ps, x0:x0 + ps]
        yi = lab[y0:y0 + ps, x0:x0 + ps]
        ii = np.zeros(yi.shape, bool) if rev is None else ~rev[y0:y0 + ps, x0:x0 + ps]
        ph, pw = ps - yi.shape[0], ps - yi.shape[1]
        if ph or pw:
            # image smaller than a patch: pad, and ignore the padding in the loss
            mode = "reflect" if (ph < yi.shape[0] and pw < yi.shape[1]) else "edge"
            xi = np.pad(xi, ((0, 0), (0, ph), (0, pw)), mode=mode)
            yi = np.pad(yi, ((0, ph), (0, pw)))
            ii = np.pad(ii, ((0, ph), (0, pw)), constant_values=True)
        return xi, yi, ii

    def _augment(self, x: np.ndarray, y: np.ndarray, ign: np.ndarray):
        cfg, rng = self.cfg, self.rng
        if cfg.rot90:
            k = int(rng.integers(4))
            if k:
                x, y, ign = (np.rot90(x, k, axes=(-2, -1)), np.rot90(y, k), np.rot90(ign, k))
        if cfg.flips and rng.random() < 0.5:
            x, y, ign = x[..., ::-1], y[:, ::-1], ign[:, ::-1]
        x = np.array(x, np.float32)  # contiguous copy; the source image stays untouched
        if cfg.invert_p > 0 and rng.random() < cfg.invert_p:
            x = 1.0 - x
        if cfg.gamma_jitter > 0:
            g = float(np.exp(rng.uniform(-cfg.gamma_jitter, cfg.gamma_jitter)))
            np.clip(x, 0.0, None, out=x)
            np.power(x, g, out=x)
        if cfg.intensity_jitter > 0:
            j = cfg.intensity_jitter
            x *= rng.uniform(1 - j, 1 + j)
            x += rng.uniform(-j, j)
        return x, y, ign


def auto_class_weights(sampler: _PatchSampler, n_outputs: int, power: float, *,
                       seed: int = 0, n_patches: int = _WEIGHT_PATCHES) -> tuple[float, ...]:
    """Class weights from the classes' shares of the reviewed pixels in training patches.

    ``n_patches`` patches are drawn the way training draws them (foreground-centred ones
    included), with their own random generator so the round's patches are unchanged; class
    ``c`` with share ``f_c`` gets ``(max f / f_c) ** power``, at most
    :data:`MAX_AUTO_CLASS_WEIGHT`; a class not seen gets 1.

    Returns
    -------
    tuple of ``n_outputs`` floats >= 1
    """
    own = sampler.rng
    sampler.rng = np.random.default_rng([int(seed), 7919])
    try:
        _, y, ign = sampler.batch(int(n_patches))
    finally:
        sampler.rng = own
    counts = np.bincount(y[~ign].ravel(), minlength=n_outputs)[:n_outputs].astype(np.float64)
    if counts.sum() == 0 or power == 0:
        return (1.0,) * n_outputs
    share = counts / counts.sum()
    seen = share > 0
    w = np.ones(n_outputs)
    w[seen] = np.minimum((share.max() / share[seen]) ** float(power), MAX_AUTO_CLASS_WEIGHT)
    return tuple(float(v) for v in w)


def fit_logit_bias(logits: np.ndarray, target: np.ndarray, *, groups: np.ndarray | None = None,
                   grid=_CALIB_GRID, min_gain: float = _CALIB_MIN_GAIN, sweeps: int = 2,
                   info: dict | None = None) -> np.ndarray:
    """Per-class logit shifts that correct a class called too rarely or too often: among the
    shifts that bring no class's predicted share of the pixels further from its true share,
    the one that maximises the mean foreground Dice of ``argmax(logits + shift)`` against
    ``target`` (classes >= 1 present in either map).

    The share condition keeps the fit to what a logit shift can mend, a prior the model has
    wrong (a thin class it ranks right but never calls): a class already called as often as it
    occurs, in the wrong places, is not called more often to catch a few more of its pixels
    (on a few labelled boxes that fits the boxes, not the images).

    With ``groups`` (the crop or image each pixel comes from) the Dice is that of each group,
    averaged over the groups (as the held-back images are scored), and a shift must also
    raise the Dice of more groups than it lowers: a prior the model has wrong is wrong on most
    crops, while one crop of an image the model fails outright (a stain it has not learnt)
    pulls the mean alone. On dsb2018_nuclei a +4 nucleus shift fitted to two such held-back
    images cost the test Dice 0.868 -> 0.770 (docs/2026-12-02-calibration-groups.md).

    Coordinate search over ``grid``, every class in turn (background too: raising it is
    lowering every other class at once), ``sweeps`` passes; ties go to the smaller shift; the
    result is returned relative to background (``shift[0] == 0``, the class map unchanged).
    A result that gains less than ``min_gain`` Dice over no shift is all zeros: a model that
    already calls its classes right is left alone.

    Parameters
    ----------
    logits : (N, C) float array
    target : (N,) int array in [0, C)
    groups : (N,) int array, optional
        Group of each pixel (ids >= 0); None: one group, pooled over the pixels.
    info : dict, optional
        Filled with what the fit saw: ``dice_before``/``dice_after`` (on these pixels),
        ``true_share`` and ``pred_share`` (per class, before the shift), ``pixels``, and with
        ``groups`` ``groups`` (their count).
    """
    logits = np.asarray(logits, np.float32)
    target = np.asarray(target, np.int64)
    n, c = logits.shape
    shift = np.zeros(c, np.float32)
    if c < 2 or n == 0:
        return shift
    if groups is None:
        groups = np.zeros(n, np.int64)
    else:
        groups = np.unique(np.asarray(groups).ravel(), return_inverse=True)[1].astype(np.int64)
        if groups.size != n:
            raise ValueError(f"groups has {groups.size} entries for {n} pixels.")
    n_groups = int(groups.max()) + 1
    true_n = np.bincount(target, minlength=c)[:c]
    true_g = np.bincount(groups * c + target, minlength=n_groups * c).reshape(n_groups, c)

    def evaluate(sh):
        pred = np.argmax(logits + sh, axis=1)
        pred_g = np.bincount(groups * c + pred, minlength=n_groups * c).reshape(n_groups, c)
        hit = pred == target
        tp_g = np.bincount(groups[hit] * c + pred[hit],
                           minlength=n_groups * c).reshape(n_groups, c)
        den = (pred_g + true_g)[:, 1:]
        present = den > 0
        dice = np.where(present, 2 * tp_g[:, 1:] / np.maximum(den, 1), 0.0)
        # a group with no foreground in either map scores 1 (nothing to find, none invented)
        per = np.where(present.any(1), dice.sum(1) / np.maximum(present.sum(1), 1), 1.0)
        return per, pred_g.sum(0)

    per0, pred0 = evaluate(shift)
    base = best = float(per0.mean())
    gap0 = np.abs(pred0 - true_n)
    if info is not None:
        info.update(pixels=int(n), true_share=[float(v) for v in true_n / n],
                    pred_share=[float(v) for v in pred0 / n])
        if n_groups > 1:
            info["groups"] = n_groups
    order = np.argsort(np.abs(grid), kind="stable")  # small shifts first: ties keep them
    for _ in range(sweeps):
        moved = False
        for k in range(c):
            keep = shift[k]
            for d in np.asarray(grid, np.float32)[order]:
                shift[k] = d
                per, pred_n = evaluate(shift)
                s = float(per.mean())
                most = n_groups == 1 or \
                    np.count_nonzero(per > per0 + 1e-9) > np.count_nonzero(per < per0 - 1e-9)
                if s > best + 1e-9 and most and np.all(np.abs(pred_n - true_n) <= gap0):
                    best, keep, moved = s, d, True
            shift[k] = keep
        if not moved:
            break
    shift -= shift[0]
    taken = best - base >= min_gain
    if info is not None:
        info.update(dice_before=base, dice_after=best if taken else base)
    return shift if taken else np.zeros(c, np.float32)


def calibrate_logit_bias(model: UNet, sampler: _PatchSampler, val, device, *, seed: int = 0,
                         n_crops: int = _CALIB_CROPS, info: dict | None = None) -> np.ndarray:
    """Logit shifts (one per class) fitted on the held-back crops ``val`` when there are some,
    else on crops of the reviewed pixels centred uniformly on them (not foreground-weighted:
    the classes' shares are the data's), by :func:`fit_logit_bias` with each crop a group
    (its Dice averaged over the crops, as :meth:`Trainer.fit` validates, and the shift must
    help more crops than it hurts). ``model`` in eval mode."""
    cfg = model.config
    rng = np.random.default_rng([int(seed), 104729])
    crops = []
    if val:
        crops = [(img, fold_labels(t, cfg.n_classes, cfg.boundary_classes), None)
                 for img, t in val]
    else:
        size = max(sampler.cfg.patch_size * 2, 128)
        for _ in range(int(n_crops)):
            i = int(rng.choice(len(sampler.images), p=sampler.p_image))
            pool = sampler.centres[i]
            cy, cx = divmod(int(pool[rng.integers(pool.size)]), sampler.labels[i].shape[1])
            h, w = sampler.labels[i].shape
            y0, x0 = max(min(cy - size // 2, h - size), 0), max(min(cx - size // 2, w - size), 0)
            sl = np.s_[y0:y0 + size, x0:x0 + size]
            rev = sampler.reviewed[i]
            crops.append((sampler.images[i][(slice(None), *sl)],
                          fold_labels(sampler.labels[i][sl], cfg.n_classes,
                                      cfg.boundary_classes),
                          None if rev is None else rev[sl]))
    logits, target, groups = [], [], []
    with torch.inference_mode():
        for g, (img, lab, rev) in enumerate(crops):
            x = torch.from_numpy(np.ascontiguousarray(img, np.float32))[None].to(device)
            out = model(x.contiguous(memory_format=torch.channels_last))[0].float().cpu()
            out = out.numpy().reshape(cfg.n_classes, -1).T
            keep = np.ones(lab.size, bool) if rev is None else rev.ravel()
            logits.append(out[keep])
            target.append(lab.ravel()[keep])
            groups.append(np.full(int(keep.sum()), g, np.int64))
    logits, target = np.concatenate(logits), np.concatenate(target)
    groups = np.concatenate(groups)
    if len(target) > _CALIB_PIXELS:
        idx = rng.choice(len(target), _CALIB_PIXELS, replace=False)
        logits, target, groups = logits[idx], target[idx], groups[idx]
    if info is not None:
        info["on"] = "held-back crops" if val else "reviewed crops"
    return fit_logit_bias(logits, target, groups=groups, info=info)


def shift_logits(state: dict[str, torch.Tensor], shift: np.ndarray, mc: ModelConfig
                 ) -> dict[str, torch.Tensor]:
    """``state`` with ``shift[c]`` added to class c's head bias (and to its boundary output:
    the folded logit ``logaddexp(interior, boundary)`` then moves by exactly ``shift[c]``)."""
    full = list(shift) + [shift[c] for c in mc.boundary_classes] + [0.0] * mc.distance_outputs
    out = dict(state)
    out["head.bias"] = state["head.bias"] + torch.tensor(full, dtype=state["head.bias"].dtype)
    return out


#: Weight of the distance outputs' loss (``ModelConfig.distance_head``) against the
#: segmentation loss: with 1 a 150-step round on touching synthetic discs learned the distance
#: poorly (correlation with the target 0.40 on a new scene), with 5 well (0.94); Cellpose
#: weighs its flow regression the same way. Not tuned on the benchmark sets.
DISTANCE_WEIGHT = 5.0


def _lr_factor(frac: float, cfg: TrainConfig) -> float:
    """Linear warm-up then cosine decay to ``final_lr_fraction``, over the budget fraction."""
    w = cfg.warmup_fraction
    if w > 0 and frac < w:
        return max(frac / w, 0.05)
    t = min(max((frac - w) / max(1 - w, 1e-9), 0.0), 1.0)
    f = cfg.final_lr_fraction
    return f + (1 - f) * 0.5 * (1 + math.cos(math.pi * t))


def _val_crops(
    images: Sequence[np.ndarray], labels: Sequence[np.ndarray], size: int, rng: np.random.Generator,
    max_crops: int = 32,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Fixed crops of the held-back images: validation cost stays bounded whatever their size."""
    crops = []
    per_image = max(1, max_crops // max(len(images), 1))
    for img, lab in zip(images, labels, strict=True):
        h, w = lab.shape
        for _ in range(per_image):
            y0 = int(rng.integers(0, max(h - size, 0) + 1))
            x0 = int(rng.integers(0, max(w - size, 0) + 1))
            crops.append((img[:, y0:y0 + size, x0:x0 + size], lab[y0:y0 + size, x0:x0 + size]))
    return crops


class Trainer:
    """Fits a U-Net on labelled images, one round at a time.

    Parameters
    ----------
    model_config : ModelConfig
    train_config : TrainConfig

    Examples
    --------
    >>> trainer = Trainer(ModelConfig(in_channels=1), TrainConfig(max_steps=100))
    >>> result = run_to_end(trainer.fit(images, labels))          # doctest: +SKIP
    """

    def __init__(self, model_config: ModelConfig, train_config: TrainConfig | None = None) -> None:
        self.model_config = model_config
        self.train_config = train_config or TrainConfig()
        self._stop = threading.Event()

    def request_stop(self) -> None:
        """Ask the running round to stop after the current step (safe from any thread)."""
        self._stop.set()

    @property
    def stop_requested(self) -> bool:
        return self._stop.is_set()

    def _check_data(self, images, labels, reviewed):
        if len(images) == 0:
            raise ValueError("No labelled image to train on: submit at least one label first.")
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} label maps.")
        reviewed = list(reviewed) if reviewed is not None else [None] * len(images)
        if len(reviewed) != len(images):
            raise ValueError(f"{len(images)} images but {len(reviewed)} reviewed masks.")
        mc = self.model_config
        imgs, labs = [], []
        for i, (img, lab, rev) in enumerate(zip(images, labels, reviewed, strict=True)):
            img = np.asarray(img, np.float32)
            if img.ndim == 2:
                img = img[None]
            lab = np.asarray(lab)
            if img.ndim != 3 or img.shape[0] != mc.in_channels:
                raise ValueError(f"Training image {i} has shape {img.shape}; the model expects "
                                 f"(C={mc.in_channels}, H, W). Normalise it with "
                                 "core.imageio.normalize_image and check in_channels.")
            if lab.shape != img.shape[1:]:
                raise ValueError(f"Labels {i} have shape {lab.shape} but image {i} is "
                                 f"{img.shape[1:]}; they must match.")
            if rev is not None and np.shape(rev) != lab.shape:
                raise ValueError(f"Reviewed mask {i} has shape {np.shape(rev)}, expected "
                                 f"{lab.shape}.")
            if lab.size and int(lab.max()) >= mc.n_targets:  # boundary targets: core.instances
                raise ValueError(f"Labels {i} contain class {int(lab.max())} but the model has "
                                 f"n_classes={mc.n_classes} and {mc.n_targets} outputs "
                                 f"(0..{mc.n_targets - 1}); raise n_classes or fix the labels.")
            imgs.append(img)
            labs.append(lab.astype(np.int64, copy=False))
        return imgs, labs, [None if r is None else np.asarray(r, bool) for r in reviewed]

    def fit(
        self,
        images: Sequence[np.ndarray],
        labels: Sequence[np.ndarray],
        reviewed: Sequence[np.ndarray | None] | None = None,
        *,
        val_images: Sequence[np.ndarray] | None = None,
        val_labels: Sequence[np.ndarray] | None = None,
        init_state: dict[str, torch.Tensor] | None = None,
        focus: Sequence[np.ndarray | None] | None = None,
        unlabelled: Sequence[tuple[np.ndarray, np.ndarray | None]] | None = None,
    ) -> Generator[TrainProgress, None, TrainResult]:
        """Train one round; yields :class:`TrainProgress`, returns :class:`TrainResult`.

        Parameters
        ----------
        images : sequence of (C, H, W) float32 ndarray
            Normalised images.
        labels : sequence of (H, W) int ndarray
            Class maps (0 = background).
        reviewed : sequence of (H, W) bool ndarray or None, optional
            Which pixels are ground truth; None = the whole image. Others count for nothing.
        val_images, val_labels : optional
            Held-back images for validation Dice and early stopping. When omitted and at least
            ``min_val_images`` fully reviewed images are given, ``val_fraction`` of them are
            held back (deterministically for the seed).
        init_state : state dict, optional
            Warm start from earlier weights (same architecture).
        focus : sequence of (H, W) bool ndarray or None, optional
            Per image, the "hard" pixels (e.g. where the previous model was corrected);
            ``focus_p`` of the patches are centred on one of them (0 = ignored).
        unlabelled : sequence of ((C, H, W) ndarray, (H, W) bool ndarray or None), optional
            Images and the pixels of them nobody reviewed (None = all) for the consistency
            term (:mod:`.consistency`); used only when ``consistency_weight > 0``.
        """
        # torch's thread count is process-wide: set it for the round, give it back after
        previous = torch.get_num_threads()
        if self.train_config.num_threads:
            torch.set_num_threads(self.train_config.num_threads)
        try:
            return (yield from self._fit(images, labels, reviewed, val_images=val_images,
                                         val_labels=val_labels, init_state=init_state,
                                         focus=focus, unlabelled=unlabelled))
        finally:
            torch.set_num_threads(previous)

    def _fit(self, images, labels, reviewed, *, val_images, val_labels, init_state, focus,
             unlabelled=None):
        cfg, mc = self.train_config, self.model_config
        self._stop.clear()
        images, labels, reviewed = self._check_data(images, labels, reviewed)
        focus = list(focus) if focus is not None and cfg.focus_p > 0 else [None] * len(images)
        if len(focus) != len(images):
            raise ValueError(f"{len(images)} images but {len(focus)} focus masks.")
        rng = np.random.default_rng(cfg.seed)
        torch.manual_seed(cfg.seed)
        device = choose_device(cfg.device)

        # hold back validation images only when there are enough to spare
        if val_images is None:
            full = [i for i, r in enumerate(reviewed) if r is None or r.all()]
            n_val = int(round(len(images) * cfg.val_fraction))
            if len(images) >= cfg.min_val_images and n_val >= 1 and len(full) > n_val:
                held = set(rng.choice(full, n_val, replace=False).tolist())
                val_images = [images[i] for i in sorted(held)]
                val_labels = [labels[i] for i in sorted(held)]
                keep = [i for i in range(len(images)) if i not in held]
                images = [images[i] for i in keep]
                labels = [labels[i] for i in keep]
                reviewed = [reviewed[i] for i in keep]
                focus = [focus[i] for i in keep]
        elif val_labels is None or len(val_labels) != len(val_images):
            raise ValueError("val_images and val_labels must be given together, same length.")
        val = _val_crops(val_images, val_labels, max(cfg.patch_size * 2, 128), rng) \
            if val_images else []

        sampler = _PatchSampler(images, labels, reviewed, cfg, rng,
                                None if cfg.focus_p <= 0 else focus)
        model = UNet(mc)
        if init_state is not None:
            try:
                model.load_state_dict(init_state)
            except RuntimeError as exc:
                raise ValueError(
                    "The warm-start weights do not fit this model configuration (different "
                    f"width/depth/channels/classes?): {str(exc).splitlines()[0]}"
                ) from exc
        # channels-last: the convolutions of a training step run ~1.7x faster on this kind of
        # CPU (measured 0.29 -> 0.17 s for 16 x 128²), and it is the layout CUDA's AMP prefers
        model.to(device, memory_format=torch.channels_last).train()
        peak_lr = cfg.lr * (cfg.warm_lr_factor if init_state is not None else 1.0)
        opt = torch.optim.AdamW(model.parameters(), lr=peak_lr, weight_decay=cfg.weight_decay)
        scaler = torch.amp.GradScaler("cuda", enabled=cfg.amp and device.type == "cuda")
        consist = ConsistencyTerm.build(unlabelled, cfg, mc.in_channels, device,
                                        scaler.is_enabled())
        weights = None
        if cfg.class_weights is not None:
            if len(cfg.class_weights) != mc.n_classes:
                raise ValueError(f"class_weights has {len(cfg.class_weights)} values but there "
                                 f"are {mc.n_classes} classes.")
            # a boundary output weighs as its class
            weights = torch.tensor([*cfg.class_weights, *(cfg.class_weights[c] for c in
                                                           mc.boundary_classes)],
                                   dtype=torch.float32, device=device)
        elif cfg.class_weight_power > 0:
            weights = torch.tensor(
                auto_class_weights(sampler, mc.n_targets,
                                   cfg.class_weight_power, seed=cfg.seed),
                dtype=torch.float32, device=device)

        batch = cfg.batch_size
        step, smooth = 0, None
        best_dice, best_state, bad_evals = None, None, 0
        history: list[dict[str, Any]] = []
        stop_reason = "budget"
        message = ""
        t0 = time.perf_counter()
        patch_area = cfg.patch_size**2
        seen = 0
        while True:
            elapsed = time.perf_counter() - t0
            frac = 0.0
            if cfg.max_steps is not None:
                frac = step / cfg.max_steps
            if cfg.time_budget_s is not None:
                frac = max(frac, elapsed / cfg.time_budget_s)
            if frac >= 1.0:
                break
            if self._stop.is_set():
                stop_reason = "stop_requested"
                break
            lr = peak_lr * _lr_factor(frac, cfg)
            for g in opt.param_groups:
                g["lr"] = lr
            x, y, ign = sampler.batch(batch)
            try:
                loss_v = self._step(model, opt, scaler, device, x, y, ign, weights,
                                    None if consist is None else partial(consist, frac=frac))
            except Exception as exc:  # noqa: BLE001 - OOM halves the batch, the rest re-raised
                if not is_oom(exc) or batch == 1:
                    raise
                opt.zero_grad(set_to_none=True)
                empty_cache(device)
                batch = max(1, batch // 2)
                message = f"Out of memory on {device}: batch halved to {batch}."
                continue
            step += 1
            seen += batch
            smooth = loss_v if smooth is None else 0.9 * smooth + 0.1 * loss_v
            elapsed = time.perf_counter() - t0
            frac_now = max(step / cfg.max_steps if cfg.max_steps else 0.0,
                           elapsed / cfg.time_budget_s if cfg.time_budget_s else 0.0)
            eta = elapsed * (1 - frac_now) / frac_now if frac_now > 0 else None
            val_dice = None
            last = frac_now >= 1.0 or self._stop.is_set()
            if val and (step % cfg.val_every == 0 or last):
                val_dice = self._validate(model, val, device)
                model.train()
                if best_dice is None or val_dice > best_dice + 1e-4:
                    best_dice, bad_evals = val_dice, 0
                    best_state = _plain_state(model)
                else:
                    bad_evals += 1
            rec = TrainProgress(
                step=step, fraction=min(frac_now, 1.0),
                epoch=seen * patch_area / sampler.total_pixels,
                loss=loss_v, loss_smooth=float(smooth), lr=lr,
                patches_per_s=seen / max(elapsed, 1e-9), elapsed_s=elapsed, eta_s=eta,
                val_dice=val_dice, best_val_dice=best_dice, message=message,
            )
            message = ""
            history.append({k: v for k, v in rec.__dict__.items() if k != "message"})
            yield rec
            if val and bad_evals >= cfg.patience:
                stop_reason = "early_stopping"
                break

        final_state = _plain_state(model)
        if best_state is not None:
            # the held-back images pick the weights the round keeps
            final_dice = self._validate(model, val, device)
            if final_dice >= best_dice:
                best_dice, best_state = final_dice, final_state
            final_state = best_state
        model.eval()
        logit_bias, calibration = None, None
        # a cancelled round is not published: no forward passes for it after Cancel
        if cfg.calibrate_bias and step > 0 and stop_reason != "stop_requested":
            model.load_state_dict(final_state)
            calibration = {}
            shift = calibrate_logit_bias(model, sampler, val, device, seed=cfg.seed,
                                         info=calibration)
            logit_bias = tuple(float(v) for v in shift)
            if np.any(shift):
                final_state = shift_logits(final_state, shift, mc)
        return TrainResult(
            state_dict=final_state, model_config=mc, train_config=cfg, steps=step,
            seconds=time.perf_counter() - t0, stop_reason=stop_reason, best_val_dice=best_dice,
            history=history, n_train_images=len(images),
            n_val_images=len(val_images) if val_images else 0,
            class_weights=None if weights is None else tuple(float(v) for v in weights.tolist()),
            logit_bias=logit_bias, calibration=calibration,
        )

    @staticmethod
    def _step(model, opt, scaler, device, x, y, ign, weights, extra=None) -> float:
        # on CUDA through pinned memory, without blocking; on the CPU the arrays themselves
        xt = to_device(x, device).contiguous(memory_format=torch.channels_last)
        yt, it = to_device(y, device), to_device(ign, device)
        opt.zero_grad(set_to_none=True)
        with autocast(device, scaler.is_enabled()):
            logits = model.forward_full(xt)  # with the boundary outputs of object classes
        mc = model.config
        n = mc.n_targets
        loss = segmentation_loss(logits[:, :n].float(), yt, ignore=it, class_weights=weights)
        if mc.distance_outputs:
            # on the reviewed pixels of objects (the classes' outputs say where they are)
            off = to_device(np.asarray(ign) | ~np.isin(y, [*mc.boundary_classes, *range(
                mc.n_classes, n)]), device)
            loss = loss + DISTANCE_WEIGHT * distance_loss(logits[:, n:].float(), to_device(
                distance_target(y, mc.n_classes, mc.boundary_classes), device), off)
        term = None if extra is None else extra(model)  # e.g. consistency on unlabelled crops
        if term is not None:
            loss = loss + term
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        return float(loss.detach())

    @staticmethod
    def _validate(model, crops, device) -> float:
        model.eval()
        scores = []
        cfg = model.config
        with torch.inference_mode():
            for img, target in crops:
                # the class map: a boundary target's boundaries count as their class
                lab = fold_labels(target, cfg.n_classes, cfg.boundary_classes)
                x = torch.from_numpy(np.ascontiguousarray(img))[None].to(device)
                logits = model(x.contiguous(memory_format=torch.channels_last))
                pred = logits.argmax(1)[0].cpu().numpy()
                scores.append(dice_score(pred, lab))
        return float(np.mean(scores)) if scores else 0.0


def held_back_dice(model: UNet, images: Sequence[np.ndarray], labels: Sequence[np.ndarray], *,
                   patch_size: int, seed: int = 0) -> float:
    """Mean foreground Dice of ``model`` on held-back images, measured as :meth:`Trainer.fit`
    validates (fixed crops of twice the patch size, at least 128), on the crops drawn for
    ``seed``: two models scored with the same arguments are compared on the same pixels. The
    model is left in eval mode, on its device."""
    if not len(images):
        raise ValueError("No held-back image to score the model on.")
    crops = _val_crops([np.asarray(i, np.float32) for i in images],
                       [np.asarray(lab, np.int64) for lab in labels],
                       max(patch_size * 2, 128), np.random.default_rng(seed))
    return Trainer._validate(model, crops, next(model.parameters()).device)


def _plain_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A CPU copy of the weights in the ordinary (contiguous) layout, whatever the model's."""
    return {k: v.detach().cpu().clone(memory_format=torch.contiguous_format)
            for k, v in model.state_dict().items()}
