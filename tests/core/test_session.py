"""The active-learning loop on a tiny synthetic project."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from napari_activeseg.core.config import (
    DEFAULT_STRATEGY,
    InferenceConfig,
    ModelConfig,
    TrainConfig,
)
from napari_activeseg.core.progress import run_to_end
from napari_activeseg.core.project import Project
from napari_activeseg.core.session import ActiveLearningSession
from napari_activeseg.core.strategies import PseudoLabelConfig

from ..conftest import make_blobs

TINY_MODEL = ModelConfig(in_channels=1, n_classes=2, depth=2, width=4)
TINY_TRAIN = TrainConfig(patch_size=32, batch_size=4, max_steps=25, time_budget_s=None, lr=1e-2)


def _pool(n=5, shape=(48, 56)):
    pairs = [make_blobs(shape=shape, seed=s, n=4) for s in range(n)]
    images = {f"img{s}": (p[0] * 200).astype(np.uint8) for s, p in enumerate(pairs)}
    truth = {f"img{s}": p[1] for s, p in enumerate(pairs)}
    return images, truth


@pytest.fixture
def project(tmp_path):
    images, truth = _pool()
    proj = Project.create(tmp_path / "proj", arrays=images, classes=("background", "nucleus"))
    proj.truth = {r.id: truth[r.name] for r in proj.images()}
    yield proj
    proj.close()


def _session(project, **kw):
    return ActiveLearningSession(project, model_config=TINY_MODEL, train_config=TINY_TRAIN,
                                 inference_config=InferenceConfig(tile_size=64, overlap=8,
                                                                  mc_samples=3), **kw)


def test_first_suggestion_is_random_and_recorded(project):
    s = _session(project)
    assert s.model is None and s.predict(project.images()[0].id) is None
    picks = s.suggest(2)
    assert len(picks) == 2 and len({p.image_id for p in picks}) == 2
    assert all("random" in p.strategy for p in picks)
    hist = project.query_history()
    assert len(hist) == 2 and {h["image_id"] for h in hist} == {p.image_id for p in picks}


def test_full_loop_submit_train_score_suggest(project):
    s = _session(project)
    first = s.suggest(1)[0]
    s.mark_shown(first.image_id, None, first.suggestion_id)
    s.submit(first.image_id, project.truth[first.image_id])
    assert project.labelled_ids() == [first.image_id]
    records = []
    summary = run_to_end(s.train(), records.append)
    assert records and records[-1].step == TINY_TRAIN.max_steps
    assert summary.saved and summary.model_version == s.model_version
    assert [m.version for m in project.models()] == [summary.model_version]
    assert len(project.rounds()) == 1
    # the calibrated threshold (on by default) is recorded with the version, and is in it
    state, _, meta = project.load_model(summary.model_version)
    assert meta["logit_bias"] == list(summary.result.logit_bias) and meta["logit_bias"][0] == 0
    assert torch.equal(state["head.bias"], summary.result.state_dict["head.bias"])
    # the model now predicts; entropy maps exist; the submitted image is not suggested again
    pred = s.predict(project.images()[1].id)
    assert pred.labels.shape == (48, 56) and "entropy" in pred.uncertainty
    n = run_to_end(s.score_pool())
    assert n == 4
    assert len(project.scores(strategy=DEFAULT_STRATEGY)) == 4
    nxt = s.suggest(2)
    assert first.image_id not in {p.image_id for p in nxt}
    assert all(p.strategy == DEFAULT_STRATEGY and p.reason for p in nxt)
    # effort is recorded against the pre-annotation that was shown
    pre = s.predict(nxt[0].image_id).labels
    s.mark_shown(nxt[0].image_id, pre, nxt[0].suggestion_id)
    s.submit(nxt[0].image_id, project.truth[nxt[0].image_id])
    sub = project.submissions(nxt[0].image_id)[-1]
    expected = int((pre != project.truth[nxt[0].image_id]).sum())
    assert sub.pixels_changed == expected and sub.seconds is not None
    assert sub.model_version == s.model_version


def test_cancelled_training_keeps_the_last_good_model(project):
    s = _session(project)
    ids = [r.id for r in project.images()]
    s.submit(ids[0], project.truth[ids[0]])
    run_to_end(s.train())
    version = s.model_version
    s.configure(train_config=TINY_TRAIN.replace(max_steps=10_000))
    gen = s.train()
    for rec in gen:
        if rec.step == 2:
            s.request_stop()
    summary = None
    try:
        next(gen)
    except StopIteration as stop:
        summary = stop.value
    assert s.model_version == version and len(project.models()) == 1


def test_one_job_at_a_time(project):
    s = _session(project)
    ids = [r.id for r in project.images()]
    s.submit(ids[0], project.truth[ids[0]])
    gen = s.train()
    next(gen)
    with pytest.raises(RuntimeError, match="another training or scoring job"):
        next(s.score_pool())
    assert s.job_running and s.wait_idle(timeout=0.05) is False  # still held
    s.request_stop()
    # a worker waiting for the stopped round: released once the generator has ended
    ended = threading.Event()
    waiter = threading.Thread(target=lambda: s.wait_idle(timeout=60) and ended.set())
    waiter.start()
    for _ in gen:
        pass
    waiter.join(60)
    assert ended.is_set() and not s.job_running
    assert s.wait_idle(timeout=0) is True


def test_settings_and_model_survive_reopen(tmp_path):
    images, truth = _pool(3)
    with Project.create(tmp_path / "p", arrays=images) as proj:
        s = _session(proj, strategy="margin")
        rid = proj.images()[0].id
        s.submit(rid, truth[proj.images()[0].name])
        run_to_end(s.train())
        version = s.model_version
    with Project.open(tmp_path / "p") as proj:
        s2 = ActiveLearningSession(proj)
        assert s2.model_version == version and s2.model is not None
        # saved with the polarity the images decided ("pool" resolved to "none")
        assert s2.model_config == TINY_MODEL.replace(polarity="none")
        assert s2.train_config == TINY_TRAIN
        assert s2.strategy.name == "margin"


def test_unknown_strategy_lists_valid_names(project):
    s = _session(project)
    with pytest.raises(ValueError, match="entropy"):
        s.set_strategy("clairvoyance")


def test_region_suggestions_return_boxes(project):
    s = _session(project)
    ids = [r.id for r in project.images()]
    s.submit(ids[0], project.truth[ids[0]])
    run_to_end(s.train())
    picks = s.suggest(2, regions=True, region_size=32)
    assert picks and all(p.box is not None for p in picks)
    for p in picks:
        y0, x0, y1, x1 = p.box
        assert 0 <= y0 < y1 <= 48 and 0 <= x0 < x1 <= 56


@pytest.mark.parametrize("name", ["bald", "ensemble", "coreset"])
def test_strategies_with_extra_needs_run_in_the_loop(project, name):
    s = _session(project, strategy=name, committee_size=2)
    ids = [r.id for r in project.images()]
    s.submit(ids[0], project.truth[ids[0]])
    summary = run_to_end(s.train())
    if name == "ensemble":
        assert summary.committee == 2 and len(s.committee) == 2
    picks = s.suggest(2)
    assert len(picks) == 2 and ids[0] not in {p.image_id for p in picks}


def test_pseudo_labels_join_training_but_never_the_labels(project):
    s = _session(project, pseudo_labels=PseudoLabelConfig(start=0.5, ceiling=0.6))
    ids = [r.id for r in project.images()]
    s.submit(ids[0], project.truth[ids[0]])
    run_to_end(s.train())
    summary = run_to_end(s.train())
    assert summary.n_pseudo > 0
    assert project.labelled_ids() == [ids[0]]  # pseudo-labels are never stored as labels


def test_random_does_not_predict_the_pool_but_entropy_does(project, monkeypatch):
    import napari_activeseg.core.session as session_mod

    s = _session(project, strategy="random")
    first = s.suggest(1)[0]
    s.submit(first.image_id, project.truth[first.image_id])
    run_to_end(s.train())
    calls = []
    real = session_mod.ActiveLearningSession.predict
    monkeypatch.setattr(session_mod.ActiveLearningSession, "predict",
                        lambda self, *a, **k: calls.append(a) or real(self, *a, **k))
    picks = s.suggest(2)
    assert len(picks) == 2 and calls == []  # random: the pool was never predicted
    s.set_strategy("entropy")
    s.suggest(2)
    assert len(calls) == len(project.images()) - 1  # entropy predicts every pool image


def test_adopted_model_becomes_current_and_is_recorded(project, tmp_path):
    s = _session(project)
    first = s.suggest(1)[0]
    s.submit(first.image_id, project.truth[first.image_id])
    run_to_end(s.train())
    state = {k: v.clone() for k, v in s.model.state_dict().items()}
    other = Project.create(tmp_path / "other", arrays=_pool()[0],
                           classes=("background", "nucleus"))
    try:
        t = _session(other)
        t.submit(first.image_id, project.truth[first.image_id])
        version = t.adopt_model(state, {"steps": 25, "seconds": 1.5})
        assert t.model_version == version == other.models()[-1].version
        np.testing.assert_allclose(t.predict(first.image_id).probs,
                                   s.predict(first.image_id).probs, atol=1e-5)
        rounds = other.rounds()
        assert len(rounds) == 1 and rounds[0].labelled_ids == [first.image_id]
        assert other.load_model()[2]["adopted"] is True
    finally:
        other.close()


def _focus_per_round(monkeypatch):
    """The focus maps (one per training image, None = no hard pixels) of every fit."""
    from napari_activeseg.core.training import Trainer

    seen = []
    real = Trainer.fit

    def fit(self, *args, focus=None, **kwargs):
        seen.append(None if focus is None else list(focus))
        return (yield from real(self, *args, focus=focus, **kwargs))

    monkeypatch.setattr(Trainer, "fit", fit)
    return seen


def test_submission_records_the_corrected_pixels_for_focus_sampling(project, monkeypatch):
    focus = _focus_per_round(monkeypatch)
    s = ActiveLearningSession(project, model_config=TINY_MODEL,
                              train_config=TINY_TRAIN.replace(focus_p=0.5),
                              inference_config=InferenceConfig(tile_size=64, overlap=8))
    ids = [r.id for r in project.images()]
    s.submit(ids[0], project.truth[ids[0]])
    run_to_end(s.train())
    assert focus == [[None]]  # no pre-annotation, no model: nothing known to be hard
    pre = s.predict(ids[1]).labels
    s.mark_shown(ids[1], pre)
    s.submit(ids[1], project.truth[ids[1]])
    probs = s.predict(ids[1]).probs
    run_to_end(s.train())  # trains with the focus maps (focus_p = 0.5)
    assert len(focus) == 2 and len(project.rounds()) == 2
    maps = dict(zip(project.labelled_ids(), focus[1], strict=True))
    assert maps[ids[0]] is None
    assert np.array_equal(maps[ids[1]], (pre != project.truth[ids[1]]) | (probs.max(0) < 0.8))


def test_no_focus_maps_are_kept_while_focus_sampling_is_off(project, monkeypatch):
    focus = _focus_per_round(monkeypatch)
    s = _session(project)  # TINY_TRAIN: focus_p = 0
    ids = [r.id for r in project.images()]
    s.submit(ids[0], project.truth[ids[0]])
    run_to_end(s.train())
    s.mark_shown(ids[1], s.predict(ids[1]).labels)
    s.submit(ids[1], project.truth[ids[1]])
    run_to_end(s.train())
    assert len(focus) == 2 and focus[1] == [None, None]
