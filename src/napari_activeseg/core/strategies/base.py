"""The query-strategy interface: candidates in, ranked picks with a reason out.

A :class:`QueryStrategy` scores *candidates* -- whole images or windows inside images
(:mod:`.regions`) -- from what the session computed for them (mean probabilities, uncertainty
maps, descriptors, gradient embeddings, images). Its class attributes declare what it needs
(``needs_mc_samples``, ``needs_features``, ...), so the session computes exactly that and never
special-cases a strategy; :attr:`QueryStrategy.requirements` sums them up.

Subclasses override **one** method, :meth:`QueryStrategy.score` (higher = query first). Map
strategies do not even do that: setting ``map_name`` is enough, the default ``score``
aggregates that map with the strategy's aggregation options (:func:`aggregate`).

:meth:`QueryStrategy.select` is shared: it ranks, divides by the correction cost when
``cost_aware``, picks a batch, and writes the one-line reasons shown in the GUI. Batch
diversity for ``k > 1`` (``diversity="kcenter"``, the default): k-center greedy among the
``diversity_pool * k`` highest-scoring candidates, in the space of the L2-normalised
descriptors when every candidate has one (else gradient embeddings, else a spatial
distance: regions of different images count as far apart, regions of one image by the
distance of their centres), starting from the top-scoring candidate. So the first pick is
always the best-scoring one and a batch never holds near-duplicates while better-separated
uncertain candidates exist. Set-selection strategies (coreset, badge, alges, suggestive,
task_similarity) choose their batch themselves by overriding the private hook
``_select_batch``; their ``score`` still ranks single picks.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from .. import uncertainty as unc
from ..validation import check_choice, check_positive
from . import diversity as div

__all__ = [
    "AGGREGATIONS",
    "DIVERSITIES",
    "Candidate",
    "Pick",
    "QueryStrategy",
    "StrategyContext",
    "aggregate",
    "restriction_mask",
]

AGGREGATIONS = ("topk", "mean", "sum", "max")
DIVERSITIES = ("kcenter", "none")

Box = tuple[int, int, int, int]

#: Human names of the maps, for the reasons shown in the GUI.
MAP_LABELS = {
    "entropy": "entropy",
    "margin": "margin uncertainty",
    "least_confidence": "least confidence",
    "bald": "BALD",
    "variance": "MC-dropout variance",
    "expected_entropy": "expected entropy",
    "tta": "TTA disagreement",
    "ensemble": "committee disagreement",
    "tta_disagreement": "TTA disagreement",
    "ensemble_disagreement": "committee disagreement",
    "grad_norm": "gradient norm",
}

_ONE_PASS = {
    "entropy": unc.entropy,
    "margin": unc.margin,
    "least_confidence": unc.least_confidence,
}

# What the session must compute when a candidate lacks something; used in error messages.
_HOW = {
    "probs": "pass the mean class probabilities (Prediction.probs, (K, H, W))",
    "features": "compute them with core.strategies.embeddings.image_descriptor(model, image)",
    "embedding": "compute it with core.strategies.embeddings.gradient_embedding(model, image)[0]",
    "grad_norm": "put gradient_embedding(model, image)[1] into Candidate.maps['grad_norm']",
    "image": "pass the normalised (C, H, W) image in Candidate.image",
}


@dataclass(eq=False)
class Candidate:
    """One thing the annotator could be asked to label: an image, or a window of one.

    Attributes
    ----------
    key : str
        Unique among the candidates of one call: the image id, or
        ``f"{image_id}@{y0},{x0},{y1},{x1}"`` for a region (:func:`.regions.region_key`).
    image_id : str
    box : (y0, x0, y1, x1) tuple of int, optional
        The window inside the image (half-open); None for a whole image.
    probs : (K, H, W) float ndarray, optional
        Mean class probabilities, cropped to ``box`` for a region.
    maps : dict of str -> (H, W) float ndarray
        Uncertainty maps (names of :data:`core.uncertainty.MAP_NAMES`, ``"tta"``,
        ``"ensemble"``, ``"grad_norm"``), cropped like ``probs``.
    features : (D,) float ndarray, optional
        Image descriptor (pooled bottleneck features).
    embedding : (E,) float ndarray, optional
        Gradient embedding of the last layer (BADGE), ``E = K * width``.
    image : (C, H, W) float32 ndarray, optional
        The normalised image (only for strategies with ``needs_images``).
    labelled : bool
        Already labelled: used by strategies that need the labelled set, never picked.
    """

    key: str
    image_id: str
    box: Box | None = None
    probs: np.ndarray | None = None
    maps: dict[str, np.ndarray] = field(default_factory=dict)
    features: np.ndarray | None = None
    embedding: np.ndarray | None = None
    image: np.ndarray | None = None
    labelled: bool = False

    def __repr__(self) -> str:  # arrays would flood a log line
        parts = [f"key={self.key!r}"]
        if self.box is not None:
            parts.append(f"box={self.box}")
        if self.probs is not None:
            parts.append(f"probs={self.probs.shape}")
        if self.maps:
            parts.append(f"maps={sorted(self.maps)}")
        for name in ("features", "embedding", "image"):
            v = getattr(self, name)
            if v is not None:
                parts.append(f"{name}={np.shape(v)}")
        if self.labelled:
            parts.append("labelled")
        return f"Candidate({', '.join(parts)})"


@dataclass(frozen=True)
class Pick:
    """One suggestion: what to annotate, its score, its place in the batch, and why.

    ``score`` is the value the ranking used (divided by the correction cost for cost-aware
    strategies); ``rank`` is 1 for the first pick of the batch.
    """

    key: str
    image_id: str
    box: Box | None
    score: float
    rank: int
    reason: str


@dataclass
class StrategyContext:
    """What a strategy may need besides the candidates.

    Attributes
    ----------
    round : int
        Active-learning round (0 = first query); seeds the random strategies.
    rng : numpy Generator, optional
        Overrides the strategy's own ``default_rng([seed, round])``.
    labelled : sequence of Candidate
        Labelled items (besides those passed with ``labelled=True``); only read by strategies
        with ``needs_labelled_set``.
    cost : callable Candidate -> float, optional
        Correction-cost estimate for cost-aware ranking (default
        :func:`.regions.correction_cost` of the candidate's probabilities).
    stop : callable -> bool, optional
        Polled by expensive strategies (task_similarity) between steps; when it returns True
        they raise :class:`InterruptedError`.
    """

    round: int = 0
    rng: np.random.Generator | None = None
    labelled: Sequence[Candidate] = ()
    cost: Callable[[Candidate], float] | None = None
    stop: Callable[[], bool] | None = None


# --------------------------------------------------------------------------------------------
# aggregation of a pixel map into one score
# --------------------------------------------------------------------------------------------


def _disk(radius: int) -> np.ndarray:
    r = int(radius)
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
    return yy * yy + xx * xx <= r * r


def restriction_mask(
    probs: np.ndarray, *, foreground_only: bool = False, boundary_band: int = 0
) -> np.ndarray | None:
    """Pixels an aggregation is restricted to, from the predicted segmentation.

    Parameters
    ----------
    probs : (K, H, W) ndarray
        Class probabilities; the prediction is their arg-max, foreground = class > 0.
    foreground_only : bool
        Keep the predicted foreground (widened by ``boundary_band`` px, Euclidean disk).
    boundary_band : int
        Without ``foreground_only``: keep the band of pixels within ``boundary_band`` px of the
        predicted foreground/background boundary, on both sides (where the uncertainty of thin
        structures -- vessels, membranes -- lives).

    Returns
    -------
    (H, W) bool ndarray, or None when nothing is restricted
        May be all False (e.g. no predicted foreground); :func:`aggregate` then falls back to
        the whole map.
    """
    if not foreground_only and boundary_band <= 0:
        return None
    from scipy import ndimage as ndi

    p = np.asarray(probs)
    if p.ndim != 3:
        raise ValueError(f"probs must be (K, H, W) to restrict to the predicted foreground, got "
                         f"shape {p.shape}.")
    fg = p.argmax(axis=0) > 0
    if not fg.any():
        return fg
    band = int(boundary_band)
    if foreground_only:
        return ndi.binary_dilation(fg, structure=_disk(band)) if band > 0 else fg
    if fg.all():
        return ~fg
    fp = _disk(band)
    outer = ndi.binary_dilation(fg, structure=fp) & ~fg
    # erosion with a border of background so the image edge does not count as a boundary
    inner = fg & ~ndi.binary_erosion(fg, structure=fp, border_value=1)
    return outer | inner


def aggregate(
    map_: np.ndarray,
    *,
    how: str = "topk",
    topk_fraction: float = 0.1,
    probs: np.ndarray | None = None,
    foreground_only: bool = False,
    boundary_band: int = 0,
) -> float:
    """Reduce a per-pixel uncertainty map to one score.

    Parameters
    ----------
    map_ : (H, W) float ndarray
        Higher = more uncertain.
    how : {"topk", "mean", "sum", "max"}
        ``topk``: mean of the ``ceil(topk_fraction * n)`` largest values (at least one), which
        neither drowns a small uncertain structure in a large easy background (``mean``) nor
        follows a single noisy pixel (``max``). ``sum`` grows with the area (bigger images or
        regions score higher).
    topk_fraction : float in (0, 1]
    probs : (K, H, W) ndarray, optional
        Needed for ``foreground_only`` / ``boundary_band`` (see :func:`restriction_mask`).
    foreground_only, boundary_band
        Restrict to the predicted foreground (plus a band) or to a band around the predicted
        boundary. An empty restriction falls back to the whole map.

    Returns
    -------
    float
    """
    m = np.asarray(map_, dtype=np.float64)
    if m.ndim != 2 or m.size == 0:
        raise ValueError(f"Expected a non-empty (H, W) map, got shape {m.shape}.")
    if not np.isfinite(m).all():
        raise ValueError("The uncertainty map contains NaN or infinite values.")
    check_choice(how, AGGREGATIONS, name="aggregation")
    _check_fraction(topk_fraction)
    band = check_positive(boundary_band, name="boundary_band", allow_zero=True, integer=True)
    if foreground_only or band > 0:
        if probs is None:
            raise ValueError("foreground_only / boundary_band need the class probabilities "
                             "(probs=) to find the predicted foreground.")
        if np.shape(probs)[1:] != m.shape:
            raise ValueError(f"probs {np.shape(probs)} and the map {m.shape} differ in size.")
        mask = restriction_mask(probs, foreground_only=foreground_only, boundary_band=band)
        vals = m[mask] if mask is not None and mask.any() else m.ravel()
    else:
        vals = m.ravel()
    if how == "mean":
        return float(vals.mean())
    if how == "sum":
        return float(vals.sum())
    if how == "max":
        return float(vals.max())
    n = max(1, math.ceil(topk_fraction * vals.size))
    return float(np.partition(vals, vals.size - n)[vals.size - n:].mean())


def _check_fraction(value: Any) -> float:
    value = check_positive(value, name="topk_fraction")
    if value > 1:
        raise ValueError(f"topk_fraction must be in (0, 1], got {value!r} (0.1 = top 10%).")
    return float(value)


def _ordinal(n: int) -> str:
    if n == 1:
        return "highest"
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}-highest"


def _fmt(x: float) -> str:
    return f"{x:.3g}"


# --------------------------------------------------------------------------------------------
# the strategy
# --------------------------------------------------------------------------------------------


class QueryStrategy:
    """Base class of all query strategies.

    Parameters (keyword-only; every strategy accepts these)
    ----------
    aggregation : {"topk", "mean", "sum", "max"}
        How a pixel map becomes a candidate score (:func:`aggregate`).
    topk_fraction : float in (0, 1]
        Fraction of pixels averaged by ``"topk"``.
    foreground_only : bool
        Aggregate over the predicted foreground (+ ``boundary_band``) only.
    boundary_band : int >= 0
        Band width in pixels (see :func:`restriction_mask`).
    diversity : {"kcenter", "none"}
        Batch diversity for ``k > 1`` (see the module docstring). Ignored by set-selection
        strategies, which diversify in their own way.
    diversity_pool : int >= 1
        k-center runs among the ``diversity_pool * k`` best-scoring candidates.
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
        cost_aware: bool = False,
        cost_constant: float = 64.0,
        seed: int = 0,
    ) -> None:
        self.aggregation = check_choice(aggregation, AGGREGATIONS, name="aggregation")
        self.topk_fraction = _check_fraction(topk_fraction)
        self.foreground_only = _check_bool(foreground_only, "foreground_only")
        self.boundary_band = check_positive(boundary_band, name="boundary_band", allow_zero=True,
                                            integer=True)
        self.diversity = check_choice(diversity, DIVERSITIES, name="diversity")
        self.diversity_pool = check_positive(diversity_pool, name="diversity_pool", integer=True)
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
        if name in _ONE_PASS and c.probs is not None:
            return _ONE_PASS[name](c.probs)
        raise ValueError(self._missing_map_message(name, [c.key]))

    def map_score(self, c: Candidate, name: str | None = None) -> float:
        """Aggregate one map of ``c`` with this strategy's aggregation options."""
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
                       and not (self.map_name in _ONE_PASS and c.probs is not None)]
            if missing:
                raise ValueError(self._missing_map_message(self.map_name, missing))
        if self.foreground_only or self.boundary_band or self.cost_aware:
            self._require(pool, "probs")
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
        context = context or StrategyContext()
        k = check_positive(k, name="k", integer=True)
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
            return []
        rng = context.rng if context.rng is not None else np.random.default_rng(
            [self.seed, max(int(context.round), 0)])
        ctx = dataclasses.replace(context, labelled=labelled, rng=rng)
        self.check_candidates(pool, labelled)
        k = min(k, len(pool))

        raw = np.asarray(self.score(pool, ctx), dtype=np.float64)
        if raw.shape != (len(pool),):
            raise RuntimeError(f"{type(self).__name__}.score returned shape {raw.shape}, expected "
                               f"({len(pool)},).")
        if np.isnan(raw).any():
            raise ValueError(f"Strategy {self.name!r} produced NaN scores for "
                             f"{_few([c.key for c, s in zip(pool, raw, strict=True) if s != s])}.")
        costs = None
        ranked = raw
        if self.cost_aware:
            costs = np.array([self._cost(c, ctx) for c in pool])
            ranked = raw / costs

        chosen = self._select_batch(pool, ranked, k, ctx)
        order = np.argsort(-ranked, kind="stable")
        position = np.empty(len(pool), int)
        position[order] = np.arange(1, len(pool) + 1)
        noun = _noun(pool)
        picks = []
        for rank, (i, note) in enumerate(chosen, start=1):
            c = pool[i]
            main = self._reason(int(position[i]), len(pool), noun, raw[i],
                                None if costs is None else costs[i])
            reason = "; ".join(part for part in (main, note) if part)
            picks.append(Pick(key=c.key, image_id=c.image_id, box=c.box,
                              score=float(ranked[i]), rank=rank, reason=reason))
        return picks

    def _reason(self, position: int, n: int, noun: str, raw: float, cost: float | None) -> str:
        """Main clause of a reason: ``highest top-10% mean BALD (0.41) among 37 images``."""
        if cost is None:
            return f"{_ordinal(position)} {self.score_label()} ({_fmt(raw)}) among {n} {noun}"
        return (f"{_ordinal(position)} {self.score_label()} per correction cost "
                f"({_fmt(raw)} / {_fmt(cost)}) among {n} {noun}")

    def _cost(self, c: Candidate, ctx: StrategyContext) -> float:
        if ctx.cost is not None:
            cost = float(ctx.cost(c))
        else:
            from .regions import correction_cost

            cost = correction_cost(c.probs, constant=self.cost_constant)
        if not (cost > 0 and math.isfinite(cost)):
            raise ValueError(f"The correction cost of {c.key!r} is {cost!r}; it must be a "
                             "positive number (raise cost_constant above 0).")
        return cost

    def _select_batch(
        self, pool: Sequence[Candidate], scores: np.ndarray, k: int, ctx: StrategyContext
    ) -> list[tuple[int, str]]:
        """Pick ``k`` indices into ``pool`` (with a note each); ``scores`` as ranked.

        Default: the top score, then k-center greedy among the ``diversity_pool * k`` best.
        """
        order = np.argsort(-scores, kind="stable")
        if k == 1 or self.diversity == "none":
            return [(int(i), "") for i in order[:k]]
        m = min(len(pool), max(k, self.diversity_pool * k))
        top = [pool[i] for i in order[:m]]
        space, x = _diversity_space(top)
        if x is not None:
            local, dists = div.kcenter_greedy(x, k, priority=-np.arange(m))
            out = []
            for j, d in zip(local, dists, strict=True):
                note = "" if math.isinf(d) else (
                    f"diverse batch: {space} distance {_fmt(d)} to the nearest earlier pick "
                    f"(k-center among the top {m})")
                out.append((int(order[j]), note))
            return out
        return [(int(order[j]), note) for j, note in _spatial_kcenter(top, k)]


