"""What a correction says: the labels to save and which pixels the user actually reviewed.

The annotation the user corrects starts as the model's prediction, so most of its pixels were
never looked at. Only what the user *did* counts as ground truth (DESIGN.md: the reviewed
mask):

- the suggested boxes they were asked to review, whole;
- their scribbles: strokes on a separate layer whose value is ``class + 1`` (0 = unlabelled,
  napari's eraser), which also override the annotation under them;
- the pixels they changed in the annotation itself (a correction is a review of that pixel);
- or, in whole-image mode, the whole image.

:func:`compose_review` turns those into ``(labels, reviewed)`` for
:meth:`~.session.ActiveLearningSession.submit`, with clear errors for a box outside the image,
a scribble value out of range or a mask of the wrong shape -- before anything is written.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["box_mask", "compose_review"]


def box_mask(shape: tuple[int, int], boxes: Sequence[Sequence[int]], *,
             clip: bool = False) -> np.ndarray:
    """``(H, W)`` bool mask of the union of ``(y0, x0, y1, x1)`` boxes (half-open).

    With ``clip`` the parts of a box outside the image are dropped (a benchmark's windows at
    the border); without it such a box is an error.

    Raises
    ------
    ValueError
        For a box that is not four numbers, or (without ``clip``) is empty or reaches outside
        the image, naming it.
    """
    h, w = (int(s) for s in shape)
    mask = np.zeros((h, w), bool)
    for box in boxes:
        if len(box) != 4:
            raise ValueError(f"A box is (y0, x0, y1, x1), got {tuple(box)!r}.")
        y0, x0, y1, x1 = (int(v) for v in box)
        if clip:
            y0, x0, y1, x1 = max(0, y0), max(0, x0), min(h, y1), min(w, x1)
        elif not (0 <= y0 < y1 <= h and 0 <= x0 < x1 <= w):
            raise ValueError(
                f"Box {(y0, x0, y1, x1)} is empty or outside the {h} x {w} image; a box is "
                f"(y0, x0, y1, x1) with 0 <= y0 < y1 <= {h} and 0 <= x0 < x1 <= {w}.")
        if y1 > y0 and x1 > x0:
            mask[y0:y1, x0:x1] = True
    return mask


def compose_review(
    labels: np.ndarray,
    *,
    n_classes: int,
    boxes: Sequence[Sequence[int]] = (),
    scribbles: np.ndarray | None = None,
    shown: np.ndarray | None = None,
    reviewed: np.ndarray | None = None,
    whole: bool = False,
) -> tuple[np.ndarray, np.ndarray | None]:
    """The labels to submit and the pixels they are ground truth for.

    Parameters
    ----------
    labels : (H, W) integer ndarray
        The corrected annotation (class map, 0 = background).
    n_classes : int
    boxes : sequence of (y0, x0, y1, x1)
        The boxes the user was asked to review.
    scribbles : (H, W) integer ndarray, optional
        Strokes, ``class + 1`` per pixel, 0 = not scribbled; they override ``labels``.
    shown : (H, W) ndarray, optional
        The annotation as it was shown: pixels where ``labels`` differs from it were edited,
        hence reviewed.
    reviewed : (H, W) bool ndarray, optional
        Pixels already reviewed in this correction before it was shown this time (a draft
        restored after a crash carries them).
    whole : bool
        The whole image was reviewed (whole-image mode).

    Returns
    -------
    labels : (H, W) ndarray
        ``labels`` with the scribbles burnt in (a copy when there are scribbles).
    reviewed : (H, W) bool ndarray or None
        None when the whole image is reviewed.

    Raises
    ------
    ValueError
        If shapes disagree, a box lies outside the image, a scribble value exceeds the
        classes, or nothing at all was reviewed (say which tools would review something).
    """
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"labels must be an (H, W) class map, got shape {labels.shape}.")
    shape = labels.shape
    for name, arr in (("scribbles", scribbles), ("shown", shown), ("reviewed", reviewed)):
        if arr is not None and np.shape(arr) != shape:
            raise ValueError(f"The {name} layer has shape {np.shape(arr)} but the annotation is "
                             f"{shape}; they must cover the same image.")
    pending = reviewed
    reviewed = box_mask(shape, boxes)
    if pending is not None:
        reviewed |= np.asarray(pending, bool)
    out = labels
    if scribbles is not None:
        scr = np.asarray(scribbles)
        if scr.size and (scr.min() < 0 or scr.max() > n_classes):
            bad = int(scr.max()) if scr.max() > n_classes else int(scr.min())
            raise ValueError(
                f"A scribble has value {bad}, but scribble values are class + 1 (1..{n_classes} "
                f"for the {n_classes} classes) and 0 for unlabelled; repaint it with one of the "
                "class brushes.")
        painted = scr > 0
        if painted.any():
            out = labels.copy()
            out[painted] = (scr[painted] - 1).astype(labels.dtype, copy=False)
            reviewed |= painted
    if shown is not None:
        reviewed |= np.asarray(out) != np.asarray(shown)
    if whole:
        return out, None
    if not reviewed.any():
        raise ValueError(
            "Nothing was reviewed: no suggested box, no scribble and no edit. Paint scribbles, "
            "correct the annotation, or submit in whole-image mode (untick 'boxes') to accept "
            "the whole image as it is.")
    return out, (None if reviewed.all() else reviewed)
