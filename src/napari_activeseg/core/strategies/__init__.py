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
``task_similarity``. Candidates for a strategy are built by :func:`build_candidates` (or by
hand, see :class:`Candidate`); regions by :func:`region_candidates`; CEAL pseudo-labels live in
:mod:`.pseudo`.
"""

from __future__ import annotations

from . import ensemble, gradient, heuristics, representative, task_similarity  # noqa: F401
from .base import (
    AGGREGATIONS,
    DIVERSITIES,
    Candidate,
    Pick,
    QueryStrategy,
    StrategyContext,
    aggregate,
    restriction_mask,
)
from .candidates import build_candidates, onehot_probs
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
