"""Objects, not just pixels: the training target of an object class and its post-processing.

A project class is in "area" mode (semantic, the default) or "objects" mode (one id per
object, :meth:`Project.set_class_modes <napari_activeseg.core.project.Project>`). The
conventions, shared by the project, the session and the dock:

- an **instance image** is (H, W) uint16, 0 = no object, ids ``1..N`` (sequential) unique
  over the whole image; the class of object ``i`` is the class map's value at its pixels
  (every pixel of an object has one object class);
- the **class map** is derived from it: object pixels carry their object class.

Two formulations turn a network into objects (:data:`FORMULATIONS`, the project setting
``instance_formulation``):

``"distance"`` (the default of a new project)
    No extra output: the semantic prediction, split by a watershed on its distance
    transform (:func:`instances_from_distance`).
``"boundary"`` (the default of projects made before new projects recorded one)
    The 3-class target: the interior of every object is its class, a thin inner boundary of
    every object (:func:`skimage.segmentation.find_boundaries`, ``mode="inner"``) an extra
    output per object class (:func:`boundary_target`; ``ModelConfig.boundary_classes``).
    The network learns it with the ordinary losses; everything semantic (uncertainty,
    strategies, class-map exports) sees the boundary folded back into its class
    (:func:`napari_activeseg.core.model.fold_logits`, :func:`fold_probabilities`), so nothing
    downstream changes. Objects: the interior (boundaries carved out) split into cores,
    grown back over the class's foreground by a watershed (:func:`instances_from_boundary`).

Which is the default was measured (``benchmarks/objects.py``, 3 seeds, 4 / 12 / 28 labelled
images, docs/2026-12-01-objects.md): the distance watershed was ahead of the boundary head on
bbbc039_nuclei at every point and level with it on dsb2018_nuclei; it also trains a plain
semantic model (no extra output, boxes of large images included). Objects smaller than
:data:`MIN_SIZE_FRACTION` of the image's median object area are dropped, and, once the
project has labelled objects, also those under :data:`MIN_AREA_FRACTION` of the small end of
the labelled objects' areas (:func:`min_object_area`, decided at training and kept in the
model's ``min_object_area``): a model that breaks an image into hundreds of fragments makes
that image's own median fragment-sized, so the per-image rule alone keeps them all (seen on
bbbc039_nuclei, docs/2026-12-01-objects.md). Both scale with the data; no size constant per
dataset.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import math

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage as ndi
from skimage.feature import peak_local_max
from skimage.morphology import h_maxima
from skimage.segmentation import find_boundaries, watershed
from torch import nn

from .config import InferenceConfig
from .object_floor import MIN_AREA_FRACTION, MIN_AREA_OBJECTS, min_object_area
from .project import CLASS_MODES as MODES
from .project import INSTANCE_FORMULATIONS as FORMULATIONS

__all__ = [
    "FORMULATIONS", "MIN_AREA_FRACTION", "MIN_AREA_OBJECTS", "MIN_SIZE_FRACTION", "MODES",
    "SEED_DYNAMIC",
    "InstancePrediction", "boundary_target", "distance_target", "fold_labels",
    "fold_probabilities", "instances_from_boundary", "instances_from_distance",
    "instances_from_distance_head", "min_object_area",
    "predict_instances",
]

#: A watershed seed must rise this fraction of the typical object radius above the pass to a
#: higher maximum (:func:`_split`; measured on dsb2018 and bbbc039,
#: docs/2026-12-03-distance-split.md).
SEED_DYNAMIC = 0.05
#: Objects below this fraction of the image's median object area are dropped.
MIN_SIZE_FRACTION = 0.1
_MAX_ID = 65535


# --------------------------------------------------------------------------- the targets


def boundary_target(labels: np.ndarray, instances: np.ndarray, n_classes: int,
                    boundary_classes: Sequence[int]) -> np.ndarray:
    """The training target of the boundary formulation (module docstring).

    Parameters
    ----------
    labels : (H, W) int ndarray
        The class map.
    instances : (H, W) int ndarray
        Object ids (0 = none) of the object classes.
    n_classes : int
        The project's classes (with background).
    boundary_classes : sequence of int
        The object classes, as ``ModelConfig.boundary_classes``.

    Returns
    -------
    (H, W) int64 ndarray
        ``labels``, where the inner boundary pixels of every object of class
        ``boundary_classes[j]`` are ``n_classes + j``.
    """
    labels = np.asarray(labels)
    instances = np.asarray(instances)
    if labels.shape != instances.shape:
        raise ValueError(f"labels {labels.shape} and instances {instances.shape} differ in "
                         "shape; give both for the same image.")
    target = labels.astype(np.int64, copy=True)
    if not len(boundary_classes) or not instances.any():
        return target
    edge = find_boundaries(instances, connectivity=1, mode="inner") & (instances > 0)
    for j, c in enumerate(boundary_classes):
        target[edge & (labels == c)] = n_classes + j
    return target


def distance_target(target: np.ndarray, n_classes: int, boundary_classes: Sequence[int]
                    ) -> np.ndarray:
    """The distance outputs' training target (``ModelConfig.distance_head``) from a
    :func:`boundary_target` (or a batch of them): for object class ``boundary_classes[j]``,
    channel j holds every object's distance to its own edge (its inner boundary, where two
    objects touch too), divided by that object's largest distance: 1 at its centre, falling
    to 0 on its boundary and outside. Each object is a connected region of its class's
    interior (the boundaries carve touching objects apart), so the target can be derived
    from a training crop after augmentation: flips and rotations commute with it, and an
    object cut by the crop's edge is normalised by what of it the crop holds.

    Returns
    -------
    (len(boundary_classes), H, W) float32 ndarray, or (N, len(boundary_classes), H, W) for
    an (N, H, W) batch.
    """
    target = np.asarray(target)
    if target.ndim == 3:
        return np.stack([distance_target(t, n_classes, boundary_classes) for t in target])
    out = np.zeros((len(boundary_classes), *target.shape), np.float32)
    for j, c in enumerate(boundary_classes):
        interior = target == c
        if not interior.any():
            continue
        comps, n = ndi.label(interior)
        # distance to the nearest pixel that is not interior (boundary, other class) + the
        # half pixel to the edge; normalised per object
        dist = ndi.distance_transform_edt(interior).astype(np.float32)
        peak = np.asarray(ndi.maximum(dist, comps, np.arange(1, n + 1)), np.float32)
        top = np.concatenate([[1.0], np.maximum(peak, 1.0)]).astype(np.float32)
        out[j] = np.where(interior, dist / top[comps], 0.0)
    return out


def fold_labels(target: np.ndarray, n_classes: int, boundary_classes: Sequence[int]
                ) -> np.ndarray:
    """A class map from a :func:`boundary_target` (boundary values back to their class)."""
    target = np.asarray(target)
    if not len(boundary_classes) or target.size == 0 or int(target.max()) < n_classes:
        return target
    lut = np.concatenate([np.arange(n_classes), np.asarray(boundary_classes)])
    return lut[target].astype(target.dtype, copy=False)


def fold_probabilities(probs: np.ndarray, n_classes: int, boundary_classes: Sequence[int]
                       ) -> np.ndarray:
    """(n_classes, H, W) probabilities from (n_outputs, H, W): each boundary added to its
    class."""
    folded = np.array(probs[:n_classes], copy=True)
    for j, c in enumerate(boundary_classes):
        folded[c] += probs[n_classes + j]
    return folded


# --------------------------------------------------------------------------- post-processing


def _drop_small(ids: np.ndarray, min_size: float | None, floor: float | None = None
                ) -> np.ndarray:
    """``ids`` without the objects under `min_size` pixels (default: a fraction of the
    median object area, and at least `floor` when given), relabelled 1..N."""
    if not ids.any():
        return ids
    areas = np.bincount(ids.ravel())
    present = np.flatnonzero(areas[1:]) + 1
    if min_size is None:
        limit = MIN_SIZE_FRACTION * float(np.median(areas[present]))
        if floor is not None:
            limit = max(limit, float(floor))
    else:
        limit = float(min_size)
    keep = np.zeros(areas.size, bool)
    keep[present[areas[present] >= limit]] = True
    lut = np.zeros(areas.size, np.int64)
    lut[keep] = np.arange(1, int(keep.sum()) + 1)
    return lut[ids]


def _split(mask: np.ndarray, min_area: float | None = None) -> np.ndarray:
    """`mask`'s connected regions split by a watershed on their distance transform (smoothed),
    seeded at its maxima at least half the typical object radius apart that also rise
    :data:`SEED_DYNAMIC` of that radius above the pass to any higher maximum (h-maxima: a bump
    of a noisy predicted outline is not a second object). The typical radius is the median
    over regions of their largest inscribed radius, so both follow the data; regions under
    `min_area` pixels, fragments the post-processing drops, do not count. Ids > 0, not
    consecutive."""
    comps, n = ndi.label(mask)
    if not n:
        return comps
    dist = ndi.distance_transform_edt(mask).astype(np.float32)
    inscribed = np.zeros(n + 1, np.float32)
    np.maximum.at(inscribed, comps.ravel(), dist.ravel())
    sized = inscribed[1:]
    if min_area:
        whole = np.bincount(comps.ravel(), minlength=n + 1)[1:] >= min_area
        if whole.any():
            sized = sized[whole]
    radius = float(np.median(sized))
    smooth = ndi.gaussian_filter(dist, sigma=max(1.0, radius / 4))
    field = np.where(mask, smooth, 0)
    # one pass over the whole image (a per-region peak search is ~5x slower)
    peaks = peak_local_max(field, min_distance=max(2, round(radius / 2)), threshold_abs=0.5,
                           exclude_border=False)
    seeds = np.zeros(mask.shape, bool)
    seeds[tuple(peaks.T)] = True
    # only the regions with several maxima are flooded (the watershed's cost is the pixels it
    # floods, and the boundary output has usually separated the objects already)
    multi = np.bincount(comps[seeds], minlength=n + 1) >= 2
    multi[0] = False
    if multi.any() and SEED_DYNAMIC > 0:  # 0: the spacing alone (the rule before 2026-12-03)
        seeds &= _deep_maxima(field, comps, multi, max(0.5, SEED_DYNAMIC * radius))
        multi = np.bincount(comps[seeds], minlength=n + 1) >= 2
        multi[0] = False
    if not multi.any():
        return comps
    region = multi[comps]
    parts = watershed(-smooth, ndi.label(seeds & region)[0], mask=region)
    return np.where(region, parts + n, comps)


def _deep_maxima(field: np.ndarray, comps: np.ndarray, regions: np.ndarray, h: float
                 ) -> np.ndarray:
    """Pixels near an h-maximum of `field` (a maximum whose dynamic is at least `h`), searched
    only in the regions ``comps == r`` with ``regions[r]`` (each in its bounding box: an
    image-wide reconstruction costs ~0.7 s a 1024² image)."""
    out = np.zeros(field.shape, bool)
    for r, box in enumerate(ndi.find_objects(comps), start=1):
        if box is None or not regions[r]:
            continue
        inside = comps[box] == r
        deep = h_maxima(np.where(inside, field[box], 0), h).astype(bool)
        # a peak_local_max pixel may sit one pixel off the plateau h_maxima returns
        out[box] |= ndi.binary_dilation(deep) & inside
    return out


def _combine(per_class: list[tuple[int, np.ndarray]], shape: tuple[int, ...]
             ) -> tuple[np.ndarray, np.ndarray]:
    """One uint16 id image from per-class id images (offset so ids stay unique), and the
    class of every id (``object_class[id]``, 0 for id 0)."""
    out = np.zeros(shape, np.int64)
    classes = [0]
    for c, ids in per_class:
        n = int(ids.max()) if ids.size else 0
        if n:
            out = np.where(ids > 0, ids + (len(classes) - 1), out)
            classes += [c] * n
    if len(classes) - 1 > _MAX_ID:
        raise ValueError(f"{len(classes) - 1} objects found, more than the {_MAX_ID} ids of "
                         "a uint16 label image; predict smaller tiles of the image.")
    return out.astype(np.uint16), np.asarray(classes, np.uint16)


def instances_from_boundary(probs: np.ndarray, n_classes: int, boundary_classes: Sequence[int],
                            *, min_size: float | None = None, min_area: float | None = None
                            ) -> tuple[np.ndarray, np.ndarray]:
    """Objects from the outputs of a boundary model (module docstring).

    For each object class: its *interior* (the pixels where the class itself, not its
    boundary or another class, is the most likely output), where the predicted boundaries
    have carved touching objects apart, is split into cores (:func:`_split`, for objects the
    boundary did not fully separate), and the cores grow back over the class's whole
    foreground (interior + boundary) by a watershed on the boundary probability. A region of
    boundary alone, with no interior, is no object. Measured on the two nuclei sets
    (``benchmarks/instances.py``): seeding from the connected interior alone merged the
    nuclei whose boundary was faint (F1 at IoU 0.5 0.59 on DSB 2018 after 200 steps; 0.78
    with the split cores).

    Parameters
    ----------
    probs : (n_outputs, H, W) float ndarray
        Probabilities of every output (classes, then one boundary per object class).
    min_size : float, optional
        Smallest object kept, in pixels; default :data:`MIN_SIZE_FRACTION` of the median,
        and at least ``min_area``.
    min_area : float, optional
        The project's floor (:func:`min_object_area`, a model's ``min_object_area``).

    Returns
    -------
    instances : (H, W) uint16 ndarray
        One id per object, 1..N, 0 elsewhere.
    object_class : (N + 1,) uint16 ndarray
        The class of each id.
    """
    probs = np.asarray(probs, np.float32)
    if probs.shape[0] != n_classes + len(boundary_classes):
        raise ValueError(f"probs has {probs.shape[0]} channels; a model with {n_classes} "
                         f"classes and {len(boundary_classes)} boundary output(s) gives "
                         f"{n_classes + len(boundary_classes)}.")
    folded = fold_probabilities(probs, n_classes, boundary_classes)
    best = folded.max(axis=0)
    per_class = []
    for j, c in enumerate(boundary_classes):
        fg = folded[c] >= best  # the folded class map says c (ties: as argmax, rare)
        interior = fg & (probs[c] >= probs[n_classes + j]) & (probs[c] >= probs[:n_classes].max(0))
        cores = _split(interior, min_area)
        per_class.append((c, _drop_small(_grow(cores, fg, probs[n_classes + j]), min_size,
                                         min_area)))
    return _combine(per_class, fg.shape)


def _grow(cores: np.ndarray, foreground: np.ndarray, elevation: np.ndarray) -> np.ndarray:
    """`cores` grown over `foreground` by a watershed on `elevation`, flooding only the ring
    around them (a watershed queues every marker pixel: seeding it with whole cores costs
    ~7x more on a 1024² image); foreground no core reaches is dropped."""
    inside = cores > 0
    if not inside.any():
        return cores
    border = find_boundaries(cores, mode="inner") & inside
    ring = foreground & ~(inside & ~border)
    grown = watershed(elevation, np.where(border, cores, 0), mask=ring)
    return np.where(inside, cores, grown)


def instances_from_distance_head(probs: np.ndarray, distance: np.ndarray, n_classes: int,
                                 boundary_classes: Sequence[int], *,
                                 min_size: float | None = None, min_area: float | None = None
                                 ) -> tuple[np.ndarray, np.ndarray]:
    """Objects from a model with distance outputs (``ModelConfig.distance_head``).

    For each object class: the foreground is where the folded class map says the class; the
    seeds are the connected regions of it whose predicted normalised distance
    (:func:`distance_target`) is above one half, the inner half of every object, which the
    network has learned to keep apart where objects touch; they grow back over the
    foreground by a watershed on the distance (falling towards the edges). A foreground
    region no seed reaches is one object (a small object whose predicted centre stays
    under one half). Returns like :func:`instances_from_boundary`.

    Parameters
    ----------
    probs : (n_classes + len(boundary_classes), H, W) float ndarray
        Probabilities of the classes and boundaries (softmax of those outputs).
    distance : (len(boundary_classes), H, W) float ndarray
        The predicted normalised distances (sigmoid of the distance outputs), in [0, 1].
    """
    probs = np.asarray(probs, np.float32)
    distance = np.asarray(distance, np.float32)
    k = len(boundary_classes)
    if probs.shape[0] != n_classes + k or distance.shape[0] != k:
        raise ValueError(f"probs has {probs.shape[0]} and distance {distance.shape[0]} "
                         f"channels; a model with {n_classes} classes and {k} object "
                         f"class(es) gives {n_classes + k} and {k}.")
    folded = fold_probabilities(probs, n_classes, boundary_classes)
    best = folded.max(axis=0)
    per_class = []
    for j, c in enumerate(boundary_classes):
        fg = folded[c] >= best
        d = distance[j]
        comps, n = ndi.label(fg)
        if not n:
            per_class.append((c, comps))
            continue
        # the inner half of each object, relative to the highest distance of its foreground
        # region (a short round's regression is low everywhere)
        top = np.concatenate([[np.inf], np.asarray(
            ndi.maximum(d, comps, np.arange(1, n + 1)), np.float32)])
        cores, _ = ndi.label(fg & (d > 0.5 * top[comps]))
        per_class.append((c, _drop_small(_grow(cores, fg, 1.0 - d), min_size, min_area)))
    return _combine(per_class, probs.shape[1:])


def instances_from_distance(labels: np.ndarray, object_classes: Sequence[int], *,
                            min_size: float | None = None, min_area: float | None = None
                            ) -> tuple[np.ndarray, np.ndarray]:
    """Objects from a class map alone: each object class's foreground split by a watershed
    on its distance transform (:func:`_split`). Returns like
    :func:`instances_from_boundary`."""
    labels = np.asarray(labels)
    per_class = [(c, _drop_small(_split(labels == c, min_area), min_size, min_area))
                 for c in object_classes]
    return _combine(per_class, labels.shape)


# --------------------------------------------------------------------------- prediction


@dataclass
class InstancePrediction:
    """Result of :func:`predict_instances`.

    Attributes
    ----------
    instances : (H, W) uint16 ndarray
        One id per object, ``1..N`` (0 = none).
    object_class : (N + 1,) uint16 ndarray
        The class index of each id (``object_class[0] == 0``).
    labels : (H, W) ndarray
        The semantic class map (boundaries folded into their class).
    probs : (n_classes, H, W) float32 ndarray
        The semantic probabilities.
    """

    instances: np.ndarray
    object_class: np.ndarray
    labels: np.ndarray
    probs: np.ndarray

    @property
    def count(self) -> int:
        return int(self.object_class.size - 1)


class _AllOutputs(nn.Module):
    """A U-Net whose ``forward`` keeps the boundary outputs (for the tiled predictor).

    With distance outputs, what it returns are log-probabilities whose softmax (what the
    tiled predictor takes) is ``[p / 2, d / (2k), (1 - d) / (2k)]``: ``p`` the softmax of
    the classes and boundaries, ``d`` the sigmoid of the k distance outputs; one pass yields
    both (:func:`_split_outputs` undoes it)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.config = model.config

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model.forward_full(x)
        k = self.config.distance_outputs
        if not k:
            return out
        out = out.float()
        n = self.config.n_targets
        half, share = math.log(2.0), math.log(2.0 * k)
        d = out[:, n:]
        return torch.cat([torch.log_softmax(out[:, :n], dim=1) - half,
                          F.logsigmoid(d) - share, F.logsigmoid(-d) - share], dim=1)


