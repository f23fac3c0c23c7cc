"""The dock widget in a real napari viewer: the whole loop, cancel, close, bad folders."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from napari_activeseg._widgets import ActiveSegWidget
from napari_activeseg._widgets._layers import class_colormap
from napari_activeseg._widgets._main import ANNOTATION, UNCERTAINTY
from napari_activeseg.core.config import InferenceConfig, ModelConfig, TrainConfig
from napari_activeseg.core.project import Project

from ..conftest import make_blobs
from ._helpers import close_dock, suggest

pytestmark = pytest.mark.gui

TINY_MODEL = ModelConfig(in_channels=1, n_classes=2, depth=2, width=4)
TINY_TRAIN = TrainConfig(patch_size=32, batch_size=4, max_steps=15, time_budget_s=None, lr=1e-2)


def _make_project(folder, n=4, *, continuous=False):
    pairs = [make_blobs(shape=(48, 48), seed=s, n=4) for s in range(n)]
    arrays = {f"img{s}": (p[0] * 200).astype(np.uint8) for s, p in enumerate(pairs)}
    project = Project.create(folder, arrays=arrays, classes=("background", "blob"))
    project.set_setting("model_config", TINY_MODEL.to_dict())
    project.set_setting("train_config", TINY_TRAIN.to_dict())
    project.set_setting("inference_config",
                        InferenceConfig(tile_size=64, overlap=8, mc_samples=2).to_dict())
    # these tests drive rounds by hand (tests/_widgets/test_continuous_dock.py: by themselves)
    project.set_setting("continuous_training", continuous)
    truth = {r.id: pairs[int(r.name[3:])][1] for r in project.images()}
    project.close()
    return truth


@pytest.fixture
def widget(make_napari_viewer, tmp_path, qtbot):
    truth = _make_project(tmp_path / "proj")
    viewer = make_napari_viewer()
    w = ActiveSegWidget(viewer)
    viewer.window.add_dock_widget(w)
    assert w.open_project(tmp_path / "proj") is not None
    w.truth = truth
    yield w
    close_dock(w, qtbot)


def test_whole_loop(widget, qtbot):
    w, v = widget, widget.viewer
    w.review.regions_check.setChecked(False)  # whole-image mode: Submit accepts the whole image
    first = suggest(w, qtbot)
    assert {ANNOTATION, "image"} <= {ly.name for ly in v.layers}
    ann = v.layers[ANNOTATION]
    assert v.layers.selection.active is ann and ann.mode == "paint"
    assert not ann.data.any()  # no model yet: empty pre-annotation
    # the user paints the right answer, then submits with the button
    ann.data = w.truth[first].copy()
    with qtbot.waitSignal(w.scoring_finished, timeout=60_000):
        w.review.submit_btn.click()
    assert w.session.project.labelled_ids() == [first]
    second = w.current_id
    assert second is not None and second != first
    # submit by key binding (Shift-S, bound on the viewer)
    v.layers[ANNOTATION].data = w.truth[second].copy()
    with qtbot.waitSignal(w.scoring_finished, timeout=60_000):
        _key(v, "Shift-S")(v)
    assert sorted(w.session.project.labelled_ids()) == sorted([first, second])
    # train in the worker; after it the pool is re-scored and the table shows scores
    third = w.current_id
    before = v.layers[ANNOTATION].data.copy()
    summaries = []
    w.training_finished.connect(summaries.append)
    with qtbot.waitSignals([w.training_finished, w.scoring_finished, w.image_opened],
                           timeout=120_000):
        w.train_panel.train_btn.click()
    summary = summaries[0]
    assert summary.saved and w.session.model_version == summary.model_version
    assert summary.result.steps == TINY_TRAIN.max_steps
    # the open image got a prediction from the new model, and an uncertainty layer
    assert UNCERTAINTY in v.layers and v.layers[UNCERTAINTY].visible
    assert v.layers[UNCERTAINTY].data.any()
    assert w.current_id == third
    fresh = w.session.predict(third)
    pre = w.current_view.prediction
    assert pre is not None and np.array_equal(pre.labels, fresh.labels)
    if not before.any():  # untouched annotation: replaced by the new model's prediction
        assert np.array_equal(v.layers[ANNOTATION].data, fresh.labels)
    def n_scored():
        return sum(bool(w.pool.item(r, 2).text()) for r in range(w.pool.rowCount()))

    # the table follows the session's scores_changed signal (queued to the GUI thread)
    qtbot.waitUntil(lambda: n_scored() == 2, timeout=10_000)  # the two unlabelled images
    statuses = [w.pool.item(r, 1).text() for r in range(w.pool.rowCount())]
    assert statuses.count("submitted") == 2


def _long_round(w, qtbot) -> int:
    """Submit a suggestion, start a round of 100,000 steps; the submitted image's id."""
    first = suggest(w, qtbot)
    w.session.submit(first, w.truth[first])
    w.session.configure(train_config=TINY_TRAIN.replace(max_steps=100_000))
    w.train_panel.train_btn.click()
    qtbot.waitUntil(lambda: len(w.train_panel.history) >= 2, timeout=30_000)
    return first


