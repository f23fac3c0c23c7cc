"""Tests for napari_activeseg.core.project: round trips of every record (each checked again after
a close + reopen), migrations, moved/changed images, locking, simulated crashes at every step of
a submission, pickle refusal, and bad input that must change nothing on disk.

The SIGKILL soak lives in test_project_crash.py.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import pickle
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile

from napari_activeseg.core import _store_files as sf
from napari_activeseg.core import atomic
from napari_activeseg.core import project as project_module
from napari_activeseg.core.config import ModelConfig, TrainConfig
from napari_activeseg.core.project import (
    SCHEMA_VERSION,
    Project,
    ProjectError,
    ProjectInUseError,
    ProjectVersionError,
    ProjectWarning,
    UnsafeCheckpointError,
    check_state_dict,
    load_state_dict,
)
from napari_activeseg.core.project import _schema as _store_schema
from napari_activeseg.core.project._labels import LabelStore

pytestmark = pytest.mark.filterwarnings("ignore::napari_activeseg.core.project.ProjectWarning")

CHILD = Path(__file__).with_name("_project_child.py")
TINY = ModelConfig(in_channels=1, n_classes=2, depth=1, width=2)


# --------------------------------------------------------------------------- fixtures / helpers


@pytest.fixture
def rng():
    return np.random.default_rng(7)


@pytest.fixture
def image_folder(tmp_path, rng):
    """8- and 16-bit TIFFs of different sizes, a PNG, and a non-image file (all one channel:
    a project takes one channel count, see test_bad_inputs)."""
    folder = tmp_path / "images"
    folder.mkdir()
    tifffile.imwrite(folder / "a.tif", rng.integers(0, 255, (32, 40), dtype=np.uint8))
    tifffile.imwrite(folder / "b.tif", rng.integers(0, 4000, (24, 24), dtype=np.uint16))
    tifffile.imwrite(folder / "c.tif", rng.integers(0, 255, (16, 20), dtype=np.uint8))
    iio.imwrite(folder / "d.png", rng.integers(0, 255, (20, 30), dtype=np.uint8))
    (folder / "notes.txt").write_text("not an image")
    return folder


@pytest.fixture
def project(tmp_path, image_folder):
    p = Project.create(tmp_path / "proj", source_folder=image_folder)
    yield p
    p.close()


def reopen(p: Project, **kwargs) -> Project:
    p.close()
    return Project.open(p.folder, **kwargs)


def labels_for(p: Project, image_id: int, rng, n_classes: int | None = None) -> np.ndarray:
    h, w = p.get_image(image_id).shape[:2]
    return rng.integers(0, n_classes or p.n_classes, (h, w), dtype=np.uint8)


def snapshot(folder: Path) -> tuple[dict[str, bytes], list[str]]:
    """Every file's bytes (the catalog as a logical dump; WAL/SHM files left out)."""
    files = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and not path.name.endswith(("-wal", "-shm")):
            if path.name != project_module.DB_NAME:
                files[path.relative_to(folder).as_posix()] = path.read_bytes()
    conn = sqlite3.connect(f"{(folder / project_module.DB_NAME).as_uri()}?mode=ro", uri=True)
    try:
        dump = list(conn.iterdump())
    finally:
        conn.close()
    return files, dump


def tiny_state_dict(config=TINY, seed=0):
    import torch

    from napari_activeseg.core.model import UNet

    torch.manual_seed(seed)
    return UNet(config).state_dict()


