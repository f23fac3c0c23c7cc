"""Known-answer tests for the masked segmentation losses and the Dice metrics."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from napari_activeseg.core.losses import (
    cross_entropy_masked,
    dice_score,
    per_class_dice,
    segmentation_loss,
    soft_dice_loss,
)


def make_batch(n=2, k=3, h=8, w=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, k, h, w, generator=g)
    target = torch.randint(0, k, (n, h, w), generator=g)
    ignore = torch.rand(n, h, w, generator=g) < 0.4
    return logits, target, ignore


def perfect_logits(target, k, scale=50.0):
    return F.one_hot(target, k).permute(0, 3, 1, 2).float() * scale


# ------------------------------------------------------------------------------ known values


@pytest.mark.parametrize("k", [2, 3])
def test_perfect_prediction_gives_zero_loss(k):
    _, target, ignore = make_batch(k=k)
    logits = perfect_logits(target, k)
    assert float(soft_dice_loss(logits, target)) < 1e-3
    assert float(cross_entropy_masked(logits, target)) < 1e-3
    assert float(segmentation_loss(logits, target, ignore=ignore)) < 1e-3


def test_ce_matches_torch_without_ignore():
    logits, target, _ = make_batch()
    expected = F.cross_entropy(logits, target)
    torch.testing.assert_close(cross_entropy_masked(logits, target), expected)
    w = torch.tensor([0.2, 1.0, 3.0])
    torch.testing.assert_close(
        cross_entropy_masked(logits, target, class_weights=w),
        F.cross_entropy(logits, target, weight=w),
    )


def test_ce_with_ignore_equals_mean_over_valid_pixels():
    logits, target, ignore = make_batch()
    per_pixel = F.cross_entropy(logits, target, reduction="none")
    expected = per_pixel[~ignore].mean()
    torch.testing.assert_close(cross_entropy_masked(logits, target, ignore=ignore), expected)


def test_uniform_logits_ce_is_log_k():
    target = torch.randint(0, 4, (1, 5, 5))
    loss = cross_entropy_masked(torch.zeros(1, 4, 5, 5), target)
    assert float(loss) == pytest.approx(math.log(4), rel=1e-6)


def test_soft_dice_known_value():
    # K=2, 4 pixels, foreground target on 2 pixels, prediction p_fg = 0.5 everywhere:
    # inter = 1, sum p = 2, sum y = 2 -> dice = (2 + eps) / (4 + eps)
    logits = torch.zeros(1, 2, 1, 4)
    target = torch.tensor([[[1, 1, 0, 0]]])
    eps = 1.0
    expected = 1 - (2 * 1 + eps) / (2 + 2 + eps)
    assert float(soft_dice_loss(logits, target, eps=eps)) == pytest.approx(expected, rel=1e-6)


def test_dice_averages_foreground_classes_only():
    # background wrong everywhere would be punished only with include_background=True
    k = 3
    target = torch.tensor([[[0, 0, 1, 2]]])
    logits = perfect_logits(target, k)
    logits[0, :, 0, 0] = torch.tensor([0.0, 0.0, 0.0])  # pixel 0 uniform: background unsure
    fg = float(soft_dice_loss(logits, target))
    with_bg = float(soft_dice_loss(logits, target, include_background=True))
    assert with_bg > fg


def test_dice_absent_class_does_not_dilute_mean():
    # class 2 is neither in target nor predicted: the mean is over class 1 only
    k = 3
    target = torch.tensor([[[0, 0, 1, 1]]])
    logits = torch.zeros(1, k, 1, 4)
    logits[0, 1] = 2.0  # class 1 predicted everywhere
    logits[0, 2] = -20.0
    probs = torch.softmax(logits, 1)
    p1 = probs[0, 1].flatten()
    y1 = torch.tensor([0.0, 0.0, 1.0, 1.0])
    dice1 = (2 * (p1 * y1).sum() + 1) / (p1.sum() + y1.sum() + 1)
    assert float(soft_dice_loss(logits, target)) == pytest.approx(float(1 - dice1), rel=1e-5)


# ------------------------------------------------------------------------------------ ignore


@pytest.mark.parametrize("fn", [segmentation_loss, cross_entropy_masked, soft_dice_loss])
def test_changes_at_ignored_pixels_change_nothing(fn):
    logits, target, ignore = make_batch(seed=1)
    logits2 = logits.clone()
    target2 = target.clone()
    g = torch.Generator().manual_seed(7)
    noise = torch.randn(logits.shape, generator=g) * 10
    logits2 = torch.where(ignore[:, None], logits2 + noise, logits2)
    target2 = torch.where(ignore, (target2 + 1) % 3, target2)
    # placeholder values in ignored pixels must not be used as class indices either
    target3 = torch.where(ignore, torch.full_like(target, 255), target)

    a = logits.clone().requires_grad_(True)
    b = logits2.clone().requires_grad_(True)
    c = logits.clone().requires_grad_(True)
    la = fn(a, target, ignore=ignore)
    lb = fn(b, target2, ignore=ignore)
    lc = fn(c, target3, ignore=ignore)
    la.backward()
    lb.backward()
    lc.backward()
    torch.testing.assert_close(la, lb)
    torch.testing.assert_close(la, lc)
    valid = ~ignore[:, None].expand_as(a)
    torch.testing.assert_close(a.grad[valid], b.grad[valid])
    torch.testing.assert_close(a.grad[valid], c.grad[valid])
    # no gradient flows into ignored pixels
    assert float(a.grad[~valid].abs().max()) == 0.0
    assert float(b.grad[~valid].abs().max()) == 0.0


@pytest.mark.parametrize("fn", [segmentation_loss, cross_entropy_masked, soft_dice_loss])
def test_all_pixels_ignored_gives_finite_zero(fn):
    logits, target, _ = make_batch()
    logits.requires_grad_(True)
    ignore = torch.ones_like(target, dtype=torch.bool)
    loss = fn(logits, target, ignore=ignore)
    assert loss.ndim == 0
    assert torch.isfinite(loss)
    assert float(loss) == 0.0
    loss.backward()
    assert logits.grad is not None
    assert torch.isfinite(logits.grad).all()
    assert float(logits.grad.abs().max()) == 0.0


def test_ignore_equivalent_to_cropping():
    logits, target, _ = make_batch(n=1, h=6, w=8)
    ignore = torch.zeros_like(target, dtype=torch.bool)
    ignore[..., 4:] = True
    full = segmentation_loss(logits, target, ignore=ignore)
    crop = segmentation_loss(logits[..., :4].contiguous(), target[..., :4].contiguous())
    torch.testing.assert_close(full, crop)


# ----------------------------------------------------------------------------- class weights


def test_class_weights_change_ce_in_known_direction():
    # class 1 pixels are badly predicted, class 0 pixels well: up-weighting class 1 raises CE
    target = torch.tensor([[[0, 0, 1, 1]]])
    logits = torch.zeros(1, 2, 1, 4)
    logits[0, 0] = 3.0  # predicts class 0 everywhere
    base = float(cross_entropy_masked(logits, target))
    up = float(cross_entropy_masked(logits, target, class_weights=[1.0, 5.0]))
    down = float(cross_entropy_masked(logits, target, class_weights=[5.0, 1.0]))
    assert down < base < up
    # weight 0 on a class removes its pixels
    only0 = float(cross_entropy_masked(logits, target, class_weights=[1.0, 0.0]))
    expected = float(F.cross_entropy(logits[..., :2], target[..., :2]))
    assert only0 == pytest.approx(expected, rel=1e-6)


def test_class_weights_weight_the_dice_average():
    k = 3
    target = torch.tensor([[[1, 1, 2, 2]]])
    logits = perfect_logits(target, k)
    logits[0, :, 0, 2:] = 0.0  # class 2 uncertain, class 1 perfect
    plain = float(soft_dice_loss(logits, target))
    favour_1 = float(soft_dice_loss(logits, target, class_weights=[1.0, 10.0, 1.0]))
    favour_2 = float(soft_dice_loss(logits, target, class_weights=[1.0, 1.0, 10.0]))
    assert favour_1 < plain < favour_2


def test_combined_is_weighted_sum():
    logits, target, ignore = make_batch(seed=3)
    ce = cross_entropy_masked(logits, target, ignore=ignore)
    dice = soft_dice_loss(logits, target, ignore=ignore)
    total = segmentation_loss(logits, target, ignore=ignore, ce_weight=0.3, dice_weight=2.0)
    torch.testing.assert_close(total, 0.3 * ce + 2.0 * dice)
    torch.testing.assert_close(
        segmentation_loss(logits, target, dice_weight=0.0), cross_entropy_masked(logits, target)
    )


# --------------------------------------------------------------------------- precision/errors


def test_half_precision_logits_are_computed_in_float32():
    logits, target, ignore = make_batch()
    loss16 = segmentation_loss(logits.bfloat16(), target, ignore=ignore)
    assert loss16.dtype == torch.float32
    assert torch.isfinite(loss16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss_ac = segmentation_loss(logits, target, ignore=ignore)
    assert loss_ac.dtype == torch.float32
    torch.testing.assert_close(loss_ac, segmentation_loss(logits, target, ignore=ignore))


def test_bad_inputs_raise_clear_errors():
    logits, target, ignore = make_batch()
    with pytest.raises(ValueError, match=r"\(N, K, H, W\)"):
        segmentation_loss(logits[0], target)
    with pytest.raises(ValueError, match=r"\(N, H, W\)"):
        segmentation_loss(logits, target[:, :4])
    with pytest.raises(TypeError, match="long"):
        segmentation_loss(logits, target.float())
    with pytest.raises(ValueError, match=r"0\.\.2.*ignore=True"):
        segmentation_loss(logits, torch.where(ignore, 7, target))
    with pytest.raises(TypeError, match="bool"):
        segmentation_loss(logits, target, ignore=ignore.long())
    with pytest.raises(ValueError, match=r"\(K,\)"):
        segmentation_loss(logits, target, class_weights=[1.0, 1.0])
    with pytest.raises(ValueError, match="non-negative"):
        segmentation_loss(logits, target, class_weights=[1.0, -1.0, 1.0])
    with pytest.raises(ValueError, match="at least 2 classes"):
        segmentation_loss(logits[:, :1], torch.zeros_like(target))


# ----------------------------------------------------------------------------- numpy Dice


def test_dice_score_known_values():
    a = np.array([[1, 1, 0, 0]])
    b = np.array([[1, 0, 0, 0]])
    assert dice_score(a, b) == pytest.approx(2 / 3)  # half overlap of a
    assert dice_score(a, a) == 1.0
    assert dice_score(a, np.array([[0, 0, 1, 1]])) == 0.0
    assert dice_score(np.zeros((3, 3), int), np.zeros((3, 3), int)) == 1.0
    assert dice_score(np.zeros((3, 3), int), np.ones((3, 3), int)) == 0.0


def test_per_class_dice_and_mean():
    pred = np.array([[1, 1, 2, 2, 0]])
    true = np.array([[1, 0, 2, 2, 2]])
    d = per_class_dice(pred, true)
    assert set(d) == {1, 2}
    assert d[1] == pytest.approx(2 * 1 / (2 + 1))
    assert d[2] == pytest.approx(2 * 2 / (2 + 3))
    assert dice_score(pred, true) == pytest.approx((d[1] + d[2]) / 2)
    # explicit classes: an absent class scores 1.0
    assert per_class_dice(pred, true, classes=[3]) == {3: 1.0}
    assert dice_score(pred, true, classes=[2]) == pytest.approx(0.8)


def test_dice_score_ignore_and_dtypes():
    pred = np.array([[1, 1, 0, 0]], dtype=np.uint8)
    true = np.array([[1, 0, 0, 1]], dtype=np.uint16)
    ignore = np.array([[False, True, False, True]])
    assert dice_score(pred, true, ignore=ignore) == 1.0
    assert dice_score(pred.astype(bool), true.astype(bool)) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="same shape"):
        dice_score(pred, true[:, :3])
    with pytest.raises(TypeError, match="argmax"):
        dice_score(pred.astype(float), true)
