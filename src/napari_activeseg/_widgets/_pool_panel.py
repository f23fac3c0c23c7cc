"""The pool table: every image with its status, score and the reason it was suggested."""

from __future__ import annotations

from qtpy.QtCore import Qt, QTimer, Signal
from qtpy.QtWidgets import QAbstractItemView, QHeaderView, QTableWidget, QTableWidgetItem

from ._common import STATUS_ORDER, NumericItem


class PoolTable(QTableWidget):
    """Sortable table of the pool; a double click emits :attr:`image_activated` (image id)."""

    image_activated = Signal(int)
    refreshed = Signal()

    def __init__(self) -> None:
        super().__init__(0, 4)
        self.setHorizontalHeaderLabels(["Image", "Status", "Score", "Why"])
        self.setSortingEnabled(True)
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.verticalHeader().setVisible(False)
        self.horizontalHeader().setSectionResizeMode(3, QHeaderView.ResizeMode.Stretch)
        self.setMinimumHeight(120)
        self.cellDoubleClicked.connect(self.activate_row)
        self._session_of = None

    def follow(self, session_of) -> None:
        """Redraw from ``session_of()`` (the dock's current session) on :meth:`schedule_refresh`."""
        self._session_of = session_of

    def schedule_refresh(self, *_) -> None:
        """Refresh once, on the next turn of the event loop, for a burst of changes (a
        suggestion of 3 boxes, a training round)."""
        if self._session_of is not None:
            self._session_of, follow = None, self._session_of

            def run():
                self._session_of = follow
                try:
                    self.refresh(follow())
                except RuntimeError:  # Qt deleted the table (the viewer closed) meanwhile
                    pass

            QTimer.singleShot(0, run)

    def activate_row(self, row: int, col: int = 0) -> None:
        """Open the image of a row (what a double click does)."""
        item = self.item(row, 0)
        if item is not None:
            self.image_activated.emit(int(item.data(Qt.ItemDataRole.UserRole)))

    def row_of(self, name: str) -> int | None:
        """The row showing the image called ``name``, or None."""
        for r in range(self.rowCount()):
            if self.item(r, 0).text() == name:
                return r
        return None

    def refresh(self, session) -> None:
        """Redraw from the project: statuses ("partial" for boxes or scribbles only), the
        current strategy's scores for the current model, the latest reason."""
        if session is None or session.project.closed:  # closed: a refresh queued before
            self.setRowCount(0)
            self.refreshed.emit()
            return
        project = session.project
        scores = {s.image_id: s for s in project.scores(strategy=session.strategy.name,
                                                        model_version=session.model_version)}
        reasons = {h["image_id"]: h.get("reason") or "" for h in project.query_history()}
        self.setSortingEnabled(False)
        recs = project.images()
        self.setRowCount(len(recs))
        for row, rec in enumerate(recs):
            item = QTableWidgetItem(rec.name)
            item.setData(Qt.ItemDataRole.UserRole, rec.id)
            item.setToolTip(rec.name)
            self.setItem(row, 0, item)
            status = "partial" if rec.partial and rec.status == "submitted" else rec.status
            self.setItem(row, 1, NumericItem(status, STATUS_ORDER.get(status, 9)))
            s = scores.get(rec.id)
            val = s.score if s is not None and s.score is not None else float("-inf")
            self.setItem(row, 2, NumericItem("" if s is None or s.score is None
                                             else f"{s.score:.4g}", val))
            why = QTableWidgetItem(reasons.get(rec.id, ""))
            why.setToolTip(reasons.get(rec.id, ""))
            self.setItem(row, 3, why)
        self.setSortingEnabled(True)
        self.resizeColumnToContents(1)
        self.resizeColumnToContents(2)
        self.setColumnWidth(0, min(self.sizeHintForColumn(0), 160))
        self.refreshed.emit()
