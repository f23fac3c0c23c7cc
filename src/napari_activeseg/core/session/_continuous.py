"""Continuous training: rounds that run by themselves while the user annotates.

:class:`ContinuousTrainer` watches a session's submissions. Whenever there is something new to
learn from (the first labels, or submissions since the last round began) it runs a round
(warm start from the current model, the session's train config as its budget) on a snapshot of
the labelled set -- a submission made meanwhile waits for the next round boundary -- and
publishes the round's model only when its Dice on the held-back images is at least the
current model's on the same images (:meth:`ActiveLearningSession.train` with
``publish_if_better``); otherwise the last good model stays and a note says so. It keeps the
time of every submission, so each round's record says how long its submissions waited for a
published model that learnt from them (``model_lag_s``).

The dock runs one :meth:`~ContinuousTrainer.run_round` per job (between rounds the session is
free to score the pool); a script runs the whole loop, :meth:`~ContinuousTrainer.run`, in a
thread. :meth:`~ContinuousTrainer.pause`, :meth:`~ContinuousTrainer.resume` and
:meth:`~ContinuousTrainer.stop` may be called from any thread.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, field

from ..config import TrainConfig
from ..training import TrainProgress
from ._records import RoundSummary
from ._session import ActiveLearningSession

__all__ = ["ContinuousStatus", "ContinuousTrainer", "RoundRecord"]


@dataclass(frozen=True)
class ContinuousStatus:
    """What the continuous trainer is doing: ``state`` is "training", "idle", "paused" or
    "stopped"; ``round`` the rounds started so far (the running one while training),
    ``n_images`` the labelled images of the running round, ``eta_s`` its seconds left."""

    state: str
    round: int
    n_images: int = 0
    eta_s: float | None = None
    waiting_for_labels: bool = False

    @property
    def text(self) -> str:
        """One line for the GUI."""
        if self.state == "training":
            eta = "…" if self.eta_s is None else f"{self.eta_s:.0f} s"
            return f"training round {self.round} on {self.n_images} images, ETA {eta}"
        if self.state == "idle":
            return "idle: waiting for the first labels" if self.waiting_for_labels else \
                "idle: nothing new to learn"
        return self.state


@dataclass
class RoundRecord:
    """One continuous round: its summary (None: cancelled before a step), whether its model
    was published, when it ran (the trainer's clock), its note and ``model_lag_s``: for each
    submission it was the first published model to learn from, the seconds from that
    submission to the publication (empty when nothing was published)."""

    round: int
    summary: RoundSummary | None
    published: bool
    started: float
    ended: float
    note: str
    model_lag_s: list[float] = field(default_factory=list)


class ContinuousTrainer:
    """Trains a session in rounds by itself (see the module docstring).

    Parameters
    ----------
    session : ActiveLearningSession
    train_config : TrainConfig, optional
        Each round's budget; default: the session's train config at the round's start.
    poll_s : float
        How often the idle loop of :meth:`run` yields its status (and notices a stop).
    clock : callable
        Wall-clock seconds (``time.time``); a test gives its own.
    """

    def __init__(self, session: ActiveLearningSession, *, train_config: TrainConfig | None = None,
                 poll_s: float = 0.25, clock: Callable[[], float] = time.time) -> None:
        self.session = session
        self.train_config = train_config
        self.poll_s = float(poll_s)
        self._clock = clock
        self._cond = threading.Condition()
        self._paused = False
        self._stopped = False
        self._training = False
        self._round = 0
        self._n_images = 0
        self._eta: float | None = None
        # submissions since the last round began (persisted count: a reopened project with
        # submissions after its last round has something new), and those no published
        # model learnt from yet, with their times
        self._fresh = session.submissions_since_train
        self._unpublished: list[tuple[int, float]] = []
        self.rounds: list[RoundRecord] = []
        self.notes: list[str] = []
        session.image_submitted.connect(self._on_submitted)

    # ------------------------------------------------------------------ state
    def _on_submitted(self, image_id: int) -> None:
        with self._cond:
            self._unpublished.append((int(image_id), self._clock()))
            self._fresh += 1
            self._cond.notify_all()

    def _due_locked(self) -> bool:
        s = self.session
        new = self._fresh > 0 or (s.model is None and s.n_labelled > 0)
        return new and not (self._paused or self._stopped or self._training
                            or s.job_running)

    @property
    def due(self) -> bool:
        """Whether a round would start now: something new to learn from, not paused or
        stopped, and no training or scoring job holding the session."""
        with self._cond:
            return self._due_locked()

    @property
    def paused(self) -> bool:
        return self._paused

    @property
    def stopped(self) -> bool:
        return self._stopped

    @property
    def status(self) -> ContinuousStatus:
        with self._cond:
            if self._stopped:
                state = "stopped"
            elif self._training:
                state = "training"
            else:
                state = "paused" if self._paused else "idle"
            return ContinuousStatus(state, self._round, self._n_images, self._eta,
                                    waiting_for_labels=self.session.n_labelled == 0)

    @property
    def model_lag_s(self) -> list[float]:
        """Every submission's wait for the first published model trained on it, so far."""
        return [lag for r in self.rounds for lag in r.model_lag_s]

    def pause(self) -> None:
        """No new round until :meth:`resume`; a running round stops within one step (its
        submissions stay new: the round after the pause learns from them)."""
        with self._cond:
            self._paused = True
            training = self._training
        if training:
            self.session.request_stop()

    def resume(self) -> None:
        with self._cond:
            self._paused = False
            self._cond.notify_all()

    def stop(self) -> None:
        """End for good: a running round stops within one step, :meth:`run` returns, and the
        trainer stops listening to the session."""
        with self._cond:
            self._stopped = True
            training = self._training
            self._cond.notify_all()
        if training:
            self.session.request_stop()
        try:
            self.session.image_submitted.disconnect(self._on_submitted)
        except (ValueError, RuntimeError):  # already disconnected
            pass

    # ------------------------------------------------------------------ rounds
    def run_round(self) -> Generator[TrainProgress, None, RoundRecord | None]:
        """Run one round if one is :attr:`due` (else return None at once): yields its
        progress records, returns its :class:`RoundRecord` (also kept in :attr:`rounds`)."""
        with self._cond:
            if not self._due_locked():
                return None
            self._training = True
            self._round += 1
            n = self._round
            snapshot = list(self._unpublished)  # what this round is sure to learn from
            self._fresh = 0
            self._n_images, self._eta = self.session.n_labelled, None
            started = self._clock()
        summary = None
        try:
            gen = self.session.train(train_config=self.train_config, publish_if_better=True)
            while True:
                try:
                    rec = next(gen)
                except StopIteration as end:
                    summary = end.value
                    break
                self._eta = rec.eta_s
                yield rec
        except BaseException:
            with self._cond:
                self._training = False
            raise
        return self._finish(n, summary, snapshot, started)

    def _finish(self, n: int, summary: RoundSummary | None, snapshot, started: float
                ) -> RoundRecord:
        ended = self._clock()
        published = summary is not None and summary.saved
        lags: list[float] = []
        with self._cond:
            self._training = False
            if published:
                lags = [round(ended - t, 3) for _, t in snapshot]
                self._unpublished = [s for s in self._unpublished if s not in snapshot]
            elif summary is None or not summary.kept_previous:
                self._fresh += 1  # cancelled: what it was to learn from is still new
            self._cond.notify_all()
        if published:
            note = f"round {n} published {summary.model_version} on " \
                   f"{summary.n_labelled} images"
            if summary.held_back_dice is not None:
                note += f" (held-back Dice {summary.held_back_dice:.3f})"
            else:
                note += "".join(f"; {t}" for t in summary.notes if "held-back" in t.lower())
        elif summary is not None and summary.kept_previous:
            note = f"round {n} kept {summary.model_version}: held-back Dice " \
                   f"{summary.held_back_dice:.2f} < {summary.previous_dice:.2f}"
        else:
            note = f"round {n} cancelled: the last good model is kept"
        record = RoundRecord(n, summary, published, started, ended, note, lags)
        self.rounds.append(record)
        self.notes.append(note)
        return record

    def run(self) -> Generator[TrainProgress | ContinuousStatus, None, list[RoundRecord]]:
        """The loop, until :meth:`stop`: a round whenever one is due, else wait (yielding the
        :attr:`status` every ``poll_s``). Yields the rounds' progress records and the
        status records; returns :attr:`rounds`."""
        while not self._stopped:
            if self.due:
                yield from self.run_round()
                continue
            yield self.status
            with self._cond:
                if not self._stopped and not self._due_locked():
                    self._cond.wait(self.poll_s)
        return self.rounds
