"""The objects layers in a real napari viewer, beyond painting one object: their edits are a
draft that survives closing the project, two object classes get a layer each, class modes
are chosen when a project is created, and the consistency setting reaches training."""

from __future__ import annotations

import numpy as np
import pytest
from qtpy.QtCore import Qt

from napari_activeseg._widgets import ActiveSegWidget
from napari_activeseg._widgets._objects import OBJECTS_PREFIX, ClassModes
from napari_activeseg.core.project import Project

from ..conftest import make_blobs
from ._helpers import close_dock, suggest

pytestmark = pytest.mark.gui

SHAPE = (64, 80)


def _dock(make_napari_viewer, folder):
    viewer = make_napari_viewer()
    w = ActiveSegWidget(viewer)
    viewer.window.add_dock_widget(w)
    if folder is not None:
        assert w.open_project(folder) is not None
    return w


def _project(tmp_path, classes, modes):
    arrays = {f"img{i}": (make_blobs(shape=SHAPE, seed=i)[0] * 200).astype(np.uint8)
              for i in range(2)}
    with Project.create(tmp_path / "proj", arrays=arrays, classes=classes, class_modes=modes):
        pass
    return tmp_path / "proj"


def _paint(layer, box, value) -> None:
    data = np.asarray(layer.data).copy()
    data[box] = value
    layer.data = data


def test_objects_edits_are_a_draft_that_survives_a_reopen(make_napari_viewer, tmp_path, qtbot):
    folder = _project(tmp_path, ("background", "nucleus"), {"nucleus": "objects"})
    layer_name = OBJECTS_PREFIX + "nucleus"
    w = _dock(make_napari_viewer, folder)
    try:
        w.review.regions_check.setChecked(False)
        image_id = suggest(w, qtbot)
        qtbot.waitUntil(lambda: layer_name in w.viewer.layers, timeout=30_000)
        layer = w.viewer.layers[layer_name]
        _paint(layer, np.s_[10:20, 10:20], 1)
        _paint(layer, np.s_[10:20, 20:30], 2)  # touching the first: two objects
        project = w.session.project
        # saved by itself a moment after the last stroke (napari may be closed next)
        qtbot.waitUntil(lambda: project.drafts() == [image_id], timeout=10_000)
        _paint(layer, np.s_[40:50, 40:50], 3)  # and at once another image is opened
        other = next(r.id for r in project.images() if r.id != image_id)
        w.open_image(other)
        qtbot.waitUntil(lambda: w.current_id == other, timeout=30_000)
        assert project.load_objects_draft(image_id)[0].max() == 3  # the last stroke kept
        qtbot.waitUntil(lambda: not w.workers, timeout=30_000)  # its objects found
        w.close_project()
    finally:
        close_dock(w, qtbot)
    w = _dock(make_napari_viewer, folder)
    try:
        w.review.regions_check.setChecked(False)
        w.open_image(image_id)
        qtbot.waitUntil(lambda: layer_name in w.viewer.layers, timeout=30_000)
        ids = np.asarray(w.viewer.layers[layer_name].data)
        a, b = ids[15, 15], ids[15, 25]
        assert a > 0 and b > 0 and a != b and ids.max() == 3  # the draft's objects
        assert (ids[10:20, 10:20] == a).all() and (ids[10:20, 20:30] == b).all()
        qtbot.mouseClick(w.review.submit_btn, Qt.MouseButton.LeftButton)
        project = w.session.project
        qtbot.waitUntil(lambda: project.load_instances(image_id) is not None, timeout=10_000)
        assert project.drafts() == []  # Submit drops the draft
        stored, _ = project.load_instances(image_id)
        assert stored.max() == 3 and stored[15, 15] != stored[15, 25]
        qtbot.waitUntil(lambda: w.current_id not in (None, image_id), timeout=60_000)
    finally:
        close_dock(w, qtbot)


