"""Drafts of objects, two object classes, the integrity check of instances/ and the refusal
to predict the objects of a large image -- in the project and the session."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from skimage.draw import disk

from napari_activeseg.core.project import Project, ProjectError
from napari_activeseg.core.session import ActiveLearningSession

SHAPE = (48, 64)
CLASSES = ["background", "nucleus", "cell"]


def _disc(centre, value, shape=SHAPE, dtype=np.uint16) -> np.ndarray:
    out = np.zeros(shape, dtype)
    out[disk(centre, 8, shape=shape)] = value
    return out


@pytest.fixture
def folder(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {f"img{i}": rng.random(SHAPE).astype(np.float32) for i in range(2)}
    with Project.create(tmp_path / "p", arrays=arrays, classes=CLASSES,
                        class_modes={"nucleus": "objects", "cell": "objects"}):
        pass
    return tmp_path / "p"


def _first(project) -> int:
    return min(r.id for r in project.images())


def test_an_objects_draft_survives_a_reopen_and_submit_drops_it(folder):
    nuclei = _disc((24, 16), 1) | _disc((24, 31), 2)  # two touching nuclei
    cells = _disc((24, 50), 1)
    with Project.open(folder) as project:
        session = ActiveLearningSession(project)
        image_id = _first(project)
        session.view(image_id)
        session.objects_views(image_id)
        session.save_objects_draft(image_id, {"nucleus": nuclei, "cell": cells})
        assert project.drafts() == [image_id]
        assert project.get_image(image_id).status == "in_progress"
    # a new process (napari closed, or crashed after the autosave)
    with Project.open(folder) as project:
        session = ActiveLearningSession(project)
        session.view(image_id)
        views = {v.class_name: v for v in session.objects_views(image_id)}
        assert set(views) == {"nucleus", "cell"}
        shown = views["nucleus"].instances
        assert shown.max() == 2 and shown[24, 16] != shown[24, 31]  # still two objects
        assert np.array_equal(shown > 0, nuclei > 0)
        assert np.array_equal(views["cell"].instances > 0, cells > 0)
        assert (views["cell"].instances[cells > 0] == 1).all()
        session.submit_objects_correction(
            image_id, {"nucleus": views["nucleus"].instances, "cell": views["cell"].instances},
            whole=True)
        assert project.drafts() == [] and project.load_objects_draft(image_id) is None
        assert not any((folder / "drafts").iterdir())
        ids, reviewed = project.load_instances(image_id)
        labels, _ = project.load_labels(image_id)
        assert reviewed is None and ids.max() == 3  # both classes' objects stored
        assert (labels[nuclei > 0] == 1).all() and (labels[cells > 0] == 2).all()
        assert labels[ids == 0].max() == 0
        assert len(np.unique(ids[nuclei > 0])) == 2 and len(np.unique(ids[cells > 0])) == 1


def test_two_object_classes_need_their_names_and_do_not_overlap(folder):
    with Project.open(folder) as project:
        session = ActiveLearningSession(project)
        image_id = _first(project)
        session.view(image_id)
        session.objects_views(image_id)
        with pytest.raises(ValueError, match="one id image per class"):
            session.submit_objects_correction(image_id, _disc((24, 16), 1), whole=True)
        with pytest.raises(ValueError, match="erase them from one"):
            session.submit_objects_correction(
                image_id, {"nucleus": _disc((24, 16), 1), "cell": _disc((24, 20), 1)},
                whole=True)
        with pytest.raises(ValueError, match="not object classes"):
            session.save_objects_draft(image_id, {"membrane": _disc((24, 16), 1)})
        assert project.load_instances(image_id) is None and project.drafts() == []


def test_an_edit_of_one_class_reviews_only_its_pixels(folder):
    """Painting a new nucleus does not mark the (renumbered) cells as edited."""
    with Project.open(folder) as project:
        session = ActiveLearningSession(project)
        image_id = _first(project)
        session.submit_instances(image_id, _disc((24, 16), 1) + _disc((24, 50), 2),
                                 labels=_disc((24, 16), 1, dtype=np.uint8)
                                 + _disc((24, 50), 2, dtype=np.uint8))
        session.view(image_id)
        views = {v.class_name: v for v in session.objects_views(image_id)}
        nuclei = views["nucleus"].instances.copy()
        nuclei[2:8, 2:8] = views["nucleus"].next_id  # a new nucleus, top left
        _, class_map, reviewed = session.review_objects(
            image_id, {"nucleus": nuclei, "cell": views["cell"].instances})
        assert reviewed[2:8, 2:8].all() and reviewed.sum() == 36
        assert class_map[5, 5] == 1 and class_map[24, 50] == 2


def test_integrity_check_reports_bad_instance_files(folder, tmp_path):
    with Project.open(folder) as project:
        first, second = sorted(r.id for r in project.images())
        project.submit_instances(first, _disc((24, 16), 1), object_class="nucleus")
        assert project.integrity_check() == []
        path = project.instances_path(first)
        key = path.stem
        tifffile.imwrite(path, np.zeros((10, 10), np.uint16))  # wrong shape
        tifffile.imwrite(project.instances_path(second), np.zeros(SHAPE, np.float32))
        tifffile.imwrite(path.parent / "nokey.tif", np.zeros(SHAPE, np.uint16))
        problems = project.integrity_check()
        text = "\n".join(problems)
        assert f"instances/{key}.tif has shape (10, 10)" in text
        second_key = project.instances_path(second).stem
        assert f"instances/{second_key}.tif has no labels/" in text  # and float: one problem
        assert "nokey.tif belongs to no image" in text
        assert len(problems) == 3
        assert path.exists()  # reported, not changed
    with Project.open(folder) as project:
        project.set_class_modes({"nucleus": "area", "cell": "area"})
        problems = project.integrity_check()
        assert any("no class in 'objects' mode" in p for p in problems)


def test_integrity_check_reports_an_instance_file_of_the_wrong_dtype(folder):
    with Project.open(folder) as project:
        image_id = _first(project)
        project.submit_instances(image_id, _disc((24, 16), 1), object_class="nucleus")
        tifffile.imwrite(project.instances_path(image_id), _disc((24, 16), 1, dtype=np.float32))
        problems = project.integrity_check()
        assert len(problems) == 1 and "float32 values, not object ids" in problems[0]


def test_a_corrupt_objects_draft_says_how_to_discard_it(folder):
    with Project.open(folder) as project:
        image_id = _first(project)
        project.save_objects_draft(image_id, _disc((24, 16), 1),
                                   labels=_disc((24, 16), 1, dtype=np.uint8))
        (folder / "drafts" / f"{project.instances_path(image_id).stem}.instances.tif"
         ).write_bytes(b"not a tiff")
        with pytest.raises(ProjectError, match="discard_draft"):
            project.load_objects_draft(image_id)
        project.discard_draft(image_id)
        assert project.load_objects_draft(image_id) is None


def test_predict_instances_refuses_a_large_image(tmp_path):
    arrays = {"big": np.zeros((64, 64), np.float32), "small": np.zeros((8, 8), np.float32)}
    with Project.create(tmp_path / "l", arrays=arrays, classes=["background", "nucleus"],
                        class_modes={"nucleus": "objects"},
                        settings={"large_image_pixels": 1000}) as project:
        session = ActiveLearningSession(project)
        big = next(r.id for r in project.images() if r.name == "big")
        with pytest.raises(ValueError, match="large_image_pixels.*Crop it"):
            session.predict_instances(big)
        with pytest.raises(ValueError, match="large_image_pixels"):
            session.objects_views(big)
        small = next(r.id for r in project.images() if r.name == "small")
        assert session.predict_instances(small) is None  # no model yet: nothing refused
