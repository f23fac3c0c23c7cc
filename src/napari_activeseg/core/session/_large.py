"""The session's calls for images over the project's ``large_image_pixels`` (issue 20 item 3):
a box of one to correct (:meth:`LargeImageCalls.region_view`), submitting that box alone
(stored box-sized, :mod:`..project._regions`), the box training reads, and the best window
of an image for a box opened by hand. Such an image is never shown, predicted or labelled
whole: whole-image suggestions pass over it, and opening it whole is refused with
:data:`WHOLE_REFUSED`.

:class:`LargeImageCalls` is mixed into :class:`~._session.ActiveLearningSession`; it uses the
session's project, caches, model and annotation desk, and keeps no state of its own.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from ..effort import correction_effort
from ._pool import pool_ids
from ._records import RegionView, Suggestion

__all__ = ["WHOLE_REFUSED", "LargeImageCalls"]

WHOLE_REFUSED = (
    "Image {id} ({name!r}) is too large to show whole (over the project's large_image_pixels, "
    "{pixels:,} pixels): correct it box by box -- tick Boxes (suggest regions) -- or raise "
    "large_image_pixels if it fits in memory.")


class LargeImageCalls:
    """Boxes of large images: view, submit, train (module docstring)."""

    def is_large(self, image_id: int) -> bool:
        """Whether the image is over ``large_image_pixels`` (shown and stored box by box)."""
        return self._cache.is_large(self.project, image_id)

    def refuse_whole(self, image_id: int) -> None:
        """ValueError (:data:`WHOLE_REFUSED`) for a large image; nothing for another."""
        if self.is_large(image_id):
            rec = self.project.get_image(image_id)
            raise ValueError(WHOLE_REFUSED.format(id=image_id, name=rec.name,
                                                  pixels=int(np.prod(rec.shape[:2]))))

    def large_in_pool(self) -> list[int]:
        """The large images still in the pool: whole-image suggestions pass over them."""
        return [i for i in pool_ids(self.project) if self.is_large(i)]

    def overview(self, image_id: int):
        """``(factor, uncertainty, labels)``: a large image's prediction by the current model
        at display resolution (``factor`` times smaller), kept by its last scoring; None
        before it was scored."""
        return self._cache.overview(image_id, self.model_version)

    def region_view(self, image_id: int, box: tuple[int, int, int, int],
                    suggestions: Sequence[Suggestion] = ()) -> RegionView:
        """A box of a large image to correct, without reading the image whole: the lazy
        pyramid to show, the box's prediction (predicted with a margin of context) and the
        whole image's overview (call it off the GUI thread). ``suggestions``: the picks it
        answers. Marks the image as shown (time and effort of :meth:`submit_region`)."""
        view = self._cache.region_view(self.project, image_id, box, self._decided_config(),
                                       self.model, self.inference_config, self.model_version)
        view = dataclasses.replace(view, suggestions=tuple(suggestions))
        first = view.suggestion
        self._desk.mark_shown(image_id, view.labels, None if first is None
                              else first.suggestion_id)
        return view

    def open_pick(self, picks: Sequence[Suggestion]):
        """The view of a suggestion: :meth:`view` for an image that fits, the first box's
        :meth:`region_view` for a large one (refused without a box: whole-image mode)."""
        image_id = picks[0].image_id
        if not self.is_large(image_id):
            return self.view(image_id, picks)
        if picks[0].box is None:
            self.refuse_whole(image_id)
        return self.region_view(image_id, picks[0].box, picks[:1])

    def best_box(self, image_id: int) -> tuple[int, int, int, int] | None:
        """The image's best window not yet reviewed, from the last boxes scoring (None when
        it has none: score the pool with regions first, or give a box)."""
        return self._scoring.best_box(image_id)

    def prepared_region(self, image_id: int, box: tuple[int, int, int, int]) -> np.ndarray:
        """The network input of a box of a large image, ``(C, y1 - y0, x1 - x0)`` float32,
        read lazily and normalised with the whole image's statistics."""
        y0, x0, y1, x1 = (int(v) for v in box)
        return self._cache.source(self.project, image_id, self._decided_config()).rows(
            y0, y1, x0, x1)

    def submit_region(self, image_id: int, box: tuple[int, int, int, int],
                      labels: np.ndarray, reviewed: np.ndarray | None = None, *,
                      suggestion_id: int | None = None) -> int:
        """Save one reviewed box of a large image: ``labels`` (and ``reviewed``, default the
        whole box) of the box's size, stored as the box's own record
        (:meth:`~.project.Project.submit_region`); the time and effort since its
        :meth:`region_view` go with it. Returns the submission id."""
        shown = self._desk.shown_since(image_id)
        seconds = pre = None
        if shown is not None:
            seconds, pre, sid = shown
            suggestion_id = suggestion_id if suggestion_id is not None else sid
        labels = np.asarray(labels)
        if pre is not None and pre.shape != labels.shape:
            pre = None
        effort = correction_effort(pre, labels, reviewed)
        sub = self.project.submit_region(
            image_id, box, labels, reviewed, seconds=seconds,
            pixels_changed=effort.pixels_changed, objects_added=effort.objects_added,
            objects_removed=effort.objects_removed, model_version=self.model_version,
            strategy=self._strategy_spec["name"], suggestion_id=suggestion_id)
        self._desk.forget_shown(image_id)
        self._submitted(image_id)
        return sub
