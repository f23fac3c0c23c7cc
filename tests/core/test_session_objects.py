"""The session's objects path: what the objects layer shows, which pixels a correction of the
objects reviewed, and submit_instances with its signals and its effort counted in objects."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.draw import disk

from napari_activeseg.core.project import Project, ProjectError
from napari_activeseg.core.session import ActiveLearningSession

SHAPE = (48, 64)


def _discs(*centres, ids=None) -> np.ndarray:
    out = np.zeros(SHAPE, np.uint16)
    for k, c in enumerate(centres, start=1):
        out[disk(c, 9, shape=SHAPE)] = k if ids is None else ids[k - 1]
    return out


@pytest.fixture
def session(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {f"img{i}": rng.random(SHAPE).astype(np.float32) for i in range(3)}
    with Project.create(tmp_path / "p", arrays=arrays, classes=["background", "nucleus"],
                        class_modes={"nucleus": "objects"}) as project:
        yield ActiveLearningSession(project)


def _first(session) -> int:
    return min(r.id for r in session.project.images())


def test_touching_objects_painted_from_nothing_are_stored_one_by_one(session):
    image_id = _first(session)
    session.view(image_id)
    shown = session.objects_view(image_id)  # no model yet: nothing predicted
    assert shown.class_name == "nucleus" and not shown.instances.any()
    assert shown.uncertainty is None and shown.next_id == 1
    submitted = []
    session.image_submitted.connect(submitted.append)
    ids = _discs((24, 20), (24, 37))  # two touching discs
    sub = session.submit_objects_correction(image_id, ids, whole=True)
    stored, reviewed = session.project.load_instances(image_id)
    assert reviewed is None and stored.max() == 2
    assert np.array_equal(stored > 0, ids > 0)
    for k in (1, 2):  # each object kept its own id
        assert len(np.unique(stored[ids == k])) == 1
    labels, _ = session.project.load_labels(image_id)
    assert np.array_equal(labels, (ids > 0).astype(labels.dtype))
    assert submitted == [image_id]
    record = next(s for s in session.project.submissions(image_id) if s.id == sub)
    assert (record.objects_added, record.objects_removed) == (2, 0)  # touching: 2, not 1


def test_a_split_is_reviewed_and_counted_against_the_objects_shown(session):
    image_id = _first(session)
    left = np.zeros(SHAPE, bool)
    left[:, :34] = True
    session.submit_instances(image_id, _discs((24, 20)), left)  # one object, a partial review
    session.view(image_id)
    shown = session.objects_view(image_id)
    assert shown.instances.max() == 1 and shown.next_id == 2  # the stored object is shown
    split = shown.instances.copy()
    split[:, 20:][split[:, 20:] == 1] = shown.next_id  # napari's new label on its right half
    # boxes mode, no box, no scribble: only the pixels whose object changed are reviewed
    sub = session.submit_objects_correction(image_id, split)
    stored, reviewed = session.project.load_instances(image_id)
    assert stored.max() == 2
    assert reviewed[:, :34].all() and not reviewed.all()
    record = next(s for s in session.project.submissions(image_id) if s.id == sub)
    assert (record.objects_added, record.objects_removed) == (0, 0)  # both pieces touch it


def test_a_background_scribble_erases_and_nothing_reviewed_is_refused(session):
    image_id = _first(session)
    session.view(image_id)
    session.objects_view(image_id)
    with pytest.raises(ValueError):  # nothing painted, no box, no scribble
        session.submit_objects_correction(image_id, np.zeros(SHAPE, np.uint16))
    assert session.project.load_instances(image_id) is None
    ids = _discs((24, 20), (24, 44))
    scribbles = np.zeros(SHAPE, np.uint8)
    scribbles[10:40, 38:52] = 1  # "background" over the second disc
    new, _, reviewed = session.review_objects(image_id, ids, scribbles=scribbles)
    assert new[24, 44] == 0 and new[24, 20] == 1 and reviewed[24, 44]


def test_submit_instances_on_a_semantic_project_says_what_to_do(tmp_path):
    arrays = {"a": np.zeros(SHAPE, np.float32)}
    with Project.create(tmp_path / "s", arrays=arrays, classes=["background", "cell"]) as p:
        session = ActiveLearningSession(p)
        image_id = _first(session)
        with pytest.raises(ValueError, match="objects"):
            session.objects_view(image_id)
        with pytest.raises(ProjectError):
            session.submit_instances(image_id, _discs((24, 20)))
        assert p.load_labels(image_id) is None


def test_with_a_model_the_objects_shown_carry_their_uncertainty(tmp_path):
    from napari_activeseg.core.config import ModelConfig, TrainConfig
    from napari_activeseg.core.progress import run_to_end

    rng = np.random.default_rng(1)
    arrays = {f"img{i}": rng.random(SHAPE).astype(np.float32) for i in range(2)}
    with Project.create(tmp_path / "m", arrays=arrays, classes=["background", "nucleus"],
                        class_modes={"nucleus": "objects"}) as project:
        session = ActiveLearningSession(
            project, model_config=ModelConfig(in_channels=1, n_classes=2, width=4, depth=1),
            train_config=TrainConfig(max_steps=2, batch_size=1, patch_size=32,
                                     num_threads=1))
        first, second = sorted(r.id for r in project.images())
        session.submit_instances(first, _discs((24, 20), (24, 44)))
        run_to_end(session.train())
        assert session.model is not None
        left = np.zeros(SHAPE, bool)
        left[:, :32] = True
        session.submit_instances(second, _discs((24, 16)), left)
        shown = session.objects_view(second)
        ids = shown.instances
        # the stored object where reviewed, the model's objects elsewhere, numbered 1..N
        assert ids[24, 16] > 0 and (ids[:, :32] > 0).sum() == (_discs((24, 16)) > 0).sum()
        present = np.unique(ids[ids > 0])
        assert present.tolist() == list(range(1, len(present) + 1))
        ou = shown.uncertainty
        assert ou is not None and ou.ids.tolist() == present.tolist()
        assert ((ou.doubt >= 0) & (ou.doubt <= 1)).all()
        assert shown.effort is not None and shown.effort.total >= 0


def test_the_objects_strategy_scores_the_projects_objects_above_the_models_floor(tmp_path):
    from napari_activeseg.core.config import ModelConfig, TrainConfig
    from napari_activeseg.core.progress import run_to_end

    rng = np.random.default_rng(2)
    arrays = {f"img{i}": rng.random(SHAPE).astype(np.float32) for i in range(2)}
    with Project.create(tmp_path / "f", arrays=arrays,
                        classes=["background", "membrane", "nucleus"],
                        class_modes={"nucleus": "objects"}) as project:
        session = ActiveLearningSession(
            project, strategy="objects",
            model_config=ModelConfig(in_channels=1, n_classes=3, width=4, depth=1),
            train_config=TrainConfig(max_steps=2, batch_size=1, patch_size=32,
                                     num_threads=1))
        assert session.scoring_strategy.object_classes == (2,)  # not the membrane
        assert session.scoring_strategy.min_area is None  # no model: no floor yet
        ids = np.zeros(SHAPE, np.uint16)
        for k, (y, x) in enumerate(((10, 10), (10, 30), (10, 50), (34, 10), (34, 30),
                                    (34, 50)), start=1):
            ids[disk((y, x), 5, shape=SHAPE)] = k  # six whole objects: a floor is decided
        first = min(r.id for r in project.images())
        session.submit_instances(first, ids)
        run_to_end(session.train())
        floor = session.model.config.min_object_area
        assert floor is not None and floor > 0
        assert session.scoring_strategy.min_area == pytest.approx(floor)
        session.set_strategy("objects", min_area=1.0)  # the user's own value wins
        assert session.scoring_strategy.min_area == 1.0


def test_the_floor_decided_at_training_is_saved_with_the_model(tmp_path):
    """A reopened project post-processes objects as the session that trained it did (the
    floor used to live only in memory: reopened, a dsb2018 model kept every fragment)."""
    from napari_activeseg.core.config import ModelConfig, TrainConfig
    from napari_activeseg.core.progress import run_to_end

    rng = np.random.default_rng(3)
    arrays = {f"img{i}": rng.random(SHAPE).astype(np.float32) for i in range(2)}
    labels = np.zeros(SHAPE, np.uint8)  # a semantic class: its connected pieces decide
    for y, x in ((10, 10), (10, 30), (10, 50), (34, 10), (34, 30), (34, 50)):
        labels[disk((y, x), 5, shape=SHAPE)] = 1
    with Project.create(tmp_path / "p", arrays=arrays,
                        classes=["background", "nucleus"]) as project:
        session = ActiveLearningSession(
            project, model_config=ModelConfig(in_channels=1, n_classes=2, width=4, depth=1),
            train_config=TrainConfig(max_steps=2, batch_size=1, patch_size=32,
                                     num_threads=1))
        session.submit(min(r.id for r in project.images()), labels)
        run_to_end(session.train())
        floor = session.model.config.min_object_area
        assert floor is not None and floor > 0
        _, saved, _ = project.load_model(session.model_version)
        assert saved.min_object_area == pytest.approx(floor)
        reopened = ActiveLearningSession(project)
        assert reopened.model.config.min_object_area == pytest.approx(floor)


        # a model saved before the floor was kept (none in its config) gets the one its
        # labelled images decide when the project is reopened, not none
        state = {k: v.clone() for k, v in session.model.state_dict().items()}
        version = project.save_model(state, saved.replace(min_object_area=None),
                                     {"labelled_ids": session.project.labelled_ids()})
        old = ActiveLearningSession(project)
        assert old.model_version == version != session.model_version
        assert old.model.config.min_object_area == pytest.approx(floor)
        # the exports load a version by name: the same floor
        assert project.load_unet(version)[0].config.min_object_area == pytest.approx(floor)
