"""Representativeness: core-set (Sener & Savarese 2018) and Suggestive Annotation (Yang et al.
2017), both on image descriptors (:func:`.embeddings.image_descriptor`).

- ``coreset``: k-center greedy on the descriptors of labelled + candidate images: each pick is
  the candidate farthest from everything labelled or picked, which shrinks the radius within
  which every pool image has a labelled neighbour. Score = Euclidean distance to the nearest
  labelled descriptor. With no labelled image yet the first pick is the 1-center (the
  candidate whose farthest neighbour is nearest: the most central one).
- ``suggestive``: the ``uncertain_factor * k`` most uncertain candidates (aggregated
  ``map_name``, one-pass entropy by default so it needs no extra passes; ``"bald"`` /
  ``"variance"`` / ``"tta"`` / ``"ensemble"`` switch the instance's ``needs_*`` flags on),
  then the greedy max-cover subset: maximise ``sum over the unlabelled pool of the best cosine
  similarity to a pick`` (negative similarities count as 0), so the batch represents the pool.
  Ties in coverage go to the more uncertain candidate.
- ``stratified``: uncertainty within strata. The descriptors of labelled + candidate images
  (standardised per dimension) are clustered by k-means into ``n_strata`` strata; the batch
  gives each stratum its share of the labelled set -- its share of all images -- taking one
  pick at a time from the stratum furthest below its share, and inside a stratum the most
  uncertain candidate (aggregated ``map_name``, one-pass entropy by default). Uncertainty
  alone spends a small labelled set on the rare image types the model is least sure of (on
  DSB 2018, 6 to 8 of the 8 first picks were stained tissue, a fifth of the pool); stratified,
  the labelled set keeps the pool's make-up and each type contributes its hardest images.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..validation import check_choice, check_positive
from . import diversity as div
from .base import QueryStrategy
from .datatypes import Candidate, StrategyContext
from .reasons import MAP_LABELS, format_number
from .registry import register

__all__ = ["CoresetStrategy", "StratifiedStrategy", "SuggestiveStrategy", "kmeans"]

_UNCERTAINTY_MAPS = ("entropy", "margin", "least_confidence", "bald", "variance", "tta",
                     "ensemble")


def _use_map(strategy: QueryStrategy, map_name: str) -> None:
    """Rank by ``map_name``; switch on the prediction mode that map needs."""
    strategy.map_name = check_choice(map_name, _UNCERTAINTY_MAPS, name="map_name")
    strategy.needs_mc_samples = map_name in ("bald", "variance")
    strategy.needs_tta = map_name == "tta"
    strategy.needs_ensemble = map_name == "ensemble"


def _features(cands: Sequence[Candidate]) -> np.ndarray:
    vecs = [np.asarray(c.features, np.float64).ravel() for c in cands]
    if len({v.size for v in vecs}) > 1:
        raise ValueError("Image descriptors of different lengths: compute them all with the same "
                         "model (image_descriptor).")
    return np.stack(vecs)  # (n, D)


@register
class CoresetStrategy(QueryStrategy):
    name = "coreset"
    needs_features = True
    needs_labelled_set = True
    description = ("Core-set: k-center greedy on image descriptors; picks the images least like "
                   "anything labelled so far, so the labelled set covers the pool. Uses no "
                   "uncertainty.")

    def score(self, candidates: Sequence[Candidate], context: StrategyContext) -> np.ndarray:
        x = _features(candidates)  # (n, D)
        lab = [c for c in context.labelled if c.features is not None]
        if lab:
            d2 = div.sq_distances(x, _features(lab))  # (n, L)
            return np.sqrt(d2.min(axis=1))
        # no labelled image: the 1-center first (minimise the distance to the farthest)
        return -np.sqrt(div.sq_distances(x, x).max(axis=1))

    def score_label(self) -> str:
        return "feature distance to the nearest labelled image"

    def _reason(self, position, n, noun, raw, cost):
        if raw < 0:
            return (f"most central of {n} {noun} in feature space (no labelled image yet; "
                    f"farthest neighbour at {format_number(-raw)})")
        return super()._reason(position, n, noun, raw, cost)

    def _select_batch(self, pool, scores, k, ctx):
        x = _features(pool)
        lab = [c for c in ctx.labelled if c.features is not None]
        centers = _features(lab) if lab else None
        first = None if centers is not None else int(np.argmax(scores))
        picks, dists = div.kcenter_greedy(x, k, centers=centers, first=first)
        out = []
        for rank, (i, d) in enumerate(zip(picks, dists, strict=True)):
            if rank == 0:
                out.append((int(i), "k-center greedy"))
            else:
                what = "labelled image or earlier pick" if centers is not None else "earlier pick"
                out.append((int(i), f"k-center greedy: feature distance {format_number(d)} to "
                                    f"the nearest {what}"))
        return out


@register
class SuggestiveStrategy(QueryStrategy):
    name = "suggestive"
    needs_features = True
    map_name = "entropy"
    description = ("Suggestive Annotation (Yang et al. 2017): the most uncertain candidates, then "
                   "the subset whose descriptors best cover the whole pool (greedy max-cover, "
                   "cosine similarity): uncertain and representative.")

    def __init__(self, *, map_name: str = "entropy", uncertain_factor: int = 2, **options) -> None:
        super().__init__(**options)
        _use_map(self, map_name)
        self.uncertain_factor = check_positive(uncertain_factor, name="uncertain_factor",
                                               integer=True)

    def _select_batch(self, pool, scores, k, ctx):
        order = np.argsort(-scores, kind="stable")
        m = min(len(pool), max(k, self.uncertain_factor * k))
        top = order[:m]
        x = _features(pool)  # (n, D)
        sim = np.maximum(div.cosine_similarity(x[top], x), 0.0)  # (m, n)
        local, gains = div.greedy_max_cover(sim, k, priority=scores[top])
        label = MAP_LABELS.get(self.map_name, self.map_name)
        out = []
        for j, g in zip(local, gains, strict=True):
            out.append((int(top[j]), f"among the {m} most uncertain by {label}, adds coverage "
                                     f"{format_number(g)} of {len(pool)} pool images (max-cover)"))
        return out


def kmeans(x: np.ndarray, k: int, rng: np.random.Generator, *, iterations: int = 50
           ) -> np.ndarray:
    """Lloyd's k-means from a k-means++ start; returns the (n,) cluster of each row.

    Clusters are numbered by their first member (row order), so the labels do not depend on
    the order the seeding happened to find them in. An emptied cluster keeps its centre.
    """
    x = np.asarray(x, np.float64)
    n = x.shape[0]
    k = max(1, min(int(k), n))
    first = int(rng.integers(n))
    seeds, _ = div.kmeanspp_seeding(x, k, rng, first=first)
    centres = x[seeds].copy()
    labels = np.full(n, -1)
    for _ in range(iterations):
        new = div.sq_distances(x, centres).argmin(axis=1)
        if np.array_equal(new, labels):
            break
        labels = new
        for c in range(k):
            members = labels == c
            if members.any():
                centres[c] = x[members].mean(axis=0)
    _, first_seen = np.unique(labels, return_index=True)
    renumber = {int(labels[i]): j for j, i in enumerate(sorted(first_seen))}
    return np.array([renumber[int(v)] for v in labels])


@register
class StratifiedStrategy(QueryStrategy):
    name = "stratified"
    needs_features = True
    needs_labelled_set = True
    map_name = "entropy"
    description = ("Uncertainty within strata: images are clustered by their descriptors, "
                   "each cluster gets its share of the labelled set, and inside a cluster the "
                   "most uncertain image goes first -- uncertain picks that keep the labelled "
                   "set's make-up close to the pool's.")

    def __init__(self, *, map_name: str = "entropy", n_strata: int = 4, **options) -> None:
        super().__init__(**options)
        _use_map(self, map_name)
        self.n_strata = check_positive(n_strata, name="n_strata", integer=True)

    def strata(self, pool: Sequence[Candidate], labelled: Sequence[Candidate],
               rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Stratum of every pool and every labelled candidate (those with descriptors)."""
        x = _features([*pool, *labelled])  # (n + L, D)
        x = (x - x.mean(axis=0)) / np.maximum(x.std(axis=0), 1e-12)
        lab = kmeans(x, self.n_strata, rng)
        return lab[:len(pool)], lab[len(pool):]

    def _select_batch(self, pool, scores, k, ctx):
        labelled = [c for c in ctx.labelled if c.features is not None]
        in_pool, in_lab = self.strata(pool, labelled, ctx.rng)
        n_strata = int(max(in_pool.max(), in_lab.max(initial=-1))) + 1
        size = np.bincount(in_pool, minlength=n_strata) + np.bincount(in_lab,
                                                                      minlength=n_strata)
        have = np.bincount(in_lab, minlength=n_strata).astype(np.float64)
        total, n_lab = float(size.sum()), len(labelled)
        order = np.argsort(-scores, kind="stable")
        queue = {c: [int(i) for i in order if in_pool[i] == c] for c in range(n_strata)}
        out = []
        for _ in range(k):
            # each stratum's share of the labelled set once this pick is made
            target = size / total * (n_lab + len(out) + 1)
            open_ = [c for c in range(n_strata) if queue[c]]
            c = max(open_, key=lambda s: (target[s] - have[s], size[s], -s))
            i = queue[c].pop(0)
            out.append((i, f"stratum {c + 1} of {n_strata} ({size[c]} of {int(total)} images, "
                           f"{int(have[c])} labelled or picked before): its most uncertain "
                           "candidate left"))
            have[c] += 1
        return out
