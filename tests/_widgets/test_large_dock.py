"""A large image in the dock (a real napari viewer): its suggested box opens as a multiscale
image and a box-sized annotation, Submit stores that box alone, a table row opens a box of
it, and whole-image mode refuses it with what to do."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from napari_activeseg._widgets import ActiveSegWidget
from napari_activeseg._widgets._main import ANNOTATION, REGIONS
from napari_activeseg.core.config import InferenceConfig, ModelConfig
from napari_activeseg.core.largeimage import LARGE_SETTING
from napari_activeseg.core.project import Project

from ._helpers import close_dock, suggest

pytestmark = pytest.mark.gui

SHAPE = (300, 310)
TINY_MODEL = ModelConfig(in_channels=1, n_classes=2, depth=2, width=4, polarity="none")


@pytest.fixture
def widget(make_napari_viewer, tmp_path, qtbot, monkeypatch):
    raw = (np.random.default_rng(0).random(SHAPE) * 200).astype(np.uint8)
    tifffile.imwrite(tmp_path / "big.tif", raw, tile=(64, 64))
    with Project.create(tmp_path / "proj", classes=("background", "cell"),
                        settings={LARGE_SETTING: 200 * 200}) as project:  # 300 x 310 is large
        project.add_images([tmp_path / "big.tif"])
        project.set_setting("model_config", TINY_MODEL.to_dict())
        project.set_setting("inference_config",
                            InferenceConfig(tile_size=64, overlap=8, mc_samples=2).to_dict())
        project.set_setting("region_size", 64)
    viewer = make_napari_viewer()
    w = ActiveSegWidget(viewer)
    viewer.window.add_dock_widget(w)
    assert w.open_project(tmp_path / "proj") is not None
    w.messages = []
    for where in ("_main._notify", "_large.notify"):
        monkeypatch.setattr(f"napari_activeseg._widgets.{where}",
                            lambda kind, msg: w.messages.append((kind, msg)))
    yield w
    close_dock(w, qtbot)


def test_a_suggested_box_opens_box_sized_and_submit_stores_that_box_only(widget, qtbot):
    w, v = widget, widget.viewer
    project = w.session.project
    image_id = suggest(w, qtbot)
    (y0, x0, y1, x1) = box = w.current_boxes[0]
    image, ann = v.layers["image"], v.layers[ANNOTATION]
    assert image.multiscale and image.data[0].shape == SHAPE
    assert ann.data.shape == (y1 - y0, x1 - x0) == (64, 64)  # the box, not 300 x 310
    assert tuple(ann.translate) == (y0, x0) and ann.mode == "paint"
    assert v.layers[REGIONS].nshapes == 1
    painted = np.zeros(ann.data.shape, np.uint8)
    painted[10:40, 5:30] = 1
    ann.data = painted  # what a brush stroke leaves
    with qtbot.waitSignal(w.scoring_finished, timeout=60_000):
        w.review.submit_btn.click()
    assert not [m for m in w.messages if m[0] == "error"]
    assert not list((project.folder / "labels").iterdir())  # no image-sized label file
    (region,) = project.label_regions(image_id)
    assert region.box == box
    np.testing.assert_array_equal(region.labels, painted)
    mask = project.reviewed_mask(image_id)
    assert mask[:, :].sum() == 64 * 64 and mask[y0:y1, x0:x1].all()  # the rest unreviewed
    assert project.get_image(image_id).partial
    # the next suggestion is another box of it, not the one just reviewed
    assert w.current_id == image_id and w.current_boxes[0] != box


def test_a_table_row_opens_a_box_and_whole_image_mode_refuses(widget, qtbot):
    w, v = widget, widget.viewer
    image_id = w.session.project.images()[0].id
    with qtbot.waitSignal(w.image_opened, timeout=30_000):
        w.open_image(image_id)  # what activating its table row does
    y0, x0, y1, x1 = w.current_boxes[0]
    assert v.layers[ANNOTATION].data.shape == (y1 - y0, x1 - x0)
    # a box the user draws on the boxes layer is opened next
    v.layers[REGIONS].add_rectangles(np.array([[200, 250], [280, 300]]))
    with qtbot.waitSignal(w.image_opened, timeout=30_000):
        w.open_image(image_id)
    assert w.current_boxes == [(200, 250, 280, 300)]
    assert v.layers[ANNOTATION].data.shape == (80, 50)
    w.review.regions_check.setChecked(False)
    w.current_view = None
    w.open_image(image_id)
    assert w.current_view is None  # nothing opened, nothing crashed
    (kind, msg), = w.messages
    assert kind == "error" and "too large to show whole" in msg and "Boxes" in msg
    with qtbot.waitSignal(w.scoring_finished, timeout=60_000):
        w.suggest_next()  # whole-image suggestions pass over it, and say why
    assert w.current_view is None
    assert "1 large image(s) are left" in w.messages[1][1] and "Boxes" in w.messages[1][1]
