"""The live training plot: loss per step and validation Dice, painted with QPainter.

A matplotlib canvas re-renders axes, ticks and text on every update: ~100 ms on the GUI thread
of a 2-core machine that is training at the same time, which the viewer feels as a stall. This
widget draws two polylines and a few labels (well under a millisecond); the dock asks for a
repaint at most 4 times a second.
"""

from __future__ import annotations

from collections.abc import Sequence

from qtpy.QtCore import QPointF, QRectF, Qt
from qtpy.QtGui import QColor, QFont, QPainter, QPen, QPolygonF
from qtpy.QtWidgets import QSizePolicy, QWidget

LOSS_COLOR = QColor("#ff7f0e")
VAL_COLOR = QColor("#1f77b4")
TEXT_COLOR = QColor("#999999")
#: at most this many loss points are drawn (longer histories are strided)
MAX_POINTS = 400


def _bounds(values: Sequence[float]) -> tuple[float, float]:
    lo, hi = min(values), max(values)
    if hi - lo < 1e-12:
        lo, hi = lo - 0.5, hi + 0.5
    return lo, hi


class TrainingPlot(QWidget):
    """Loss (left axis, orange) and validation Dice (right axis 0–1, blue) against step.

    ``set_history([(step, loss, val_dice_or_None), ...])`` replaces the data and schedules a
    repaint; ``clear()`` empties it for a new round. ``loss_points()`` and ``val_points()`` give
    what is drawn, in data coordinates (for tests and screenshots).
    """

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._history: list[tuple[int, float, float | None]] = []
        self.setMinimumHeight(110)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
        self.setToolTip("Training loss (orange, left) and validation Dice (blue, right, 0–1) "
                        "per step of the current round.")

    # ----------------------------------------------------------------- data
    def set_history(self, history: Sequence[tuple[int, float, float | None]]) -> None:
        self._history = list(history)
        self.update()

    def clear(self) -> None:
        self.set_history([])

    def loss_points(self) -> list[tuple[int, float]]:
        pts = [(s, loss) for s, loss, _ in self._history if loss is not None]
        stride = max(1, -(-len(pts) // MAX_POINTS))
        out = pts[::stride]
        if pts and out[-1] != pts[-1]:
            out.append(pts[-1])  # the newest point is always shown
        return out

    def val_points(self) -> list[tuple[int, float]]:
        return [(s, v) for s, _, v in self._history if v is not None]

    def x_range(self) -> tuple[float, float]:
        steps = [h[0] for h in self._history]
        return (0.0, float(max(steps))) if steps else (0.0, 1.0)

    # ---------------------------------------------------------------- paint
    def paintEvent(self, event) -> None:  # noqa: N802 - Qt override
        p = QPainter(self)
        try:
            p.setRenderHint(QPainter.RenderHint.Antialiasing, True)
            font = QFont(self.font())
            font.setPointSizeF(7.5)
            p.setFont(font)
            fm = p.fontMetrics()
            pad_l = fm.horizontalAdvance("0.000") + 8
            pad_r = fm.horizontalAdvance("1.0") + 8
            pad_t, pad_b = fm.height() // 2 + 2, fm.height() + 6
            w, h = self.width(), self.height()
            box = QRectF(pad_l, pad_t, max(w - pad_l - pad_r, 10), max(h - pad_t - pad_b, 10))
            p.setPen(QPen(TEXT_COLOR, 1))
            p.drawRect(box)

            x0, x1 = self.x_range()
            loss = self.loss_points()
            val = self.val_points()

            def px(x: float) -> float:
                return box.left() + (x - x0) / max(x1 - x0, 1e-9) * box.width()

            def py(y: float, lo: float, hi: float) -> float:
                return box.bottom() - (y - lo) / (hi - lo) * box.height()

            # axis labels: step range below, loss range left, Dice 0/1 right
            p.drawText(QPointF(box.left(), h - 3), f"{x0:.0f}")
            label = f"step {x1:.0f}" if self._history else "step"
            p.drawText(QPointF(box.right() - fm.horizontalAdvance(label), h - 3), label)
            p.setPen(QPen(VAL_COLOR, 1))
            p.drawText(QPointF(box.right() + 4, box.top() + fm.ascent() / 2), "1.0")
            p.drawText(QPointF(box.right() + 4, box.bottom() + fm.ascent() / 2), "0")
            # legend inside the box, top corners
            legend = "val Dice"
            p.drawText(QPointF(box.right() - fm.horizontalAdvance(legend) - 4,
                               box.top() + fm.ascent() + 2), legend)
            p.setPen(QPen(LOSS_COLOR, 1))
            p.drawText(QPointF(box.left() + 4, box.top() + fm.ascent() + 2), "loss")
            if not loss and not val:
                p.setPen(QPen(TEXT_COLOR, 1))
                p.drawText(box, Qt.AlignmentFlag.AlignCenter, "loss and validation Dice "
                                                              "appear here during training")
                return
            if loss:
                lo, hi = _bounds([v for _, v in loss])
                p.setPen(QPen(LOSS_COLOR, 1))
                p.drawText(QPointF(2, box.top() + fm.ascent() / 2), f"{hi:.3f}")
                p.drawText(QPointF(2, box.bottom() + fm.ascent() / 2), f"{lo:.3f}")
                p.setPen(QPen(LOSS_COLOR, 1.2))
                p.drawPolyline(QPolygonF([QPointF(px(s), py(v, lo, hi)) for s, v in loss]))
            if val:
                pts = [QPointF(px(s), py(v, 0.0, 1.0)) for s, v in val]
                p.setPen(QPen(VAL_COLOR, 1.2))
                if len(pts) > 1:
                    p.drawPolyline(QPolygonF(pts))
                p.setBrush(VAL_COLOR)
                for q in pts:
                    p.drawEllipse(q, 2.5, 2.5)
        finally:
            p.end()
