"""The benchmark's object-level columns, for datasets with ``instances/``.

Each round's row gains, beside Dice, the scores of :mod:`.objects` on the test images for
each way of turning a prediction into objects:

``cc_*``
    Connected components (4-connectivity) of the semantic prediction's foreground, the
    baseline without any instance head (:func:`.objects.instances_from_semantic`).
``inst_*``
    The U-Net's instance mode, :mod:`napari_activeseg.core.instances`, looked up at run time:
    ``predict_instances`` for a model with boundary outputs, else ``instances_from_distance``
    (a distance-transform watershed of the same class map); ``inst_method`` names which.
    The Cellpose baseline puts its own objects here (``inst_method = "cellpose"``).

Columns per method (``<m>`` = ``cc`` or ``inst``): ``<m>_f1_50``, ``<m>_ap_50`` (F1 and
DSB/StarDist AP at IoU 0.5), ``<m>_mean_f1``, ``<m>_mean_ap`` (their means over IoU
0.5..0.9), ``<m>_count_error`` (mean over images of ``|n_pred - n_true| / n_true``),
``<m>_splits``, ``<m>_merges`` (summed over the test images).

The annotator's effort in objects, per round (the round's picks) and in total:
``obj_to_add``, ``obj_to_remove``, ``obj_to_split``, ``obj_to_merge`` and their sum
``obj_effort`` / ``total_obj_effort``, from matching connected components of the
prediction the annotator was shown to the true objects (inside the reviewed boxes in
region mode; everything is "to add" for a pick shown no prediction).
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Sequence
from typing import Any

import numpy as np

from .objects import instances_from_semantic, match_objects, score_objects

__all__ = ["EFFORT_COLUMNS", "METHODS", "OBJECTS_DOC", "OBJECT_COLUMNS", "instance_mode",
           "object_columns", "pick_effort", "sum_effort"]

#: The methods that turn a prediction into objects, as column prefixes.
METHODS = ("cc", "inst")
_SCORES = ("f1_50", "ap_50", "mean_f1", "mean_ap", "count_error", "splits", "merges")
_EFFORT = ("obj_to_add", "obj_to_remove", "obj_to_split", "obj_to_merge")
#: Effort columns of a round (its picks), then running totals.
EFFORT_COLUMNS = (*_EFFORT, "obj_effort", "total_obj_effort")
#: The object columns in the CSV's order (those present in some row are written).
OBJECT_COLUMNS = (*(f"{m}_{s}" for m in METHODS for s in _SCORES), "inst_method",
                  *EFFORT_COLUMNS)

#: What results.json says about the object columns.
OBJECTS_DOC = {
    "cc": "connected components (4-connectivity) of the semantic prediction's foreground",
    "inst": "the row's own objects: the U-Net's instance mode (inst_method boundary or "
            "distance) or Cellpose (inst_method cellpose)",
    "f1_50 / ap_50": "F1 and DSB/StarDist AP = TP/(TP+FP+FN) at IoU 0.5, TP/FP/FN summed "
                     "over the test images (one-to-one matching)",
    "mean_f1 / mean_ap": "their mean over IoU 0.5, 0.55, ..., 0.9",
    "count_error": "mean over test images of |n_pred - n_true| / max(n_true, 1)",
    "splits / merges": "true objects found in 2+ pieces / predicted objects holding 2+ true "
                       "ones (a piece: > half of it inside, covering >= 10 % of the other)",
    "obj_to_*": "the annotator's effort in objects on the round's picks: objects to add, "
                "remove, split (merges shown) and merge (splits shown), from connected "
                "components of the prediction shown",
}


def _instances_module():
    """``napari_activeseg.core.instances`` when it exists, else None."""
    name = "napari_activeseg.core.instances"
    return importlib.import_module(name) if importlib.util.find_spec(name) else None


def instance_mode(model, image: np.ndarray, labels: np.ndarray, config=None
                  ) -> tuple[np.ndarray, str] | None:
    """The U-Net's own objects for one image, or None when the product has no instance mode.

    Parameters
    ----------
    model : the U-Net
    image : (C, H, W) float ndarray
        The image as the network sees it.
    labels : (H, W) int ndarray
        The semantic prediction already made of it (reused by the distance formulation).
    config : InferenceConfig, optional

    Returns
    -------
    (instances, method) or None
        ``method`` is ``"boundary"`` (a model with boundary outputs), ``"distance_head"``
        (and distance outputs) or ``"distance"``.
    """
    mod = _instances_module()
    if mod is None:
        return None
    boundary = tuple(getattr(getattr(model, "config", None), "boundary_classes", ()) or ())
    if boundary and hasattr(mod, "predict_instances"):
        head = getattr(model.config, "distance_outputs", 0)
        return np.asarray(mod.predict_instances(model, image, config=config).instances), \
            "distance_head" if head else "boundary"
    if hasattr(mod, "instances_from_distance"):
        classes = tuple(int(c) for c in np.unique(labels) if c > 0) or (1,)
        floor = getattr(getattr(model, "config", None), "min_object_area", None)
        return np.asarray(mod.instances_from_distance(labels, classes, min_area=floor)[0]), \
            "distance"
    return None


def object_columns(truths: Sequence[np.ndarray], *, semantic: Sequence[np.ndarray] | None = None,
                   instances: Sequence[np.ndarray] | None = None,
                   method: str | None = None) -> dict[str, Any]:
    """The ``cc_*`` columns of semantic predictions and the ``inst_*`` ones of instances.

    Parameters
    ----------
    truths : sequence of (H, W) int ndarray
        True instance label images of the test images.
    semantic : sequence of (H, W) int ndarray, optional
        Class maps predicted for them (scored as connected components).
    instances : sequence of (H, W) int ndarray, optional
        Instance label images predicted for them.
    method : str, optional
        What made ``instances`` (``inst_method``).
    """
    out: dict[str, Any] = {}
    for prefix, preds in (("cc", None if semantic is None else
                           [instances_from_semantic(p) for p in semantic]),
                          ("inst", instances)):
        if preds is None:
            continue
        s = score_objects(preds, truths)
        out.update({f"{prefix}_{k}": getattr(s, k) for k in _SCORES})
    if instances is not None:
        out["inst_method"] = method
    return out


def pick_effort(truth: np.ndarray, shown: np.ndarray | None,
                boxes: Sequence[Sequence[int]] | None = None) -> dict[str, int]:
    """Objects the annotator adds, removes, splits and merges to correct one pick.

    Parameters
    ----------
    truth : (H, W) int ndarray
        The true instance labels of the image.
    shown : (H, W) int ndarray or None
        The class map shown as the pre-annotation (None: annotated from scratch).
    boxes : sequence of (y0, x0, y1, x1), optional
        The reviewed boxes (region mode); each is counted on its own crop.
    """
    truth = np.asarray(truth)
    shown_ids = np.zeros_like(truth) if shown is None else instances_from_semantic(shown)
    crops = [(slice(None), slice(None))] if not boxes else \
        [(slice(int(b[0]), int(b[2])), slice(int(b[1]), int(b[3]))) for b in boxes]
    total = dict.fromkeys(_EFFORT, 0)
    for crop in crops:
        m = match_objects(shown_ids[crop], truth[crop])
        for key, value in zip(_EFFORT, (m.to_add, m.to_remove, m.split_strokes,
                                        m.merge_strokes)):
            total[key] += int(value)
    return total


def sum_effort(picks: Sequence[dict], previous: dict | None) -> dict[str, int]:
    """The effort columns of a round from its picks' :func:`pick_effort` (empty without)."""
    if not picks or any(_EFFORT[0] not in p for p in picks):
        return {}
    out = {k: sum(int(p[k]) for p in picks) for k in _EFFORT}
    out["obj_effort"] = sum(out.values())
    out["total_obj_effort"] = int((previous or {}).get("total_obj_effort", 0)) + \
        out["obj_effort"]
    return out
