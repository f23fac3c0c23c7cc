"""Uncertainty sampling: aggregate one per-pixel uncertainty map per candidate.

One pass (``entropy``, ``margin``, ``least_confidence``): computed from the mean probabilities
if the candidate lacks the map. MC dropout (``bald``, ``variance``; CEAL, Gorriz et al. 2017;
BALD, Houlsby et al. 2011 / Gal et al. 2017) and test-time augmentation (``tta``) need the
session to predict with samples (see :attr:`QueryStrategy.requirements`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .base import QueryStrategy
from .datatypes import Candidate, StrategyContext
from .registry import register

__all__ = [
    "BaldStrategy",
    "EntropyStrategy",
    "LeastConfidenceStrategy",
    "MarginStrategy",
    "PowerEntropyStrategy",
    "RandomStrategy",
    "TTAStrategy",
    "VarianceStrategy",
]


@register
class RandomStrategy(QueryStrategy):
    """Uniformly random picks: the baseline every other strategy must beat."""

    name = "random"
    description = ("Random images or regions: the baseline. Needs nothing but a prediction, "
                   "reproducible for a seed and round.")

    needs_prediction = False  # the pool is not even predicted (image mode)

    def __init__(self, *, diversity: str = "none", **options) -> None:
        super().__init__(diversity=diversity, **options)

    def score(self, candidates: Sequence[Candidate], context: StrategyContext) -> np.ndarray:
        assert context.rng is not None  # select() always sets one
        return context.rng.random(len(candidates))  # (n,) in [0, 1)

    def _reason(self, position, n, noun, raw, cost):
        return f"random pick among {n} {noun} (seed {self.seed})"


@register
class EntropyStrategy(QueryStrategy):
    name = "entropy"
    map_name = "entropy"
    description = ("Predictive entropy of the mean prediction (one pass). Cheap and strong "
                   "when the model is calibrated; blind to what the model does not know that "
                   "it does not know.")


@register
class PowerEntropyStrategy(EntropyStrategy):
    """Entropy, the picks drawn with probability proportional to the score (power sampling)."""

    name = "power_entropy"
    description = ("Predictive entropy (one pass), but the picks are drawn at random with "
                   "probability proportional to it instead of taking the top ones (power "
                   "sampling, Kirsch et al. 2023): spreads a batch over the kinds of error "
                   "and hedges against a poor early model.")

    def __init__(self, *, diversity: str = "power", **options) -> None:
        super().__init__(diversity=diversity, **options)


@register
class MixedEntropyStrategy(EntropyStrategy):
    """Entropy for half the picks, uniform random draws for the other half."""

    name = "mixed_entropy"
    description = ("Every other pick by predictive entropy (one pass), the others drawn at "
                   "random from the rest of the pool: the uncertain windows are asked for, "
                   "while what is labelled stays representative of the pool (uncertainty "
                   "alone piles onto one kind of window).")

    def __init__(self, *, random_fraction: float = 0.5, **options) -> None:
        super().__init__(random_fraction=random_fraction, **options)


@register
class MarginStrategy(QueryStrategy):
    name = "margin"
    map_name = "margin"
    description = ("1 - (p_top1 - p_top2), one pass: pixels where the two likeliest classes are "
                   "close. Focuses on class confusions in multi-class tasks.")


@register
class LeastConfidenceStrategy(QueryStrategy):
    name = "least_confidence"
    map_name = "least_confidence"
    description = "1 - max class probability, one pass."


@register
class BaldStrategy(QueryStrategy):
    name = "bald"
    map_name = "bald"
    needs_mc_samples = True
    description = ("BALD mutual information over MC-dropout samples: where the samples are "
                   "each confident but disagree (model uncertainty, not ambiguity). Needs T "
                   "MC-dropout passes.")


@register
class VarianceStrategy(QueryStrategy):
    name = "variance"
    map_name = "variance"
    needs_mc_samples = True
    description = ("Variance of the class probabilities over MC-dropout samples (CEAL, Gorriz et "
                   "al. 2017). Needs T MC-dropout passes.")


@register
class TTAStrategy(QueryStrategy):
    name = "tta"
    map_name = "tta"
    needs_tta = True
    description = ("Disagreement between the predictions of the 8 flips/rotations of an image "
                   "(mean KL to their mean). Needs 8 passes; catches orientation-dependent "
                   "errors.")
