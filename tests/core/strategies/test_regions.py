"""Region windows, cost model and cost-aware ranking."""

from __future__ import annotations

import numpy as np
import pytest

from napari_activeseg.core.strategies import (
    Candidate,
    correction_cost,
    get_strategy,
    region_boxes,
    region_candidates,
    region_key,
)
from napari_activeseg.core.strategies.regions import boundary_length, window_spans


def _coverage(boxes, shape):
    cover = np.zeros(shape, int)
    for y0, x0, y1, x1 in boxes:
        cover[y0:y1, x0:x1] += 1
    return cover


@pytest.mark.parametrize("shape", [(300, 700), (256, 256), (100, 40), (513, 600)])
def test_windows_tile_the_image_exactly(shape):
    boxes = region_boxes(shape, size=256, min_size=64)
    assert (_coverage(boxes, shape) == 1).all()  # no gap, no overlap
    for y0, x0, y1, x1 in boxes:
        assert min(y1 - y0, shape[0]) >= min(64, shape[0])
        assert min(x1 - x0, shape[1]) >= min(64, shape[1])


def test_window_spans_known_answers():
    assert window_spans(300, 128, min_size=64) == [(0, 128), (128, 300)]  # 44-px sliver merged
    assert window_spans(400, 128, min_size=64) == [(0, 128), (128, 256), (256, 384 + 16)][:2] + \
        [(256, 400)]
    assert window_spans(100, 256) == [(0, 100)]  # smaller than a window: one region
    spans = window_spans(300, 128, stride=64)
    assert spans[0] == (0, 128) and spans[-1] == (172, 300)
    assert all(b - a == 128 for a, b in spans)
    with pytest.raises(ValueError, match="stride"):
        window_spans(300, 128, stride=200)
    with pytest.raises(ValueError, match="min_size"):
        window_spans(300, 128, min_size=200)


def test_region_candidates_crop_and_the_most_uncertain_window_wins():
    h, w = 100, 300
    unc = np.zeros((h, w), np.float32)
    unc[40:60, 210:240] = 1.0  # the hot spot lies in the third window
    p1 = np.full((h, w), 0.3, np.float32)
    probs = np.stack([1 - p1, p1])
    image = np.zeros((1, h, w), np.float32)
    cands = region_candidates("big", probs, {"entropy": unc}, size=100, image=image)
    assert [c.box for c in cands] == [(0, 0, 100, 100), (0, 100, 100, 200), (0, 200, 100, 300)]
    assert cands[2].key == region_key("big", (0, 200, 100, 300)) == "big@0,200,100,300"
    assert cands[2].probs.shape == (2, 100, 100) and cands[2].maps["entropy"].shape == (100, 100)
    assert cands[2].image.shape == (1, 100, 100)
    pick = get_strategy("entropy").select(cands, k=1)[0]
    assert pick.box == (0, 200, 100, 300) and pick.image_id == "big"
    assert "among 3 regions" in pick.reason


def test_regions_of_several_images_compete_in_one_ranking():
    def image_regions(image_id, hot):
        unc = np.zeros((64, 128), np.float32)
        unc[:, 64:] = hot
        probs = np.stack([np.full((64, 128), 0.6), np.full((64, 128), 0.4)])
        return region_candidates(image_id, probs, {"entropy": unc}, size=64)

    cands = image_regions("a", 0.3) + image_regions("b", 0.8)
    picks = get_strategy("entropy").select(cands, k=2)
    assert picks[0].key == "b@0,64,64,128"
    assert picks[1].image_id == "a"  # diversity: the next region comes from the other image


def test_region_candidates_validate_shapes():
    with pytest.raises(ValueError, match="do not match"):
        region_candidates("x", np.ones((2, 10, 10)) / 2, {"entropy": np.zeros((5, 5))})
    with pytest.raises(ValueError, match="probs or"):
        region_candidates("x", None, {})


def test_boundary_length_and_correction_cost():
    lab = np.zeros((10, 10), int)
    lab[2:5, 2:5] = 1  # a 3x3 square: 12 boundary pairs
    assert boundary_length(lab) == 12
    probs = np.stack([lab == 0, lab == 1]).astype(float)
    assert correction_cost(probs, constant=10) == pytest.approx(22)
    assert correction_cost(np.stack([np.ones((4, 4)), np.zeros((4, 4))])) == pytest.approx(64)


def test_cost_aware_ranking_flips_a_known_pair():
    # A: more uncertain, but a checkerboard prediction -> 2 * 8 * 7 = 112 boundary pairs
    checker = (np.indices((8, 8)).sum(0) % 2).astype(bool)
    pa = np.stack([~checker, checker]).astype(float)
    a = Candidate(key="a@0,0,8,8", image_id="a", box=(0, 0, 8, 8), probs=pa,
                  maps={"entropy": np.full((8, 8), 0.5)})
    # B: a bit less uncertain, a single straight boundary -> 8 pairs
    half = np.zeros((8, 8), bool)
    half[:, 4:] = True
    pb = np.stack([~half, half]).astype(float)
    b = Candidate(key="b@0,0,8,8", image_id="b", box=(0, 0, 8, 8), probs=pb,
                  maps={"entropy": np.full((8, 8), 0.4)})
    assert get_strategy("entropy").select([a, b], k=1)[0].key == "a@0,0,8,8"
    aware = get_strategy("entropy", cost_aware=True, cost_constant=8.0)
    pick = aware.select([a, b], k=1)[0]
    assert pick.key == "b@0,0,8,8"
    assert pick.score == pytest.approx(0.4 / 16)
    assert "per correction cost" in pick.reason
    # a user-supplied cost model replaces the default
    from napari_activeseg.core.strategies import StrategyContext

    ctx = StrategyContext(cost=lambda c: 1.0 if c.image_id == "a" else 100.0)
    assert aware.select([a, b], k=1, context=ctx)[0].key == "a@0,0,8,8"
