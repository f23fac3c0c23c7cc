"""The Predict-and-export panel: apply the model to any image layer; export labels or model."""

from __future__ import annotations

from qtpy.QtWidgets import QComboBox, QGroupBox, QHBoxLayout, QPushButton, QVBoxLayout

from ._common import UNCERTAINTY


class ExportPanel(QGroupBox):
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
        row.addWidget(self.export_labels_btn)
        row.addWidget(self.export_model_btn)
        v.addLayout(row)

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
