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
    with Project.create(tmp_path / "proj", arrays={"a": a, "b": b},
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


def test_before_a_model_the_uncertainty_layer_waits_hidden(widget, qtbot):
    w, v = widget, widget.viewer
    _open(w, qtbot, "a")
    unc = v.layers[UNCERTAINTY]
    assert not unc.visible and not np.asarray(unc.data).any()
    _open(w, qtbot, "b")
    assert v.layers[UNCERTAINTY] is unc and unc.data.shape == (80, 112) and not unc.visible
