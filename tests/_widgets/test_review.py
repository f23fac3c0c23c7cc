"""Boxes, scribbles and the re-open path in a real napari viewer: only what the user reviewed
becomes ground truth, and the rest of the image stays in the pool."""

from __future__ import annotations

import numpy as np
import pytest

from napari_activeseg._widgets import ActiveSegWidget
from napari_activeseg._widgets._main import ANNOTATION, NOT_REVIEWED, REGIONS, REVIEWED, SCRIBBLES
from napari_activeseg.core.config import InferenceConfig, ModelConfig, TrainConfig
from napari_activeseg.core.project import Project

from ..conftest import make_blobs
from ._helpers import close_dock, suggest

pytestmark = pytest.mark.gui

SHAPE = (96, 96)
TINY_MODEL = ModelConfig(in_channels=1, n_classes=2, depth=2, width=4, polarity="none")
TINY_TRAIN = TrainConfig(patch_size=32, batch_size=4, max_steps=10, time_budget_s=None, lr=1e-2)


@pytest.fixture
def widget(make_napari_viewer, tmp_path, qtbot, monkeypatch):
    pairs = [make_blobs(shape=SHAPE, seed=s, n=8) for s in range(3)]
    arrays = {f"img{s}": (p[0] * 200).astype(np.uint8) for s, p in enumerate(pairs)}
    with Project.create(tmp_path / "proj", arrays=arrays,
                        classes=("background", "blob")) as project:
        project.set_setting("model_config", TINY_MODEL.to_dict())
        project.set_setting("train_config", TINY_TRAIN.to_dict())
        project.set_setting("inference_config",
                            InferenceConfig(tile_size=64, overlap=8, mc_samples=2).to_dict())
        project.set_setting("region_size", 48)  # 4 windows per image
        truth = {r.id: pairs[int(r.name[3:])][1] for r in project.images()}
    viewer = make_napari_viewer()
    w = ActiveSegWidget(viewer)
    viewer.window.add_dock_widget(w)
    assert w.open_project(tmp_path / "proj") is not None
    w.truth = truth
    w.messages = []
    monkeypatch.setattr("napari_activeseg._widgets._main._notify",
                        lambda kind, msg: w.messages.append((kind, msg)))
    yield w
    close_dock(w, qtbot)


def _mask(boxes):
    m = np.zeros(SHAPE, bool)
    for y0, x0, y1, x1 in boxes:
        m[y0:y1, x0:x1] = True
    return m


def test_boxes_are_shown_and_only_they_are_submitted(widget, qtbot):
    w, v = widget, widget.viewer
    assert w.review.regions_check.isChecked()  # boxes are the default unit
    image_id = suggest(w, qtbot)
    boxes = w.current_boxes
    assert len(boxes) == 3 and len(v.layers[REGIONS].data) == 3
    inside = _mask(boxes)
    # outside the boxes the annotation is veiled: visibly not ground truth
    assert np.array_equal(v.layers[NOT_REVIEWED].data.astype(bool), ~inside)
    assert "Review 3 boxes" in w.review.reason_label.text()
    ann = v.layers[ANNOTATION]
    corrected = np.array(ann.data)
    corrected[inside] = w.truth[image_id][inside]
    ann.data = corrected
    with qtbot.waitSignal(w.scoring_finished, timeout=60_000):
        w.review.submit_btn.click()
    project = w.session.project
    assert np.array_equal(project.reviewed_mask(image_id), inside)
    labels, _ = project.load_labels(image_id)
    assert np.array_equal(labels[inside], w.truth[image_id][inside])
    rec = project.get_image(image_id)
    assert rec.partial
    # its other windows stay in the pool: they can be suggested later
    later = w.session.suggest(50, regions=True)
    assert image_id in {p.image_id for p in later}
    assert not any(p.box in boxes for p in later if p.image_id == image_id)
    statuses = {w.pool.item(r, 0).text(): w.pool.item(r, 1).text()
                for r in range(w.pool.rowCount())}
    assert statuses[rec.name] == "partial"


