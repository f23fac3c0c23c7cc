"""The query-strategy interface: candidates in, ranked picks with a reason out.

A :class:`QueryStrategy` scores *candidates* (:class:`.datatypes.Candidate`: whole images or
windows inside images, :mod:`.regions`) from what the session computed for them (mean
probabilities, uncertainty maps, descriptors, gradient embeddings, images). Its class
attributes declare what it needs (``needs_mc_samples``, ``needs_features``, ...), so the session
computes exactly that and never special-cases a strategy; :attr:`QueryStrategy.requirements`
sums them up. Strategies are found by name through :mod:`.registry`.

Subclasses override **one** method, :meth:`QueryStrategy.score` (higher = query first). Map
strategies do not even do that: setting ``map_name`` is enough, the default ``score``
aggregates that map with the strategy's aggregation options (:func:`.aggregation.aggregate`).

:meth:`QueryStrategy.select` is shared: it ranks, divides by the correction cost when
``cost_aware``, picks a batch, and writes the one-line reasons shown in the GUI
(:mod:`.reasons`). Batch diversity for ``k > 1`` (``diversity="kcenter"``, the default) is
:func:`.batch.diverse_batch`: k-center greedy among the ``diversity_pool * k`` highest-scoring
candidates, starting from the top-scoring one, so the first pick is always the best-scoring one
and a batch never holds near-duplicates while better-separated uncertain candidates exist.
Set-selection strategies (coreset, badge, alges, suggestive, stratified, task_similarity)
choose their batch themselves by overriding the private hook ``_select_batch``; their
``score`` still ranks single picks.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from ..validation import check_choice, check_positive
from .aggregation import AGGREGATIONS, ONE_PASS_MAPS, aggregate, check_fraction
from .batch import DIVERSITIES, diverse_batch, power_order
from .datatypes import Candidate, Pick, StrategyContext
from .reasons import MAP_LABELS, format_number, ordinal, pool_noun
from .regions import correction_cost

__all__ = ["QueryStrategy"]

# What the session must compute when a candidate lacks something; used in error messages.
_HOW = {
    "probs": "pass the mean class probabilities (Prediction.probs, (K, H, W))",
    "features": "compute them with core.strategies.embeddings.image_descriptor(model, image)",
    "embedding": "compute it with core.strategies.embeddings.gradient_embedding(model, image)[0]",
    "grad_norm": "put gradient_embedding(model, image)[1] into Candidate.maps['grad_norm']",
    "image": "pass the normalised (C, H, W) image in Candidate.image",
}


class QueryStrategy:
    """Base class of all query strategies.

    Parameters (keyword-only; every strategy accepts these)
    ----------
    aggregation : {"topk", "mean", "sum", "max"}
        How a pixel map becomes a candidate score (:func:`.aggregation.aggregate`).
    topk_fraction : float in (0, 1]
        Fraction of pixels averaged by ``"topk"``.
    foreground_only : bool
        Aggregate over the predicted foreground (+ ``boundary_band``) only.
    boundary_band : int >= 0
        Band width in pixels (see :func:`.aggregation.restriction_mask`).
    diversity : {"kcenter", "none", "power"}
        Batch diversity for ``k > 1`` (see :mod:`.batch`). ``"power"`` draws the picks at
        random with probability proportional to ``score ** power_beta`` (for ``k = 1`` too, and
        the queue of :meth:`rank` is the order of the draws). Ignored by set-selection
        strategies, which diversify in their own way.
    power_beta : float >= 0
        The exponent of ``"power"`` sampling (1: proportional to the score).
    diversity_pool : int >= 1
        k-center runs among the ``diversity_pool * k`` best-scoring candidates.
    random_fraction : float in [0, 1)
        Share of the picks drawn uniformly at random from the rest of the pool instead of by
        score: every ``1 / random_fraction``-th pick of a batch (and of :meth:`rank`'s queue),
        the first always by score. Uncertainty piles a batch onto one kind of window (on
        retinal vessels: thick vessels near the optic disc, few thin ones); random picks keep
        what is labelled representative of the pool. 0 (default) = every pick by score.
    cost_aware : bool
        Rank by score divided by the estimated correction cost (for regions, where effort
        differs a lot between windows). Set-selection strategies use the divided scores
        wherever they use scores (top-M pools, first picks); coreset and task_similarity
        choose by distances and Dice, so for them it only breaks ties.
    cost_constant : float >= 0
        Fixed cost per candidate added to the predicted boundary length (pixels) by the default
        cost model (:func:`.regions.correction_cost`).
    seed : int
        Seeds every random choice (with the round number).

    Notes
    -----
    The ``needs_*`` attributes are class defaults that an instance may change according to
    its options (e.g. ``suggestive`` with ``map_name="bald"`` needs MC samples): the session
    reads them from the instance, or from :attr:`requirements`.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    needs_mc_samples: bool = False
    needs_tta: bool = False
    needs_ensemble: bool = False
    needs_features: bool = False
    needs_gradients: bool = False
    needs_labelled_set: bool = False
    needs_images: bool = False
    #: False for a strategy whose scores ignore the model's output (``random``): the session
    #: then skips predicting the pool. Options that read ``probs`` turn it back on.
    needs_prediction: bool = True
    map_name: str | None = None

    def __init__(
        self,
        *,
        aggregation: str = "topk",
        topk_fraction: float = 0.1,
        foreground_only: bool = False,
        boundary_band: int = 0,
        diversity: str = "kcenter",
        diversity_pool: int = 3,
        power_beta: float = 1.0,
        random_fraction: float = 0.0,
        cost_aware: bool = False,
        cost_constant: float = 64.0,
        seed: int = 0,
    ) -> None:
        self.aggregation = check_choice(aggregation, AGGREGATIONS, name="aggregation")
        self.topk_fraction = check_fraction(topk_fraction)
        self.foreground_only = _check_bool(foreground_only, "foreground_only")
        self.boundary_band = check_positive(boundary_band, name="boundary_band", allow_zero=True,
                                            integer=True)
        self.diversity = check_choice(diversity, DIVERSITIES, name="diversity")
        self.diversity_pool = check_positive(diversity_pool, name="diversity_pool", integer=True)
        self.power_beta = float(check_positive(power_beta, name="power_beta", allow_zero=True))
        self.random_fraction = float(check_positive(random_fraction, name="random_fraction",
                                                    allow_zero=True))
        if not self.random_fraction < 1:
            raise ValueError(f"random_fraction must be in [0, 1), got {random_fraction!r}.")
        self.cost_aware = _check_bool(cost_aware, "cost_aware")
        self.cost_constant = float(check_positive(cost_constant, name="cost_constant",
                                                  allow_zero=True))
        self.seed = check_positive(seed, name="seed", allow_zero=True, integer=True)

    # -- introspection ----------------------------------------------------------------------
    @classmethod
    def option_names(cls) -> list[str]:
        """Every keyword option the constructor accepts (base and subclass)."""
        names: list[str] = []
        for klass in cls.__mro__:
            init = klass.__dict__.get("__init__")
            if init is None:
                continue
            for p in inspect.signature(init).parameters.values():
                if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name not in names:
                    names.append(p.name)
        return names

    @classmethod
    def project_options(cls, *, object_classes: Sequence[int] = (),
                        min_object_area: float | None = None) -> dict[str, Any]:
        """Options this strategy takes from the project and its model rather than from the
        user (the session fills them in where the user left them out; a new model's value
        changes the options, hence the scores' key). None here; see ``objects``."""
        return {}

    @property
    def options(self) -> dict[str, Any]:
        """The options of this instance (for the query history and reproducibility)."""
        return {n: getattr(self, n) for n in self.option_names() if hasattr(self, n)}

    @property
    def prediction_mode(self) -> str:
        """The :func:`core.inference.predict` mode the candidates' maps come from."""
        if self.needs_ensemble:
            return "ensemble"
        if self.needs_tta:
            return "tta"
        if self.needs_mc_samples:
            return "mc"
        return "single"

    @property
    def required_maps(self) -> tuple[str, ...]:
        """Maps to request from :func:`core.inference.predict` (``grad_norm`` excluded: it comes
        from :func:`.embeddings.gradient_embedding`)."""
        if self.map_name is None or self.map_name == "grad_norm":
            return ()
        return (self.map_name,)

    @property
    def requirements(self) -> dict[str, Any]:
        """Everything the session has to compute for this strategy, in one dict."""
        return {
            "mode": self.prediction_mode,
            "maps": self.required_maps,
            "probs": bool(self.needs_prediction or self.foreground_only
                          or self.boundary_band or self.cost_aware),
            "features": self.needs_features,
            "gradients": self.needs_gradients,
            "images": self.needs_images,
            "labelled_set": self.needs_labelled_set,
        }

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.options.items())
        return f"{type(self).__name__}({opts})"

    # -- the method to override -------------------------------------------------------------
    def score(self, candidates: Sequence[Candidate], context: StrategyContext) -> np.ndarray:
        """Score the unlabelled candidates: higher = query first.

        The default aggregates ``map_name`` per candidate (:meth:`map_score`).

        Parameters
        ----------
        candidates : sequence of n Candidate
            Unlabelled only; ``context.labelled`` holds the labelled ones.
        context : StrategyContext

        Returns
        -------
        (n,) float ndarray
        """
        if self.map_name is None:
            raise NotImplementedError(f"{type(self).__name__} must override score() or set "
                                      "map_name.")
        return np.array([self.map_score(c) for c in candidates], dtype=np.float64)

    # -- helpers for subclasses -------------------------------------------------------------
    def get_map(self, c: Candidate, name: str | None = None) -> np.ndarray:
        """``c.maps[name]``, or computed from ``c.probs`` for a one-pass map."""
        name = name or self.map_name
        assert name is not None
        if name in c.maps:
            return np.asarray(c.maps[name])
        if name in ONE_PASS_MAPS and c.probs is not None:
            return ONE_PASS_MAPS[name](c.probs)
        raise ValueError(self._missing_map_message(name, [c.key]))

    def map_score(self, c: Candidate, name: str | None = None) -> float:
        """Aggregate one map of ``c`` with this strategy's aggregation options (or its
        precomputed ``c.scores[name]``)."""
        if (name or self.map_name) in c.scores:
            return float(c.scores[name or self.map_name])
        return aggregate(self.get_map(c, name), how=self.aggregation,
                         topk_fraction=self.topk_fraction, probs=c.probs,
                         foreground_only=self.foreground_only, boundary_band=self.boundary_band)

    def score_label(self) -> str:
        """How the score is described in a reason, e.g. ``"top-10% mean BALD"``."""
        what = MAP_LABELS.get(self.map_name or "", self.map_name or self.name)
        agg = {"topk": f"top-{self.topk_fraction * 100:.3g}% mean", "mean": "mean",
               "sum": "summed", "max": "maximum"}[self.aggregation]
        where = ""
        if self.foreground_only:
            where = " over the predicted foreground"
            if self.boundary_band:
                where += f" (+{self.boundary_band} px)"
        elif self.boundary_band:
            where = f" within {self.boundary_band} px of the predicted boundary"
        return f"{agg} {what}{where}"

    def _missing_map_message(self, name: str, keys: list[str]) -> str:
        how = {
            "bald": "predict with mode='mc' and maps=('bald',)",
            "variance": "predict with mode='mc' and maps=('variance',)",
            "tta": "predict with mode='tta' and maps=('tta',)",
            "ensemble": "predict the committee with mode='ensemble' and maps=('ensemble',)",
            "grad_norm": _HOW["grad_norm"],
        }.get(name, f"predict with maps=({name!r},) or pass probs")
        return (f"Strategy {self.name!r} needs the {name!r} map for every candidate (missing for "
                f"{_few(keys)}); {how}.")

    # -- validation of what the session handed over ----------------------------------------
    def check_candidates(self, pool: Sequence[Candidate], labelled: Sequence[Candidate]) -> None:
        """Raise a ValueError naming what is missing and how to compute it."""
        if self.map_name is not None:
            missing = [c.key for c in pool if self.map_name not in c.maps
                       and self.map_name not in c.scores
                       and not (self.map_name in ONE_PASS_MAPS and c.probs is not None)]
            if missing:
                raise ValueError(self._missing_map_message(self.map_name, missing))
        if self.foreground_only or self.boundary_band or self.cost_aware:
            self._require([c for c in pool if not c.scores], "probs")
        if self.needs_features:
            self._require(pool, "features")
            if self.needs_labelled_set:
                self._require(labelled, "features")
        if self.needs_images:
            self._require(pool, "image")

    def _require(self, cands: Sequence[Candidate], attr: str) -> None:
        missing = [c.key for c in cands if getattr(c, attr) is None]
        if missing:
            raise ValueError(f"Strategy {self.name!r} needs Candidate.{attr} for every "
                             f"{'labelled ' if cands and cands[0].labelled else ''}candidate "
                             f"(missing for {_few(missing)}); {_HOW[attr]}.")

    # -- the shared selection ---------------------------------------------------------------
    def select(
        self,
        candidates: Sequence[Candidate],
        k: int = 1,
        context: StrategyContext | None = None,
    ) -> list[Pick]:
        """Choose ``k`` candidates to annotate next.

        Parameters
        ----------
        candidates : sequence of Candidate
            The pool (images and/or regions, possibly of several images); labelled ones
            (``labelled=True``) are only context.
        k : int
            Batch size; fewer picks are returned when fewer candidates are unlabelled.
        context : StrategyContext, optional

        Returns
        -------
        list of Pick
            In batch order (``rank`` 1, 2, ...), each with a one-line reason.
        """
        k = check_positive(k, name="k", integer=True)
        scored = self._scored(candidates, context)
        if scored is None:
            return []
        pool, raw, ranked, costs, ctx = scored
        k = min(k, len(pool))
        n_random = _n_random(k, self.random_fraction)
        chosen = self._select_batch(pool, ranked, k - n_random, ctx)
        if n_random:
            chosen = self._mix_random(chosen, len(pool), k, ctx.rng)
        return self._picks(pool, raw, ranked, costs, chosen)

    def rank(self, candidates: Sequence[Candidate],
             context: StrategyContext | None = None) -> list[Pick]:
        """Every unlabelled candidate in the order to ask for them one at a time, scored once:
        :meth:`select`'s ``k = 1`` pick first, then the others by score, each with its reason.

        The session keeps this as its queue of next suggestions, valid until the model or
        the strategy changes.
        """
        scored = self._scored(candidates, context)
        if scored is None:
            return []
        pool, raw, ranked, costs, ctx = scored
        if self._samples():
            order = self._select_batch(pool, ranked, len(pool), ctx)
        else:
            first = self._select_batch(pool, ranked, 1, ctx)
            top = first[0][0]
            order = first + [(int(i), "") for i in np.argsort(-ranked, kind="stable")
                             if int(i) != top]
        if self.random_fraction:
            n_scored = len(pool) - _n_random(len(pool), self.random_fraction)
            order = self._mix_random(order[:n_scored], len(pool), len(pool), ctx.rng)
        return self._picks(pool, raw, ranked, costs, order)

    def _mix_random(self, by_score: list[tuple[int, str]], n_pool: int, k: int,
                    rng: np.random.Generator) -> list[tuple[int, str]]:
        """``k`` picks: position ``j`` is a uniform draw from the candidates not picked yet
        where ``floor((j + 1) f) > floor(j f)`` (``f = random_fraction``), else the next of
        ``by_score``."""
        f = self.random_fraction
        taken = {i for i, _ in by_score}
        left = rng.permutation([i for i in range(n_pool) if i not in taken]).tolist()
        scored = iter(by_score)
        out: list[tuple[int, str]] = []
        for j in range(k):
            if math.floor((j + 1) * f) > math.floor(j * f) and left:
                out.append((int(left.pop()), f"drawn at random (random_fraction "
                                              f"{format_number(f)}, seed {self.seed})"))
            else:
                nxt = next(scored, None)
                if nxt is None:
                    break
                out.append(nxt)
        return out

    def estimate_cost(self, n_candidates: int, *, pixels_per_image: int = 256 * 256) -> float:
        """Seconds this strategy's own scoring of ``n_candidates`` takes on a CPU, beyond the
        predictions the session computes for it (stated before a pool is scored). Map
        strategies aggregate a map: about 20 ns a pixel."""
        return 2e-8 * n_candidates * pixels_per_image

    def _scored(self, candidates: Sequence[Candidate], context: StrategyContext | None):
        """Checked pool, raw and ranked scores, costs and context (None: nothing to pick)."""
        context = context or StrategyContext()
        cands = list(candidates)
        for c in cands:
            if not isinstance(c, Candidate):
                raise TypeError(f"Expected Candidate objects, got {type(c).__name__}.")
        keys = [c.key for c in cands]
        if len(set(keys)) != len(keys):
            dup = sorted({x for x in keys if keys.count(x) > 1})
            raise ValueError(f"Candidate keys must be unique; duplicated: {_few(dup)}.")
        pool = [c for c in cands if not c.labelled]
        labelled = [c for c in cands if c.labelled] + list(context.labelled)
        if not pool:
            return None
        rng = context.rng if context.rng is not None else np.random.default_rng(
            [self.seed, max(int(context.round), 0)])
        ctx = dataclasses.replace(context, labelled=labelled, rng=rng)
        self.check_candidates(pool, labelled)

        raw = np.asarray(self.score(pool, ctx), dtype=np.float64)
        if raw.shape != (len(pool),):
            raise RuntimeError(f"{type(self).__name__}.score returned shape {raw.shape}, expected "
                               f"({len(pool)},).")
        if np.isnan(raw).any():
            nan_keys = [c.key for c, s in zip(pool, raw, strict=True) if np.isnan(s)]
            raise ValueError(f"Strategy {self.name!r} produced NaN scores for {_few(nan_keys)}.")
        costs = None
        ranked = raw
        if self.cost_aware:
            costs = np.array([self._cost(c, ctx) for c in pool])
            ranked = raw / costs
        return pool, raw, ranked, costs, ctx

    def _picks(self, pool, raw, ranked, costs, chosen: list[tuple[int, str]]) -> list[Pick]:
        order = np.argsort(-ranked, kind="stable")
        position = np.empty(len(pool), int)
        position[order] = np.arange(1, len(pool) + 1)
        noun = pool_noun(pool)
        picks = []
        for rank, (i, note) in enumerate(chosen, start=1):
            c = pool[i]
            cost = None if costs is None else costs[i]
            main = self._reason(int(position[i]), len(pool), noun, raw[i], cost)
            if not main and not note:  # a set strategy's later picks: say where they rank
                main = QueryStrategy._reason(self, int(position[i]), len(pool), noun, raw[i],
                                             cost)
            reason = "; ".join(part for part in (main, note) if part)
            picks.append(Pick(key=c.key, image_id=c.image_id, box=c.box,
                              score=float(ranked[i]), rank=rank, reason=reason))
        return picks

    def _reason(self, position: int, n: int, noun: str, raw: float, cost: float | None) -> str:
        """Main clause of a reason: ``highest top-10% mean BALD (0.41) among 37 images``."""
        if cost is None:
            return (f"{ordinal(position)} {self.score_label()} ({format_number(raw)}) among {n} "
                    f"{noun}")
        return (f"{ordinal(position)} {self.score_label()} per correction cost "
                f"({format_number(raw)} / {format_number(cost)}) among {n} {noun}")

    def _samples(self) -> bool:
        """True when this strategy's picks are power-sampled (:func:`.batch.power_order`);
        set-selection strategies (their own ``_select_batch``) ignore the option."""
        own = type(self)._select_batch is not QueryStrategy._select_batch
        return self.diversity == "power" and not own

    def _cost(self, c: Candidate, ctx: StrategyContext) -> float:
        if ctx.cost is not None:
            cost = float(ctx.cost(c))
        elif "cost" in c.scores:
            cost = float(c.scores["cost"])
        else:
            cost = correction_cost(c.probs, constant=self.cost_constant)
        if not (cost > 0 and math.isfinite(cost)):
            raise ValueError(f"The correction cost of {c.key!r} is {cost!r}; it must be a "
                             "positive number (raise cost_constant above 0).")
        return cost

    def _select_batch(
        self, pool: Sequence[Candidate], scores: np.ndarray, k: int, ctx: StrategyContext
    ) -> list[tuple[int, str]]:
        """Pick ``k`` indices into ``pool`` (with a note each); ``scores`` as ranked.

        Default: the top score, then k-center greedy among the ``diversity_pool * k`` best;
        with ``diversity="power"`` a draw proportional to ``score ** power_beta``.
        """
        if self._samples():
            assert ctx.rng is not None  # _scored always sets one
            order = power_order(scores, ctx.rng, beta=self.power_beta)[:k]
            return [(int(i), f"drawn with probability proportional to the score"
                     f"{'' if self.power_beta == 1 else f' ** {format_number(self.power_beta)}'}"
                     f" (power sampling, seed {self.seed})") for i in order]
        if k == 1 or self.diversity == "none":
            return [(int(i), "") for i in np.argsort(-scores, kind="stable")[:k]]
        return diverse_batch(pool, scores, k, pool_factor=self.diversity_pool)


def _n_random(k: int, fraction: float) -> int:
    """How many of ``k`` picks are random draws: ``floor(k * fraction)``."""
    return int(math.floor(k * fraction)) if fraction else 0


def _check_bool(value: Any, name: str) -> bool:
    if not isinstance(value, bool | np.bool_):
        raise ValueError(f"{name} must be True or False, got {value!r}.")
    return bool(value)


def _few(keys: Sequence[str], n: int = 3) -> str:
    shown = ", ".join(repr(k) for k in list(keys)[:n])
    more = len(keys) - n
    return shown + (f" and {more} more" if more > 0 else "")
