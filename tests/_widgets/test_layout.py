"""The dock's layout in a real viewer: the canvas keeps most of a 1600x1000 window, what every
step needs stays in view, stale texts follow the model, and the terminal shows no progress bar
without a total."""

from __future__ import annotations

import pytest
from qtpy.QtWidgets import QApplication, QMainWindow

from napari_activeseg._widgets import ActiveSegWidget

from ._helpers import close_dock, suggest
from .test_widget import _make_project

pytestmark = pytest.mark.gui


@pytest.fixture
def docked(make_napari_viewer, tmp_path, qtbot):
    _make_project(tmp_path / "proj")
    viewer = make_napari_viewer(show=True)
    w = ActiveSegWidget(viewer)
    viewer.window.add_dock_widget(w, name="Active learning", area="right")
    assert w.open_project(tmp_path / "proj") is not None
    yield w
    close_dock(w, qtbot)


def test_canvas_keeps_60_percent_of_a_1600_px_window(docked, qtbot):
    suggest(docked, qtbot)  # the annotation layer selected: napari's layer controls widen
    win = docked.window()
    assert isinstance(win, QMainWindow)
    win.resize(1600, 1000)
    qtbot.waitUntil(lambda: win.width() == 1600, timeout=5_000)
    for _ in range(20):
        QApplication.processEvents()
    canvas = win.centralWidget()  # napari's canvas with its sliders: the room left to draw
    assert canvas.width() >= 0.6 * win.width(), (canvas.width(), docked.width())
    assert docked.isVisible() and docked.width() > 250  # the dock is there, not collapsed
    # what each step needs is in view without a click: Submit and the model's status line
    assert docked.review.submit_btn.isVisible()
    assert docked.train_panel.continuous_status.isVisible()
    assert docked.tabs.currentWidget() is docked.pool  # an open project shows its pool


def test_stale_reason_is_replaced_when_a_model_arrives(docked, qtbot):
    w = docked
    suggest(w, qtbot)
    assert "no model yet" in w.review.reason_label.text()  # picked at random: no model
    with qtbot.waitSignal(w.training_finished, timeout=60_000):
        w.session.submit(w.current_id, w.viewer.layers["annotation"].data > 0)
        w.train()
    qtbot.waitUntil(lambda: w.session.model_version is not None, timeout=10_000)
    qtbot.waitUntil(lambda: w.session.model_version in w.review.reason_label.text(),
                    timeout=10_000)
    assert "no model yet" not in w.review.reason_label.text()
    assert "no model yet" in w.review.reason_label.toolTip()  # the pick's reason is kept


def test_jobs_print_no_progress_bar_without_a_total(docked, qtbot, capfd):
    w = docked
    suggest(w, qtbot)
    with qtbot.waitSignal(w.training_finished, timeout=60_000):
        w.session.submit(w.current_id, w.viewer.layers["annotation"].data > 0)
        w.train()
    err = capfd.readouterr().err  # the round's whole output (its re-score may go on)
    assert "it/s]" not in err and "?it" not in err, err[-500:]
