"""Segmentation losses that honour a per-pixel ignore mask, and numpy Dice metrics.

Ground truth in this project is only what the user reviewed: everything outside the per-image
*reviewed mask* is passed here as ``ignore=True`` and contributes nothing, neither to the
cross-entropy nor to the soft Dice term, nor to the gradient.

Torch functions
---------------
- :func:`cross_entropy_masked` -- (optionally class-weighted) mean CE over valid pixels.
- :func:`soft_dice_loss` -- ``1 - soft Dice`` over valid pixels, per class over the whole batch,
  averaged over the *foreground* classes ``1..K-1`` that are present.
- :func:`segmentation_loss` -- ``ce_weight * CE + dice_weight * Dice``.

Numpy metrics
-------------
- :func:`per_class_dice` and :func:`dice_score` on label maps (evaluation, benchmarks).

All torch losses compute softmax / log-softmax in float32, so they are safe inside
``torch.autocast`` (float16 / bfloat16 logits are upcast once).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "cross_entropy_masked",
    "dice_score",
    "distance_loss",
    "per_class_dice",
    "segmentation_loss",
    "soft_dice_loss",
]


# --------------------------------------------------------------------------------------------
# argument checks (cheap: shapes and dtypes, plus one min/max on the valid targets)
# --------------------------------------------------------------------------------------------


def _check_inputs(
    logits: torch.Tensor,
    target: torch.Tensor,
    ignore: torch.Tensor | None,
    class_weights: torch.Tensor | Sequence[float] | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Validate the loss inputs; return ``(target, valid, class_weights)`` ready to use.

    ``target`` is returned with ignored pixels set to 0, so that any placeholder value there
    (e.g. 255 or -1 for "unlabelled") is never used as an index.
    ``valid`` is ``None`` when nothing is ignored.
    """
    if not isinstance(logits, torch.Tensor) or not isinstance(target, torch.Tensor):
        raise TypeError(
            "logits and target must be torch tensors, got "
            f"{type(logits).__name__} and {type(target).__name__}; "
            "convert with torch.as_tensor(...)."
        )
    if logits.ndim != 4:
        raise ValueError(
            f"logits must have shape (N, K, H, W), got shape {tuple(logits.shape)}; "
            "add a batch axis with logits[None] for a single image."
        )
    n, k, h, w = logits.shape
    if k < 2:
        raise ValueError(
            f"logits must have at least 2 classes (background + foreground), got K={k} "
            f"(shape {tuple(logits.shape)}); for a binary task output 2 channels."
        )
    if not logits.is_floating_point():
        raise TypeError(f"logits must be a floating-point tensor, got dtype {logits.dtype}.")
    if tuple(target.shape) != (n, h, w):
        raise ValueError(
            f"target must have shape (N, H, W) = {(n, h, w)} to match logits "
            f"{tuple(logits.shape)}, got {tuple(target.shape)}; "
            "pass class indices, not one-hot (use target.argmax(1) for a one-hot target)."
        )
    if target.is_floating_point() or target.dtype == torch.bool:
        raise TypeError(
            f"target must hold integer class indices 0..{k - 1}, got dtype {target.dtype}; "
            "convert with target.long()."
        )
    target = target.long()

    valid = None
    if ignore is not None:
        if not isinstance(ignore, torch.Tensor):
            ignore = torch.as_tensor(np.asarray(ignore), device=logits.device)
        if tuple(ignore.shape) != (n, h, w):
            raise ValueError(
                f"ignore must have shape (N, H, W) = {(n, h, w)} like target, "
                f"got {tuple(ignore.shape)}."
            )
        if ignore.dtype != torch.bool:
            raise TypeError(
                f"ignore must be a bool tensor (True = pixel not reviewed), got dtype "
                f"{ignore.dtype}; convert with ignore.bool()."
            )
        valid = ~ignore.to(logits.device)
        target = torch.where(valid, target, torch.zeros_like(target))

    if target.numel() > 0:
        tmin, tmax = int(target.min()), int(target.max())
        if tmin < 0 or tmax >= k:
            raise ValueError(
                f"target values must be class indices in 0..{k - 1} on reviewed pixels, "
                f"got values in [{tmin}, {tmax}]; mark unlabelled pixels with ignore=True "
                "instead of a placeholder value, or raise the number of output classes."
            )

    weights = None
    if class_weights is not None:
        weights = torch.as_tensor(class_weights, dtype=torch.float32, device=logits.device)
        if weights.shape != (k,):
            raise ValueError(
                f"class_weights must have shape (K,) = ({k},), one weight per class, "
                f"got shape {tuple(weights.shape)}."
            )
        if not bool(torch.isfinite(weights).all()) or bool((weights < 0).any()):
            raise ValueError(
                f"class_weights must be finite and non-negative, got {weights.tolist()}."
            )
    return target, valid, weights


