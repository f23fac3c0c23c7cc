"""From a per-pixel uncertainty map to one candidate score.

:func:`aggregate` reduces a map (``topk`` mean, ``mean``, ``sum`` or ``max``), optionally over
the pixels :func:`restriction_mask` keeps (the predicted foreground, or a band around the
predicted boundary). :data:`ONE_PASS_MAPS` computes the one-pass maps from the mean
probabilities when a candidate does not carry them.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .. import uncertainty as unc
from ..validation import check_choice, check_positive

__all__ = ["AGGREGATIONS", "ONE_PASS_MAPS", "aggregate", "check_fraction", "restriction_mask"]

AGGREGATIONS = ("topk", "mean", "sum", "max")

#: The maps a strategy can compute itself from a candidate's mean probabilities ``(K, H, W)``.
ONE_PASS_MAPS = {
    "entropy": unc.entropy,
    "margin": unc.margin,
    "least_confidence": unc.least_confidence,
}


def _disk(radius: int) -> np.ndarray:
    r = int(radius)
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
    return yy * yy + xx * xx <= r * r


def restriction_mask(
    probs: np.ndarray, *, foreground_only: bool = False, boundary_band: int = 0
) -> np.ndarray | None:
    """Pixels an aggregation is restricted to, from the predicted segmentation.

    Parameters
    ----------
    probs : (K, H, W) ndarray
        Class probabilities; the prediction is their arg-max, foreground = class > 0.
    foreground_only : bool
        Keep the predicted foreground (widened by ``boundary_band`` px, Euclidean disk).
    boundary_band : int
        Without ``foreground_only``: keep the band of pixels within ``boundary_band`` px of the
        predicted foreground/background boundary, on both sides (where the uncertainty of thin
        structures -- vessels, membranes -- lives).

    Returns
    -------
    (H, W) bool ndarray, or None when nothing is restricted
        May be all False (e.g. no predicted foreground); :func:`aggregate` then falls back to
        the whole map.
    """
    if not foreground_only and boundary_band <= 0:
        return None
    from scipy import ndimage as ndi

    p = np.asarray(probs)
    if p.ndim != 3:
        raise ValueError(f"probs must be (K, H, W) to restrict to the predicted foreground, got "
                         f"shape {p.shape}.")
    fg = p.argmax(axis=0) > 0
    if not fg.any():
        return fg
    band = int(boundary_band)
    if foreground_only:
        return ndi.binary_dilation(fg, structure=_disk(band)) if band > 0 else fg
    if fg.all():
        return ~fg
    fp = _disk(band)
    outer = ndi.binary_dilation(fg, structure=fp) & ~fg
    # erosion with a border of background so the image edge does not count as a boundary
    inner = fg & ~ndi.binary_erosion(fg, structure=fp, border_value=1)
    return outer | inner


def aggregate(
    map_: np.ndarray,
    *,
    how: str = "topk",
    topk_fraction: float = 0.1,
    probs: np.ndarray | None = None,
    foreground_only: bool = False,
    boundary_band: int = 0,
) -> float:
    """Reduce a per-pixel uncertainty map to one score.

    Parameters
    ----------
    map_ : (H, W) float ndarray
        Higher = more uncertain.
    how : {"topk", "mean", "sum", "max"}
        ``topk``: mean of the ``ceil(topk_fraction * n)`` largest values (at least one), which
        neither drowns a small uncertain structure in a large easy background (``mean``) nor
        follows a single noisy pixel (``max``). ``sum`` grows with the area (bigger images or
        regions score higher).
    topk_fraction : float in (0, 1]
    probs : (K, H, W) ndarray, optional
        Needed for ``foreground_only`` / ``boundary_band`` (see :func:`restriction_mask`).
    foreground_only, boundary_band
        Restrict to the predicted foreground (plus a band) or to a band around the predicted
        boundary. An empty restriction falls back to the whole map.

    Returns
    -------
    float
    """
    m = np.asarray(map_, dtype=np.float64)
    if m.ndim != 2 or m.size == 0:
        raise ValueError(f"Expected a non-empty (H, W) map, got shape {m.shape}.")
    if not np.isfinite(m).all():
        raise ValueError("The uncertainty map contains NaN or infinite values.")
    check_choice(how, AGGREGATIONS, name="aggregation")
    check_fraction(topk_fraction)
    band = check_positive(boundary_band, name="boundary_band", allow_zero=True, integer=True)
    if foreground_only or band > 0:
        if probs is None:
            raise ValueError("foreground_only / boundary_band need the class probabilities "
                             "(probs=) to find the predicted foreground.")
        if np.shape(probs)[1:] != m.shape:
            raise ValueError(f"probs {np.shape(probs)} and the map {m.shape} differ in size.")
        mask = restriction_mask(probs, foreground_only=foreground_only, boundary_band=band)
        vals = m[mask] if mask is not None and mask.any() else m.ravel()
    else:
        vals = m.ravel()
    if how == "mean":
        return float(vals.mean())
    if how == "sum":
        return float(vals.sum())
    if how == "max":
        return float(vals.max())
    n = max(1, math.ceil(topk_fraction * vals.size))
    return float(np.partition(vals, vals.size - n)[vals.size - n:].mean())


def check_fraction(value: Any) -> float:
    """``topk_fraction`` as a float in (0, 1], or a ValueError that says what it means."""
    value = check_positive(value, name="topk_fraction")
    if value > 1:
        raise ValueError(f"topk_fraction must be in (0, 1], got {value!r} (0.1 = top 10%).")
    return float(value)
