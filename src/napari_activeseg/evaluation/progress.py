"""Progress of a benchmark run: the :class:`BenchmarkProgress` records it yields, the work
accounting behind their ETA (:class:`Tracker`), and :class:`BenchmarkBar`, the tqdm bar that
shows them.

Work is counted in "optimiser step equivalents": a U-Net round costs its steps plus
``ROUND_OVERHEAD`` (pool scoring and test prediction); a forest round costs ``RF_ROUND``. Rough on
purpose: they only weigh the ETA.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, TextIO

from tqdm import tqdm

if TYPE_CHECKING:
    from .config import BenchmarkConfig

__all__ = ["RF_ROUND", "ROUND_OVERHEAD", "BenchmarkBar", "BenchmarkProgress", "Tracker",
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
    if kind == "cellpose":
        return n * (cfg.steps + ROUND_OVERHEAD)
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


class BenchmarkBar:
    """Shows :class:`BenchmarkProgress` records as a tqdm bar over the run's total work.

    The bar counts work units (``done``/``total``), with the run's own ETA (from the work done in
    this process, so resumed rounds do not make it optimistic) and where the run is. Finished
    rounds and notes get a line of their own above it. It is redrawn at most every
    ``interval_s`` seconds (0.25 on a terminal, 30 in a log file); :meth:`close` draws its final
    state. Made at the first record, which carries the total.
    """

    #: The bar's layout; ``postfix`` is "~ETA left | run round stage: message".
    FORMAT = "{percentage:5.1f}%|{bar:24}| {n:.0f}/{total:.0f} {elapsed} elapsed{postfix}"

    def __init__(self, stream: TextIO | None = None, *, interval_s: float | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.interval = interval_s if interval_s is not None else (0.25 if self.tty else 30.0)
        self._bar: tqdm | None = None

    def __call__(self, p: BenchmarkProgress) -> None:
        if self._bar is None:
            self._bar = tqdm(total=p.total, file=self.stream, bar_format=self.FORMAT,
                             mininterval=self.interval, miniters=0, dynamic_ncols=self.tty)
        bar = self._bar
        if p.event in ("round", "note"):
            where = f"{p.run} round {p.round}" if p.round is not None else p.run
            bar.write(f"{where}: {p.message}", file=self.stream)
        where = f"{p.run} r{p.round}" if p.round is not None else p.run
        eta = "--:--" if p.eta_s is None else tqdm.format_interval(p.eta_s)
        bar.set_postfix_str(f"~{eta} left | {where} {p.stage}"
                            f"{': ' + p.message if p.message else ''}", refresh=False)
        drawn = bar.last_print_t
        bar.update(p.done - bar.n)  # redraws when interval_s has passed
        if p.event != "step" and bar.last_print_t == drawn:
            bar.refresh()  # a round or note always shows the bar's new state

    def close(self) -> None:
        """Draw the final state and end the bar (again: nothing)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        self.stream.flush()
