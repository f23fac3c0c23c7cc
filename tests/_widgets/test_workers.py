"""The dock's jobs never queue behind each other in Qt's thread pool: with training and scoring
holding as many threads as the machine has cores, a suggestion still starts at once."""

from __future__ import annotations

import threading

import pytest
from qtpy.QtCore import QThreadPool
from qtpy.QtWidgets import QWidget

from napari_activeseg._widgets._workers import MIN_POOL_THREADS, Jobs

pytestmark = pytest.mark.gui


def test_a_short_job_runs_while_long_ones_hold_a_two_core_pool(qtbot):
    pool = QThreadPool.globalInstance()
    before = pool.maxThreadCount()
    pool.setMaxThreadCount(2)  # a 2-core machine's default
    owner = QWidget()
    qtbot.addWidget(owner)
    errors = []
    jobs = Jobs(owner, on_change=lambda: None, on_error=lambda desc, exc: errors.append(exc))
    release = threading.Event()
    started = threading.Semaphore(0)

    def long_job():
        started.release()
        yield None
        release.wait(30)
        return "long"

    def short_job():
        yield None
        return "short"

    try:
        long_workers = [jobs.start(long_job, on_return=lambda _r: None, desc=f"long {k}",
                                   slot=slot) for k, slot in enumerate(("train", "score"))]
        assert started.acquire(timeout=10) and started.acquire(timeout=10)
        got = []
        # its result is connected before it starts (a signal waited on after the start could
        # be missed by a job this short)
        jobs.start(short_job, on_return=got.append, desc="Suggesting", slot="suggest")
        qtbot.waitUntil(lambda: got == ["short"], timeout=10_000)
        assert pool.maxThreadCount() >= MIN_POOL_THREADS
        assert jobs.busy  # training and scoring still hold their slots
    finally:
        release.set()
        for w in long_workers:
            qtbot.waitUntil(lambda w=w: w not in jobs.workers, timeout=10_000)
        pool.setMaxThreadCount(max(before, MIN_POOL_THREADS))
    assert errors == []


def test_a_job_that_raises_a_runtime_error_reports_it_and_ends(qtbot):
    """superqt swallows a RuntimeError out of a worker's generator (no ``errored``, no
    ``finished``): the dock's job must still report the error and free its slot."""
    owner = QWidget()
    qtbot.addWidget(owner)
    errors = []
    jobs = Jobs(owner, on_change=lambda: None,
                on_error=lambda desc, exc: errors.append((desc, exc)))

    def failing():
        yield None
        raise RuntimeError("out of memory (simulated)")

    with qtbot.capture_exceptions():  # napari also re-raises a worker's error in the loop
        jobs.start(failing, on_return=lambda _r: None, desc="Scoring the pool", slot="score")
        qtbot.waitUntil(lambda: not jobs.workers, timeout=10_000)
    assert not jobs.holds("score") and not jobs.busy
    [(desc, exc)] = errors
    assert desc == "Scoring the pool"
    assert type(exc) is RuntimeError and "simulated" in str(exc)


def test_a_cancel_pressed_while_a_job_waits_for_the_session_cancels_it(tmp_path):
    """Train pressed during a scoring queues the round behind it; a cancel pressed before the
    round begins must cancel the round (beginning a job clears the session's stop flag)."""
    import numpy as np

    from napari_activeseg._widgets._workers import after_session_jobs
    from napari_activeseg.core.config import InferenceConfig, ModelConfig, TrainConfig
    from napari_activeseg.core.progress import run_to_end
    from napari_activeseg.core.project import Project
    from napari_activeseg.core.session import ActiveLearningSession

    from ..conftest import make_blobs

    pairs = [make_blobs(shape=(48, 56), seed=s, n=4) for s in range(3)]
    images = {f"img{s}": (p[0] * 200).astype(np.uint8) for s, p in enumerate(pairs)}
    with Project.create(tmp_path / "p", arrays=images) as project:
        s = ActiveLearningSession(
            project, model_config=ModelConfig(in_channels=1, n_classes=2, depth=2, width=4),
            train_config=TrainConfig(patch_size=32, batch_size=4, max_steps=20,
                                     time_budget_s=None),
            inference_config=InferenceConfig(tile_size=64, overlap=8))
        first = project.images()[0]
        s.submit(first.id, pairs[0][1])
        running = s.train()
        next(running)  # a round holds the session
        began = []

        def queued_round():
            began.append(True)
            return (yield from s.train())

        job = after_session_jobs(s, queued_round)
        s.request_stop()  # Cancel, while the queued job waits
        result = {}
        waiter = threading.Thread(target=lambda: result.update(r=run_to_end(job())))
        waiter.start()
        run_to_end(running)  # the stopped round ends and frees the session
        waiter.join(60)
        assert not waiter.is_alive() and result == {"r": None} and began == []
        assert not s.job_running
        # no cancel: a queued job runs once the session is free
        summary = run_to_end(after_session_jobs(s, s.train)())
        assert summary is not None and summary.saved and summary.result.steps == 20


_FRESH_WARM_UP = """
import pint
from napari_activeseg._widgets._common import WARM_UP_DONE, warm_up_torch

warm_up_torch()
# what pint holds the moment the call returns, before the warm-up thread has made a layer
print(type(pint.get_application_registry().get()).__name__)
assert WARM_UP_DONE.wait(300)
"""


def test_the_warm_up_builds_the_unit_registry_before_its_thread_makes_layers():
    """pint builds its registry lazily and not thread-safely: the warm-up thread's layers must
    find it built, or a layer the GUI thread adds meanwhile fails ("'pixel' is not defined").
    A fresh process: in this one an earlier test has built it already."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", _FRESH_WARM_UP], capture_output=True,
                          text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split()[0] == "UnitRegistry", proc.stdout
