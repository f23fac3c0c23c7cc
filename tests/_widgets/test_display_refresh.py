"""Showing an image updates the dock's layers in place: a refresh of the open image (a new
model) leaves the user's zoom, contrast and layers alone, and an image of another shape reuses
the layers instead of adding new ones (adding a napari layer is what stalled the viewer)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_activeseg._widgets import ActiveSegWidget
from napari_activeseg._widgets._main import ANNOTATION, SCRIBBLES, UNCERTAINTY
from napari_activeseg.core.config import ModelConfig
from napari_activeseg.core.project import Project

from ..conftest import make_blobs
from ._helpers import close_dock

pytestmark = pytest.mark.gui


@pytest.fixture
def widget(make_napari_viewer, tmp_path, qtbot):
    a = (make_blobs(shape=(96, 96), seed=0, n=6)[0] * 200).astype(np.uint8)
    b = (make_blobs(shape=(80, 112), seed=1, n=6)[0] * 200).astype(np.uint8)
    c = (make_blobs(shape=(96, 96), seed=2, n=6)[0] * 200).astype(np.uint8)
    with Project.create(tmp_path / "proj", arrays={"a": a, "b": b, "c": c},
                        classes=("background", "blob")) as project:
        project.set_setting("model_config", ModelConfig(in_channels=1, depth=2, width=4,
                                                        polarity="none").to_dict())
        ids = {r.name: r.id for r in project.images()}
    viewer = make_napari_viewer()
    w = ActiveSegWidget(viewer)
    viewer.window.add_dock_widget(w)
    assert w.open_project(tmp_path / "proj") is not None
    w.ids = ids
    yield w
    close_dock(w, qtbot)


def _open(w, qtbot, name):
    with qtbot.waitSignal(w.image_opened, timeout=30_000):
        w.open_image(w.ids[name])


def test_refreshing_the_open_image_keeps_zoom_contrast_and_layers(widget, qtbot):
    w, v = widget, widget.viewer
    _open(w, qtbot, "a")
    layers = {ly.name: ly for ly in v.layers}
    v.scene.camera.zoom = 7.5
    v.layers["image"].contrast_limits = (10.0, 60.0)
    _open(w, qtbot, "a")  # what a new model's refresh of the open image does
    assert v.scene.camera.zoom == pytest.approx(7.5)
    assert tuple(v.layers["image"].contrast_limits) == pytest.approx((10.0, 60.0))
    assert all(v.layers[name] is layer for name, layer in layers.items())
    assert v.layers.selection.active is v.layers[ANNOTATION]
    assert v.layers[ANNOTATION].mode == "paint"


def test_an_image_of_another_shape_reuses_the_layers(widget, qtbot):
    w, v = widget, widget.viewer
    _open(w, qtbot, "a")
    before = {ly.name: ly for ly in v.layers}
    v.scene.camera.zoom = 7.5
    _open(w, qtbot, "b")
    for name in ("image", ANNOTATION, SCRIBBLES):
        assert v.layers[name] is before[name]
        assert v.layers[name].data.shape == (80, 112)
    assert v.layers["image"].metadata["activeseg_name"] == "b"
    assert v.scene.camera.zoom != pytest.approx(7.5)  # another image: the view is reset to it
    assert v.layers[ANNOTATION].selected_label == 1


def test_before_a_model_the_uncertainty_layer_waits_transparent(widget, qtbot):
    # drawn (its shaders compiled with the first view's) but showing nothing
    w, v = widget, widget.viewer
    _open(w, qtbot, "a")
    unc = v.layers[UNCERTAINTY]
    assert unc.visible and unc.opacity == 0 and not np.asarray(unc.data).any()
    _open(w, qtbot, "b")
    assert v.layers[UNCERTAINTY] is unc and unc.data.shape == (80, 112) and unc.opacity == 0


def test_an_image_of_the_same_shape_is_written_into_the_layers_without_its_undo(widget, qtbot):
    w, v = widget, widget.viewer
    w.session.submit(w.ids["c"], np.ones((96, 96), np.uint8))  # c: blob everywhere
    _open(w, qtbot, "a")
    ann = v.layers[ANNOTATION]
    ann.selected_label = 1
    ann.paint((10, 10), 1)  # the user paints on image a (napari records it for undo)
    assert ann.data[10, 10] == 1
    _open(w, qtbot, "c")  # same shape: a's layers are reused, c's labels written into them
    assert v.layers[ANNOTATION] is ann and v.layers["image"].metadata["activeseg_name"] == "c"
    np.testing.assert_array_equal(ann.data, w.session.view(w.ids["c"]).labels)
    assert ann.data.all()
    ann.undo()  # a's stroke (0 -> 1 at (10, 10)) is not replayed onto c
    assert ann.data.all()
    ann.paint((20, 20), 0)  # c's own edits stay undoable
    assert ann.data[20, 20] == 0
    ann.undo()
    assert ann.data.all()


def test_an_array_a_script_gave_a_layer_is_never_written_into(widget, qtbot):
    w, v = widget, widget.viewer
    _open(w, qtbot, "a")
    mine = np.zeros((96, 96), np.uint8)
    mine[5:9, 5:9] = 2
    v.layers[SCRIBBLES].data = mine  # e.g. scribbles loaded by a script
    _open(w, qtbot, "c")  # same shape: the dock clears the scribbles for c...
    assert not np.asarray(v.layers[SCRIBBLES].data).any()
    assert (mine[5:9, 5:9] == 2).all() and mine.sum() == 32  # ...in an array of its own
