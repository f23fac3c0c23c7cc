"""Class modes and instance labels in the project: settings, submit, read back, bad input."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.draw import disk

from napari_activeseg.core.project import Project, ProjectError, ProjectWarning

CLASSES = ["background", "nucleus", "membrane"]


def objects(shape=(48, 64)) -> np.ndarray:
    """Two touching discs with ids 3 and 9 (gaps on purpose)."""
    ids = np.zeros(shape, np.int32)
    ids[disk((24, 20), 10, shape=shape)] = 3
    ids[disk((24, 38), 10, shape=shape)] = 9
    return ids


@pytest.fixture
def project(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {f"img{i}": rng.random((48, 64)).astype(np.float32) for i in range(2)}
    with Project.create(tmp_path / "p", arrays=arrays, classes=CLASSES,
                        class_modes={"nucleus": "objects"}) as p:
        yield p


def test_class_modes_default_to_area_and_are_checked(tmp_path, project):
    assert project.class_modes == {"nucleus": "objects", "membrane": "area"}
    assert project.object_classes == (1,)
    project.set_class_modes({"nucleus": "area", "membrane": "objects"})
    assert project.object_classes == (2,)
    for bad, match in (({"cell": "objects"}, "not a class"),
                       ({"background": "objects"}, "background"),
                       ({"nucleus": "instances"}, "must be one of")):
        with pytest.raises(ProjectError, match=match):
            project.set_class_modes(bad)
    assert project.object_classes == (2,)  # unchanged
    project.set_setting("classes", ["background", "nucleus", "cell"])  # membrane renamed
    assert project.object_classes == ()
    with pytest.raises(ProjectError, match="not a class"):
        Project.create(tmp_path / "q", arrays={"a": np.zeros((8, 8), np.float32)},
                       class_modes={"cell": "objects"})
    assert not (tmp_path / "q" / "project.sqlite").exists()
    with Project.create(tmp_path / "old", arrays={"a": np.zeros((8, 8), np.float32)}) as old:
        assert old.class_modes == {"foreground": "area"} and old.object_classes == ()


def test_instances_round_trip(tmp_path, project):
    image_id = project.images()[0].id
    ids = objects()
    project.submit_instances(image_id, ids)
    assert project.instances_path(image_id).exists()
    labels = project.load_labels(image_id)[0]
    np.testing.assert_array_equal(labels, np.where(ids > 0, 1, 0))
    project.close()
    with Project.open(tmp_path / "p") as again:
        assert again.integrity_check() == []
        got, rev = again.load_instances(image_id)
        assert got.dtype == np.uint16 and rev is None
        # relabelled 1..N in order, one id per object
        np.testing.assert_array_equal(got, np.select([ids == 3, ids == 9], [1, 2], 0))


def test_instances_with_area_labels_and_a_partial_submission(project):
    image_id = project.images()[0].id
    ids = objects()
    area = np.zeros(ids.shape, np.uint8)
    area[:, 55:] = 2  # membrane, an "area" class
    project.submit_instances(image_id, ids, labels=area)
    labels = project.load_labels(image_id)[0]
    assert set(np.unique(labels)) == {0, 1, 2} and labels[24, 20] == 1 and labels[0, 60] == 2
    # a box on the right adds a third object; the two earlier ones stay
    box = np.zeros(ids.shape, bool)
    box[:, 50:] = True
    more = np.zeros(ids.shape, np.int32)
    more[disk((10, 58), 4, shape=ids.shape)] = 1
    project.submit_instances(image_id, more, box, labels=np.where(box, 2, 0))
    got = project.load_instances(image_id)[0]
    assert got.max() == 3 and got[24, 20] != got[24, 38] and got[10, 58] > 0


def test_class_map_submission_replaces_instances_and_reads_as_components(project):
    image_id = project.images()[0].id
    project.submit_instances(image_id, objects())
    project.submit(image_id, (objects() > 0).astype(np.uint8))
    assert not project.instances_path(image_id).exists()
    assert project.load_instances(image_id, derive=False) is None
    assert project.load_instances(image_id)[0].max() == 1  # the merged discs: one component


def test_bad_instances_are_refused_and_change_nothing(tmp_path, project):
    image_id = project.images()[0].id
    project.submit_instances(image_id, objects())
    before = {p.name: p.read_bytes() for sub in ("labels", "instances")
              for p in (project.folder / sub).iterdir()}
    n_submissions = len(project.submissions())
    cases = [
        (objects() + 70000 * (objects() > 0), "above 65535"),
        (objects()[:10], "Shape mismatch"),
        (-objects(), "negative"),
        (objects().astype(float) + 0.5, "non-integer"),
    ]
    for bad, match in cases:
        with pytest.raises(ProjectError, match=match):
            project.submit_instances(image_id, bad)
    with pytest.raises(ProjectError, match="'area' class"):
        project.submit_instances(image_id, objects(), object_class="membrane")
    with pytest.raises(ProjectError, match="outside every object"):
        project.submit_instances(image_id, objects(), labels=np.ones((48, 64), np.uint8))
    after = {p.name: p.read_bytes() for sub in ("labels", "instances")
             for p in (project.folder / sub).iterdir()}
    assert after == before and len(project.submissions()) == n_submissions
    with Project.create(tmp_path / "semantic", arrays={"a": np.zeros((48, 64), np.float32)},
                        classes=CLASSES) as semantic:
        with pytest.raises(ProjectError, match="no class in 'objects' mode"):
            semantic.submit_instances(semantic.images()[0].id, objects())
        assert not any((semantic.folder / "labels").iterdir())


def test_an_abandoned_staged_instance_image_is_removed_on_open(tmp_path, project):
    image_id = project.images()[0].id
    project.submit_instances(image_id, objects())
    key = project.instances_path(image_id).stem
    stray = project.folder / "instances" / f".{key}.tif.0123456789abcdef.staged"
    stray.write_bytes(b"half a submission")
    project.close()
    with pytest.warns(ProjectWarning, match="instances/"):
        again = Project.open(tmp_path / "p")
    with again:
        assert not stray.exists()
        assert any("instances" in r for r in again.repairs)
        assert again.load_instances(image_id)[0].max() == 2
