"""The Train panel: Train / Cancel / auto-train, continuous training, the live plot; and the
status strip the dock keeps in view above its tabs (what the model is doing, the progress bar,
one status line)."""

from __future__ import annotations

import time

from qtpy.QtWidgets import (
    QCheckBox,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from ._common import notify


def set_progress(bar: QProgressBar, value: int) -> None:
    """``bar.setValue(value)`` without its synchronous repaint: QProgressBar repaints at once
    on every change, and with napari's OpenGL canvas in the window that composes the whole
    window there and then; an ordinary update is coalesced into the next paint."""
    bar.setUpdatesEnabled(False)
    try:
        bar.setValue(value)
    finally:
        bar.setUpdatesEnabled(True)  # schedules the (asynchronous) repaint


class TrainPanel(QGroupBox):
    """Shows a round's progress records; keeps the round's history for the plot."""

    def __init__(self) -> None:
        from ._plot import TrainingPlot

        super().__init__("Train")
        v = QVBoxLayout(self)
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
        v.addLayout(row)
        v.addWidget(self.auto_train)
        self.continuous_check = QCheckBox("Train continuously")
        self.continuous_check.setChecked(True)
        self.continuous_check.setToolTip(
            "Train in rounds by itself whenever there are new labels; a round's model is kept "
            "only when it is at least as good on the held-back images.")
        v.addWidget(self.continuous_check)
        # the status strip: shown by the dock above its tabs, so it is seen at every step
        self.status = QWidget()
        s = QVBoxLayout(self.status)
        s.setContentsMargins(0, 0, 0, 0)
        self.continuous_status = QLabel("")  # what the model is doing, in one line
        self.continuous_status.setWordWrap(True)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1000)
        set_progress(self.progress, 0)
        self.progress_label = QLabel("")
        self.progress_label.setWordWrap(True)
        for w in (self.continuous_status, self.progress, self.progress_label):
            s.addWidget(w)
        # QPainter, not matplotlib: an Agg render of axes and ticks cost ~100 ms of GUI thread
        # per update on a 2-core machine that is training (benchmarks/gui_stall.py)
        self.plot = TrainingPlot()
        v.addWidget(self.plot)
        self.history: list[tuple[int, float, float | None]] = []
        self._last_plot = 0.0

    def start_round(self) -> None:
        self.history = []
        self.plot.clear()
        set_progress(self.progress, 0)
        self.progress_label.setText("Training…")

    def show_session(self, session) -> None:
        """The project's auto-train count (without announcing it as a change)."""
        self.auto_train.blockSignals(True)
        self.auto_train.setValue(session.auto_train_every)
        self.auto_train.blockSignals(False)

    def show_progress(self, rec) -> None:
        """One training progress record (its warning, if any, as a notification)."""
        set_progress(self.progress, int(1000 * rec.fraction))
        eta = "" if rec.eta_s is None else f", {rec.eta_s:.0f} s left"
        val = "" if rec.best_val_dice is None else f", val Dice {rec.best_val_dice:.3f}"
        self.progress_label.setText(f"step {rec.step}, loss {rec.loss_smooth:.3f}{val}{eta} "
                                    f"({rec.patches_per_s:.1f} patches/s)")
        self.history.append((rec.step, rec.loss_smooth, rec.val_dice))
        now = time.monotonic()
        if now - self._last_plot > 0.25:  # a repaint is cheap; 4 per second is smooth enough
            self._last_plot = now
            self.plot.set_history(self.history)
        if rec.message:
            notify("warning", rec.message)

    def show_summary(self, summary) -> None:
        """The end of a round: kept, cancelled, or cancelled before it started."""
        self.plot.set_history(self.history)
        if summary is not None and summary.kept_previous:
            self.progress_label.setText(summary.notes[-1])
            return
        if summary is not None and not summary.saved:
            notify("info", "Training cancelled: the last good model is kept.")
        for note in summary.notes if summary is not None and summary.saved else ():
            notify("info", note)
        if summary is None:
            self.progress_label.setText("Training cancelled before it started.")
        elif not summary.saved:
            self.progress_label.setText("Cancelled: the last good model is kept.")
        else:
            set_progress(self.progress, 1000)
            res = summary.result
            val = "" if res.best_val_dice is None else \
                f", validation Dice {res.best_val_dice:.3f}"
            self.progress_label.setText(f"Model {summary.model_version}: {res.steps} steps in "
                                        f"{res.seconds:.0f} s on {summary.n_labelled} image(s)"
                                        f"{val}.")

    def show_scoring(self, p) -> None:
        set_progress(self.progress, int(1000 * p.done / max(p.total, 1)))
        self.progress_label.setText(p.message or f"Scoring the pool: {p.done}/{p.total}")

    def set_state(self, *, can_train: bool, busy: bool) -> None:
        self.train_btn.setEnabled(can_train and not busy)
        self.cancel_btn.setEnabled(busy)