def _zero_like_graph(logits: torch.Tensor) -> torch.Tensor:
    """A float32 scalar 0 that is still attached to ``logits`` (backward works, grads are 0)."""
    return logits.float().sum() * 0.0


# --------------------------------------------------------------------------------------------
# torch losses
# --------------------------------------------------------------------------------------------


def _cross_entropy(
    logits: torch.Tensor,
    target: torch.Tensor,
    valid: torch.Tensor | None,
    weights: torch.Tensor | None,
) -> torch.Tensor:
    logp = F.log_softmax(logits.float(), dim=1)  # float32 even under autocast
    nll = -logp.gather(1, target.unsqueeze(1)).squeeze(1)  # (N, H, W)
    if weights is not None:
        pix_w = weights[target]  # (N, H, W)
    else:
        pix_w = torch.ones_like(nll)
    if valid is not None:
        pix_w = pix_w * valid
    # Weighted mean over valid pixels; the clamp makes "no valid pixel" a graph-attached 0,
    # not 0/0 = NaN.
    denom = pix_w.sum().clamp_min(torch.finfo(torch.float32).tiny)
    return (nll * pix_w).sum() / denom


def _soft_dice(
    logits: torch.Tensor,
    target: torch.Tensor,
    valid: torch.Tensor | None,
    weights: torch.Tensor | None,
    eps: float,
    include_background: bool,
) -> torch.Tensor:
    n, k = logits.shape[:2]
    probs = torch.softmax(logits.float(), dim=1)  # (N, K, H, W) float32
    onehot = torch.zeros_like(probs).scatter_(1, target.unsqueeze(1), 1.0)
    pred = logits.argmax(1)  # (N, H, W), for the "predicted present" test only
    if valid is not None:
        v = valid.unsqueeze(1).to(probs.dtype)
        probs = probs * v
        onehot = onehot * v
        pred = torch.where(valid, pred, torch.full_like(pred, -1))
    dims = (0, 2, 3)
    inter = (probs * onehot).sum(dims)  # (K,)
    denom = probs.sum(dims) + onehot.sum(dims)  # (K,)
    dice = (2.0 * inter + eps) / (denom + eps)  # (K,)

    # A class counts if it occurs in the reviewed target or in the (arg-max) prediction there.
    # Absent classes would otherwise dilute the mean with a free "perfect" score.
    present = onehot.sum(dims) > 0
    if pred.numel() > 0:
        pred_counts = torch.bincount(pred[pred >= 0].flatten(), minlength=k)[:k]
        present = present | (pred_counts > 0)
    cls_w = present.to(torch.float32)
    if weights is not None:
        cls_w = cls_w * weights
    if not include_background:
        cls_w = torch.cat([cls_w.new_zeros(1), cls_w[1:]])
    total = cls_w.sum()
    if float(total) <= 0.0:
        return _zero_like_graph(logits)
    return ((1.0 - dice) * cls_w).sum() / total


def cross_entropy_masked(
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    ignore: torch.Tensor | None = None,
    class_weights: torch.Tensor | Sequence[float] | None = None,
) -> torch.Tensor:
    """Cross-entropy averaged over the reviewed (non-ignored) pixels only.

    Parameters
    ----------
    logits : (N, K, H, W) float tensor
        Raw network outputs (before softmax), K >= 2 classes. Any float dtype; the
        log-softmax is computed in float32.
    target : (N, H, W) int64 tensor
        Class indices in ``0..K-1``. Values at ignored pixels are never read.
    ignore : (N, H, W) bool tensor, optional
        True where the pixel was *not* reviewed: it contributes nothing to the loss or the
        gradient. None means every pixel counts.
    class_weights : (K,) float tensor or sequence, optional
        Non-negative per-class weights. The loss is then the weighted mean
        ``sum_i w[y_i] * nll_i / sum_i w[y_i]`` over valid pixels ``i`` (the convention of
        ``torch.nn.functional.cross_entropy``).

    Returns
    -------
    loss : () float32 tensor
        Scalar loss. If no pixel is valid it is exactly 0 and still attached to ``logits``,
        so ``backward()`` works (all gradients are 0).

    Raises
    ------
    ValueError
        Shapes that do not match, K < 2, target values outside ``0..K-1`` on valid pixels,
        or negative / non-finite class weights.
    """
    target, valid, weights = _check_inputs(logits, target, ignore, class_weights)
    return _cross_entropy(logits, target, valid, weights)


