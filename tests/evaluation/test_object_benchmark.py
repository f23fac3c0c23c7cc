"""The benchmark's object-level columns on a tiny blob folder with instances/, and the
Cellpose baseline (skipped without instances/; trained for real only where cellpose is
installed, marked slow)."""

from __future__ import annotations

import csv
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from imageio import v3 as iio
from skimage.measure import label

from napari_activeseg.core.progress import run_to_end
from napari_activeseg.evaluation.config import BenchmarkConfig
from napari_activeseg.evaluation.object_columns import pick_effort
from napari_activeseg.evaluation.runner import run_benchmark

from ..conftest import make_blobs

TINY = {"model": {"width": 4, "depth": 2},
        "train": {"patch_size": 32, "batch_size": 4, "lr": 1e-2},
        "rf": {"n_estimators": 5, "sigma_max": 4, "max_samples_per_image": 2000, "n_jobs": 1},
        "steps": 3, "initial": 2, "step": 1, "seeds": (0,), "rounds": 1}


def _folder(root: Path, *, instances: bool, n: int = 7) -> Path:
    for d in ("images", "masks", *(("instances",) if instances else ())):
        (root / d).mkdir(parents=True, exist_ok=True)
    for s in range(n):
        image, labels = make_blobs(shape=(48, 64), n=4, seed=s)
        iio.imwrite(root / "images" / f"im{s:02d}.png",
                    (np.clip(image, 0, 1) * 255).astype(np.uint8))
        iio.imwrite(root / "masks" / f"im{s:02d}.png", labels * 255)
        if instances:
            iio.imwrite(root / "instances" / f"im{s:02d}.png",
                        label(labels > 0).astype(np.uint16))
    return root


@pytest.fixture(scope="module")
def with_instances(tmp_path_factory) -> Path:
    return _folder(tmp_path_factory.mktemp("blobs_inst"), instances=True)


@pytest.fixture(scope="module")
def finished(with_instances, tmp_path_factory):
    out = tmp_path_factory.mktemp("objbench") / "out"
    result = run_to_end(run_benchmark(BenchmarkConfig(
        data=with_instances, out=out, strategies=("random",), baselines=("rf",), **TINY)))
    with open(out / "results.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    return result, rows, json.loads((out / "results.json").read_text())


def test_rows_carry_object_scores(finished):
    result, rows, doc = finished
    assert {r["strategy"] for r in rows} == {"random", "rf"}
    for r in rows:
        for col in ("cc_f1_50", "cc_mean_ap", "cc_count_error", "cc_splits", "cc_merges"):
            assert r[col] != "", col
        assert 0.0 <= float(r["cc_f1_50"]) <= 1.0
        assert float(r["cc_mean_ap"]) <= float(r["cc_ap_50"]) + 1e-9
    # the U-Net's instance mode, where the product has one
    if importlib.util.find_spec("napari_activeseg.core.instances") is not None:
        unet = [r for r in rows if r["strategy"] == "random"]
        assert all(r["inst_method"] in ("distance", "boundary") for r in unet)
        assert all(r["inst_f1_50"] != "" for r in unet)
    assert doc["objects"] is not None and "count_error" in doc["objects"]
    assert "cc_f1_50" in doc["curves"]["random"]["0"]
    assert "F1@.5 cc" in result.table()


def test_round_zero_effort_is_every_true_object(finished, with_instances):
    _, rows, doc = finished
    first = doc["splits"]["0"]["initial"]
    n_true = sum(int(iio.imread(with_instances / "instances" / n).max()) for n in first)
    r0 = next(r for r in rows if r["strategy"] == "random" and r["round"] == "0")
    assert int(r0["obj_to_add"]) == n_true  # nothing was shown before the first model
    assert int(r0["obj_to_remove"]) == 0
    r1 = next(r for r in rows if r["strategy"] == "random" and r["round"] == "1")
    assert int(r1["total_obj_effort"]) == int(r0["obj_effort"]) + int(r1["obj_effort"])


def test_pick_effort_counts_a_merge_and_a_spurious_object():
    truth = np.zeros((20, 40), np.uint16)
    truth[5:15, 5:15], truth[5:15, 15:25] = 1, 2
    shown = (truth > 0).astype(np.uint8)
    shown[0:3, 35:38] = 1  # a spurious object
    effort = pick_effort(truth, shown)
    assert effort == {"obj_to_add": 0, "obj_to_remove": 1, "obj_to_split": 1,
                      "obj_to_merge": 0}
    # inside a box holding only the first square: the merged region is cut there
    inside = pick_effort(truth, shown, [(0, 0, 20, 15)])
    assert inside["obj_to_split"] == 0 and inside["obj_to_remove"] == 0


def test_objects_mode_trains_the_boundary_head_on_submitted_instances(with_instances, tmp_path):
    from napari_activeseg.core.project import Project

    out = tmp_path / "out"
    result = run_to_end(run_benchmark(BenchmarkConfig(
        data=with_instances, out=out, strategies=("random",), baselines=(), objects=True,
        **TINY)))
    assert {r["inst_method"] for r in result.rows} == {"boundary"}
    assert all(0.0 <= r["inst_f1_50"] <= 1.0 for r in result.rows)
    with Project.open(out / "runs" / "random_s0", read_only=True) as project:
        assert project.object_classes == (1,)
        first = project.labelled_ids()[0]
        assert project.load_instances(first)[0].max() >= 1


def test_objects_mode_needs_instances(tmp_path):
    data = _folder(tmp_path / "plain", instances=False, n=4)
    with pytest.raises(ValueError, match="instances/"):
        run_to_end(run_benchmark(BenchmarkConfig(
            data=data, out=tmp_path / "out", strategies=("random",), baselines=(),
            objects=True, **TINY)))
    assert not (tmp_path / "out").exists()


def test_cellpose_is_skipped_with_a_note_without_instances(tmp_path):
    data = _folder(tmp_path / "plain", instances=False, n=5)
    result = run_to_end(run_benchmark(BenchmarkConfig(
        data=data, out=tmp_path / "out", strategies=("random",), baselines=("cellpose",),
        **{**TINY, "rounds": 0})))
    assert any("cellpose baseline skipped" in n and "instances/" in n for n in result.notes)
    assert {r["strategy"] for r in result.rows} == {"random"}
    assert "cc_f1_50" not in result.rows[0]


def test_unknown_baseline_lists_cellpose(tmp_path):
    cfg = BenchmarkConfig(data=tmp_path, out=tmp_path / "o", baselines=("sam",))
    with pytest.raises(ValueError, match="cellpose"):
        cfg.checked()


@pytest.mark.slow
def test_cellpose_trains_from_scratch_and_is_scored(with_instances, tmp_path):
    pytest.importorskip("cellpose")
    result = run_to_end(run_benchmark(BenchmarkConfig(
        data=with_instances, out=tmp_path / "out", strategies=("random",),
        baselines=("cellpose",), **{**TINY, "steps": 1, "rounds": 0})))
    row = next(r for r in result.rows if r["strategy"] == "cellpose")
    assert row["inst_method"] == "cellpose" and row["train_steps"] == 1
    assert 0.0 <= row["inst_f1_50"] <= 1.0 and 0.0 <= row["dice"] <= 1.0
    assert (tmp_path / "out" / "runs" / "cellpose_s0" / "models" / "round0").is_file()
