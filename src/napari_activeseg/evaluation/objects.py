"""Object-level scores of an instance label image against the true one.

A label image holds one id per object (0 = background; ids need not be consecutive). Every
score here comes from one *contingency matrix*: the pixel count of each (true id, predicted
id) pair, from one ``numpy.bincount`` over the image.

Matching
    At an IoU threshold ``t`` a true and a predicted object are a *match* (a true positive)
    when they are paired one-to-one and their IoU is at least ``t``. The pairing maximises
    the summed IoU over pairs with IoU >= ``t`` (``scipy.optimize.linear_sum_assignment``);
    for ``t > 0.5`` this is the unique matching, since an object can then overlap at most
    one other by more than half its union. Unpaired predicted objects are false positives
    (FP), unpaired true objects false negatives (FN).
Per threshold
    precision = TP / (TP + FP), recall = TP / (TP + FN), F1 = 2 TP / (2 TP + FP + FN) and
    average precision in the sense of the Data Science Bowl 2018 and StarDist,
    AP = TP / (TP + FP + FN). When there is no object on either side (TP + FP + FN = 0) all
    four are 1: nothing was to be found and nothing wrong was found.
Over a set of images
    TP, FP and FN are summed over the images before the ratios are taken (StarDist's
    ``matching_dataset(by_image=False)``), so an image with many objects weighs more than one
    with few. ``mean_f1`` / ``mean_ap`` average F1 / AP over :data:`IOU_THRESHOLDS`
    (0.5, 0.55, ..., 0.9).
Count error
    ``|n_pred - n_true| / max(n_true, 1)`` per image (an image without true objects scores
    its predicted count), averaged over images.
Splits and merges (threshold-free)
    A predicted object P is a *piece* of a true object T when more than half of P's pixels lie
    in T and P covers at least ``min_cover`` (default 0.1) of T's pixels (so a stray speck
    does not count). A true object with two or more pieces is *split*; it takes
    ``pieces - 1`` merge strokes to fix. Symmetrically, a true object T is a *part* of a
    predicted object P when more than half of T lies in P and T covers at least
    ``min_cover`` of P; a predicted object with two or more parts is a *merge* (touching
    nuclei found as one region), fixed by ``parts - 1`` splits.
Annotator effort in objects
    What the simulated annotator does to turn the shown prediction into the truth, from the
    matching at IoU 0.5 and the splits and merges: *add* the true objects that are unmatched
    and neither split nor a part of a merge, *remove* the predicted objects that are unmatched
    and neither a piece of a split nor a merge, *split* each merge (``parts - 1`` strokes) and
    *merge* each split (``pieces - 1`` strokes). ``total`` is their sum.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "IOU_THRESHOLDS",
    "ImageMatch",
    "ObjectScores",
    "contingency",
    "instances_from_semantic",
    "match_objects",
    "score_objects",
]

#: The IoU thresholds of the mean scores: 0.5, 0.55, ..., 0.9.
IOU_THRESHOLDS: tuple[float, ...] = tuple(round(0.5 + 0.05 * i, 2) for i in range(9))

#: A piece (part) must cover at least this fraction of the object it splits (merges into).
MIN_COVER = 0.1


def _check_labels(pred: np.ndarray, true: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred, true = np.asarray(pred), np.asarray(true)
    if pred.shape != true.shape:
        raise ValueError(
            f"Predicted labels have shape {pred.shape} but the true labels {true.shape}; "
            "predict at the truth's resolution."
        )
    for what, labels in (("Predicted", pred), ("True", true)):
        if labels.dtype.kind not in "uib":
            raise ValueError(
                f"{what} labels have dtype {labels.dtype}; an instance label image holds "
                "integer ids (0 = background)."
            )
        if labels.size and labels.dtype.kind == "i" and labels.min() < 0:
            raise ValueError(f"{what} labels hold negative ids; ids must be 0 or positive.")
    return pred, true


def contingency(
    pred: np.ndarray, true: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pixel counts of every (true object, predicted object) pair, background included.

    Parameters
    ----------
    pred, true : (H, W) or any-shape integer ndarray
        Predicted and true label images of one shape; 0 = background.

    Returns
    -------
    counts : (1 + n_true, 1 + n_pred) int64 ndarray
        ``counts[i, j]`` = pixels of true object ``true_ids[i - 1]`` (row 0: background) that
        are in predicted object ``pred_ids[j - 1]`` (column 0: background).
    true_ids, pred_ids : int64 ndarray
        The object ids, sorted, 0 left out.
    """
    pred, true = _check_labels(pred, true)
    t_ids, t_inv = np.unique(true.ravel(), return_inverse=True)
    p_ids, p_inv = np.unique(pred.ravel(), return_inverse=True)
    # make sure row/column 0 is the background even when an image has none
    if t_ids.size == 0 or t_ids[0] != 0:
        t_ids, t_inv = np.concatenate([[0], t_ids]), t_inv + 1
    if p_ids.size == 0 or p_ids[0] != 0:
        p_ids, p_inv = np.concatenate([[0], p_ids]), p_inv + 1
    nt, n_p = t_ids.size, p_ids.size
    counts = np.bincount(t_inv.astype(np.int64) * n_p + p_inv, minlength=nt * n_p)
    return counts.reshape(nt, n_p), t_ids[1:].astype(np.int64), p_ids[1:].astype(np.int64)


