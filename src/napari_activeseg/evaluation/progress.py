"""Progress of a benchmark run: the :class:`BenchmarkProgress` records it yields, the work
accounting behind their ETA (:class:`Tracker`), and :class:`TextProgress`, which shows them.

Work is counted in "optimiser step equivalents": a U-Net round costs its steps plus
``ROUND_OVERHEAD`` (pool scoring and test prediction); a forest round costs ``RF_ROUND``. Rough on
purpose: they only weigh the ETA.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from .config import BenchmarkConfig

__all__ = ["RF_ROUND", "ROUND_OVERHEAD", "BenchmarkProgress", "TextProgress", "Tracker",
           "task_work"]

#: Work units of a U-Net round on top of its optimiser steps (pool scoring, test prediction).
ROUND_OVERHEAD = 100.0
#: Work units of a random-forest round (fit and prediction).
RF_ROUND = 90.0


def task_work(kind: str, cfg: BenchmarkConfig) -> float:
    """Work units of one run of the plan: a strategy (``"al"``), ``"rf"`` or ``"full"``."""
    n = cfg.rounds + 1
    if kind == "al":
        return n * (cfg.steps + ROUND_OVERHEAD)
    if kind == "rf":
        return n * RF_ROUND
    return cfg.full_rounds * (cfg.full_steps + ROUND_OVERHEAD)


@dataclass(frozen=True)
class BenchmarkProgress:
    """Yielded by :func:`.runner.run_benchmark` as the run advances.

    ``done`` / ``total`` are work units (optimiser-step equivalents) of the whole run;
    ``eta_s`` is extrapolated from the work done in this process (None until some is done).
    ``event`` is ``"round"`` when a round has just finished (``message`` then summarises it),
    ``"note"`` for something worth a line of its own, ``"step"`` otherwise.
    """

    done: float
    total: float
    run: str
    round: int | None
    stage: str
    message: str
    elapsed_s: float
    eta_s: float | None
    event: str = "step"


class Tracker:
    """Work accounting for progress records and the ETA."""

    def __init__(self, total: float) -> None:
        self.total = float(total)
        self.done = 0.0
        self.fresh = 0.0  # work done in this process (resumed work does not count for the rate)
        self.t0 = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def record(self, run: str, rnd: int | None, stage: str, message: str = "",
               partial: float = 0.0, event: str = "step") -> BenchmarkProgress:
        done = min(self.total, self.done + partial)
        fresh = self.fresh + partial
        el = self.elapsed()
        eta = (self.total - done) * el / fresh if fresh > 0 and el > 5 else None
        return BenchmarkProgress(done, self.total, run, rnd, stage, message, el, eta, event)

    def advance(self, work: float, *, fresh: bool = True) -> None:
        self.done += work
        if fresh:
            self.fresh += work


def _fmt_time(s: float | None) -> str:
    if s is None or not math.isfinite(s):
        return "--:--"
    s = int(round(s))
    h, rest = divmod(s, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60:02d}:{rest % 60:02d}"


class TextProgress:
    """A plain-text progress bar for :class:`BenchmarkProgress` records (no dependencies).

    On a terminal the bar is redrawn in place; otherwise (a log file) a line is written at most
    every ``interval_s`` seconds. Finished rounds and notes always get a line of their own.
    """

    def __init__(self, stream: TextIO | None = None, *, width: int = 24,
                 interval_s: float | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.width = width
        self.interval = interval_s if interval_s is not None else (0.25 if self.tty else 30.0)
        self._last = -math.inf
        self._drawn = False

    def _bar(self, p: BenchmarkProgress) -> str:
        frac = 0.0 if p.total <= 0 else min(1.0, p.done / p.total)
        fill = int(round(frac * self.width))
        where = f"{p.run} r{p.round}" if p.round is not None else p.run
        return (f"[{'#' * fill}{'.' * (self.width - fill)}] {100 * frac:5.1f}%  "
                f"{_fmt_time(p.elapsed_s)} elapsed, ~{_fmt_time(p.eta_s)} left | {where} "
                f"{p.stage}{': ' + p.message if p.message else ''}")

    def __call__(self, p: BenchmarkProgress) -> None:
        now = time.monotonic()
        if p.event in ("round", "note"):
            self._clear()
            where = f"{p.run} round {p.round}" if p.round is not None else p.run
            self.stream.write(f"{where}: {p.message}\n")
            self.stream.flush()
            self._last = -math.inf
        if now - self._last < self.interval and p.event == "step":
            return
        self._last = now
        line = self._bar(p)
        if self.tty:
            cols = 120
            self.stream.write("\r" + line[:cols].ljust(cols))
            self._drawn = True
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def _clear(self) -> None:
        if self.tty and self._drawn:
            self.stream.write("\r" + " " * 120 + "\r")
            self._drawn = False

    def close(self) -> None:
        self._clear()
        self.stream.flush()
