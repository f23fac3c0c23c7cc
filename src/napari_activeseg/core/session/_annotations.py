"""The user's side of one image: what to show for correcting it, which pixels a correction
reviewed, drafts, and submitting or skipping it -- with the time spent, the correction effort
and the "hard" pixels that focus sampling trains on."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np

from ..effort import correction_effort, instance_effort
from ..inference import Prediction
from ..project import Project
from ..review import compose_review
from ._records import ImageView, Suggestion

FOCUS_CONFIDENCE = 0.8  # below this top-class probability a pixel counts as "unsure"

Predict = Callable[[int], Prediction | None]


class Annotations:
    """Views handed out, images shown (when, with which pre-annotation) and hard pixels, per
    image, for this process only; everything submitted goes to the project at once."""

    def __init__(self, project: Project) -> None:
        self.project = project
        self._shown: dict[int, tuple[float, np.ndarray | None, int | None]] = {}
        self._views: dict[int, ImageView] = {}  # the last view handed out per image
        self._focus: dict[int, np.ndarray] = {}  # image id -> hard pixels
        self._shown_objects: dict[int, np.ndarray] = {}  # image id -> the objects shown

    def mark_objects_shown(self, image_id: int, instances: np.ndarray) -> None:
        """The objects shown for correcting an image: its effort is then counted in
        objects (added / removed against them, touching objects one by one)."""
        self._shown_objects[image_id] = np.array(instances, copy=True)

    def focus(self, image_id: int) -> np.ndarray | None:
        """The hard pixels of the image's last submission, or None."""
        return self._focus.get(image_id)

    def annotation(self, image_id: int, predict: Predict) -> tuple[np.ndarray, np.ndarray | None]:
        """See :meth:`ActiveLearningSession.annotation` (``predict``: the current model's)."""
        reviewed = self.project.reviewed_mask(image_id)
        draft = self.project.load_draft(image_id)
        if draft is not None:
            return draft, reviewed
        pred = predict(image_id)
        shape = self.project.get_image(image_id).shape[:2]
        shown = pred.labels.copy() if pred is not None else np.zeros(shape, np.uint8)
        if reviewed is None or reviewed.any():
            loaded = self.project.load_labels(image_id)
            if loaded is not None:
                truth = loaded[0]
                shown = truth.copy() if reviewed is None else np.where(
                    reviewed, truth, shown).astype(truth.dtype)
        return shown, reviewed

    def view(self, image_id: int, suggestions: Sequence[Suggestion], predict: Predict
             ) -> ImageView:
        """See :meth:`ActiveLearningSession.view`."""
        rec = self.project.get_image(image_id)
        raw = self.project.load_image(image_id)
        pred = predict(image_id)
        labels, reviewed = self.annotation(image_id, predict)
        pending = self.project.load_draft_reviewed(image_id)
        if pending is not None and reviewed is not None:
            reviewed = reviewed | pending
        suggestions = tuple(suggestions)
        boxes = tuple(tuple(int(v) for v in s.box) for s in suggestions if s.box is not None)
        first = suggestions[0] if suggestions else None
        view = ImageView(image_id, rec.name, raw, np.array(labels), pred, reviewed, pending,
                         boxes, suggestions)
        self._views[image_id] = view
        self.mark_shown(image_id, None if pred is None else pred.labels,
                        None if first is None else first.suggestion_id)
        return view

    def mark_shown(self, image_id: int, pre_annotation: np.ndarray | None = None,
                   suggestion_id: int | None = None) -> None:
        self._shown[image_id] = (time.monotonic(), None if pre_annotation is None
                                 else np.array(pre_annotation, copy=True), suggestion_id)

    def shown_objects(self, image_id: int) -> np.ndarray | None:
        """The objects last shown for the image (:meth:`mark_objects_shown`), or None."""
        return self._shown_objects.get(image_id)

    def review(self, image_id: int, labels: np.ndarray, *, scribbles: np.ndarray | None = None,
               whole: bool = False, shown: np.ndarray | None = None,
               edited: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
        """See :meth:`ActiveLearningSession.review` (``shown``: the class map to count edits
        against, instead of the view's; ``edited``: pixels reviewed besides, e.g. where an
        object was split or merged without a change of class)."""
        view = self._views.get(image_id)
        if shown is None and view is not None:
            shown = view.labels
        pending = None if view is None else view.pending
        if edited is not None:
            pending = edited if pending is None else pending | edited
        return compose_review(
            labels, n_classes=self.project.n_classes,
            boxes=() if view is None else view.boxes, scribbles=scribbles,
            shown=shown, reviewed=pending, whole=whole)

    def save_draft(self, image_id: int, labels: np.ndarray, *,
                   scribbles: np.ndarray | None = None) -> None:
        try:
            labels, reviewed = self.review(image_id, labels, scribbles=scribbles)
        except ValueError:  # nothing reviewed yet, or a bad scribble: the labels alone
            reviewed = None
        self.project.save_draft(image_id, labels, reviewed)

    def submit(self, image_id: int, labels: np.ndarray | None, reviewed: np.ndarray | None, *,
               suggestion_id: int | None, merge: bool, model_version: str | None,
               strategy: str, focus_p: float, cached: Callable[[], Prediction | None],
               instances: np.ndarray | None = None) -> int:
        """Save the labels with their time and effort (see
        :meth:`ActiveLearningSession.submit`); ``cached``: the current model's cached
        prediction of the image, if any (for the hard pixels, when ``focus_p`` > 0).
        With ``instances`` the objects are submitted (``Project.submit_instances``; `labels`
        then holds the "area" classes, or is None) and the effort is counted against the
        objects shown (:meth:`mark_objects_shown`), else on the class map they make with the
        first object class."""
        given = labels
        if instances is not None:
            objects, ids = self.project.object_classes, np.asarray(instances)
            if not objects or (given is not None and np.shape(given) != ids.shape):
                # bad input: the project says what is wrong, and writes nothing
                return self.project.submit_instances(image_id, ids, reviewed, labels=given)
            base = 0 if given is None else np.asarray(given)  # may carry objects' classes
            labels = np.where((ids > 0) & ~np.isin(base, objects), objects[0], base)
        labels = np.asarray(labels)
        shown = self.shown_since(image_id)
        seconds = pre = None
        if shown is not None:
            seconds, pre, sid = shown
            suggestion_id = suggestion_id if suggestion_id is not None else sid
        if pre is not None and pre.shape != labels.shape:
            pre = None
        effort = correction_effort(pre, labels, reviewed)
        shown_ids = self._shown_objects.get(image_id)
        if instances is not None and shown_ids is not None and shown_ids.shape == labels.shape:
            effort = instance_effort(shown_ids, np.asarray(instances), reviewed)
        self._record_focus(image_id, pre, labels, focus_p, cached)
        record = {"seconds": seconds, "pixels_changed": effort.pixels_changed,
                  "objects_added": effort.objects_added,
                  "objects_removed": effort.objects_removed, "model_version": model_version,
                  "strategy": strategy, "suggestion_id": suggestion_id, "merge": merge}
        if instances is not None:
            sub = self.project.submit_instances(image_id, instances, reviewed, labels=given,
                                                **record)
        else:
            sub = self.project.submit(image_id, labels, reviewed, **record)
        self.forget_shown(image_id)
        return sub

    def shown_since(self, image_id: int) -> tuple[float, np.ndarray | None, int | None] | None:
        """``(seconds since shown, pre-annotation, suggestion id)`` of an image shown and not
        submitted yet, or None (kept until :meth:`forget_shown`: a failed submit retries)."""
        shown = self._shown.get(image_id)
        return None if shown is None else (time.monotonic() - shown[0], shown[1], shown[2])

    def forget_shown(self, image_id: int) -> None:
        """After a submission: the image is no longer shown."""
        self._shown.pop(image_id, None)
        self._shown_objects.pop(image_id, None)
        self._views.pop(image_id, None)

    def skip(self, image_id: int, *, suggestion_id: int | None = None) -> None:
        shown = self._shown.pop(image_id, None)
        if suggestion_id is None and shown is not None:
            suggestion_id = shown[2]
        self.project.skip(image_id, suggestion_id=suggestion_id)
        self._views.pop(image_id, None)

    def _record_focus(self, image_id: int, pre: np.ndarray | None, labels: np.ndarray,
                      focus_p: float, cached: Callable[[], Prediction | None]) -> None:
        """Remember the "hard" pixels of a submission for ``TrainConfig.focus_p``: where the
        pre-annotation was corrected, or the current model's (cached) confidence is low.
        Nothing is computed or kept while focus sampling is off (the default)."""
        if focus_p <= 0:
            self._focus.pop(image_id, None)
            return
        hard = None if pre is None else pre != labels
        pred = cached()
        if pred is not None and pred.probs.shape[1:] == labels.shape:
            unsure = pred.probs.max(0) < FOCUS_CONFIDENCE
            hard = unsure if hard is None else hard | unsure
        if hard is None or not hard.any():
            self._focus.pop(image_id, None)
        else:
            self._focus[image_id] = hard