def _iou(counts: np.ndarray) -> np.ndarray:
    """IoU of every (true object, predicted object) pair from the contingency matrix."""
    inter = counts[1:, 1:].astype(np.float64)
    area_t = counts[1:, :].sum(axis=1, keepdims=True)
    area_p = counts[:, 1:].sum(axis=0, keepdims=True)
    union = area_t + area_p - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def _n_matched(iou: np.ndarray, threshold: float) -> int:
    """The largest one-to-one matching of pairs with IoU >= threshold (max summed IoU)."""
    from scipy.optimize import linear_sum_assignment

    ok = iou >= threshold
    rows, cols = np.flatnonzero(ok.any(axis=1)), np.flatnonzero(ok.any(axis=0))
    if rows.size == 0:
        return 0
    sub = np.where(ok[np.ix_(rows, cols)], iou[np.ix_(rows, cols)], 0.0)
    # a pair below the threshold is worth nothing; +1 per pair favours more matches first
    r, c = linear_sum_assignment(np.where(sub > 0, sub + 1.0, 0.0), maximize=True)
    return int(np.count_nonzero(sub[r, c] > 0))


def _pieces(counts: np.ndarray, min_cover: float) -> np.ndarray:
    """Boolean (n_true, n_pred): predicted j is a piece of true i (see the module doc)."""
    inter = counts[1:, 1:]
    area_t = counts[1:, :].sum(axis=1, keepdims=True)
    area_p = counts[:, 1:].sum(axis=0, keepdims=True)
    return (2 * inter > area_p) & (inter >= min_cover * area_t) & (inter > 0)


@dataclass(frozen=True)
class ImageMatch:
    """The object-level comparison of one predicted label image with the true one.

    Attributes
    ----------
    n_true, n_pred : int
        Object counts.
    thresholds : tuple of float
        The IoU thresholds of ``tp``.
    tp : tuple of int
        Matches at each threshold (FP = n_pred - tp, FN = n_true - tp).
    splits, merges : int
        True objects found in 2+ pieces; predicted objects holding 2+ true ones.
    merge_strokes, split_strokes : int
        Strokes to fix them: sum of (pieces - 1) over splits; of (parts - 1) over merges.
    to_add, to_remove : int
        True objects to paint, predicted objects to delete (see the module doc).
    """

    n_true: int
    n_pred: int
    thresholds: tuple[float, ...]
    tp: tuple[int, ...]
    splits: int
    merges: int
    merge_strokes: int
    split_strokes: int
    to_add: int
    to_remove: int

    @property
    def count_error(self) -> float:
        """``|n_pred - n_true| / max(n_true, 1)``."""
        return abs(self.n_pred - self.n_true) / max(self.n_true, 1)

    @property
    def effort(self) -> int:
        """Object edits to turn the prediction into the truth: add + remove + strokes."""
        return self.to_add + self.to_remove + self.merge_strokes + self.split_strokes

    def f1(self, threshold: float = 0.5) -> float:
        """F1 at one of ``thresholds``."""
        return _ratios(self.tp[self._at(threshold)], self.n_pred, self.n_true)["f1"]

    def _at(self, threshold: float) -> int:
        for i, t in enumerate(self.thresholds):
            if abs(t - threshold) < 1e-9:
                return i
        raise ValueError(
            f"IoU threshold {threshold} was not scored; scored thresholds: {self.thresholds}."
        )


