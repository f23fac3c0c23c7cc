"""Importing masks made elsewhere (Project.import_masks and ``activeseg import``): each kind of
mask with its known class map, names that match nothing or too much, wrong shapes, existing
labels (refused byte for byte unless replace), dry runs, and the provenance in the history."""

from __future__ import annotations

from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile

from napari_activeseg.cli import main
from napari_activeseg.core.project import Project, ProjectError

SHAPE = (32, 40)


def _truth(seed: int) -> np.ndarray:
    """A 0/1 map with a few rectangles (the known answer of the masks written from it)."""
    rng = np.random.default_rng(seed)
    truth = np.zeros(SHAPE, np.uint8)
    for _ in range(3):
        y, x = rng.integers(0, SHAPE[0] - 8), rng.integers(0, SHAPE[1] - 8)
        truth[y:y + 6, x:x + 7] = 1
    return truth


@pytest.fixture
def images(tmp_path) -> Path:
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a", "b", "c", "d", "e"):
        tifffile.imwrite(folder / f"{name}.tif", rng.random(SHAPE).astype(np.float32))
    return folder


def _project(tmp_path, images, classes=("background", "nucleus")) -> Project:
    return Project.create(tmp_path / "project", source_folder=images, classes=classes)


def _ids(project) -> dict[str, int]:
    return {r.name: r.id for r in project.images()}


def _by_mask(report) -> dict:
    return {item.mask: item for item in report.items}


def test_each_mask_kind_becomes_its_known_class_map(tmp_path, images):
    masks = tmp_path / "masks"
    masks.mkdir()
    truth = {n: _truth(i) for i, n in enumerate("abcd")}
    tifffile.imwrite(masks / "a.tif", truth["a"])                                  # 0/1
    iio.imwrite(masks / "B_mask.png", truth["b"] * 255)                            # 0/255
    instances = np.zeros(SHAPE, np.uint16)                                         # Cellpose
    instances[truth["c"] > 0] = 1000
    instances[:6][truth["c"][:6] > 0] = 7
    instances[0, 0] = 300
    truth["c"][0, 0] = 1
    tifffile.imwrite(masks / "c_cp_masks.tif", instances)
    iio.imwrite(masks / "d_labels.png", np.repeat(truth["d"][..., None] * 255, 3, axis=2))
    with _project(tmp_path, images) as project:
        report = project.import_masks(masks)
        ids = _ids(project)
        items = _by_mask(report)
        assert items["a.tif"].action == "imported" and items["a.tif"].image == "a.tif"
        assert items["B_mask.png"].action == "converted"
        assert "0/255" in items["B_mask.png"].detail
        assert items["c_cp_masks.tif"].action == "converted"
        assert "instance ids" in items["c_cp_masks.tif"].detail
        assert items["d_labels.png"].action == "converted"
        for name in "abcd":
            labels, reviewed = project.load_labels(ids[f"{name}.tif"])
            np.testing.assert_array_equal(labels, truth[name])
            assert reviewed is None  # the whole image is ground truth
        assert project.load_labels(ids["e.tif"]) is None
        assert {r.status for r in project.images() if r.name != "e.tif"} == {"submitted"}
        # the provenance of every imported submission
        assert [s.strategy for s in project.submissions()] == ["imported"] * 4
        assert len(report.imported) == 4 and len(report.converted) == 3 and not report.skipped
        assert report.summary().startswith("Imported 4 of 4 mask file(s)")
    # the files agree with the catalog: reopening adopts or repairs nothing
    with Project.open(tmp_path / "project") as project:
        assert project.repairs == [] and project.integrity_check() == []


def test_class_maps_fit_a_multiclass_project_and_instance_ids_do_not(tmp_path, images):
    masks = tmp_path / "masks"
    masks.mkdir()
    class_map = np.zeros(SHAPE, np.uint8)
    class_map[:10], class_map[20:] = 1, 2
    tifffile.imwrite(masks / "a_seg.tif", class_map)
    tifffile.imwrite(masks / "b.tif", (np.arange(np.prod(SHAPE)) % 9).reshape(SHAPE)
                     .astype(np.uint16))
    iio.imwrite(masks / "c.png", _truth(0) * 255)
    with _project(tmp_path, images, ("background", "nucleus", "membrane")) as project:
        report = project.import_masks(masks)
        items = _by_mask(report)
        assert items["a_seg.tif"].action == "imported"
        np.testing.assert_array_equal(project.load_labels(_ids(project)["a.tif"])[0], class_map)
        for mask in ("b.tif", "c.png"):
            assert items[mask].action == "skipped"
            assert "two-class" in items[mask].detail and "0..2" in items[mask].detail
        assert project.labelled_ids() == [_ids(project)["a.tif"]]


