"""From a raw image to the network's input: percentile normalisation, then polarity.

Microscopy pools often mix modalities: fluorescence (bright objects on a dark background) and
brightfield or stained tissue (dark objects on a bright background). Polarity says whether the
network sees the normalised image ``x`` or its inverse ``1 - x``; it is saved with the model
configuration and applied identically in training and prediction. The rules
(:data:`POLARITIES`):

- ``"pool"`` (the default of a new configuration): decided *once* from the project's images by
  :func:`decide_polarity` (the median over a sample of images of their background level, see
  :func:`background_level`) and replaced by the concrete rule it resolves to, ``"invert"`` or
  ``"none"``, before any image is prepared (:func:`resolve_polarity`). Every image of a project
  then gets the same treatment. An image whose own background happens to sit on the other side
  of the threshold -- many EM and fundus images sit near it -- is no longer treated unlike its
  neighbours (per image, 3 of 10 axondeepseg_sem images were inverted and 7 not; an inverted
  test image then scored Dice ~0.07 against ~0.7 for the project's rule, the set's mean fell by
  0.35: docs/2026-12-01-polarity.md);
- ``"invert"`` / ``"none"``: the project's rule. With a ``margin`` (``ModelConfig.
  polarity_margin``, default 0.25) an image departs from it only when its background level is
  unmistakably of the other kind -- above ``0.5 + margin`` in a project that is not inverted,
  below ``0.5 - margin`` in one that is -- so that a pool really mixing fluorescence and
  brightfield images (DSB 2018: levels below 0.1 and above 0.9) still sees every nucleus bright
  on dark, while images near the threshold all follow the project. Without a margin the rule is
  fixed for every image;
- ``"auto"``: the per-image rule of models saved before ``"pool"`` existed -- an image whose
  normalised median (mean over channels) lies above 0.5 is inverted. Kept unchanged so that those
  models predict exactly as they did.

A folder may also mix gray and RGB files (the same microscope exported by two programs). One
model takes one channel count, so an image is matched to it (:func:`match_channels`): a gray
image is repeated on every channel of an RGB model, an RGB image becomes gray (the mean of its
normalised channels) for a gray model. Any other mismatch is refused with a clear message.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from .config import POLARITIES
from .imageio import normalize_image
from .validation import check_choice

# the background level above which an image counts as bright-background
BRIGHT_THRESHOLD = 0.5
# pixels of the strided sample the background level is measured on
LEVEL_SAMPLE_PIXELS = 250_000
# images of a pool the project-wide decision looks at (evenly spaced; cheap on any pool)
DECIDE_MAX_IMAGES = 32


def background_level(image: np.ndarray) -> float:
    """The background level of a normalised image: the median of its channel mean.

    Parameters
    ----------
    image : (C, H, W) ndarray
        A normalised image (:func:`.imageio.normalize_image`).

    Returns
    -------
    level : float
        Median over a strided sample (``[::s, ::s]``, ``s = max(1, int(sqrt(H*W / 250000)))``)
        of the mean over channels. Above :data:`BRIGHT_THRESHOLD` the background is bright.
    """
    img = np.asarray(image)
    step = max(1, int(np.sqrt(img.shape[-1] * img.shape[-2] / LEVEL_SAMPLE_PIXELS)))
    sample = img[..., ::step, ::step].mean(axis=0)
    return float(np.median(sample))


def is_bright_background(image: np.ndarray) -> bool:
    """True when a normalised (C, H, W) image has a bright background (median above 0.5)."""
    return background_level(image) > BRIGHT_THRESHOLD


def polarity_sample(n: int, max_images: int = DECIDE_MAX_IMAGES) -> list[int]:
    """Indices of the images :func:`decide_polarity` looks at in a pool of ``n``.

    All of them up to ``max_images``; beyond, ``max_images`` evenly spaced ones (deterministic,
    so the decision does not depend on a seed and costs the same on any pool).
    """
    n = int(n)
    if n <= max_images:
        return list(range(n))
    return sorted({int(v) for v in np.rint(np.linspace(0, n - 1, max_images))})


def decide_polarity(images: Sequence[np.ndarray] | Iterable[np.ndarray], *,
                    max_images: int = DECIDE_MAX_IMAGES) -> str:
    """One polarity for a whole pool: ``"invert"`` if its typical image has a bright background.

    The background level (:func:`background_level`) is measured on every sampled image and the
    pool is inverted when the median of these levels is above :data:`BRIGHT_THRESHOLD` -- in
    effect a majority vote of the per-image rule, except that a pool split evenly is decided by
    how bright its backgrounds are rather than by a coin. A few odd images, or images sitting
    near the threshold, cannot split the pool in two.

    Parameters
    ----------
    images : sequence of (C, H, W) ndarray
        Normalised images (:func:`.imageio.normalize_image`). A sequence longer than
        ``max_images`` is sampled with :func:`polarity_sample`; any other iterable is read
        whole (sample it first).
    max_images : int
        How many images of a long sequence to look at.

    Returns
    -------
    polarity : {"invert", "none"}
        ``"none"`` for an empty pool.
    """
    if isinstance(images, Sequence):
        images = [images[i] for i in polarity_sample(len(images), max_images)]
    levels = [background_level(im) for im in images]
    if not levels:
        return "none"
    return "invert" if float(np.median(levels)) > BRIGHT_THRESHOLD else "none"


def decide_project_polarity(project: Any, *, max_images: int = DECIDE_MAX_IMAGES) -> str:
    """:func:`decide_polarity` over a project's images (an evenly spaced sample).

    Parameters
    ----------
    project : Project
        Anything with ``images()`` (records with an ``id``) and ``load_image(id)`` (the raw
        image, (H, W) or channels-last (H, W, C)). Images that cannot be read are left out.
    max_images : int

    Returns
    -------
    polarity : {"invert", "none"}
    """
    from .largeimage import LazyPrepared, is_large, large_threshold

    records = list(project.images())
    lazy = hasattr(project, "open_lazy")  # a project: a large image is never read whole
    sample = []
    for i in polarity_sample(len(records), max_images):
        try:
            if lazy and is_large(records[i].shape, large_threshold(project)):
                # the pixels background_level would look at, already strided
                sample.append(LazyPrepared(project.open_lazy(records[i].id),
                                           polarity="none").level_sample)
                continue
            raw = project.load_image(records[i].id)
            sample.append(normalize_image(raw, channel_axis=-1 if raw.ndim == 3 else None))
        except (ValueError, OSError):  # a moved or damaged file does not decide the project
            continue
    return decide_polarity(sample)


def resolve_polarity(polarity: str, images: Sequence[np.ndarray] | Iterable[np.ndarray]) -> str:
    """The concrete rule for ``polarity``: ``"pool"`` decided from ``images``
    (:func:`decide_polarity`), any other rule returned as it is (``images`` is then not read)."""
    check_choice(polarity, POLARITIES, name="polarity")
    return decide_polarity(images) if polarity == "pool" else polarity


def inverts(image: np.ndarray, polarity: str, margin: float | None = None) -> bool:
    """Whether a concrete rule inverts this normalised (C, H, W) image (see
    :func:`apply_polarity`)."""
    check_choice(polarity, POLARITIES, name="polarity")
    if polarity == "pool":
        raise ValueError(
            "polarity='pool' is decided once from the project's images, not per image: resolve "
            "it first, e.g. config.replace(polarity=decide_polarity(images)) with the pool's "
            "normalised images (core.preprocess.decide_polarity), or pass 'invert' or 'none'.")
    if polarity == "auto":
        return is_bright_background(image)
    if margin is None:
        return polarity == "invert"
    level = background_level(image)
    if polarity == "invert":
        return not level < BRIGHT_THRESHOLD - margin
    return level > BRIGHT_THRESHOLD + margin


def apply_polarity(image: np.ndarray, polarity: str = "auto", *,
                   margin: float | None = None) -> np.ndarray:
    """A normalised (C, H, W) float32 image under a concrete polarity rule.

    ``"invert"`` returns ``1 - x``; ``"none"`` the image itself (no copy). With a ``margin``
    an image whose background level (:func:`background_level`) is unmistakably of the other
    kind gets the other treatment: under ``"invert"`` one below ``0.5 - margin`` is left as it
    is, under ``"none"`` one above ``0.5 + margin`` is inverted. ``"auto"`` (models saved
    before per-project polarity; ``margin`` is ignored) inverts an image when *this* image has
    a bright background (level above 0.5).

    Raises
    ------
    ValueError
        For ``"pool"``, which is decided from the whole pool, not from one image: resolve it
        first (:func:`resolve_polarity`, :func:`decide_polarity`).
    """
    if inverts(image, polarity, margin):
        return (1.0 - image).astype(np.float32, copy=False)
    return image


def channels_convertible(n: int, expected: int) -> bool:
    """Whether :func:`match_channels` turns an ``n``-channel image into ``expected`` channels:
    the same count, gray to any count (repeated), or RGB to gray (channel mean)."""
    return n == expected or n == 1 or (expected == 1 and n == 3)


def common_channel_count(counts: Sequence[int]) -> int | None:
    """The channel count a model for these images takes: the most common one (a tie goes to
    the larger count, so colour is not thrown away); None for no image."""
    if len(counts) == 0:
        return None
    values, freq = np.unique(np.asarray(counts, int), return_counts=True)
    return int(values[freq == freq.max()].max())


def match_channels(image: np.ndarray, channels: int, *, name: str = "The image") -> np.ndarray:
    """A normalised (C, H, W) image with ``channels`` channels (see :func:`channels_convertible`).

    Raises
    ------
    ValueError
        For a mismatch with no sensible conversion (e.g. 2 or 4 channels against 3), naming
        both counts.
    """
    n = int(image.shape[0])
    if n == channels:
        return image
    if not channels_convertible(n, channels):
        raise ValueError(
            f"{name} has {n} channel(s) but the model takes {channels}; only gray <-> RGB is "
            f"converted automatically. Convert it to {channels} channel(s), or pass the channel "
            "axis of a TIFF stack.")
    if n == 1:
        return np.ascontiguousarray(np.broadcast_to(image, (channels, *image.shape[1:])))
    return image.mean(axis=0, keepdims=True, dtype=np.float32)


def prepare_image(
    image: np.ndarray, *, polarity: str = "auto", polarity_margin: float | None = None,
    channel_axis: int | None = None, channels: int | None = None, low: float = 1.0,
    high: float = 99.8,
) -> np.ndarray:
    """Raw image ((H, W) or (H, W, C), any dtype) -> network input (C, H, W) float32.

    ``polarity``, ``polarity_margin``: the model's rule (:func:`apply_polarity`).
    ``channels``: the model's channel count; the image is matched to it with
    :func:`match_channels` (None leaves the image's own count).
    """
    norm = normalize_image(image, low=low, high=high, channel_axis=channel_axis)
    if channels is not None:
        norm = match_channels(norm, channels)
    return apply_polarity(norm, polarity, margin=polarity_margin)
