"""Learning from unlabelled pixels by consistency regularisation (FixMatch, Sohn et al. 2020).

Each step of a round with ``TrainConfig.consistency_weight > 0`` draws a batch of crops from
pixels nobody reviewed (the unreviewed parts of labelled images and a sample of the pool's
unlabelled images) and makes two views of each crop. Both views share one geometric
transform (a rotation by a multiple of 90 degrees and a flip, applied to the crop before the
views split), so pixel (i, j) of one is pixel (i, j) of the other. The *weak* view is the crop
so transformed; the *strong* view adds intensity, contrast and gamma jitter, Gaussian noise,
a blur and a cutout rectangle.

The teacher is the student itself in eval mode (no dropout) under ``no_grad`` -- FixMatch's
choice rather than a mean teacher's EMA copy: it costs no second set of weights, and a round
that warm-starts from the last model already begins with a teacher as good as that model. Its
prediction on the weak view gives a class per pixel; where its softmax confidence reaches
``consistency_threshold`` the student's prediction on the strong view is pulled towards that
class by cross-entropy. Unconfident pixels, padding and the cutout contribute nothing; the sum
is divided by the number of eligible pixels (so a teacher confident nowhere adds nothing), and
its weight ramps up over the first ``consistency_rampup`` of the round (the sigmoid-shaped
``exp(-5 (1 - t)^2)`` of Laine & Aila 2017).

Nothing here writes anything: the teacher's classes live for one step and are never labels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from .config import TrainConfig
from .device import autocast

# at most this many candidate crop centres per image (bounded memory on huge images)
_MAX_CENTRES = 50_000

# the strong view's perturbations (on images normalised to about 0..1)
STRONG_INTENSITY = 0.25  # multiply by U(1 - a, 1 + a), add U(-a, a)
STRONG_GAMMA = 0.4  # gamma exp(U(-g, g))
STRONG_NOISE = 0.05  # Gaussian noise, sigma U(0, s)
STRONG_BLUR = 1.0  # Gaussian blur sigma U(0, b), with probability 0.5
STRONG_CUTOUT = 0.25  # one rectangle of up to this fraction of each side, p = 0.5


def rampup(frac: float, length: float) -> float:
    """The weight's ramp: ``exp(-5 (1 - t)^2)`` with ``t = frac / length``, 1 once past it."""
    if length <= 0 or frac >= length:
        return 1.0
    t = max(frac, 0.0) / length
    return math.exp(-5.0 * (1.0 - t) ** 2)


def dihedral(x: np.ndarray, k: int, flip: bool) -> np.ndarray:
    """Rotate the last two axes by ``k`` quarter turns, then flip them left-right if ``flip``."""
    x = np.rot90(x, k, axes=(-2, -1))
    return x[..., ::-1] if flip else x


