"""The queue of next suggestions: served without re-scoring, stale after a new model, bounded."""

from __future__ import annotations

import math

import numpy as np
import pytest

from napari_activeseg.core.progress import run_to_end
from napari_activeseg.core.strategies import available_strategies, get_strategy

from .test_session import _session, project  # noqa: F401 - the fixture


def _trained(project, strategy="entropy"):  # noqa: F811
    s = _session(project, strategy=strategy)
    first = project.images()[0].id
    s.submit(first, project.truth[first])
    run_to_end(s.train())
    return s, first


def test_after_a_submit_the_next_suggestion_is_the_next_ranked_without_rescoring(project):  # noqa: F811
    s, first = _trained(project)
    assert run_to_end(s.score_pool()) == 4 and s.queue_state() == "fresh"
    # entropy scores each image on its own: the queue is the saved scores, highest first
    ranked = [r.image_id for r in project.scores(strategy="entropy",
                                                    model_version=s.model_version)]
    assert first not in ranked and len(ranked) == 4
    n, view = run_to_end(s.next_view())
    assert (n, view.image_id) == (0, ranked[0])
    s.submit(view.image_id, project.truth[view.image_id])
    assert s.queue_state() == "fresh"
    n, view = run_to_end(s.next_view())
    assert (n, view.image_id) == (0, ranked[1])  # nothing re-scored, the next in line
    assert view.suggestion.model_version == s.model_version
    assert run_to_end(s.score_pool()) == 0


def test_a_new_model_makes_the_queue_stale_it_serves_then_is_refreshed(project):  # noqa: F811
    s, _ = _trained(project)
    run_to_end(s.score_pool())
    old = s.model_version
    ranked = [r.image_id for r in project.scores(strategy="entropy", model_version=old)]
    run_to_end(s.train())
    assert s.model_version != old and s.queue_state() == "stale"
    n, view = run_to_end(s.next_view())
    assert n == 0 and view.image_id == ranked[0]  # served at once from the old ranking
    assert view.suggestion.model_version == old and "re-scored" in view.suggestion.reason
    assert run_to_end(s.score_pool()) == 4  # every pool image, with the new model
    assert s.queue_state() == "fresh"
    n, view = run_to_end(s.next_view())
    assert n == 0 and view.suggestion.model_version == s.model_version
    assert "re-scored" not in view.suggestion.reason


def test_reviewed_boxes_are_passed_over_without_rescoring(project):  # noqa: F811
    s, _ = _trained(project)
    n, view = run_to_end(s.next_view(regions=True, region_size=16, boxes_per_image=2))
    assert n == 4 and len(view.boxes) == 2
    s.submit_correction(view.image_id, view.labels)  # the two boxes are reviewed now
    n, nxt = run_to_end(s.next_view(regions=True, region_size=16, boxes_per_image=2))
    assert n == 0 and nxt.boxes and not (set(nxt.boxes) & set(view.boxes)
                                         if nxt.image_id == view.image_id else set())


def test_scoring_states_its_cost_and_an_expensive_strategy_is_prefiltered(project):  # noqa: F811
    s, _ = _trained(project, strategy="task_similarity")
    s.scoring_budget_s = 0.0  # task_similarity ranks only the 8 most uncertain windows
    records = []
    n, view = run_to_end(s.next_view(regions=True, region_size=16), records.append)
    assert n == 4 and "about" in records[0].message and "task_similarity" in records[0].message

    def mean_entropy(image_id, box):
        p = np.clip(s.predict(image_id).probs[:, box[0]:box[2], box[1]:box[3]], 1e-12, 1)
        return float(-(p * np.log(p)).sum(0).mean())

    windows = {(i, b): mean_entropy(i, b) for i in {r.id for r in project.images()} - {
        project.images()[0].id} for b in _boxes(s, i)}
    top8 = sorted(windows.values(), reverse=True)[7]
    assert mean_entropy(view.image_id, view.boxes[0]) >= top8 - 1e-6


def _boxes(s, image_id):
    from napari_activeseg.core.strategies.regions import region_boxes

    return region_boxes(s.project.get_image(image_id).shape[:2], size=16)


@pytest.mark.parametrize("name", available_strategies())
def test_every_strategy_states_its_cost(name):
    cost = get_strategy(name).estimate_cost(500, pixels_per_image=256 * 256)
    assert math.isfinite(cost) and cost >= 0
    if name == "task_similarity":  # the expensive one: over the default budget on 500 images
        assert cost > 30


def test_with_no_queue_while_training_the_pool_is_served_at_random(project):  # noqa: F811
    s, _ = _trained(project)
    round_ = s.train()
    next(round_)  # the round holds the session's job now
    try:
        n, view = run_to_end(s.next_view())
        assert n == 0 and view is not None and view.suggestion.strategy.startswith("random")
        assert s.queue_state() == "stale"  # the next scoring pass replaces it
    finally:
        s.request_stop()
        run_to_end(round_)
    assert run_to_end(s.score_pool()) == 4 and s.queue_state() == "fresh"


def test_a_stop_during_a_strategys_own_work_ends_the_pass_cleanly(project, monkeypatch):  # noqa: F811
    s, _ = _trained(project)
    run_to_end(s.score_pool())
    old = s.model_version
    run_to_end(s.train())  # a new model: the next pass re-ranks

    def stopped(candidates, context):  # what task_similarity does when request_stop arrives
        s.request_stop()
        raise InterruptedError("stopped before all probes were trained.")

    monkeypatch.setattr(s.strategy, "rank", stopped)
    records = []
    run_to_end(s.score_pool(), records.append)  # no exception: a cancelled pass
    assert "Cancelled while ranking" in records[-1].message
    n, view = run_to_end(s.next_view())
    assert view.suggestion.model_version == old  # the previous ranking still serves
    # the same error without a stop request is a real failure and is not hidden
    monkeypatch.setattr(s.strategy, "rank", lambda c, x: (_ for _ in ()).throw(
        InterruptedError("unexpected")))
    with pytest.raises(InterruptedError, match="unexpected"):
        run_to_end(s.score_pool())
