"""CEAL pseudo-labels: confident pixels of unlabelled images join training, kept apart from
reviewed labels.

Cost-Effective Active Learning (Wang et al. 2016; for segmentation Gorriz et al. 2017) adds the
model's high-confidence predictions on unlabelled data to training, with a confidence
criterion that becomes stricter over rounds: CEAL lowers its entropy threshold by a fixed decay
each round (``delta_t = delta_0 - t * dr``), so that as the model grows bolder only ever more
certain predictions are trusted.

Schedule used here, in max-probability terms (a pixel is pseudo-labelled when
``max_c p_c >= threshold``; a rising max-probability threshold is a falling entropy threshold):

    threshold(round) = min(start + step * round, ceiling)        # default 0.90 -> 0.99

i.e. 0.90, 0.91, ..., 0.99 from round 9 on; non-decreasing in the round by construction. For
two classes, max-prob 0.90 is an entropy of 0.325 nats and 0.99 of 0.056 nats.

Pseudo-labels are a different type (:class:`PseudoLabels`, ``is_pseudo = True``) from reviewed
labels and are never written into them: :func:`pseudo_training_set` refuses an image that has
reviewed labels, and outside the pseudo mask the loss ignores every pixel.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ..config import JsonConfig, ensure
from ..validation import check_positive

__all__ = ["PseudoLabelConfig", "PseudoLabels", "ceal_threshold", "make_pseudo_labels",
           "pseudo_labels", "pseudo_training_set"]


def ceal_threshold(round: int, *, start: float = 0.90, step: float = 0.01,
                   ceiling: float = 0.99) -> float:
    """Max-probability threshold of round ``round`` (0-based): ``min(start + step*round, ceiling)``.

    Non-decreasing in ``round`` (CEAL's decaying entropy threshold, see the module docstring).
    """
    r = check_positive(round, name="round", allow_zero=True, integer=True)
    _check_schedule(start, step, ceiling)
    return float(min(start + step * r, ceiling))


def _check_schedule(start: float, step: float, ceiling: float) -> None:
    ensure(0.0 < start <= 1.0, f"start must be in (0, 1], got {start!r}.")
    ensure(step >= 0.0, f"step must be >= 0 (the threshold never loosens), got {step!r}.")
    ensure(start <= ceiling <= 1.0, f"ceiling must be in [start, 1], got {ceiling!r} "
                                    f"(start={start!r}).")


def pseudo_labels(probs: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Arg-max labels and the mask of pixels confident enough to train on.

    Parameters
    ----------
    probs : (K, H, W) float ndarray
        Class probabilities.
    threshold : float in (0, 1]
        A pixel is kept when ``max_c p_c >= threshold``.

    Returns
    -------
    labels : (H, W) uint8 ndarray (uint16 above 256 classes)
        Arg-max class map (0 = background), defined everywhere.
    mask : (H, W) bool ndarray
        True where the label may be used.
    """
    p = np.asarray(probs)
    if p.ndim != 3 or p.shape[0] < 2:
        raise ValueError(f"probs must be (K, H, W) with K >= 2, got shape {p.shape}.")
    t = float(check_positive(threshold, name="threshold"))
    if t > 1:
        raise ValueError(f"threshold must be in (0, 1], got {threshold!r}.")
    labels = p.argmax(axis=0).astype(np.uint8 if p.shape[0] <= 256 else np.uint16)
    mask = p.max(axis=0) >= t
    return labels, mask


@dataclass(frozen=True)
class PseudoLabelConfig(JsonConfig):
    """Whether and how pseudo-labels are made.

    Attributes
    ----------
    enabled : bool
        Off = no pseudo-labels at all.
    start, step, ceiling : float
        The threshold schedule (:func:`ceal_threshold`).
    min_fraction : float in [0, 1]
        Skip an image when fewer than this fraction of its pixels pass the threshold.
    max_images : int or None
        At most this many images per round (the most confident first).
    """

    _kind: ClassVar[str] = "pseudo-label"

    enabled: bool = True
    start: float = 0.90
    step: float = 0.01
    ceiling: float = 0.99
    min_fraction: float = 0.0
    max_images: int | None = None

    def __post_init__(self) -> None:
        ensure(isinstance(self.enabled, bool), f"enabled must be True/False, got "
                                               f"{self.enabled!r}.")
        _check_schedule(self.start, self.step, self.ceiling)
        ensure(0.0 <= self.min_fraction <= 1.0,
               f"min_fraction must be in [0, 1], got {self.min_fraction!r}.")
        ensure(self.max_images is None or self.max_images >= 1,
               f"max_images must be >= 1 or None, got {self.max_images!r}.")

    def threshold(self, round: int) -> float:
        return ceal_threshold(round, start=self.start, step=self.step, ceiling=self.ceiling)


@dataclass(frozen=True, eq=False)
class PseudoLabels:
    """Model-made labels of one unlabelled image: never to be confused with reviewed labels.

    Attributes
    ----------
    image_id : str
    labels : (H, W) uint8 ndarray
    mask : (H, W) bool ndarray
        Pixels that may be trained on; everything else is ignored by the loss.
    threshold : float
    round : int
    """

    is_pseudo: ClassVar[bool] = True

    image_id: str
    labels: np.ndarray
    mask: np.ndarray
    threshold: float
    round: int

    @property
    def fraction(self) -> float:
        """Share of the image's pixels that are pseudo-labelled."""
        return float(self.mask.mean()) if self.mask.size else 0.0


def make_pseudo_labels(
    image_id: str, probs: np.ndarray, round: int, config: PseudoLabelConfig | None = None
) -> PseudoLabels | None:
    """Pseudo-labels of one image for ``round``, or None (disabled / too few confident pixels)."""
    config = config or PseudoLabelConfig()
    if not config.enabled:
        return None
    t = config.threshold(round)
    labels, mask = pseudo_labels(probs, t)
    out = PseudoLabels(image_id, labels, mask, t, int(round))
    if not mask.any() or out.fraction < config.min_fraction:
        return None
    return out


def pseudo_training_set(
    pseudo: Sequence[PseudoLabels],
    images: Mapping[str, np.ndarray],
    *,
    reviewed_ids: Collection[str],
    max_images: int | None = None,
) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    """``(images, labels, masks)`` to append to a training round, as ``Trainer.fit`` takes them
    (``masks`` goes to ``reviewed=``: the loss ignores unmasked pixels).

    Raises
    ------
    ValueError
        If an image with reviewed labels got pseudo-labels (the reviewed labels win; drop the
        pseudo-labels of labelled images before calling), or an image is missing.
    """
    for p in pseudo:
        if not isinstance(p, PseudoLabels):
            raise TypeError(f"Expected PseudoLabels (from make_pseudo_labels), got "
                            f"{type(p).__name__}.")
    reviewed = set(reviewed_ids)
    clash = sorted({p.image_id for p in pseudo} & reviewed)
    if clash:
        raise ValueError(f"Pseudo-labels given for reviewed image(s) {clash[:3]}; reviewed labels "
                         "are never mixed with pseudo-labels: drop those pseudo-labels.")
    chosen = sorted(pseudo, key=lambda p: -p.fraction)
    if max_images is not None:
        chosen = chosen[:max_images]
    imgs, labs, masks = [], [], []
    for p in chosen:
        if p.image_id not in images:
            raise ValueError(f"No image for pseudo-labelled {p.image_id!r}.")
        imgs.append(images[p.image_id])
        labs.append(p.labels)
        masks.append(p.mask)
    return imgs, labs, masks
