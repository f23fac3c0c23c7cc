"""Query strategies: which image (or region) should the biologist annotate next?

One interface (:class:`QueryStrategy`: override ``score``, declare ``needs_*``), one registry::

    >>> from napari_activeseg.core.strategies import available_strategies, get_strategy
    >>> strategy = get_strategy("bald", aggregation="topk", topk_fraction=0.1)
    >>> strategy.requirements["mode"]
    'mc'
    >>> picks = strategy.select(candidates, k=2)                     # doctest: +SKIP
    >>> picks[0].reason                                              # doctest: +SKIP
    'highest top-10% mean BALD (0.41) among 37 images'

Registered names: ``random``, ``entropy``, ``margin``, ``least_confidence``, ``bald``,
``variance``, ``tta``, ``ensemble``, ``coreset``, ``badge``, ``alges``, ``suggestive``,
``task_similarity``, ``objects``. Candidates for a strategy are built by
:func:`build_candidates` (or by hand, see :class:`Candidate`); regions by
:func:`region_candidates`; CEAL pseudo-labels live in :mod:`.pseudo`.

Inside the package, from the bottom up: :mod:`.datatypes` (Candidate, Pick, StrategyContext);
:mod:`.reasons` (the wording of the reasons), :mod:`.diversity` (distances, k-center, k-means++,
max-cover on plain arrays), :mod:`.embeddings` (descriptors and gradient embeddings);
:mod:`.aggregation` (map -> score), :mod:`.batch` (diverse batches), :mod:`.regions`
(windows and their correction cost); :mod:`.base` (:class:`QueryStrategy`);
:mod:`.registry` (name -> class); the strategies (:mod:`.heuristics`, :mod:`.ensemble`,
:mod:`.representative`, :mod:`.gradient`, :mod:`.task_similarity`) and :mod:`.pseudo`; on top
:mod:`.candidates` (image + model -> candidates). The layers contract in pyproject.toml keeps
it that way.
"""

from __future__ import annotations

from . import ensemble, gradient, heuristics, objects, representative, task_similarity  # noqa: F401
from .aggregation import AGGREGATIONS, aggregate, restriction_mask
from .base import QueryStrategy
from .batch import DIVERSITIES
from .candidates import build_candidates, onehot_probs
from .datatypes import Candidate, Pick, StrategyContext
from .embeddings import gradient_embedding, image_descriptor
from .ensemble import bootstrap_indices
from .pseudo import (
    PseudoLabelConfig,
    PseudoLabels,
    ceal_threshold,
    make_pseudo_labels,
    pseudo_labels,
    pseudo_training_set,
)
from .regions import correction_cost, region_boxes, region_candidates, region_key
from .registry import (
    available_strategies,
    describe_strategies,
    get_strategy,
    register,
    strategy_from_config,
)
from .task_similarity import estimate_cost

__all__ = [
    "AGGREGATIONS",
    "DIVERSITIES",
    "Candidate",
    "Pick",
    "PseudoLabelConfig",
    "PseudoLabels",
    "QueryStrategy",
    "StrategyContext",
    "aggregate",
    "available_strategies",
    "bootstrap_indices",
    "build_candidates",
    "ceal_threshold",
    "correction_cost",
    "describe_strategies",
    "estimate_cost",
    "get_strategy",
    "gradient_embedding",
    "image_descriptor",
    "make_pseudo_labels",
    "onehot_probs",
    "pseudo_labels",
    "pseudo_training_set",
    "region_boxes",
    "region_candidates",
    "region_key",
    "register",
    "restriction_mask",
    "strategy_from_config",
]
