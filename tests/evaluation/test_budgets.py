"""Budget read-outs of a learning curve and per-class Dice: hand-made curves with known answers."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest

from napari_activeseg.evaluation.dataset import class_dice, mean_dice
from napari_activeseg.evaluation.report import (
    CSV_COLUMNS,
    budget_aulc,
    class_columns,
    curve_at,
    first_reach,
    plot_learning_curves,
    write_csv,
)

X = [0.01, 0.03, 0.07, 0.11]
Y = [0.40, 0.60, 0.80, 0.90]


def test_curve_at_interpolates_and_never_extrapolates():
    assert curve_at(X, Y, 0.01) == pytest.approx(0.40)
    assert curve_at(X, Y, 0.02) == pytest.approx(0.50)
    assert curve_at(X, Y, 0.05) == pytest.approx(0.70)
    assert curve_at(X, Y, 0.10) == pytest.approx(0.875)
    assert math.isnan(curve_at(X, Y, 0.005))  # below round 0: not measured
    assert math.isnan(curve_at(X, Y, 0.12))  # beyond the last round: not reached
    # unsorted input is sorted by x first
    assert curve_at(X[::-1], Y[::-1], 0.02) == pytest.approx(0.50)


def test_first_reach_crosses_on_the_segment():
    assert first_reach(X, Y, 0.70) == pytest.approx(0.05)
    assert first_reach(X, Y, 0.30) == pytest.approx(0.01)  # already there at round 0
    assert math.isnan(first_reach(X, Y, 0.95))
    # a dip does not hide the first crossing
    assert first_reach([0, 1, 2, 3], [0.5, 0.9, 0.6, 0.95], 0.8) == pytest.approx(0.75)


def test_budget_aulc_is_the_mean_height_over_the_covered_range():
    # flat curve: its height, whatever the range
    auc, cov = budget_aulc([0.0, 0.2], [0.7, 0.7], 0.01, 0.10)
    assert auc == pytest.approx(0.7) and cov == pytest.approx(1.0)
    # linear 0 -> 1 over [0, 1]: mean over [0.2, 0.6] is 0.4
    auc, cov = budget_aulc([0.0, 1.0], [0.0, 1.0], 0.2, 0.6)
    assert auc == pytest.approx(0.4) and cov == pytest.approx(1.0)
    # a curve ending half-way covers half the range, and is judged on that half
    auc, cov = budget_aulc([0.0, 0.4], [0.0, 0.4], 0.2, 0.6)
    assert auc == pytest.approx(0.3) and cov == pytest.approx(0.5)
    auc, cov = budget_aulc([0.7, 0.9], [0.5, 0.5], 0.2, 0.6)
    assert math.isnan(auc) and cov == 0.0
    with pytest.raises(ValueError, match="lo < hi"):
        budget_aulc(X, Y, 0.1, 0.1)


def test_class_dice_keeps_classes_apart():
    true = np.zeros((4, 4), np.uint8)
    true[:2] = 1  # 8 px of class 1
    true[2:, :1] = 2  # 2 px of class 2
    pred = true.copy()
    pred[2:, :1] = 0  # class 2 missed entirely
    per = class_dice([pred], [true], 3)
    assert per == {1: pytest.approx(1.0), 2: pytest.approx(0.0)}
    # the per-image mean over present classes agrees here (one image) ...
    assert mean_dice([pred], [true], 3) == pytest.approx(0.5)
    # ... but over images a class is averaged only where it occurs: the second image has no
    # class 2 in truth or prediction, so it does not dilute class 2's score
    only1 = np.ones((4, 4), np.uint8)
    per = class_dice([pred, only1], [true, only1], 3)
    assert per[2] == pytest.approx(0.0) and per[1] == pytest.approx(1.0)
    assert mean_dice([pred, only1], [true, only1], 3) == pytest.approx(0.75)
    # a class that never occurs is NaN, not a perfect score
    assert math.isnan(class_dice([only1], [only1], 4)[3])
    with pytest.raises(ValueError, match="n_classes"):
        class_dice([true], [true], 2)
    with pytest.raises(ValueError, match="shape"):
        class_dice([true[:2]], [true], 3)


def test_class_columns_only_for_multi_class():
    assert class_columns({1: 0.8}) == {}
    cols = class_columns({1: 0.6, 2: 0.8, 3: float("nan")})
    assert cols["dice_class1"] == 0.6 and cols["dice_class2"] == 0.8
    assert cols["dice_fg_mean"] == pytest.approx(0.7)  # NaN class (never occurred) left out


def test_csv_adds_per_class_columns_after_the_contract(tmp_path):
    base = {"strategy": "random", "seed": 0, "round": 0, "n_labelled": 1,
            "pixels_reviewed": 10, "dice": 0.5, "pixels_corrected": 1, "objects_corrected": 1,
            "seconds": 1.0}
    write_csv(tmp_path / "bin.csv", [base])
    with open(tmp_path / "bin.csv", newline="") as fh:
        assert list(csv.DictReader(fh).fieldnames) == list(CSV_COLUMNS)
    rows = [{**base, **class_columns({1: 0.4, 2: 0.6})}, {**base, "strategy": "rf"}]
    write_csv(tmp_path / "multi.csv", rows)
    with open(tmp_path / "multi.csv", newline="") as fh:
        reader = csv.DictReader(fh)
        got = list(reader)
        assert list(reader.fieldnames) == [*CSV_COLUMNS, "dice_class1", "dice_class2",
                                           "dice_fg_mean"]
    assert float(got[0]["dice_fg_mean"]) == pytest.approx(0.5)
    assert got[1]["dice_class1"] == ""


def test_plot_draws_reference_lines(tmp_path, monkeypatch):
    from matplotlib.axes import Axes

    drawn = []
    real = Axes.axhline

    def spy(self, y=0, *args, **kw):
        drawn.append((y, kw.get("label")))
        return real(self, y, *args, **kw)

    monkeypatch.setattr(Axes, "axhline", spy)
    rows = [{"strategy": "random", "seed": 0, "round": r, "pct": x, "dice": d}
            for r, (x, d) in enumerate([(1, 0.5), (5, 0.7)])]
    plot_learning_curves(tmp_path / "c.png", rows, x="pct", xlabel="% of pool",
                         references=[(0.777, "second human observer")])
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"
    assert any(y == pytest.approx(0.777) and "second human observer" in label
               for y, label in drawn)
