"""Scoring the pool and picking suggestions: candidates per image (or per window) kept until
the model or the strategy changes, the best score of each image saved to the project, and the
picks recorded in the query history."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from ..config import InferenceConfig
from ..inference import Prediction
from ..model import UNet
from ..project import Project
from ..strategies import (
    Candidate,
    Pick,
    QueryStrategy,
    StrategyContext,
    build_candidates,
    get_strategy,
)
from ..strategies.regions import region_boxes, region_key, reviewed_fraction
from ._pool import labelled_examples, pool_ids
from ._records import ScoreProgress, Suggestion

MAX_REVIEWED = 0.5  # a window with this fraction of its pixels reviewed is not suggested


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

    def key(self, regions: bool, region_size: int) -> tuple:
        """What candidates built with these inputs depend on."""
        return (self.model_version, self.strategy_name,
                repr(sorted(self.strategy_options.items())), regions, region_size,
                len(self.committee))


class PoolScorer:
    """The pool's candidates and the suggestions picked from them.

    ``stop`` is the session's stop flag (a scoring pass ends within one image);
    ``on_saved`` is called after the pool's scores were saved to the project.
    """

    def __init__(self, project: Project, *, stop: threading.Event,
                 on_saved: Callable[[], None]) -> None:
        self.project = project
        self._stop = stop
        self._on_saved = on_saved
        self._candidates: dict[int, list[Candidate]] = {}
        self._key: tuple | None = None

    def forget(self, image_id: int | None = None) -> None:
        """Drop an image's candidates (it changed), or all of them (None)."""
        if image_id is None:
            self._candidates.clear()
        else:
            self._candidates.pop(image_id, None)

    def up_to_date(self, inputs: ScoringInputs, regions: bool, region_size: int) -> bool:
        """Whether every pool image has candidates built with these inputs."""
        return inputs.key(regions, region_size) == self._key and \
            all(i in self._candidates for i in pool_ids(self.project))

    def score(self, inputs: ScoringInputs, regions: bool, region_size: int
              ) -> Generator[ScoreProgress, None, int]:
        """Build the missing candidates (see :meth:`ActiveLearningSession.score_pool`)."""
        key = inputs.key(regions, region_size)
        if key != self._key:
            self._candidates.clear()
            self._key = key
        todo = [i for i in pool_ids(self.project) if i not in self._candidates]
        t0 = time.perf_counter()
        blind = not inputs.strategy.requirements["probs"]
        if inputs.model is None or blind:
            # before the first model there is nothing to be unsure about: random order; a
            # strategy that ignores the prediction (random) does not need the pool predicted
            for i in todo:
                self._candidates[i] = self._blind_candidates(i, regions, region_size)
            note = ("No model yet: suggestions are random until the first training."
                    if inputs.model is None else
                    f"{inputs.strategy_name!r} does not look at predictions: the pool "
                    "was not predicted.")
            yield ScoreProgress(len(todo), len(todo), None, time.perf_counter() - t0, note)
            return len(todo)
        total = len(todo)
        for n, image_id in enumerate(todo, 1):
            if self._stop.is_set():
                yield ScoreProgress(n - 1, total, None, time.perf_counter() - t0, "Cancelled.")
                return n - 1
            self._candidates[image_id] = self._build_candidates(inputs, image_id, regions,
                                                                region_size)
            yield ScoreProgress(n, total, image_id, time.perf_counter() - t0)
        self._save_scores(inputs)
        return total

    def suggest(self, inputs: ScoringInputs, k: int, *, regions: bool,
                boxes_per_image: int) -> list[Suggestion]:
        """Pick from the pool's candidates and record the picks (see
        :meth:`ActiveLearningSession.suggest`; the pool is scored already)."""
        pool = set(pool_ids(self.project))
        cands = [c for i, cs in self._candidates.items() if i in pool for c in cs]
        if not cands:
            return []
        if inputs.model is None:
            strategy = get_strategy("random", seed=inputs.seed)
            ctx = StrategyContext(round=len(self.project.rounds()))
            name = "random (no model yet)"
        else:
            strategy, ctx, name = inputs.strategy, self._context(inputs), inputs.strategy_name
        picks: list[Pick] = strategy.select(cands, 1 if boxes_per_image > 1 else k, ctx)
        if regions and boxes_per_image > 1 and picks:
            same = [c for c in cands if c.image_id == picks[0].image_id]
            more = strategy.select(same, min(boxes_per_image, len(same)), ctx)
            # the overall best window first, then the image's others in the strategy's order
            picks = [picks[0]] + [p for p in more if p.key != picks[0].key]
            picks = picks[:boxes_per_image]
        out = []
        for p in picks:
            image_id = int(p.image_id)
            sid = None
            if not self.project.read_only:
                sid = self.project.record_suggestion(image_id, name, inputs.model_version,
                                                     float(p.score), p.reason, box=p.box)
            out.append(Suggestion(image_id, p.box, float(p.score), p.reason, name, p.rank, sid,
                                  inputs.model_version))
        return out

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
                          labels: np.ndarray | None = None) -> list[Candidate]:
        pred = None if labelled else inputs.predict(image_id)
        cands = build_candidates(
            inputs.strategy, str(image_id), inputs.prepared(image_id), inputs.model,
            committee=inputs.committee or None, prediction=pred,
            inference_config=inputs.inference_config,
            region_size=region_size if regions else None, labelled=labelled, labels=labels)
        if regions and not labelled:
            reviewed = self.project.reviewed_mask(image_id)
            # a window mostly reviewed already would teach little: only the others compete
            cands = [c for c in cands if reviewed_fraction(reviewed, c.box) < MAX_REVIEWED]
        return cands

    def _labelled_candidates(self, inputs: ScoringInputs) -> list[Candidate]:
        req = inputs.strategy.requirements
        if not (req["labelled_set"] or req["images"]) or inputs.model is None:
            return []
        out = []
        for image_id, lab, _ in labelled_examples(self.project):
            out += self._build_candidates(inputs, image_id, False, 0, labelled=True, labels=lab)
        return out

    def _context(self, inputs: ScoringInputs) -> StrategyContext:
        return StrategyContext(round=len(self.project.rounds()),
                               labelled=self._labelled_candidates(inputs),
                               stop=self._stop.is_set)

    def _save_scores(self, inputs: ScoringInputs) -> None:
        cands = [c for cs in self._candidates.values() for c in cs]
        if not cands or self.project.read_only or inputs.model is None:
            return
        ctx = self._context(inputs)
        if ctx.rng is None:  # score() outside select() still needs the rng select() would set
            ctx = replace(ctx, rng=np.random.default_rng([inputs.strategy.seed,
                                                          max(ctx.round, 0)]))
        scores = inputs.strategy.score(cands, ctx)
        best: dict[int, float] = {}
        for c, s in zip(cands, scores, strict=True):
            i = int(c.image_id)
            best[i] = max(best.get(i, -np.inf), float(s))
        self.project.save_scores([(i, inputs.strategy_name, inputs.model_version, s, None)
                                  for i, s in best.items()])
        self._on_saved()
