"""The queue of next suggestions: the pool's candidates ranked once, served until a new model.

A :class:`RankedQueue` is what one complete scoring pass ranked (:func:`rank_pool`), with the
key of the inputs it was ranked under. Suggesting walks it: an image that left the pool
(submitted whole, skipped) or a window mostly reviewed since is passed over, so after a
submission with no new model the next suggestion is the next-ranked candidate, at once and
without re-scoring. When a new model arrives the queue is *stale*: it still serves (the
suggestion says so) while a background pass builds the next one.

Scoring is bounded: a strategy whose own cost (:meth:`QueryStrategy.estimate_cost`) on the
whole pool exceeds the budget ranks only the most uncertain candidates (mean entropy of the
prediction, which the pool's scoring computed anyway); the others follow, by entropy.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from ..strategies import Candidate, Pick, QueryStrategy, StrategyContext
from ..strategies.aggregation import ONE_PASS_MAPS
from ..strategies.reasons import format_number
from ..strategies.regions import reviewed_fraction

MAX_REVIEWED = 0.5  # a window with this fraction of its pixels reviewed is not suggested
MIN_PREFILTERED = 8  # a pre-filter keeps at least this many candidates


@dataclass
class RankedQueue:
    """One ranking of the pool, best first.

    ``key`` is :meth:`ScoringInputs.key` of the pass that ranked it; ``images`` the pool
    images it covered; ``stale`` is set when its predictions were dropped (a new model, new
    inference settings) or it was a stop-gap (random order while training held the pool).
    """

    key: tuple
    picks: list[Pick]
    strategy_name: str
    model_version: str | None
    images: frozenset[int]
    regions: bool
    region_size: int
    stale: bool = False
    note: str = ""
    scored: list[Pick] = field(default_factory=list)  # the picks the strategy itself scored

    def open_picks(self, pool: set[int], reviewed: Callable[[int], np.ndarray | None],
                   n: int = 1, image_id: str | None = None) -> list[Pick]:
        """The first ``n`` picks still open, in queue order: their image in ``pool`` (and
        ``image_id`` when given), their window not mostly reviewed since it was ranked
        (``reviewed(image_id)`` gives an image's reviewed mask)."""
        masks: dict[int, np.ndarray | None] = {}
        out: list[Pick] = []
        for p in self.picks:
            i = int(p.image_id)
            if i not in pool or (image_id is not None and p.image_id != image_id):
                continue
            if p.box is not None:
                if i not in masks:
                    masks[i] = reviewed(i)
                if masks[i] is not None and reviewed_fraction(masks[i], p.box) >= MAX_REVIEWED:
                    continue
            out.append(p)
            if len(out) == n:
                break
        return out

    def next_picks(self, pool: set[int], boxes_per_image: int,
                   reviewed: Callable[[int], np.ndarray | None]) -> list[Pick]:
        """The first open pick and up to ``boxes_per_image - 1`` more open windows of the
        same image, in queue order (see :meth:`open_picks`)."""
        first = self.open_picks(pool, reviewed, 1)
        if not first or first[0].box is None or boxes_per_image <= 1:
            return first
        more = [p for p in self.open_picks(pool, reviewed, boxes_per_image, first[0].image_id)
                if p.key != first[0].key]
        return first + more[:boxes_per_image - 1]


def mean_entropy(c: Candidate) -> float:
    """The cheap pre-score: mean predictive entropy of a candidate's probabilities (kept in
    ``c.scores`` for a large image's windows, which keep no probabilities)."""
    if "mean_entropy" in c.scores:
        return float(c.scores["mean_entropy"])
    return float(np.mean(ONE_PASS_MAPS["entropy"](np.asarray(c.probs))))


def affordable(strategy: QueryStrategy, n: int, pixels: int, budget_s: float) -> int:
    """How many of ``n`` candidates the strategy scores within ``budget_s`` (all of them when
    it fits; never fewer than :data:`MIN_PREFILTERED`)."""
    if n <= MIN_PREFILTERED or strategy.estimate_cost(n, pixels_per_image=pixels) <= budget_s:
        return n
    lo, hi = MIN_PREFILTERED, n  # estimate_cost grows with the count: bisect
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if strategy.estimate_cost(mid, pixels_per_image=pixels) <= budget_s:
            lo = mid
        else:
            hi = mid - 1
    return lo


def rank_pool(strategy: QueryStrategy, cands: Sequence[Candidate], ctx: StrategyContext,
              budget_s: float) -> tuple[list[Pick], list[Pick], str]:
    """Rank the pool's candidates with the strategy, pre-filtered to the budget.

    Returns ``(picks in queue order, the picks the strategy scored, a note)``: the note says
    how many the pre-filter kept ("" when the strategy ranked them all). The windows of a
    large image that kept only their scores (:func:`~..strategies.candidates.stream_candidates`)
    while the strategy needs their arrays follow the ranked ones, by mean entropy.
    """
    cands = list(cands)
    req = strategy.requirements
    if req["images"] or req["gradients"]:
        bare = [c for c in cands if c.probs is None and "mean_entropy" in c.scores]
        if bare:
            keep = [c for c in cands if not (c.probs is None and "mean_entropy" in c.scores)]
            picks, scored, note = rank_pool(strategy, keep, ctx, budget_s)
            return picks + _entropy_tail(bare, len(picks)), scored, note
    if not cands:
        return [], [], ""
    pixels = int(np.mean([_pixels(c) for c in cands]))
    m = affordable(strategy, len(cands), pixels, budget_s)
    if m >= len(cands) or any(c.probs is None and "mean_entropy" not in c.scores
                              for c in cands):
        picks = strategy.rank(cands, ctx)
        return picks, picks, ""
    pre = np.array([mean_entropy(c) for c in cands])
    order = np.argsort(-pre, kind="stable")
    kept = [cands[i] for i in order[:m]]
    noun = "windows" if any(c.box is not None for c in cands) else "images"
    note = (f"{strategy.name} ranked the {m} most uncertain of {len(cands)} {noun} (mean "
            f"entropy) to stay within ~{budget_s:.0f} s")
    scored = strategy.rank(kept, ctx)
    return scored + _entropy_tail([cands[i] for i in order[m:]], m, m, noun), scored, note


def _entropy_tail(cands: Sequence[Candidate], start: int, m: int | None = None,
                  noun: str = "windows") -> list[Pick]:
    """Candidates the strategy did not rank, by mean entropy, ranks from ``start + 1``."""
    pre = np.array([mean_entropy(c) for c in cands])
    after = f"after the {m} most uncertain {noun}" if m is not None else \
        "not kept for the strategy (large image)"
    return [Pick(key=cands[i].key, image_id=cands[i].image_id, box=cands[i].box,
                 score=float(pre[i]), rank=start + r,
                 reason=f"{after}: mean entropy {format_number(pre[i])}")
            for r, i in enumerate(np.argsort(-pre, kind="stable"), start=1)]


def _pixels(c: Candidate) -> int:
    if c.box is not None:
        y0, x0, y1, x1 = c.box
        return (y1 - y0) * (x1 - x0)
    if c.probs is not None:
        return int(np.prod(np.shape(c.probs)[1:]))
    return 256 * 256
