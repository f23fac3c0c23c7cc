"""Scoring the pool and picking suggestions: candidates per image (or per window) kept until
the model or the strategy changes, ranked once into the queue of next suggestions
(:mod:`._queue`), the best score of each image saved to the project, and the picks recorded in
the query history."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..cluster import PortableModel, check_scheduler, map_images
from ..config import InferenceConfig
from ..inference import Prediction
from ..largeimage import Overview
from ..model import UNet
from ..progress import run_to_end
from ..project import Project
from ..strategies import (
    Candidate,
    Pick,
    QueryStrategy,
    StrategyContext,
    build_candidates,
    get_strategy,
)
from ..strategies.candidates import stream_candidates
from ..strategies.regions import region_boxes, region_key, reviewed_fraction
from ._pool import labelled_examples, pool_ids
from ._queue import MAX_REVIEWED, RankedQueue, rank_pool
from ._records import ScoreProgress, Suggestion

STRATEGY_BUDGET_S = 30.0  # a strategy's own scoring of the pool, beyond its predictions
PREDICT_S_PER_PIXEL = 3e-7  # before the first measurement: ~20 ms for 256x256 on 2 cores


@dataclass(frozen=True)
class LargeImages:
    """The images too large to hold (:meth:`.PredictionCache.is_large`): where their lazy
    network input comes from and where their overview goes."""

    is_large: Callable[[int], bool]
    source: Callable[[int], Any]  # image id -> LazyPrepared
    keep_overview: Callable[[int, Overview], None]


@dataclass(frozen=True)
class ScoringInputs:
    """What one scoring or suggestion pass looks with (the session builds it for each call)."""

    strategy: QueryStrategy
    strategy_name: str  # the registry name
    strategy_options: Mapping[str, Any]
    model: UNet | None
    model_version: str | None
    committee: Sequence[UNet]
    inference_config: InferenceConfig
    prepared: Callable[[int], np.ndarray]
    predict: Callable[[int], Prediction | None]
    seed: int  # of the random order before the first model
    #: the images over the project's large_image_pixels: their lazy sources and overviews
    #: (None: every image is prepared and predicted whole)
    large: LargeImages | None = None

    def key(self, regions: bool, region_size: int) -> tuple:
        """What candidates built with these inputs depend on."""
        return (self.model_version, self.strategy_name,
                repr(sorted(self.strategy_options.items())), regions, region_size,
                len(self.committee))


class PoolScorer:
    """The pool's candidates, the queue ranked from them, and the suggestions picked from it.

    ``stop`` is the session's stop flag (a scoring pass ends within one image);
    ``on_saved`` is called after the pool's scores were saved to the project. ``budget_s``
    bounds a strategy's own scoring (:func:`._queue.rank_pool`). The queue is swapped in
    under a small lock of its own, so suggesting never waits for a scoring pass.
    :attr:`scheduler` (the project's ``scheduler`` setting to begin with): a Dask scheduler
    address or client that predicts the images and builds their candidates, one task per
    image (:func:`~..cluster.map_images`); the ranking stays here.
    """

    def __init__(self, project: Project, *, stop: threading.Event,
                 on_saved: Callable[[], None], budget_s: float = STRATEGY_BUDGET_S) -> None:
        self.project = project
        self._stop = stop
        self._on_saved = on_saved
        self.budget_s = float(budget_s)
        self._candidates: dict[int, list[Candidate]] = {}
        self._key: tuple | None = None
        self._queue: RankedQueue | None = None
        self._lock = threading.Lock()
        self._s_per_px = PREDICT_S_PER_PIXEL  # measured on every image scored
        self.scheduler: Any = check_scheduler(project.get_setting("scheduler"))

    def forget(self, image_id: int | None = None) -> None:
        """Drop an image's candidates (it changed), or all of them (None: the predictions
        changed, so the queue still serves but is stale)."""
        if image_id is None:
            self._candidates.clear()
            with self._lock:
                if self._queue is not None:
                    self._queue.stale = True
        else:
            self._candidates.pop(image_id, None)

    def drop_queue(self) -> None:
        """Forget the queue too (the strategy changed, the model was reset)."""
        self.forget()
        with self._lock:
            self._queue = None

    def queue_state(self, inputs: ScoringInputs, regions: bool, region_size: int) -> str:
        """``"fresh"`` (ranked with these inputs and covering the pool), ``"stale"`` (from an
        older model, or missing new images: it serves while a re-score runs) or ``"none"``
        (no queue for this box mode and size)."""
        q = self._queue
        if q is None or (q.regions, q.region_size) != (regions, region_size):
            return "none"
        fresh = not q.stale and q.key == inputs.key(regions, region_size) and \
            set(pool_ids(self.project)) <= q.images
        return "fresh" if fresh else "stale"

    def up_to_date(self, inputs: ScoringInputs, regions: bool, region_size: int) -> bool:
        """Whether the queue is fresh (see :meth:`queue_state`)."""
        return self.queue_state(inputs, regions, region_size) == "fresh"

    def estimate(self, inputs: ScoringInputs, n_images: int, regions: bool,
                 region_size: int) -> tuple[float, str]:
        """Seconds a pass predicting ``n_images`` and ranking the pool takes, and the sentence
        that says so before it runs."""
        pool = pool_ids(self.project)
        if not pool or inputs.model is None:  # random order before the first model: instant
            return 0.0, ""
        h, w = self.project.get_image(pool[0]).shape[:2]
        windows = len(region_boxes((h, w), size=region_size)) if regions else 1
        predict_s = 0.0 if inputs.model is None or not inputs.strategy.requirements["probs"] \
            else n_images * h * w * self._s_per_px
        n, px = len(pool) * windows, (h * w) // windows
        strategy_s = min(inputs.strategy.estimate_cost(n, pixels_per_image=px), self.budget_s)
        total = predict_s + strategy_s
        return total, (f"Scoring {n_images} image(s) with {inputs.strategy_name}: about "
                       f"{total:.0f} s (predicting {predict_s:.0f} s, ranking {n} "
                       f"candidate(s) {strategy_s:.0f} s)")

    def score(self, inputs: ScoringInputs, regions: bool, region_size: int
              ) -> Generator[ScoreProgress, None, int]:
        """Build the missing candidates and rank the pool into a new queue (see
        :meth:`ActiveLearningSession.score_pool`); returns how many images were scored."""
        key = inputs.key(regions, region_size)
        if key != self._key:
            self._candidates.clear()
            self._key = key
        todo = [i for i in pool_ids(self.project) if i not in self._candidates]
        if not todo and self.up_to_date(inputs, regions, region_size):
            return 0
        t0 = time.perf_counter()
        blind = inputs.model is None or not inputs.strategy.requirements["probs"]
        _, plan = self.estimate(inputs, len(todo), regions, region_size)
        if plan:
            yield ScoreProgress(0, len(todo), None, 0.0, plan)
        here = todo
        if not blind and self.scheduler is not None:
            # a large image is scored here, tile by tile: it never travels whole
            here = [i for i in todo if inputs.large is not None and inputs.large.is_large(i)]
            away = [i for i in todo if i not in here]
            n = yield from self._score_on_cluster(inputs, away, regions, region_size, t0)
            if n < len(away):
                return n
        for n, image_id in enumerate(here, 1):
            if self._stop.is_set():
                yield ScoreProgress(n - 1, len(todo), None, time.perf_counter() - t0,
                                    "Cancelled.")
                return n - 1
            t1 = time.perf_counter()
            if blind:
                cands = self._blind_candidates(image_id, regions, region_size)
            elif inputs.large is not None and inputs.large.is_large(image_id):
                cands = yield from self._stream_candidates(
                    inputs, image_id, regions, region_size, False,
                    lambda tp, n=n, i=image_id: ScoreProgress(
                        n - 1, len(todo), i, time.perf_counter() - t0,
                        f"Image {i}: {tp.done} of {tp.total} tiles predicted"))
            else:
                cands = self._build_candidates(inputs, image_id, regions, region_size)
            if cands is None:  # a large image's tiles were stopped
                yield ScoreProgress(n - 1, len(todo), None, time.perf_counter() - t0,
                                    "Cancelled.")
                return n - 1
            self._candidates[image_id] = cands
            if not blind:
                h, w = self.project.get_image(image_id).shape[:2]
                self._s_per_px = 0.5 * self._s_per_px + 0.5 * (time.perf_counter() - t1) / (h * w)
            if not blind or n == len(todo):
                yield ScoreProgress(n, len(todo), image_id, time.perf_counter() - t0)
        try:
            self._rank(inputs, regions, region_size)
        except InterruptedError:  # a strategy's own work (task_similarity's probes) was
            if not self._stop.is_set():  # stopped by request_stop: the queue stays as it was
                raise
            yield ScoreProgress(len(todo), len(todo), None, time.perf_counter() - t0,
                                "Cancelled while ranking: the previous ranking still serves.")
            return len(todo)
        if blind:
            note = ("No model yet: suggestions are random until the first training."
                    if inputs.model is None else
                    f"{inputs.strategy_name!r} does not look at predictions: the pool "
                    "was not predicted.")
            yield ScoreProgress(len(todo), len(todo), None, time.perf_counter() - t0, note)
        return len(todo)

    def _score_on_cluster(self, inputs: ScoringInputs, todo: list[int], regions: bool,
                          region_size: int, t0: float) -> Generator[ScoreProgress, None, int]:
        """The candidates of ``todo``, one task per image on :attr:`scheduler`; they join
        the pool's in ``todo``'s order (so ties rank as they do here); returns how many."""
        task = CandidateTask(inputs.strategy_name, dict(inputs.strategy_options),
                             PortableModel(inputs.model),
                             tuple(PortableModel(m) for m in inputs.committee),
                             inputs.inference_config, region_size if regions else None)
        runs = map_images(image_candidates, ((i, inputs.prepared(i)) for i in todo),
                          scheduler=self.scheduler, key=lambda item: item[0],
                          shared={"task": task})
        arrived: dict[int, list[Candidate]] = {}
        try:
            for (image_id, _), cands in runs:
                arrived[image_id] = self._unreviewed(image_id, cands) if regions else cands
                yield ScoreProgress(len(arrived), len(todo), image_id, time.perf_counter() - t0)
                if self._stop.is_set() and len(arrived) < len(todo):
                    yield ScoreProgress(len(arrived), len(todo), None,
                                        time.perf_counter() - t0, "Cancelled.")
                    break
        finally:
            runs.close()  # cancels what is still pending
            for i in todo:
                if i in arrived:
                    self._candidates[i] = arrived[i]
        return len(arrived)

    def stopgap_queue(self, inputs: ScoringInputs, regions: bool, region_size: int) -> None:
        """A random-order queue of the pool, marked stale, for a first suggestion while
        training holds the session (no prediction needed; the next pass replaces it)."""
        cands = {i: self._blind_candidates(i, regions, region_size)
                 for i in pool_ids(self.project)}
        strategy = get_strategy("random", seed=inputs.seed)
        picks = strategy.rank([c for cs in cands.values() for c in cs],
                              StrategyContext(round=len(self.project.rounds())))
        with self._lock:
            self._queue = RankedQueue(
                inputs.key(regions, region_size), picks, "random (no scores yet)",
                inputs.model_version, frozenset(cands), regions, region_size, stale=True,
                note="picked at random: the pool has no scores yet and training is running")

    def _rank(self, inputs: ScoringInputs, regions: bool, region_size: int) -> None:
        """Rank every pool candidate once (pre-filtered to the budget) into the queue; save
        the best score of each image the strategy scored."""
        pool = set(pool_ids(self.project))
        cands = [c for i, cs in self._candidates.items() if i in pool for c in cs]
        if inputs.model is None:
            strategy = get_strategy("random", seed=inputs.seed)
            ctx = StrategyContext(round=len(self.project.rounds()))
            name = "random (no model yet)"
        else:
            strategy, ctx, name = inputs.strategy, self._context(inputs), inputs.strategy_name
        picks, scored, note = rank_pool(strategy, cands, ctx, self.budget_s)
        with self._lock:
            self._queue = RankedQueue(inputs.key(regions, region_size), picks, name,
                                      inputs.model_version,
                                      frozenset(i for i in self._candidates if i in pool),
                                      regions, region_size, note=note, scored=scored)
        self._save_scores(inputs, scored)

    def suggest(self, inputs: ScoringInputs, k: int, *, regions: bool,
                boxes_per_image: int) -> list[Suggestion]:
        """Pick from the queue (one image, or its boxes) and record the picks (see
        :meth:`ActiveLearningSession.suggest`); ``k > 1`` whole images are a batch the
        strategy selects from the candidates."""
        with self._lock:
            q = self._queue
        if q is None:
            return []
        pool = set(pool_ids(self.project))
        if not regions and inputs.large is not None:  # never shown whole: boxes only
            pool = {i for i in pool if not inputs.large.is_large(i)}
        stale = q.stale or q.key != inputs.key(regions, q.region_size)
        if k > 1 and boxes_per_image == 1 and inputs.model is not None and not stale:
            # a batch: the strategy's own batch selection (diversity), as scripts expect
            cands = [c for i, cs in self._candidates.items() if i in pool for c in cs]
            picks = inputs.strategy.select(cands, k, self._context(inputs)) if cands else []
        elif regions and boxes_per_image > 1:
            picks = q.next_picks(pool, boxes_per_image, self.project.reviewed_mask)
        else:
            picks = q.open_picks(pool, self.project.reviewed_mask, k)
        out = []
        for p in picks:
            image_id = int(p.image_id)
            reason = p.reason + (f" (from {q.model_version or 'no model'}'s ranking; the "
                                 "pool is being re-scored)" if stale else "")
            sid = None
            if not self.project.read_only:
                sid = self.project.record_suggestion(image_id, q.strategy_name, q.model_version,
                                                     float(p.score), reason, box=p.box)
            out.append(Suggestion(image_id, p.box, float(p.score), reason, q.strategy_name,
                                  p.rank, sid, q.model_version))
        return out

    def best_box(self, image_id: int) -> tuple[int, int, int, int] | None:
        """The image's first open window in the queue (see :meth:`ActiveLearningSession.
        best_box`)."""
        with self._lock:
            q = self._queue
        picks = [] if q is None else q.open_picks({image_id}, self.project.reviewed_mask, 1,
                                                  str(image_id))
        return tuple(picks[0].box) if picks and picks[0].box is not None else None

    def upcoming(self, exclude: int | None) -> int | None:
        """The image the queue would suggest after ``exclude`` (to predict it ahead)."""
        with self._lock:
            q = self._queue
        if q is None:
            return None
        pool = set(pool_ids(self.project)) - {exclude}
        picks = q.open_picks(pool, self.project.reviewed_mask, 1)
        return int(picks[0].image_id) if picks else None

    def _blind_candidates(self, image_id: int, regions: bool, region_size: int
                          ) -> list[Candidate]:
        """Candidates without a prediction (no model yet, or a strategy that ignores it):
        the image, or its windows not yet mostly reviewed."""
        if not regions:
            return [Candidate(key=str(image_id), image_id=str(image_id), box=None, probs=None,
                              maps={})]
        shape = self.project.get_image(image_id).shape[:2]
        reviewed = self.project.reviewed_mask(image_id)
        return [Candidate(key=region_key(str(image_id), box), image_id=str(image_id), box=box,
                          probs=None, maps={})
                for box in region_boxes(shape, size=region_size)
                if reviewed_fraction(reviewed, box) < MAX_REVIEWED]

    def _build_candidates(self, inputs: ScoringInputs, image_id: int, regions: bool,
                          region_size: int, labelled: bool = False,
                          labels: np.ndarray | None = None) -> list[Candidate] | None:
        if inputs.large is not None and inputs.large.is_large(image_id):
            return run_to_end(self._stream_candidates(inputs, image_id, regions, region_size,
                                                      labelled))
        pred = None if labelled else inputs.predict(image_id)
        cands = build_candidates(
            inputs.strategy, str(image_id), inputs.prepared(image_id), inputs.model,
            committee=inputs.committee or None, prediction=pred,
            inference_config=inputs.inference_config,
            region_size=region_size if regions else None, labelled=labelled, labels=labels)
        return self._unreviewed(image_id, cands) if regions and not labelled else cands

    def _stream_candidates(
        self, inputs: ScoringInputs, image_id: int, regions: bool, region_size: int,
        labelled: bool, progress: Callable[[Any], ScoreProgress] | None = None,
    ) -> Generator[ScoreProgress, None, list[Candidate] | None]:
        """A large image's candidates, predicted tile by tile (:func:`stream_candidates`):
        only per-window scores and the overview are kept; None when stopped. ``progress``
        turns the tile progress into records to yield (about one a second)."""
        assert inputs.large is not None
        gen = stream_candidates(
            inputs.strategy, str(image_id), inputs.large.source(image_id), inputs.model,
            committee=inputs.committee or None, inference_config=inputs.inference_config,
            region_size=region_size if regions else None, stop=self._stop.is_set)
        shown = 0.0
        while True:
            try:
                tiles = next(gen)
            except StopIteration as end:
                result = end.value
                break
            if progress is not None and time.perf_counter() - shown > 1.0:
                shown = time.perf_counter()
                yield progress(tiles)
        if result is None:
            return None
        cands, overview = result
        inputs.large.keep_overview(image_id, overview)
        for c in cands:
            c.labelled = labelled
        return self._unreviewed(image_id, cands) if regions and not labelled else cands

    def _unreviewed(self, image_id: int, cands: list[Candidate]) -> list[Candidate]:
        """The windows not mostly reviewed already (those would teach little)."""
        reviewed = self.project.reviewed_mask(image_id)
        return [c for c in cands if reviewed_fraction(reviewed, c.box) < MAX_REVIEWED]

    def _labelled_candidates(self, inputs: ScoringInputs) -> list[Candidate]:
        req = inputs.strategy.requirements
        if not (req["labelled_set"] or req["images"]) or inputs.model is None:
            return []
        out = []
        for image_id, lab, _ in labelled_examples(self.project):
            out += self._build_candidates(inputs, image_id, False, 0, labelled=True,
                                          labels=lab) or []
        return out

    def _context(self, inputs: ScoringInputs) -> StrategyContext:
        return StrategyContext(round=len(self.project.rounds()),
                               labelled=self._labelled_candidates(inputs),
                               stop=self._stop.is_set)

    def _save_scores(self, inputs: ScoringInputs, scored: Sequence[Pick]) -> None:
        if not scored or self.project.read_only or inputs.model is None:
            return
        best: dict[int, float] = {}
        for p in scored:
            i = int(p.image_id)
            best[i] = max(best.get(i, -np.inf), float(p.score))
        self.project.save_scores([(i, inputs.strategy_name, inputs.model_version, s, None)
                                  for i, s in best.items()])
        self._on_saved()


@dataclass(frozen=True)
class CandidateTask:
    """What every image's task on a cluster shares (scattered once): the strategy by name,
    the model and committee as weights, the inference settings and the window size."""

    strategy_name: str
    strategy_options: dict[str, Any]
    model: PortableModel
    committee: tuple[PortableModel, ...]
    inference_config: InferenceConfig
    region_size: int | None


def image_candidates(item: tuple[int, np.ndarray], *, task: CandidateTask) -> list[Candidate]:
    """One pool image's candidates, on a worker: ``item`` is ``(image id, prepared image)``.
    The same prediction (mode, maps, seeds) and candidates as :meth:`PoolScorer.score` here."""
    image_id, image = item
    strategy = get_strategy(task.strategy_name, **task.strategy_options)
    return build_candidates(
        strategy, str(image_id), image, task.model.get(),
        committee=[m.get() for m in task.committee] or None,
        inference_config=task.inference_config, region_size=task.region_size)