def test_cancel_training_keeps_last_model(widget, qtbot):
    w = widget
    s = w.session
    with qtbot.waitSignal(w.training_finished, timeout=60_000) as blocker:
        _long_round(w, qtbot)
        w.train_panel.cancel_btn.click()
    assert blocker.args[0].saved is False
    assert s.model is None and not s.project.models()
    qtbot.waitUntil(lambda: not w.workers, timeout=10_000)


def test_suggest_works_while_training(widget, qtbot):
    w = widget
    first = _long_round(w, qtbot)
    assert w.busy and w.review.suggest_btn.isEnabled()
    with qtbot.waitSignal(w.image_opened, timeout=30_000) as opened:
        w.review.suggest_btn.click()
    # a suggestion opened from the queue while the round is still running
    assert w.jobs.holds("train") and opened.args[0] not in (None, first)
    assert w.current_view.suggestion is not None
    with qtbot.waitSignal(w.training_finished, timeout=60_000):
        w.train_panel.cancel_btn.click()


@pytest.mark.parametrize("job", ["training", "scoring"])
def test_closing_the_viewer_stops_work(make_napari_viewer, tmp_path, qtbot, job):
    truth = _make_project(tmp_path / "p", n=6)
    viewer = make_napari_viewer()
    w = ActiveSegWidget(viewer)
    viewer.window.add_dock_widget(w)
    w.open_project(tmp_path / "p")
    s = w.session
    ids = [r.id for r in s.project.images()]
    s.submit(ids[0], truth[ids[0]])
    if job == "training":
        s.configure(train_config=TINY_TRAIN.replace(max_steps=100_000))
        w.train()
        qtbot.waitUntil(lambda: len(w.train_panel.history) >= 1, timeout=30_000)
    else:
        from napari_activeseg.core.progress import run_to_end

        run_to_end(s.train())
        s.set_strategy("tta")
        w.score_pool()
    workers = list(w.workers)
    assert workers
    w.close()
    viewer.close()
    qtbot.waitUntil(lambda: all(not wk.is_running for wk in workers), timeout=20_000)
    s.project.close()
    with Project.open(tmp_path / "p") as proj:
        assert proj.integrity_check() == []
        assert proj.labelled_ids() == [ids[0]]


def test_folder_without_images_is_a_clear_error(widget, tmp_path, monkeypatch):
    messages = []
    monkeypatch.setattr("napari_activeseg._widgets._main._notify",
                        lambda kind, msg: messages.append((kind, msg)))
    (tmp_path / "empty").mkdir()
    old = widget.session
    assert widget.create_project(tmp_path / "new", source_folder=tmp_path / "empty") is None
    assert messages and messages[0][0] == "error" and "empty" in messages[0][1]
    assert widget.session is old


def test_second_open_of_the_same_project_says_in_use(widget, tmp_path, monkeypatch):
    messages = []
    monkeypatch.setattr("napari_activeseg._widgets._main._notify",
                        lambda kind, msg: messages.append((kind, msg)))
    other = ActiveSegWidget(widget.viewer)
    assert other.open_project(tmp_path / "proj") is None
    assert messages and messages[0][0] == "error"
    assert "is open" in messages[0][1] and "read_only=True" in messages[0][1]


