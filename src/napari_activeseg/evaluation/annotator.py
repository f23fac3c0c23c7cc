"""The simulated annotator: corrects a pre-annotation to the ground truth, perfectly.

A benchmark has the true masks, so the "annotator" needs no judgement: inside the area it
reviews (the whole image, or the suggested boxes in region mode) its final labels are the
ground truth. What the benchmark measures is the *effort* that took, with
:func:`~napari_activeseg.core.effort.correction_effort` (the same function that records the
effort of real submissions): pixels whose class it had to change from the pre-annotation shown
(the model's prediction, or an empty canvas before the first model), objects it had to draw
from nothing or delete, next to what annotating the same area from scratch would take.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..core.effort import Effort, correction_effort
from ..core.review import box_mask

__all__ = ["Annotation", "SimulatedAnnotator"]

Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class Annotation:
    """What the simulated annotator submits for one image, and what it cost.

    Attributes
    ----------
    labels : (H, W) ndarray
        The ground truth inside ``reviewed``, 0 elsewhere (ignored by training there).
    reviewed : (H, W) bool ndarray or None
        The pixels that count as ground truth; None = the whole image.
    effort : Effort
        Correction effort against the pre-annotation, counted inside the reviewed area.
    pixels_reviewed : int
        Size of the reviewed area in pixels (the x axis of region-mode learning curves).
    """

    labels: np.ndarray
    reviewed: np.ndarray | None
    effort: Effort
    pixels_reviewed: int

    def to_dict(self) -> dict[str, int]:
        """Effort counts and reviewed pixels as a flat dict of ints."""
        return {"pixels_reviewed": self.pixels_reviewed, **self.effort.to_dict()}


class SimulatedAnnotator:
    """An annotator who corrects every suggestion exactly to the ground truth.

    Examples
    --------
    >>> ann = SimulatedAnnotator().annotate(truth, pre=prediction)        # doctest: +SKIP
    >>> ann.effort.pixels_changed, ann.effort.objects_added               # doctest: +SKIP
    """

    def annotate(
        self,
        truth: np.ndarray,
        pre: np.ndarray | None = None,
        boxes: Sequence[Box] | None = None,
    ) -> Annotation:
        """Correct ``pre`` to ``truth`` inside the reviewed area.

        Parameters
        ----------
        truth : (H, W) int ndarray
            The true class map.
        pre : (H, W) int ndarray or None
            The pre-annotation shown (the model's prediction); None = an empty canvas.
        boxes : sequence of (y0, x0, y1, x1), optional
            Region mode: only these boxes are reviewed. None = the whole image.

        Returns
        -------
        Annotation
        """
        truth = np.asarray(truth)
        if truth.ndim != 2:
            raise ValueError(f"Expected an (H, W) ground-truth class map, got shape {truth.shape}.")
        if pre is not None and np.shape(pre) != truth.shape:
            raise ValueError(
                f"Pre-annotation shape {np.shape(pre)} differs from the ground truth's "
                f"{truth.shape}; predict at the image's resolution."
            )
        if boxes is None:
            reviewed = None
            labels = truth.copy()
            n_reviewed = int(truth.size)
        else:
            reviewed = box_mask(truth.shape, boxes, clip=True)
            n_reviewed = int(np.count_nonzero(reviewed))
            if n_reviewed == 0:
                raise ValueError(
                    f"The boxes {list(boxes)} cover no pixel of a {truth.shape} image."
                )
            labels = np.where(reviewed, truth, 0).astype(truth.dtype)
        effort = correction_effort(pre, truth, reviewed)
        return Annotation(labels, reviewed, effort, n_reviewed)
