"""The Measure panel: the objects of the open image as a table, and the project's CSVs.

"Measure" measures the open image's annotation (what the user sees and edits) in a job of the
dock (:class:`~._workers.Jobs`): every connected component of each class is an object
(:func:`~napari_activeseg.core.measure.measure_image`), except in an object class's layer of
ids (objects mode), whose ids are the objects, so touching nuclei stay apart. The objects appear as their own
labels layer (:data:`OBJECTS`, one id per object) whose ``features`` are the table, so napari's
status bar shows an object's measurements under the cursor; the table lists them, with the
image's summary above it. A click on a row selects that object in the layer and centres the
view on it. "Save CSV…" writes ``objects.csv`` and ``images.csv`` of the whole project
(:func:`~napari_activeseg.core.export.measure_project_iter`: the labels, the predictions or
both), cancellable while it runs.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from qtpy.QtCore import Qt, Signal
from qtpy.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QFileDialog,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
)

from ._common import ANNOTATION, NumericItem, notify

OBJECTS = "objects"
#: The table's columns: (header, row key or None for the area, whose key has the unit)
_SHOWN = (("Id", "object_id"), ("Class", "class"), ("Area", None),
          ("Mean", "mean_intensity_c0"), ("Eccentricity", "eccentricity"),
          ("Solidity", "solidity"))


def camera_of(viewer):
    """The viewer's camera (``viewer.scene.camera`` from napari 0.9, ``viewer.camera`` before)."""
    scene = getattr(viewer, "scene", None)
    return scene.camera if scene is not None else viewer.camera


