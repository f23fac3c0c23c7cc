"""Known answers of the object-level scores on hand-made label images."""

from __future__ import annotations

import numpy as np
import pytest

from napari_activeseg.evaluation.objects import (
    IOU_THRESHOLDS,
    contingency,
    instances_from_semantic,
    match_objects,
    score_objects,
)


def _truth() -> np.ndarray:
    """Three separate 10x10 squares, ids with a gap (1, 2, 7)."""
    lab = np.zeros((40, 60), np.uint16)
    lab[2:12, 2:12] = 1
    lab[2:12, 30:40] = 2
    lab[25:35, 10:20] = 7
    return lab


def test_identical_images_score_one():
    true = _truth()
    m = match_objects(true, true)
    assert (m.n_true, m.n_pred) == (3, 3)
    assert m.tp == (3,) * len(IOU_THRESHOLDS)
    assert m.f1(0.5) == 1.0 and m.count_error == 0.0
    assert (m.splits, m.merges, m.effort) == (0, 0, 0)
    s = score_objects([true], [true])
    assert s.f1_50 == s.ap_50 == s.mean_f1 == s.mean_ap == 1.0


def test_ids_do_not_matter():
    true = _truth()
    pred = np.zeros_like(true)
    for new, old in ((50, 1), (3, 2), (9, 7)):
        pred[true == old] = new
    assert score_objects([pred], [true]).mean_ap == 1.0


def test_contingency_counts_pixels():
    true = _truth()
    counts, t_ids, p_ids = contingency(true, true)
    assert t_ids.tolist() == p_ids.tolist() == [1, 2, 7]
    assert counts.shape == (4, 4)
    assert np.array_equal(np.diag(counts)[1:], [100, 100, 100])
    assert counts.sum() == true.size


def test_one_object_shifted_matches_below_its_iou_only():
    true = _truth()
    pred = true.copy()
    pred[true == 1] = 0
    pred[2:12, 5:15] = 1  # shifted by 3 columns: IoU = 70 / 130 = 0.538
    m = match_objects(pred, true)
    tp = dict(zip(m.thresholds, m.tp))
    assert tp[0.5] == 3 and tp[0.55] == 2 and tp[0.9] == 2
    s = score_objects([pred], [true])
    row55 = next(r for r in s.per_threshold if r["iou"] == 0.55)
    assert (row55["tp"], row55["fp"], row55["fn"]) == (2, 1, 1)
    assert row55["ap"] == pytest.approx(2 / 4)
    assert row55["f1"] == pytest.approx(4 / 6)
    assert s.f1_50 == 1.0 and s.mean_f1 < 1.0
    assert m.count_error == 0.0 and m.effort == 0


def test_a_split():
    true = _truth()
    pred = true.copy()
    pred[2:12, 36:40] = 20  # object 2 cut in two: 60 px (IoU 0.6) | 40 px
    m = match_objects(pred, true)
    assert (m.n_true, m.n_pred) == (3, 4)
    tp = dict(zip(m.thresholds, m.tp))
    assert tp[0.5] == tp[0.6] == 3 and tp[0.65] == 2
    assert m.splits == 1 and m.merges == 0
    assert m.merge_strokes == 1 and m.to_add == 0 and m.to_remove == 0
    assert m.count_error == pytest.approx(1 / 3)


def test_a_merge():
    true = np.zeros((20, 40), np.uint16)
    true[5:15, 5:15] = 1
    true[5:15, 15:25] = 2  # two touching squares
    pred = (true > 0).astype(np.uint16)  # found as one region
    m = match_objects(pred, true)
    assert (m.n_true, m.n_pred) == (2, 1)
    assert m.tp[0] == 0 or m.tp[0] == 1  # IoU 0.5 exactly with each: at most one match
    assert m.merges == 1 and m.splits == 0
    assert m.split_strokes == 1 and m.to_add == 0 and m.to_remove == 0
    assert m.count_error == pytest.approx(0.5)
    # connected components of the semantic map merge them too; the truth separates them
    assert instances_from_semantic(true > 0).max() == 1


def test_an_unequal_merge_matches_the_bigger_object():
    true = np.zeros((20, 40), np.uint16)
    true[2:18, 2:18] = 1   # 256 px
    true[7:13, 18:24] = 2  # 36 px, touching: 12 % of the merged region
    pred = (true > 0).astype(np.uint16)
    m = match_objects(pred, true)
    assert m.tp[0] == 1  # IoU 256 / 292 with the big one
    assert m.merges == 1 and m.split_strokes == 1 and m.to_add == 0


def test_a_stray_speck_is_no_split():
    true = _truth()
    pred = true.copy()
    pred[2:4, 2:4] = 40  # 4 px of object 1: under MIN_COVER of it
    m = match_objects(pred, true)
    assert m.splits == 0 and m.to_remove == 1 and m.tp[0] == 3


def test_empty_prediction():
    true = _truth()
    m = match_objects(np.zeros_like(true), true)
    assert m.tp == (0,) * len(IOU_THRESHOLDS)
    assert m.f1(0.5) == 0.0 and m.count_error == 1.0
    assert m.to_add == 3 and m.effort == 3
    s = score_objects([np.zeros_like(true)], [true])
    assert s.per_threshold[0]["recall"] == 0.0 and s.per_threshold[0]["fn"] == 3


def test_empty_truth():
    true = np.zeros((40, 60), np.uint16)
    pred = _truth()
    m = match_objects(pred, true)
    assert m.f1(0.5) == 0.0
    assert m.count_error == 3.0  # divided by max(n_true, 1)
    assert m.to_remove == 3 and m.effort == 3
    s = score_objects([pred], [true])
    assert s.per_threshold[0]["precision"] == 0.0


def test_both_empty_score_one():
    empty = np.zeros((8, 8), np.uint8)
    s = score_objects([empty], [empty])
    assert s.f1_50 == 1.0 and s.count_error == 0.0


def test_counts_are_summed_over_images():
    true = _truth()
    s = score_objects([true, np.zeros_like(true)], [true, true])
    assert s.per_threshold[0]["tp"] == 3 and s.per_threshold[0]["fn"] == 3
    assert s.f1_50 == pytest.approx(6 / 9)
    assert s.count_error == pytest.approx(0.5)
    assert s.as_row()["obj_f1_50"] == s.f1_50


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="shape"):
        match_objects(np.zeros((4, 4), int), np.zeros((4, 5), int))
    with pytest.raises(ValueError, match="integer ids"):
        match_objects(np.zeros((4, 4), float), np.zeros((4, 4), int))
    with pytest.raises(ValueError, match="0.5"):
        match_objects(np.zeros((4, 4), int), np.zeros((4, 4), int), thresholds=[0.7])
    with pytest.raises(ValueError, match="one each"):
        score_objects([np.zeros((4, 4), int)], [])
