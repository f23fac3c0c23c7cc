"""The dock trains continuously: the toggle starts and pauses the rounds, closing stops them."""

from __future__ import annotations

import pytest

from napari_activeseg._widgets import ActiveSegWidget
from napari_activeseg.core.project import Project

from ._helpers import close_dock
from .test_widget import TINY_TRAIN, _make_project

pytestmark = pytest.mark.gui


def _dock(make_napari_viewer, folder, *, continuous):
    truth = _make_project(folder, n=4, continuous=continuous)
    viewer = make_napari_viewer()
    w = ActiveSegWidget(viewer)
    viewer.window.add_dock_widget(w)
    w.open_project(folder)
    w.session.set_strategy("entropy")  # a cheap re-score after each round: rounds, not ranking
    return w, truth


def test_the_toggle_starts_and_pauses_the_rounds(make_napari_viewer, tmp_path, qtbot):
    w, truth = _dock(make_napari_viewer, tmp_path / "p", continuous=False)
    s = w.session
    ids = [r.id for r in s.project.images()]
    assert not w.train_panel.continuous_check.isChecked()
    s.submit(ids[0], truth[ids[0]])
    qtbot.wait(300)
    assert not w.jobs.holds("train") and s.model is None  # off: nothing trains by itself
    with qtbot.waitSignal(w.training_finished, timeout=60_000) as done:
        w.train_panel.continuous_check.setChecked(True)  # on: a round starts by itself
    assert done.args[0].saved and s.model_version == done.args[0].model_version
    assert s.continuous_training is True  # saved in the project
    qtbot.waitUntil(lambda: "idle: nothing new to learn" in
                    w.train_panel.continuous_status.text(), timeout=60_000)
    assert s.model_version in w.train_panel.continuous_status.text()
    w.train_panel.continuous_check.setChecked(False)
    qtbot.waitUntil(lambda: not w.jobs.holds("train"), timeout=60_000)
    version = s.model_version
    s.submit(ids[1], truth[ids[1]])
    qtbot.wait(300)
    assert not w.jobs.holds("train") and s.model_version == version  # paused
    assert "paused" in w.train_panel.continuous_status.text()
    close_dock(w, qtbot)


def test_closing_the_viewer_stops_the_continuous_rounds(make_napari_viewer, tmp_path, qtbot):
    folder = tmp_path / "p"
    w, truth = _dock(make_napari_viewer, folder, continuous=True)
    s = w.session
    s.configure(train_config=TINY_TRAIN.replace(max_steps=100_000))
    ids = [r.id for r in s.project.images()]
    trainer = w.continuous.trainer
    s.submit(ids[0], truth[ids[0]])  # the round starts by itself
    qtbot.waitUntil(lambda: len(w.train_panel.history) >= 1, timeout=30_000)
    assert w.jobs.holds("train") and not w.train_panel.train_btn.isEnabled()
    workers = list(w.workers)
    w.close()
    w.viewer.close()
    qtbot.waitUntil(lambda: all(not wk.is_running for wk in workers), timeout=20_000)
    # the round ended (the worker quit it) and no round starts again
    assert trainer.stopped and trainer.status.state == "stopped" and not trainer.due
    s.project.close()
    with Project.open(folder) as proj:
        assert proj.integrity_check() == [] and proj.models() == []