def soft_dice_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    ignore: torch.Tensor | None = None,
    class_weights: torch.Tensor | Sequence[float] | None = None,
    eps: float = 1.0,
    include_background: bool = False,
) -> torch.Tensor:
    """Soft Dice loss ``1 - Dice`` over the reviewed pixels, averaged over foreground classes.

    For each class ``k`` the soft Dice is computed over all valid pixels of the whole batch
    (not per image, so a crop without foreground does not produce a spurious 0 or 1)::

        dice_k = (2 * sum(p_k * y_k) + eps) / (sum(p_k) + sum(y_k) + eps)

    The loss is the (optionally weighted) mean of ``1 - dice_k`` over the **foreground classes
    ``1..K-1``** that are *present*: occurring in the valid target, or being the arg-max
    prediction of at least one valid pixel. Background (class 0) is left out by default because
    it usually dominates the image and its near-perfect Dice would hide foreground errors; for
    K = 2 the loss is therefore the Dice loss of the single foreground class.

    Parameters
    ----------
    logits : (N, K, H, W) float tensor
        Raw network outputs, K >= 2. The softmax is computed in float32.
    target : (N, H, W) int64 tensor
        Class indices in ``0..K-1``. Values at ignored pixels are never read.
    ignore : (N, H, W) bool tensor, optional
        True where the pixel was *not* reviewed; such pixels count for nothing.
    class_weights : (K,) float tensor or sequence, optional
        Non-negative weights for the per-class average (entry 0 is unused unless
        ``include_background``).
    eps : float, default 1.0
        Additive smoothing in numerator and denominator: a perfect prediction gives a loss of
        ~0 and an empty class gives no NaN.
    include_background : bool, default False
        Also average over class 0.

    Returns
    -------
    loss : () float32 tensor
        Scalar in ``[0, 1]``. If no class is present (e.g. every pixel ignored, or only
        background everywhere) it is a graph-attached 0.
    """
    if eps <= 0:
        raise ValueError(f"eps must be > 0 to avoid 0/0 on empty classes, got eps={eps}.")
    target, valid, weights = _check_inputs(logits, target, ignore, class_weights)
    return _soft_dice(logits, target, valid, weights, float(eps), include_background)


def distance_loss(logits: torch.Tensor, target: torch.Tensor,
                  ignore: torch.Tensor | None = None) -> torch.Tensor:
    """Binary cross-entropy of the distance outputs (``ModelConfig.distance_head``) against
    their soft target in [0, 1] (:func:`core.instances.distance_target`), averaged over the
    reviewed pixels (``ignore`` True = not reviewed) and the channels.

    Parameters
    ----------
    logits, target : (N, K, H, W) float tensors
    ignore : (N, H, W) bool tensor, optional
    """
    if logits.shape != target.shape:
        raise ValueError(f"distance logits {tuple(logits.shape)} and target "
                         f"{tuple(target.shape)} differ in shape.")
    per = F.binary_cross_entropy_with_logits(logits, target.to(logits.dtype), reduction="none")
    if ignore is None:
        return per.mean()
    keep = (~ignore).unsqueeze(1).to(per.dtype)
    return (per * keep).sum() / (keep.sum() * per.shape[1]).clamp_min(1.0)


def segmentation_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    ignore: torch.Tensor | None = None,
    class_weights: torch.Tensor | Sequence[float] | None = None,
    dice_weight: float = 1.0,
    ce_weight: float = 1.0,
    eps: float = 1.0,
) -> torch.Tensor:
    """Combined loss ``ce_weight * CE + dice_weight * (1 - Dice)`` honouring an ignore mask.

    See :func:`cross_entropy_masked` and :func:`soft_dice_loss` for each term; the inputs are
    validated once here.

    Parameters
    ----------
    logits : (N, K, H, W) float tensor
        Raw network outputs, K >= 2 (float16/bfloat16 under autocast is fine).
    target : (N, H, W) int64 tensor
        Class indices in ``0..K-1``.
    ignore : (N, H, W) bool tensor, optional
        True = pixel not reviewed: it contributes to neither term nor to the gradient.
    class_weights : (K,) float tensor or sequence, optional
        Non-negative weights, applied to the CE (weighted mean over valid pixels) and to the
        per-class Dice average (foreground classes only).
    dice_weight, ce_weight : float, default 1.0
        Non-negative weights of the two terms; a term with weight 0 is not computed.
    eps : float, default 1.0
        Dice smoothing (see :func:`soft_dice_loss`).

    Returns
    -------
    loss : () float32 tensor
        Scalar loss; a graph-attached 0 (not NaN) when every pixel is ignored.

    Examples
    --------
    >>> logits = torch.randn(2, 3, 8, 8, requires_grad=True)
    >>> target = torch.randint(0, 3, (2, 8, 8))
    >>> ignore = torch.zeros(2, 8, 8, dtype=torch.bool)
    >>> loss = segmentation_loss(logits, target, ignore=ignore)
    >>> loss.backward()
    """
    if dice_weight < 0 or ce_weight < 0:
        raise ValueError(
            f"dice_weight and ce_weight must be >= 0, got dice_weight={dice_weight}, "
            f"ce_weight={ce_weight}."
        )
    if eps <= 0:
        raise ValueError(f"eps must be > 0 to avoid 0/0 on empty classes, got eps={eps}.")
    target, valid, weights = _check_inputs(logits, target, ignore, class_weights)
    loss = _zero_like_graph(logits)
    if ce_weight > 0:
        loss = loss + ce_weight * _cross_entropy(logits, target, valid, weights)
    if dice_weight > 0:
        loss = loss + dice_weight * _soft_dice(logits, target, valid, weights, float(eps), False)
    return loss


