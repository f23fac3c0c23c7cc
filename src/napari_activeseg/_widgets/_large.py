"""Large images in the dock (issue 20 item 3): an image over the project's
``large_image_pixels`` is opened one box at a time -- the suggested box, or for a table row
the box the user drew on the boxes layer, else its best window, else its centre -- as a
multiscale image and a box-sized annotation (:func:`._layers.show_region_view`), built off
the GUI thread; Submit sends that box alone (``session.submit_region``). Whole-image mode
refuses such an image with what to do."""

from __future__ import annotations

from ._common import notify
from ._layers import drawn_box, is_region

__all__ = ["LargeImageOpener", "centre_box"]


def centre_box(shape, size: int) -> tuple[int, int, int, int]:
    """A ``size`` x ``size`` box (smaller for a smaller image) at the centre of ``shape``."""
    h, w = int(shape[0]), int(shape[1])
    bh, bw = min(size, h), min(size, w)
    y0, x0 = (h - bh) // 2, (w - bw) // 2
    return y0, x0, y0 + bh, x0 + bw


class LargeImageOpener:
    """Opens boxes of large images for one dock (module docstring)."""

    def __init__(self, dock) -> None:
        self._dock = dock

    def open(self, image_id: int, suggestions=(), box=None) -> bool:
        """Open a box of ``image_id`` in a worker if it is a large image; True when it is
        (and so was handled here, or refused with a message), False for an image that fits."""
        dock = self._dock
        session = dock.session
        if session is None or not session.is_large(image_id):
            return False
        suggestions = list(suggestions)
        if box is None and suggestions:
            box = suggestions[0].box
        if box is None and not dock.review.boxes_mode:
            try:
                session.refuse_whole(image_id)
            except ValueError as exc:
                notify("error", str(exc))
            return True
        shape = session.project.get_image(image_id).shape
        view = dock.current_view
        if box is None and view is not None and view.image_id == image_id:
            box = drawn_box(dock.viewer, view, shape)
        size = dock.review.box_size or session.region_size

        def job():
            yield None
            chosen = box or session.best_box(image_id) or centre_box(shape, size)
            return session.region_view(image_id, chosen, suggestions)

        dock.jobs.start(job, on_return=dock._display, desc="Opening a box of a large image")
        return True

    def nothing_left(self) -> str:
        """What to say when no suggestion is left: the large images whole-image mode passes
        over, if any, else that every image is done."""
        session = self._dock.session
        left = [] if session is None or self._dock.review.boxes_mode else session.large_in_pool()
        if left:
            return (f"{len(left)} large image(s) are left: too large to show whole, they are "
                    "corrected box by box -- tick Boxes (suggest regions).")
        return "Nothing left to suggest: every image is submitted or skipped."

    def submit(self, labels) -> bool:
        """Submit the open box of a large image (the annotation layer, box-sized); True when
        the open view is one (else nothing is done)."""
        dock = self._dock
        view = dock.current_view
        if not is_region(view):
            return False
        dock.session.submit_region(view.image_id, view.box, labels)
        return True
