"""The shared machinery: aggregation, restriction, registry, options, select, diversity."""

from __future__ import annotations

import math

import numpy as np
import pytest

from napari_activeseg.core.config import QueryConfig
from napari_activeseg.core.strategies import (
    Candidate,
    Pick,
    QueryStrategy,
    StrategyContext,
    aggregate,
    available_strategies,
    describe_strategies,
    get_strategy,
    register,
    restriction_mask,
    strategy_from_config,
)
from napari_activeseg.core.strategies import diversity as div

ALL = ["random", "entropy", "power_entropy", "mixed_entropy", "margin", "least_confidence",
       "bald", "variance", "tta", "ensemble", "coreset", "badge", "alges", "suggestive",
       "stratified", "task_similarity", "objects"]


# -- aggregation ------------------------------------------------------------------------------

@pytest.fixture
def hand_map():
    m = np.zeros((10, 10))
    m[0, :10] = np.arange(10)  # values 0..9 in the first row, zeros elsewhere
    return m


def test_aggregation_variants_on_a_hand_made_map(hand_map):
    assert aggregate(hand_map, how="mean") == pytest.approx(45 / 100)
    assert aggregate(hand_map, how="sum") == pytest.approx(45)
    assert aggregate(hand_map, how="max") == pytest.approx(9)
    # top 5% of 100 px = the 5 largest values: 5..9
    assert aggregate(hand_map, how="topk", topk_fraction=0.05) == pytest.approx(7.0)
    # a fraction below one pixel still keeps one pixel
    assert aggregate(hand_map, how="topk", topk_fraction=1e-6) == pytest.approx(9)
    assert aggregate(hand_map, how="topk", topk_fraction=1.0) == pytest.approx(0.45)


def _probs_from_fg(fg):
    p1 = np.where(fg, 0.9, 0.1)
    return np.stack([1 - p1, p1])


def test_foreground_restriction_and_fallback():
    m = np.ones((20, 20))
    m[5:10, 5:10] = 3.0            # uncertain inside the predicted object
    fg = np.zeros((20, 20), bool)
    fg[5:10, 5:10] = True
    probs = _probs_from_fg(fg)
    assert aggregate(m, how="mean") == pytest.approx((375 + 75) / 400)
    assert aggregate(m, how="mean", probs=probs, foreground_only=True) == pytest.approx(3.0)
    # empty foreground: fall back to the whole map
    empty = _probs_from_fg(np.zeros((20, 20), bool))
    assert aggregate(m, how="mean", probs=empty, foreground_only=True) == \
        pytest.approx(aggregate(m, how="mean"))
    with pytest.raises(ValueError, match="probs"):
        aggregate(m, foreground_only=True)


def test_boundary_band_restriction():
    fg = np.zeros((21, 21), bool)
    fg[5:16, 5:16] = True  # an 11x11 square
    probs = _probs_from_fg(fg)
    band = restriction_mask(probs, boundary_band=1)
    # 1 px on each side of the boundary: the outer ring (13x13 - 11x11 minus 4 corners)
    # and the inner ring (11x11 - 9x9)
    assert band[4, 10] and band[5, 10] and not band[6, 10] and not band[3, 10]
    assert not band[10, 10] and not band[0, 0]
    assert band.sum() == (13 * 13 - 11 * 11 - 4) + (11 * 11 - 9 * 9)
    widened = restriction_mask(probs, foreground_only=True, boundary_band=2)
    assert widened[3, 10] and widened[10, 10] and not widened[2, 10]
    # uncertainty only on the boundary ring: the band average is higher than the plain mean
    m = np.where(band, 1.0, 0.0)
    assert aggregate(m, how="mean", probs=probs, boundary_band=1) == pytest.approx(1.0)


@pytest.mark.parametrize("kwargs, match", [
    ({"how": "median"}, "aggregation"),
    ({"topk_fraction": 0}, "topk_fraction"),
    ({"topk_fraction": 1.5}, "topk_fraction"),
    ({"boundary_band": -1}, "boundary_band"),
])
def test_aggregate_rejects_bad_options(hand_map, kwargs, match):
    with pytest.raises(ValueError, match=match):
        aggregate(hand_map, **kwargs)


def test_aggregate_rejects_bad_maps():
    with pytest.raises(ValueError, match=r"\(H, W\)"):
        aggregate(np.zeros((2, 3, 4)))
    with pytest.raises(ValueError, match="NaN"):
        aggregate(np.full((3, 3), np.nan))


