"""How sure the model is of each object it predicted, and what a reviewer is likely to fix.

For an instance image (one id per object, :mod:`.instances`) and the model's semantic
probabilities ``probs`` (K, H, W), every object gets

``inside``
    the mean uncertainty of its pixels;
``boundary``
    the mean uncertainty on its boundary ring (its pixels within ``ring`` px of its edge);
``core``
    the 90th percentile (``CORE_QUANTILE``) of the uncertainty of its pixels beyond the ring
    (all of them for an object too small to have a core): high when an uncertain seam runs
    through it (two objects found as one), which a mean would dilute;
``contact``
    the mean uncertainty of the ring pixels next to another object (0 without a neighbour):
    where the model hesitates between "one object" and "two";
``objectness``
    the mean foreground probability ``1 - p(background)`` of its pixels;
``doubt``
    ``max(core, contact, 1 - objectness)``, in [0, 1]: one number per object to colour it by
    and to rank by. The outline to the background is left out: it is soft for every object,
    however right.

The uncertainty is the normalised entropy of ``probs`` (``H / log K``, in [0, 1]) unless a map
is given (then it should lie in [0, 1] too, e.g. ``least_confidence``).

The object-level effort estimate (:func:`estimate_object_effort`) counts, with fixed
thresholds (not fitted to a dataset): objects likely to *remove* (objectness below
``REMOVE_BELOW``: the model barely believes in them), objects likely to *split or merge*
(core or contact uncertainty above ``SPLIT_ABOVE``), and regions likely to *add*: blobs of
at least ``ADD_MIN_PIXELS`` that the model half sees (foreground probability from
``ADD_ABOVE`` to 0.5, not predicted as objects) more than ``ring`` px away from every object,
so neither the soft halo around an object nor a weak model's hazy background counts. :func:`object_score` turns it into one score per window for the ``objects``
query strategy: the expected number of object edits, ``sum(doubt) + add``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = [
    "ADD_ABOVE",
    "ADD_MIN_PIXELS",
    "CORE_QUANTILE",
    "REMOVE_BELOW",
    "RING",
    "SPLIT_ABOVE",
    "ObjectEffortEstimate",
    "ObjectUncertainty",
    "boundary_ring",
    "estimate_object_effort",
    "normalized_entropy",
    "object_score",
    "object_uncertainty",
]

CORE_QUANTILE = 0.9  #: the quantile of an object's core uncertainty that is its ``core``
RING = 2  #: width in pixels of an object's boundary ring (and of the halo around it)
REMOVE_BELOW = 0.75  #: mean objectness below this: an object likely to remove
SPLIT_ABOVE = 0.5  #: core or contact uncertainty above this: likely to split or merge
ADD_ABOVE = 0.3  #: foreground probability from this to 0.5 outside objects: maybe missed
ADD_MIN_PIXELS = 16  #: the smallest uncertain blob counted as an object likely to add


def normalized_entropy(probs: np.ndarray) -> np.ndarray:
    """``-sum p log p / log K`` of (K, H, W) probabilities: (H, W) float32 in [0, 1]."""
    p = np.clip(np.asarray(probs, np.float32), 1e-8, 1.0)
    k = p.shape[0]
    if k < 2:
        return np.zeros(p.shape[1:], np.float32)
    return (-(p * np.log(p)).sum(0) / math.log(k)).astype(np.float32)


def boundary_ring(instances: np.ndarray, ring: int = RING, *, contact: bool = False
                  ) -> np.ndarray:
    """The ids of the pixels within ``ring`` px of their object's edge (0 elsewhere);
    ``contact``: only those within ``ring`` px of another object."""
    from scipy import ndimage as ndi

    ids = np.asarray(instances)
    if ring < 1:
        raise ValueError(f"ring must be at least 1 pixel, got {ring}.")
    size = 2 * ring + 1
    larger = ndi.maximum_filter(ids, size=size, mode="nearest") > ids
    if contact:  # the background counts as no neighbour
        others = np.where(ids == 0, ids.max(initial=0) + 1, ids)
        edge = larger | (ndi.minimum_filter(others, size=size, mode="nearest") < ids)
    else:
        edge = larger | (ndi.minimum_filter(ids, size=size, mode="nearest") < ids)
    return np.where(edge & (ids > 0), ids, 0)


def _means(ids: np.ndarray, values: np.ndarray, n: int) -> np.ndarray:
    """Mean of ``values`` per id 1..n (nan for an id without pixels)."""
    count = np.bincount(ids.ravel(), minlength=n + 1)[1:]
    total = np.bincount(ids.ravel(), weights=values.ravel(), minlength=n + 1)[1:]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def _quantiles(ids: np.ndarray, values: np.ndarray, n: int, q: float) -> np.ndarray:
    """The ``q`` quantile (lower) of ``values`` per id 1..n (nan for an id without pixels),
    from one sort of all pixels by (id, value)."""
    flat, vals = ids.ravel(), values.ravel()
    order = np.lexsort((vals, flat))
    count = np.bincount(flat, minlength=n + 1)
    start = np.concatenate([[0], np.cumsum(count)[:-1]])
    pos = start[1:] + np.floor(q * np.maximum(count[1:] - 1, 0)).astype(np.int64)
    out = vals[order][np.minimum(pos, flat.size - 1)].astype(np.float64)
    return np.where(count[1:] > 0, out, np.nan)


@dataclass(frozen=True)
class ObjectUncertainty:
    """Per-object uncertainty (module doc); arrays of one row per id in ``ids``."""

    ids: np.ndarray
    area: np.ndarray
    inside: np.ndarray
    boundary: np.ndarray
    core: np.ndarray
    contact: np.ndarray
    objectness: np.ndarray

    @property
    def doubt(self) -> np.ndarray:
        """``max(core, contact, 1 - objectness)`` per object, in [0, 1]."""
        return np.fmax(np.fmax(self.core, self.contact), 1.0 - self.objectness)

    def lookup(self, values: np.ndarray | None = None) -> np.ndarray:
        """``values`` (default :attr:`doubt`) indexed by id: ``lut[instances]`` paints each
        object with its value (0 where there is no object)."""
        values = self.doubt if values is None else np.asarray(values)
        top = int(self.ids.max()) if self.ids.size else 0
        lut = np.zeros(top + 1, np.float32)
        lut[self.ids] = np.nan_to_num(values, nan=0.0)
        return lut

    def table(self) -> dict[str, np.ndarray]:
        """Columns for a table or a napari layer's features (one row per object)."""
        return {"label": self.ids, "area_px": self.area,
                "uncertainty": np.round(self.inside, 4),
                "boundary_uncertainty": np.round(self.boundary, 4),
                "contact_uncertainty": np.round(self.contact, 4),
                "objectness": np.round(self.objectness, 4),
                "doubt": np.round(self.doubt, 4)}