def match_objects(
    pred: np.ndarray,
    true: np.ndarray,
    *,
    thresholds: Iterable[float] = IOU_THRESHOLDS,
    min_cover: float = MIN_COVER,
) -> ImageMatch:
    """Match a predicted instance label image to the true one (see the module doc).

    Parameters
    ----------
    pred, true : integer ndarray
        Label images of one shape, 0 = background, one id per object.
    thresholds : iterable of float, default IOU_THRESHOLDS
        IoU thresholds in (0, 1]; must include 0.5 (the effort is counted at 0.5).
    min_cover : float, default MIN_COVER
        Smallest fraction of an object that a piece (part) must cover to count in a split
        (merge).

    Returns
    -------
    ImageMatch
    """
    thresholds = tuple(float(t) for t in thresholds)
    if not thresholds or any(not 0.0 < t <= 1.0 for t in thresholds):
        raise ValueError(f"IoU thresholds must lie in (0, 1], got {thresholds}.")
    if not any(abs(t - 0.5) < 1e-9 for t in thresholds):
        raise ValueError(f"The thresholds must include 0.5 (the effort's), got {thresholds}.")
    counts, true_ids, pred_ids = contingency(pred, true)
    iou = _iou(counts)
    tp = tuple(_n_matched(iou, t) for t in thresholds)

    pieces = _pieces(counts, min_cover)        # (true, pred): pred is a piece of true
    parts = _pieces(counts.T, min_cover).T     # (true, pred): true is a part of pred
    n_pieces, n_parts = pieces.sum(axis=1), parts.sum(axis=0)
    split_true, merge_pred = n_pieces >= 2, n_parts >= 2
    in_split = pieces[split_true].any(axis=0)  # predicted objects that are a piece of a split
    in_merge = parts[:, merge_pred].any(axis=1)  # true objects that are part of a merge

    ok = iou >= 0.5
    # at IoU > 0.5 a match is unique, so "has a partner at >= 0.5" is "matched" (ties aside)
    matched_t, matched_p = ok.any(axis=1), ok.any(axis=0)
    return ImageMatch(
        n_true=int(true_ids.size),
        n_pred=int(pred_ids.size),
        thresholds=thresholds,
        tp=tp,
        splits=int(split_true.sum()),
        merges=int(merge_pred.sum()),
        merge_strokes=int((n_pieces[split_true] - 1).sum()),
        split_strokes=int((n_parts[merge_pred] - 1).sum()),
        to_add=int((~matched_t & ~split_true & ~in_merge).sum()),
        to_remove=int((~matched_p & ~merge_pred & ~in_split).sum()),
    )


def _ratios(tp: int, n_pred: int, n_true: int) -> dict[str, float]:
    fp, fn = n_pred - tp, n_true - tp
    if tp + fp + fn == 0:
        return {"precision": 1.0, "recall": 1.0, "f1": 1.0, "ap": 1.0}
    return {
        "precision": tp / n_pred if n_pred else 0.0,
        "recall": tp / n_true if n_true else 0.0,
        "f1": 2 * tp / (2 * tp + fp + fn),
        "ap": tp / (tp + fp + fn),
    }


