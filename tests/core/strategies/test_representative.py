"""Known answers for coreset and suggestive annotation."""

from __future__ import annotations

import numpy as np
import pytest

from napari_activeseg.core.strategies import Candidate, StrategyContext, get_strategy


def _feat(key, features, entropy=0.5, labelled=False):
    return Candidate(key=key, image_id=key, features=np.asarray(features, float),
                     maps={"entropy": np.full((4, 4), entropy)}, labelled=labelled)


def test_coreset_picks_the_candidate_farthest_from_the_labelled_set():
    labelled = [_feat("L0", [0, 0], labelled=True), _feat("L1", [1, 0], labelled=True)]
    pool = [_feat("near0", [0.1, 0]), _feat("near1", [0.9, 0.1]), _feat("far", [5, 5]),
            _feat("mid", [0, 3])]
    s = get_strategy("coreset")
    picks = s.select(labelled + pool, k=1)
    assert picks[0].key == "far"
    assert "feature distance to the nearest labelled image" in picks[0].reason
    # k=2: the second pick is the farthest from labelled + the first pick
    assert [p.key for p in s.select(labelled + pool, k=2)] == ["far", "mid"]
    # labelled items can also come through the context
    ctx = StrategyContext(labelled=labelled)
    assert [p.key for p in s.select(pool, k=2, context=ctx)] == ["far", "mid"]


def test_coreset_without_labelled_images_starts_central():
    pool = [_feat("a", [0, 0]), _feat("b", [1, 0]), _feat("c", [2, 0]), _feat("d", [10, 0])]
    picks = get_strategy("coreset").select(pool, k=2)
    assert picks[0].key == "c"  # its farthest neighbour (d, 8) is nearest
    assert "most central" in picks[0].reason
    assert picks[1].key == "d"  # then the farthest from c (a: 2, b: 1, d: 8)


def test_suggestive_covers_two_clusters():
    rng = np.random.default_rng(0)
    a = [[1, 0, 0] + 0.05 * rng.random(3) for _ in range(4)]
    b = [[0, 1, 0] + 0.05 * rng.random(3) for _ in range(2)]
    # A1, A2, B1 most uncertain, then A3, A4, B2
    cands = [_feat("A1", a[0], 0.90), _feat("A2", a[1], 0.85), _feat("B1", b[0], 0.80),
             _feat("A3", a[2], 0.70), _feat("A4", a[3], 0.65), _feat("B2", b[1], 0.60)]
    uncertainty_only = get_strategy("entropy", diversity="none").select(cands, k=2)
    assert [p.key for p in uncertainty_only] == ["A1", "A2"]
    picks = get_strategy("suggestive").select(cands, k=2)
    keys = [p.key for p in picks]
    assert keys[0].startswith("A") and keys[1] == "B1"
    assert "max-cover" in picks[0].reason and "4 most uncertain" in picks[0].reason


def test_suggestive_map_option_switches_needs():
    s = get_strategy("suggestive")
    assert s.prediction_mode == "single" and s.needs_features
    assert get_strategy("suggestive", map_name="ensemble").prediction_mode == "ensemble"
    assert get_strategy("suggestive", map_name="tta").required_maps == ("tta",)


def test_coreset_rejects_mismatched_descriptors():
    with pytest.raises(ValueError, match="same"):
        get_strategy("coreset").select([_feat("a", [0, 0]), _feat("b", [0, 0, 1])], k=1)


def _two_types(n_a=30, n_b=10, n_lab_a=4, seed=0):
    """Type A (common, sure) around (1, 0), type B (rare, unsure) around (0, 1); the labelled
    images are all of type A. Uncertainty = 0.5 + i/1000 in A, 0.9 + i/1000 in B."""
    rng = np.random.default_rng(seed)
    lab = [_feat(f"LA{i}", [1, 0] + 0.05 * rng.standard_normal(2), labelled=True)
           for i in range(n_lab_a)]
    a = [_feat(f"A{i:02d}", [1, 0] + 0.05 * rng.standard_normal(2), 0.5 + i / 1000)
         for i in range(n_a)]
    b = [_feat(f"B{i:02d}", [0, 1] + 0.05 * rng.standard_normal(2), 0.9 + i / 1000)
         for i in range(n_b)]
    return lab, a, b


def test_stratified_keeps_the_labelled_set_in_the_pools_proportions():
    lab, a, b = _two_types()
    cands = lab + a + b
    # uncertainty alone: all four from the rare, unsure type B
    only = get_strategy("entropy", diversity="none").select(cands, k=4)
    assert [p.key for p in only] == ["B09", "B08", "B07", "B06"]
    s = get_strategy("stratified", n_strata=2)
    picks = s.select(cands, k=4)
    # 44 images, 34 of type A: after 4 picks (8 labelled) A's share is 6.2 and B's 1.8, so
    # A (4 labelled) gets 2 and B 2; inside each type, the most uncertain first
    assert sorted(p.key for p in picks) == ["A28", "A29", "B08", "B09"]
    # one pick at a time to the stratum furthest below its share after that pick:
    # 5 labelled -> B short by 1.14 (A over by 0.14); 6 -> A short by 0.64; 7 -> B by 0.59
    assert [p.key for p in picks] == ["B09", "A29", "B08", "A28"]
    assert "stratum" in picks[0].reason and "most uncertain" in picks[0].reason
    # one pick: B is the stratum furthest below its share (A already has 4 of its 3.9)
    assert [p.key for p in s.select(cands, k=1)] == ["B09"]


def test_stratified_with_one_stratum_is_plain_uncertainty_ranking():
    lab, a, b = _two_types()
    picks = get_strategy("stratified", n_strata=1).select(lab + a + b, k=3)
    assert [p.key for p in picks] == ["B09", "B08", "B07"]


def test_stratified_is_deterministic_and_needs_descriptors():
    lab, a, b = _two_types(seed=3)
    s = get_strategy("stratified", n_strata=3)
    first = [p.key for p in s.select(lab + a + b, k=5, context=StrategyContext(round=2))]
    again = [p.key for p in s.select(lab + a + b, k=5, context=StrategyContext(round=2))]
    assert first == again
    assert s.needs_features and s.needs_labelled_set and s.prediction_mode == "single"
    assert get_strategy("stratified", map_name="bald").prediction_mode == "mc"
    bare = [Candidate(key="x", image_id="x", maps={"entropy": np.ones((2, 2))})]
    with pytest.raises(ValueError, match="features"):
        s.select(bare, k=1)
