"""The dock's continuous training: a :class:`~napari_activeseg.core.session.ContinuousTrainer`
whose rounds run one job at a time in the "train" slot (so manual Train waits), started
whenever one is due and the dock is not busy -- after a submission, after the pool was
re-scored for the last model, on resume. Between rounds the slot is free, so the pool is
re-scored for each published model. The panel's toggle pauses and resumes it (saved in the
project), Cancel pauses it, closing the dock stops it; a one-line status follows it."""

from __future__ import annotations

from qtpy.QtCore import QTimer

from ._common import notify
from ._workers import after_session_jobs


class ContinuousDriver:
    """Runs the open session's continuous rounds in the dock's jobs."""

    def __init__(self, dock) -> None:
        self.dock = dock
        self.trainer = None
        panel = dock.train_panel
        panel.continuous_check.toggled.connect(self.set_enabled)
        self._timer = QTimer(dock)
        self._timer.setInterval(500)
        self._timer.timeout.connect(self.show_status)
        self._timer.start()

    def attach(self, session) -> None:
        """Follow a newly opened session (stops the one before)."""
        from ..core.session import ContinuousTrainer

        self.stop()
        self.trainer = ContinuousTrainer(session)
        check = self.dock.train_panel.continuous_check
        check.blockSignals(True)
        check.setChecked(session.continuous_training)
        check.blockSignals(False)
        if not session.continuous_training:
            self.trainer.pause()
        self.kick()

    def set_enabled(self, on: bool) -> None:
        """The toggle: resume (and start a round if one is due) or pause; saved."""
        session = self.dock.session
        if self.trainer is None or session is None:
            return
        if not session.project.read_only:
            session.continuous_training = bool(on)
        if on:
            self.trainer.resume()
            self.kick()
        else:
            self.trainer.pause()
        self.show_status()

    def pause(self) -> None:
        """Cancel: no new round until the toggle is ticked again (the setting stays)."""
        if self.trainer is not None:
            self.trainer.pause()
            check = self.dock.train_panel.continuous_check
            check.blockSignals(True)
            check.setChecked(False)
            check.blockSignals(False)

    def stop(self) -> None:
        if self.trainer is not None:
            self.trainer.stop()
            self.trainer = None

    def kick(self) -> None:
        """Start a round if one is due and the dock is free."""
        dock, trainer = self.dock, self.trainer
        if trainer is None or dock.busy or dock.session is None or \
                dock.session.project.closed or not trainer.due:
            return
        dock.train_panel.start_round()
        dock.jobs.start(after_session_jobs(dock.session, trainer.run_round),
                        on_yield=dock.train_panel.show_progress,
                        on_return=self._ended, desc="Training continuously", slot="train")

    def _ended(self, record) -> None:
        dock = self.dock
        dock.jobs.release("train")
        if record is not None:
            dock.train_panel.show_summary(record.summary)
            notify("info", record.note)
            dock.training_finished.emit(record.summary)
            if record.published:
                dock.refresh_open_prediction()
                dock.score_pool()  # its end kicks the next round
        self.kick()
        self.show_status()

    def show_status(self) -> None:
        """The one line: what the model is doing, and the current version."""
        trainer, session = self.trainer, self.dock.session
        label = self.dock.train_panel.continuous_status
        if trainer is None or session is None or session.project.closed:
            label.setText("")
            return
        version = session.model_version or "none yet"
        label.setText(f"Model: {trainer.status.text} (current {version})")