def test_reopening_from_the_table_saves_no_unreviewed_pixel(widget, qtbot):
    w, v = widget, widget.viewer
    project = w.session.project
    image_id = project.images()[0].id
    box = (0, 0, 48, 48)
    stale = np.ones(SHAPE, np.uint8)  # e.g. a prediction stored beside the box
    stale[:48, :48] = w.truth[image_id][:48, :48]
    w.session.submit(image_id, stale, _mask([box]))
    row = next(r for r in range(w.pool.rowCount())
               if w.pool.item(r, 0).text() == project.get_image(image_id).name)
    with qtbot.waitSignal(w.image_opened, timeout=30_000):
        w.pool.activate_row(row)
    ann = v.layers[ANNOTATION]
    assert REVIEWED in v.layers  # what was reviewed before is outlined
    shown = np.asarray(ann.data)
    assert not shown[48:].any() and not shown[:, 48:].any()  # not the stored ones
    # submitting untouched: nothing new was reviewed -> refused, nothing written
    n_before = len(project.submissions(image_id))
    w.submit()
    assert w.messages and w.messages[-1][0] == "error" and "Nothing was reviewed" in \
        w.messages[-1][1]
    assert len(project.submissions(image_id)) == n_before
    # a scribble of the background class at the bottom right: only it joins the truth
    scr = np.zeros(SHAPE, np.uint8)
    scr[80:90, 80:90] = 1  # class 0 + 1
    v.layers[SCRIBBLES].data = scr
    with qtbot.waitSignal(w.scoring_finished, timeout=60_000):
        w.submit()
    reviewed = project.reviewed_mask(image_id)
    assert np.array_equal(reviewed, _mask([box]) | (scr > 0))
    labels, _ = project.load_labels(image_id)
    assert not labels[80:90, 80:90].any()  # background, as scribbled
    assert np.array_equal(labels[:48, :48], w.truth[image_id][:48, :48])


def test_scribbles_alone_are_the_truth_and_bad_values_are_refused(widget, qtbot):
    w, v = widget, widget.viewer
    project = w.session.project
    image_id = project.images()[1].id
    with qtbot.waitSignal(w.image_opened, timeout=30_000):
        w.open_image(image_id)  # opened by hand: no boxes, scribbles only
    assert w.current_boxes == []
    w.start_scribbling()
    layer = v.layers[SCRIBBLES]
    assert v.layers.selection.active is layer and layer.mode == "paint"
    assert layer.selected_label == 2  # the first foreground class ("blob") + 1
    scr = np.zeros(SHAPE, np.uint8)
    scr[10:14, 10:40] = 7  # no such class
    layer.data = scr
    w.submit()
    assert w.messages[-1][0] == "error" and "scribble" in w.messages[-1][1]
    assert project.labelled_ids() == []
    scr[10:14, 10:40] = 2
    scr[60:62, 5:50] = 1
    layer.data = scr
    with qtbot.waitSignal(w.scoring_finished, timeout=60_000):
        w.submit()
    labels, reviewed = project.load_labels(image_id)
    assert np.array_equal(reviewed, scr > 0)
    assert labels[10:14, 10:40].all() and not labels[60:62, 5:50].any()


def test_whole_image_mode_is_one_click_away(widget, qtbot):
    w, v = widget, widget.viewer
    w.review.regions_check.setChecked(False)
    image_id = suggest(w, qtbot)
    assert w.current_boxes == [] and REGIONS not in v.layers and NOT_REVIEWED not in v.layers
    v.layers[ANNOTATION].data = w.truth[image_id].copy()
    with qtbot.waitSignal(w.scoring_finished, timeout=60_000):
        w.review.submit_btn.click()
    labels, reviewed = w.session.project.load_labels(image_id)
    assert reviewed is None and np.array_equal(labels, w.truth[image_id])
    assert not w.session.project.get_image(image_id).partial


def test_a_restored_draft_keeps_what_was_reviewed(widget, qtbot, tmp_path):
    w, v = widget, widget.viewer
    image_id = suggest(w, qtbot)
    boxes = list(w.current_boxes)
    scr = np.zeros(SHAPE, np.uint8)
    scr[90:94, 0:20] = 2  # a "blob" stroke, wherever it is
    v.layers[SCRIBBLES].data = scr
    w.autosave_draft()
    project = w.session.project
    want = _mask(boxes) | (scr > 0)
    assert np.array_equal(project.load_draft_reviewed(image_id), want)
    w.close_project()  # e.g. napari closed (or crashed) before Submit
    assert w.open_project(tmp_path / "proj") is not None
    with qtbot.waitSignal(w.image_opened, timeout=30_000):
        w.open_image(image_id)  # from the table: no boxes any more
    assert w.current_boxes == []
    with qtbot.waitSignal(w.scoring_finished, timeout=60_000):
        w.submit()
    labels, reviewed = w.session.project.load_labels(image_id)
    assert np.array_equal(reviewed, want)
    assert labels[90:94, 0:20].all()
    assert w.session.project.load_draft_reviewed(image_id) is None  # the draft went with it
