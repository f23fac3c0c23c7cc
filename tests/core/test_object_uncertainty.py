"""Per-object uncertainty, the object-level effort estimate and the ``objects`` strategy, on
hand-made probabilities with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from napari_activeseg.core.object_uncertainty import (
    ADD_MIN_PIXELS,
    boundary_ring,
    estimate_object_effort,
    object_score,
    object_uncertainty,
)
from napari_activeseg.core.strategies import Candidate, get_strategy


def _probs(fg: np.ndarray) -> np.ndarray:
    """(2, H, W) probabilities from a foreground probability map."""
    fg = np.asarray(fg, np.float32)
    return np.stack([1 - fg, fg])


def test_boundary_ring_is_the_objects_inner_edge():
    ids = np.zeros((8, 8), np.uint16)
    ids[2:6, 2:6] = 3
    ring = boundary_ring(ids, ring=1)
    assert np.count_nonzero(ring) == 12  # a 4 x 4 square's perimeter
    assert set(np.unique(ring)) == {0, 3} and ring[3:5, 3:5].sum() == 0
    two = np.zeros((6, 8), np.uint16)  # two touching objects: both sides of the contact
    two[1:5, 1:4], two[1:5, 4:7] = 1, 2
    ring = boundary_ring(two, ring=1)
    assert (ring[2:4, 3] == 1).all() and (ring[2:4, 4] == 2).all()
    contact = boundary_ring(two, ring=1, contact=True)  # only along the shared edge
    assert set(zip(*np.nonzero(contact))) == {(y, x) for y in range(1, 5) for x in (3, 4)}
    with pytest.raises(ValueError, match="ring"):
        boundary_ring(ids, ring=0)


def test_object_uncertainty_known_answers():
    ids = np.zeros((10, 20), np.uint16)
    ids[2:8, 2:8] = 1      # confident everywhere
    ids[2:8, 12:18] = 5    # its left edge column is a coin flip
    fg = (ids > 0).astype(np.float32)
    fg[2:8, 12] = 0.5
    ou = object_uncertainty(ids, _probs(fg), ring=1)
    assert ou.ids.tolist() == [1, 5] and ou.area.tolist() == [36, 36]
    np.testing.assert_allclose(ou.inside, [0, 6 / 36], atol=1e-5)
    np.testing.assert_allclose(ou.boundary, [0, 6 / 20], atol=1e-5)  # 6 of the 20 ring px
    np.testing.assert_allclose(ou.core, [0, 0], atol=1e-5)  # the 4 x 4 cores are sure
    np.testing.assert_allclose(ou.contact, [0, 0])  # no neighbours
    np.testing.assert_allclose(ou.objectness, [1, 33 / 36], atol=1e-5)
    np.testing.assert_allclose(ou.doubt, [0, 3 / 36], atol=1e-5)  # 1 - objectness
    lut = ou.lookup()
    assert lut[5] == pytest.approx(3 / 36, abs=1e-5) and lut[0] == 0
    assert lut[1] == pytest.approx(0, abs=1e-5)
    assert set(ou.table()) >= {"label", "uncertainty", "boundary_uncertainty", "doubt"}


def test_object_uncertainty_refuses_mismatched_input():
    ids = np.zeros((4, 4), np.uint16)
    with pytest.raises(ValueError, match="probs must be"):
        object_uncertainty(ids, np.zeros((2, 5, 4)))
    with pytest.raises(ValueError, match="integer ids"):
        object_uncertainty(ids.astype(float), np.zeros((2, 4, 4)))


def test_effort_estimate_counts_removals_splits_and_additions():
    ids = np.zeros((40, 40), np.uint16)
    fg = np.zeros((40, 40), np.float32)
    ids[2:8, 2:8], fg[2:8, 2:8] = 1, 1.0          # sure: nothing to do
    ids[2:8, 12:18], fg[2:8, 12:18] = 2, 0.6      # barely believed: likely removed
    ids[12:24, 2:14], fg[12:24, 2:14] = 3, 1.0    # two touching objects whose shared edge
    ids[12:24, 14:26], fg[12:24, 14:26] = 4, 1.0  # is in doubt: likely split / merged
    fg[12:24, 12:16] = 0.65
    fg[30:35, 0:5] = 0.45                         # 25 px the model half sees: likely added
    ids[2:8, 30:36], fg[1:9, 29:37] = 6, 0.7      # sure, with a soft halo: no object to add
    fg[2:8, 30:36] = 1.0
    fg[30:31, 20:23] = 0.45                       # 3 px: too small to count
    fg[36:40, 10:40] = 0.15                       # hazy background: not an object
    est = estimate_object_effort(ids, _probs(fg))
    assert est.remove == (2,) and est.split_merge == (3, 4) and est.add == 1
    assert est.total == 4 and est.to_dict() == {"add": 1, "remove": 1, "split_merge": 2,
                                                "total": 4}
    assert 25 >= ADD_MIN_PIXELS > 3


def test_objects_strategy_ranks_the_window_with_doubtful_objects_first():
    sure = np.zeros((32, 32), np.float32)
    for y, x in ((4, 4), (4, 20), (20, 4)):
        sure[y:y + 8, x:x + 8] = 1.0  # three confident objects
    doubtful = np.zeros((32, 32), np.float32)
    doubtful[8:20, 4:28] = 1.0
    doubtful[8:20, 14:18] = 0.55  # two touching objects, or one? the model doubts
    cands = [Candidate("sure", "sure", probs=_probs(sure)),
             Candidate("doubtful", "doubtful", probs=_probs(doubtful)),
             Candidate("given", "given", scores={"objects": 0.2})]
    strategy = get_strategy("objects")
    assert strategy.candidate_score(cands[0]) == pytest.approx(0.0, abs=1e-4)
    picks = strategy.select(cands, k=3)
    assert [p.key for p in picks] == ["doubtful", "given", "sure"]
    assert "expected object edits" in picks[0].reason
    assert object_score(np.zeros((4, 4), np.uint16), _probs(np.zeros((4, 4)))) == 0.0
    assert strategy.estimate_cost(10) > get_strategy("entropy").estimate_cost(10)


def test_objects_strategy_says_what_is_missing():
    with pytest.raises(ValueError, match="object_classes"):
        get_strategy("objects", object_classes=(0,))
    with pytest.raises(ValueError, match="probs"):
        get_strategy("objects").select([Candidate("a", "a")], k=1)


def test_an_uncertain_seam_through_one_object_flags_it_as_a_likely_split():
    ids = np.zeros((20, 30), np.uint16)
    ids[2:18, 2:28] = 1  # found as one object; the model doubts a seam down its middle
    fg = (ids > 0).astype(np.float32)
    fg[2:18, 13:17] = 0.65  # 4 of the core's 22 columns: a mean would dilute it
    ou = object_uncertainty(ids, _probs(fg))
    assert ou.core[0] > 0.9 and ou.inside[0] < 0.3 and ou.contact[0] == 0
    assert estimate_object_effort(ids, _probs(fg)).split_merge == (1,)


def test_objects_strategy_drops_the_fragments_the_post_processing_drops():
    fg = np.zeros((32, 32), np.float32)
    fg[4:20, 4:20] = 1.0  # one confident object
    fg[24:29, 24:29] = 0.6  # a doubtful 25-pixel fragment: over the per-image rule,
    # under the floor
    cand = Candidate("w", "w", probs=_probs(fg))
    plain = get_strategy("objects")
    floored = get_strategy("objects", min_area=30)
    ids = np.zeros((32, 32), np.uint16)
    ids[4:20, 4:20] = 1  # what the post-processing keeps under the floor
    assert floored.candidate_score(cand) == pytest.approx(object_score(ids, _probs(fg)))
    assert plain.candidate_score(cand) != pytest.approx(floored.candidate_score(cand))
    assert get_strategy("objects").project_options(object_classes=(2,),
                                                   min_object_area=20.0) == {
        "object_classes": (2,), "min_area": 20.0}
    assert get_strategy("entropy").project_options(object_classes=(2,),
                                                   min_object_area=20.0) == {}
    with pytest.raises(ValueError, match="min_area"):
        get_strategy("objects", min_area=-1)
