"""The session announces its changes, builds the view of an image and the reviewed mask of a
correction, and keeps the auto-train counter in the project."""

from __future__ import annotations

import numpy as np
import pytest

from napari_activeseg.core.config import InferenceConfig, ModelConfig, TrainConfig
from napari_activeseg.core.progress import run_to_end
from napari_activeseg.core.project import Project
from napari_activeseg.core.session import ActiveLearningSession

from ..conftest import make_blobs

TINY_MODEL = ModelConfig(in_channels=1, n_classes=2, depth=2, width=4, polarity="none")
TINY_TRAIN = TrainConfig(patch_size=32, batch_size=4, max_steps=5, time_budget_s=None, lr=1e-2)
SHAPE = (64, 64)


@pytest.fixture
def project(tmp_path):
    pairs = [make_blobs(shape=SHAPE, seed=s, n=5) for s in range(3)]
    images = {f"img{s}": (p[0] * 200).astype(np.uint8) for s, p in enumerate(pairs)}
    proj = Project.create(tmp_path / "proj", arrays=images, classes=("background", "nucleus"))
    proj.set_setting("region_size", 32)
    proj.truth = {r.id: pairs[int(r.name[3:])][1] for r in proj.images()}
    yield proj
    proj.close()


def _session(project):
    return ActiveLearningSession(project, model_config=TINY_MODEL, train_config=TINY_TRAIN,
                                 inference_config=InferenceConfig(tile_size=64, overlap=8,
                                                                  mc_samples=2),
                                 strategy="entropy")


def _record(session):
    events = []
    session.image_submitted.connect(lambda i: events.append(("submitted", i)))
    session.status_changed.connect(lambda i: events.append(("status", i)))
    session.model_changed.connect(lambda v: events.append(("model", v)))
    session.scores_changed.connect(lambda: events.append(("scores",)))
    return events


def test_signals_follow_submit_skip_train_and_scoring(project):
    s = _session(project)
    events = _record(s)
    a, b, c = (r.id for r in project.images())
    s.submit(a, project.truth[a])
    assert events == [("submitted", a), ("status", a)]
    events.clear()
    s.skip(b)
    assert events == [("status", b)]
    events.clear()
    run_to_end(s.train())
    assert events == [("model", s.model_version)]
    events.clear()
    picks = s.suggest(1)
    assert ("scores",) in events and ("status", picks[0].image_id) in events
    events.clear()
    s.set_strategy("margin")
    assert events == [("scores",)]


def test_view_and_correction_review_only_the_boxes_scribbles_and_edits(project):
    s = _session(project)
    picks = s.suggest(1, regions=True, boxes_per_image=2)  # no model: random boxes
    assert len(picks) == 2 and {p.image_id for p in picks} == {picks[0].image_id}
    i = picks[0].image_id
    truth = project.truth[i]
    view = s.view(i, picks)
    assert view.boxes == tuple(p.box for p in picks) and view.suggestion == picks[0]
    assert view.prediction is None and not view.labels.any() and not view.reviewed.any()
    labels = view.labels.copy()
    labels[60:62, 60:62] = 1  # an edit outside the boxes
    scribbles = np.zeros(SHAPE, np.uint8)
    scribbles[0:2, 0:10] = 1  # background scribble
    got, reviewed = s.review(i, labels, scribbles=scribbles)
    want = np.zeros(SHAPE, bool)
    for y0, x0, y1, x1 in view.boxes:
        want[y0:y1, x0:x1] = True
    want[60:62, 60:62] = True
    want[0:2, 0:10] = True
    assert np.array_equal(reviewed, want)
    assert not got[0:2, 0:10].any()
    s.submit_correction(i, np.where(want, truth, 0), scribbles=None)
    assert project.reviewed_mask(i).sum() >= sum((y1 - y0) * (x1 - x0)
                                                for y0, x0, y1, x1 in view.boxes)
    # nothing reviewed: refused, nothing written
    j = next(r.id for r in project.images() if r.id != i)
    s.view(j)
    n = len(project.submissions())
    with pytest.raises(ValueError, match="Nothing was reviewed"):
        s.submit_correction(j, np.zeros(SHAPE, np.uint8))
    assert len(project.submissions()) == n
    # whole-image mode accepts the whole image as shown
    s.submit_correction(j, project.truth[j], whole=True)
    assert project.reviewed_mask(j) is None


def test_auto_train_counter_lives_in_the_project(project, tmp_path):
    s = _session(project)
    ids = [r.id for r in project.images()]
    assert s.auto_train_every == 0 and not s.training_due
    s.auto_train_every = 2
    with pytest.raises(ValueError, match="auto_train_every"):
        s.auto_train_every = -1
    s.submit(ids[0], project.truth[ids[0]])
    assert s.submissions_since_train == 1 and not s.training_due
    s.submit(ids[1], project.truth[ids[1]])
    assert s.training_due
    # survives a reopen (the counter is the project's, not the widget's)
    s2 = _session(project)
    assert s2.auto_train_every == 2 and s2.training_due
    run_to_end(s2.train())
    assert s2.submissions_since_train == 0 and not s2.training_due
