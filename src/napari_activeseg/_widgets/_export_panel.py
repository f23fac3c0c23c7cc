"""The Predict-and-export panel: apply the model to any image layer; export labels or model.

Both actions run as jobs of the dock (:class:`~._workers.Jobs`): the prediction appears as two
layers when it returns, an export reports what it wrote.
"""

from __future__ import annotations

import numpy as np
from qtpy.QtCore import Signal
from qtpy.QtWidgets import (
    QComboBox,
    QFileDialog,
    QGroupBox,
    QHBoxLayout,
    QPushButton,
    QVBoxLayout,
)

from ._common import UNCERTAINTY, notify
from ._layers import class_colormap


class ExportPanel(QGroupBox):
    #: (what: "labels" or "model", output folder), once the user chose the folder
    export_requested = Signal(str, str)

    def __init__(self) -> None:
        super().__init__("Predict and export")
        v = QVBoxLayout(self)
        row = QHBoxLayout()
        self.layer_combo = QComboBox()
        self.predict_btn = QPushButton("Predict layer")
        row.addWidget(self.layer_combo, 1)
        row.addWidget(self.predict_btn)
        v.addLayout(row)
        row = QHBoxLayout()
        self.export_labels_btn = QPushButton("Export labels…")
        self.export_model_btn = QPushButton("Export model…")
        for btn, what in ((self.export_labels_btn, "labels"), (self.export_model_btn, "model")):
            btn.clicked.connect(lambda _=False, what=what: self._ask(what))
        row.addWidget(self.export_labels_btn)
        row.addWidget(self.export_model_btn)
        v.addLayout(row)
        v.addStretch(1)

    def _ask(self, what: str) -> None:
        folder = QFileDialog.getExistingDirectory(self, f"Folder for the exported {what}")
        if folder:
            self.export_requested.emit(what, folder)

    def refresh_layers(self, viewer) -> None:
        """The image layers one can predict (not the uncertainty maps)."""
        from napari.layers import Image

        current = self.layer_combo.currentText()
        names = [ly.name for ly in viewer.layers
                 if isinstance(ly, Image) and ly.name != UNCERTAINTY]
        self.layer_combo.blockSignals(True)
        self.layer_combo.clear()
        self.layer_combo.addItems(names)
        if current in names:
            self.layer_combo.setCurrentText(current)
        self.layer_combo.blockSignals(False)

    def set_state(self, *, has_model: bool, has_labels: bool) -> None:
        self.predict_btn.setEnabled(has_model)
        self.export_labels_btn.setEnabled(has_labels)
        self.export_model_btn.setEnabled(has_model)

    def predict(self, viewer, session, jobs) -> None:
        """Predict the chosen layer with the session's model; add its labels and uncertainty."""
        if session is None or session.model is None:
            notify("warning", "Train a model first.")
            return
        name = self.layer_combo.currentText()
        if name not in viewer.layers:
            return
        data = np.asarray(viewer.layers[name].data)

        def job():
            yield 0
            return session.predict_array(data, maps=("entropy",))

        def done(pred):
            viewer.add_labels(pred.labels, name=f"{name} prediction",
                              colormap=class_colormap(session.project.colors), opacity=0.6)
            viewer.add_image(pred.uncertainty["entropy"], name=f"{name} uncertainty",
                             colormap="inferno", blending="additive", opacity=0.6)

        jobs.start(job, on_return=done, desc=f"Predicting {name}")

    def export(self, project, out_dir, what: str, jobs, on_done) -> None:
        """Export the labels (TIFF class maps) or the model (weights + preprocessing) to
        `out_dir`; ``on_done(out_dir)`` follows a success."""

        def job():
            from ..core import export as ex

            yield None
            if what == "labels":
                paths = ex.export_labels(project, out_dir)
                return f"{len(paths)} label file(s) written to {out_dir}."
            info = ex.export_model(project, out_dir)
            return f"Model {info.get('version')} exported to {out_dir}."

        def done(message):
            notify("info", message)
            on_done(str(out_dir))

        jobs.start(job, on_return=done, desc=f"Exporting {what}")