class MeasurePanel(QGroupBox):
    """Measure the open image, show and select its objects, save the project's CSVs."""

    #: the number of objects measured, once they are in the table and the layer
    measured = Signal(int)
    #: the folder the project's CSVs were written to
    saved = Signal(str)

    def __init__(self, dock) -> None:
        super().__init__("Measure objects")
        self._dock = dock
        self.rows: list[dict[str, Any]] = []
        self._save_worker = None
        v = QVBoxLayout(self)
        row = QHBoxLayout()
        self.measure_btn = QPushButton("Measure")
        self.measure_btn.setToolTip("Measure every object of the open image's annotation")
        self.source_combo = QComboBox()
        self.source_combo.addItems(["labels", "predictions", "both"])
        self.source_combo.setToolTip("What Save CSV… measures in the whole project: the "
                                     "submitted labels, the model's predictions, or both")
        self.save_btn = QPushButton("Save CSV…")
        row.addWidget(self.measure_btn)
        row.addWidget(self.source_combo)
        row.addWidget(self.save_btn)
        v.addLayout(row)
        self.summary = QLabel("")
        self.summary.setWordWrap(True)
        v.addWidget(self.summary)
        self.table = QTableWidget(0, len(_SHOWN))
        self.table.setHorizontalHeaderLabels([h for h, _ in _SHOWN])
        self.table.setSortingEnabled(True)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.verticalHeader().setVisible(False)
        self.table.setMinimumHeight(100)
        v.addWidget(self.table)
        self.measure_btn.clicked.connect(self.measure)
        self.save_btn.clicked.connect(self._ask_save)
        self.table.cellClicked.connect(lambda r, _c: self.select_row(r))
        dock.image_opened.connect(lambda _id: self.clear())
        dock.session_changed.connect(self.clear)
        self.clear()

    # ------------------------------------------------------------------ the open image
    def clear(self) -> None:
        """Forget the table of a previous image (a new image or project is open)."""
        self.rows = []
        self.table.setRowCount(0)
        self.summary.setText("")
        viewer = self._dock.viewer
        if OBJECTS in viewer.layers:
            viewer.layers.remove(OBJECTS)
        self.measure_btn.setEnabled(self._dock.current_view is not None)
        self.save_btn.setEnabled(self._dock.session is not None)

    def measure(self) -> None:
        """Measure the objects of the open image's annotation, in a job of the dock."""
        view, session = self._dock.current_view, self._dock.session
        if view is None or session is None:
            notify("warning", "Open an image first.")
            return
        from ..core.export.measurements import project_pixel_size
        from ..core.measure import measure_image, summarize

        viewer = self._dock.viewer
        labels = (np.asarray(viewer.layers[ANNOTATION].data) if ANNOTATION in viewer.layers
                  else view.labels)
        # the object classes' layers of ids (objects mode): touching objects stay separate
        combined = self._dock.objects.combined(labels)
        instances = None if combined is None else combined[0]
        labels = labels if combined is None else combined[1]
        image, classes = view.image, session.project.classes
        pixel_size = project_pixel_size(session.project)

        def job():
            yield None
            rows, ids = measure_image(image, class_map=labels, instances=instances,
                                      classes=classes, name=view.name,
                                      pixel_size=pixel_size)
            unit = None if pixel_size is None else "um"
            return view.image_id, rows, ids, summarize(rows, classes, name=view.name,
                                                       unit=unit), unit

        self.jobs.start(job, on_return=self._show, desc=f"Measuring {view.name}")

    @property
    def jobs(self):
        return self._dock.jobs

    def _show(self, result) -> None:
        image_id, rows, ids, summary, unit = result
        if image_id != self._dock.current_id:  # another image was opened meanwhile
            return
        self.rows = rows
        viewer = self._dock.viewer
        if OBJECTS in viewer.layers:
            viewer.layers.remove(OBJECTS)
        layer = viewer.add_labels(ids, name=OBJECTS, opacity=0.8)
        layer.contour = 1
        layer.editable = False
        # the features' "index" column is the label value each row describes
        layer.features = {"index": [r["object_id"] for r in rows],
                          **{c: [r[c] for r in rows] for c in (rows[0] if rows else {})}}
        suffix = "px" if unit is None else f"{unit}2"
        counts = ", ".join(f"{summary[k]} {k[len('count_'):]}" for k in summary
                           if k.startswith("count_"))
        text = f"{summary['objects']} object(s) ({counts})"
        if summary[f"mean_area_{suffix}"] is not None:
            text += (f"; area mean {summary[f'mean_area_{suffix}']:.1f}, median "
                     f"{summary[f'median_area_{suffix}']:.1f} {suffix}")
        self.summary.setText(text)
        self._fill(rows, f"area_{suffix}")
        self.measured.emit(len(rows))

    def _fill(self, rows, area_key: str) -> None:
        self.table.setSortingEnabled(False)
        self.table.setRowCount(len(rows))
        for r, row in enumerate(rows):
            for c, (_, key) in enumerate(_SHOWN):
                value = row[key or area_key]
                if isinstance(value, str):
                    item = QTableWidgetItem(value)
                else:
                    text = str(value) if isinstance(value, int) else f"{value:.3g}"
                    item = NumericItem(text, float(value))
                if c == 0:
                    item.setData(Qt.ItemDataRole.UserRole, int(row["object_id"]))
                self.table.setItem(r, c, item)
        self.table.setSortingEnabled(True)
        self.table.sortItems(0, Qt.SortOrder.AscendingOrder)  # by object id, not the last sort

    def select_row(self, row: int) -> None:
        """Select the object of table row `row` in the objects layer and centre the view on it."""
        item = self.table.item(row, 0)
        viewer = self._dock.viewer
        if item is None or OBJECTS not in viewer.layers:
            return
        oid = int(item.data(Qt.ItemDataRole.UserRole))
        found = next((r for r in self.rows if r["object_id"] == oid), None)
        if found is None:
            return
        layer = viewer.layers[OBJECTS]
        layer.selected_label = oid
        viewer.layers.selection.active = layer
        camera = camera_of(viewer)
        camera.center = (*tuple(camera.center)[:-2], found["centroid_y_px"],
                         found["centroid_x_px"])

    # ------------------------------------------------------------------ the whole project
    def _ask_save(self) -> None:
        if self._save_worker is not None:  # the button says Cancel while saving
            self._save_worker.quit()
            return
        folder = QFileDialog.getExistingDirectory(self, "Folder for objects.csv and images.csv")
        if folder:
            self.save(folder)

    def save(self, folder: str) -> None:
        """Write the project's ``objects.csv`` and ``images.csv`` to `folder` in a job (the
        chosen source); the button cancels it meanwhile, and a cancelled job writes no CSV."""
        session = self._dock.session
        if session is None or self._save_worker is not None:
            return
        from ..core.export import measure_project_iter

        project, source = session.project, self.source_combo.currentText()

        def progress(rec) -> None:
            if rec.kind == "image":
                self.summary.setText(f"Measuring the project: {rec.done}/{rec.total} image(s)")

        def done(result) -> None:
            notify("info", f"{len(result.objects)} object(s) of {len(result.images)} image(s) "
                           f"({source}) written to {folder}.")
            self.saved.emit(str(folder))

        def finished() -> None:
            self._save_worker = None
            self.save_btn.setText("Save CSV…")

        self._save_worker = self.jobs.start(
            lambda: measure_project_iter(project, folder, source=source), on_yield=progress,
            on_return=done, desc="Measuring the project")
        self._save_worker.finished.connect(self.jobs.guard(finished))
        self.save_btn.setText("Cancel saving")