def test_project_from_a_stack_layer(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    stack = np.stack([(make_blobs(shape=(32, 32), seed=s)[0] * 200).astype(np.uint8)
                      for s in range(3)])
    viewer.add_image(stack, name="movie")
    w = ActiveSegWidget(viewer)
    w.project_panel.classes_edit.setText("background, cell, debris")
    session = w.create_project(tmp_path / "stack", from_layers=True)
    assert session is not None
    assert [r.name for r in session.project.images()] == ["movie_0000", "movie_0001",
                                                         "movie_0002"]
    assert session.project.classes == ["background", "cell", "debris"]
    session.project.close()


def test_widget_module_imports_no_torch():
    code = ("import sys; import napari_activeseg._widgets; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip().splitlines()[-1] == "False"


def test_edits_are_autosaved_and_restored_on_reopen(widget, qtbot, tmp_path):
    w, v = widget, widget.viewer
    image_id = suggest(w, qtbot)
    w.autosave_draft()  # untouched: no draft
    assert w.session.project.load_draft(image_id) is None
    edited = w.truth[image_id].copy()
    v.layers[ANNOTATION].data = edited
    w.autosave_draft()
    w.close_project()
    assert w.open_project(tmp_path / "proj") is not None
    with qtbot.waitSignal(w.image_opened, timeout=30_000):
        w.open_image(image_id)
    assert np.array_equal(v.layers[ANNOTATION].data, edited)


def test_class_names_and_colours_are_saved(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((16, 16), np.uint8), name="a")
    w = ActiveSegWidget(viewer)
    w.project_panel.classes_edit.setText("background, nucleus:#ff0000, membrane")
    session = w.create_project(tmp_path / "c", from_layers=True)
    assert session.project.classes == ["background", "nucleus", "membrane"]
    assert session.project.colors[1] == "#ff0000" and len(session.project.colors) == 3
    ann_cmap = class_colormap(session.project.colors)
    assert ann_cmap.map(np.array([1]))[0][:3].tolist() == [1.0, 0.0, 0.0]
    session.project.close()


def test_export_labels_from_the_dock(widget, qtbot, tmp_path):
    w = widget
    first = suggest(w, qtbot)
    w.session.submit(first, w.truth[first])  # the dock follows the session's signal
    assert w.export_panel.export_labels_btn.isEnabled() and not w.export_panel.export_model_btn.isEnabled()
    with qtbot.waitSignal(w.exported, timeout=30_000):
        w.export(tmp_path / "out", what="labels")
    import tifffile

    files = sorted((tmp_path / "out").glob("*.tif"))
    assert len(files) == 1
    assert np.array_equal(tifffile.imread(files[0]), w.truth[first])


def test_settings_form_shows_applies_and_saves_the_configs(widget, tmp_path):
    w = widget
    form = w.settings
    # the form shows the project's saved settings ...
    assert (form.unet_width.value, form.unet_depth.value) == (TINY_MODEL.width, TINY_MODEL.depth)
    assert form.patch_field.value == TINY_TRAIN.patch_size
    assert form.steps_field.value == TINY_TRAIN.max_steps
    assert form.time_field.value == 0  # no time budget: shown as 0, "no limit"
    assert form.mc_field.value == 2
    assert form.calibrate_check.value is TINY_TRAIN.calibrate_bias
    assert form.consistency_field.max == 10.0
    # ... and Apply hands the edited values to the session, which saves them in the project
    form.unet_width.value = 8
    form.steps_field.value = 0  # 0: no step limit ...
    form.time_field.value = 30  # ... then a time budget is needed
    form.mc_field.value = 3
    form.calibrate_check.value = not TINY_TRAIN.calibrate_bias
    form.apply_btn.native.click()  # the Qt button under the magicgui one
    s = w.session
    assert s.train_config.calibrate_bias is (not TINY_TRAIN.calibrate_bias)
    assert s.model_config.width == 8 and s.train_config.max_steps is None
    assert s.train_config.time_budget_s == 30
    assert s.inference_config.mc_samples == 3
    w.close_project()
    again = w.open_project(tmp_path / "proj")
    assert again.model_config.width == 8 and again.inference_config.mc_samples == 3
    assert form.unet_width.value == 8 and form.steps_field.value == 0
    assert again.train_config.calibrate_bias is (not TINY_TRAIN.calibrate_bias)
    assert form.calibrate_check.value is (not TINY_TRAIN.calibrate_bias)


def _colour_pixels(widget, colour, tol=40):
    """How many pixels of the widget's rendering are close to ``colour``."""
    img = widget.grab().toImage()
    n = 0
    for y in range(0, img.height()):
        for x in range(0, img.width()):
            c = img.pixelColor(x, y)
            if abs(c.red() - colour.red()) + abs(c.green() - colour.green()) + \
                    abs(c.blue() - colour.blue()) < tol:
                n += 1
    return n


def test_training_plot_follows_the_steps(make_napari_viewer):
    from napari_activeseg._widgets._plot import LOSS_COLOR, MAX_POINTS, VAL_COLOR

    w = ActiveSegWidget(make_napari_viewer())
    w.train_panel.plot.resize(300, 130)
    empty_loss, empty_val = _colour_pixels(w.train_panel.plot, LOSS_COLOR), _colour_pixels(w.train_panel.plot, VAL_COLOR)
    assert empty_loss < 80  # before training: only the legend
    w.train_panel.plot.set_history([(1, 1.0, None)])
    w.train_panel.plot.set_history([(i, 1.0 / i, 0.5 if i % 10 == 0 else None) for i in range(1, 1001)])
    assert w.train_panel.plot.x_range() == (0.0, 1000.0)
    assert w.train_panel.plot.val_points() == [(i, 0.5) for i in range(10, 1001, 10)]
    loss = w.train_panel.plot.loss_points()  # long rounds are strided, the newest step always drawn
    assert len(loss) <= MAX_POINTS + 1 and loss[0] == (1, 1.0) and loss[-1] == (1000, 0.001)
    assert _colour_pixels(w.train_panel.plot, LOSS_COLOR) > empty_loss + 100  # the loss curve is painted
    assert _colour_pixels(w.train_panel.plot, VAL_COLOR) > empty_val + 100  # and the validation points
    w.train_panel.plot.clear()
    assert w.train_panel.plot.loss_points() == [] and _colour_pixels(w.train_panel.plot, LOSS_COLOR) == empty_loss


def _key(viewer, name: str):
    """The function bound to `name` (e.g. "Shift-S") on the viewer's own keymap."""
    want = name.lower().replace("-", "+")
    for key, func in viewer.keymap.items():
        if str(key).lower().replace("-", "+") == want:
            return func
    raise AssertionError(f"{name} is not bound on the viewer: {list(viewer.keymap)}")