def _split_outputs(probs: np.ndarray, cfg) -> tuple[np.ndarray, np.ndarray]:
    """(class and boundary probabilities, distances) from what :class:`_AllOutputs` gave."""
    n, k = cfg.n_targets, cfg.distance_outputs
    return probs[:n] * 2.0, np.clip(probs[n:n + k] * (2.0 * k), 0.0, 1.0)


def predict_instances(model: nn.Module, image: np.ndarray, *,
                      object_classes: Sequence[int] | None = None,
                      config: InferenceConfig | None = None,
                      min_size: float | None = None) -> InstancePrediction:
    """Predict ``image`` (normalised, (C, H, W)) and turn it into objects.

    A model with boundary outputs (``model.config.boundary_classes``) is post-processed by
    :func:`instances_from_boundary`; any other model by :func:`instances_from_distance` on
    its class map, for ``object_classes`` (required then). Objects under the model's
    ``config.min_object_area`` (the project's floor, decided at training) are dropped.
    """
    from .inference import predict

    cfg = model.config
    bc = tuple(cfg.boundary_classes)
    floor = getattr(cfg, "min_object_area", None)
    if bc:
        pred = predict(_AllOutputs(model), image, mode="single", maps=(), config=config)
        full = pred.probs
        if getattr(cfg, "distance_outputs", 0):
            full, dist = _split_outputs(full, cfg)
            ids, classes = instances_from_distance_head(full, dist, cfg.n_classes, bc,
                                                        min_size=min_size, min_area=floor)
        else:
            ids, classes = instances_from_boundary(full, cfg.n_classes, bc,
                                                   min_size=min_size, min_area=floor)
        probs = fold_probabilities(full, cfg.n_classes, bc)
    else:
        if not object_classes:
            raise ValueError("This model has no boundary output: say which classes are "
                             "objects (object_classes=...), or train one with class modes "
                             "set to 'objects'.")
        pred = predict(model, image, mode="single", maps=(), config=config)
        probs = pred.probs
        ids, classes = instances_from_distance(pred.labels, object_classes, min_size=min_size,
                                               min_area=floor)
    labels = probs.argmax(axis=0).astype(pred.labels.dtype)
    return InstancePrediction(ids, classes, labels, probs)
