"""The Measure panel in a real napari viewer: the open image's objects in a table and a layer,
a click on a row selects the object, Save CSV writes the project's tables."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from qtpy.QtCore import Qt

from napari_activeseg._widgets import ActiveSegWidget
from napari_activeseg._widgets._main import ANNOTATION
from napari_activeseg._widgets._measure_panel import OBJECTS, camera_of
from napari_activeseg.core.project import Project

from ..conftest import make_blobs
from ._helpers import close_dock

pytestmark = pytest.mark.gui

SHAPE = (64, 80)


def _class_map():
    """Two nuclei (16 and 30 px) and one cell (20 px), none touching."""
    m = np.zeros(SHAPE, np.uint8)
    m[4:8, 4:8] = 1
    m[40:45, 50:56] = 1
    m[20:24, 30:35] = 2
    return m


@pytest.fixture
def widget(make_napari_viewer, tmp_path, qtbot, monkeypatch):
    image = (make_blobs(shape=SHAPE)[0] * 200).astype(np.uint8)
    Project.create(tmp_path / "proj", arrays={"a": image},
                   classes=("background", "nucleus", "cell")).close()
    viewer = make_napari_viewer()
    w = ActiveSegWidget(viewer)
    viewer.window.add_dock_widget(w)
    assert w.open_project(tmp_path / "proj") is not None
    w.messages = []
    monkeypatch.setattr("napari_activeseg._widgets._measure_panel.notify",
                        lambda kind, msg: w.messages.append((kind, msg)))
    yield w
    close_dock(w, qtbot)


def test_measure_the_open_image_and_select_an_object_from_the_table(widget, qtbot, tmp_path):
    w, v = widget, widget.viewer
    panel = w.measure_panel
    assert not panel.measure_btn.isEnabled()  # nothing open yet
    image_id = w.session.project.images()[0].id
    with qtbot.waitSignal(w.image_opened, timeout=30_000):
        w.open_image(image_id)
    v.layers[ANNOTATION].data = _class_map()  # as if painted
    with qtbot.waitSignal(panel.measured, timeout=30_000) as blocker:
        panel.measure_btn.click()
    assert blocker.args == [3] and panel.table.rowCount() == 3
    assert "2 nucleus, 1 cell" in panel.summary.text()
    layer = v.layers[OBJECTS]
    assert sorted(layer.features["area_px"]) == [16, 20, 30]
    assert sorted(np.unique(np.asarray(layer.data))) == [0, 1, 2, 3]
    # sort by area (descending) and click the first row: the 30 px nucleus
    panel.table.sortItems(2, Qt.SortOrder.DescendingOrder)
    item = panel.table.item(0, 0)
    oid = int(item.text())
    rect = panel.table.visualItemRect(item)
    qtbot.mouseClick(panel.table.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
    assert layer.selected_label == oid
    assert np.asarray(layer.data)[42, 52] == oid
    assert tuple(camera_of(v).center)[-2:] == pytest.approx((42.0, 52.5))
    assert v.layers.selection.active is layer

    # the whole project: the labels once submitted (the combo's default source)
    w.session.submit(image_id, _class_map())
    out = tmp_path / "csv"
    with qtbot.waitSignal(panel.saved, timeout=30_000):
        panel.save(str(out))
    with open(out / "objects.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert sorted(r["class"] for r in rows) == ["cell", "nucleus", "nucleus"]
    qtbot.waitUntil(lambda: panel.save_btn.text() == "Save CSV…", timeout=10_000)

    # a new image or project clears the stale table and layer
    w.close_project()
    w.session_changed.emit()
    assert panel.table.rowCount() == 0 and OBJECTS not in v.layers
