"""Task-dependent similarity (Grüning et al. 2020).

"If we train a network on image i, how well does it predict image j?" Every candidate gets a
pseudo-label from the current model (arg-max of ``probs``). A few probe candidates
(``n_probes`` <= 8, drawn at random from the unlabelled pool with the seed) each train a tiny
U-Net from scratch on their own image and pseudo-label; each probe then predicts every image,
and the Dice against that image's pseudo-label is the similarity ``d(probe, j)``
(``d(i, i) = 1``). Unmeasured pairs follow the paper: ``d(j, probe) = d(probe, j)`` when only
one direction is known, and otherwise ``d(i, j) = max over probes p of (d(i, p) + d(p, j)) / 2``.

The picked subset ``Z`` (the labelled images plus ``k`` candidates) maximises the minimum,
over all images ``j``, of the expected Dice ``p(j) = mean over z in Z of d(z, j)``: exhaustive
search over the ``C(n, k)`` subsets when there are at most ``exhaustive_limit`` of them, else
greedy. A candidate's score (the ranking for ``k = 1``) is that objective for ``Z`` = labelled +
the candidate. Labelled candidates take part when they carry an ``image`` and ``probs`` (pass
one-hot probabilities of their reviewed labels); they are never probes.

Expensive by nature: :func:`estimate_cost` gives the seconds before it runs (the reason shows
the estimate and the measured time); ``StrategyContext.stop`` is polled between probes.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Sequence

import numpy as np

from ..config import InferenceConfig, ModelConfig, TrainConfig
from ..inference import predict
from ..losses import dice_score
from ..progress import run_to_end
from ..training import Trainer
from ..validation import check_positive
from .base import QueryStrategy
from .datatypes import Candidate, StrategyContext
from .reasons import format_number
from .registry import register

__all__ = ["TaskSimilarityStrategy", "estimate_cost", "similarity_matrix"]

MAX_PROBES = 8

# Throughput of a width-4, depth-2 probe with one thread on the 2-core reference CPU while
# another job was running (measured, rounded down): training pixel-steps/s (batch * patch^2 per
# step; 30 steps of 4 x 64^2 took ~1.0 s) and prediction pixels/s (256^2 in ~25 ms), plus a
# fixed overhead per probe (model build, trainer set-up). Cost scales ~ width^2.
_TRAIN_PX_PER_S = 4.0e5
_PREDICT_PX_PER_S = 2.5e6
_OVERHEAD_PER_PROBE_S = 0.1
# the first training of a process pays ~1 s of one-off set-up (autograd, allocator)
_STARTUP_S = 1.0


def estimate_cost(
    n_candidates: int,
    *,
    pixels_per_image: int = 256 * 256,
    n_probes: int = 6,
    probe_steps: int = 30,
    probe_batch: int = 4,
    probe_patch: int = 64,
    probe_width: int = 4,
) -> float:
    """Estimated seconds for task_similarity on ``n_candidates`` images (CPU).

    ``n_probes`` probe trainings of ``probe_steps`` steps, then every probe predicts every
    image; the subset search is negligible next to that.
    """
    n = check_positive(n_candidates, name="n_candidates", integer=True)
    probes = min(check_positive(n_probes, name="n_probes", integer=True), n)
    scale = (probe_width / 4.0) ** 2
    train = probe_steps * probe_batch * probe_patch**2 / _TRAIN_PX_PER_S
    pred = n * pixels_per_image / _PREDICT_PX_PER_S
    return float(_STARTUP_S + probes * (scale * (train + pred) + _OVERHEAD_PER_PROBE_S))


def similarity_matrix(measured: np.ndarray, probes: Sequence[int]) -> np.ndarray:
    """Complete Grüning et al.'s similarity matrix from the probes' rows.

    Parameters
    ----------
    measured : (n, n) array
        ``measured[p, j]`` = Dice of probe ``p``'s net on image ``j``; only rows in ``probes``
        are read.
    probes : sequence of int

    Returns
    -------
    (n, n) float64 array ``d`` with ``d[i, i] = 1``, probe rows as measured, ``d[j, p] =
    d[p, j]`` for a non-probe ``j``, and ``d[i, j] = max_p (d[i, p] + d[p, j]) / 2`` for two
    non-probes.
    """
    m = np.asarray(measured, np.float64)
    n = m.shape[0]
    probes = list(dict.fromkeys(int(p) for p in probes))
    d = np.full((n, n), np.nan)
    for p in probes:
        d[p] = m[p]
    others = [i for i in range(n) if i not in set(probes)]
    for j in others:
        for p in probes:
            d[j, p] = d[p, j]
    if probes and others:
        pr = np.asarray(probes)
        oi = np.asarray(others)
        via = (d[oi][:, pr][:, None, :] + d[pr][:, oi].T[None, :, :]) / 2.0  # (o, o, P)
        d[np.ix_(oi, oi)] = via.max(axis=2)
    np.fill_diagonal(d, 1.0)
    return np.nan_to_num(d, nan=0.0)


def _objective(d: np.ndarray, members: Sequence[int]) -> float:
    """``min_j mean_{z in members} d[z, j]``."""
    return float(d[list(members)].mean(axis=0).min())


@register
class TaskSimilarityStrategy(QueryStrategy):
    name = "task_similarity"
    needs_images = True
    description = ("Task-dependent similarity (Grüning et al. 2020): tiny probe nets trained on a "
                   "few candidates (pseudo-labelled by the current model) predict the others; "
                   "picks the images that maximise the worst expected Dice over the pool. "
                   "Expensive: trains up to 8 small nets, estimate shown before it runs.")

    def __init__(
        self,
        *,
        n_probes: int = 6,
        probe_width: int = 4,
        probe_depth: int = 2,
        probe_steps: int = 30,
        probe_batch: int = 4,
        probe_patch: int = 64,
        probe_lr: float = 1e-2,
        exhaustive_limit: int = 5000,
        device: str = "cpu",
        **options,
    ) -> None:
        super().__init__(**options)
        self.n_probes = check_positive(n_probes, name="n_probes", integer=True)
        if self.n_probes > MAX_PROBES:
            raise ValueError(f"n_probes must be <= {MAX_PROBES} (each probe is a training run), "
                             f"got {n_probes}.")
        self.probe_width = check_positive(probe_width, name="probe_width", integer=True)
        self.probe_depth = check_positive(probe_depth, name="probe_depth", integer=True)
        self.probe_steps = check_positive(probe_steps, name="probe_steps", integer=True)
        self.probe_batch = check_positive(probe_batch, name="probe_batch", integer=True)
        self.probe_patch = check_positive(probe_patch, name="probe_patch", integer=True)
        if self.probe_patch < 16 or self.probe_patch % 8:
            raise ValueError(f"probe_patch must be a multiple of 8 and >= 16, got {probe_patch}.")
        self.probe_lr = float(check_positive(probe_lr, name="probe_lr"))
        self.exhaustive_limit = check_positive(exhaustive_limit, name="exhaustive_limit",
                                               integer=True)
        self.device = device
        # probe architecture checked now, not after minutes of waiting
        ModelConfig(width=self.probe_width, depth=self.probe_depth)
        self._cache: tuple[tuple[str, ...], np.ndarray, list[int], int, float, float] | None = None

    # -- cost ---------------------------------------------------------------------------------
    def estimate_cost(self, n_candidates: int, *, pixels_per_image: int = 256 * 256) -> float:
        """Estimated seconds for ``n_candidates`` images of ``pixels_per_image`` pixels."""
        return estimate_cost(n_candidates, pixels_per_image=pixels_per_image,
                             n_probes=self.n_probes, probe_steps=self.probe_steps,
                             probe_batch=self.probe_batch, probe_patch=self.probe_patch,
                             probe_width=self.probe_width)

    def check_candidates(self, pool, labelled) -> None:
        super().check_candidates(pool, labelled)
        self._require(pool, "probs")
        chans = {np.shape(c.image)[0] if np.ndim(c.image) == 3 else 1 for c in pool}
        if len(chans) > 1:
            raise ValueError(f"Candidate images have different channel counts {sorted(chans)}.")

    # -- similarities -------------------------------------------------------------------------
    def _members(self, pool: Sequence[Candidate], ctx: StrategyContext) -> list[Candidate]:
        lab = [c for c in ctx.labelled if c.image is not None and c.probs is not None]
        return list(pool) + lab

    def _train_probe(self, image: np.ndarray, labels: np.ndarray, n_classes: int, seed: int):
        img = image if image.ndim == 3 else image[None]
        side = min(img.shape[-2:])
        patch = max(16, min(self.probe_patch, -(-side // 8) * 8))
        mc = ModelConfig(in_channels=img.shape[0], n_classes=n_classes, width=self.probe_width,
                         depth=self.probe_depth, dropout=0.0, polarity="none")
        tc = TrainConfig(patch_size=patch, batch_size=self.probe_batch,
                         max_steps=self.probe_steps, time_budget_s=None, lr=self.probe_lr,
                         val_fraction=0.0, seed=seed, device=self.device, amp=False)
        return run_to_end(Trainer(mc, tc).fit([img], [labels])).build_model()

    def _similarities(self, pool, ctx) -> tuple[np.ndarray, list[int], float, float]:
        members = self._members(pool, ctx)
        n = len(members)
        n_pool = len(pool)
        k_cls = max(int(np.shape(c.probs)[0]) for c in members)
        pixels = int(np.mean([np.prod(np.shape(c.probs)[1:]) for c in members]))
        est = self.estimate_cost(n, pixels_per_image=pixels)
        labels = [np.asarray(c.probs).argmax(axis=0) for c in members]
        images = [np.asarray(c.image, np.float32) for c in members]
        n_probes = min(self.n_probes, n_pool)
        assert ctx.rng is not None
        probes = sorted(int(i) for i in ctx.rng.choice(n_pool, size=n_probes, replace=False))
        measured = np.zeros((n, n))
        cfg = InferenceConfig(device=self.device, amp=False)
        t0 = time.perf_counter()
        for r, p in enumerate(probes):
            if ctx.stop is not None and ctx.stop():
                raise InterruptedError("task_similarity stopped before all probes were trained.")
            net = self._train_probe(images[p], labels[p], k_cls, self.seed * 1000 + r)
            for j in range(n):
                if j == p:
                    measured[p, j] = 1.0
                    continue
                pred = predict(net, images[j], mode="single", maps=(), config=cfg)
                measured[p, j] = dice_score(pred.labels, labels[j])
        seconds = time.perf_counter() - t0
        return similarity_matrix(measured, probes), probes, est, seconds

    def score(self, candidates: Sequence[Candidate], context: StrategyContext) -> np.ndarray:
        d, probes, est, seconds = self._similarities(candidates, context)
        n_pool = len(candidates)
        lab = list(range(n_pool, d.shape[0]))
        self._cache = (tuple(c.key for c in candidates), d, probes, len(lab), est, seconds)
        return np.array([_objective(d, lab + [i]) for i in range(n_pool)])

    def score_label(self) -> str:
        return "worst expected Dice over the pool"

    def _reason(self, position, n, noun, raw, cost):
        return ""  # the batch note says it all: single-candidate scores mean little here

    def _select_batch(self, pool, scores, k, ctx):
        assert self._cache is not None and self._cache[0] == tuple(c.key for c in pool)
        _, d, probes, n_lab, est, seconds = self._cache
        n_pool = len(pool)
        lab = list(range(n_pool, n_pool + n_lab))
        if math.comb(n_pool, k) <= self.exhaustive_limit:
            best, best_val = None, -np.inf
            for combo in itertools.combinations(range(n_pool), k):
                v = _objective(d, lab + list(combo))
                # ties: the subset with the higher summed single scores
                if v > best_val + 1e-12 or (abs(v - best_val) <= 1e-12 and best is not None
                                            and scores[list(combo)].sum() >
                                            scores[list(best)].sum()):
                    best, best_val = combo, v
            chosen = sorted(best, key=lambda i: -scores[i])
            how = f"exhaustive over {math.comb(n_pool, k)} subsets"
        else:
            chosen = []
            for _ in range(k):
                rest = [i for i in range(n_pool) if i not in chosen]
                vals = [(_objective(d, lab + chosen + [i]), scores[i], -i) for i in rest]
                chosen.append(rest[int(max(range(len(rest)), key=lambda t: vals[t]))])
            best_val = _objective(d, lab + chosen)
            how = "greedy"
        noun = "images" if all(c.box is None for c in pool) else "candidates"
        note = (f"with this batch every one of the {d.shape[0]} {noun} expects Dice >= "
                f"{format_number(best_val)} (the best worst case; {how}; {len(probes)} probe nets, "
                f"est. {est:.1f} s, took {seconds:.1f} s)")
        self._cache = None
        return [(int(i), note) for i in chosen]
