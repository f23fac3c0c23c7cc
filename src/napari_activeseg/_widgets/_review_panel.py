"""The Suggest-and-correct panel: strategy, boxes or whole images, brushes, Submit / Skip."""

from __future__ import annotations

from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
)

_REASON_CHARS = 140


class ReviewPanel(QGroupBox):
    """Controls of the correction loop; the dock connects the buttons."""

    def __init__(self) -> None:
        super().__init__("Suggest and correct")
        self._view = None  # the open image's view: its reason follows the model
        v = QVBoxLayout(self)
        row = QHBoxLayout()
        self.strategy_combo = QComboBox()
        row.addWidget(QLabel("Strategy:"))
        row.addWidget(self.strategy_combo, 1)
        v.addLayout(row)
        row = QHBoxLayout()
        self.regions_check = QCheckBox("review boxes, not whole images")
        self.regions_check.setChecked(True)
        self.regions_check.setToolTip(
            "Review a few boxes of an image instead of the whole image: only the boxes, your "
            "scribbles and your edits count as ground truth, and the rest of the image stays in "
            "the pool. Untick for whole-image mode (Submit then accepts the whole image).")
        self.region_size = QSpinBox()
        self.region_size.setRange(0, 4096)
        self.region_size.setValue(0)
        self.region_size.setSingleStep(32)
        self.region_size.setSpecialValueText("auto")
        # no " px" suffix: "1024 px" is clipped at the dock's 290 px width
        self.region_size.setToolTip("Box side in pixels; 'auto' decides it once from the "
                                    "project's images (saved in the project).")
        self.boxes_spin = QSpinBox()
        self.boxes_spin.setRange(1, 16)
        self.boxes_spin.setValue(3)
        self.boxes_spin.setSuffix("/img")  # " / img" is clipped in the 290 px dock
        self.boxes_spin.setToolTip("How many boxes of one image to review at once.")
        v.addWidget(self.regions_check)
        row.addWidget(QLabel("Boxes:"))
        row.addWidget(self.region_size, 1)
        row.addWidget(self.boxes_spin, 1)
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
        grid = QGridLayout()
        self.suggest_btn = QPushButton("Suggest next")
        self.submit_btn = QPushButton("Submit [Shift+S]")
        self.skip_btn = QPushButton("Skip [Shift+K]")
        self.reset_btn = QPushButton("Reset to prediction")
        grid.addWidget(self.suggest_btn, 0, 0)
        grid.addWidget(self.submit_btn, 0, 1)
        grid.addWidget(self.skip_btn, 1, 0)
        grid.addWidget(self.reset_btn, 1, 1)
        v.addLayout(grid)
        self.reason_label = QLabel("")
        self.reason_label.setWordWrap(True)
        # room for the three lines a reason is cut to, also when the dock is short of height
        self.reason_label.setMinimumHeight(3 * self.reason_label.fontMetrics().lineSpacing() + 4)
        v.addWidget(self.reason_label)

    def set_choices(self, strategies, current: str, classes) -> None:
        """Fill the strategy list and the brushes (one per class) without emitting changes."""
        self.strategy_combo.blockSignals(True)
        self.strategy_combo.clear()
        self.strategy_combo.addItems(list(strategies))
        self.strategy_combo.setCurrentText(current)
        self.strategy_combo.blockSignals(False)
        self.scribble_combo.clear()
        self.scribble_combo.addItems(list(classes))
        self.scribble_combo.setCurrentIndex(min(1, len(classes) - 1))

    @property
    def boxes_mode(self) -> bool:
        return self.regions_check.isChecked()

    @property
    def box_size(self) -> int | None:
        """The chosen box side, or None for the project's automatic size."""
        return self.region_size.value() or None

    def show_view(self, view, model_version: str | None = None) -> None:
        """Why this image is shown (and how many boxes to review); says so when the
        suggestion came from an older model than the one now predicting it."""
        self._view = view
        self.show_model(model_version)

    def show_model(self, model_version: str | None) -> None:
        """The reason line for the current model: once a newer model than the suggestion's
        exists, the suggestion's own reason ("random (no model yet)") is stale and is replaced
        by what to do (it stays in the tooltip)."""
        view = self._view
        if view is None:
            return
        if view.suggestion is None:
            self.reason_label.setText(f"Opened {view.name}.")
            self.reason_label.setToolTip("")
            return
        n = len(view.boxes)
        where = f"Review {n} box{'es' if n > 1 else ''} in this image. " if n else ""
        sugg = view.suggestion
        full = f"{where}Suggested by {sugg.strategy}: {sugg.reason}"
        if sugg.model_version == model_version or model_version is None:
            text = full
        else:
            made = f"with {sugg.model_version}" if sugg.model_version else \
                "before the first model"
            text = (f"{where}Picked by {sugg.strategy.split(' (')[0]} {made}; the prediction "
                    f"is from {model_version}. Suggest next picks with it.")
            full = f"{text}\n\nThe pick: {sugg.strategy}: {sugg.reason}"
        # three lines at most in a narrow dock; the whole reason in the tooltip
        self.reason_label.setText(text if len(text) <= _REASON_CHARS
                                  else text[:_REASON_CHARS - 1].rstrip() + "…")
        self.reason_label.setToolTip(full)

    def set_state(self, *, has_session: bool, busy: bool, image_open: bool) -> None:
        """Suggest next works during training and scoring (the session serves from its
        queue); the strategy and the box settings wait for them."""
        self.suggest_btn.setEnabled(has_session)
        for w in (self.strategy_combo, self.region_size, self.boxes_spin):
            w.setEnabled(has_session and not busy)
        self.regions_check.setEnabled(has_session)
        for w in (self.submit_btn, self.skip_btn, self.reset_btn, self.scribble_btn,
                  self.scribble_combo):
            w.setEnabled(image_open)