# -- registry and options ---------------------------------------------------------------------

def test_registry_lists_every_strategy_with_a_description():
    assert available_strategies() == ALL
    desc = describe_strategies()
    assert list(desc) == ALL and all(isinstance(d, str) and d for d in desc.values())
    for name in ALL:
        s = get_strategy(name)
        assert isinstance(s, QueryStrategy) and s.name == name
        assert set(s.requirements) >= {"mode", "maps", "features", "gradients", "images"}


def test_unknown_strategy_lists_valid_names():
    with pytest.raises(ValueError, match="valid names are") as err:
        get_strategy("entropie")
    assert all(name in str(err.value) for name in ALL)
    assert "Did you mean 'entropy'" in str(err.value)


@pytest.mark.parametrize("name, options, match", [
    ("entropy", {"aggregation": "median"}, "aggregation"),
    ("entropy", {"topk_fraction": 0.0}, "topk_fraction"),
    ("entropy", {"topk_fraction": 2}, "topk_fraction"),
    ("bald", {"diversity": "dpp"}, "diversity"),
    ("bald", {"boundary_band": 1.5}, "boundary_band"),
    ("bald", {"foreground_only": "yes"}, "foreground_only"),
    ("margin", {"seed": -1}, "seed"),
    ("margin", {"diversity_pool": 0}, "diversity_pool"),
    ("entropy", {"nonsense": 1}, "valid options are"),
    ("suggestive", {"map_name": "nope"}, "map_name"),
    ("task_similarity", {"n_probes": 9}, "n_probes"),
    ("task_similarity", {"probe_patch": 20}, "probe_patch"),
])
def test_bad_options_raise_value_error(name, options, match):
    with pytest.raises(ValueError, match=match):
        get_strategy(name, **options)


def test_options_round_trip_and_config():
    s = get_strategy("bald", aggregation="mean", seed=3)
    assert s.options["aggregation"] == "mean" and s.options["seed"] == 3
    again = get_strategy("bald", **s.options)
    assert again.options == s.options
    s2 = strategy_from_config(QueryConfig(strategy="suggestive", aggregation="max",
                                          options={"map_name": "bald"}))
    assert s2.aggregation == "max" and s2.needs_mc_samples and s2.prediction_mode == "mc"


def test_register_rejects_non_strategies_and_nameless():
    with pytest.raises(TypeError):
        register(object)

    class Nameless(QueryStrategy):
        pass

    with pytest.raises(ValueError, match="name"):
        register(Nameless)


# -- select -----------------------------------------------------------------------------------

def _entropy_cand(key, value, features=None, **kw):
    return Candidate(key=key, image_id=key, maps={"entropy": np.full((4, 4), value)},
                     features=None if features is None else np.asarray(features, float), **kw)


def test_select_returns_ranked_picks_with_reasons():
    cands = [_entropy_cand(f"img{i}", v) for i, v in enumerate([0.1, 0.7, 0.4, 0.2])]
    picks = get_strategy("entropy", diversity="none").select(cands, k=3)
    assert [p.key for p in picks] == ["img1", "img2", "img3"]
    assert [p.rank for p in picks] == [1, 2, 3]
    assert all(isinstance(p, Pick) for p in picks)
    assert picks[0].reason.startswith("highest top-10% mean entropy (0.7) among 4 images")
    assert picks[1].reason.startswith("2nd-highest")
    assert picks[0].score == pytest.approx(0.7)


def test_labelled_candidates_are_never_picked_and_k_is_capped():
    cands = [_entropy_cand("a", 0.9, labelled=True), _entropy_cand("b", 0.1),
             _entropy_cand("c", 0.2)]
    picks = get_strategy("entropy").select(cands, k=5)
    assert {p.key for p in picks} == {"b", "c"}
    assert get_strategy("entropy").select([cands[0]], k=1) == []


def test_select_validates_input():
    s = get_strategy("entropy")
    with pytest.raises(ValueError, match="unique"):
        s.select([_entropy_cand("a", 0.1), _entropy_cand("a", 0.2)], k=1)
    with pytest.raises(ValueError, match="k must be"):
        s.select([_entropy_cand("a", 0.1)], k=0)
    with pytest.raises(ValueError, match="'bald' map"):
        get_strategy("bald").select([_entropy_cand("a", 0.1)], k=1)
    with pytest.raises(ValueError, match="image_descriptor"):
        get_strategy("coreset").select([_entropy_cand("a", 0.1)], k=1)
    with pytest.raises(ValueError, match="gradient_embedding"):
        get_strategy("badge").select([_entropy_cand("a", 0.1)], k=1)