def _start_child(*args: str, prefix: tuple[str, ...] = ()) -> subprocess.Popen:
    return subprocess.Popen(
        [*prefix, sys.executable, str(CHILD), *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


# --------------------------------------------------------------------------- create / open


def test_create_from_folder_round_trips(project, image_folder):
    records = project.images()
    assert [r.name for r in records] == ["a.tif", "b.tif", "c.tif", "d.png"]
    assert [r.shape for r in records] == [(32, 40), (24, 24), (16, 20), (20, 30)]
    assert [r.dtype for r in records] == ["uint8", "uint16", "uint8", "uint8"]
    assert all(r.status == "unlabelled" and r.origin == "external" for r in records)
    assert records[0].path == (image_folder / "a.tif").resolve()
    assert records[0].sha256 == hashlib.sha256((image_folder / "a.tif").read_bytes()).hexdigest()
    expected = tifffile.imread(image_folder / "b.tif")
    np.testing.assert_array_equal(project.load_image(records[1].id), expected)
    assert project.classes == ["background", "foreground"] and project.n_classes == 2
    assert project.schema_version == SCHEMA_VERSION
    for sub in ("labels", "reviewed", "drafts", "models", "images"):
        assert (project.folder / sub).is_dir()

    reopened = reopen(project)
    try:
        assert reopened.images() == records
        np.testing.assert_array_equal(reopened.load_image(records[1].id), expected)
        assert reopened.integrity_check() == []
    finally:
        reopened.close()


def test_create_from_list_arrays_and_copies_is_self_contained(tmp_path, image_folder, rng):
    gray2 = rng.integers(0, 255, (12, 14), dtype=np.uint8)
    gray = rng.random((10, 11)).astype(np.float32)
    folder = tmp_path / "deep" / "proj"
    with Project.create(
        folder, images=[image_folder / "a.tif", image_folder / "d.png"], copy_images=True,
        arrays={"layer one": gray, "second layer": gray2}, classes=("bg", "cell", "edge"),
        colors=("#000000", "#ff0000", "#00ff00"),
    ) as p:  # fmt: skip
        records = p.images()
        assert [r.origin for r in records] == ["copied", "copied", "array", "array"]
        assert [r.key for r in records] == ["a", "d", "layer_one", "second_layer"]
        assert p.colors == ["#000000", "#ff0000", "#00ff00"] and p.n_classes == 3
    # multichannel arrays are stored as pages and come back channel-last
    rgb = rng.integers(0, 255, (12, 14, 3), dtype=np.uint8)
    five = rng.random((9, 8, 5)).astype(np.float32)
    with Project.create(tmp_path / "rgb", arrays={"RGB layer": rgb}) as q:
        np.testing.assert_array_equal(q.load_image(1), rgb)
    tifffile.imwrite(tmp_path / "five.tif", np.moveaxis(five * 2, -1, 0))
    with Project.create(tmp_path / "five", images=[tmp_path / "five.tif"], channel_axis=0) as q:
        (extra,) = q.add_arrays({"five": five}, channel_axis=-1)
        np.testing.assert_array_equal(q.load_image(extra.id), five)
    # the project works after its sources are gone and it is moved
    shutil.rmtree(image_folder)
    moved = tmp_path / "moved"
    shutil.move(str(folder), str(moved))
    with Project.open(moved) as p:
        assert p.check_images() == []
        np.testing.assert_array_equal(p.load_image(3), gray)
        np.testing.assert_array_equal(p.load_image(4), gray2)
        assert p.load_image(1).shape == (32, 40)
        assert p.get_setting("copy_images") is True
        assert p.integrity_check() == []


def test_create_refuses_an_existing_project(project):
    with pytest.raises(ProjectError, match=r"already holds a napari-activeseg project.*\.open"):
        Project.create(project.folder)


def test_create_from_empty_folder_names_folder_and_suffixes(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match=r"(?s)empty.*\.tif.*\.png"):
        Project.create(tmp_path / "proj", source_folder=empty)
    assert not (tmp_path / "proj").exists()


def test_create_skips_unreadable_files_with_warnings(tmp_path, image_folder):
    (image_folder / "broken.tif").write_bytes(b"II*\x00 definitely not a tiff")
    with pytest.warns(ProjectWarning, match="broken.tif"):
        p = Project.create(tmp_path / "proj", source_folder=image_folder)
    with p:
        assert [r.name for r in p.images()] == ["a.tif", "b.tif", "c.tif", "d.png"]
        assert any("broken.tif" in w for w in p.warnings)


def test_failed_create_leaves_nothing_behind(tmp_path, image_folder):
    (image_folder / "broken.tif").write_bytes(b"garbage")
    target = tmp_path / "new" / "proj"
    with pytest.raises(ValueError, match="broken.tif"):
        Project.create(target, source_folder=image_folder, skip_unreadable=False)
    assert not (tmp_path / "new").exists()
    # in a folder that already had the user's files, only those remain
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "mine.txt").write_text("keep me")
    with pytest.raises(ValueError, match="None of the given files"):
        Project.create(existing, images=[image_folder / "broken.tif"], copy_images=True)
    assert sorted(p.name for p in existing.iterdir()) == ["mine.txt"]
    # bad arguments fail before touching the disk
    with pytest.raises(ProjectError, match="at least 2"):
        Project.create(tmp_path / "x", classes=("only",))
    with pytest.raises(ProjectError, match="one '#rrggbb'"):
        Project.create(tmp_path / "x", colors=("#000000",))
    assert not (tmp_path / "x").exists()


def test_open_errors_are_clear(tmp_path):
    with pytest.raises(ProjectError, match="No project folder"):
        Project.open(tmp_path / "nope")
    (tmp_path / "plain").mkdir()
    with pytest.raises(ProjectError, match=r"not a napari-activeseg project.*Project\.create"):
        Project.open(tmp_path / "plain")
    (tmp_path / "plain" / "project.sqlite").write_bytes(b"this is not sqlite at all" * 100)
    with pytest.raises(ProjectError, match="cannot be read as a SQLite catalog"):
        Project.open(tmp_path / "plain")
    with pytest.raises(TypeError, match="Project.create"):
        Project(tmp_path)


def test_closed_project_refuses_use(project):
    project.close()
    project.close()  # idempotent
    with pytest.raises(ProjectError, match="closed"):
        project.images()
    with pytest.raises(ProjectError, match="closed"):
        project.submit(1, np.zeros((32, 40), np.uint8))


def _state(p: Project) -> dict:
    """Everything a reader can see, with label/draft pixels as hashes."""

    def digest(arrays):
        if arrays is None:
            return None
        arrays = arrays if isinstance(arrays, tuple) else (arrays,)
        return [None if a is None else hashlib.sha256(a.tobytes()).hexdigest() for a in arrays]

    ids = [r.id for r in p.images(include_removed=True)]
    return {
        "images": p.images(include_removed=True),
        "submissions": p.submissions(),
        "labelled": p.labelled_ids(),
        "labels": {i: digest(p.load_labels(i)) for i in ids},
        "drafts": {i: digest(p.load_draft(i)) for i in p.drafts()},
        "scores": p.scores(),
        "history": p.query_history(),
        "rounds": p.rounds(),
        "settings": p.settings(),
        "models": [(m.version, m.model_config, m.meta) for m in p.models()],
    }


def test_every_operation_survives_a_reopen(project, image_folder, rng):
    tifffile.imwrite(image_folder / "new.tif", rng.integers(0, 255, (9, 9), dtype=np.uint8))
    mask = np.zeros((32, 40), bool)
    mask[3:9, 4:20] = True
    operations = [
        lambda p: p.add_images([image_folder / "new.tif"]),
        lambda p: p.add_arrays({"layer": rng.random((7, 8)).astype(np.float32)}),
        lambda p: p.set_status(2, "skipped"),
        lambda p: p.record_suggestion(1, "entropy", "v0001", 0.5, "why", box=(1, 2, 3, 4)),
        lambda p: p.save_draft(1, labels_for(p, 1, rng)),
        lambda p: p.submit(1, labels_for(p, 1, rng), mask, seconds=4.0, pixels_changed=3),
        lambda p: p.submit(1, labels_for(p, 1, rng), objects_added=2),
        lambda p: p.record_suggestion(3, "bald", None, 0.25, None),
        lambda p: p.skip(3),
        lambda p: p.save_draft(4, labels_for(p, 4, rng)),
        lambda p: p.discard_draft(4),
        lambda p: p.save_draft(4, labels_for(p, 4, rng)),
        lambda p: p.save_scores([(i, "entropy", "v0001", float(i) / 10, None) for i in (1, 2, 3)]),
        lambda p: p.record_round("v0001", "entropy", 0, [1], {"dice": 0.5}, {"train": 1.0}),
        lambda p: p.set_setting("query_config", {"strategy": "entropy", "batch_size": 2}),
        lambda p: p.save_model(tiny_state_dict(), TINY, {"history": [0.9, 0.5]}),
        lambda p: p.relink(2, image_folder / "b.tif"),
        lambda p: p.submit(2, labels_for(p, 2, rng)),
        lambda p: p.remove_image(2),
        lambda p: p.remove_image(3, delete_labels=True),
        lambda p: p.record_action(p.record_suggestion(4, "random"), "skipped"),
    ]
    for step, operation in enumerate(operations):
        operation(project)
        before = _state(project)
        project = reopen(project)
        assert _state(project) == before, f"operation {step} did not survive a reopen"
    assert project.integrity_check() == []
    project.close()


# --------------------------------------------------------------------------- images


def test_add_remove_and_bring_back_images(project, image_folder, rng):
    tifffile.imwrite(image_folder / "e.tif", rng.integers(0, 255, (8, 9), dtype=np.uint8))
    (added,) = project.add_images([image_folder / "e.tif"])
    assert added.name == "e.tif" and added.shape == (8, 9)
    with pytest.warns(ProjectWarning, match="already in the project"):
        assert project.add_images([image_folder / "a.tif"]) == []
    assert project.add_folder(image_folder) == []  # nothing new
    tifffile.imwrite(image_folder / "f.tif", rng.integers(0, 255, (8, 9), dtype=np.uint8))
    assert [r.name for r in project.add_folder(image_folder)] == ["f.tif"]

    labels = labels_for(project, 1, rng)
    project.submit(1, labels)
    project.remove_image(1)
    assert 1 not in [r.id for r in project.images()]
    assert project.get_image(1).removed and project.labelled_ids() == []
    with pytest.raises(ProjectError, match="was removed"):
        project.submit(1, labels)
    project = reopen(project)
    try:
        (back,) = project.add_images([image_folder / "a.tif"])  # same content: it comes back
        assert back.id == 1 and not back.removed
        np.testing.assert_array_equal(project.load_labels(1)[0], labels)
        project.remove_image(1, delete_labels=True)
        assert not project.label_path(1).exists() and project.submissions(1) == []
        (back,) = project.add_images([image_folder / "a.tif"])
        assert back.id == 1 and project.load_labels(1) is None
        project = reopen(project)
        assert [r.id for r in project.images()] == [1, 2, 3, 4, added.id, added.id + 1]
        assert project.integrity_check() == []
    finally:
        project.close()


def test_keys_are_unique_and_never_reuse_stray_files(tmp_path, rng):
    src = tmp_path / "src"
    (src / "x").mkdir(parents=True)
    (src / "y").mkdir()
    for sub in ("x", "y"):
        tifffile.imwrite(src / sub / "img.tif", rng.integers(0, 255, (8, 8), dtype=np.uint8))
    folder = tmp_path / "proj"
    folder.mkdir()
    (folder / "labels").mkdir()
    tifffile.imwrite(folder / "labels" / "img.tif", np.ones((8, 8), np.uint8))  # a stray file
    with Project.create(folder, source_folder=src, recursive=True) as p:
        records = p.images()
        assert [r.name for r in records] == ["x/img.tif", "y/img.tif"]
        assert len({r.key.lower() for r in records}) == 2 and "img" not in [r.key for r in records]
        assert p.labelled_ids() == [] and p.integrity_check() == []


def test_status_changes(project, rng):
    assert project.images(status="unlabelled") == project.images()
    project.set_status(2, "skipped")
    with pytest.raises(ValueError, match="valid choices"):
        project.set_status(2, "done")
    with pytest.raises(ProjectError, match="use submit"):
        project.set_status(2, "submitted")
    project.submit(3, labels_for(project, 3, rng))
    project = reopen(project)
    try:
        assert [r.id for r in project.images(status="skipped")] == [2]
        assert [r.id for r in project.images(status="submitted")] == [3]
    finally:
        project.close()


# --------------------------------------------------------------------------- path changes


def test_moved_and_changed_images_are_detected(project, image_folder, tmp_path, rng):
    moved_dir = tmp_path / "elsewhere"
    moved_dir.mkdir()
    shutil.move(str(image_folder / "a.tif"), str(moved_dir / "a.tif"))
    with pytest.raises(ProjectError, match=r"(?s)missing.*a\.tif.*relink\(1"):
        project.load_image(1)
    # changed content, same path
    tifffile.imwrite(image_folder / "b.tif", rng.integers(0, 4000, (24, 24), dtype=np.uint16))
    with pytest.raises(ProjectError, match=r"(?s)changed since it was added.*accept_changed=True"):
        project.load_image(2)
    # touched only (same bytes, new mtime): fine, the hash decides
    os.utime(image_folder / "c.tif", ns=(time.time_ns(), time.time_ns() + 10**9))
    project.load_image(3)
    problems = project.check_images()
    assert [(p["image_id"], p["problem"]) for p in problems] == [(1, "missing"), (2, "changed")]
    assert "relink" in problems[0]["message"]

    with pytest.raises(ProjectError, match="different content"):
        project.relink(1, image_folder / "c.tif")
    assert project.relink(1, moved_dir / "a.tif").path == (moved_dir / "a.tif").resolve()
    with pytest.raises(ProjectError, match="different content"):
        project.relink(2, image_folder / "b.tif")
    project.relink(2, image_folder / "b.tif", accept_changed=True)
    project = reopen(project)
    try:
        assert project.check_images() == []
        project.load_image(1)
        project.load_image(2)
    finally:
        project.close()


def test_relink_refuses_a_new_shape_for_labelled_images(project, image_folder, rng):
    project.submit(1, labels_for(project, 1, rng))
    tifffile.imwrite(image_folder / "a.tif", rng.integers(0, 255, (33, 40), dtype=np.uint8))
    with pytest.raises(ProjectError, match="labels would not fit"):
        project.relink(1, image_folder / "a.tif", accept_changed=True)


def test_relink_folder_finds_moved_images(project, image_folder, tmp_path):
    new_home = tmp_path / "new_home"
    shutil.move(str(image_folder), str(new_home))
    assert len(project.check_images()) == 4
    assert [r.id for r in project.relink_folder(new_home)] == [1, 2, 3, 4]
    assert project.check_images() == []


def test_project_moved_with_its_images_finds_them(tmp_path, rng):
    root = tmp_path / "study"
    (root / "raw").mkdir(parents=True)
    tifffile.imwrite(root / "raw" / "a.tif", rng.integers(0, 255, (8, 8), dtype=np.uint8))
    Project.create(root / "proj", source_folder=root / "raw").close()
    shutil.move(str(root), str(tmp_path / "handed_over"))
    with Project.open(tmp_path / "handed_over" / "proj") as p:
        assert p.load_image(1).shape == (8, 8)
        assert any("was found at" in r for r in p.repairs)
        assert p.get_image(1).path == (tmp_path / "handed_over" / "raw" / "a.tif").resolve()


# --------------------------------------------------------------------------- labels and drafts


def test_submit_and_load_labels_round_trip(project, rng):
    labels = labels_for(project, 1, rng)
    reviewed = np.zeros(labels.shape, bool)
    reviewed[4:20, 5:30] = True
    sid = project.submit(
        1, labels, reviewed, seconds=12.5, pixels_changed=40, objects_added=2, objects_removed=1,
        model_version="v0001", strategy="entropy",
    )  # fmt: skip
    whole = labels_for(project, 2, rng)
    project.submit(2, whole, np.ones(whole.shape, bool))  # all-True mask = the whole image
    assert tifffile.imread(project.label_path(1)).dtype == np.uint8
    project = reopen(project)
    try:
        got, mask = project.load_labels(1)
        np.testing.assert_array_equal(got[reviewed], labels[reviewed])
        assert not got[~reviewed].any()  # nothing is claimed outside the reviewed pixels
        np.testing.assert_array_equal(mask, reviewed)
        got, mask = project.load_labels(2)
        np.testing.assert_array_equal(got, whole)
        assert mask is None and not project.reviewed_path(2).exists()
        assert project.load_labels(3) is None
        assert project.labelled_ids() == [1, 2]
        (sub,) = project.submissions(1)
        assert (sub.id, sub.seconds, sub.pixels_changed, sub.objects_added, sub.objects_removed,
                sub.model_version, sub.strategy, sub.recovered) == (
                sid, 12.5, 40, 2, 1, "v0001", "entropy", False)  # fmt: skip
        assert sub.labels_sha256 == hashlib.sha256(project.label_path(1).read_bytes()).hexdigest()
        assert project.get_image(1).status == "submitted"
    finally:
        project.close()


def test_resubmission_replaces_labels_and_keeps_history(project, rng):
    first = labels_for(project, 1, rng)
    mask = np.zeros(first.shape, bool)
    mask[:10] = True
    project.submit(1, first, mask)
    second = labels_for(project, 1, rng)
    project.submit(1, second)  # now the whole image: the old mask must go
    project = reopen(project)
    try:
        got, got_mask = project.load_labels(1)
        np.testing.assert_array_equal(got, second)
        assert got_mask is None
        assert [s.reviewed_sha256 is None for s in project.submissions(1)] == [False, True]
        assert project.integrity_check() == []
    finally:
        project.close()


def test_many_classes_use_uint16(tmp_path, rng):
    classes = ["background"] + [f"c{i}" for i in range(299)]
    with Project.create(tmp_path / "p", arrays={"a": np.zeros((6, 7), np.uint8)},
                        classes=classes) as p:  # fmt: skip
        labels = rng.integers(0, 300, (6, 7)).astype(np.uint16)
        labels[0, 0] = 299
        p.submit(1, labels)
    with Project.open(tmp_path / "p") as p:
        got, _ = p.load_labels(1)
        assert got.dtype == np.uint16
        np.testing.assert_array_equal(got, labels)


def test_drafts_round_trip_and_are_cleared_by_submit(project, rng):
    draft = labels_for(project, 2, rng)
    project.save_draft(2, draft)
    project.save_draft(3, labels_for(project, 3, rng))
    assert project.get_image(2).status == "in_progress"
    project = reopen(project)  # restored on reopen
    try:
        assert project.drafts() == [2, 3]
        np.testing.assert_array_equal(project.load_draft(2), draft)
        project.submit(2, draft)
        project.discard_draft(3)
        assert project.load_draft(4) is None
        project = reopen(project)
        assert project.drafts() == []
        assert project.get_image(3).status == "unlabelled"
        assert project.get_image(2).status == "submitted"
        project.save_draft(2, draft)  # correcting a submitted image keeps it submitted
        assert project.get_image(2).status == "submitted"
    finally:
        project.close()


# --------------------------------------------------------------------------- scores, history


def test_scores_keep_the_last_per_strategy_and_model(project):
    project.save_scores([(1, "entropy", "v0001", 0.5, "mean entropy"),
                         (2, "entropy", "v0001", 0.9, None),
                         (1, "entropy", "v0002", 0.1, None),
                         (1, "random", None, np.float32(0.3), None)])  # fmt: skip
    project.save_scores([{"image_id": 1, "strategy": "entropy", "model_version": "v0001",
                          "score": 0.7, "reason": {"top": [1, 2]}}])  # fmt: skip
    project = reopen(project)
    try:
        rows = project.scores("entropy", "v0001")
        assert [(r.image_id, r.score) for r in rows] == [(2, 0.9), (1, 0.7)]
        assert json.loads(rows[1].reason) == {"top": [1, 2]}
        assert [r.model_version for r in project.scores("random")] == [None]
        assert len(project.scores()) == 4 and len(project.scores(image_id=1)) == 3
    finally:
        project.close()


def test_query_history_links_suggestions_to_actions_and_exports(project, rng, tmp_path):
    s1 = project.record_suggestion(1, "entropy", "v0001", 0.8, "uncertain", box=(0, 0, 16, 20))
    s2 = project.record_suggestion(2, "entropy", "v0001", 0.6, "dim nuclei")
    s3 = project.record_suggestion(3, "random", None, None, None)
    assert project.get_image(1).status == "suggested"
    sub = project.submit(1, labels_for(project, 1, rng), seconds=30.0, pixels_changed=12,
                         objects_added=1, objects_removed=0)  # fmt: skip
    project.skip(2)
    project = reopen(project)
    try:
        history = project.query_history()
        assert [h["suggestion_id"] for h in history] == [s1, s2, s3]
        first = history[0]
        assert (first["image_name"], first["strategy"], first["model_version"], first["score"],
                first["reason"], first["box"], first["action"], first["submission_id"],
                first["seconds"], first["pixels_changed"]) == (
                "a.tif", "entropy", "v0001", 0.8, "uncertain", [0, 0, 16, 20],
                "submitted", sub, 30.0, 12)  # fmt: skip
        assert history[1]["action"] == "skipped" and history[1]["acted_at"]
        assert history[2]["action"] is None
        assert project.get_image(2).status == "skipped"
        with pytest.raises(ProjectError, match="already answered"):
            project.record_action(s1, "skipped")
        project.record_action(s3, "skipped")
        assert [h["suggestion_id"] for h in project.query_history(strategy="random")] == [s3]

        as_json = project.export_history(tmp_path / "history.json")
        assert json.loads(as_json.read_text()) == project.query_history()
        as_csv = project.export_history(tmp_path / "history.csv")
        with open(as_csv, newline="") as fh:
            rows = list(csv.DictReader(fh))
        assert [r["suggestion_id"] for r in rows] == [str(s1), str(s2), str(s3)]
        assert rows[0]["box"] == "0 0 16 20" and rows[0]["action"] == "submitted"
        with pytest.raises(ValueError, match="valid choices"):
            project.export_history(tmp_path / "history.xlsx")
    finally:
        project.close()


def test_rounds_round_trip(project):
    rid = project.record_round(
        "v0001", "entropy", 3, [1, 2], {"dice": np.float64(0.81), "loss": float("nan")},
        {"train": 12.5, "score": 3.25},
    )
    project = reopen(project)
    try:
        (r,) = project.rounds()
        assert (r.id, r.model_version, r.strategy, r.seed, r.labelled_ids) == (
            rid, "v0001", "entropy", 3, [1, 2])  # fmt: skip
        assert r.metrics == {"dice": 0.81, "loss": None}  # JSON has no NaN
        assert r.wall_times == {"train": 12.5, "score": 3.25}
    finally:
        project.close()


def test_settings_round_trip(project, rng):
    project.set_setting("model_config", TINY)
    project.set_setting("train_config", TrainConfig(max_steps=5).to_dict())
    project.set_setting("nested", {"a": [1, 2.5, None], "b": True})
    project.set_setting("classes", ["bg", "nucleus", "membrane"])
    assert project.colors[:2] == ["#000000", "#ff3b30"] and len(project.colors) == 3
    project.submit(1, np.full(project.get_image(1).shape, 2, np.uint8))
    project = reopen(project)
    try:
        assert ModelConfig.from_dict(project.get_setting("model_config")) == TINY
        assert TrainConfig.from_dict(project.get_setting("train_config")).max_steps == 5
        assert project.get_setting("nested") == {"a": [1, 2.5, None], "b": True}
        assert project.get_setting("missing", 42) == 42
        assert project.classes == ["bg", "nucleus", "membrane"]
        with pytest.raises(ProjectError, match="use class 2"):
            project.set_setting("classes", ["bg", "nucleus"])
        project.set_setting("nested", None)
        assert "nested" not in project.settings()
    finally:
        project.close()


# --------------------------------------------------------------------------- models


def test_models_round_trip(project):
    import torch

    project.set_setting("classes", ["background", "foreground"])
    sd1 = tiny_state_dict(seed=1)
    v1 = project.save_model(sd1, TINY, {"history": [{"step": 1, "loss": 0.5}], "dice": 0.7})
    sd2 = tiny_state_dict(seed=2)
    v2 = project.save_model(sd2, TINY.to_dict(), {"dice": 0.8, "version": "ignored"})
    assert (v1, v2) == ("v0001", "v0002")
    project = reopen(project)
    try:
        assert [m.version for m in project.models()] == ["v0001", "v0002"]
        state, config, meta = project.load_model()
        assert config == TINY and meta["version"] == "v0002" and meta["dice"] == 0.8
        assert meta["classes"] == ["background", "foreground"]
        assert all(torch.equal(state[k], sd2[k]) for k in sd2)
        state, _, meta = project.load_model("v0001")
        assert meta["history"] == [{"step": 1, "loss": 0.5}]
        assert all(torch.equal(state[k], sd1[k]) for k in sd1)
        doc = json.loads((project.folder / "models" / "v0001.json").read_text())
        assert doc["model_config"] == TINY.to_dict() and doc["weights"] == "v0001.safetensors"
        with pytest.raises(ProjectError, match="saved versions: v0001, v0002"):
            project.load_model("v0009")
        net, meta = project.load_unet()
        assert meta["version"] == "v0002" and not net.training
        assert net(torch.zeros(1, 1, 8, 8)).shape == (1, 2, 8, 8)
        assert project.integrity_check() == []
    finally:
        project.close()


def test_corrupt_latest_model_falls_back_and_says_so(project):
    project.save_model(tiny_state_dict(seed=1), TINY, {})
    project.save_model(tiny_state_dict(seed=2), TINY, {})
    weights = project.folder / "models" / "v0002.safetensors"
    weights.write_bytes(weights.read_bytes()[:-10])  # truncated by a full disk, say
    with pytest.warns(ProjectWarning, match=r"v0002.*v0001 was loaded instead"):
        _, _, meta = project.load_model()
    assert meta["version"] == "v0001"
    with pytest.raises(ProjectError, match="checksum"):
        project.load_model("v0002")
    assert [m.startswith("model v0002") for m in project.integrity_check()] == [True]
    # an interrupted save (weights but no JSON) is not a version, and is cleaned up
    (project.folder / "models" / "v0003.safetensors").write_bytes(weights.read_bytes())
    assert [m.version for m in project.models()] == ["v0001", "v0002"]
    project.integrity_check()
    assert not (project.folder / "models" / "v0003.safetensors").exists()
    assert project.save_model(tiny_state_dict(), TINY, {}) == "v0003"


def test_state_dict_for_another_architecture_is_refused_clearly(project):
    three = ModelConfig(in_channels=1, n_classes=3, depth=1, width=2)
    with pytest.raises(ProjectError, match=r"predicts 3 classes but the project has 2"):
        project.save_model(tiny_state_dict(three), three, {})
    with pytest.raises(ProjectError, match=r"weights predict 3 classes, the config 2"):
        project.save_model(tiny_state_dict(three), TINY, {})
    with pytest.raises(ProjectError, match=r"depth 2, the config 1"):
        check_state_dict(tiny_state_dict(TINY.replace(depth=2)), TINY)
    with pytest.raises(ProjectError, match=r"3 input channels, the config 1"):
        check_state_dict(tiny_state_dict(TINY.replace(in_channels=3)), TINY)
    assert list((project.folder / "models").iterdir()) == []


def test_batchnorm_model_saved_before_the_norm_option_still_loads(project):
    """A model JSON written before ``norm`` existed has BatchNorm weights and no such field."""
    import torch

    legacy = TINY.replace(norm="batch")
    sd = tiny_state_dict(legacy, seed=3)
    assert any(k.endswith("running_mean") for k in sd)
    project.save_model(sd, legacy, {})
    path = project.folder / "models" / "v0001.json"
    doc = json.loads(path.read_text())
    del doc["model_config"]["norm"]
    path.write_text(json.dumps(doc))
    project = reopen(project)
    try:
        state, config, _ = project.load_model()
        assert config.norm == "batch" and config == legacy
        net, _ = project.load_unet()
        assert any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())
        # weights of one kind under a config of the other are refused, naming the mismatch
        with pytest.raises(ProjectError, match="BatchNorm network, the config says norm='group'"):
            check_state_dict(state, TINY)
        with pytest.raises(ProjectError, match="GroupNorm network, the config says norm='batch'"):
            check_state_dict(tiny_state_dict(TINY), legacy)
    finally:
        project.close()