def _check_bool(value: Any, name: str) -> bool:
    if not isinstance(value, bool | np.bool_):
        raise ValueError(f"{name} must be True or False, got {value!r}.")
    return bool(value)


def _few(keys: Sequence[str], n: int = 3) -> str:
    shown = ", ".join(repr(k) for k in list(keys)[:n])
    more = len(keys) - n
    return shown + (f" and {more} more" if more > 0 else "")


def _noun(pool: Sequence[Candidate]) -> str:
    boxes = [c.box is not None for c in pool]
    if all(boxes):
        return "regions"
    if not any(boxes):
        return "images"
    return "candidates"


def _diversity_space(cands: Sequence[Candidate]) -> tuple[str, np.ndarray | None]:
    """L2-normalised descriptors, else gradient embeddings, for diversity; else None."""
    for attr, label in (("features", "feature"), ("embedding", "gradient-embedding")):
        vecs = [getattr(c, attr) for c in cands]
        if all(v is not None for v in vecs):
            sizes = {np.size(v) for v in vecs}
            if len(sizes) == 1:
                x = np.stack([np.asarray(v, np.float64).ravel() for v in vecs])
                return label, div.l2_normalize(x)
    return "spatial", None


def _spatial_kcenter(cands: Sequence[Candidate], k: int) -> list[tuple[int, str]]:
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