def test_one_pass_maps_are_computed_from_probs_when_missing(three_candidates):
    bare = [Candidate(key=c.key, image_id=c.key, probs=c.probs) for c in three_candidates]
    for name in ("entropy", "margin", "least_confidence"):
        s = get_strategy(name)
        np.testing.assert_allclose(s.score(bare, StrategyContext()),
                                   s.score(three_candidates, StrategyContext()), rtol=1e-5)


def test_kcenter_diversity_never_returns_near_duplicates():
    rng = np.random.default_rng(0)
    dupes = [_entropy_cand(f"dup{i}", 0.9 - 0.01 * i, [1, 0, 0] + 1e-3 * rng.normal(size=3))
             for i in range(5)]
    distinct = _entropy_cand("distinct", 0.5, [0, 1, 0])
    cands = dupes + [distinct]
    plain = get_strategy("entropy", diversity="none").select(cands, k=2)
    assert [p.key for p in plain] == ["dup0", "dup1"]  # without diversity: two near-duplicates
    picks = get_strategy("entropy").select(cands, k=2)
    assert [p.key for p in picks] == ["dup0", "distinct"]
    assert "diverse batch" in picks[1].reason and "feature distance" in picks[1].reason


def test_spatial_diversity_without_features_prefers_other_images_and_far_regions():
    def region(img, box, v):
        return Candidate(key=f"{img}@{box}", image_id=img, box=box,
                         maps={"entropy": np.full((4, 4), v)})

    cands = [region("a", (0, 0, 4, 4), 0.9), region("a", (0, 4, 4, 8), 0.85),
             region("a", (0, 100, 4, 104), 0.8), region("b", (0, 0, 4, 4), 0.5)]
    keys = [p.key for p in get_strategy("entropy").select(cands, k=2)]
    assert keys == ["a@(0, 0, 4, 4)", "b@(0, 0, 4, 4)"]
    keys = [p.key for p in get_strategy("entropy").select(cands[:3], k=2)]
    assert keys == ["a@(0, 0, 4, 4)", "a@(0, 100, 4, 104)"]


def test_random_is_reproducible_per_seed_and_round():
    cands = [_entropy_cand(f"img{i}", 0.0) for i in range(20)]
    s = get_strategy("random", seed=1)
    a = [p.key for p in s.select(cands, k=3, context=StrategyContext(round=0))]
    b = [p.key for p in s.select(cands, k=3, context=StrategyContext(round=0))]
    c = [p.key for p in s.select(cands, k=3, context=StrategyContext(round=1))]
    assert a == b and a != c
    assert len(set(a)) == 3
    assert s.select(cands, k=1)[0].reason.startswith("random pick among 20 images")


def test_custom_strategy_overrides_only_score():
    class Brightest(QueryStrategy):
        name = "_test_brightest"

        def score(self, candidates, context):
            return np.array([float(c.probs[1].mean()) for c in candidates])

    cands = [Candidate(key=str(i), image_id=str(i), probs=np.stack([1 - np.full((2, 2), v),
                                                                      np.full((2, 2), v)]))
             for i, v in enumerate([0.2, 0.8, 0.5])]
    assert [p.key for p in Brightest().select(cands, k=2)] == ["1", "2"]


# -- diversity helpers ------------------------------------------------------------------------

def test_kcenter_greedy_known_answer():
    x = np.array([[0.0, 0], [0.1, 0], [5, 0], [0, 3]])
    picks, dists = div.kcenter_greedy(x, 3, centers=np.array([[0.0, 0]]))
    assert picks == [2, 3, 1]
    assert dists[0] == pytest.approx(5) and dists[1] == pytest.approx(3)
    picks, dists = div.kcenter_greedy(x, 2, first=1)
    assert picks == [1, 2] and math.isinf(dists[0])


def test_greedy_max_cover_known_answer():
    # candidate 0 covers items 0-2, candidate 1 items 2-3, candidate 2 item 3 only
    sim = np.array([[1, 1, 1, 0], [0, 0, 1, 1], [0, 0, 0, 1]], float)
    picks, gains = div.greedy_max_cover(sim, 2)
    assert picks == [0, 1] and gains == [3.0, 1.0]
