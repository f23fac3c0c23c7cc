"""The values a query strategy takes and returns: :class:`Candidate` (an image or a window of
one, with what the session computed for it), :class:`StrategyContext` (the round, the random
generator, the labelled set, the cost model, a stop flag) and :class:`Pick` (one suggestion
with its reason). Plain dataclasses that every other module of the package builds on.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

__all__ = ["Box", "Candidate", "Pick", "StrategyContext"]

#: A window inside an image: ``(y0, x0, y1, x1)``, half-open.
Box = tuple[int, int, int, int]


@dataclass(eq=False)
class Candidate:
    """One thing the annotator could be asked to label: an image, or a window of one.

    Attributes
    ----------
    key : str
        Unique among the candidates of one call: the image id, or
        ``f"{image_id}@{y0},{x0},{y1},{x1}"`` for a region (:func:`.regions.region_key`).
    image_id : str
    box : (y0, x0, y1, x1) tuple of int, optional
        The window inside the image (half-open); None for a whole image.
    probs : (K, H, W) float ndarray, optional
        Mean class probabilities, cropped to ``box`` for a region.
    maps : dict of str -> (H, W) float ndarray
        Uncertainty maps (names of :data:`core.uncertainty.MAP_NAMES`, ``"tta"``,
        ``"ensemble"``, ``"grad_norm"``), cropped like ``probs``.
    features : (D,) float ndarray, optional
        Image descriptor (pooled bottleneck features).
    embedding : (E,) float ndarray, optional
        Gradient embedding of the last layer (BADGE), ``E = K * width``.
    image : (C, H, W) float32 ndarray, optional
        The normalised image (only for strategies with ``needs_images``).
    labelled : bool
        Already labelled: used by strategies that need the labelled set, never picked.
    scores : dict of str -> float
        What was computed from the arrays while they existed, standing in for them: a
        window of a large image scored tile by tile keeps only ``scores[map_name]`` (its
        aggregated map, :meth:`.base.QueryStrategy.map_score`) and ``scores["cost"]`` (its
        correction cost).
    """

    key: str
    image_id: str
    box: Box | None = None
    probs: np.ndarray | None = None
    maps: dict[str, np.ndarray] = field(default_factory=dict)
    features: np.ndarray | None = None
    embedding: np.ndarray | None = None
    image: np.ndarray | None = None
    labelled: bool = False
    scores: dict[str, float] = field(default_factory=dict)

    def __repr__(self) -> str:  # arrays would flood a log line
        parts = [f"key={self.key!r}"]
        if self.box is not None:
            parts.append(f"box={self.box}")
        if self.probs is not None:
            parts.append(f"probs={self.probs.shape}")
        if self.maps:
            parts.append(f"maps={sorted(self.maps)}")
        for name in ("features", "embedding", "image"):
            v = getattr(self, name)
            if v is not None:
                parts.append(f"{name}={np.shape(v)}")
        if self.scores:
            parts.append(f"scores={sorted(self.scores)}")
        if self.labelled:
            parts.append("labelled")
        return f"Candidate({', '.join(parts)})"


@dataclass(frozen=True)
class Pick:
    """One suggestion: what to annotate, its score, its place in the batch, and why.

    ``score`` is the value the ranking used (divided by the correction cost for cost-aware
    strategies); ``rank`` is 1 for the first pick of the batch.
    """

    key: str
    image_id: str
    box: Box | None
    score: float
    rank: int
    reason: str


@dataclass
class StrategyContext:
    """What a strategy may need besides the candidates.

    Attributes
    ----------
    round : int
        Active-learning round (0 = first query); seeds the random strategies.
    rng : numpy Generator, optional
        Overrides the strategy's own ``default_rng([seed, round])``.
    labelled : sequence of Candidate
        Labelled items (besides those passed with ``labelled=True``); only read by strategies
        with ``needs_labelled_set``.
    cost : callable Candidate -> float, optional
        Correction-cost estimate for cost-aware ranking (default
        :func:`.regions.correction_cost` of the candidate's probabilities).
    stop : callable -> bool, optional
        Polled by expensive strategies (task_similarity) between steps; when it returns True
        they raise :class:`InterruptedError`.
    """

    round: int = 0
    rng: np.random.Generator | None = None
    labelled: Sequence[Candidate] = ()
    cost: Callable[[Candidate], float] | None = None
    stop: Callable[[], bool] | None = None
