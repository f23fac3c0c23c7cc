"""Query by committee: disagreement of models trained on bootstrap resamples of the labelled set.

As in Suggestive Annotation (Yang et al. 2017) and the ensemble baseline of Grüning et al. 2020:
the session trains ``members`` models on :func:`bootstrap_indices` of the labelled images,
predicts each candidate with ``mode="ensemble", maps=("ensemble",)`` and the strategy
aggregates the mean KL divergence of each member to the committee mean.
"""

from __future__ import annotations

import numpy as np

from ..validation import check_positive
from .base import QueryStrategy
from .registry import register

__all__ = ["EnsembleStrategy", "bootstrap_indices"]


def bootstrap_indices(
    n: int, members: int, seed: int = 0, *, replace: bool = True, fraction: float = 1.0,
    include_full: bool = False,
) -> list[np.ndarray]:
    """Training-set indices for each committee member.

    Parameters
    ----------
    n : int
        Number of labelled images.
    members : int
        Committee size (>= 2 for any disagreement).
    seed : int
    replace : bool
        True: bootstrap (``round(fraction * n)`` draws with replacement, Yang et al.);
        False: subsamples without replacement (Grüning et al. used ~80 %).
    fraction : float in (0, 1]
        Size of each resample relative to ``n`` (at least one image).
    include_full : bool
        Make the last member the full labelled set (Grüning et al.'s fourth network).

    Returns
    -------
    list of ``members`` sorted int ndarrays
        Deterministic for the seed. With ``replace=True`` an index may repeat (train on that
        image with twice the weight); members are resampled until they differ when n > 1.
    """
    n = check_positive(n, name="n", integer=True)
    members = check_positive(members, name="members", integer=True)
    fraction = float(check_positive(fraction, name="fraction"))
    if fraction > 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}.")
    size = max(1, round(fraction * n))
    rng = np.random.default_rng([seed, n, members])
    out: list[np.ndarray] = []
    n_random = members - 1 if include_full else members
    for _ in range(n_random):
        for _attempt in range(20):
            idx = np.sort(rng.choice(n, size=size, replace=replace))
            # identical members add cost, not disagreement
            if n == 1 or not any(np.array_equal(idx, o) for o in out):
                break
        out.append(idx)
    if include_full:
        out.append(np.arange(n))
    return out


@register
class EnsembleStrategy(QueryStrategy):
    name = "ensemble"
    map_name = "ensemble"
    needs_ensemble = True
    description = ("Query by committee: mean KL divergence of models trained on bootstrap "
                   "resamples of the labelled images to their mean (Suggestive Annotation's "
                   "uncertainty). Costs one training round per member.")
