"""The manifest's reader (a project folder opens the dock) and writer (a labels layer as TIFF)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_activeseg._io import DOCK_NAME, PLUGIN, get_reader, read_project, write_labels_tiff
from napari_activeseg.core.project import Project

from ._helpers import close_dock

ROOT = Path(__file__).resolve().parents[2]


def _project(folder: Path) -> Path:
    image = (np.arange(32 * 32).reshape(32, 32) % 251).astype(np.uint8)
    Project.create(folder, arrays={"img": image}, classes=("background", "cell")).close()
    return folder


@pytest.fixture
def errors():
    """The napari error notifications shown while a test runs."""
    from napari.utils.notifications import NotificationSeverity, notification_manager

    seen = []

    def keep(notification):
        if notification.severity == NotificationSeverity.ERROR:
            seen.append(notification)

    notification_manager.notification_ready.connect(keep)
    yield seen
    notification_manager.notification_ready.disconnect(keep)


def test_manifest_validates_and_contributes_the_reader_and_writer():
    from npe2 import PluginManifest

    mf = PluginManifest.from_file(ROOT / "napari.yaml")  # validates the whole manifest
    (reader,) = mf.contributions.readers
    assert reader.accepts_directories and reader.command == "napari-activeseg.get_reader"
    (writer,) = mf.contributions.writers
    assert writer.layer_types == ["labels"]
    assert set(writer.filename_extensions) == {".tif", ".tiff"}
    assert DOCK_NAME in [w.display_name for w in mf.contributions.widgets]
    assert mf.name == PLUGIN


def test_reader_declines_what_is_not_one_project_folder(tmp_path):
    project = _project(tmp_path / "proj")
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "a.tif").write_bytes(b"")
    assert get_reader(str(tmp_path / "plain")) is None
    assert get_reader(str(tmp_path / "plain" / "a.tif")) is None
    assert get_reader(str(project / "project.sqlite")) is None  # the catalog file itself
    assert get_reader(str(tmp_path / "missing")) is None
    assert get_reader([str(project), str(project)]) is None  # a stack of paths
    assert get_reader(str(project)) is read_project


@pytest.mark.gui
def test_opening_a_project_folder_docks_the_widget_with_it_open(make_napari_viewer, tmp_path,
                                                               qtbot, errors):
    folder = _project(tmp_path / "proj")
    viewer = make_napari_viewer()
    assert viewer.open(str(folder), plugin=PLUGIN) == []  # no layer: the dock shows the project
    _, dock = viewer.window.add_plugin_dock_widget(PLUGIN, DOCK_NAME)  # the docked one
    try:
        assert dock.session is not None and dock.session.project.folder == folder.resolve()
        assert [r.name for r in dock.session.project.images()] == ["img"]
        session = dock.session
        # opening it again keeps the same dock and session; another project replaces it there
        viewer.open(str(folder), plugin=PLUGIN)
        assert viewer.window.add_plugin_dock_widget(PLUGIN, DOCK_NAME)[1] is dock
        assert dock.session is session
        other = _project(tmp_path / "other")
        viewer.open(str(other), plugin=PLUGIN)
        assert dock.session.project.folder == other.resolve()
        assert errors == []
        with Project.open(folder):  # the first project was closed (its lock released)
            pass
    finally:
        close_dock(dock, qtbot)


@pytest.mark.gui
def test_a_project_open_elsewhere_is_an_error_notification(make_napari_viewer, tmp_path,
                                                          qtbot, errors):
    from napari.utils.notifications import ErrorNotification

    folder = _project(tmp_path / "proj")
    viewer = make_napari_viewer()
    with Project.open(folder):  # holds the read-write lock, as another napari would
        assert viewer.open(str(folder), plugin=PLUGIN) == []  # no exception reaches napari
    _, dock = viewer.window.add_plugin_dock_widget(PLUGIN, DOCK_NAME)
    try:
        assert dock.session is None
        assert len(errors) == 1 and not isinstance(errors[0], ErrorNotification)  # no traceback
        assert "is open read-write" in errors[0].message and "read_only" in errors[0].message
    finally:
        close_dock(dock, qtbot)


@pytest.mark.gui
@pytest.mark.parametrize(("dtype", "top", "stored"), [
    (np.uint8, 2, np.uint8), (np.uint16, 300, np.uint16), (np.int32, 65535, np.uint16),
    (np.int64, 7, np.uint8),
])
def test_saving_a_labels_layer_round_trips(make_napari_viewer, tmp_path, dtype, top, stored):
    labels = (np.arange(40 * 30).reshape(40, 30) % (top + 1)).astype(dtype)
    viewer = make_napari_viewer()
    viewer.add_labels(labels, name="mask")
    written = viewer.layers.save(str(tmp_path / "mask.tif"), plugin=PLUGIN)
    assert written == [str(tmp_path / "mask.tif")]
    back = tifffile.imread(written[0])
    assert back.dtype == stored and np.array_equal(back, labels)


@pytest.mark.parametrize("shape", [(3, 8, 9), (4, 6, 3), (2, 3, 5, 4)])
def test_writer_keeps_a_stack_one_grey_page_per_plane(tmp_path, shape):
    # 3 or 4 planes, or 3 or 4 columns, are not colour channels of a labels layer
    stack = (np.arange(np.prod(shape)).reshape(shape) % 5).astype(np.int32)
    (path,) = write_labels_tiff(str(tmp_path / "stack.tiff"), stack, {"name": "stack"})
    with tifffile.TiffFile(path) as tif:
        assert len(tif.pages) == np.prod(shape[:-2])
        assert tif.pages[0].photometric == tifffile.PHOTOMETRIC.MINISBLACK
        assert np.array_equal(tif.asarray(), stack)


@pytest.mark.parametrize(("value", "says"), [(-1, "negative"), (70_000, "65535")])
def test_writer_refuses_ids_a_tiff_label_cannot_hold(tmp_path, value, says):
    labels = np.zeros((8, 8), np.int32)
    labels[2, 3] = value
    with pytest.raises(ValueError, match=says) as info:
        write_labels_tiff(str(tmp_path / "bad.tif"), labels, {"name": "mask"})
    assert "'mask'" in str(info.value)
    assert list(tmp_path.iterdir()) == []  # nothing written, not even a temporary file


def test_writer_refuses_a_multiscale_layer(tmp_path):
    levels = [np.zeros((8, 8), np.uint8), np.zeros((4, 4), np.uint8)]
    with pytest.raises(ValueError, match="multiscale"):
        write_labels_tiff(str(tmp_path / "m.tif"), levels, {"name": "m", "multiscale": True})
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("shape", [(8, 9), (3, 8, 9)])
def test_writer_refuses_a_path_it_cannot_write(tmp_path, shape):
    labels = np.ones(shape, np.uint8)
    for bad in (tmp_path / "mask.png", tmp_path / "missing" / "mask.tif"):
        with pytest.raises(ValueError, match="tif"):
            write_labels_tiff(str(bad), labels, {"name": "mask"})
    assert list(tmp_path.iterdir()) == []
