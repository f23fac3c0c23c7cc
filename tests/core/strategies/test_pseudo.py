"""CEAL pseudo-labels: schedule, masks, and separation from reviewed labels."""

from __future__ import annotations

import numpy as np
import pytest

from napari_activeseg.core.strategies import (
    PseudoLabelConfig,
    PseudoLabels,
    ceal_threshold,
    make_pseudo_labels,
    pseudo_labels,
    pseudo_training_set,
)


def test_threshold_schedule_is_monotone_and_bounded():
    values = [ceal_threshold(r) for r in range(30)]
    assert values[0] == pytest.approx(0.90)
    assert values[5] == pytest.approx(0.95)
    assert all(b >= a for a, b in zip(values, values[1:], strict=False))
    assert max(values) == pytest.approx(0.99) and values[-1] == pytest.approx(0.99)
    cfg = PseudoLabelConfig(start=0.8, step=0.05, ceiling=0.95)
    assert [cfg.threshold(r) for r in range(5)] == pytest.approx([0.8, 0.85, 0.9, 0.95, 0.95])


@pytest.mark.parametrize("kwargs", [{"start": 0.0}, {"step": -0.01}, {"ceiling": 0.5},
                                    {"min_fraction": 2.0}, {"max_images": 0}])
def test_config_rejects_bad_values(kwargs):
    with pytest.raises(ValueError):
        PseudoLabelConfig(**kwargs)


def test_config_json_round_trip():
    cfg = PseudoLabelConfig(enabled=False, start=0.85)
    assert PseudoLabelConfig.from_json(cfg.to_json()) == cfg


def test_pseudo_label_masks_are_correct():
    p1 = np.array([[0.05, 0.5, 0.93], [0.97, 0.1, 0.6]])
    probs = np.stack([1 - p1, p1])
    labels, mask = pseudo_labels(probs, 0.92)
    np.testing.assert_array_equal(labels, [[0, 0, 1], [1, 0, 1]])
    np.testing.assert_array_equal(mask, [[True, False, True], [True, False, False]])
    assert labels.dtype == np.uint8 and mask.dtype == bool
    _, strict = pseudo_labels(probs, 0.96)
    assert strict.sum() < mask.sum()  # tightening the threshold only removes pixels
    assert not (strict & ~mask).any()
    with pytest.raises(ValueError, match="threshold"):
        pseudo_labels(probs, 1.5)


def test_make_pseudo_labels_marks_them_and_can_be_switched_off():
    p1 = np.array([[0.01, 0.99], [0.5, 0.95]])
    probs = np.stack([1 - p1, p1])
    pl = make_pseudo_labels("img", probs, round=3)
    assert isinstance(pl, PseudoLabels) and pl.is_pseudo
    assert pl.threshold == pytest.approx(0.93) and pl.round == 3
    np.testing.assert_array_equal(pl.mask, [[True, True], [False, True]])
    assert pl.fraction == pytest.approx(0.75)
    assert make_pseudo_labels("img", probs, 3, PseudoLabelConfig(enabled=False)) is None
    assert make_pseudo_labels("img", probs, 3, PseudoLabelConfig(min_fraction=0.9)) is None


def test_pseudo_labels_never_mix_with_reviewed_labels():
    probs = np.stack([np.full((4, 4), 0.01), np.full((4, 4), 0.99)])
    a = make_pseudo_labels("a", probs, 0)
    b = make_pseudo_labels("b", probs, 0)
    images = {"a": np.zeros((1, 4, 4), np.float32), "b": np.ones((1, 4, 4), np.float32)}
    with pytest.raises(ValueError, match="reviewed"):
        pseudo_training_set([a, b], images, reviewed_ids={"b"})
    imgs, labs, masks = pseudo_training_set([a, b], images, reviewed_ids={"c"})
    assert len(imgs) == len(labs) == len(masks) == 2 and all(m.all() for m in masks)
    with pytest.raises(TypeError):
        pseudo_training_set([(np.zeros((4, 4)), np.ones((4, 4), bool))], images,
                            reviewed_ids=())
