"""The ActiveSeg dock widget: the whole active-learning workflow in napari.

The widget owns an :class:`~napari_activeseg.core.session.ActiveLearningSession` and delegates
every action to it; it holds no state of its own that the project does not also hold. Long work
(training, scoring) runs in napari thread workers wrapping the session's generators: yields drive
the progress bar and the live plot, Cancel asks the session to stop (within one step).

torch and the core are imported lazily (inside methods), so opening napari stays fast.
"""

from __future__ import annotations

import threading
import time
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtCore import Qt, QTimer, Signal
from qtpy.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

if TYPE_CHECKING:  # pragma: no cover
    import napari

    from ..core.session import ActiveLearningSession, Suggestion

ANNOTATION = "annotation"
UNCERTAINTY = "uncertainty"
REGIONS = "suggested regions"
SCRIBBLES = "scribbles"
REVIEWED = "reviewed"
NOT_REVIEWED = "not reviewed"
SCRIBBLE_BACKGROUND = "#6a8cff"  # the background class is transparent in the annotation
DEFAULT_COLORS = ["#00000000", "#ffd400", "#00c8ff", "#ff4fa3", "#7bd148", "#ff8c1a", "#b36bff"]
STATUS_ORDER = {"suggested": 0, "in_progress": 1, "unlabelled": 2, "partial": 3, "skipped": 4,
                "submitted": 5}


def _notify(kind: str, message: str) -> None:
    from napari.utils import notifications

    {"info": notifications.show_info, "warning": notifications.show_warning,
     "error": notifications.show_error}[kind](message)


def _background_priority() -> None:
    """Lower this (worker) thread's scheduling priority, so the GUI thread wins the CPU.

    On Linux, niceness is per thread, and threads a thread creates (torch's OpenMP team for
    this thread) inherit it. Elsewhere, or without permission, nothing happens.
    """
    import os
    import threading

    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 5)
    except (AttributeError, OSError):
        pass


_WARMED_UP = threading.Event()


def _warm_up_torch() -> None:
    """Import what torch loads lazily on the first optimiser step (``torch._dynamo``: about a
    quarter of a second holding the GIL), in a background thread while the widget opens, so it
    is not a stall of the viewer when the first training round starts."""
    if _WARMED_UP.is_set():
        return
    _WARMED_UP.set()

    def run():
        _background_priority()
        try:
            import torch._dynamo  # noqa: F401
        except Exception:  # noqa: BLE001 - only a warm-up: the round imports it if this failed
            pass

    threading.Thread(target=run, name="activeseg-warm-up", daemon=True).start()


def _stop_session(session_ref: weakref.ref, workers: list) -> None:
    """Stop long work when the widget goes away (viewer closed): no orphan thread keeps
    training after the window is gone. Holds no reference to the widget itself."""
    session = session_ref()
    if session is not None:
        session.request_stop()
    for w in list(workers):
        try:
            w.quit()
        except RuntimeError:  # the Qt side is already deleted
            pass


class _NumericItem(QTableWidgetItem):
    """A table cell that sorts by a number, not by its text."""

    def __init__(self, text: str, key: float) -> None:
        super().__init__(text)
        self._key = key

    def __lt__(self, other: QTableWidgetItem) -> bool:
        if isinstance(other, _NumericItem):
            return self._key < other._key
        return super().__lt__(other)


