"""From a raw image to the network's input: percentile normalisation, then polarity.

Microscopy pools often mix modalities: fluorescence (bright objects on a dark background) and
brightfield or stained tissue (dark objects on a bright background). With ``polarity="auto"``
an image whose normalised median (mean over channels) lies above 0.5, i.e. whose background is
bright, is inverted (``1 - x``), so every image reaches the network with a dark background. This
is a deterministic function of the image, applied identically in training and prediction and
saved with the model configuration; ``polarity="none"`` turns it off.

A folder may also mix gray and RGB files (the same microscope exported by two programs). One
model takes one channel count, so an image is matched to it (:func:`match_channels`): a gray
image is repeated on every channel of an RGB model, an RGB image becomes gray (the mean of its
normalised channels) for a gray model. Any other mismatch is refused with a clear message.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .imageio import normalize_image
from .validation import check_choice

POLARITIES = ("auto", "none")


def is_bright_background(image: np.ndarray) -> bool:
    """True when a normalised (C, H, W) image has a bright background (median above 0.5)."""
    img = np.asarray(image)
    step = max(1, int(np.sqrt(img.shape[-1] * img.shape[-2] / 250_000)))
    sample = img[..., ::step, ::step].mean(axis=0)
    return bool(np.median(sample) > 0.5)


def apply_polarity(image: np.ndarray, polarity: str = "auto") -> np.ndarray:
    """Invert a normalised (C, H, W) float32 image if ``polarity="auto"`` finds a bright
    background; return it unchanged otherwise (no copy)."""
    check_choice(polarity, POLARITIES, name="polarity")
    if polarity == "auto" and is_bright_background(image):
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
    image: np.ndarray, *, polarity: str = "auto", channel_axis: int | None = None,
    channels: int | None = None, low: float = 1.0, high: float = 99.8,
) -> np.ndarray:
    """Raw image ((H, W) or (H, W, C), any dtype) -> network input (C, H, W) float32.

    ``channels``: the model's channel count; the image is matched to it with
    :func:`match_channels` (None leaves the image's own count).
    """
    norm = normalize_image(image, low=low, high=high, channel_axis=channel_axis)
    if channels is not None:
        norm = match_channels(norm, channels)
    return apply_polarity(norm, polarity)
