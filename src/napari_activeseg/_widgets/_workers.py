"""The dock's thread workers: every long job of the GUI (training, scoring, opening an image,
predicting a layer, exporting) runs through :class:`Jobs`.

A job is a generator function from the core: its yields reach ``on_yield`` and its return value
``on_return``, both on the GUI thread. Callbacks are guarded: once Qt has deleted the dock (the
viewer was closed under a running worker) they do nothing. A job may hold a named *slot*
("train", "score", "suggest"): one slot runs one job at a time, and the dock is busy while a
training or scoring job holds one -- suggesting never waits for them (:func:`suggest_next`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from ._common import background_priority

__all__ = ["JOB_WAIT_S", "MIN_POOL_THREADS", "SLOW_CALLBACK_S", "Jobs", "after_session_jobs",
           "suggest_next"]

_LOG = logging.getLogger(__name__)
#: a callback on the GUI thread longer than this is logged (DEBUG): what makes the viewer stall
SLOW_CALLBACK_S = 0.05
#: threads the dock's workers may use at once, whatever the CPU count. Qt's global pool
#: defaults to the CPU count: on a 2-core machine continuous training and a background re-score
#: held both threads and a suggestion queued behind them. The heavy jobs are bounded by their
#: slots (one training, one scoring), so the extra threads only run short jobs.
MIN_POOL_THREADS = 8


class _Failed(Exception):
    """A job's RuntimeError, carried past superqt (its ``__cause__`` is the original).

    superqt's workers take a RuntimeError out of the generator for "the worker has been
    deleted": they warn into the worker's own ``warned`` signal and return without emitting
    ``errored`` or ``finished``. The dock then never learnt that the job had ended -- its slot
    stayed held (busy for good) and the error (torch's are RuntimeErrors, out-of-memory
    included) was never shown. Seen as a "Scoring the pool" worker that had started and never
    finished, with the thread pool idle.
    """


#: how long a training or scoring job waits for the session's previous job to end
JOB_WAIT_S = 120.0


def after_session_jobs(session, gen_func: Callable) -> Callable:
    """``gen_func`` run once the session's running training or scoring job has ended.

    The dock frees a slot when a job's result arrives, and asks a scoring job to stop when
    training starts: the next job may begin while the previous generator is still ending (a
    stopped scoring finishes its step) and the session refuses two jobs at once. Waiting here,
    in the worker, keeps that from the user; one still running after :data:`JOB_WAIT_S`
    seconds is reported as the session's error. A cancel (``session.request_stop``) pressed
    after this call and before the job begins cancels it: it returns None without starting
    (starting a job clears the session's stop flag, which would otherwise lose that cancel).
    """
    asked = session.stop_requests

    def job():
        session.wait_idle(JOB_WAIT_S)
        if session.stop_requests != asked:
            return None
        return (yield from gen_func())

    return job


def _make_room() -> None:
    """Give Qt's global thread pool at least :data:`MIN_POOL_THREADS` threads (napari's
    workers run there)."""
    from qtpy.QtCore import QThreadPool

    pool = QThreadPool.globalInstance()
    if pool.maxThreadCount() < MIN_POOL_THREADS:
        pool.setMaxThreadCount(MIN_POOL_THREADS)


class Jobs:
    """Start, track and guard the workers of one widget."""

    def __init__(self, owner, *, on_change: Callable[[], None],
                 on_error: Callable[[str, BaseException], None]) -> None:
        self._owner = owner
        self._on_change = on_change
        self._on_error = on_error
        self.workers: list = []  #: running workers (stop_session quits them on close)
        self._slots: dict[str, Any] = {}

    def alive(self) -> bool:
        """False once Qt has deleted the owner widget."""
        try:
            self._owner.objectName()
        except RuntimeError:
            return False
        return True

    def guard(self, fn: Callable) -> Callable:
        """`fn`, doing nothing once the owner is gone; one that holds the GUI thread longer
        than :data:`SLOW_CALLBACK_S` is logged at DEBUG level (its name and milliseconds)."""

        def call(*args):
            if self.alive():
                t0 = time.perf_counter()
                fn(*args)
                dt = time.perf_counter() - t0
                if dt > SLOW_CALLBACK_S:
                    _LOG.debug("slow GUI callback %s: %.0f ms",
                               getattr(fn, "__qualname__", repr(fn)), dt * 1e3)

        return call

    def holds(self, slot: str) -> bool:
        return slot in self._slots

    @property
    def busy(self) -> bool:
        """Whether a training or scoring job is running (a suggestion does not count)."""
        return bool(set(self._slots) - {"suggest"})

    def release(self, slot: str) -> None:
        """Free `slot` before its worker has finished (its result is already handled)."""
        self._slots.pop(slot, None)

    def start(self, gen_func: Callable, *, on_return: Callable, desc: str,
              on_yield: Callable | None = None, slot: str | None = None):
        """Run ``gen_func()`` in a napari thread worker; returns the started worker."""
        from napari.qt.threading import create_worker

        def run():
            background_priority()
            try:
                return (yield from gen_func())
            except RuntimeError as exc:
                raise _Failed(str(exc)) from exc

        # no napari progress bar: it has no total to show (the terminal printed "Training
        # U-Net: 0it [01:18, ?it/s]"); the dock's own bar and status line show the progress
        worker = create_worker(run)
        worker.activeseg_desc = desc  # what it is doing (said when one does not stop)
        if on_yield is not None:
            worker.yielded.connect(self.guard(on_yield))
        worker.returned.connect(self.guard(on_return))
        worker.errored.connect(self.guard(lambda exc: self._on_error(
            desc, exc.__cause__ if isinstance(exc, _Failed) else exc)))
        self.workers.append(worker)
        if slot is not None:
            self._slots[slot] = worker

        @self.guard
        def finished(w=worker):
            if w in self.workers:
                self.workers.remove(w)
            for name in [n for n, held in self._slots.items() if held is w]:
                del self._slots[name]
            self._on_change()

        worker.finished.connect(finished)
        self._on_change()
        _make_room()
        worker.start()
        return worker


def suggest_next(jobs: Jobs, session, *, regions: bool, region_size: int | None,
                 boxes_per_image: int, show: Callable, on_progress: Callable,
                 refresh: Callable[[], None]):
    """Open the next suggestion in the "suggest" slot, without waiting for training or
    scoring: the session serves it from its queue (:meth:`~napari_activeseg.core.session.
    ActiveLearningSession.next_view`). Then predict the one after it ahead of time, and ask
    for a background re-score (``refresh``) when the queue is stale. None when a suggestion
    is already on its way."""
    if jobs.holds("suggest"):
        return None

    def job():
        return (yield from session.next_view(regions=regions, region_size=region_size,
                                             boxes_per_image=boxes_per_image))

    def done(result):
        jobs.release("suggest")
        view = result[1]
        show(view)
        if view is not None:
            def ahead():
                yield None
                try:
                    return session.prefetch_next(exclude=view.image_id)
                except Exception:  # noqa: BLE001 - a warm-up only (the project may be closing)
                    return None

            jobs.start(ahead, on_return=lambda _id: None, desc="Predicting the next suggestion")
        if session.queue_state(regions=regions, region_size=region_size) != "fresh":
            refresh()

    return jobs.start(job, on_yield=on_progress, on_return=done, desc="Suggesting",
                      slot="suggest")
