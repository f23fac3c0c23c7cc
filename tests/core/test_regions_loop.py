"""Regions as the unit of annotation: a submitted box reviews that box only.

The image stays in the pool, its other windows can still be suggested, boxes of one image add
up, and what is shown for correcting an image never passes off a stored prediction as truth.
"""

from __future__ import annotations

import numpy as np
import pytest

from napari_activeseg.core.config import InferenceConfig, ModelConfig, TrainConfig
from napari_activeseg.core.progress import run_to_end
from napari_activeseg.core.project import Project
from napari_activeseg.core.session import ActiveLearningSession
from napari_activeseg.core.strategies.regions import auto_region_size, reviewed_fraction

from ..conftest import make_blobs

TINY_MODEL = ModelConfig(in_channels=1, n_classes=2, depth=2, width=4, polarity="none")
TINY_TRAIN = TrainConfig(patch_size=32, batch_size=4, max_steps=10, time_budget_s=None, lr=1e-2)
SHAPE = (64, 96)


@pytest.fixture
def project(tmp_path):
    pairs = [make_blobs(shape=SHAPE, seed=s, n=5) for s in range(3)]
    images = {f"img{s}": (p[0] * 200).astype(np.uint8) for s, p in enumerate(pairs)}
    proj = Project.create(tmp_path / "proj", arrays=images, classes=("background", "nucleus"))
    proj.truth = {r.id: pairs[int(r.name[3:])][1] for r in proj.images()}
    yield proj
    proj.close()


def _session(project, **kw):
    return ActiveLearningSession(project, model_config=TINY_MODEL, train_config=TINY_TRAIN,
                                 inference_config=InferenceConfig(tile_size=64, overlap=8,
                                                                  mc_samples=3),
                                 strategy="entropy", **kw)


def _box_mask(box, shape=SHAPE):
    m = np.zeros(shape, bool)
    y0, x0, y1, x1 = box
    m[y0:y1, x0:x1] = True
    return m


def test_auto_region_size_follows_the_pool_and_the_bounds():
    assert auto_region_size([(1000, 1000)] * 3) == 256  # capped
    assert auto_region_size([(520, 696), (520, 696), (256, 320)]) == 256
    assert auto_region_size([(256, 256), (256, 320), (360, 360)]) == 128
    assert auto_region_size([(300, 300)]) == 144  # half the side, a multiple of 16
    assert auto_region_size([(64, 64)]) == 64  # never larger than the images themselves
    assert auto_region_size([(400, 400)], receptive_field=110) == 220  # 2 x receptive field
    with pytest.raises(ValueError, match="at least one image"):
        auto_region_size([])


def test_reviewed_fraction_of_a_box():
    rev = np.zeros((10, 10), bool)
    rev[:5] = True
    assert reviewed_fraction(rev, (0, 0, 10, 10)) == 0.5
    assert reviewed_fraction(rev, (0, 0, 5, 10)) == 1.0
    assert reviewed_fraction(None, (0, 0, 5, 5)) == 0.0


def test_a_submitted_box_reviews_only_that_box_and_the_image_stays_in_the_pool(project):
    s = _session(project)
    i = project.images()[0].id
    truth = project.truth[i]
    box = (0, 0, 32, 48)
    s.submit(i, truth, _box_mask(box))
    rec = project.get_image(i)
    assert rec.status == "submitted" and rec.partial
    rev = project.reviewed_mask(i)
    assert rev.sum() == 32 * 48 and rev[:32, :48].all()
    assert i in {r.id for r in project.images() if r.partial}
    # still suggestible: the image is in the pool, its reviewed window is not
    run_to_end(s.train())
    picks = s.suggest(20, regions=True, region_size=32)
    assert i in {p.image_id for p in picks}
    boxes_of_i = {p.box for p in picks if p.image_id == i}
    assert boxes_of_i and all(reviewed_fraction(rev, b) < 0.5 for b in boxes_of_i)
    assert (0, 0, 32, 32) not in boxes_of_i and (0, 32, 32, 64) not in boxes_of_i


def test_boxes_of_one_image_add_up_and_keep_earlier_truth(project):
    s = _session(project)
    i = project.images()[0].id
    truth = project.truth[i]
    first, second = (0, 0, 32, 48), (32, 48, 64, 96)
    s.submit(i, truth, _box_mask(first))
    # the second submission carries garbage where the first box was: it must not overwrite it
    garbage = np.ones(SHAPE, np.uint8)
    garbage[32:, 48:] = truth[32:, 48:]
    s.submit(i, garbage, _box_mask(second))
    labels, rev = project.load_labels(i)
    assert rev.sum() == 2 * 32 * 48
    assert np.array_equal(labels[:32, :48], truth[:32, :48])
    assert np.array_equal(labels[32:, 48:], truth[32:, 48:])
    assert project.get_image(i).partial
    # the remaining two windows reviewed: the image is done and leaves the pool
    s.submit(i, truth, _box_mask((0, 48, 32, 96)) | _box_mask((32, 0, 64, 48)))
    labels, rev = project.load_labels(i)
    assert rev is None and np.array_equal(labels, truth)
    rec = project.get_image(i)
    assert not rec.partial and rec.status == "submitted"
    assert i not in {p.image_id for p in s.suggest(3)}


def test_merge_false_replaces_the_earlier_submission(project):
    i = project.images()[0].id
    truth = project.truth[i]
    project.submit(i, truth, _box_mask((0, 0, 32, 48)))
    project.submit(i, truth, _box_mask((32, 48, 64, 96)), merge=False)
    rev = project.reviewed_mask(i)
    assert rev.sum() == 32 * 48 and rev[32:, 48:].all() and not rev[:32, :48].any()


