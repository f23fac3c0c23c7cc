"""Known answers for the uncertainty-sampling strategies and the committee helper."""

from __future__ import annotations

import numpy as np
import pytest

from napari_activeseg.core.strategies import StrategyContext, bootstrap_indices, get_strategy


def _ranking(name, cands, **options):
    s = get_strategy(name, diversity="none", **options)
    return [p.key for p in s.select(cands, k=len(cands))]


@pytest.mark.parametrize("name", ["entropy", "margin", "least_confidence"])
def test_one_pass_strategies_rank_uniform_first(three_candidates, name):
    assert _ranking(name, three_candidates) == ["uniform", "disagreeing", "confident"]


@pytest.mark.parametrize("name", ["bald", "variance", "tta", "ensemble"])
def test_sample_strategies_rank_disagreeing_first(three_candidates, name):
    ranking = _ranking(name, three_candidates)
    assert ranking[0] == "disagreeing"
    # uniform-but-agreeing samples carry no model uncertainty: tied with confident at ~0
    scores = get_strategy(name).score(three_candidates, StrategyContext())
    assert scores[1] == pytest.approx(0.0, abs=1e-6) and scores[0] == pytest.approx(0, abs=1e-6)


def test_needs_flags_and_prediction_modes():
    assert get_strategy("bald").needs_mc_samples and get_strategy("bald").prediction_mode == "mc"
    assert get_strategy("variance").required_maps == ("variance",)
    assert get_strategy("tta").needs_tta and get_strategy("tta").prediction_mode == "tta"
    ens = get_strategy("ensemble")
    assert ens.needs_ensemble and ens.prediction_mode == "ensemble"
    assert ens.required_maps == ("ensemble",)
    assert get_strategy("entropy").prediction_mode == "single"


def test_reason_names_the_map_and_count(three_candidates):
    pick = get_strategy("bald").select(three_candidates, k=1)[0]
    assert pick.reason.startswith("highest top-10% mean BALD (")
    assert pick.reason.endswith("among 3 images")


def test_bootstrap_indices_are_deterministic_and_valid():
    a = bootstrap_indices(10, 4, seed=0)
    b = bootstrap_indices(10, 4, seed=0)
    assert len(a) == 4 and all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert all(x.size == 10 and x.min() >= 0 and x.max() < 10 for x in a)
    assert len({tuple(x) for x in a}) == 4  # members differ
    assert not all(np.array_equal(x, y) for x, y in zip(a, bootstrap_indices(10, 4, seed=1),
                                                       strict=True))
    sub = bootstrap_indices(10, 4, seed=0, replace=False, fraction=0.8, include_full=True)
    assert [x.size for x in sub] == [8, 8, 8, 10]
    assert all(len(set(x.tolist())) == x.size for x in sub)
    assert [x.tolist() for x in bootstrap_indices(1, 2)] == [[0], [0]]
    with pytest.raises(ValueError, match="members"):
        bootstrap_indices(5, 0)
    with pytest.raises(ValueError, match="fraction"):
        bootstrap_indices(5, 2, fraction=1.5)
