"""The session's calls for classes in "objects" mode (issue 18 items 2-3): what to show in an
image's objects layers (its draft; else the stored objects where reviewed, the model's
elsewhere, each with its uncertainty), which pixels a correction of the objects reviewed,
drafts of objects, and submitting them.

Each object class has its own layer of ids (one :class:`ObjectsView` each): a new label
painted in "objects: nucleus" is a nucleus, as napari users expect of a Labels layer (one
layer per kind of object, as Cellpose/StarDist outputs are), rather than one layer whose ids
would need a class picked per id. The calls take one id image per object class (a mapping
of class name to ids; a bare array when there is one object class). Inside, the layers are
one id image where id ``k`` of the ``s``-th object class is ``k * n + s`` (``n`` object
classes): unique across classes and unchanged by an edit of another class's layer, so the
pixels whose object changed are exactly those edited; ids are renumbered ``1..N`` before
they are stored, the class map carrying each object's class.

:class:`ObjectsCalls` is mixed into :class:`~._session.ActiveLearningSession`; it uses the
session's project, ``predict_instances``, ``submit`` and its annotation desk, and keeps no
state of its own.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from skimage.segmentation import relabel_sequential

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
        The object class of this layer.
    instances : (H, W) uint16 ndarray
        One id per object of the class, ``1..N``: the image's draft if it has one; else the
        stored objects where the image was reviewed, the current model's elsewhere (none
        before the first model).
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
    if reviewed is None or predicted is None:
        return stored.astype(np.uint16)
    truth = np.where(reviewed, stored, 0).astype(np.int64)
    guess = np.where(reviewed, 0, predicted).astype(np.int64)
    merged = np.where(guess > 0, guess + int(truth.max(initial=0)), truth)
    return relabel_sequential(merged)[0].astype(np.uint16)


class ObjectsCalls:
    """Mixin of the session: objects layers, review, drafts and submission of the object
    classes."""

    def _objects(self) -> tuple[int, ...]:
        objects = tuple(int(c) for c in self.project.object_classes)
        if not objects:
            raise ValueError("No class is in 'objects' mode: set one with "
                             "session.set_class_modes({'nucleus': 'objects'}) first.")
        return objects

    def _encode(self, instances, shape: tuple[int, ...] | None = None) -> np.ndarray:
        """One id image of every object class's layer (module docstring); ValueError for a
        missing or unknown class, a wrong shape, or a pixel in two classes' objects."""
        objects, classes = self._objects(), self.project.classes
        names = [classes[c] for c in objects]
        if not isinstance(instances, Mapping):
            if len(objects) > 1:
                raise ValueError(f"The project has several object classes {names}: give one "
                                 "id image per class, {name: ids}.")
            instances = {names[0]: instances}
        unknown = sorted(set(instances) - set(names))
        if unknown:
            raise ValueError(f"{unknown} are not object classes of the project ({names}).")
        layers = {k: np.asarray(v) for k, v in instances.items()}
        shapes = {a.shape for a in layers.values()} | ({tuple(shape)} if shape else set())
        if len(shapes) != 1:
            raise ValueError(f"The objects' shapes {sorted(shapes)} differ; every layer must "
                             "have the image's shape.")
        n = len(objects)
        out = np.zeros(next(iter(shapes)), np.int64)
        for slot, name in enumerate(names):
            ids = layers.get(name)
            if ids is None:
                continue
            if ids.size and (not np.issubdtype(ids.dtype, np.integer) or ids.min() < 0):
                raise ValueError(f"The objects of {name!r} must be non-negative integer ids.")
            both = int(np.count_nonzero((ids > 0) & (out > 0)))
            if both:
                raise ValueError(f"{both} pixel(s) are in an object of {name!r} and of another "
                                 "object class; erase them from one of the layers.")
            out = np.where(ids > 0, ids.astype(np.int64) * n + slot, out)
        return out

    def _classes_of(self, encoded: np.ndarray, other: np.ndarray | int = 0) -> np.ndarray:
        """The class map of encoded ids (``other`` where there is no object)."""
        objects = np.asarray(self._objects())
        return np.where(encoded > 0, objects[encoded % len(objects)], other)

    def objects_views(self, image_id: int) -> list[ObjectsView]:
        """What to show in the image's objects layers, one per object class (predicts: call
        it off the GUI thread). The objects shown are remembered, so the submission's effort
        counts objects added and removed against them."""
        objects = self._objects()
        pred = self.predict_instances(image_id)
        ids, class_map = self._objects_shown(image_id, pred)
        views, shown = [], np.zeros(ids.shape, np.int64)
        for slot, c in enumerate(objects):
            ids_c = relabel_sequential(np.where(class_map == c, ids, 0))[0].astype(np.uint16)
            shown = np.where(ids_c > 0, ids_c.astype(np.int64) * len(objects) + slot, shown)
            ou = effort = None
            if pred is not None:
                ou = object_uncertainty(ids_c, pred.probs)
                probs = pred.probs if len(objects) == 1 else np.stack(
                    [1.0 - pred.probs[c], pred.probs[c]])  # its objects to add: of class c
                effort = estimate_object_effort(ids_c, probs, per_object=ou)
            views.append(ObjectsView(image_id, self.project.classes[c], ids_c, ou, effort))
        self._desk.mark_objects_shown(image_id, shown)
        return views

    def objects_view(self, image_id: int, object_class: str | None = None) -> ObjectsView:
        """:meth:`objects_views` of one object class (default: the first)."""
        views = self.objects_views(image_id)
        if object_class is None:
            return views[0]
        for view in views:
            if view.class_name == object_class:
                return view
        raise ValueError(f"{object_class!r} is not an object class of the project "
                         f"({[v.class_name for v in views]}).")

    def _objects_shown(self, image_id: int, pred) -> tuple[np.ndarray, np.ndarray]:
        """``(ids, class map)`` of the objects to show: the draft's, else the stored ones
        where reviewed and the predicted ones elsewhere."""
        draft = self.project.load_objects_draft(image_id)
        if draft is not None:
            return draft
        shape = self.project.get_image(image_id).shape[:2]
        predicted = None if pred is None else pred.instances
        predicted_classes = None if pred is None else \
            np.asarray(pred.object_class)[pred.instances]
        stored = self.project.load_instances(image_id)
        if stored is None:
            if predicted is None:
                return np.zeros(shape, np.uint16), np.zeros(shape, np.uint8)
            return predicted.astype(np.uint16), predicted_classes
        stored_classes = self.project.load_labels(image_id)[0]
        ids = _combine(stored[0], stored[1], predicted)
        if stored[1] is None or predicted is None:
            return ids, stored_classes
        return ids, np.where(stored[1], stored_classes, predicted_classes)

    def review_objects(self, image_id: int, instances, *,
                       labels: np.ndarray | None = None, scribbles: np.ndarray | None = None,
                       whole: bool = False
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """``(instances, class map, reviewed)`` that a correction of the objects of the last
        :meth:`view` amounts to: its boxes, the scribbles, the pixels whose object changed
        (painted, erased, split or merged) -- or the whole image. ``instances``: the ids of
        each object class (``{name: ids}``; an array with one object class). ``labels``: the
        class map of the "area" classes, if the project has any (its object-class pixels are
        ignored). A background scribble erases objects; an object-class scribble outside
        every object becomes a new object. The instances returned are numbered ``1..N``
        over every class, the class map says each one's class. ValueError when nothing was
        reviewed."""
        from scipy import ndimage as ndi

        objects = self._objects()
        n = len(objects)
        ids = self._encode(instances)
        area = np.zeros(ids.shape, np.uint8) if labels is None else \
            np.where(np.isin(labels, objects), 0, labels).astype(np.uint8)
        shown_ids = self._desk.shown_objects(image_id)
        if shown_ids is not None and shown_ids.shape != ids.shape:
            shown_ids = None
        shown = None if shown_ids is None else self._classes_of(shown_ids, area)
        # a split or a merge changes ids only: its pixels are reviewed too
        edited = None if shown_ids is None else ids != shown_ids
        painted = self._classes_of(ids, area)
        composed, reviewed = self._desk.review(image_id, painted, scribbles=scribbles,
                                               whole=whole, shown=shown, edited=edited)
        ids = np.where((ids > 0) & (composed == painted), ids, 0)
        for slot, c in enumerate(objects):
            fresh, k = ndi.label((composed == c) & (ids == 0))
            if k:
                base = int(ids.max(initial=0)) // n + 1
                ids = np.where(fresh > 0, (fresh + base) * n + slot, ids)
        return relabel_sequential(ids)[0].astype(np.uint16), composed, reviewed

    def submit_instances(self, image_id: int, instances: np.ndarray,
                         reviewed: np.ndarray | None = None, *, labels: np.ndarray | None = None,
                         suggestion_id: int | None = None, merge: bool = True) -> int:
        """Save an image's objects (one id per object; :meth:`submit` with ``instances``):
        the signals, the auto-train count and the suggestion's bookkeeping are a submission's;
        the effort counts objects added and removed against the objects shown by
        :meth:`objects_view`. ``labels``: the "area" classes' class map, if any (with
        several object classes, the class map carrying each object's class)."""
        return self.submit(image_id, labels, reviewed, suggestion_id=suggestion_id,
                           merge=merge, instances=instances)

    def submit_objects_correction(self, image_id: int, instances, *,
                                  labels: np.ndarray | None = None,
                                  scribbles: np.ndarray | None = None,
                                  whole: bool = False) -> int:
        """Submit what the user reviewed of the objects (see :meth:`review_objects`; every
        object class at once); nothing is written when nothing was reviewed (ValueError).
        The image's draft is deleted."""
        ids, class_map, reviewed = self.review_objects(image_id, instances, labels=labels,
                                                       scribbles=scribbles, whole=whole)
        return self.submit_instances(image_id, ids, reviewed, labels=class_map)

    def save_objects_draft(self, image_id: int, instances, *,
                           labels: np.ndarray | None = None,
                           scribbles: np.ndarray | None = None) -> None:
        """Autosave the objects being corrected (and what they reviewed so far) as the
        image's draft (``Project.save_objects_draft``): :meth:`objects_views` shows it when
        the image is opened again, after a close or a crash; Submit deletes it."""
        encoded = self._encode(instances)  # bad input raises
        try:
            ids, class_map, reviewed = self.review_objects(
                image_id, instances, labels=labels, scribbles=scribbles)
        except ValueError:  # nothing reviewed yet, or a bad scribble: the objects alone
            area = np.zeros(encoded.shape, np.uint8) if labels is None else \
                np.where(np.isin(labels, self._objects()), 0, labels)
            ids, reviewed = relabel_sequential(encoded)[0].astype(np.uint16), None
            class_map = self._classes_of(encoded, area)
        self.project.save_objects_draft(image_id, ids, reviewed, labels=class_map)
