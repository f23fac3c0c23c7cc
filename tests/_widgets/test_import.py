"""Import masks… in the dock: the folder dialog, the job, the notification, the pool table."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from napari_activeseg._widgets import ActiveSegWidget
from napari_activeseg.core.project import Project

from ._helpers import close_dock

pytestmark = pytest.mark.gui


def test_import_masks_button_submits_the_matched_images(make_napari_viewer, tmp_path, qtbot,
                                                         monkeypatch):
    images = {f"img{i}": (np.arange(32 * 32).reshape(32, 32) * (i + 1) % 251).astype(np.uint8)
              for i in range(3)}
    Project.create(tmp_path / "proj", arrays=images, classes=("background", "cell")).close()
    masks = tmp_path / "masks"
    masks.mkdir()
    truth = np.zeros((32, 32), np.uint16)
    truth[4:12, 4:12], truth[20:28, 16:30] = 1, 2  # two instance ids: both become "cell"
    tifffile.imwrite(masks / "img1_cp_masks.tif", truth)
    tifffile.imwrite(masks / "unknown_mask.tif", truth)
    messages = []
    monkeypatch.setattr("napari_activeseg._widgets._project_panel.notify",
                        lambda kind, msg: messages.append((kind, msg)))
    monkeypatch.setattr("napari_activeseg._widgets._project_panel.QFileDialog."
                        "getExistingDirectory", lambda *a, **k: str(masks))
    w = ActiveSegWidget(make_napari_viewer())
    try:
        assert not w.project_panel.import_btn.isEnabled()  # no project open yet
        w.open_project(tmp_path / "proj")
        assert w.project_panel.import_btn.isEnabled()
        w.project_panel.import_btn.click()
        row = w.pool.row_of("img1")

        def submitted():
            return w.pool.item(row, 1).text() == "submitted"

        qtbot.waitUntil(lambda: submitted() and not w.workers, timeout=20_000)
        assert [w.pool.item(w.pool.row_of(n), 1).text() for n in ("img0", "img2")] == \
            ["unlabelled", "unlabelled"]
        summary = f"Imported 1 of 2 mask file(s) from {masks} (1 converted); 1 skipped."
        assert messages == [("info", summary)]
        assert "unknown_mask.tif: skipped (no image" in w.project_panel.import_btn.toolTip()
        assert "(1 labelled)" in w.project_panel.project_label.text()
        assert w.train_panel.train_btn.isEnabled()  # there is something to train on now
        project = w.session.project
        labels, reviewed = project.load_labels(
            next(r.id for r in project.images() if r.name == "img1"))
        np.testing.assert_array_equal(labels, truth > 0)
        assert reviewed is None
    finally:
        close_dock(w, qtbot)
