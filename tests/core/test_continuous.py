"""Continuous training: rounds by themselves, the next round boundary, publish only if better."""

from __future__ import annotations

import threading

import pytest

from napari_activeseg.core.progress import run_to_end
from napari_activeseg.core.project import Project
from napari_activeseg.core.session import ContinuousTrainer
from napari_activeseg.core.session import _training as training_module

from . import test_session
from .test_session import TINY_TRAIN, _session

project = test_session.project  # the fixture: a project of 5 labelled-to-be images


class Clock:
    """A clock the test sets by hand."""

    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _submit(session, image_id):
    session.submit(image_id, session.project.truth[image_id])


def test_a_submission_during_a_round_is_learnt_by_the_next_round(project):
    s = _session(project)
    ids = [r.id for r in project.images()]
    clock = Clock(100.0)
    trainer = ContinuousTrainer(s, clock=clock)
    assert not trainer.due and trainer.status.text == "idle: waiting for the first labels"
    _submit(s, ids[0])
    assert trainer.due
    clock.now = 101.0
    gen = trainer.run_round()
    next(gen)  # the round runs: its labelled set is taken
    assert trainer.status.text.startswith("training round 1 on 1 images, ETA ")
    clock.now = 105.0
    _submit(s, ids[1])  # while the round runs
    clock.now = 110.0
    first = run_to_end(gen)
    assert first.published and first.summary.labelled_ids == [ids[0]]
    assert s.model_version == first.summary.model_version
    assert trainer.due  # the submission made meanwhile is new
    clock.now = 120.0
    second = run_to_end(trainer.run_round())
    assert second.summary.labelled_ids == [ids[0], ids[1]]
    # submission -> publication of the first model that learnt from it
    assert first.model_lag_s == [10.0] and second.model_lag_s == [15.0]
    assert trainer.model_lag_s == [10.0, 15.0]
    assert not trainer.due and trainer.status.text == "idle: nothing new to learn"
    assert run_to_end(trainer.run_round()) is None  # nothing new: no round
    assert [r.round for r in trainer.rounds] == [1, 2]


def _judged(project):
    """A session of 4 fully labelled images, 2 of them held back, and its trainer."""
    s = _session(project)
    s.configure(train_config=TINY_TRAIN.replace(min_val_images=2, val_fraction=0.5))
    ids = [r.id for r in project.images()]
    for i in ids[:4]:
        _submit(s, i)
    return s, ids, ContinuousTrainer(s)


def _fake_dice(monkeypatch, current_score, new_score, session):
    def score(model, images, labels, *, patch_size, seed=0):
        return current_score if model is session.model else new_score

    monkeypatch.setattr(training_module, "held_back_dice", score)


def test_a_worse_model_is_not_published(project, monkeypatch):
    s, ids, trainer = _judged(project)
    first = run_to_end(trainer.run_round())  # no current model: published
    version, n_models = s.model_version, len(project.models())
    assert first.published and version is not None
    assert len(first.summary.labelled_ids) == 4
    _submit(s, ids[4])
    _fake_dice(monkeypatch, 0.74, 0.71, s)
    kept = run_to_end(trainer.run_round())
    assert not kept.published and kept.summary.kept_previous
    assert s.model_version == version and len(project.models()) == n_models
    assert kept.note == f"round 2 kept {version}: held-back Dice 0.71 < 0.74"
    assert not trainer.due  # the same data again would not do better: wait for new labels
    # as good as the current one: published
    _submit(s, ids[4])
    _fake_dice(monkeypatch, 0.74, 0.74, s)
    third = run_to_end(trainer.run_round())
    assert third.published and s.model_version != version
    assert third.summary.held_back_dice == 0.74 and third.summary.previous_dice == 0.74


def test_the_held_back_score_compares_both_models_on_the_same_images(project):
    s, ids, trainer = _judged(project)
    run_to_end(trainer.run_round())
    _submit(s, ids[4])
    rec = run_to_end(trainer.run_round())
    summary = rec.summary
    assert summary.previous_dice is not None and summary.held_back_dice is not None
    assert rec.published == (summary.held_back_dice >= summary.previous_dice)
    # the held-back images are not trained on: the Trainer saw the rest
    assert summary.result.n_val_images == 2 and summary.result.n_train_images == 3


def test_too_few_images_to_judge_publishes_and_says_so(project):
    s = _session(project)
    ids = [r.id for r in project.images()]
    _submit(s, ids[0])
    trainer = ContinuousTrainer(s)
    run_to_end(trainer.run_round())
    _submit(s, ids[1])
    rec = run_to_end(trainer.run_round())
    assert rec.published and rec.summary.held_back_dice is None
    assert "too small to judge" in rec.note


def test_pause_stops_new_rounds_and_resume_continues(project):
    s = _session(project)
    ids = [r.id for r in project.images()]
    trainer = ContinuousTrainer(s)
    trainer.pause()
    _submit(s, ids[0])
    assert not trainer.due and trainer.status.text == "paused"
    assert run_to_end(trainer.run_round()) is None and s.model is None
    trainer.resume()
    assert trainer.due
    rec = run_to_end(trainer.run_round())
    assert rec.published and s.model is not None


def test_pausing_a_running_round_keeps_its_submissions_new(project):
    s = _session(project)
    s.configure(train_config=TINY_TRAIN.replace(max_steps=100_000))
    ids = [r.id for r in project.images()]
    _submit(s, ids[0])
    trainer = ContinuousTrainer(s)
    gen = trainer.run_round()
    next(gen)
    trainer.pause()
    rec = run_to_end(gen)
    assert not rec.published and rec.note == "round 1 cancelled: the last good model is kept"
    assert s.model is None and not trainer.due
    trainer.resume()
    assert trainer.due  # what the cancelled round was to learn from is still new


def test_the_loop_trains_by_itself_and_stop_ends_it(project):
    s = _session(project)
    s.configure(train_config=TINY_TRAIN.replace(max_steps=100_000))
    ids = [r.id for r in project.images()]
    trainer = ContinuousTrainer(s, poll_s=0.05)
    seen = []
    started = threading.Event()

    def on_record(rec):
        seen.append(rec)
        if hasattr(rec, "step"):
            started.set()

    out = {}
    thread = threading.Thread(target=lambda: out.update(
        rounds=run_to_end(trainer.run(), on_record)), daemon=True)
    thread.start()
    _submit(s, ids[0])  # the loop notices and starts a round by itself
    assert started.wait(60)
    trainer.stop()
    thread.join(60)
    assert not thread.is_alive()
    assert [r.summary.result.stop_reason for r in out["rounds"]] == ["stop_requested"]
    assert any(getattr(r, "state", None) == "idle" for r in seen)
    assert trainer.status.state == "stopped"
    _submit(s, ids[1])  # a stopped trainer no longer listens
    assert not trainer.due


def test_continuous_training_is_a_saved_setting(project, tmp_path):
    s = _session(project)
    assert s.continuous_training is True  # on unless turned off
    s.continuous_training = False
    with pytest.raises(TypeError, match="True or False"):
        s.continuous_training = "yes"
    folder = project.folder
    project.close()
    with Project.open(folder) as again:
        assert _session(again).continuous_training is False
