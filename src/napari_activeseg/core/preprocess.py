"""From a raw image to the network's input: percentile normalisation, then polarity.

Microscopy pools often mix modalities: fluorescence (bright objects on a dark background) and
brightfield or stained tissue (dark objects on a bright background). With ``polarity="auto"``
an image whose normalised median (mean over channels) lies above 0.5, i.e. whose background is
bright, is inverted (``1 - x``), so every image reaches the network with a dark background. This
is a deterministic function of the image, applied identically in training and prediction and
saved with the model configuration; ``polarity="none"`` turns it off.
"""

from __future__ import annotations

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


def prepare_image(
    image: np.ndarray, *, polarity: str = "auto", channel_axis: int | None = None,
    low: float = 1.0, high: float = 99.8,
) -> np.ndarray:
    """Raw image ((H, W) or (H, W, C), any dtype) -> network input (C, H, W) float32."""
    return apply_polarity(normalize_image(image, low=low, high=high, channel_axis=channel_axis),
                          polarity)
