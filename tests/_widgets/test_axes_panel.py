"""The project panel's axes choices: "stack is channels" for layers, an axes string for files."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from napari_activeseg._widgets import ActiveSegWidget

from ._helpers import close_dock

pytestmark = pytest.mark.gui


def test_stack_is_channels_makes_one_multichannel_item(make_napari_viewer, tmp_path, qtbot):
    viewer = make_napari_viewer()
    stack = np.random.default_rng(0).integers(0, 255, (3, 32, 40), dtype=np.uint8)
    viewer.add_image(stack, name="cells")
    w = ActiveSegWidget(viewer)
    w.project_panel.stack_channels_check.setChecked(True)
    session = w.create_project(tmp_path / "p", from_layers=True)
    assert session is not None
    (record,) = session.project.images()
    assert record.name == "cells" and session.project.channels == 3
    np.testing.assert_array_equal(session.project.load_image(record.id),
                                  np.moveaxis(stack, 0, -1))
    close_dock(w, qtbot)


def test_axes_string_is_passed_to_the_new_project(make_napari_viewer, tmp_path, qtbot):
    src = tmp_path / "src"
    src.mkdir()
    tifffile.imwrite(src / "z.tif", np.arange(2 * 16 * 16, dtype=np.uint16).reshape(2, 16, 16), photometric="minisblack")
    w = ActiveSegWidget(make_napari_viewer())
    w.project_panel.axes_combo.setCurrentText("zyx")
    session = w.create_project(tmp_path / "p", source_folder=src)
    assert [r.name for r in session.project.images()] == ["z_z0000", "z_z0001"]
    assert session.project.get_setting("axes") == "ZYX"
    close_dock(w, qtbot)
