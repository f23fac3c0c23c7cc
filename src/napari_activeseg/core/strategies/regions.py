"""Region-level candidates: windows inside large images, and their correction cost.

A biologist with three huge images needs to be told *where* to look. :func:`region_candidates`
cuts an image's prediction into windows (each a :class:`.datatypes.Candidate` with a ``box`` and
cropped probabilities/maps), so every strategy scores regions exactly as it scores images, and
regions of several images compete in one ranking.

Windows: with the default ``stride = size`` the windows tile the image exactly (no overlap, no
gap); a last strip thinner than ``min_size`` is merged into the window before it (which then
grows up to ``size + min_size - 1``) instead of becoming a sliver. An image side shorter than
``size`` is one window along that side. ``stride < size`` gives overlapping full-size windows,
the last one flush with the image edge.

Cost (for ``cost_aware`` strategies): :func:`correction_cost` is the predicted boundary length
in pixels (number of 4-neighbour pairs with different predicted classes: what a corrector
traces) plus a constant per window (opening, inspecting and submitting it).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from ..validation import check_positive
from .datatypes import Box, Candidate

__all__ = ["auto_region_size", "boundary_length", "correction_cost", "region_boxes",
           "region_candidates", "region_key", "reviewed_fraction", "window_spans"]

#: Bounds of :func:`auto_region_size`: a box smaller than ~96 px holds too little context to
#: judge (and is dominated by the per-box overhead of opening and submitting it); one larger
#: than 256 px is no longer "a region" but most of a typical field of view.
REGION_SIZE_RANGE = (96, 256)


def auto_region_size(shapes, *, receptive_field: int | None = None) -> int:
    """The side of the suggested boxes for a pool of images, decided once from the data.

    Half the median short side of the images, rounded down to a multiple of 16 and clipped to
    :data:`REGION_SIZE_RANGE`; never below twice the network's receptive field (a box narrower
    than that is judged on the padding around it) nor above the median short side itself (so a
    small-image pool still gets whole-image boxes rather than slivers).

    Parameters
    ----------
    shapes : sequence of (H, W, ...) tuples
        The pool's image shapes (only the first two entries are read).
    receptive_field : int, optional
        The model's receptive field in pixels.

    Returns
    -------
    int
    """
    sides = [min(int(s[0]), int(s[1])) for s in shapes]
    if not sides:
        raise ValueError("auto_region_size needs the shape of at least one image.")
    low, high = REGION_SIZE_RANGE
    if receptive_field is not None:
        low = max(low, 2 * int(receptive_field))
    median = int(np.median(sides))
    size = max(low, min(high, (median // 2) // 16 * 16))
    return int(max(16, min(size, median)))


def reviewed_fraction(reviewed, box) -> float:
    """Fraction of a box's pixels already reviewed (``reviewed`` None = nothing reviewed)."""
    if reviewed is None:
        return 0.0
    y0, x0, y1, x1 = box
    window = np.asarray(reviewed[y0:y1, x0:x1])  # a large image's mask reads the window only
    return float(window.mean()) if window.size else 1.0


def region_key(image_id: str, box: Box) -> str:
    """``"img@y0,x0,y1,x1"``: the candidate key of a region."""
    y0, x0, y1, x1 = box
    return f"{image_id}@{y0},{x0},{y1},{x1}"


def window_spans(length: int, size: int, stride: int | None = None,
                 min_size: int = 64) -> list[tuple[int, int]]:
    """Half-open ``(start, stop)`` spans covering ``[0, length)`` (see the module docstring)."""
    length = check_positive(length, name="length", integer=True)
    size = check_positive(size, name="size", integer=True)
    stride = size if stride is None else check_positive(stride, name="stride", integer=True)
    min_size = check_positive(min_size, name="min_size", integer=True)
    if stride > size:
        raise ValueError(f"stride ({stride}) must be <= size ({size}), or windows leave gaps.")
    if min_size > size:
        raise ValueError(f"min_size ({min_size}) must be <= size ({size}).")
    if length <= size:
        return [(0, length)]
    if stride == size:
        spans = [(s, min(s + size, length)) for s in range(0, length, size)]
        if spans[-1][1] - spans[-1][0] < min_size:
            spans.pop()
            spans[-1] = (spans[-1][0], length)  # merge the sliver into the window before it
        return spans
    # overlapping windows of full size; the last one flush with the edge
    spans = []
    start = 0
    while start + size < length:
        spans.append((start, start + size))
        start += stride
    spans.append((length - size, length))
    return spans