class _Payload:
    """Unpickling this creates a marker file: a stand-in for arbitrary code execution."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickled_checkpoints_are_refused_and_run_nothing(project, tmp_path, monkeypatch):
    import torch

    # the payload is real: unpickling it does create its marker
    proof = tmp_path / "proof"
    pickle.loads(pickle.dumps(_Payload(proof))).close()
    assert proof.exists()

    marker = tmp_path / "pwned"
    evil = tmp_path / "evil"
    evil.mkdir()
    torch.save({"head.weight": _Payload(marker)}, evil / "model.pt")
    (evil / "raw.pkl").write_bytes(pickle.dumps({"head.weight": _Payload(marker)}))
    shutil.copy(evil / "model.pt", evil / "zip_renamed.safetensors")
    shutil.copy(evil / "raw.pkl", evil / "pickle_renamed.safetensors")
    for name in ("model.ckpt", "model.pth", "model.bin"):
        shutil.copy(evil / "model.pt", evil / name)

    def forbidden(*args, **kwargs):
        raise AssertionError("something tried to unpickle")

    monkeypatch.setattr(torch, "load", forbidden)
    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(pickle, "loads", forbidden)

    for path in sorted(evil.iterdir()):
        with pytest.raises(UnsafeCheckpointError, match="(?i)pickle"):
            load_state_dict(path)
        with pytest.raises(UnsafeCheckpointError):
            project.import_model(path, TINY)
    # a crafted model version inside the project, with a JSON whose checksum matches
    good = project.save_model(tiny_state_dict(), TINY, {})
    models = project.folder / "models"
    data = (evil / "zip_renamed.safetensors").read_bytes()
    (models / "v0002.safetensors").write_bytes(data)
    doc = json.loads((models / f"{good}.json").read_text())
    doc.update(version="v0002", weights="v0002.safetensors", weights_sha256=sf.sha256_bytes(data))
    (models / "v0002.json").write_text(json.dumps(doc))
    shutil.copy(evil / "model.pt", models / "sneaky.pt")
    with pytest.raises(UnsafeCheckpointError, match="ZIP archive.*torch.save"):
        project.load_model("v0002")
    with pytest.warns(ProjectWarning, match="v0002"):
        _, _, meta = project.load_model()
    assert meta["version"] == good
    assert [m.version for m in project.models()] == [good]
    problems = project.integrity_check()
    assert any("v0002" in p for p in problems) and any("sneaky.pt" in p for p in problems)
    assert not marker.exists()


def test_import_model_from_another_project(project, tmp_path, image_folder):
    version = project.save_model(tiny_state_dict(seed=3), TINY, {"dice": 0.9})
    with Project.create(tmp_path / "other", source_folder=image_folder) as other:
        imported = other.import_model(project.folder / "models" / f"{version}.safetensors")
        _, config, meta = other.load_model(imported)
        assert config == TINY and meta["dice"] == 0.9 and "imported_from" in meta


# --------------------------------------------------------------------------- schema versions


def test_schema_v1_is_frozen():
    # Projects on users' disks were made with exactly this DDL; never edit it, add a migration.
    digest = hashlib.sha256(_store_schema.SCHEMA_V1.encode()).hexdigest()
    assert digest == "4a59801f739c6308a375d2b38fb1440529bfa24304cb4952ffd87e407edf4d40"


def _make_v1_project(folder: Path, image: Path, rng) -> np.ndarray:
    """A project exactly as the first release wrote it (schema 1)."""
    for sub in ("labels", "reviewed", "drafts", "models", "images"):
        (folder / sub).mkdir(parents=True)
    copied = folder / "images" / "b.tif"
    tifffile.imwrite(copied, rng.integers(0, 255, (10, 12), dtype=np.uint8))
    labels = rng.integers(0, 2, (16, 20), dtype=np.uint8)
    tifffile.imwrite(folder / "labels" / "a.tif", labels, compression="zlib")
    label_sha = sf.sha256_file(folder / "labels" / "a.tif")
    conn = sqlite3.connect(folder / "project.sqlite")
    conn.executescript(_store_schema.SCHEMA_V1)
    now = "2025-01-01T00:00:00.000+00:00"
    conn.executemany("INSERT INTO meta VALUES (?, ?)",
                     [("app", "napari-activeseg"), ("created_with", "0.0.1"), ("created_at", now)])
    conn.executemany("INSERT INTO settings VALUES (?, ?)",
                     [("classes", '["background", "foreground"]'),
                      ("colors", '["#000000", "#ff0000"]')])  # fmt: skip
    for key, path in (("a", image), ("b", copied)):
        st = path.stat()
        stored = str(path) if key == "a" else "images/b.tif"
        shape = "[16, 20]" if key == "a" else "[10, 12]"
        conn.execute(
            "INSERT INTO images(key, name, path, sha256, size, mtime_ns, shape, dtype, "
            "channel_axis, status, added_at) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            (key, f"{key}.tif", stored, sf.sha256_file(path), st.st_size, st.st_mtime_ns, shape,
             "uint8", None, "submitted" if key == "a" else "unlabelled", now),
        )  # fmt: skip
    conn.execute("INSERT INTO submissions(image_id, created_at, labels_sha256, seconds) "
                 "VALUES (1, ?, ?, 20.0)", (now, label_sha))  # fmt: skip
    conn.execute("INSERT INTO scores VALUES (2, 'entropy', 'v0001', 0.4, NULL, ?)", (now,))
    conn.execute("INSERT INTO suggestions(image_id, created_at, strategy, model_version, score, "
                 "action, acted_at) VALUES (1, ?, 'entropy', 'v0001', 0.9, 'submitted', ?)",
                 (now, now))  # fmt: skip
    conn.execute("INSERT INTO rounds(created_at, model_version, strategy, seed, labelled_ids, "
                 "metrics, wall_times) VALUES (?, 'v0001', 'entropy', 0, '[1]', "
                 "'{\"dice\": 0.5}', '{\"train\": 1.0}')", (now,))  # fmt: skip
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()
    return labels


def _schema(folder: Path) -> dict:
    conn = sqlite3.connect(folder / "project.sqlite")
    try:
        tables = [r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' "
            "ORDER BY name")]  # fmt: skip
        out = {t: conn.execute(f"PRAGMA table_info({t})").fetchall() for t in tables}
        out["indexes"] = conn.execute(
            "SELECT name, tbl_name FROM sqlite_master WHERE type = 'index' ORDER BY name"
        ).fetchall()
        out["version"] = conn.execute("PRAGMA user_version").fetchone()[0]
        return out
    finally:
        conn.close()


def test_migration_from_schema_1(tmp_path, rng, image_folder):
    image = tmp_path / "a.tif"
    tifffile.imwrite(image, rng.integers(0, 255, (16, 20), dtype=np.uint8))
    folder = tmp_path / "old"
    labels = _make_v1_project(folder, image, rng)

    # read-only: upgraded in memory, the file stays at schema 1
    with Project.open(folder, read_only=True) as p:
        assert p.schema_version == SCHEMA_VERSION and len(p.images()) == 2
        np.testing.assert_array_equal(p.load_labels(1)[0], labels)
    assert _schema(folder)["version"] == 1

    with Project.open(folder) as p:
        assert any("schema 1 to" in w for w in p.warnings)
        records = p.images()
        assert [(r.key, r.origin) for r in records] == [("a", "external"), ("b", "copied")]
        assert p.load_image(1).shape == (16, 20) and p.load_image(2).shape == (10, 12)
        np.testing.assert_array_equal(p.load_labels(1)[0], labels)
        (sub,) = p.submissions(1)
        assert sub.seconds == 20.0 and not sub.recovered  # matched, not re-adopted
        assert [(s.image_id, s.score) for s in p.scores("entropy")] == [(2, 0.4)]
        (h,) = p.query_history()
        assert (h["action"], h["box"], h["submission_id"]) == ("submitted", None, None)
        assert p.rounds()[0].metrics == {"dice": 0.5}
        assert p.integrity_check() == []
        p.submit(2, np.zeros((10, 12), np.uint8))
        p.record_suggestion(2, "entropy", box=(0, 0, 5, 5))
    (backup,) = (folder / "backups").iterdir()
    conn = sqlite3.connect(backup)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
    conn.close()
    with Project.open(folder) as p:
        assert p.labelled_ids() == [1, 2] and p.query_history()[1]["box"] == [0, 0, 5, 5]
    # an upgraded catalog is the same database as a new one
    with Project.create(tmp_path / "fresh") as fresh:
        pass
    assert _schema(folder) == _schema(fresh.folder)


def test_failed_migration_leaves_schema_1(tmp_path, rng, monkeypatch):
    image = tmp_path / "a.tif"
    tifffile.imwrite(image, rng.integers(0, 255, (16, 20), dtype=np.uint8))
    folder = tmp_path / "old"
    _make_v1_project(folder, image, rng)
    before = _schema(folder)
    real = _store_schema.MIGRATIONS[1]

    def broken(conn, path):
        real(conn, path)
        raise RuntimeError("disk on fire")

    monkeypatch.setitem(_store_schema.MIGRATIONS, 1, broken)
    with pytest.raises(RuntimeError, match="disk on fire"):
        Project.open(folder)
    assert _schema(folder) == before
    monkeypatch.setitem(_store_schema.MIGRATIONS, 1, real)
    with Project.open(folder) as p:  # and the lock was released
        assert p.schema_version == SCHEMA_VERSION


def test_newer_schema_is_refused(project):
    folder = project.folder
    project.close()
    conn = sqlite3.connect(folder / "project.sqlite")
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.commit()
    conn.close()
    for read_only in (False, True):
        with pytest.raises(ProjectVersionError, match=r"(?s)newer napari-activeseg.*[Uu]pgrade"):
            Project.open(folder, read_only=read_only)
    conn = sqlite3.connect(folder / "project.sqlite")
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    conn.commit()
    conn.close()
    Project.open(folder).close()  # the failed open released its lock


# --------------------------------------------------------------------------- crash windows


class _Crash(BaseException):
    """Stands for the process dying at this point (not an Exception: nothing may catch it)."""


def _crash_submit(p: Project, monkeypatch, step: str, *args, **kwargs) -> None:
    """Run a submit that dies at `step`, then drop the Project like a dead process would."""
    real_write, real_finish = atomic.atomic_write_bytes, LabelStore._finish_staged

    def write(path, data):
        if step == "before-labels" and Path(path).parent.name == "labels":
            raise _Crash
        return real_write(path, data)

    def finish(self, staged, key):
        if step == "before-mask":
            raise _Crash
        return real_finish(self, staged, key)

    def stamp(self, key):
        raise _Crash

    monkeypatch.setattr(atomic, "atomic_write_bytes", write)
    monkeypatch.setattr(LabelStore, "_finish_staged", finish)
    if step == "before-commit":
        monkeypatch.setattr(LabelStore, "_stamp", stamp)
    with pytest.raises(_Crash):
        p.submit(*args, **kwargs)
    monkeypatch.undo()
    p.close()


@pytest.mark.parametrize(
    ("step", "new_state"),
    [("before-labels", False), ("before-mask", True), ("before-commit", True)],
)
@pytest.mark.parametrize("old_mask", [True, False])
@pytest.mark.parametrize("new_mask", [True, False])
def test_a_crash_at_any_step_leaves_old_or_new_labels(
    project, rng, monkeypatch, step, new_state, old_mask, new_mask
):
    if step == "before-mask" and not (old_mask or new_mask):
        pytest.skip("no mask before or after: that submission has no mask step")
    shape = project.get_image(1).shape
    old = labels_for(project, 1, rng)
    old_reviewed = np.zeros(shape, bool)
    old_reviewed[:5] = True
    project.submit(1, old, old_reviewed if old_mask else None)
    new = labels_for(project, 1, rng)
    new_reviewed = np.zeros(shape, bool)
    new_reviewed[:, :7] = True
    project.save_draft(1, new)
    # merge=False: the new submission replaces the old one (the merged case writes the same
    # files, with the union as the mask: test_crash_in_a_merged_submission below)
    _crash_submit(project, monkeypatch, step, 1, new, new_reviewed if new_mask else None,
                  merge=False)

    with Project.open(project.folder) as p:
        assert p.integrity_check() == []
        labels, mask = p.load_labels(1)
        want, want_mask = (new, new_reviewed if new_mask else None) if new_state else (
            old, old_reviewed if old_mask else None)  # fmt: skip
        if want_mask is not None:  # stored as 0 outside the reviewed pixels
            want = np.where(want_mask, want, 0)
        np.testing.assert_array_equal(labels, want)
        assert (mask is None) == (want_mask is None)
        if want_mask is not None:
            np.testing.assert_array_equal(mask, want_mask)
        subs = p.submissions(1)
        assert len(subs) == (2 if new_state else 1)
        assert subs[-1].recovered == new_state
        assert list((p.folder / "reviewed").glob(".*")) == []
        assert list((p.folder / "labels").glob(".*")) == []
        if new_state:
            assert p.drafts() == []  # the draft predates the labels it led to


@pytest.mark.parametrize(("step", "new_state"), [("before-labels", False), ("before-mask", True)])
def test_crash_in_a_merged_submission(project, rng, monkeypatch, step, new_state):
    shape = project.get_image(1).shape
    old = labels_for(project, 1, rng)
    old_reviewed = np.zeros(shape, bool)
    old_reviewed[:5] = True
    project.submit(1, old, old_reviewed)
    new = labels_for(project, 1, rng)
    new_reviewed = np.zeros(shape, bool)
    new_reviewed[:, :7] = True
    _crash_submit(project, monkeypatch, step, 1, new, new_reviewed)
    with Project.open(project.folder) as p:
        assert p.integrity_check() == []
        labels, mask = p.load_labels(1)
        if new_state:  # the union, old truth kept where only the old box reviewed it
            np.testing.assert_array_equal(mask, old_reviewed | new_reviewed)
            np.testing.assert_array_equal(labels[new_reviewed], new[new_reviewed])
            only_old = old_reviewed & ~new_reviewed
            np.testing.assert_array_equal(labels[only_old], old[only_old])
        else:
            np.testing.assert_array_equal(mask, old_reviewed)
            np.testing.assert_array_equal(labels, np.where(old_reviewed, old, 0))


def test_leftover_temp_files_are_cleaned(project):
    for sub in ("labels", "reviewed", "drafts", "models", "images"):
        (project.folder / sub / f".x.tif.abc{sub}.tmp").write_bytes(b"half")
    assert project.integrity_check() == []
    assert any("temporary file" in r for r in project.repairs)
    assert not list(project.folder.rglob("*.tmp"))


def test_label_files_edited_by_hand_are_adopted(project, rng):
    project.submit(1, labels_for(project, 1, rng))
    edited = labels_for(project, 1, rng)
    tifffile.imwrite(project.label_path(1), edited)  # fixed in Fiji, say
    tifffile.imwrite(project.label_path(2), labels_for(project, 2, rng))  # never submitted here
    project = reopen(project)
    try:
        np.testing.assert_array_equal(project.load_labels(1)[0], edited)
        assert [s.recovered for s in project.submissions(1)] == [False, True]
        assert project.labelled_ids() == [1, 2]
        assert project.integrity_check() == []
    finally:
        project.close()


def test_missing_or_damaged_label_files_are_reported(project, rng):
    project.submit(1, labels_for(project, 1, rng))
    project.submit(2, labels_for(project, 2, rng))
    project.label_path(1).unlink()
    tifffile.imwrite(project.label_path(2), np.zeros((3, 3), np.uint8))
    problems = project.integrity_check()
    assert len(problems) == 2
    assert "labels/a.tif is missing" in problems[0] and "restore" in problems[0]
    assert "shape" in problems[1]
    with pytest.raises(ProjectError, match="is missing"):
        project.load_labels(1)


# --------------------------------------------------------------------------- locking and threads


def test_a_project_dropped_without_close_does_not_keep_the_lock(project):
    import gc

    folder = project.folder
    project.close()
    dropped = Project.open(folder)
    del dropped
    gc.collect()
    Project.open(folder).close()


def test_second_read_write_open_in_the_same_process_is_refused(project):
    with pytest.raises(ProjectInUseError, match=rf"this very process \(PID {os.getpid()}\)"):
        Project.open(project.folder)
    with Project.open(project.folder, read_only=True) as ro:
        assert len(ro.images()) == 4


@pytest.mark.reliability
@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")
def test_lock_contention_between_processes(project, rng):
    labels = labels_for(project, 1, rng)
    project.submit(1, labels)
    folder = project.folder
    project.close()
    holder = _start_child("hold", str(folder))
    try:
        line = holder.stdout.readline()
        assert line.startswith("ready"), holder.stderr.read()
        with pytest.raises(ProjectInUseError) as info:
            Project.open(folder)
        message = str(info.value)
        assert f"process {holder.pid} on host {socket.gethostname()}" in message
        assert "read_only=True" in message
        with Project.open(folder, read_only=True) as ro:
            np.testing.assert_array_equal(ro.load_labels(1)[0], labels)
            with pytest.raises(ProjectError, match="read-only"):
                ro.submit(1, labels)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
        holder.stdout.close()
        holder.stderr.close()
    assert holder.returncode == -signal.SIGKILL
    with Project.open(folder) as p:  # the dead holder's lock is gone with it
        assert p.integrity_check() == []


def test_worker_thread_and_gui_thread_share_a_project(project, rng):
    errors = []
    arrays = {i: labels_for(project, i, np.random.default_rng(i)) for i in (1, 2, 3, 4)}

    def worker():
        try:
            for _ in range(5):
                for i, labels in arrays.items():
                    project.submit(i, labels)
                    project.save_scores([(i, "entropy", None, 0.5, None)])
        except BaseException as err:  # pragma: no cover - reported below
            errors.append(err)

    thread = threading.Thread(target=worker)
    thread.start()
    while thread.is_alive():
        project.images()
        project.labelled_ids()
        project.query_history()
    thread.join()
    assert errors == []
    assert len(project.submissions()) == 20 and project.integrity_check() == []


# --------------------------------------------------------------------------- bad input


def test_bad_input_is_refused_and_changes_nothing(project, rng, image_folder):
    project.submit(1, labels_for(project, 1, rng))
    project.record_suggestion(2, "entropy")
    project.save_model(tiny_state_dict(), TINY, {})
    before = snapshot(project.folder)
    h, w = project.get_image(2).shape[:2]
    good = np.zeros((h, w), np.uint8)
    three = ModelConfig(in_channels=1, n_classes=3, depth=1, width=2)
    bad_calls = {
        "class >= n_classes": (lambda: project.submit(2, np.full((h, w), 2)), "n_classes=2"),
        "shape mismatch": (lambda: project.submit(2, np.zeros((h + 1, w))), "Shape mismatch"),
        "mask shape": (lambda: project.submit(2, good, np.ones((h, w + 1), bool)), "Shape"),
        "empty mask": (lambda: project.submit(2, good, np.zeros((h, w), bool)), "empty"),
        "fractions": (lambda: project.submit(2, good + 0.5), "non-integer"),
        "negative": (lambda: project.submit(2, good - 1.0), "negative"),
        "unknown image": (lambda: project.submit(99, good), "No image with id 99"),
        "bad seconds": (lambda: project.submit(2, good, seconds=-1), "seconds"),
        "bad effort": (lambda: project.submit(2, good, pixels_changed=1.5), "pixels_changed"),
        "draft shape": (lambda: project.save_draft(2, np.zeros((2, 2))), "Shape mismatch"),
        "unknown score image": (lambda: project.save_scores(
            [(2, "entropy", None, 0.1, None), (99, "entropy", None, 0.2, None)]), "99"),
        "nan score": (lambda: project.save_scores([(2, "entropy", None, float("nan"), None)]),
                      "finite"),
        "box outside": (lambda: project.record_suggestion(2, "entropy", box=(0, 0, h + 1, 2)),
                        "not a region"),
        "round ids": (lambda: project.record_round("v1", "x", 0, [99], {}, {}), "unknown image"),
        "setting value": (lambda: project.set_setting("x", object()), "JSON"),
        "one class": (lambda: project.set_setting("classes", ["bg"]), "at least 2"),
        "colours": (lambda: project.set_setting("colors", ["red", "blue"]), "#rrggbb"),
        "status": (lambda: project.set_status(2, "finished"), "valid choices"),
        "model classes": (lambda: project.save_model(tiny_state_dict(three), three, {}),
                          "3 classes"),
        "model shapes": (lambda: project.save_model(tiny_state_dict(three), TINY, {}),
                         "do not fit"),
        "model meta": (lambda: project.save_model(tiny_state_dict(), TINY, {"f": print}),
                       "JSON"),
        "missing file": (lambda: project.add_images([image_folder / "nope.tif"]),
                         "None of the given files"),
        "relink nowhere": (lambda: project.relink(2, image_folder / "nope.tif"), "not a file"),
        "answered twice": (lambda: project.skip(1, suggestion_id=1), "is for image 2"),
    }
    for name, (call, match) in bad_calls.items():
        with pytest.raises(ValueError, match=match):
            call()
        assert snapshot(project.folder) == before, f"{name!r} changed the project"


def test_read_only_open_refuses_every_write(project, rng, tmp_path):
    project.submit(1, labels_for(project, 1, rng))
    project.close()
    before = snapshot(project.folder)
    with Project.open(project.folder, read_only=True) as ro:
        writes = [
            lambda: ro.submit(2, labels_for(ro, 2, rng)),
            lambda: ro.save_draft(2, labels_for(ro, 2, rng)),
            lambda: ro.discard_draft(1),
            lambda: ro.set_status(2, "skipped"),
            lambda: ro.skip(2),
            lambda: ro.set_setting("x", 1),
            lambda: ro.save_scores([(1, "entropy", None, 0.1, None)]),
            lambda: ro.record_suggestion(1, "entropy"),
            lambda: ro.record_round(None, None, None, [], {}, {}),
            lambda: ro.save_model(tiny_state_dict(), TINY, {}),
            lambda: ro.add_images([tmp_path / "x.tif"]),
            lambda: ro.add_arrays({"x": np.zeros((4, 4))}),
            lambda: ro.remove_image(1),
            lambda: ro.relink(1, tmp_path / "x.tif"),
        ]
        for write in writes:
            with pytest.raises(ProjectError, match="read-only; nothing was changed"):
                write()
        assert ro.integrity_check() == []
        assert ro.load_labels(1) is not None and ro.load_image(1).shape == (32, 40)
    assert snapshot(project.folder) == before


@pytest.mark.reliability
@pytest.mark.skipif(sys.platform == "win32", reason="POSIX permissions")
def test_read_only_folder(project, rng):
    project.submit(1, labels_for(project, 1, rng))
    folder = project.folder
    project.close()
    before = snapshot(folder)
    prefix: tuple[str, ...] = ()
    if os.geteuid() == 0:  # root ignores permissions: drop the capabilities that allow that
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root without setpriv")
        prefix = (setpriv, "--bounding-set=-dac_override,-dac_read_search,-fowner")
    for sidecar in folder.glob("project.sqlite-*"):  # left by snapshot()'s reader
        if sidecar.stat().st_size == 0 or sidecar.name.endswith("-shm"):
            sidecar.unlink()
    assert not list(folder.glob("project.sqlite-*")), "a reader without -shm must cope"
    paths = [folder, *[p for p in folder.rglob("*") if p.is_dir()]]
    for path in paths:
        path.chmod(0o555)
    try:
        child = _start_child("read-only-folder", str(folder), prefix=prefix)
        out, err = child.communicate(timeout=120)
    finally:
        for path in paths:
            path.chmod(0o755)
    assert child.returncode == 0, out + err
    assert "refused read-write" in out and "read_only=True" in out and "refused submit" in out
    assert snapshot(folder) == before


# --------------------------------------------------------------------------- store helpers


def test_lock_file_names_its_holder(project):
    info = json.loads((project.folder / "project.lock").read_text())
    assert info["pid"] == os.getpid() and info["host"] == socket.gethostname()


def test_sniff_accepts_real_safetensors_whatever_their_first_byte():
    import torch
    from safetensors.torch import save

    for n in range(1, 40):  # header lengths whose low byte looks like a pickle opcode, too
        data = save({"x" * n: torch.zeros(1)})
        assert sf.sniff_safetensors(data, "f") is None
    assert "pickle" in sf.sniff_safetensors(pickle.dumps({"a": 1}), "f")
    assert "ZIP" in sf.sniff_safetensors(b"PK\x03\x04" + b"\0" * 100, "f")
    assert "too short" in sf.sniff_safetensors(b"\x01", "f")


def test_no_warning_on_a_clean_open(project):
    project.close()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Project.open(project.folder).close()