def test_names_that_match_nothing_or_too_much_and_other_files_are_reported(tmp_path, images):
    masks = tmp_path / "masks"
    masks.mkdir()
    tifffile.imwrite(masks / "zebra_mask.tif", _truth(0))
    tifffile.imwrite(masks / "a.tif", _truth(0))
    tifffile.imwrite(masks / "a_masks.tif", _truth(1))
    (masks / "b_seg.npy").write_bytes(b"\x93NUMPY")
    iio.imwrite(masks / "c.jpg", _truth(2) * 255)
    with _project(tmp_path, images) as project:
        report = project.import_masks(masks)
        items = _by_mask(report)
        assert "no image" in items["zebra_mask.tif"].detail
        assert "'zebra.*'" in items["zebra_mask.tif"].detail
        assert "also matched by a_masks.tif" in items["a.tif"].detail
        assert "also matched by a.tif" in items["a_masks.tif"].detail
        assert "not a mask file" in items["b_seg.npy"].detail
        assert "JPEG is lossy" in items["c.jpg"].detail
        assert not report.imported and len(report.skipped) == 5
        assert project.labelled_ids() == [] and project.submissions() == []
        assert str(report).splitlines()[-1] == report.summary()


def test_a_mask_of_the_wrong_shape_is_skipped_naming_both_shapes(tmp_path, images):
    masks = tmp_path / "masks"
    masks.mkdir()
    tifffile.imwrite(masks / "a.tif", np.zeros((20, 24), np.uint8))
    with _project(tmp_path, images) as project:
        (item,) = project.import_masks(masks).items
        assert item.action == "skipped" and item.image == "a.tif"
        assert "20 x 24" in item.detail and "32 x 40" in item.detail
        assert project.labelled_ids() == []


def test_existing_labels_are_refused_unless_replace(tmp_path, images):
    masks = tmp_path / "masks"
    masks.mkdir()
    tifffile.imwrite(masks / "a.tif", _truth(5))
    with _project(tmp_path, images) as project:
        image_id = _ids(project)["a.tif"]
        project.submit(image_id, _truth(9))
        before = project.label_path(image_id).read_bytes()
        (item,) = project.import_masks(masks).items
        assert item.action == "skipped" and "already has labels" in item.detail
        assert "--replace" in item.detail
        assert project.label_path(image_id).read_bytes() == before
        assert len(project.submissions(image_id)) == 1
        (item,) = project.import_masks(masks, replace=True).items
        assert item.action == "imported"
        np.testing.assert_array_equal(project.load_labels(image_id)[0], _truth(5))
        assert [s.strategy for s in project.submissions(image_id)] == [None, "imported"]


def test_a_dry_run_changes_nothing(tmp_path, images):
    masks = tmp_path / "masks"
    masks.mkdir()
    iio.imwrite(masks / "a_mask.png", _truth(0) * 255)
    with _project(tmp_path, images) as project:
        db = (project.folder / "project.sqlite").read_bytes()
        report = project.import_masks(masks, dry_run=True)
        assert [i.action for i in report.items] == ["converted"]
        assert report.summary().startswith("Would import 1 of 1")
        assert "nothing was written" in report.summary()
        assert project.submissions() == [] and not any((project.folder / "labels").iterdir())
        assert (project.folder / "project.sqlite").read_bytes() == db


def test_the_image_folder_is_not_imported_as_its_own_masks(tmp_path, images):
    with _project(tmp_path, images) as project:
        report = project.import_masks(images)
        assert {i.action for i in report.items} == {"skipped"}
        assert all("the image itself" in i.detail for i in report.items)


def test_bad_folders_and_read_only_projects_are_refused(tmp_path, images):
    masks = tmp_path / "masks"
    masks.mkdir()
    with _project(tmp_path, images) as project:
        with pytest.raises(ProjectError, match="holds no file"):
            project.import_masks(masks)
        with pytest.raises(ProjectError, match="does not exist"):
            project.import_masks(tmp_path / "nowhere")
    tifffile.imwrite(masks / "a.tif", _truth(0))
    with Project.open(tmp_path / "project", read_only=True) as project:
        with pytest.raises(ProjectError, match="read-only"):
            project.import_masks(masks)
        assert len(project.import_masks(masks, dry_run=True).imported) == 1


# --------------------------------------------------------------------------- activeseg import


def test_cli_import_prints_the_report_and_exits_by_outcome(tmp_path, images, capsys):
    masks = tmp_path / "masks"
    masks.mkdir()
    iio.imwrite(masks / "a_mask.png", _truth(0) * 255)
    tifffile.imwrite(masks / "nothing.tif", _truth(1))
    _project(tmp_path, images).close()
    folder = str(tmp_path / "project")
    assert main(["import", folder, str(masks), "--dry-run"]) == 0
    assert "Would import 1 of 2" in capsys.readouterr().out
    assert main(["import", folder, str(masks)]) == 0
    out = capsys.readouterr().out
    assert "a_mask.png -> a.tif: converted (binary 0/255 mask -> class 1)" in out
    assert "nothing.tif: skipped (no image" in out
    assert "Imported 1 of 2 mask file(s)" in out
    # again: the label is there now, so nothing is imported without --replace
    assert main(["import", folder, str(masks)]) == 1
    assert "already has labels" in capsys.readouterr().out
    assert main(["import", folder, str(masks), "--replace"]) == 0
    with Project.open(folder) as project:
        assert [s.strategy for s in project.submissions()] == ["imported", "imported"]
        # open elsewhere: refused with what to do
        assert main(["import", folder, str(masks)]) == 2
        err = capsys.readouterr().err
        assert "is open read-write" in err and "close it in napari" in err
    assert main(["import", folder, str(tmp_path / "nowhere")]) == 2
    assert "does not exist" in capsys.readouterr().err