def region_boxes(shape: tuple[int, int], *, size: int = 256, stride: int | None = None,
                 min_size: int = 64) -> list[Box]:
    """``(y0, x0, y1, x1)`` windows of an ``(H, W)`` image, row-major."""
    h, w = (int(s) for s in shape)
    ys = window_spans(h, size, stride, min(min_size, size))
    xs = window_spans(w, size, stride, min(min_size, size))
    return [(y0, x0, y1, x1) for y0, y1 in ys for x0, x1 in xs]


def region_candidates(
    image_id: str,
    probs: np.ndarray | None,
    maps: Mapping[str, np.ndarray] | None = None,
    *,
    size: int = 256,
    stride: int | None = None,
    min_size: int = 64,
    image: np.ndarray | None = None,
    labelled: bool = False,
) -> list[Candidate]:
    """Candidates for the windows of one image.

    Parameters
    ----------
    image_id : str
    probs : (K, H, W) ndarray or None
        Mean class probabilities of the whole image (None only if ``maps`` is given).
    maps : dict of str -> (H, W) ndarray, optional
        Uncertainty maps of the whole image (including ``"grad_norm"`` for ALGES).
    size, stride, min_size : int
        Window geometry (module docstring).
    image : (C, H, W) ndarray, optional
        Cropped into each candidate's ``image`` (for descriptors or task_similarity).
    labelled : bool

    Returns
    -------
    list of Candidate
        One per window, key ``region_key(image_id, box)``; arrays are views (no copies).
        ``features`` / ``embedding`` are left None: compute them on the crops
        (``image_descriptor(model, cand.image)``) if the strategy needs them.
    """
    maps = dict(maps or {})
    shapes = {name: np.shape(m) for name, m in maps.items()}
    if probs is not None:
        probs = np.asarray(probs)
        if probs.ndim != 3:
            raise ValueError(f"probs must be (K, H, W), got shape {probs.shape}.")
        hw = probs.shape[1:]
    elif maps:
        hw = next(iter(shapes.values()))
    else:
        raise ValueError("region_candidates needs probs or at least one map.")
    bad = {n: s for n, s in shapes.items() if tuple(s) != tuple(hw)}
    if bad:
        raise ValueError(f"Maps {bad} do not match the image size {tuple(hw)}.")
    if image is not None and np.shape(image)[-2:] != tuple(hw):
        raise ValueError(f"image {np.shape(image)} does not match the prediction size {hw}.")
    out = []
    for box in region_boxes(hw, size=size, stride=stride, min_size=min_size):
        y0, x0, y1, x1 = box
        out.append(Candidate(
            key=region_key(image_id, box), image_id=image_id, box=box,
            probs=None if probs is None else probs[:, y0:y1, x0:x1],
            maps={n: np.asarray(m)[y0:y1, x0:x1] for n, m in maps.items()},
            image=None if image is None else np.asarray(image)[..., y0:y1, x0:x1],
            labelled=labelled,
        ))
    return out


def boundary_length(labels: np.ndarray) -> int:
    """Number of 4-neighbour pixel pairs with different labels in an ``(H, W)`` label map."""
    lab = np.asarray(labels)
    if lab.ndim != 2:
        raise ValueError(f"labels must be (H, W), got shape {lab.shape}.")
    return int(np.count_nonzero(lab[1:] != lab[:-1]) + np.count_nonzero(lab[:, 1:] != lab[:, :-1]))


def correction_cost(probs: np.ndarray, *, constant: float = 64.0) -> float:
    """Estimated effort to correct a candidate: predicted boundary length + ``constant``.

    Parameters
    ----------
    probs : (K, H, W) ndarray
        Class probabilities of the candidate (cropped for a region).
    constant : float
        Fixed effort per candidate, in boundary-pixel units (64 ~ a quarter of a 256 px
        window's side): keeps empty windows from looking free.

    Returns
    -------
    float, > 0 when ``constant`` > 0
    """
    if probs is None:
        raise ValueError("correction_cost needs the candidate's class probabilities (probs).")
    p = np.asarray(probs)
    if p.ndim != 3:
        raise ValueError(f"probs must be (K, H, W), got shape {p.shape}.")
    return float(boundary_length(p.argmax(axis=0)) + float(constant))
