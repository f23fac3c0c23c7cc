"""Annotating objects in a real napari viewer: a project with one object class gets an
objects layer of ids; a NEW object painted with napari's new label is submitted with its own
id; the class modes control switches a class between area and objects."""

from __future__ import annotations

import numpy as np
import pytest
from qtpy.QtCore import Qt

from napari_activeseg._widgets import ActiveSegWidget
from napari_activeseg._widgets._main import ANNOTATION
from napari_activeseg._widgets._objects import OBJECTS_PREFIX
from napari_activeseg.core.project import Project

from ..conftest import make_blobs
from ._helpers import close_dock, suggest

pytestmark = pytest.mark.gui

SHAPE = (64, 80)
LAYER = OBJECTS_PREFIX + "nucleus"


@pytest.fixture
def widget(make_napari_viewer, tmp_path, qtbot):
    arrays = {f"img{i}": (make_blobs(shape=SHAPE, seed=i)[0] * 200).astype(np.uint8)
              for i in range(3)}
    with Project.create(tmp_path / "proj", arrays=arrays, classes=("background", "nucleus"),
                        class_modes={"nucleus": "objects"}) as project:
        project.set_setting("region_size", 32)  # several boxes per image
    viewer = make_napari_viewer()
    w = ActiveSegWidget(viewer)
    viewer.window.add_dock_widget(w)
    assert w.open_project(tmp_path / "proj") is not None
    yield w
    close_dock(w, qtbot)


def test_paint_a_new_object_and_submit_it(widget, qtbot):
    w, v = widget, widget.viewer
    w.review.regions_check.setChecked(False)  # review the whole image
    image_id = suggest(w, qtbot)
    qtbot.waitUntil(lambda: LAYER in v.layers, timeout=30_000)
    layer = v.layers[LAYER]
    assert not w.objects.isHidden() and "press M" in w.objects.hint.text()
    assert v.layers.selection.active is layer and layer.mode == "paint"
    assert not v.layers[ANNOTATION].visible  # one object class: the ids say it all
    # paint one object, then a NEW one touching it with napari's new label
    first = layer.selected_label
    data = np.asarray(layer.data).copy()
    data[10:20, 10:20] = first
    layer.data = data
    qtbot.mouseClick(w.objects.new_btn, Qt.MouseButton.LeftButton)
    new = layer.selected_label
    assert new == first + 1
    data = np.asarray(layer.data).copy()
    data[10:20, 20:30] = new  # touches the first along a whole edge
    layer.data = data
    layer.refresh()
    qtbot.mouseClick(w.review.submit_btn, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: w.session.project.load_instances(image_id) is not None,
                    timeout=10_000)
    ids, reviewed = w.session.project.load_instances(image_id)
    assert reviewed is None  # whole-image mode
    a, b = ids[15, 15], ids[15, 25]
    assert a > 0 and b > 0 and a != b  # the new object kept its own id
    assert (ids[10:20, 20:30] == b).all() and (ids[10:20, 10:20] == a).all()
    assert ids.max() == 2
    labels, _ = w.session.project.load_labels(image_id)
    assert (labels[10:20, 10:30] == 1).all() and labels.sum() == 200
    qtbot.waitUntil(lambda: w.current_id not in (None, image_id), timeout=60_000)


def test_class_modes_control_sets_the_projects_modes(widget, qtbot):
    w = widget
    from napari_activeseg._widgets._objects import ClassModes

    control = w.project_panel.findChild(ClassModes)
    assert control is not None and control.combos["nucleus"].currentText() == "objects"
    control.combos["nucleus"].setCurrentText("area")
    qtbot.mouseClick(control.apply_btn, Qt.MouseButton.LeftButton)
    assert w.session.project.class_modes == {"nucleus": "area"}
    assert w.session.model_config.boundary_classes == ()
    assert not w.objects.active


def test_in_boxes_mode_only_the_box_and_the_edits_become_truth(widget, qtbot):
    w, v = widget, widget.viewer
    assert w.review.boxes_mode
    image_id = suggest(w, qtbot)
    qtbot.waitUntil(lambda: LAYER in v.layers, timeout=30_000)
    layer = v.layers[LAYER]
    y0, x0, y1, x1 = w.current_boxes[0]
    assert not w.objects.is_edited()
    data = np.asarray(layer.data).copy()
    data[y0 + 2:y0 + 8, x0 + 2:x0 + 8] = layer.selected_label  # a new object in the box
    layer.data = data
    assert w.objects.is_edited()
    qtbot.mouseClick(w.review.submit_btn, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: w.session.project.load_instances(image_id) is not None,
                    timeout=10_000)
    ids, reviewed = w.session.project.load_instances(image_id)
    assert reviewed is not None and reviewed[y0:y1, x0:x1].all() and not reviewed.all()
    assert ids[y0 + 4, x0 + 4] > 0 and ids.max() == 1
    qtbot.waitUntil(lambda: w.current_id not in (None, image_id), timeout=60_000)


def test_measure_counts_touching_objects_of_the_objects_layer_apart(widget, qtbot):
    """The Measure panel reads the objects layer in objects mode: two touching objects
    painted with two ids are two rows (the class map alone would make them one)."""
    w, v = widget, widget.viewer
    w.review.regions_check.setChecked(False)
    suggest(w, qtbot)
    qtbot.waitUntil(lambda: LAYER in v.layers, timeout=30_000)
    layer = v.layers[LAYER]
    data = np.zeros_like(np.asarray(layer.data))
    data[10:20, 10:20] = 1
    data[10:20, 20:30] = 2  # touches object 1 along a whole edge
    layer.data = data
    annotation = np.zeros(SHAPE, np.uint8)
    annotation[10:20, 10:30] = 1
    v.layers[ANNOTATION].data = annotation
    panel = w.measure_panel
    with qtbot.waitSignal(panel.measured, timeout=30_000) as blocker:
        panel.measure_btn.click()
    assert blocker.args == [2] and panel.table.rowCount() == 2
