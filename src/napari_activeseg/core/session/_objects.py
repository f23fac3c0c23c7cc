"""The session's calls for classes in "objects" mode (issue 18 items 2-3): what to show in an
image's objects layer (the stored objects where reviewed, the model's elsewhere, each with its
uncertainty), which pixels a correction of the objects reviewed, and submitting them.

:class:`ObjectsCalls` is mixed into :class:`~._session.ActiveLearningSession`; it uses the
session's project, ``predict_instances``, ``submit`` and its annotation desk, and keeps no
state of its own.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..object_uncertainty import (
    ObjectEffortEstimate,
    ObjectUncertainty,
    estimate_object_effort,
    object_uncertainty,
)

__all__ = ["ObjectsCalls", "ObjectsView"]


@dataclass(frozen=True)
class ObjectsView:
    """The objects of one image to correct.

    Attributes
    ----------
    image_id : int
    class_name : str
        The object class (the first one, when there are several).
    instances : (H, W) uint16 ndarray
        One id per object, ``1..N``: the stored objects where the image was reviewed, the
        current model's elsewhere (none before the first model).
    uncertainty : ObjectUncertainty or None
        Per object of ``instances`` (None before the first model).
    effort : ObjectEffortEstimate or None
        The objects likely to be removed, split/merged or added.
    """

    image_id: int
    class_name: str
    instances: np.ndarray
    uncertainty: ObjectUncertainty | None
    effort: ObjectEffortEstimate | None

    @property
    def next_id(self) -> int:
        """The id a new object gets (napari's "new label")."""
        return int(self.instances.max(initial=0)) + 1


def _combine(stored: np.ndarray, reviewed: np.ndarray | None, predicted: np.ndarray | None
             ) -> np.ndarray:
    """Stored objects where reviewed, predicted ones elsewhere, renumbered ``1..N``."""
    from skimage.segmentation import relabel_sequential

    if reviewed is None or predicted is None:
        return stored.astype(np.uint16)
    truth = np.where(reviewed, stored, 0).astype(np.int64)
    guess = np.where(reviewed, 0, predicted).astype(np.int64)
    merged = np.where(guess > 0, guess + int(truth.max(initial=0)), truth)
    return relabel_sequential(merged)[0].astype(np.uint16)


class ObjectsCalls:
    """Mixin of the session: objects layer, review and submission of the object classes."""

    def _object_class(self) -> int:
        objects = self.project.object_classes
        if not objects:
            raise ValueError("No class is in 'objects' mode: set one with "
                             "session.set_class_modes({'nucleus': 'objects'}) first.")
        return int(objects[0])

    def objects_view(self, image_id: int) -> ObjectsView:
        """What to show in the image's objects layer (predicts: call it off the GUI thread).
        The objects shown are remembered, so the submission's effort counts objects added and
        removed against them."""
        c = self._object_class()
        pred = self.predict_instances(image_id)
        shape = self.project.get_image(image_id).shape[:2]
        predicted = None if pred is None else pred.instances
        stored = self.project.load_instances(image_id)
        if stored is not None:
            ids = _combine(stored[0], stored[1], predicted)
        else:
            ids = np.zeros(shape, np.uint16) if predicted is None else predicted.astype(np.uint16)
        ou = effort = None
        if pred is not None:
            ou = object_uncertainty(ids, pred.probs)
            effort = estimate_object_effort(ids, pred.probs, per_object=ou)
        self._desk.mark_objects_shown(image_id, ids)
        return ObjectsView(image_id, self.project.classes[c], ids, ou, effort)

    def review_objects(self, image_id: int, instances: np.ndarray, *,
                       labels: np.ndarray | None = None, scribbles: np.ndarray | None = None,
                       whole: bool = False
                       ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """``(instances, area labels or None, reviewed)`` that a correction of the objects of
        the last :meth:`view` amounts to: its boxes, the scribbles, the pixels whose object
        changed (painted, erased, split or merged) -- or the whole image. ``labels``: the
        class map of the "area" classes, if the project has any (its object-class pixels are
        ignored). A background scribble erases objects; an object-class scribble outside
        every object becomes a new object. ValueError when nothing was reviewed."""
        from scipy import ndimage as ndi

        c = self._object_class()
        ids = np.asarray(instances)
        objects = list(self.project.object_classes)
        area = np.zeros(ids.shape, np.uint8) if labels is None else \
            np.where(np.isin(labels, objects), 0, labels).astype(np.uint8)
        shown_ids = self._desk.shown_objects(image_id)
        if shown_ids is not None and shown_ids.shape != ids.shape:
            shown_ids = None
        shown = None if shown_ids is None else np.where(shown_ids > 0, c, area)
        # a split or a merge changes ids only: its pixels are reviewed too
        edited = None if shown_ids is None else ids != shown_ids
        composed, reviewed = self._desk.review(image_id, np.where(ids > 0, c, area),
                                               scribbles=scribbles, whole=whole, shown=shown,
                                               edited=edited)
        ids = np.where(composed == c, ids, 0)
        fresh, n = ndi.label((composed == c) & (ids == 0))
        if n:
            ids = np.where(fresh > 0, fresh + int(ids.max(initial=0)), ids)
        has_area = self.project.n_classes > 1 + len(objects)
        area = np.where(np.isin(composed, objects), 0, composed) if has_area else None
        return ids, area, reviewed

    def submit_instances(self, image_id: int, instances: np.ndarray,
                         reviewed: np.ndarray | None = None, *, labels: np.ndarray | None = None,
                         suggestion_id: int | None = None, merge: bool = True) -> int:
        """Save an image's objects (one id per object; :meth:`submit` with ``instances``):
        the signals, the auto-train count and the suggestion's bookkeeping are a submission's;
        the effort counts objects added and removed against the objects shown by
        :meth:`objects_view`. ``labels``: the "area" classes' class map, if any."""
        return self.submit(image_id, labels, reviewed, suggestion_id=suggestion_id,
                           merge=merge, instances=instances)

    def submit_objects_correction(self, image_id: int, instances: np.ndarray, *,
                                  labels: np.ndarray | None = None,
                                  scribbles: np.ndarray | None = None,
                                  whole: bool = False) -> int:
        """Submit what the user reviewed of the objects (see :meth:`review_objects`);
        nothing is written when nothing was reviewed (ValueError)."""
        ids, area, reviewed = self.review_objects(image_id, instances, labels=labels,
                                                  scribbles=scribbles, whole=whole)
        return self.submit_instances(image_id, ids, reviewed, labels=area)
