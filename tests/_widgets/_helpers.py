"""What the dock tests share: waiting for a suggestion, and closing a dock cleanly."""

from __future__ import annotations


def suggest(w, qtbot) -> int:
    """Press Suggest next and wait until the suggestion is open; its image id."""
    with qtbot.waitSignal(w.scoring_finished, timeout=60_000):
        w.suggest_next()
    assert w.current_id is not None
    return w.current_id


def close_dock(w, qtbot) -> None:
    """Stop the dock's work, wait for its workers, close its project."""
    w.cancel()
    try:
        qtbot.waitUntil(lambda: not w.workers, timeout=60_000)  # a loaded 2-core CI
    except Exception as exc:
        import faulthandler
        import sys

        faulthandler.dump_traceback(sys.stderr, all_threads=True)
        running = [getattr(x, "activeseg_desc", repr(x)) for x in w.workers]
        from qtpy.QtCore import QThreadPool

        pool = QThreadPool.globalInstance()
        raise AssertionError(f"workers still running after cancel: {running}; thread pool "
                             f"{pool.activeThreadCount()}/{pool.maxThreadCount()} "
                             "active") from exc
    if w.session is not None:
        w.session.project.close()
