"""The Train panel's progress bar is set without a synchronous repaint, and still shows the
value (QProgressBar repaints at once on setValue; with napari's OpenGL canvas in the window
that composed the whole window inside the dock's callback)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from qtpy.QtCore import QEvent, QObject

from napari_activeseg._widgets._train_panel import TrainPanel

pytestmark = pytest.mark.gui


def test_scoring_progress_reaches_the_bar_and_repaints_later(qtbot):
    panel = TrainPanel()
    qtbot.addWidget(panel.status)
    qtbot.addWidget(panel)
    panel.status.show()
    qtbot.waitExposed(panel.status)
    qtbot.wait(50)  # its first paint is over
    painted = []

    class Paints(QObject):
        def eventFilter(self, obj, event):
            if event.type() == QEvent.Type.Paint:
                painted.append(panel.progress.value())
            return False

    paints = Paints()
    panel.progress.installEventFilter(paints)
    panel.show_scoring(SimpleNamespace(done=3, total=4, message=""))
    assert panel.progress.value() == 750
    assert panel.progress.updatesEnabled()
    assert painted == []  # not painted inside the call
    qtbot.waitUntil(lambda: 750 in painted, timeout=5_000)  # painted by the event loop
    assert panel.progress_label.text() == "Scoring the pool: 3/4"