def object_uncertainty(instances: np.ndarray, probs: np.ndarray, *,
                       uncertainty: np.ndarray | None = None,
                       ring: int = RING) -> ObjectUncertainty:
    """Per-object uncertainty of ``instances`` (H, W; ids need not be consecutive) under the
    probabilities ``probs`` (K, H, W); ``uncertainty``: an (H, W) map in [0, 1] to use instead
    of the normalised entropy."""
    ids = np.asarray(instances)
    probs = np.asarray(probs)
    if probs.ndim != 3 or probs.shape[1:] != ids.shape:
        raise ValueError(f"probs must be (K, H, W) with (H, W) = the instances' shape "
                         f"{ids.shape}, got {probs.shape}.")
    if ids.size and (ids.min() < 0 or not np.issubdtype(ids.dtype, np.integer)):
        raise ValueError("instances must hold non-negative integer ids (0 = no object).")
    u = normalized_entropy(probs) if uncertainty is None else np.asarray(uncertainty, np.float32)
    if u.shape != ids.shape:
        raise ValueError(f"The uncertainty map has shape {u.shape}, the instances {ids.shape}.")
    ids = ids.astype(np.int64, copy=False)
    present = np.unique(ids[ids > 0])
    n = int(present.max()) if present.size else 0
    area = np.bincount(ids.ravel(), minlength=n + 1)[1:]
    inside = _means(ids, u, n)
    edge = boundary_ring(ids, ring)
    boundary = _means(edge, u, n)
    core = _quantiles(np.where(edge > 0, 0, ids), u, n, CORE_QUANTILE)
    core = np.where(np.isnan(core), inside, core)  # too small to have a core
    contact = np.nan_to_num(_means(boundary_ring(ids, ring, contact=True), u, n), nan=0.0)
    objectness = _means(ids, 1.0 - probs[0].astype(np.float64), n)
    pick = present - 1
    return ObjectUncertainty(present, area[pick], inside[pick], boundary[pick], core[pick],
                             contact[pick], objectness[pick])


@dataclass(frozen=True)
class ObjectEffortEstimate:
    """Objects a reviewer is likely to fix (module doc). ``remove`` and ``split_merge`` hold
    the ids; ``add`` counts the uncertain blobs outside every object."""

    remove: tuple[int, ...]
    split_merge: tuple[int, ...]
    add: int

    @property
    def total(self) -> int:
        return len(self.remove) + len(self.split_merge) + self.add

    def to_dict(self) -> dict[str, int]:
        return {"add": self.add, "remove": len(self.remove),
                "split_merge": len(self.split_merge), "total": self.total}


def estimate_object_effort(instances: np.ndarray, probs: np.ndarray, *,
                           per_object: ObjectUncertainty | None = None,
                           uncertainty: np.ndarray | None = None) -> ObjectEffortEstimate:
    """Which predicted objects are likely to be removed, split or merged, and how many
    objects are likely to be added (module doc)."""
    from scipy import ndimage as ndi

    ids = np.asarray(instances)
    ou = per_object or object_uncertainty(ids, probs, uncertainty=uncertainty)
    remove = ou.ids[ou.objectness < REMOVE_BELOW]
    unsure = np.fmax(ou.core, ou.contact) > SPLIT_ABOVE
    split = ou.ids[unsure & ~np.isin(ou.ids, remove)]
    near = ndi.binary_dilation(ids > 0, iterations=RING + 1)  # an object's soft halo
    fg = 1.0 - np.asarray(probs)[0]
    blobs, n = ndi.label((fg >= ADD_ABOVE) & (fg <= 0.5) & ~near)
    sizes = np.bincount(blobs.ravel(), minlength=n + 1)[1:]
    add = int(np.count_nonzero(sizes >= ADD_MIN_PIXELS))
    return ObjectEffortEstimate(tuple(int(i) for i in remove), tuple(int(i) for i in split),
                                add)


def object_score(instances: np.ndarray, probs: np.ndarray, *,
                 uncertainty: np.ndarray | None = None) -> float:
    """One window's expected object edits: the summed doubt of its objects plus the
    blobs likely to be added (higher = review first)."""
    ou = object_uncertainty(instances, probs, uncertainty=uncertainty)
    effort = estimate_object_effort(instances, probs, per_object=ou, uncertainty=uncertainty)
    return float(np.nansum(ou.doubt)) + effort.add