class ActiveSegWidget(QWidget):
    """Project, pool table, suggest / correct / submit, train with live progress, settings."""

    session_changed = Signal()
    image_opened = Signal(int)
    exported = Signal(str)
    training_finished = Signal(object)
    scoring_finished = Signal(int)

    def __init__(self, napari_viewer: napari.Viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.session: ActiveLearningSession | None = None
        self.current_id: int | None = None
        self.current_suggestion: Suggestion | None = None
        self.current_boxes: list[tuple[int, int, int, int]] = []
        self._pre_annotation: np.ndarray | None = None
        self._initial_labels: np.ndarray | None = None
        self._open_suggestions: list = []
        self._workers: list = []
        self._train_worker = None
        self._score_worker = None
        self._history: list[tuple[int, float, float | None]] = []
        self._last_plot = 0.0
        self._refresh_pending = False
        self._build_ui()
        self._update_enabled()
        _warm_up_torch()
        self._draft_timer = QTimer(self)
        self._draft_timer.setInterval(30_000)
        self._draft_timer.timeout.connect(self._autosave_draft)
        self._draft_timer.start()
        self.viewer.bind_key("Shift-S", self._key_submit, overwrite=True)
        self.viewer.bind_key("Shift-K", self._key_skip, overwrite=True)
        self.viewer.bind_key("Shift-U", self._key_toggle_uncertainty, overwrite=True)

    # ------------------------------------------------------------------ UI
    def _build_ui(self) -> None:
        layout = QVBoxLayout(self)

        box = QGroupBox("Project")
        form = QVBoxLayout(box)
        self.project_label = QLabel("No project open.")
        self.project_label.setWordWrap(True)
        self.classes_edit = QLineEdit("background, foreground")
        self.classes_edit.setToolTip("Classes of a new project, comma-separated; the first is "
                                     "the background (label 0). Colours are optional: "
                                     "'background, nucleus:#ffd400, membrane:#00c8ff'. They "
                                     "are saved in the project.")
        row = QHBoxLayout()
        self.new_folder_btn = QPushButton("New from folder…")
        self.new_layers_btn = QPushButton("New from layers")
        self.open_btn = QPushButton("Open…")
        for b in (self.new_folder_btn, self.new_layers_btn, self.open_btn):
            row.addWidget(b)
        classes_row = QHBoxLayout()
        classes_row.addWidget(QLabel("Classes:"))
        classes_row.addWidget(self.classes_edit)
        form.addLayout(classes_row)
        form.addLayout(row)
        form.addWidget(self.project_label)
        layout.addWidget(box)
        self.new_folder_btn.clicked.connect(self._on_new_from_folder)
        self.new_layers_btn.clicked.connect(self._on_new_from_layers)
        self.open_btn.clicked.connect(self._on_open)

        self.table = QTableWidget(0, 4)
        self.table.setHorizontalHeaderLabels(["Image", "Status", "Score", "Why"])
        self.table.setSortingEnabled(True)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.verticalHeader().setVisible(False)
        self.table.horizontalHeader().setSectionResizeMode(3, QHeaderView.ResizeMode.Stretch)
        self.table.setMinimumHeight(140)
        self.table.cellDoubleClicked.connect(self._on_table_double_click)
        layout.addWidget(self.table)

        box = QGroupBox("Suggest and correct")
        v = QVBoxLayout(box)
        row = QHBoxLayout()
        self.strategy_combo = QComboBox()
        self.regions_check = QCheckBox("boxes")
        self.regions_check.setChecked(True)
        self.regions_check.setToolTip(
            "Review a few boxes of an image instead of the whole image: only the boxes, your "
            "scribbles and your edits count as ground truth, and the rest of the image stays in "
            "the pool. Untick for whole-image mode (Submit then accepts the whole image).")
        self.region_size = QSpinBox()
        self.region_size.setRange(0, 4096)
        self.region_size.setValue(0)
        self.region_size.setSingleStep(32)
        self.region_size.setSpecialValueText("auto size")
        self.region_size.setSuffix(" px")
        self.region_size.setToolTip("Box side; 'auto size' decides it once from the project's "
                                    "images (saved in the project).")
        self.boxes_spin = QSpinBox()
        self.boxes_spin.setRange(1, 16)
        self.boxes_spin.setValue(3)
        self.boxes_spin.setSuffix(" per image")
        self.boxes_spin.setToolTip("How many boxes of one image to review at once.")
        row.addWidget(QLabel("Strategy:"))
        row.addWidget(self.strategy_combo, 1)
        v.addLayout(row)
        row = QHBoxLayout()
        row.addWidget(self.regions_check)
        row.addWidget(self.region_size)
        row.addWidget(self.boxes_spin)
        v.addLayout(row)
        row = QHBoxLayout()
        self.scribble_combo = QComboBox()
        self.scribble_combo.setToolTip(
            "Paint a few strokes of a class anywhere (ilastik-style); only painted pixels count. "
            "napari's eraser on the scribbles layer makes pixels unlabelled again.")
        self.scribble_btn = QPushButton("Scribble")
        row.addWidget(QLabel("Brush:"))
        row.addWidget(self.scribble_combo, 1)
        row.addWidget(self.scribble_btn)
        v.addLayout(row)
        self.scribble_btn.clicked.connect(self.start_scribbling)
        row = QHBoxLayout()
        self.suggest_btn = QPushButton("Suggest next")
        self.submit_btn = QPushButton("Submit [Shift+S]")
        self.skip_btn = QPushButton("Skip [Shift+K]")
        self.reset_btn = QPushButton("Reset to prediction")
        for b in (self.suggest_btn, self.submit_btn, self.skip_btn, self.reset_btn):
            row.addWidget(b)
        v.addLayout(row)
        self.reason_label = QLabel("")
        self.reason_label.setWordWrap(True)
        v.addWidget(self.reason_label)
        layout.addWidget(box)
        self.suggest_btn.clicked.connect(self.suggest_next)
        self.submit_btn.clicked.connect(self.submit)
        self.skip_btn.clicked.connect(self.skip)
        self.reset_btn.clicked.connect(self.reset_to_prediction)
        self.strategy_combo.currentTextChanged.connect(self._on_strategy_changed)

        box = QGroupBox("Train")
        v = QVBoxLayout(box)
        row = QHBoxLayout()
        self.train_btn = QPushButton("Train")
        self.cancel_btn = QPushButton("Cancel")
        self.auto_train = QSpinBox()
        self.auto_train.setRange(0, 100)
        self.auto_train.setValue(0)
        self.auto_train.setPrefix("auto every ")
        self.auto_train.setSuffix(" submits")
        self.auto_train.setSpecialValueText("auto-train off")
        row.addWidget(self.train_btn)
        row.addWidget(self.cancel_btn)
        row.addWidget(self.auto_train)
        self.auto_train.valueChanged.connect(self._on_auto_train_changed)
        v.addLayout(row)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1000)
        self.progress.setValue(0)
        self.progress_label = QLabel("")
        v.addWidget(self.progress)
        v.addWidget(self.progress_label)
        self._build_plot(v)
        layout.addWidget(box)
        self.train_btn.clicked.connect(self.train)
        self.cancel_btn.clicked.connect(self.cancel)

        from superqt import QCollapsible

        self.settings_box = QCollapsible("Settings (saved in the project)")
        settings_inner = QWidget()
        form = QFormLayout(settings_inner)
        self.width_spin = QSpinBox()
        self.width_spin.setRange(2, 128)
        self.depth_spin = QSpinBox()
        self.depth_spin.setRange(1, 6)
        self.patch_spin = QSpinBox()
        self.patch_spin.setRange(32, 1024)
        self.patch_spin.setSingleStep(32)
        self.budget_spin = QDoubleSpinBox()
        self.budget_spin.setRange(5, 36_000)
        self.budget_spin.setSuffix(" s")
        self.steps_spin = QSpinBox()
        self.steps_spin.setRange(0, 1_000_000)
        self.steps_spin.setSpecialValueText("no step limit")
        self.lr_spin = QDoubleSpinBox()
        self.lr_spin.setDecimals(5)
        self.lr_spin.setRange(1e-5, 1.0)
        self.lr_spin.setSingleStep(1e-4)
        self.mc_spin = QSpinBox()
        self.mc_spin.setRange(1, 64)
        self.device_combo = QComboBox()
        self.device_combo.addItems(["auto", "cpu", "cuda", "mps"])
        self.apply_btn = QPushButton("Apply settings")
        form.addRow("U-Net width", self.width_spin)
        form.addRow("U-Net depth", self.depth_spin)
        form.addRow("Patch size", self.patch_spin)
        form.addRow("Time per round", self.budget_spin)
        form.addRow("Steps per round", self.steps_spin)
        form.addRow("Learning rate", self.lr_spin)
        form.addRow("MC samples", self.mc_spin)
        form.addRow("Device", self.device_combo)
        form.addRow(self.apply_btn)
        self.apply_btn.clicked.connect(self.apply_settings)
        self.settings_box.addWidget(settings_inner)
        layout.addWidget(self.settings_box)

        box = QGroupBox("Predict and export")
        v = QVBoxLayout(box)
        row = QHBoxLayout()
        self.layer_combo = QComboBox()
        self.predict_btn = QPushButton("Predict layer")
        row.addWidget(self.layer_combo, 1)
        row.addWidget(self.predict_btn)
        v.addLayout(row)
        row = QHBoxLayout()
        self.export_labels_btn = QPushButton("Export labels…")
        self.export_model_btn = QPushButton("Export model…")
        row.addWidget(self.export_labels_btn)
        row.addWidget(self.export_model_btn)
        v.addLayout(row)
        layout.addWidget(box)
        self.predict_btn.clicked.connect(self.predict_layer)
        self.export_labels_btn.clicked.connect(lambda: self.export(
            self._ask_dir("Folder for the exported labels"), what="labels"))
        self.export_model_btn.clicked.connect(lambda: self.export(
            self._ask_dir("Folder for the exported model"), what="model"))
        self.viewer.layers.events.inserted.connect(self._refresh_layer_combo)
        self.viewer.layers.events.removed.connect(self._refresh_layer_combo)
        self._refresh_layer_combo()
        layout.addStretch(1)

    def _build_plot(self, parent_layout) -> None:
        from ._plot import TrainingPlot

        # QPainter, not matplotlib: an Agg render of axes and ticks cost ~100 ms of GUI thread
        # per update on a 2-core machine that is training (benchmarks/gui_stall.py)
        self.plot = TrainingPlot()
        parent_layout.addWidget(self.plot)

    def _update_enabled(self) -> None:
        has = self.session is not None
        busy = self._train_worker is not None or self._score_worker is not None
        for w in (self.suggest_btn, self.strategy_combo, self.region_size, self.boxes_spin,
                  self.apply_btn):
            w.setEnabled(has and not busy)
        self.regions_check.setEnabled(has)
        self.train_btn.setEnabled(has and not busy and (self.session.n_labelled > 0 if has else
                                                         False))
        self.cancel_btn.setEnabled(busy)
        open_img = has and self.current_id is not None
        for w in (self.submit_btn, self.skip_btn, self.reset_btn, self.scribble_btn,
                  self.scribble_combo):
            w.setEnabled(open_img)
        self.predict_btn.setEnabled(has and self.session.model is not None)
        self.export_labels_btn.setEnabled(has and self.session.n_labelled > 0)
        self.export_model_btn.setEnabled(has and self.session.model is not None)
        for w in (self.new_folder_btn, self.new_layers_btn, self.open_btn):
            w.setEnabled(not busy)

    # ------------------------------------------------------------------ project
    def _class_spec(self) -> tuple[list[str], list[str] | None]:
        """Names (and colours, when every foreground class has one) from the classes field:
        ``background, nucleus:#ffd400, membrane:#00c8ff``."""
        names, colors = [], []
        for item in (c.strip() for c in self.classes_edit.text().split(",")):
            if not item:
                continue
            name, _, color = item.partition(":")
            names.append(name.strip())
            colors.append(color.strip() or None)
        if len(names) < 2:
            raise ValueError("Give at least two class names, the first being the background "
                             "(e.g. 'background, nucleus' or 'background, nucleus:#ffd400').")
        if any(colors[1:]):
            palette = DEFAULT_COLORS[1:] * (len(names) // len(DEFAULT_COLORS) + 1)
            chosen = ["#00000000"] + [c or palette[i] for i, c in enumerate(colors[1:])]
            return names, chosen
        if len(names) <= len(DEFAULT_COLORS):
            return names, DEFAULT_COLORS[:len(names)]
        return names, None

    def _classes(self) -> list[str]:
        return self._class_spec()[0]

    def _ask_dir(self, title: str) -> str:
        return QFileDialog.getExistingDirectory(self, title)

    def _on_new_from_folder(self) -> None:
        src = self._ask_dir("Folder of images")
        if not src:
            return
        dst = self._ask_dir("Empty folder for the new project")
        if dst:
            self.create_project(dst, source_folder=src)

    def _on_new_from_layers(self) -> None:
        dst = self._ask_dir("Empty folder for the new project")
        if dst:
            self.create_project(dst, from_layers=True)

    def _on_open(self) -> None:
        folder = self._ask_dir("Project folder")
        if folder:
            self.open_project(folder)

    def _layer_arrays(self) -> dict[str, np.ndarray]:
        """Image layers as pool items; a 2D+t / 2D+z stack becomes one item per slice."""
        from napari.layers import Image

        arrays: dict[str, np.ndarray] = {}
        for layer in self.viewer.layers:
            if not isinstance(layer, Image):
                continue
            data = np.asarray(layer.data)
            spatial = data.ndim - (1 if layer.rgb else 0)
            if spatial == 2:
                arrays[layer.name] = data
            elif spatial == 3:
                for i in range(data.shape[0]):
                    arrays[f"{layer.name}_{i:04d}"] = data[i]
            else:
                raise ValueError(f"Layer {layer.name!r} has shape {data.shape}: only 2D images "
                                 "(gray or RGB) and 2D+t / 2D+z stacks can join a project.")
        if not arrays:
            raise ValueError("No image layer is open: open images first, or create the project "
                             "from a folder.")
        return arrays

    def create_project(self, folder: str | Path, *, source_folder: str | Path | None = None,
                       from_layers: bool = False):
        """Create a project (from a folder of images, or from the open image layers)."""
        from ..core.project import Project

        try:
            classes, colors = self._class_spec()
            kwargs: dict[str, Any] = {"classes": classes, "colors": colors}
            if from_layers:
                kwargs["arrays"] = self._layer_arrays()
            else:
                kwargs["source_folder"] = source_folder
            project = Project.create(folder, **kwargs)
        except (ValueError, OSError) as exc:
            _notify("error", f"Could not create the project: {exc}")
            return None
        for w in project.warnings:
            _notify("warning", w)
        return self._set_project(project)

    def open_project(self, folder: str | Path):
        from ..core.project import Project

        try:
            project = Project.open(folder)
        except (ValueError, OSError) as exc:
            _notify("error", f"Could not open the project: {exc}")
            return None
        return self._set_project(project)

    def _set_project(self, project):
        from ..core.session import ActiveLearningSession
        from ..core.strategies import available_strategies

        self._close_session()
        try:
            self.session = ActiveLearningSession(project)
        except ValueError as exc:
            project.close()
            _notify("error", str(exc))
            return None
        self.destroyed.connect(lambda *_, ref=weakref.ref(self.session), ws=self._workers:
                               _stop_session(ref, ws))
        self.strategy_combo.blockSignals(True)
        self.strategy_combo.clear()
        self.strategy_combo.addItems(available_strategies())
        self.strategy_combo.setCurrentText(self.session.strategy.name)
        self.strategy_combo.blockSignals(False)
        self.scribble_combo.clear()
        self.scribble_combo.addItems(project.classes)
        self.scribble_combo.setCurrentIndex(min(1, len(project.classes) - 1))
        self.classes_edit.setText(", ".join(
            [project.classes[0]] + [f"{n}:{c}" for n, c in zip(project.classes[1:],
                                                              project.colors[1:], strict=False)]))
        self._load_settings_into_form()
        self.auto_train.blockSignals(True)
        self.auto_train.setValue(self.session.auto_train_every)
        self.auto_train.blockSignals(False)
        self._listen(self.session)
        self._update_project_label()
        drafts = project.drafts()
        if drafts:
            _notify("info", f"{len(drafts)} unsubmitted draft(s) restored; open the image to "
                            "continue.")
        self.refresh_table()
        self._update_enabled()
        self.session_changed.emit()
        return self.session

    def _listen(self, session) -> None:
        """Redraw when the core says something changed (its signals may come from worker
        threads: they are queued to the GUI thread)."""
        from psygnal.qt import start_emitting_from_queue

        start_emitting_from_queue()
        session.image_submitted.connect(self._on_model_or_labels, thread="main")
        session.model_changed.connect(self._on_model_or_labels, thread="main")
        session.status_changed.connect(self._schedule_refresh, thread="main")
        session.scores_changed.connect(self._schedule_refresh, thread="main")

    def _on_model_or_labels(self, *_) -> None:
        if not self._alive():
            return
        self._update_project_label()
        self._update_enabled()
        self._schedule_refresh()

    def _schedule_refresh(self, *_) -> None:
        """Refresh the table once for a burst of changes (a suggestion of 3 boxes, a round)."""
        if self._refresh_pending or not self._alive():
            return
        self._refresh_pending = True

        def run():
            self._refresh_pending = False
            if self._alive():
                self.refresh_table()

        QTimer.singleShot(0, run)

    def _on_auto_train_changed(self, n: int) -> None:
        if self.session is not None and not self.session.project.read_only:
            self.session.auto_train_every = n

    def _update_project_label(self) -> None:
        if self.session is None:
            self.project_label.setText("No project open.")
            return
        project = self.session.project
        n = len(project.images())
        self.project_label.setText(
            f"{project.folder}  —  {n} images ({self.session.n_labelled} labelled), classes: "
            f"{', '.join(project.classes[1:])}; model: "
            f"{self.session.model_version or 'none yet'}")

    def _close_session(self) -> None:
        if self.session is not None:
            self.cancel()
            self.session.project.close()
            self.session = None
            self.current_id = None

    def closeEvent(self, event) -> None:  # noqa: N802 - Qt API
        _stop_session(weakref.ref(self.session) if self.session else (lambda: None),
                      self._workers)
        super().closeEvent(event)

    # ------------------------------------------------------------------ table
    def refresh_table(self) -> None:
        if self.session is None:
            self.table.setRowCount(0)
            return
        project = self.session.project
        name = self.session.strategy.name
        scores = {s.image_id: s for s in project.scores(strategy=name,
                                                        model_version=self.session.model_version)}
        reasons = {}
        for h in project.query_history():
            reasons[h["image_id"]] = h.get("reason") or ""
        self.table.setSortingEnabled(False)
        recs = project.images()
        self.table.setRowCount(len(recs))
        for row, rec in enumerate(recs):
            item = QTableWidgetItem(rec.name)
            item.setData(Qt.ItemDataRole.UserRole, rec.id)
            self.table.setItem(row, 0, item)
            status = "partial" if rec.partial and rec.status == "submitted" else rec.status
            self.table.setItem(row, 1, _NumericItem(status, STATUS_ORDER.get(status, 9)))
            s = scores.get(rec.id)
            val = s.score if s is not None and s.score is not None else float("-inf")
            self.table.setItem(row, 2, _NumericItem("" if s is None or s.score is None
                                                    else f"{s.score:.4g}", val))
            self.table.setItem(row, 3, QTableWidgetItem(reasons.get(rec.id, "")))
        self.table.setSortingEnabled(True)
        self.table.resizeColumnToContents(0)

    def _on_table_double_click(self, row: int, col: int) -> None:
        item = self.table.item(row, 0)
        if item is not None:
            self.open_image(int(item.data(Qt.ItemDataRole.UserRole)))

    # ------------------------------------------------------------------ suggest / open
    def _on_strategy_changed(self, name: str) -> None:
        if self.session is None or not name or name == self.session.strategy.name:
            return
        try:
            self.session.set_strategy(name)  # the table follows its scores_changed signal
        except ValueError as exc:
            _notify("error", str(exc))

    def suggest_next(self) -> None:
        """Score what needs scoring, pick, load and predict the pick -- all in a worker --
        then show it."""
        if self.session is None:
            return
        self._start_scoring(then_suggest=True)

    def open_image(self, image_id: int, *, suggestions=()) -> None:
        """Show an image with the prediction as an editable annotation, and its uncertainty.

        ``suggestions``: the picks of this image being answered; their boxes are drawn as
        rectangles and, outside them (and outside what was reviewed before), the annotation
        is dimmed: it is not ground truth. The view comes from the core
        (:meth:`~napari_activeseg.core.session.ActiveLearningSession.view`), built in a
        worker; the layers appear when it returns (:attr:`image_opened` is emitted then).
        """
        if self.session is None:
            return
        session, suggestions = self.session, list(suggestions)

        def job():
            yield None
            return session.view(image_id, suggestions)

        self._start_worker(job, on_yield=lambda _: None, on_return=self._display,
                           desc="Opening image").start()

    def _display(self, view) -> None:
        """GUI thread: put a view (:class:`~napari_activeseg.core.session.ImageView`) on
        screen (cheap layer updates only)."""
        if view is None or self.session is None:
            return
        pred = view.prediction
        self._pre_annotation = None if pred is None else pred.labels
        self.current_id = view.image_id
        self.current_suggestion = view.suggestion
        self.current_boxes = list(view.boxes)
        self._open_suggestions = list(view.suggestions)
        if view.suggestion is None:
            self.reason_label.setText(f"Opened {view.name}.")
        else:
            n = len(view.boxes)
            where = f"Review {n} box{'es' if n > 1 else ''} in this image. " if n else ""
            self.reason_label.setText(f"{where}Suggested by {view.suggestion.strategy}: "
                                      f"{view.suggestion.reason}")
        # what the user sees first: edits are measured against it (drafts, refreshes)
        self._initial_labels = view.labels.copy()
        self._show_layers(view.name, view.image, view.labels.copy(), pred, view.boxes,
                          view.reviewed)
        self._update_enabled()
        self.image_opened.emit(view.image_id)

    def _colormap(self):
        from napari.utils.colormaps import DirectLabelColormap

        colors = self.session.project.colors if self.session else DEFAULT_COLORS
        cmap = {None: "transparent", 0: "transparent"}
        for k, c in enumerate(colors[1:], start=1):
            cmap[k] = c
        return DirectLabelColormap(color_dict=cmap)

    def _show_layers(self, name: str, raw: np.ndarray, labels, pred, boxes,
                     reviewed=None) -> None:
        v = self.viewer
        rgb = raw.ndim == 3 and raw.shape[-1] in (3, 4)
        image_data = raw if (raw.ndim == 2 or rgb) else np.moveaxis(raw, -1, 0)
        if "image" in v.layers:
            layer = v.layers["image"]
            if getattr(layer, "rgb", False) == rgb and layer.data.shape == image_data.shape:
                layer.data = image_data
            else:
                v.layers.remove(layer)
        if "image" not in v.layers:
            v.add_image(image_data, name="image", rgb=rgb)
        v.layers["image"].metadata["activeseg_name"] = name
        v.layers["image"].reset_contrast_limits()
        unc = None
        if pred is not None and pred.uncertainty:
            unc = next(iter(pred.uncertainty.values()))
        if UNCERTAINTY in v.layers:
            v.layers.remove(UNCERTAINTY)
        if unc is not None:
            v.add_image(unc, name=UNCERTAINTY, colormap="inferno", blending="additive",
                        opacity=0.6, visible=True)
        if ANNOTATION in v.layers:
            ann = v.layers[ANNOTATION]
            if ann.data.shape == labels.shape:
                ann.data = labels
            else:
                v.layers.remove(ann)
        if ANNOTATION not in v.layers:
            v.add_labels(labels, name=ANNOTATION, colormap=self._colormap(), opacity=0.6)
        ann = v.layers[ANNOTATION]
        ann.selected_label = 1
        v.layers.selection.active = ann
        ann.mode = "paint"
        self._show_review_layers(labels.shape, boxes, reviewed)
        v.layers.selection.active = ann
        v.reset_view()

    def _show_review_layers(self, shape, boxes, reviewed) -> None:
        """Boxes to review, what was reviewed before (outlined), a dim veil over what is not
        ground truth (boxes mode), and an empty scribbles layer."""
        from napari.utils.colormaps import DirectLabelColormap

        from ..core.review import box_mask

        v = self.viewer
        for name in (REGIONS, NOT_REVIEWED, REVIEWED, SCRIBBLES):
            if name in v.layers:
                v.layers.remove(name)
        before = np.ones(shape, bool) if reviewed is None else np.asarray(reviewed, bool)
        if before.any() and not before.all():
            layer = v.add_labels(before.astype(np.uint8), name=REVIEWED, opacity=0.9,
                                 colormap=DirectLabelColormap(color_dict={
                                     None: "transparent", 0: "transparent", 1: "#00ff88"}))
            layer.contour = 2
            layer.editable = False
        if self.regions_check.isChecked():
            veil = ~(before | box_mask(shape, boxes))
            if veil.any():
                layer = v.add_labels(veil.astype(np.uint8), name=NOT_REVIEWED, opacity=0.45,
                                     colormap=DirectLabelColormap(color_dict={
                                         None: "transparent", 0: "transparent", 1: "black"}))
                layer.editable = False
        if boxes:
            v.add_shapes([np.array([[y0, x0], [y0, x1], [y1, x1], [y1, x0]])
                          for y0, x0, y1, x1 in boxes],
                         shape_type="rectangle", name=REGIONS, edge_color="#00ff88",
                         face_color="transparent", edge_width=3)
        colors = self.session.project.colors if self.session else DEFAULT_COLORS
        cmap = {None: "transparent", 0: "transparent", 1: SCRIBBLE_BACKGROUND}
        for k, c in enumerate(colors[1:], start=2):
            cmap[k] = c
        v.add_labels(np.zeros(shape, np.uint8), name=SCRIBBLES, opacity=0.9,
                     colormap=DirectLabelColormap(color_dict=cmap))

    def start_scribbling(self) -> None:
        """Select the scribbles layer in paint mode with the chosen class's brush."""
        if SCRIBBLES not in self.viewer.layers:
            return
        layer = self.viewer.layers[SCRIBBLES]
        self.viewer.layers.selection.active = layer
        layer.selected_label = self.scribble_combo.currentIndex() + 1
        layer.mode = "paint"

    # ------------------------------------------------------------------ correct / submit
    def _annotation(self) -> np.ndarray | None:
        if ANNOTATION not in self.viewer.layers:
            return None
        return np.asarray(self.viewer.layers[ANNOTATION].data)

    def submit(self) -> None:
        """Save the annotation layer at once, then open the next suggestion."""
        if self.session is None or self.current_id is None:
            return
        labels = self._annotation()
        if labels is None:
            _notify("error", f"The '{ANNOTATION}' layer is gone; reopen the image.")
            return
        try:
            # only what the user reviewed counts (boxes, scribbles, edits, a restored draft's)
            # -- or the whole image in whole-image mode; the core builds the reviewed mask
            self.session.submit_correction(self.current_id, labels,
                                           scribbles=self._scribbles(),
                                           whole=not self.regions_check.isChecked())
        except (ValueError, OSError) as exc:
            _notify("error", f"Not saved: {exc}")
            return
        self.current_id = None
        self.current_suggestion = None
        self.current_boxes = []
        self._update_enabled()
        if self.session.training_due:
            self.train()
        else:
            self.suggest_next()

    def _scribbles(self) -> np.ndarray | None:
        if SCRIBBLES not in self.viewer.layers:
            return None
        return np.asarray(self.viewer.layers[SCRIBBLES].data)

    def skip(self) -> None:
        if self.session is None or self.current_id is None:
            return
        self.session.skip(self.current_id)
        self.current_id = None
        self.suggest_next()

    def reset_to_prediction(self) -> None:
        if self.current_id is None or ANNOTATION not in self.viewer.layers:
            return
        layer = self.viewer.layers[ANNOTATION]
        if self._pre_annotation is not None:
            layer.data = self._pre_annotation.copy()
        else:
            layer.data = np.zeros_like(layer.data)

    def _autosave_draft(self) -> None:
        if self.session is None or self.current_id is None or self.session.project.read_only:
            return
        labels = self._annotation()
        if labels is None:
            return
        scribbles = self._scribbles()
        if self._initial_labels is not None and (scribbles is None or not scribbles.any()) \
                and np.array_equal(labels, self._initial_labels):
            return  # untouched: nothing to keep
        try:
            self.session.save_draft(self.current_id, labels, scribbles=scribbles)
        except (ValueError, OSError):  # a draft is a convenience; the next tick retries
            pass

    def _key_submit(self, viewer=None) -> None:
        self.submit()

    def _key_skip(self, viewer=None) -> None:
        self.skip()

    def _key_toggle_uncertainty(self, viewer=None) -> None:
        if UNCERTAINTY in self.viewer.layers:
            layer = self.viewer.layers[UNCERTAINTY]
            layer.visible = not layer.visible

    # ------------------------------------------------------------------ workers
    def _alive(self) -> bool:
        """False once Qt has deleted this widget (the viewer was closed under a worker)."""
        try:
            self.objectName()
        except RuntimeError:
            return False
        return True

    def _guard(self, fn):
        """Wrap a worker callback so it does nothing once the widget is gone."""

        def call(*args):
            if self._alive():
                fn(*args)

        return call

    def _start_worker(self, gen_func, *, on_yield, on_return, desc: str):
        from napari.qt.threading import create_worker

        def run():
            _background_priority()
            return (yield from gen_func())

        worker = create_worker(run, _progress={"desc": desc})
        worker.yielded.connect(self._guard(on_yield))
        worker.returned.connect(self._guard(on_return))
        worker.errored.connect(self._guard(self._on_worker_error))
        self._workers.append(worker)

        @self._guard
        def finished(w=worker):
            if w in self._workers:
                self._workers.remove(w)
            if self._train_worker is w:
                self._train_worker = None
            if self._score_worker is w:
                self._score_worker = None
            self._update_enabled()

        worker.finished.connect(finished)
        return worker

    def _on_worker_error(self, exc: BaseException) -> None:
        _notify("error", f"{type(exc).__name__}: {exc}")
        self.progress_label.setText(f"Failed: {exc}")

    def train(self) -> None:
        """Fine-tune in a worker; the plot and progress bar follow; re-score afterwards."""
        if self.session is None or self._train_worker is not None:
            return
        if self.session.n_labelled == 0:
            _notify("warning", "Submit at least one labelled image before training.")
            return
        if self._score_worker is not None:
            self.session.request_stop()
        self._history = []
        self.plot.clear()
        self.progress.setValue(0)
        self.progress_label.setText("Training…")
        worker = self._start_worker(self.session.train, on_yield=self._on_train_progress,
                                    on_return=self._on_trained, desc="Training U-Net")
        self._train_worker = worker
        self._update_enabled()
        worker.start()

    def _on_train_progress(self, rec) -> None:
        self.progress.setValue(int(1000 * rec.fraction))
        eta = "" if rec.eta_s is None else f", {rec.eta_s:.0f} s left"
        val = "" if rec.best_val_dice is None else f", val Dice {rec.best_val_dice:.3f}"
        self.progress_label.setText(f"step {rec.step}, loss {rec.loss_smooth:.3f}{val}{eta} "
                                    f"({rec.patches_per_s:.1f} patches/s)")
        if rec.message:
            _notify("warning", rec.message)
        self._history.append((rec.step, rec.loss_smooth, rec.val_dice))
        now = time.monotonic()
        if now - self._last_plot > 0.25:  # a repaint is cheap; 4 per second is smooth enough
            self._last_plot = now
            self._redraw_plot()

    def _redraw_plot(self) -> None:
        self.plot.set_history(self._history)

    def _on_trained(self, summary) -> None:
        self._redraw_plot()
        if summary is None:
            self.progress_label.setText("Training cancelled before it started.")
        elif not summary.saved:
            self.progress_label.setText("Cancelled: the last good model is kept.")
            _notify("info", "Training cancelled: the last good model is kept.")
        else:
            self.progress.setValue(1000)
            res = summary.result
            val = "" if res.best_val_dice is None else f", validation Dice " \
                                                        f"{res.best_val_dice:.3f}"
            self.progress_label.setText(f"Model {summary.model_version}: {res.steps} steps in "
                                        f"{res.seconds:.0f} s on {summary.n_labelled} image(s)"
                                        f"{val}.")
            for note in summary.notes:
                _notify("info", note)
        self.training_finished.emit(summary)
        if summary is not None and summary.saved:
            self._train_worker = None
            self._refresh_open_prediction()
            self._start_scoring(then_suggest=False)

    def _refresh_open_prediction(self) -> None:
        """After training: a fresh prediction and uncertainty for the open image, if the user
        has not edited it yet (their edits are never overwritten)."""
        if self.session is None or self.current_id is None:
            return
        labels = self._annotation()
        untouched = labels is None or self._initial_labels is None or np.array_equal(
            labels, self._initial_labels)
        if untouched:
            self.open_image(self.current_id, suggestions=self._open_suggestions)

    def _start_scoring(self, *, then_suggest: bool) -> None:
        if self.session is None:
            return
        if self._score_worker is not None or self._train_worker is not None:
            if then_suggest:
                _notify("info", "Busy: wait for the running job, or cancel it.")
            return
        session = self.session
        regions, size = self.regions_check.isChecked(), self.region_size.value() or None
        per_image = self.boxes_spin.value()

        def job():
            n = yield from session.score_pool(regions=regions, region_size=size)
            if not then_suggest:
                return n, None
            # picking can be expensive too (set-selection strategies), and so are loading
            # and predicting the pick: all of it stays off the GUI thread
            picks = session.suggest(1, regions=regions, region_size=size,
                                    boxes_per_image=per_image if regions else 1)
            if not picks:
                return n, None
            return n, session.view(picks[0].image_id, picks)

        def on_yield(p):
            self.progress.setValue(int(1000 * p.done / max(p.total, 1)))
            self.progress_label.setText(p.message or f"Scoring the pool: {p.done}/{p.total}")

        def on_return(result):
            n, view = result
            self._score_worker = None
            self._update_enabled()
            if then_suggest:
                if view is None:
                    _notify("info", "Nothing left to suggest: every image is submitted or "
                                    "skipped.")
                else:
                    self._display(view)
            self.scoring_finished.emit(n)

        self._score_worker = self._start_worker(job, on_yield=on_yield, on_return=on_return,
                                                desc="Scoring the pool")
        self._update_enabled()
        self._score_worker.start()

    def cancel(self) -> None:
        """Stop training or scoring within one step; the last good model is kept.

        The session's generators end themselves (and return their summary, so the widget
        learns what was kept); quitting the worker would drop that return value.
        """
        if self.session is not None:
            self.session.request_stop()

    # ------------------------------------------------------------------ settings
    def _load_settings_into_form(self) -> None:
        s = self.session
        mc, tc, ic = s.model_config, s.train_config, s.inference_config
        self.width_spin.setValue(mc.width)
        self.depth_spin.setValue(mc.depth)
        self.patch_spin.setValue(tc.patch_size)
        self.budget_spin.setValue(tc.time_budget_s or 0)
        self.steps_spin.setValue(tc.max_steps or 0)
        self.lr_spin.setValue(tc.lr)
        self.mc_spin.setValue(ic.mc_samples)
        self.device_combo.setCurrentText(tc.device)

    def apply_settings(self) -> None:
        if self.session is None:
            return
        s = self.session
        try:
            device = self.device_combo.currentText()
            steps = self.steps_spin.value() or None
            s.configure(
                model_config=s.model_config.replace(width=self.width_spin.value(),
                                                    depth=self.depth_spin.value()),
                train_config=s.train_config.replace(
                    patch_size=self.patch_spin.value(), time_budget_s=self.budget_spin.value(),
                    max_steps=steps, lr=self.lr_spin.value(), device=device),
                inference_config=s.inference_config.replace(mc_samples=self.mc_spin.value(),
                                                            device=device),
            )
        except ValueError as exc:
            _notify("error", f"Settings not applied: {exc}")
            return
        _notify("info", "Settings saved in the project.")
        self._update_enabled()

    # ------------------------------------------------------------------ predict any layer
    def _refresh_layer_combo(self, event=None) -> None:
        from napari.layers import Image

        current = self.layer_combo.currentText()
        names = [ly.name for ly in self.viewer.layers
                 if isinstance(ly, Image) and ly.name != UNCERTAINTY]
        self.layer_combo.blockSignals(True)
        self.layer_combo.clear()
        self.layer_combo.addItems(names)
        if current in names:
            self.layer_combo.setCurrentText(current)
        self.layer_combo.blockSignals(False)

    def predict_layer(self) -> None:
        """Apply the project's model to any open image layer (prediction + uncertainty)."""
        if self.session is None or self.session.model is None:
            _notify("warning", "Train a model first.")
            return
        name = self.layer_combo.currentText()
        if name not in self.viewer.layers:
            return
        layer = self.viewer.layers[name]
        data = np.asarray(layer.data)
        session = self.session

        def job():
            yield 0
            return session.predict_array(data, maps=("entropy",))

        def done(pred):
            self.viewer.add_labels(pred.labels, name=f"{name} prediction",
                                   colormap=self._colormap(), opacity=0.6)
            self.viewer.add_image(pred.uncertainty["entropy"], name=f"{name} uncertainty",
                                  colormap="inferno", blending="additive", opacity=0.6)

        self._start_worker(job, on_yield=lambda _: None, on_return=done,
                           desc=f"Predicting {name}").start()

    # ------------------------------------------------------------------ export
    def export(self, out_dir: str | Path, *, what: str = "labels") -> None:
        """Export labels (TIFF) or the model (TorchScript + preprocessing) in a worker."""
        if self.session is None or not out_dir:
            return
        project = self.session.project

        def job():
            from ..core import export as ex

            yield None
            if what == "labels":
                paths = ex.export_labels(project, out_dir)
                return f"{len(paths)} label file(s) written to {out_dir}."
            info = ex.export_model(project, out_dir)
            return f"Model {info.get('version')} exported to {out_dir}."

        def done(message):
            _notify("info", message)
            self.exported.emit(str(out_dir))

        self._start_worker(job, on_yield=lambda _: None, on_return=done,
                           desc=f"Exporting {what}").start()