def test_two_object_classes_get_a_layer_each(make_napari_viewer, tmp_path, qtbot):
    folder = _project(tmp_path, ("background", "nucleus", "cell"),
                      {"nucleus": "objects", "cell": "objects"})
    w = _dock(make_napari_viewer, folder)
    try:
        v = w.viewer
        w.review.regions_check.setChecked(False)
        image_id = suggest(w, qtbot)
        names = [OBJECTS_PREFIX + "nucleus", OBJECTS_PREFIX + "cell"]
        qtbot.waitUntil(lambda: all(n in v.layers for n in names), timeout=30_000)
        nuclei, cells = (v.layers[n] for n in names)
        assert v.layers.selection.active is nuclei
        _paint(nuclei, np.s_[10:20, 10:20], nuclei.selected_label)
        _paint(nuclei, np.s_[10:20, 20:30], nuclei.selected_label + 1)
        _paint(cells, np.s_[40:60, 40:60], cells.selected_label)
        v.layers.selection.active = cells
        qtbot.mouseClick(w.objects.new_btn, Qt.MouseButton.LeftButton)
        assert cells.selected_label == 2 and v.layers.selection.active is cells
        panel = w.measure_panel  # measures every class's objects, each with its class
        with qtbot.waitSignal(panel.measured, timeout=30_000) as blocker:
            panel.measure_btn.click()
        assert blocker.args == [3]
        assert sorted(r["class"] for r in panel.rows) == ["cell", "nucleus", "nucleus"]
        qtbot.mouseClick(w.review.submit_btn, Qt.MouseButton.LeftButton)
        project = w.session.project
        qtbot.waitUntil(lambda: project.load_instances(image_id) is not None, timeout=10_000)
        ids, _ = project.load_instances(image_id)
        labels, _ = project.load_labels(image_id)
        assert ids.max() == 3 and len({ids[15, 15], ids[15, 25], ids[50, 50]}) == 3
        assert (labels[10:20, 10:30] == 1).all() and (labels[40:60, 40:60] == 2).all()
        assert labels.astype(bool).sum() == 200 + 400
        qtbot.waitUntil(lambda: w.current_id not in (None, image_id), timeout=60_000)
    finally:
        close_dock(w, qtbot)


def test_class_modes_are_chosen_when_the_project_is_created(make_napari_viewer, tmp_path,
                                                            qtbot):
    w = _dock(make_napari_viewer, None)
    try:
        w.viewer.add_image((make_blobs(shape=SHAPE, seed=0)[0] * 200).astype(np.uint8),
                           name="img")
        control = w.project_panel.findChild(ClassModes)
        w.project_panel.classes_edit.setText("background, nucleus:#ffd400, membrane")
        assert list(control.combos) == ["nucleus", "membrane"]
        assert control.apply_btn.isHidden()  # nothing to apply to yet
        control.combos["nucleus"].setCurrentText("objects")
        w.project_panel.create_requested.emit(str(tmp_path / "new"), "")  # "From layers"
        assert w.session is not None
        assert w.session.project.class_modes == {"nucleus": "objects", "membrane": "area"}
        assert w.session.project.object_classes == (1,)
        # the default formulation: a semantic model whose map the distance watershed splits
        assert w.session.project.instance_formulation == "distance"
        assert w.session.model_config.boundary_classes == ()
        assert not control.apply_btn.isHidden()  # now the open project's modes
        assert control.combos["nucleus"].currentText() == "objects"
    finally:
        close_dock(w, qtbot)


def test_consistency_weight_reaches_the_train_config(make_napari_viewer, tmp_path, qtbot):
    folder = _project(tmp_path, ("background", "nucleus"), {})
    w = _dock(make_napari_viewer, folder)
    try:
        field = w.settings.consistency_field
        assert field.value == 0.0 and w.session.train_config.consistency_weight == 0.0
        assert "2 of 5" in field.tooltip and "consistency.md" in field.tooltip
        field.value = 0.5
        w.settings.apply_btn.clicked.emit()
        assert w.session.train_config.consistency_weight == 0.5
        w.close_project()
    finally:
        close_dock(w, qtbot)
    w = _dock(make_napari_viewer, folder)  # saved with the project's training settings
    try:
        assert w.session.train_config.consistency_weight == 0.5
        assert w.settings.consistency_field.value == 0.5
    finally:
        close_dock(w, qtbot)
