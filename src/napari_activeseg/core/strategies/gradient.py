"""Gradient-embedding strategies: BADGE (Ash et al. 2020) and ALGES (2022).

Both take the model's own prediction as truth and look at the gradient of the loss w.r.t. the
last (1x1) layer, which is large where the model is unsure (:mod:`.embeddings`).

- ``badge``: one embedding per image (the gradient of its mean loss, ``(K * D,)``); the batch
  is drawn by k-means++ seeding on the embeddings: the largest gradient first, then points
  with probability proportional to their squared distance to the chosen ones, i.e. uncertain
  *and* diverse.
- ``alges``: the per-pixel gradient-norm map, aggregated per predicted class into a ``(K,)``
  vector (mean norm over the pixels predicted as each class; 0 for an absent class). The
  score is the strategy's aggregation of the whole map; the batch comes from center finding
  (k-center greedy) among the ``diversity_pool * k`` best on the *directions* of the per-class
  vectors (which classes the model is unsure about, not how much: the magnitude already
  ranked them), seeded by the labelled images' vectors when they are given (with
  ``grad_norm`` and ``probs``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from . import diversity as div
from .base import QueryStrategy
from .batch import kcenter_among_top
from .datatypes import Candidate, StrategyContext
from .reasons import format_number
from .registry import register

__all__ = ["AlgesStrategy", "BadgeStrategy", "per_class_aggregate"]


@register
class BadgeStrategy(QueryStrategy):
    name = "badge"
    needs_gradients = True
    description = ("BADGE: gradient embeddings of the last layer with the predicted labels as "
                   "truth; a batch drawn by k-means++ seeding is both uncertain (large "
                   "gradients) and diverse (different gradient directions).")

    def check_candidates(self, pool, labelled) -> None:
        super().check_candidates(pool, labelled)
        self._require(pool, "embedding")
        if len({np.size(c.embedding) for c in pool}) > 1:
            raise ValueError("Gradient embeddings of different lengths: compute them all with "
                             "the same model.")

    def score(self, candidates: Sequence[Candidate], context: StrategyContext) -> np.ndarray:
        return np.array([np.linalg.norm(np.asarray(c.embedding, np.float64))
                         for c in candidates])  # (n,) gradient norms

    def score_label(self) -> str:
        return "gradient-embedding norm"

    def _select_batch(self, pool, scores, k, ctx):
        x = np.stack([np.asarray(c.embedding, np.float64).ravel() for c in pool])  # (n, K*D)
        first = int(np.argmax(scores))
        picks, dists = div.kmeanspp_seeding(x, k, ctx.rng, first=first)
        return [(i, "" if np.isinf(d) else
                 f"k-means++ seed, gradient distance {format_number(d)} to the nearest earlier "
                 "pick")
                for i, d in zip(picks, dists, strict=True)]


def per_class_aggregate(grad_norm: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Mean of a pixel map over the pixels predicted as each class.

    Parameters
    ----------
    grad_norm : (H, W) ndarray
    probs : (K, H, W) ndarray

    Returns
    -------
    (K,) float64 ndarray
        0 for a class predicted nowhere.
    """
    g = np.asarray(grad_norm, np.float64)
    p = np.asarray(probs)
    if p.ndim != 3 or p.shape[1:] != g.shape:
        raise ValueError(f"probs {p.shape} must be (K, H, W) with (H, W) = grad_norm {g.shape}.")
    k = p.shape[0]
    lab = p.argmax(axis=0).ravel()
    sums = np.bincount(lab, weights=g.ravel(), minlength=k)[:k]
    counts = np.bincount(lab, minlength=k)[:k]
    return np.divide(sums, counts, out=np.zeros(k), where=counts > 0)


@register
class AlgesStrategy(QueryStrategy):
    name = "alges"
    map_name = "grad_norm"
    needs_gradients = True
    description = ("ALGES: per-pixel norm of the last-layer gradient (predicted labels as truth) "
                   "as the uncertainty map, aggregated per class; center finding on the "
                   "per-class vectors gives a representative, diverse batch.")

    def check_candidates(self, pool, labelled) -> None:
        super().check_candidates(pool, labelled)
        self._require(pool, "probs")

    def _select_batch(self, pool, scores, k, ctx):
        order = np.argsort(-scores, kind="stable")
        lab = [c for c in ctx.labelled if "grad_norm" in c.maps and c.probs is not None]
        if k == 1 and not lab:
            return [(int(order[0]), "")]
        m = min(len(pool), max(k, self.diversity_pool * k))
        top = order[:m]
        # directions only: the magnitude is the uncertainty, already used to pick the top m;
        # k-center on raw magnitudes would reach for the least uncertain outliers
        x = div.l2_normalize(np.stack([per_class_aggregate(pool[i].maps["grad_norm"],
                                                           pool[i].probs) for i in top]))  # (m, K)
        centers = (div.l2_normalize(np.stack([per_class_aggregate(c.maps["grad_norm"], c.probs)
                                              for c in lab])) if lab else None)
        what = "earlier pick or labelled image" if lab else "earlier pick"
        return kcenter_among_top(
            x, top, k, lambda d: (f"center finding: per-class gradient-profile distance "
                                  f"{format_number(d)} to the nearest {what}"),
            centers=centers)