# --------------------------------------------------------------------------------------------
# numpy metrics
# --------------------------------------------------------------------------------------------


def _check_label_pair(
    pred_labels: np.ndarray, true_labels: np.ndarray, ignore: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    pred = np.asarray(pred_labels)
    true = np.asarray(true_labels)
    if pred.shape != true.shape:
        raise ValueError(
            f"pred_labels and true_labels must have the same shape, got {pred.shape} and "
            f"{true.shape}; resize or crop the prediction to the label image."
        )
    for name, arr in (("pred_labels", pred), ("true_labels", true)):
        if not (np.issubdtype(arr.dtype, np.integer) or arr.dtype == np.bool_):
            raise TypeError(
                f"{name} must be an integer label map (0 = background), got dtype {arr.dtype}; "
                "use np.argmax(probs, axis=0) for probabilities."
            )
    if ignore is not None:
        ign = np.asarray(ignore)
        if ign.shape != pred.shape:
            raise ValueError(
                f"ignore must have the label shape {pred.shape}, got {ign.shape}."
            )
        valid = ~ign.astype(bool)
        pred, true = pred[valid], true[valid]
    return pred.astype(np.int64, copy=False), true.astype(np.int64, copy=False)


def per_class_dice(
    pred_labels: np.ndarray,
    true_labels: np.ndarray,
    *,
    classes: Iterable[int] | None = None,
    ignore: np.ndarray | None = None,
) -> dict[int, float]:
    """Hard Dice ``2|P ∩ T| / (|P| + |T|)`` per class between two label maps.

    Parameters
    ----------
    pred_labels : (H, W) or any-shape int ndarray
        Predicted class map, 0 = background.
    true_labels : same shape as ``pred_labels``, int ndarray
        Ground-truth class map.
    classes : iterable of int, optional
        Classes to score. Default: every class >= 1 present in either map (on valid pixels).
    ignore : same shape bool ndarray, optional
        True = pixel not reviewed: excluded from the count.

    Returns
    -------
    dice : dict[int, float]
        Dice per class; a class absent from both maps scores 1.0 (nothing to find, nothing
        found).
    """
    pred, true = _check_label_pair(pred_labels, true_labels, ignore)
    if classes is None:
        present = np.union1d(np.unique(pred), np.unique(true))
        classes = [int(c) for c in present if c >= 1]
    out: dict[int, float] = {}
    for c in classes:
        c = int(c)
        p = pred == c
        t = true == c
        denom = int(p.sum()) + int(t.sum())
        out[c] = 1.0 if denom == 0 else 2.0 * int(np.logical_and(p, t).sum()) / denom
    return out


def dice_score(
    pred_labels: np.ndarray,
    true_labels: np.ndarray,
    *,
    classes: Iterable[int] | None = None,
    ignore: np.ndarray | None = None,
) -> float:
    """Mean foreground Dice between two label maps.

    Parameters
    ----------
    pred_labels : (H, W) or any-shape int ndarray
        Predicted class map, 0 = background.
    true_labels : same shape as ``pred_labels``, int ndarray
        Ground-truth class map.
    classes : iterable of int, optional
        Classes to average over. Default: every class >= 1 present in either map.
    ignore : same shape bool ndarray, optional
        True = pixel not reviewed: excluded.

    Returns
    -------
    dice : float
        Mean of :func:`per_class_dice` over ``classes``; 1.0 when both maps are empty
        (no foreground anywhere).

    Examples
    --------
    >>> a = np.array([[1, 1, 0, 0]]); b = np.array([[1, 0, 0, 0]])
    >>> round(dice_score(a, b), 4)
    0.6667
    """
    scores = per_class_dice(pred_labels, true_labels, classes=classes, ignore=ignore)
    if not scores:
        return 1.0
    return float(np.mean(list(scores.values())))
