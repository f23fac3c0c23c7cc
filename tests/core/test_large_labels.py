"""Labels of large images in bounded memory: a submitted box is stored as its own box-sized
record (labels + reviewed mask + position), the rest of the image stays unreviewed, later
boxes win where they overlap, the records survive a crash between file and catalog, and
training reads each box as a crop of the image read lazily."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
import torch

from napari_activeseg.core.config import InferenceConfig, ModelConfig, TrainConfig
from napari_activeseg.core.largeimage import LARGE_SETTING
from napari_activeseg.core.model import UNet
from napari_activeseg.core.progress import run_to_end
from napari_activeseg.core.project import Project, ProjectError
from napari_activeseg.core.session import ActiveLearningSession

TINY = ModelConfig(in_channels=1, n_classes=2, depth=2, width=4, polarity="none")
SHAPE = (300, 310)


def _tiff(tmp_path, shape=SHAPE):
    rng = np.random.default_rng(0)
    raw = (rng.random(shape) * 200).astype(np.uint8)
    path = tmp_path / "big.tif"
    tifffile.imwrite(path, raw, tile=(64, 64))
    return path, raw


def _project(tmp_path):
    path, raw = _tiff(tmp_path)
    project = Project.create(tmp_path / "p", classes=("bg", "cell"),
                             settings={LARGE_SETTING: 200 * 200})  # 300 x 310 counts as large
    project.add_images([path])
    return project, project.images()[0].id, raw


def _record_arrays(project):
    """Every array the store wrote for box records (and the whole-image label files)."""
    files = sorted((project.folder / "regions").rglob("*.tif"))
    return files, [tifffile.imread(f) for f in files], list((project.folder / "labels").iterdir())


def test_a_box_is_stored_box_sized_and_the_rest_stays_unreviewed(tmp_path):
    project, image_id, _ = _project(tmp_path)
    with project:
        box = (10, 20, 74, 100)
        labels = np.zeros((64, 80), np.uint8)
        labels[5:30, 5:40] = 1
        sub = project.submit_region(image_id, box, labels)
        files, arrays, whole = _record_arrays(project)
        assert whole == []  # no (300, 310) label file
        assert [a.shape for a in arrays] == [(2, 64, 80)]  # labels + mask, the box only
        assert files[0].name == "000001-10-20-74-100.tif"
        (region,) = project.label_regions(image_id)
        assert region.box == box and region.labels.shape == (64, 80)
        np.testing.assert_array_equal(region.labels, labels)
        assert region.reviewed.all()
        mask = project.reviewed_mask(image_id)
        assert mask.shape == SHAPE
        np.testing.assert_array_equal(mask[0:100, 0:120][10:74, 20:100], True)
        assert not mask[74:, :].any() and not mask[:, 100:].any()  # outside: unreviewed
        assert mask[:, :].sum() == 64 * 80
        rec = project.get_image(image_id)
        assert rec.status == "submitted" and rec.partial  # its other windows stay in the pool
        assert [s.id for s in project.submissions(image_id)] == [sub]
        # load_labels builds the whole image only when asked (export)
        whole_labels, whole_mask = project.load_labels(image_id)
        assert whole_labels.shape == SHAPE and whole_labels[15:40, 25:60].all()
        assert whole_mask.sum() == 64 * 80


def test_a_later_box_wins_where_it_overlaps(tmp_path):
    project, image_id, _ = _project(tmp_path)
    with project:
        project.submit_region(image_id, (0, 0, 50, 50), np.ones((50, 50), np.uint8))
        part = np.zeros((50, 50), bool)
        part[:, :25] = True  # the second box reviewed its left half only
        project.submit_region(image_id, (25, 25, 75, 75), np.zeros((50, 50), np.uint8), part)
        first, second = project.label_regions(image_id)
        assert first.reviewed.sum() == 50 * 50 - 25 * 25  # its overlap went to the later box
        assert not first.reviewed[25:, 25:].any()
        assert second.reviewed.sum() == 50 * 25
        labels, mask = project.load_labels(image_id)
        assert labels[30, 30] == 0 and labels[10, 10] == 1 and labels[30, 60] == 0
        assert mask[30, 60] == 0  # the second box's unreviewed half stays unreviewed


def test_bad_boxes_are_refused_and_nothing_is_written(tmp_path):
    project, image_id, _ = _project(tmp_path)
    with project:
        with pytest.raises(ValueError, match="not inside"):
            project.submit_region(image_id, (250, 0, 350, 10), np.zeros((100, 10), np.uint8))
        with pytest.raises(ValueError, match="shape"):
            project.submit_region(image_id, (0, 0, 10, 10), np.zeros((12, 10), np.uint8))
        with pytest.raises(ValueError, match="n_classes|class"):
            project.submit_region(image_id, (0, 0, 10, 10), np.full((10, 10), 5, np.uint8))
        with pytest.raises(ProjectError, match="empty"):
            project.submit_region(image_id, (0, 0, 10, 10), np.zeros((10, 10), np.uint8),
                                  np.zeros((10, 10), bool))
        assert not (project.folder / "regions").exists() or not any(
            (project.folder / "regions").rglob("*.tif"))
        assert project.submissions(image_id) == []
        project.submit_region(image_id, (0, 0, 10, 10), np.zeros((10, 10), np.uint8))
        with pytest.raises(ProjectError, match="box by box"):  # not mixed with whole labels
            project.submit(image_id, np.zeros(SHAPE, np.uint8))


def test_a_record_written_before_a_crash_is_adopted_on_open(tmp_path):
    project, image_id, _ = _project(tmp_path)
    folder = project.folder
    project.submit_region(image_id, (0, 0, 20, 20), np.ones((20, 20), np.uint8))
    key = project.get_image(image_id).key
    project.close()
    # a second box written, then the process died before its row was committed
    data = np.stack([np.ones((30, 30), np.uint8), np.ones((30, 30), np.uint8)])
    tifffile.imwrite(folder / "regions" / key / "000002-40-40-70-70.tif", data)
    (folder / "regions" / key / ".000003-0-0-5-5.tif.tmp123").write_bytes(b"half")
    with pytest.warns(Warning, match="Adopted"):
        project = Project.open(folder)
    with project:
        subs = project.submissions(image_id)
        assert len(subs) == 2 and subs[-1].recovered
        assert [r.box for r in project.label_regions(image_id)] == [(0, 0, 20, 20),
                                                                  (40, 40, 70, 70)]
        assert project.integrity_check() == []
        # a record lost afterwards is reported, not silently dropped
        (folder / "regions" / key / "000002-40-40-70-70.tif").unlink()
        assert any("has no record" in p for p in project.integrity_check())


def test_training_reads_the_boxes_as_crops(tmp_path, monkeypatch):
    project, image_id, raw = _project(tmp_path)
    with project:
        s = ActiveLearningSession(project, model_config=TINY, strategy="entropy",
                                  inference_config=InferenceConfig(tile_size=128, overlap=16))
        torch.manual_seed(0)
        s.adopt_model(UNet(TINY).state_dict())
        view = s.region_view(image_id, (100, 120, 164, 184))
        assert view.labels.shape == (64, 64)
        labels = (raw[100:164, 120:184] > 100).astype(np.uint8)
        s.submit_region(image_id, view.box, labels)
        assert s.n_labelled == 1
        subs = project.submissions(image_id)
        assert subs[-1].pixels_changed is not None and subs[-1].seconds is not None
        seen = []
        from napari_activeseg.core import training

        fit = training.Trainer.fit

        def spy(self, images, labels, reviewed, **kw):
            seen.append(([i.shape for i in images], [lab.shape for lab in labels],
                         [None if r is None else r.shape for r in reviewed]))
            return (yield from fit(self, images, labels, reviewed, **kw))

        monkeypatch.setattr(training.Trainer, "fit", spy)

        def whole(*_a, **_k):
            raise AssertionError("a large image was prepared whole")

        monkeypatch.setattr(s._cache, "prepared", whole)
        summary = run_to_end(s.train(train_config=TrainConfig(max_steps=2, patch_size=32,
                                                               batch_size=2)))
        assert summary is not None and summary.saved and summary.labelled_ids == [image_id]
        assert seen[0] == ([(1, 64, 64)], [(64, 64)], [(64, 64)])  # the crop, not 300 x 310
        np.testing.assert_array_equal(
            s.prepared_region(image_id, (100, 120, 164, 184)),
            s._cache.source(project, image_id, s.model_config).rows(100, 164, 120, 184))
        # whole-image mode refuses the image with what to do
        with pytest.raises(ValueError, match="too large to show whole.*Boxes"):
            s.refuse_whole(image_id)