@dataclass(frozen=True)
class ObjectScores:
    """Object-level scores of a set of images (TP/FP/FN summed over them).

    Attributes
    ----------
    thresholds : tuple of float
    per_threshold : list of dict
        One per threshold: ``iou, tp, fp, fn, precision, recall, f1, ap``.
    f1_50, ap_50 : float
        F1 and AP at IoU 0.5.
    mean_f1, mean_ap : float
        F1 and AP averaged over ``thresholds``.
    count_error : float
        Mean over images of ``|n_pred - n_true| / max(n_true, 1)``.
    n_true, n_pred, splits, merges, to_add, to_remove, merge_strokes, split_strokes, effort
        Summed over the images.
    n_images : int
    """

    thresholds: tuple[float, ...]
    per_threshold: list[dict]
    f1_50: float
    ap_50: float
    mean_f1: float
    mean_ap: float
    count_error: float
    n_true: int
    n_pred: int
    splits: int
    merges: int
    to_add: int
    to_remove: int
    merge_strokes: int
    split_strokes: int
    effort: int
    n_images: int

    def as_row(self, prefix: str = "obj_") -> dict[str, float | int]:
        """The headline figures as a flat dict (what results.json / CSV rows carry)."""
        keys = ("f1_50", "ap_50", "mean_f1", "mean_ap", "count_error", "n_true", "n_pred",
                "splits", "merges", "to_add", "to_remove", "merge_strokes", "split_strokes",
                "effort")
        return {prefix + k: getattr(self, k) for k in keys}


def score_objects(
    preds: Sequence[np.ndarray],
    trues: Sequence[np.ndarray],
    *,
    thresholds: Iterable[float] = IOU_THRESHOLDS,
    min_cover: float = MIN_COVER,
) -> ObjectScores:
    """Score predicted instance label images against the true ones (see the module doc).

    Parameters
    ----------
    preds, trues : sequence of integer ndarray
        One predicted label image per true one, of its shape.
    thresholds, min_cover
        As in :func:`match_objects`.

    Returns
    -------
    ObjectScores
    """
    preds, trues = list(preds), list(trues)
    if len(preds) != len(trues):
        raise ValueError(
            f"Got {len(preds)} predictions for {len(trues)} true label images; pass one each."
        )
    if not preds:
        raise ValueError("No label images to score; pass at least one (prediction, truth) pair.")
    matches = [match_objects(p, t, thresholds=thresholds, min_cover=min_cover)
               for p, t in zip(preds, trues)]
    ths = matches[0].thresholds
    n_true = sum(m.n_true for m in matches)
    n_pred = sum(m.n_pred for m in matches)
    per = []
    for k, t in enumerate(ths):
        tp = sum(m.tp[k] for m in matches)
        per.append({"iou": t, "tp": tp, "fp": n_pred - tp, "fn": n_true - tp,
                    **_ratios(tp, n_pred, n_true)})
    at50 = next(r for r in per if abs(r["iou"] - 0.5) < 1e-9)

    def total(attr: str) -> int:
        return int(sum(getattr(m, attr) for m in matches))

    return ObjectScores(
        thresholds=ths,
        per_threshold=per,
        f1_50=float(at50["f1"]),
        ap_50=float(at50["ap"]),
        mean_f1=float(np.mean([r["f1"] for r in per])),
        mean_ap=float(np.mean([r["ap"] for r in per])),
        count_error=float(np.mean([m.count_error for m in matches])),
        n_true=n_true,
        n_pred=n_pred,
        splits=total("splits"),
        merges=total("merges"),
        to_add=total("to_add"),
        to_remove=total("to_remove"),
        merge_strokes=total("merge_strokes"),
        split_strokes=total("split_strokes"),
        effort=total("effort"),
        n_images=len(matches),
    )


def instances_from_semantic(
    classmap: np.ndarray, *, foreground: Sequence[int] | None = None, connectivity: int = 1
) -> np.ndarray:
    """Connected components of a class map's foreground: the baseline without an instance head.

    Parameters
    ----------
    classmap : (H, W) integer ndarray
        A semantic prediction, 0 = background.
    foreground : sequence of int, optional
        The classes taken as objects; default every class > 0 (together, so touching regions
        of two classes are one object — pass one class to count that class alone).
    connectivity : int, default 1
        ``skimage.measure.label`` connectivity (1 = 4-neighbours in 2D).

    Returns
    -------
    (H, W) uint16 or int32 ndarray
        One id per connected region, 1..N (uint16 when N fits).
    """
    from skimage.measure import label

    classmap = np.asarray(classmap)
    fg = classmap > 0 if foreground is None else np.isin(classmap, list(foreground))
    labels = label(fg, connectivity=connectivity)
    return labels.astype(np.uint16) if labels.max() <= np.iinfo(np.uint16).max else labels
