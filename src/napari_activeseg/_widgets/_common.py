"""What every panel of the dock shares: layer names, notifications, worker-thread helpers."""

from __future__ import annotations

import threading
import weakref

from qtpy.QtWidgets import QTableWidgetItem

ANNOTATION = "annotation"
UNCERTAINTY = "uncertainty"
REGIONS = "suggested regions"
SCRIBBLES = "scribbles"
REVIEWED = "reviewed"
NOT_REVIEWED = "not reviewed"
SCRIBBLE_BACKGROUND = "#6a8cff"  # the background class is transparent in the annotation
STATUS_ORDER = {"suggested": 0, "in_progress": 1, "unlabelled": 2, "partial": 3, "skipped": 4,
                "submitted": 5}


def notify(kind: str, message: str) -> None:
    """A napari notification: ``kind`` is "info", "warning" or "error"."""
    from napari.utils import notifications

    {"info": notifications.show_info, "warning": notifications.show_warning,
     "error": notifications.show_error}[kind](message)


def background_priority() -> None:
    """Lower this (worker) thread's scheduling priority, so the GUI thread wins the CPU.

    On Linux, niceness is per thread, and threads a thread creates (torch's OpenMP team for
    this thread) inherit it. Elsewhere, or without permission, nothing happens.
    """
    import os

    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 5)
    except (AttributeError, OSError):
        pass


_WARMED_UP = threading.Event()
#: set once the warm-up thread has finished (benchmarks wait for it)
WARM_UP_DONE = threading.Event()


def warm_up_torch() -> None:
    """Load, in a background thread while the widget opens, what would otherwise stall the
    viewer the first time it is needed: what torch loads lazily on the first optimiser step
    (``torch._dynamo``: about a quarter of a second holding the GIL), and what napari needs
    for a first labels layer -- the numba code colouring it (a typed dict compiled in every
    process: it held the GUI thread 10-60 s on a loaded 2-core machine when the first
    suggestion was shown, benchmarks/gui_stall.py), the shapes' triangulation (numba as well)
    and pint's unit registry."""
    if _WARMED_UP.is_set():
        return
    _WARMED_UP.set()
    build_unit_registry()  # here, before the thread below makes its layers

    def run():
        background_priority()
        try:
            import torch._dynamo  # noqa: F401
        except Exception:  # noqa: BLE001, S110 - a warm-up: the round imports it if this failed
            pass
        try:  # the annotation and scribble layers are uint8 class maps
            import numpy as np
            from napari.utils.colormaps import DirectLabelColormap

            cmap = DirectLabelColormap(color_dict={None: "black", 0: "transparent",
                                                   1: "yellow"})
            cmap.map(np.zeros((4, 4), np.uint8))  # what a new layer's thumbnail runs
            from napari.layers import Labels, Shapes

            Labels(np.zeros((4, 4), np.uint8), colormap=cmap)  # pint's units, its modules
            # the suggested boxes: napari triangulates shapes with numba too
            Shapes([np.array([[0.0, 0.0], [4.0, 4.0]])], shape_type="rectangle")
        except Exception:  # noqa: BLE001, S110 - only a warm-up (another napari may differ)
            pass
        freeze_long_lived()
        WARM_UP_DONE.set()

    threading.Thread(target=run, name="activeseg-warm-up", daemon=True).start()


def build_unit_registry() -> None:
    """Build pint's application registry now, on the calling (GUI) thread.

    napari gives every new layer units from it (``pint.get_application_registry().pixel``),
    and pint builds it lazily on first use, not thread-safely: the lazy object becomes a
    registry first and loads its unit definitions after, so a layer made on the GUI thread
    while another thread runs that build fails with "'pixel' is not defined in the unit
    registry". The warm-up thread's layers did just that: the first suggestion's
    ``add_image`` aborted 3 runs in 6 of ``benchmarks/submit_next.py --tiny``. ~0.1-0.3 s,
    once per process; nothing when napari has made a layer already."""
    try:
        import pint

        pint.get_application_registry().pixel  # noqa: B018 - the lookup builds it
    except Exception:  # noqa: BLE001, S110 - a napari without units, or another pint
        pass


def freeze_long_lived() -> None:
    """Exempt what napari, Qt and torch have built so far from Python's cyclic garbage
    collector (:func:`gc.freeze`). A full collection walks every tracked object holding the
    GIL: with napari and torch loaded that is millions of objects, and each pass held the
    viewer ~0.5-1 s while a worker read TIFFs or scored the pool (benchmarks/gui_stall.py,
    py-spy --gil). Frozen objects are never collected as cycles; they are modules, classes
    and the viewer's own widgets, which live as long as the process anyway."""
    import gc

    gc.freeze()


def stop_session(session_ref: weakref.ref, workers: list) -> None:
    """Stop long work when the widget goes away (viewer closed): no orphan thread keeps
    training after the window is gone. Holds no reference to the widget itself."""
    session = session_ref()
    if session is not None:
        session.request_stop()
    for w in list(workers):
        try:
            w.quit()
        except RuntimeError:  # the Qt side is already deleted
            pass


class NumericItem(QTableWidgetItem):
    """A table cell that sorts by a number, not by its text."""

    def __init__(self, text: str, key: float) -> None:
        super().__init__(text)
        self._key = key

    def __lt__(self, other: QTableWidgetItem) -> bool:
        if isinstance(other, NumericItem):
            return self._key < other._key
        return super().__lt__(other)
