"""Batch-selection helpers shared by the strategies: distances, k-center greedy, k-means++
seeding, greedy max-cover. Pure numpy, no model.

All functions take points as rows, ``x : (n, d)``, and return indices into those rows.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = [
    "cosine_similarity",
    "greedy_max_cover",
    "kcenter_greedy",
    "kmeanspp_seeding",
    "l2_normalize",
    "sq_distances",
]


def _rows(x: np.ndarray, name: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 1:
        x = x[None]
    if x.ndim != 2:
        raise ValueError(f"{name} must be (n, d) rows of vectors, got shape {x.shape}.")
    if not np.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or infinite values.")
    return x


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length; all-zero rows stay zero.  ``(n, d) -> (n, d)``."""
    x = _rows(x, "x")
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, n, out=np.zeros_like(x), where=n > 0)


def sq_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances ``(n, d), (m, d) -> (n, m)``, clipped at 0."""
    a, b = _rows(a, "a"), _rows(b, "b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"Vectors of different lengths: {a.shape[1]} and {b.shape[1]}; "
                         "compute every descriptor with the same model.")
    d = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return np.maximum(d, 0.0)


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity ``(n, d), (m, d) -> (n, m)`` (0 for an all-zero row)."""
    return l2_normalize(a) @ l2_normalize(b).T


def kcenter_greedy(
    x: np.ndarray,
    k: int,
    *,
    centers: np.ndarray | None = None,
    priority: Sequence[float] | np.ndarray | None = None,
    first: int | None = None,
) -> tuple[list[int], list[float]]:
    """Greedy k-center (Gonzalez 1985; the core-set selection of Sener & Savarese 2018).

    Repeatedly picks the point farthest from everything chosen so far (and from ``centers``),
    which 2-approximates the minimax covering radius.

    Parameters
    ----------
    x : (n, d) array
        Points to choose from.
    k : int
        How many to choose (at most n).
    centers : (c, d) array, optional
        Already chosen points (e.g. the labelled set). Without them the first pick is the
        point of highest ``priority`` (index 0 when no priority is given).
    priority : (n,) array, optional
        Breaks ties between equally distant points (higher first), and picks the first point
        when there is no center.
    first : int, optional
        Force the first pick (its distance is still reported).

    Returns
    -------
    picks : list of int
        Indices into ``x`` in pick order.
    distances : list of float
        Euclidean distance of each pick to the nearest earlier pick or center at the time it
        was picked (``inf`` for a first pick without centers).
    """
    x = _rows(x, "x")
    n = x.shape[0]
    k = min(int(k), n)
    prio = np.zeros(n) if priority is None else np.asarray(priority, np.float64)
    if prio.shape != (n,):
        raise ValueError(f"priority must have shape ({n},), got {prio.shape}.")
    picks: list[int] = []
    dists: list[float] = []
    if k <= 0:
        return picks, dists
    if centers is not None and np.size(centers):
        mind = sq_distances(x, centers).min(axis=1)
    else:
        mind = np.full(n, np.inf)
    taken = np.zeros(n, bool)
    for step in range(k):
        cand = np.flatnonzero(~taken)
        if step == 0 and first is not None:
            best = int(first)
        else:
            # lexicographic: farthest first, then highest priority, then lowest index
            best = cand[np.lexsort((cand, -prio[cand], -mind[cand]))[0]]
        picks.append(int(best))
        dists.append(float(np.sqrt(mind[best])))
        taken[best] = True
        mind = np.minimum(mind, sq_distances(x, x[best])[:, 0])
    return picks, dists


def kmeanspp_seeding(
    x: np.ndarray,
    k: int,
    rng: np.random.Generator,
    *,
    first: int | None = None,
) -> tuple[list[int], list[float]]:
    """k-means++ seeding (Arthur & Vassilvitskii 2007), as BADGE uses it.

    After ``first`` (default: the point of largest norm, i.e. the largest gradient for
    BADGE), each next point is drawn with probability proportional to its squared distance to
    the nearest chosen point, so near-duplicates of a chosen point are (almost) never drawn.
    When every remaining point coincides with a chosen one, the largest-norm one is taken.

    Returns
    -------
    picks : list of int
    distances : list of float
        Distance of each pick to the nearest earlier pick (``inf`` for the first).
    """
    x = _rows(x, "x")
    n = x.shape[0]
    k = min(int(k), n)
    if k <= 0:
        return [], []
    norms = np.linalg.norm(x, axis=1)
    if first is None:
        first = int(np.argmax(norms))
    picks, dists = [int(first)], [float("inf")]
    mind = sq_distances(x, x[first])[:, 0]
    taken = np.zeros(n, bool)
    taken[first] = True
    while len(picks) < k:
        w = np.where(taken, 0.0, mind)
        total = w.sum()
        if total <= 0:
            rest = np.flatnonzero(~taken)
            nxt = int(rest[np.argmax(norms[rest])])
        else:
            nxt = int(rng.choice(n, p=w / total))
        picks.append(nxt)
        dists.append(float(np.sqrt(mind[nxt])))
        taken[nxt] = True
        mind = np.minimum(mind, sq_distances(x, x[nxt])[:, 0])
    return picks, dists


def greedy_max_cover(
    similarity: np.ndarray, k: int, *, priority: Sequence[float] | np.ndarray | None = None
) -> tuple[list[int], list[float]]:
    """Greedy maximisation of the coverage ``F(S) = sum_x max_{s in S} sim(s, x)``.

    Suggestive Annotation (Yang et al. 2017): ``F`` is submodular, so the greedy choice is
    within ``1 - 1/e`` of the best subset.

    Parameters
    ----------
    similarity : (m, n) array
        ``similarity[i, x]``: how well candidate ``i`` represents pool item ``x`` (>= 0).
    k : int
    priority : (m,) array, optional
        Breaks ties between equal gains (higher first), e.g. the uncertainty.

    Returns
    -------
    picks : list of int
        Indices of candidates (rows) in pick order.
    gains : list of float
        Coverage gained by each pick.
    """
    sim = np.asarray(similarity, np.float64)
    if sim.ndim != 2:
        raise ValueError(f"similarity must be (m, n), got shape {sim.shape}.")
    m = sim.shape[0]
    k = min(int(k), m)
    prio = np.zeros(m) if priority is None else np.asarray(priority, np.float64)
    covered = np.zeros(sim.shape[1])
    taken = np.zeros(m, bool)
    picks: list[int] = []
    gains: list[float] = []
    for _ in range(k):
        gain = np.maximum(sim - covered[None], 0.0).sum(axis=1)  # (m,)
        cand = np.flatnonzero(~taken)
        best = int(cand[np.lexsort((cand, -prio[cand], -gain[cand]))[0]])
        picks.append(best)
        gains.append(float(gain[best]))
        taken[best] = True
        covered = np.maximum(covered, sim[best])
    return picks, gains