def strong_view(x: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The strong perturbation of a (C, H, W) crop: ``(view, kept)``, ``kept`` False inside
    the cutout rectangle (its pixels carry no information about the teacher's classes)."""
    x = np.array(x, np.float32)
    kept = np.ones(x.shape[1:], bool)
    if rng.random() < 0.5 and STRONG_BLUR > 0:
        sigma = float(rng.uniform(0, STRONG_BLUR))
        x = ndimage.gaussian_filter(x, sigma=(0, sigma, sigma), mode="reflect")
    g = float(np.exp(rng.uniform(-STRONG_GAMMA, STRONG_GAMMA)))
    np.clip(x, 0.0, None, out=x)
    np.power(x, g, out=x)
    x *= rng.uniform(1 - STRONG_INTENSITY, 1 + STRONG_INTENSITY)
    x += rng.uniform(-STRONG_INTENSITY, STRONG_INTENSITY)
    x += rng.normal(0.0, rng.uniform(0, STRONG_NOISE), x.shape).astype(np.float32)
    if rng.random() < 0.5 and STRONG_CUTOUT > 0:
        h, w = kept.shape
        ch = int(rng.integers(1, max(2, int(h * STRONG_CUTOUT) + 1)))
        cw = int(rng.integers(1, max(2, int(w * STRONG_CUTOUT) + 1)))
        y0, x0 = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        x[:, y0:y0 + ch, x0:x0 + cw] = float(x.mean())
        kept[y0:y0 + ch, x0:x0 + cw] = False
    return x, kept


def weak_strong_views(crop: np.ndarray, valid: np.ndarray, rng: np.random.Generator,
                      cfg: TrainConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(weak, strong, valid)`` of a (C, H, W) crop and its (H, W) mask of eligible pixels:
    one geometric transform (``cfg.rot90`` / ``cfg.flips``) for both views, then the strong
    view's perturbations; ``valid`` is transformed alike and loses the cutout."""
    k = int(rng.integers(4)) if cfg.rot90 else 0
    flip = bool(cfg.flips and rng.random() < 0.5)
    weak = np.ascontiguousarray(dihedral(crop, k, flip), np.float32)
    valid = np.ascontiguousarray(dihedral(valid, k, flip))
    strong, kept = strong_view(weak, rng)
    return weak, strong, valid & kept


class UnlabelledSampler:
    """Random crops centred on the eligible pixels of unlabelled images, as view pairs.

    Parameters
    ----------
    images : sequence of (C, H, W) float32 ndarray
    eligible : sequence of (H, W) bool ndarray or None
        The pixels that may be learnt from (None = every pixel of the image).
    cfg : TrainConfig
    rng : numpy Generator
        Its own stream: the labelled batches do not change when this one is drawn.
    """

    def __init__(self, images: Sequence[np.ndarray], eligible: Sequence[np.ndarray | None],
                 cfg: TrainConfig, rng: np.random.Generator) -> None:
        self.cfg, self.rng = cfg, rng
        self.images, self.eligible, self.centres = [], [], []
        for img, mask in zip(images, eligible, strict=True):
            if mask is None:
                mask = np.ones(img.shape[1:], bool)
            idx = np.flatnonzero(mask)
            if idx.size == 0:
                continue
            if idx.size > _MAX_CENTRES:
                idx = rng.choice(idx, _MAX_CENTRES, replace=False)
            self.images.append(img)
            self.eligible.append(mask)
            self.centres.append(idx)
        counts = np.asarray([c.size for c in self.centres], float)
        self.p_image = np.sqrt(counts) / np.sqrt(counts).sum() if counts.size else counts

    def __len__(self) -> int:
        return len(self.images)

    def batch(self, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(weak, strong, valid)``: (n, C, P, P) float32 twice and (n, P, P) bool."""
        ps = self.cfg.patch_size
        c = self.images[0].shape[0]
        weak = np.empty((n, c, ps, ps), np.float32)
        strong = np.empty_like(weak)
        valid = np.empty((n, ps, ps), bool)
        for b in range(n):
            i = int(self.rng.choice(len(self.images), p=self.p_image))
            crop, mask = self._crop(i, int(self.centres[i][self.rng.integers(self.centres[i].size)]))
            weak[b], strong[b], valid[b] = weak_strong_views(crop, mask, self.rng, self.cfg)
        return weak, strong, valid

    def _crop(self, i: int, centre: int) -> tuple[np.ndarray, np.ndarray]:
        img, mask = self.images[i], self.eligible[i]
        h, w = mask.shape
        ps = self.cfg.patch_size
        cy, cx = divmod(centre, w)
        y0 = int(np.clip(cy - ps // 2, 0, max(h - ps, 0)))
        x0 = int(np.clip(cx - ps // 2, 0, max(w - ps, 0)))
        crop = img[:, y0:y0 + ps, x0:x0 + ps]
        m = mask[y0:y0 + ps, x0:x0 + ps]
        ph, pw = ps - m.shape[0], ps - m.shape[1]
        if ph or pw:  # smaller than a patch: edge padding, never learnt from
            crop = np.pad(crop, ((0, 0), (0, ph), (0, pw)), mode="edge")
            m = np.pad(m, ((0, ph), (0, pw)), constant_values=False)
        return crop, m


def consistency_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                     valid: torch.Tensor, threshold: float) -> torch.Tensor:
    """FixMatch's unlabelled loss: cross-entropy of the student's (N, K, H, W) logits against
    the teacher's argmax where its softmax confidence is at least ``threshold`` and ``valid``
    (N, H, W) is True, summed and divided by the number of valid pixels."""
    with torch.no_grad():
        conf, target = torch.softmax(teacher_logits.float(), dim=1).max(dim=1)
        keep = (conf >= threshold) & valid
    ce = F.cross_entropy(student_logits.float(), target, reduction="none")
    return (ce * keep).sum() / valid.sum().clamp_min(1)


def _logits(out):
    """The class logits of a model's output (the first element when it returns several)."""
    return out[0] if isinstance(out, tuple | list) else out


class ConsistencyTerm:
    """The extra loss of one training step on a batch of unlabelled crops.

    ``term(model, frac)`` returns the weighted loss (a tensor with a gradient), or None while
    the ramp gives it no weight. The model is put in eval mode for the teacher's pass and back
    in train mode for the student's.
    """

    def __init__(self, sampler: UnlabelledSampler, cfg: TrainConfig, device: torch.device,
                 amp: bool = False) -> None:
        self.sampler, self.cfg, self.device, self.amp = sampler, cfg, device, amp
        self.last: float = 0.0

    @classmethod
    def build(cls, unlabelled: Sequence[tuple[np.ndarray, np.ndarray | None]] | None,
              cfg: TrainConfig, in_channels: int, device: torch.device,
              amp: bool = False) -> ConsistencyTerm | None:
        """The term for a round, or None when it is off or there is no eligible pixel."""
        if cfg.consistency_weight <= 0 or not unlabelled:
            return None
        images, masks = [], []
        for n, (img, mask) in enumerate(unlabelled):
            img = np.asarray(img, np.float32)
            if img.ndim == 2:
                img = img[None]
            if img.ndim != 3 or img.shape[0] != in_channels:
                raise ValueError(f"Unlabelled image {n} has shape {img.shape}; the model "
                                 f"expects (C={in_channels}, H, W).")
            if mask is not None and np.shape(mask) != img.shape[1:]:
                raise ValueError(f"Unlabelled mask {n} has shape {np.shape(mask)}, expected "
                                 f"{img.shape[1:]}.")
            images.append(img)
            masks.append(None if mask is None else np.asarray(mask, bool))
        # a stream of its own, so the labelled batches stay those of a round without the term
        sampler = UnlabelledSampler(images, masks, cfg,
                                    np.random.default_rng([cfg.seed, 0xC0751]))
        return cls(sampler, cfg, device, amp) if len(sampler) else None

    def __call__(self, model: torch.nn.Module, frac: float) -> torch.Tensor | None:
        weight = self.cfg.consistency_weight * rampup(frac, self.cfg.consistency_rampup)
        if weight <= 0:
            return None
        weak, strong, valid = self.sampler.batch(self.cfg.consistency_batch)

        def tensor(a):
            return torch.from_numpy(a).to(self.device).contiguous(
                memory_format=torch.channels_last)

        model.eval()
        try:
            with torch.no_grad(), autocast(self.device, self.amp):
                teacher = _logits(model(tensor(weak)))
        finally:
            model.train()
        with autocast(self.device, self.amp):
            student = _logits(model(tensor(strong)))
        loss = consistency_loss(student, teacher, torch.from_numpy(valid).to(self.device),
                                self.cfg.consistency_threshold)
        self.last = float(loss.detach())
        return weight * loss
