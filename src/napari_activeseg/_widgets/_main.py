"""The ActiveSeg dock: the panels of the active-learning workflow, wired to one session.

The dock owns an :class:`~napari_activeseg.core.session.ActiveLearningSession` and delegates
every action to it; it keeps no state that the project does not also hold. It listens to the
session's signals (queued to the GUI thread) to redraw. Long work (training, scoring, opening an
image, predicting, exporting) runs as jobs (:class:`~._workers.Jobs`: napari thread workers
wrapping the session's generators): yields drive the progress bar and the live plot, Cancel asks
the session to stop (within one step).

The panels (one module each, no logic of their own beyond showing things):
:class:`~._project_panel.ProjectPanel`, :class:`~._pool_panel.PoolTable`,
:class:`~._review_panel.ReviewPanel`, :class:`~._train_panel.TrainPanel`,
:class:`~._settings_panel.SettingsForm`, :class:`~._export_panel.ExportPanel`; the layers of a
correction are drawn by :mod:`._layers`.

torch and the core are imported lazily (inside methods), so opening napari stays fast.
"""

from __future__ import annotations

import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qtpy.QtCore import QSize, QTimer, Signal
from qtpy.QtWidgets import (
    QAbstractScrollArea,
    QFrame,
    QScrollArea,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from ._common import (
    ANNOTATION,
    NOT_REVIEWED,
    REGIONS,
    REVIEWED,
    SCRIBBLES,
    UNCERTAINTY,
    stop_session,
    warm_up_torch,
)
from ._common import notify as _notify
from ._continuous import ContinuousDriver
from ._export_panel import ExportPanel
from ._measure_panel import MeasurePanel
from ._objects import ClassModes, ObjectsReview
from ._large import LargeImageOpener
from ._layers import (
    is_edited,
    is_region,
    layer_data,
    layer_pool_items,
    paint_scribbles,
    reset_annotation,
    show_region_view,
    show_view,
    toggle_visible,
)
from ._pool_panel import PoolTable
from ._project_panel import ProjectPanel
from ._review_panel import ReviewPanel
from ._settings_panel import settings_panel
from ._train_panel import TrainPanel
from ._workers import Jobs, after_session_jobs
from ._workers import suggest_next as start_suggestion

if TYPE_CHECKING:  # pragma: no cover
    import napari

    from ..core.session import ActiveLearningSession, ImageView

__all__ = ["ANNOTATION", "NOT_REVIEWED", "REGIONS", "REVIEWED", "SCRIBBLES", "UNCERTAINTY",
           "ActiveSegWidget"]

#: The dock's width: on a 1600 px wide window napari's layer controls take ~330 px once a
#: labels layer is selected, and this leaves the canvas 60 % of it (tests/_widgets/test_layout.py).
DOCK_WIDTH = 290


class ActiveSegWidget(QWidget):
    """Project, pool table, suggest / correct / submit, train with live progress, settings."""

    session_changed = Signal()
    image_opened = Signal(int)
    exported = Signal(str)
    training_finished = Signal(object)
    scoring_finished = Signal(int)
    table_refreshed = Signal()

    def __init__(self, napari_viewer: napari.Viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.session: ActiveLearningSession | None = None
        self.current_view: ImageView | None = None
        self.jobs = Jobs(self, on_change=self._update_enabled, on_error=self._on_worker_error)
        self.large = LargeImageOpener(self)  # boxes of images over large_image_pixels
        self._sized = False
        self._build_ui()
        self.continuous = ContinuousDriver(self)
        self._update_enabled()
        warm_up_torch()
        self._draft_timer = QTimer(self)
        self._draft_timer.setInterval(30_000)
        self._draft_timer.timeout.connect(self.autosave_draft)
        self._draft_timer.start()
        self.viewer.bind_key("Shift-S", lambda _viewer: self.submit(), overwrite=True)
        self.viewer.bind_key("Shift-K", lambda _viewer: self.skip(), overwrite=True)
        self.viewer.bind_key("Shift-U", lambda _viewer: self.toggle_uncertainty(), overwrite=True)

    # ------------------------------------------------------------------ UI
    def _build_ui(self) -> None:
        """What every step needs stays in view (what is open, suggest/correct/submit, what the
        model is doing); the rest sits in tabs, so the dock stays narrow (:data:`DOCK_WIDTH`)."""
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        self.project_panel = ProjectPanel()
        self.pool = PoolTable()
        self.review = ReviewPanel()
        self.train_panel = TrainPanel()
        self.settings_box, self.settings = settings_panel()
        self.export_panel = ExportPanel()
        for w in (self.project_panel.project_label, self.review, self.train_panel.status):
            layout.addWidget(w)
        self.tabs = QTabWidget()
        self.tabs.setUsesScrollButtons(True)
        for w, name in ((self.pool, "Pool"), (self.train_panel, "Train"),
                        (self.project_panel, "Project"), (self.settings_box, "Settings"),
                        (self.export_panel, "Export")):
            self.add_tab(w, name)
        self.measure_panel = MeasurePanel(self)  # follows the dock's signals by itself
        self.add_tab(self.measure_panel, "Measure")
        self.objects = ObjectsReview(self)  # an object class's layer of ids, under Submit
        self.review.layout().addWidget(self.objects)
        self.project_panel.layout().addWidget(ClassModes(self))
        self.show_tab(self.project_panel)  # nothing open yet: create or open
        layout.addWidget(self.tabs, 1)

        p = self.project_panel
        p.create_requested.connect(lambda dst, src: self.create_project(
            dst, source_folder=src or None, from_layers=not src))
        p.open_requested.connect(self.open_project)
        p.import_requested.connect(self.import_masks)
        self.pool.image_activated.connect(self.open_image)
        self.pool.follow(lambda: self.session)
        self.pool.refreshed.connect(self.table_refreshed.emit)
        r = self.review
        r.suggest_btn.clicked.connect(self.suggest_next)
        r.submit_btn.clicked.connect(self.submit)
        r.skip_btn.clicked.connect(self.skip)
        r.reset_btn.clicked.connect(self.reset_to_prediction)
        r.scribble_btn.clicked.connect(self.start_scribbling)
        r.strategy_combo.currentTextChanged.connect(self._on_strategy_changed)
        t = self.train_panel
        t.train_btn.clicked.connect(self.train)
        t.cancel_btn.clicked.connect(self.cancel)
        t.auto_train.valueChanged.connect(self._on_auto_train_changed)
        self.settings.apply_btn.clicked.connect(self.apply_settings)
        e = self.export_panel
        e.predict_btn.clicked.connect(self.predict_layer)
        e.export_requested.connect(lambda what, folder: self.export(folder, what=what))
        for event in (self.viewer.layers.events.inserted, self.viewer.layers.events.removed):
            event.connect(lambda _e=None: e.refresh_layers(self.viewer))
        e.refresh_layers(self.viewer)

    def add_tab(self, widget: QWidget, name: str) -> None:
        """Put a panel in a tab of its own (what is not needed at every step), in a scroll
        area: a panel wider or taller than the dock scrolls instead of widening the dock."""
        if not isinstance(widget, QAbstractScrollArea):
            area = QScrollArea()
            area.setWidgetResizable(True)
            area.setFrameShape(QFrame.Shape.NoFrame)
            area.setWidget(widget)
            widget = area
        self.tabs.addTab(widget, name)

    def show_tab(self, panel: QWidget) -> None:
        """Bring the tab holding ``panel`` to the front."""
        for i in range(self.tabs.count()):
            page = self.tabs.widget(i)
            if page is panel or (isinstance(page, QScrollArea) and page.widget() is panel):
                self.tabs.setCurrentIndex(i)

    def sizeHint(self) -> QSize:  # noqa: N802 - Qt API
        return QSize(DOCK_WIDTH, super().sizeHint().height())

    def showEvent(self, event) -> None:  # noqa: N802 - Qt API
        """The first time the dock is shown in a main window, give it :data:`DOCK_WIDTH`
        (Qt would otherwise size the dock area by its widest row)."""
        super().showEvent(event)
        if not self._sized:
            self._sized = True
            QTimer.singleShot(0, self.fit_width)

    def fit_width(self) -> None:
        """Resize the dock this widget sits in to :data:`DOCK_WIDTH` (public Qt calls)."""
        from qtpy.QtCore import Qt
        from qtpy.QtWidgets import QDockWidget, QMainWindow

        dock, win = self.parentWidget(), self.window()
        while dock is not None and not isinstance(dock, QDockWidget):
            dock = dock.parentWidget()
        if dock is not None and isinstance(win, QMainWindow) and not dock.isFloating():
            win.resizeDocks([dock], [DOCK_WIDTH], Qt.Orientation.Horizontal)

    def _update_enabled(self) -> None:
        has = self.session is not None
        busy = self.busy
        self.review.set_state(has_session=has, busy=busy,
                              image_open=has and self.current_id is not None)
        self.train_panel.set_state(can_train=has and self.session.n_labelled > 0, busy=busy)
        self.settings.apply_btn.enabled = has and not busy
        self.export_panel.set_state(has_model=has and self.session.model is not None,
                                    has_labels=has and self.session.n_labelled > 0)
        self.project_panel.set_busy(busy)

    @property
    def busy(self) -> bool:
        """Whether a training or scoring job is running."""
        return self.jobs.busy

    @property
    def workers(self) -> list:
        """The running thread workers (empty when the dock is idle)."""
        return self.jobs.workers

    @property
    def current_id(self) -> int | None:
        """The image being corrected, or None."""
        return None if self.current_view is None else self.current_view.image_id

    @property
    def current_boxes(self) -> list[tuple[int, int, int, int]]:
        """The boxes to review in the open image."""
        return [] if self.current_view is None else list(self.current_view.boxes)

    # ------------------------------------------------------------------ project
    def create_project(self, folder: str | Path, *, source_folder: str | Path | None = None,
                       from_layers: bool = False):
        """Create a project (from a folder of images, or from the open image layers)."""
        from ..core.classes import parse_class_spec
        from ..core.project import Project

        try:
            classes, colors = parse_class_spec(self.project_panel.classes_edit.text())
            kwargs: dict[str, Any] = {"classes": classes, "colors": colors,
                                      **self.project_panel.create_options(from_layers)}
            if from_layers:
                kwargs["arrays"] = layer_pool_items(
                    self.viewer, channels=self.project_panel.stack_is_channels)
            else:
                kwargs["source_folder"] = source_folder
            project = Project.create(folder, **kwargs)
        except (ValueError, OSError) as exc:
            _notify("error", f"Could not create the project: {exc}")
            return None
        for w in project.warnings:
            _notify("warning", w)
        return self.open_session(project)

    def open_project(self, folder: str | Path):
        from ..core.project import Project

        try:
            project = Project.open(folder)
        except (ValueError, OSError) as exc:
            _notify("error", f"Could not open the project: {exc}")
            return None
        return self.open_session(project)

    def open_session(self, project):
        """Work on an open :class:`~napari_activeseg.core.project.Project` (the dock owns it
        from now on); returns the session, or None with an error shown."""
        from ..core.session import ActiveLearningSession
        from ..core.strategies import available_strategies

        self.close_project()
        try:
            self.session = ActiveLearningSession(project)
        except ValueError as exc:
            project.close()
            _notify("error", str(exc))
            return None
        self.destroyed.connect(lambda *_, ref=weakref.ref(self.session), ws=self.jobs.workers:
                               stop_session(ref, ws))
        self.review.set_choices(available_strategies(), self.session.strategy.name,
                                project.classes)
        self.settings.load(self.session)
        self.train_panel.show_session(self.session)
        self._listen(self.session)
        self.continuous.attach(self.session)
        self.project_panel.show_session(self.session)
        drafts = project.drafts()
        if drafts:
            _notify("info", f"{len(drafts)} unsubmitted draft(s) restored; open the image to "
                            "continue.")
        self.refresh_table()
        self._update_enabled()
        self.show_tab(self.pool)
        self.session_changed.emit()
        return self.session

    def _listen(self, session) -> None:
        """Redraw when the core says something changed (its signals may come from worker
        threads: they are queued to the GUI thread)."""
        from psygnal.qt import start_emitting_from_queue

        start_emitting_from_queue()
        session.image_submitted.connect(self._on_model_or_labels, thread="main")
        session.model_changed.connect(self._on_model_or_labels, thread="main")
        session.status_changed.connect(self.pool.schedule_refresh, thread="main")
        session.scores_changed.connect(self.pool.schedule_refresh, thread="main")

    def _on_model_or_labels(self, *_) -> None:
        if not self.jobs.alive() or self.session is None:
            return
        self.project_panel.show_session(self.session)
        self.review.show_model(self.session.model_version)  # no stale "no model yet"
        self._update_enabled()
        self.pool.schedule_refresh()
        self.continuous.kick()

    def refresh_table(self) -> None:
        self.pool.refresh(self.session)

    def import_masks(self, folder: str | Path) -> None:
        """Import a folder of masks as submitted labels, in a worker; the table follows."""
        if self.session is not None:
            self.project_panel.import_masks(self.session.project, str(folder), self.jobs,
                                            lambda _report: self._on_model_or_labels())

    def _on_auto_train_changed(self, n: int) -> None:
        if self.session is not None and not self.session.project.read_only:
            self.session.auto_train_every = n

    def close_project(self) -> None:
        """Stop running work and close the open project (nothing unsaved is lost: drafts)."""
        if self.session is not None:
            self.autosave_draft()  # the edits in progress, as a draft
            self.cancel()
            self.continuous.stop()
            self.session.project.close()
            self.session = None
            self.current_view = None
            self.project_panel.show_session(None)

    def closeEvent(self, event) -> None:  # noqa: N802 - Qt API
        self.continuous.stop()
        stop_session(weakref.ref(self.session) if self.session else (lambda: None),
                     self.jobs.workers)
        super().closeEvent(event)

    # ------------------------------------------------------------------ suggest / open
    def _on_strategy_changed(self, name: str) -> None:
        if self.session is None or not name or name == self.session.strategy.name:
            return
        try:
            self.session.set_strategy(name)  # the table follows its scores_changed signal
        except ValueError as exc:
            _notify("error", str(exc))

    def suggest_next(self) -> None:
        """Open the next suggestion from the session's queue (in a worker), also while a
        training round or a re-score runs; the one after it is predicted ahead."""
        if self.session is not None:
            r = self.review
            start_suggestion(self.jobs, self.session, regions=r.boxes_mode,
                             region_size=r.box_size, boxes_per_image=r.boxes_spin.value(),
                             show=self._show_suggestion, on_progress=self.train_panel.show_scoring,
                             refresh=self.score_pool)

    def _show_suggestion(self, view) -> None:
        if view is None:
            _notify("info", self.large.nothing_left())
        self._display(view)
        self.scoring_finished.emit(0)

    def open_image(self, image_id: int, *, suggestions=(), box=None) -> None:
        """Show an image with the prediction as an editable annotation, and its uncertainty.

        ``suggestions``: the picks of this image being answered; their boxes are drawn as
        rectangles and, outside them (and outside what was reviewed before), the annotation
        is dimmed: it is not ground truth. The view comes from the core
        (:meth:`~napari_activeseg.core.session.ActiveLearningSession.view`), built in a
        worker; the layers appear when it returns (:attr:`image_opened` is emitted then).
        A large image opens one box (``box``, else :class:`~._large.LargeImageOpener`'s).
        """
        if self.session is None or self.large.open(image_id, suggestions, box):
            return
        session, suggestions = self.session, list(suggestions)

        def job():
            yield None
            return session.view(image_id, suggestions)

        self.jobs.start(job, on_return=self._display, desc="Opening image")

    def _display(self, view) -> None:
        """GUI thread: put a view on screen (cheap layer updates only)."""
        if view is None or self.session is None:
            return
        self.current_view = view
        self.review.show_view(view, self.session.model_version)
        if is_region(view):  # a box of a large image
            show_region_view(self.viewer, view, self.session.project.colors)
        else:
            show_view(self.viewer, view, self.session.project.colors,
                      veil=self.review.boxes_mode)
        self.objects.open(view)
        self._update_enabled()
        self.image_opened.emit(view.image_id)

    # ------------------------------------------------------------------ correct / submit
    def start_scribbling(self) -> None:
        """Select the scribbles layer in paint mode with the chosen class's brush."""
        paint_scribbles(self.viewer, self.review.scribble_combo.currentIndex())

    def submit(self) -> None:
        """Save what was reviewed at once, then open the next suggestion (or train, when the
        auto-train count is reached)."""
        if self.session is None or self.current_id is None:
            return
        labels = layer_data(self.viewer, ANNOTATION)
        if labels is None:
            _notify("error", f"The '{ANNOTATION}' layer is gone; reopen the image.")
            return
        try:
            # only what the user reviewed counts (boxes, scribbles, edits, a restored draft's)
            # -- or the whole image in whole-image mode; the core builds the reviewed mask
            if self.large.submit(labels):  # a box of a large image: that box alone
                pass
            elif self.objects.active:  # the objects layer's ids, the class map derived
                self.objects.submit(self.current_id, whole=not self.review.boxes_mode)
            else:
                self.session.submit_correction(
                    self.current_id, labels, scribbles=layer_data(self.viewer, SCRIBBLES),
                    whole=not self.review.boxes_mode)
        except (ValueError, OSError) as exc:
            _notify("error", f"Not saved: {exc}")
            return
        self.current_view = None
        self._update_enabled()
        if self.session.training_due:
            self.train()
        self.suggest_next()  # from the queue: training does not hold it up

    def skip(self) -> None:
        if self.session is None or self.current_id is None:
            return
        self.session.skip(self.current_id)
        self.current_view = None
        self.suggest_next()

    def reset_to_prediction(self) -> None:
        if self.current_view is not None:
            reset_annotation(self.viewer, self.current_view)

    def autosave_draft(self) -> None:
        """Keep the correction in progress (and what it reviewed) as a draft; an untouched
        annotation is not saved. Runs every 30 s. In objects mode, the objects layers'
        draft (``ObjectsReview.autosave``; a class-map draft would lose the objects)."""
        if self.objects.active:
            self.objects.autosave()
            return
        view = self.current_view
        if self.session is None or view is None or self.session.project.closed or \
                self.session.project.read_only or \
                is_region(view) or ANNOTATION not in self.viewer.layers or \
                not is_edited(self.viewer, view):
            return
        try:
            self.session.save_draft(view.image_id, layer_data(self.viewer, ANNOTATION),
                                    scribbles=layer_data(self.viewer, SCRIBBLES))
        except (ValueError, OSError):  # a draft is a convenience; the next tick retries
            pass

    def toggle_uncertainty(self) -> None:
        """Show or hide the uncertainty layer (Shift-U)."""
        toggle_visible(self.viewer, UNCERTAINTY)

    # ------------------------------------------------------------------ workers
    def _on_worker_error(self, desc: str, exc: BaseException) -> None:
        _notify("error", f"{desc} failed: {type(exc).__name__}: {exc}")
        self.train_panel.progress_label.setText(f"{desc} failed: {exc}")

    def train(self) -> None:
        """Fine-tune in a worker; the plot and progress bar follow; re-score afterwards."""
        if self.session is None or self.jobs.holds("train"):
            return
        if self.session.n_labelled == 0:
            _notify("warning", "Submit at least one labelled image before training.")
            return
        if self.jobs.holds("score"):
            self.session.request_stop()
        self.train_panel.start_round()
        self.jobs.start(after_session_jobs(self.session, self.session.train),
                        on_yield=self.train_panel.show_progress,
                        on_return=self._on_trained, desc="Training U-Net", slot="train")

    def _on_trained(self, summary) -> None:
        self.train_panel.show_summary(summary)
        self.training_finished.emit(summary)
        if summary is not None and summary.saved:
            self.jobs.release("train")
            self.refresh_open_prediction()
            self.score_pool()

    def refresh_open_prediction(self) -> None:
        """After training: a fresh prediction and uncertainty for the open image, if the user
        has not edited it yet (their edits are never overwritten)."""
        view = self.current_view
        if self.session is not None and view is not None and not is_edited(self.viewer, view) \
                and not self.objects.is_edited():
            self.open_image(view.image_id, suggestions=view.suggestions,
                            box=view.box if is_region(view) else None)

    def score_pool(self) -> None:
        """Re-score the pool in a worker (the table and the queue follow); nothing is opened.
        Not while training: the round's end starts it."""
        if self.session is None or self.busy:
            return
        session, regions, size = self.session, self.review.boxes_mode, self.review.box_size

        def on_return(n):
            self.jobs.release("score")
            self._update_enabled()
            self.scoring_finished.emit(0 if n is None else n)  # None: cancelled before it began
            self.continuous.kick()

        self.jobs.start(after_session_jobs(
                            session, lambda: session.score_pool(regions=regions,
                                                                region_size=size)),
                        on_yield=self.train_panel.show_scoring, on_return=on_return,
                        desc="Scoring the pool", slot="score")

    def cancel(self) -> None:
        """Stop training or scoring within one step; the last good model is kept.

        The session's generators end themselves (and return their summary, so the widget
        learns what was kept); quitting the worker would drop that return value.
        """
        if self.session is not None:
            self.continuous.pause()
            self.session.request_stop()

    # ------------------------------------------------------------------ settings
    def apply_settings(self) -> None:
        if self.session is None:
            return
        try:
            self.session.configure(**self.settings.configs(self.session))
        except ValueError as exc:
            _notify("error", f"Settings not applied: {exc}")
            return
        _notify("info", "Settings saved in the project.")
        self._update_enabled()

    # ------------------------------------------------------------------ predict / export
    def predict_layer(self) -> None:
        """Apply the project's model to the chosen image layer (prediction + uncertainty)."""
        self.export_panel.predict(self.viewer, self.session, self.jobs)

    def export(self, out_dir: str | Path, *, what: str = "labels") -> None:
        """Export labels (TIFF) or the model (weights + preprocessing) in a worker."""
        if self.session is not None and out_dir:
            self.export_panel.export(self.session.project, out_dir, what, self.jobs,
                                     self.exported.emit)