def test_whole_image_submission_after_boxes_reviews_everything(project):
    i = project.images()[0].id
    truth = project.truth[i]
    project.submit(i, np.zeros(SHAPE, np.uint8), _box_mask((0, 0, 32, 48)))
    project.submit(i, truth)
    labels, rev = project.load_labels(i)
    assert rev is None and np.array_equal(labels, truth)


def test_annotation_shows_truth_inside_reviewed_and_the_current_prediction_outside(project):
    s = _session(project)
    i = project.images()[0].id
    truth = project.truth[i]
    stale = np.ones(SHAPE, np.uint8)  # e.g. last round's prediction, left beside the box
    stale[:32, :48] = truth[:32, :48]
    s.submit(i, stale, _box_mask((0, 0, 32, 48)))
    shown, rev = s.annotation(i)
    assert rev.sum() == 32 * 48
    assert np.array_equal(shown[:32, :48], truth[:32, :48])
    # no model yet: outside the reviewed box nothing is claimed (zeros), not the stored ones
    assert not shown[~rev].any()
    run_to_end(s.train())
    shown, _ = s.annotation(i)
    pred = s.predict(i).labels
    assert np.array_equal(shown[~rev], pred[~rev])
    # a never-submitted image: nothing reviewed, the prediction shown
    j = project.images()[1].id
    shown, rev = s.annotation(j)
    assert not rev.any() and np.array_equal(shown, s.predict(j).labels)


def test_several_boxes_of_one_image_are_suggested_together(project):
    s = _session(project)
    i = project.images()[0].id
    s.submit(i, project.truth[i])
    run_to_end(s.train())
    picks = s.suggest(1, regions=True, region_size=32, boxes_per_image=3)
    assert len(picks) == 3 and len({p.image_id for p in picks}) == 1
    assert len({p.box for p in picks}) == 3
    with pytest.raises(ValueError, match="boxes_per_image"):
        s.suggest(1, regions=True, boxes_per_image=0)


def test_region_size_is_decided_once_and_saved(project):
    s = _session(project)
    size = s.region_size
    assert size == auto_region_size([SHAPE] * 3) == project.get_setting("region_size")
    project.set_setting("region_size", 48)
    assert s.region_size == 48


def test_unreviewed_pixels_get_pseudo_labels_in_training_only(project, monkeypatch):
    from napari_activeseg.core.strategies import PseudoLabelConfig
    from napari_activeseg.core.training import Trainer

    s = _session(project, pseudo_labels=PseudoLabelConfig(start=0.5, ceiling=0.6))
    i = project.images()[0].id
    truth = project.truth[i]
    box = _box_mask((0, 0, 32, 48))
    s.submit(i, truth, box)
    run_to_end(s.train())  # round 0: a model to make pseudo-labels with
    seen = {}
    real_fit = Trainer.fit

    def spy(self, images, labels, reviewed=None, **kw):
        seen.update(labels=[np.array(x) for x in labels],
                    reviewed=[None if r is None else np.array(r) for r in reviewed])
        return (yield from real_fit(self, images, labels, reviewed, **kw))

    monkeypatch.setattr(Trainer, "fit", spy)
    summary = run_to_end(s.train())
    lab0, rev0 = seen["labels"][0], seen["reviewed"][0]
    assert np.array_equal(lab0[box], truth[box])  # reviewed truth untouched
    assert rev0[box].all() and rev0[~box].any()  # plus confident unreviewed pixels
    assert any("partly reviewed" in n for n in summary.notes)
    # nothing of it reaches the project: stored truth and mask are exactly the box
    labels, rev = project.load_labels(i)
    assert np.array_equal(rev, box) and not labels[~box].any()
    # nor an export
    import tifffile

    from napari_activeseg.core.export import export_labels

    out = project.folder.parent / "exported"
    export_labels(project, out)
    key = project.get_image(i).key
    assert not tifffile.imread(out / f"{key}.tif")[~box].any()
    assert np.array_equal(tifffile.imread(out / "reviewed" / f"{key}.tif").astype(bool), box)


def test_a_draft_keeps_its_reviewed_pixels_until_submit_or_discard(project):
    i, j = (r.id for r in project.images()[:2])
    truth = project.truth[i]
    mask = _box_mask((0, 0, 16, 16))
    project.save_draft(i, truth, mask)
    assert np.array_equal(project.load_draft_reviewed(i), mask)
    with pytest.raises(ValueError, match="reviewed mask of the draft"):
        project.save_draft(i, truth, np.ones((3, 3), bool))
    assert np.array_equal(project.load_draft_reviewed(i), mask)  # the bad call changed nothing
    project.save_draft(i, truth)  # a draft without reviewed pixels drops the old mask
    assert project.load_draft_reviewed(i) is None and project.load_draft(i) is not None
    project.save_draft(i, truth, mask)
    project.submit(i, truth, mask)
    assert project.load_draft(i) is None and project.load_draft_reviewed(i) is None
    project.save_draft(j, truth, mask)
    project.discard_draft(j)
    assert project.load_draft_reviewed(j) is None
    assert not list((project.folder / "drafts").glob("*.tif"))


def test_next_view_scores_picks_and_shows_boxes_until_nothing_is_left(project):
    s = _session(project)
    records = []
    gen = s.next_view(regions=True, region_size=32, boxes_per_image=2)
    n, view = run_to_end(gen, records.append)
    assert n == len(project.images()) and records and records[-1].done == records[-1].total
    assert view is not None and len(view.boxes) == 2
    assert all(sg.image_id == view.image_id for sg in view.suggestions)
    assert project.get_image(view.image_id).status == "suggested"
    # once every image is submitted (whole images), nothing is left to show
    for r in project.images():
        s.submit(r.id, project.truth[r.id])
    assert run_to_end(s.next_view()) == (0, None)
