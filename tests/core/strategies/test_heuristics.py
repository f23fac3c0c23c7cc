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


# -- power sampling (stochastic batch acquisition) ---------------------------------------


def _scored_candidates(scores):
    """Candidates whose entropy score is given directly (``Candidate.scores``)."""
    from napari_activeseg.core.strategies import Candidate

    return [Candidate(key=f"c{i}", image_id=f"c{i}", scores={"entropy": float(s)})
            for i, s in enumerate(scores)]


def test_power_order_draws_in_proportion_to_the_scores():
    from napari_activeseg.core.strategies.batch import power_order

    scores = np.array([1.0, 3.0, 0.0, 6.0])
    rng = np.random.default_rng(0)
    first = np.bincount([power_order(scores, rng)[0] for _ in range(6000)], minlength=4) / 6000
    # first draw ~ p = s / sum(s) = 0.1, 0.3, 0, 0.6
    np.testing.assert_allclose(first, [0.1, 0.3, 0.0, 0.6], atol=0.025)
    order = power_order(scores, np.random.default_rng(1))
    assert sorted(order.tolist()) == [0, 1, 2, 3] and order[-1] == 2  # a zero score comes last
    # beta = 0: uniform; a large beta: the top-k order
    uni = np.bincount([power_order(scores, rng, beta=0)[0] for _ in range(4000)], minlength=4)
    np.testing.assert_allclose(uni / 4000, 0.25, atol=0.03)
    assert power_order(scores, rng, beta=200).tolist() == [3, 1, 0, 2]
    with pytest.raises(ValueError, match=">= 0"):
        power_order(np.array([0.5, -1.0]), rng)


def test_power_entropy_picks_reproducibly_and_ranks_by_its_draws():
    cands = _scored_candidates([0.1, 0.2, 0.9, 0.4, 0.0, 0.3])
    s = get_strategy("power_entropy", seed=3)
    assert s.diversity == "power"
    a = [p.key for p in s.select(cands, k=3, context=StrategyContext(round=2))]
    b = [p.key for p in s.select(cands, k=3, context=StrategyContext(round=2))]
    assert a == b and len(set(a)) == 3 and "c4" not in a  # zero scores are never drawn first
    # the queue is the order of the same draws: its first k are the batch
    queue = [p.key for p in s.rank(cands, context=StrategyContext(round=2))]
    assert queue[:3] == a and sorted(queue) == sorted(c.key for c in cands)
    assert "power sampling" in s.select(cands, k=1)[0].reason
    # different seeds or rounds draw differently (over a few tries), top-k entropy never does
    draws = {tuple(p.key for p in get_strategy("power_entropy", seed=k).select(cands, k=3))
             for k in range(8)}
    assert len(draws) > 1
    assert [p.key for p in get_strategy("entropy", diversity="none").select(cands, k=3)] == [
        "c2", "c3", "c5"]


def test_power_sampling_favours_high_scores_over_many_draws():
    cands = _scored_candidates([0.05] * 8 + [1.0, 1.0])
    hits = sum(sum(p.key in ("c8", "c9") for p in
                   get_strategy("power_entropy", seed=seed).select(cands, k=2))
               for seed in range(200))
    # each pick is c8/c9 with probability >= 2 / 2.4: far above random's 2 / 10
    assert hits / 400 > 0.7


def test_mixed_entropy_alternates_score_and_random_picks():
    scores = [0.1, 0.2, 0.9, 0.4, 0.0, 0.3, 0.8, 0.05]
    cands = _scored_candidates(scores)
    s = get_strategy("mixed_entropy", seed=1, diversity="none")
    assert s.random_fraction == 0.5
    picks = s.select(cands, k=4, context=StrategyContext(round=1))
    keys = [p.key for p in picks]
    # positions 1 and 3 by entropy (c2 then c6, the two highest), 2 and 4 drawn at random
    # from the rest; the same draw again for the same seed and round
    assert keys[0] == "c2" and keys[2] == "c6" and len(set(keys)) == 4
    assert "drawn at random" in picks[1].reason and "drawn at random" in picks[3].reason
    assert [p.key for p in s.select(cands, k=4, context=StrategyContext(round=1))] == keys
    # over seeds the random positions reach low-entropy windows that top-k never asks for
    seen = {p.key for seed in range(30) for p in get_strategy(
        "mixed_entropy", seed=seed, diversity="none").select(cands, k=4)[1::2]}
    assert {"c4", "c7"} & seen
    # one pick: always by score; the queue holds every candidate once, by score first
    assert s.select(cands, k=1)[0].key == "c2"
    queue = [p.key for p in s.rank(cands, context=StrategyContext(round=1))]
    assert queue[0] == "c2" and sorted(queue) == sorted(c.key for c in cands)
    assert sum("drawn at random" in p.reason
               for p in s.rank(cands, context=StrategyContext(round=1))) == 4


def test_random_fraction_is_checked():
    with pytest.raises(ValueError, match="random_fraction"):
        get_strategy("entropy", random_fraction=1.0)
    with pytest.raises(ValueError, match="random_fraction"):
        get_strategy("entropy", random_fraction=-0.1)
