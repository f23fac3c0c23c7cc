"""Batch diversity: how a batch of ``k > 1`` picks avoids near-duplicates.

The default of :meth:`.base.QueryStrategy.select` (``diversity="kcenter"``) is
:func:`diverse_batch`: k-center greedy among the ``diversity_pool * k`` highest-scoring
candidates, starting from the top-scoring one, in the space :func:`diversity_space` chooses
(L2-normalised descriptors when every candidate has one, else gradient embeddings, else the
spatial distance of :func:`spatial_kcenter`: regions of different images count as far apart,
regions of one image by the distance of their centres). :func:`kcenter_among_top` is the
k-center step with its batch notes, shared with the strategies that pick in a space of their
own (``alges``).

``diversity="power"`` is stochastic batch acquisition (Kirsch et al. 2023, "Stochastic batch
acquisition: a simple baseline for deep active learning"): :func:`power_order` draws the
candidates without replacement with probability proportional to ``score ** beta``. A top-k
batch of one uncertainty map piles onto the windows where one kind of error sits (vessel
edges, an ambiguous stain); sampling keeps most picks uncertain but spreads them, and with a
near-useless first model it falls back towards random picks instead of trusting its scores.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from . import diversity as div
from .datatypes import Candidate
from .reasons import format_number

__all__ = ["DIVERSITIES", "diverse_batch", "diversity_space", "kcenter_among_top",
           "power_order", "spatial_kcenter"]

DIVERSITIES = ("kcenter", "none", "power")


def kcenter_among_top(
    x: np.ndarray,
    top: Sequence[int] | np.ndarray,
    k: int,
    note: Callable[[float], str],
    *,
    centers: np.ndarray | None = None,
) -> list[tuple[int, str]]:
    """k-center greedy on the rows ``x`` of the candidates ``top`` (pool indices, best first).

    Ties go to the better-scoring candidate, and without ``centers`` the first pick is
    ``top[0]``. Each pick gets ``note(distance)``, its distance to the nearest earlier pick or
    centre; a first pick without centres (infinitely far) gets no note.

    Returns
    -------
    list of (pool index, note)
    """
    local, dists = div.kcenter_greedy(x, k, centers=centers, priority=-np.arange(len(x)))
    return [(int(top[j]), "" if math.isinf(d) else note(d))
            for j, d in zip(local, dists, strict=True)]


def diverse_batch(
    pool: Sequence[Candidate], scores: np.ndarray, k: int, *, pool_factor: int
) -> list[tuple[int, str]]:
    """The top score, then k-center greedy among the ``pool_factor * k`` best (module docstring).

    Returns
    -------
    list of (index into ``pool``, note)
    """
    order = np.argsort(-scores, kind="stable")
    m = min(len(pool), max(k, pool_factor * k))
    top = [pool[i] for i in order[:m]]
    space, x = diversity_space(top)
    if x is None:
        return [(int(order[j]), note) for j, note in spatial_kcenter(top, k)]
    return kcenter_among_top(
        x, order[:m], k,
        lambda d: (f"diverse batch: {space} distance {format_number(d)} to the nearest earlier "
                   f"pick (k-center among the top {m})"))


def diversity_space(cands: Sequence[Candidate]) -> tuple[str, np.ndarray | None]:
    """L2-normalised descriptors, else gradient embeddings, for diversity; else None."""
    for attr, label in (("features", "feature"), ("embedding", "gradient-embedding")):
        vecs = [getattr(c, attr) for c in cands]
        if all(v is not None for v in vecs):
            sizes = {np.size(v) for v in vecs}
            if len(sizes) == 1:
                x = np.stack([np.asarray(v, np.float64).ravel() for v in vecs])
                return label, div.l2_normalize(x)
    return "spatial", None


def spatial_kcenter(cands: Sequence[Candidate], k: int) -> list[tuple[int, str]]:
    """k-center on a spatial distance: other images are far; same image by box centres."""
    n = len(cands)
    far = 1e9
    d = np.zeros((n, n))
    for a in range(n):
        for b in range(a + 1, n):
            ca, cb = cands[a], cands[b]
            if ca.image_id != cb.image_id or ca.box is None or cb.box is None:
                v = far
            else:
                ya, xa = (ca.box[0] + ca.box[2]) / 2, (ca.box[1] + ca.box[3]) / 2
                yb, xb = (cb.box[0] + cb.box[2]) / 2, (cb.box[1] + cb.box[3]) / 2
                v = math.hypot(ya - yb, xa - xb)
            d[a, b] = d[b, a] = v
    regions = any(c.box is not None for c in cands)
    picks = [0]
    mind = d[0].copy()
    notes = [""]
    while len(picks) < min(k, n):
        rest = [j for j in range(n) if j not in picks]
        best = max(rest, key=lambda j: (mind[j], -j))
        if mind[best] >= far:
            # whole images without descriptors: nothing to say beyond the score order
            notes.append("diverse batch: not in the image of an earlier pick" if regions else "")
        else:
            notes.append(f"diverse batch: {mind[best]:.0f} px from the nearest earlier pick in "
                         "the same image")
        picks.append(best)
        mind = np.minimum(mind, d[best])
    return list(zip(picks, notes, strict=True))


def power_order(scores: np.ndarray, rng: np.random.Generator, *, beta: float = 1.0
                ) -> np.ndarray:
    """Every index of ``scores`` in a random order drawn with probability ``∝ score ** beta``.

    Sampling without replacement by the Gumbel-top-k trick: sorting ``beta * log(score) +
    Gumbel noise`` gives the order of successive draws, so the first ``k`` entries are a batch
    of ``k`` drawn that way. Scores must be >= 0; candidates scoring 0 come last (in random
    order among themselves), and ``beta = 0`` is a uniformly random order.

    Parameters
    ----------
    scores : (n,) array of float >= 0
    rng : numpy Generator
    beta : float >= 0
        Sharpness: larger follows the scores more closely (``inf`` would be top-k).

    Returns
    -------
    (n,) int ndarray
    """
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 1:
        raise ValueError(f"scores must be one-dimensional, got shape {s.shape}.")
    if (s < 0).any() or not np.isfinite(s).all():
        raise ValueError("power sampling needs finite scores >= 0 (an uncertainty); got "
                         f"min {s.min() if s.size else 0.0!r}. Use diversity='kcenter' or "
                         "'none' for this strategy.")
    key = rng.gumbel(size=s.shape)
    drawn = (s > 0) | (beta == 0)  # s ** 0 = 1 for every score
    key[drawn] += float(beta) * np.log(np.where(s[drawn] > 0, s[drawn], 1.0))
    # the drawn ones by their key; zero scores after them, shuffled by their own noise
    return np.lexsort((-key, ~drawn))
