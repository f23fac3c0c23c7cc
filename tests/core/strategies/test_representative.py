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
